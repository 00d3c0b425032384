"""QC figures (matplotlib, Agg): mask and segmentation overlays, registration edges, FA."""

from __future__ import annotations

import numpy as np

from .io import atomic_path, load_nifti


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _views(vol):
    """Three orthogonal mid slices (sagittal, coronal, axial) in display orientation."""
    x, y, z = (s // 2 for s in vol.shape[:3])
    return [np.rot90(vol[x]), np.rot90(vol[:, y]), np.rot90(vol[:, :, z])]


def _canonical(path):
    import nibabel as nib

    return nib.as_closest_canonical(load_nifti(path))


def _save(fig, out_png):
    plt = _plt()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    plt.close(fig)


def _norm(a):
    lo, hi = np.percentile(a[np.isfinite(a)], [1, 99.5])
    return np.clip((a - lo) / (hi - lo + 1e-9), 0, 1)


def _overlay(base_file, over_file, out_png, title, draw, norm_over=False):
    """Three orthogonal mid slices of ``base_file`` in grey, each with ``draw(ax, over_slice)``."""
    plt = _plt()
    base = _canonical(base_file).get_fdata(dtype=np.float32)
    over = _canonical(over_file).get_fdata(dtype=np.float32)
    if norm_over:
        over = _norm(over)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, a, b in zip(axes, _views(_norm(base)), _views(over)):
        ax.imshow(a, cmap="gray")
        draw(ax, b)
        ax.axis("off")
    fig.suptitle(title)
    _save(fig, out_png)


def mask_overlay(t1_file, mask_file, out_png, title=""):
    _overlay(t1_file, mask_file, out_png, title,
             lambda ax, m: ax.contour(m, [0.5], colors="r", linewidths=0.8))


def dseg_overlay(t1_file, dseg_file, out_png, title=""):
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#00000000", "#1f77b4", "#2ca02c", "#ffdd00"])
    _overlay(t1_file, dseg_file, out_png, title + "  (blue CSF, green GM, yellow WM)",
             lambda ax, d: ax.imshow(np.ma.masked_where(d == 0, d), cmap=cmap, vmin=0, vmax=3, alpha=0.45,
                                     interpolation="nearest"))


def registration_edges(warped_file, template_file, out_png, title=""):
    """Template edges (Sobel gradient magnitude, top decile) over the registered image."""
    from scipy import ndimage

    def draw(ax, tpl):
        edge = np.hypot(ndimage.sobel(tpl, 0), ndimage.sobel(tpl, 1))
        ax.contour(edge, [np.percentile(edge, 90)], colors="r", linewidths=0.5)

    _overlay(warped_file, template_file, out_png, title, draw, norm_over=True)


def fa_figure(fa_file, rgb_file, out_png, title=""):
    plt = _plt()
    fa = _canonical(fa_file).get_fdata(dtype=np.float32)
    rgb = _canonical(rgb_file).get_fdata(dtype=np.float32)
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for ax, a in zip(axes[0], _views(fa)):
        ax.imshow(a, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    for ax, a in zip(axes[1], _views(rgb)):
        ax.imshow(np.clip(a, 0, 1))
        ax.axis("off")
    fig.suptitle(title + "  (top: FA, bottom: colour FA)")
    _save(fig, out_png)
