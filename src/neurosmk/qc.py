"""QC figures (matplotlib, Agg): mask and segmentation overlays, registration edges, FA."""

from __future__ import annotations

import numpy as np

from .io import atomic_path, load_nifti


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slices(shape, n=3):
    return [int(shape[2] * f) for f in np.linspace(0.35, 0.65, n)]


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


def mask_overlay(t1_file, mask_file, out_png, title=""):
    plt = _plt()
    t1 = _canonical(t1_file).get_fdata(dtype=np.float32)
    m = _canonical(mask_file).get_fdata(dtype=np.float32)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, a, b in zip(axes, _views(_norm(t1)), _views(m)):
        ax.imshow(a, cmap="gray")
        ax.contour(b, [0.5], colors="r", linewidths=0.8)
        ax.axis("off")
    fig.suptitle(title)
    _save(fig, out_png)


def dseg_overlay(t1_file, dseg_file, out_png, title=""):
    plt = _plt()
    from matplotlib.colors import ListedColormap

    t1 = _canonical(t1_file).get_fdata(dtype=np.float32)
    d = _canonical(dseg_file).get_fdata(dtype=np.float32)
    cmap = ListedColormap(["#00000000", "#1f77b4", "#2ca02c", "#ffdd00"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, a, b in zip(axes, _views(_norm(t1)), _views(d)):
        ax.imshow(a, cmap="gray")
        ax.imshow(np.ma.masked_where(b == 0, b), cmap=cmap, vmin=0, vmax=3, alpha=0.45, interpolation="nearest")
        ax.axis("off")
    fig.suptitle(title + "  (blue CSF, green GM, yellow WM)")
    _save(fig, out_png)


def registration_edges(warped_file, template_file, out_png, title=""):
    """Template edges (Canny-like gradient magnitude) over the registered image."""
    plt = _plt()
    from scipy import ndimage

    w = _canonical(warped_file).get_fdata(dtype=np.float32)
    t = _canonical(template_file).get_fdata(dtype=np.float32)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, a, b in zip(axes, _views(_norm(w)), _views(_norm(t))):
        edge = np.hypot(ndimage.sobel(b, 0), ndimage.sobel(b, 1))
        ax.imshow(a, cmap="gray")
        ax.contour(edge, [np.percentile(edge, 90)], colors="r", linewidths=0.5)
        ax.axis("off")
    fig.suptitle(title)
    _save(fig, out_png)


def fa_figure(fa_file, rgb_file, out_png, title=""):
    plt = _plt()
    fa = _canonical(fa_file).get_fdata(dtype=np.float32)
    rgb = _canonical(rgb_file).get_fdata(dtype=np.float32)
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for ax, a in zip(axes[0], _views(fa)):
        ax.imshow(a, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    x, y, z = (s // 2 for s in rgb.shape[:3])
    for ax, a in zip(axes[1], [np.rot90(rgb[x]), np.rot90(rgb[:, y]), np.rot90(rgb[:, :, z])]):
        ax.imshow(np.clip(a, 0, 1))
        ax.axis("off")
    fig.suptitle(title + "  (top: FA, bottom: colour FA)")
    _save(fig, out_png)
