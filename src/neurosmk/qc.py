"""QC figures: whole-brain mosaics (nilearn) with contour overlays, orientation labels and slice
coordinates, cut over the brain (the mask's bounding box), saved at 150 dpi.

Each figure has three rows (axial, coronal, sagittal) of ``n_cuts`` slices evenly spread over the
brain mask's extent in that direction (the outer 8 % of the extent, mostly partial-volume edge, left
out).  The images are cropped to the mask's bounding box plus a margin before plotting, so a
full-head T1w costs no more than its brain.  Colour FA (an RGB volume, which nilearn does not
draw) uses the same cut positions and labels, drawn with matplotlib.
"""

from __future__ import annotations

import sys

import numpy as np

from .io import atomic_path, load_nifti

DPI = 150
N_CUTS = 8
TISSUE_COLOURS = {"CSF": "#3b8bff", "GM": "#2ecc40", "WM": "#ffdc00"}  # dseg labels 1, 2, 3


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _canonical(path_or_img):
    import nibabel as nib

    img = load_nifti(path_or_img) if isinstance(path_or_img, str) else path_or_img
    return nib.as_closest_canonical(img)


def _bbox(mask: np.ndarray):
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    return idx.min(0), idx.max(0)


def crop_to_mask(imgs, mask_img, margin_mm: float = 8.0):
    """Crop canonical images sharing ``mask_img``'s grid to the mask's bounding box + margin.
    An empty mask keeps the whole field of view."""
    data = np.asanyarray(mask_img.dataobj)
    if data.ndim > 3:
        data = data[..., 0]
    box = _bbox(data > 0)
    if box is None:
        return imgs, mask_img
    zooms = np.array(mask_img.header.get_zooms()[:3], dtype=float)
    pad = np.ceil(margin_mm / zooms).astype(int)
    lo = np.maximum(box[0] - pad, 0)
    hi = np.minimum(box[1] + pad + 1, data.shape[:3])
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return [im.slicer[sl] for im in imgs], mask_img.slicer[sl]


def brain_cuts(mask_img, n: int = N_CUTS, inset: float = 0.08) -> dict[str, list[float]]:
    """World coordinates (mm) of ``n`` cuts per direction (x, y, z) spread over the mask's extent.

    ``mask_img`` must be RAS-canonical. Raises ValueError for an empty mask."""
    data = np.asanyarray(mask_img.dataobj)
    if data.ndim > 3:
        data = data[..., 0]
    box = _bbox(data > 0)
    if box is None:
        raise ValueError("brain_cuts: the mask is empty; no brain to cut through")
    lo, hi = box
    centre = (lo + hi) / 2.0
    cuts = {}
    for ax, name in enumerate("xyz"):
        width = hi[ax] - lo[ax]
        ijk = np.linspace(lo[ax] + inset * width, hi[ax] - inset * width, n)
        vox = np.tile(centre, (n, 1))
        vox[:, ax] = ijk
        world = vox @ mask_img.affine[:3, :3].T + mask_img.affine[:3, 3]
        vals = [round(float(v), 1) for v in world[:, ax]]
        cuts[name] = list(dict.fromkeys(vals))  # a mask one voxel thick gives one cut, not n
    return cuts


def _cuts(mask_img, n: int) -> dict[str, list[float]]:
    """brain_cuts, or cuts over the whole field of view when the mask is empty (the figure then
    shows the failure instead of the QC job failing)."""
    try:
        return brain_cuts(mask_img, n)
    except ValueError:
        import nibabel as nib

        print("warning: empty mask, slices cut over the whole field of view", file=sys.stderr)
        return brain_cuts(nib.Nifti1Image(np.ones(mask_img.shape[:3], np.uint8), mask_img.affine), n)


TOP = 0.945  # the mosaic fills the figure below this; the title sits above it


def _figure(n: int, title: str = ""):
    plt = _plt()
    fig = plt.figure(figsize=(1.9 * n, 7.0), facecolor="black")
    if title:
        fig.text(0.006, 0.99, title, color="w", fontsize=13, va="top", ha="left")
    return fig


def _save(fig_or_display, out_png: str) -> None:
    plt = _plt()
    fig = getattr(fig_or_display, "frame_axes", None)
    fig = fig.figure if fig is not None else fig_or_display
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", facecolor=fig.get_facecolor())
    plt.close(fig)


def _mosaic(bg_img, cuts, title, plot="anat", **kw):
    import gc

    from nilearn import plotting

    # nilearn calls gc.collect() each time it reads an image's data (4+ times per figure), a full
    # collection over every object matplotlib and nilearn created: ~1 s each on a busy machine.
    # Objects alive now are never garbage; freezing them makes those collections cheap.
    gc.freeze()
    n = max(len(v) for v in cuts.values())
    fn = plotting.plot_anat if plot == "anat" else plotting.plot_img
    kw.setdefault("colorbar", False)
    display = fn(bg_img, display_mode="mosaic", cut_coords=cuts, title=None, figure=_figure(n, title),
                 axes=[0, 0, 1, TOP], annotate=True, draw_cross=False, black_bg=True, **kw)
    for (direction, _), cut_ax in display.axes.items():
        if direction == "x":  # nilearn labels L/R on axial and coronal cuts only
            for x, label in ((0.03, "P"), (0.92, "A")):
                cut_ax.ax.text(x, 0.93, label, color="w", fontsize=10, transform=cut_ax.ax.transAxes)
    return display


def _load_pair(base_file, mask_file):
    base, mask = _canonical(base_file), _canonical(mask_file)
    (base,), mask = crop_to_mask([base], mask)
    return base, mask


def _binary(img, pred):
    import nibabel as nib

    data = pred(np.asanyarray(img.dataobj))
    return nib.Nifti1Image(data.astype(np.uint8), img.affine)


def mask_mosaic(t1_file: str, mask_file: str, out_png: str, title: str = "", n_cuts: int = N_CUTS) -> dict:
    """Brain mask (red contour) on the T1w. Returns the cut coordinates."""
    t1, mask = _load_pair(t1_file, mask_file)
    cuts = _cuts(mask, n_cuts)
    display = _mosaic(t1, cuts, title, dim=-0.3)
    display.add_contours(_binary(mask, lambda d: d > 0), levels=[0.5], colors="r", linewidths=0.9)
    _save(display, out_png)
    return cuts


def dseg_mosaic(t1_file: str, dseg_file: str, mask_file: str, out_png: str, title: str = "",
                n_cuts: int = N_CUTS) -> dict:
    """Tissue classes as contours on the T1w: CSF (blue), GM (green), WM (yellow)."""
    t1, dseg, mask = _canonical(t1_file), _canonical(dseg_file), _canonical(mask_file)
    (t1, dseg), mask = crop_to_mask([t1, dseg], mask)
    cuts = _cuts(mask, n_cuts)
    display = _mosaic(t1, cuts, title, dim=-0.3)
    for label, (name, colour) in enumerate(TISSUE_COLOURS.items(), start=1):
        display.add_contours(_binary(dseg, lambda d, k=label: d == k), levels=[0.5], colors=colour,
                             linewidths=0.7)
    _save(display, out_png)
    return cuts


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D sample (the between-class variance maximum)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (mu0 - mu1) ** 2)])


def template_levels(tpl: np.ndarray) -> list[float]:
    """Contour levels of a T1w template: its brain outline (10 % of the 99th percentile) and the
    grey/white boundary (Otsu's threshold within the brain)."""
    pos = tpl[tpl > 0]
    if pos.size == 0:
        raise ValueError("template image is empty")
    outline = 0.1 * float(np.percentile(pos, 99))
    inside = tpl[tpl > outline]
    return sorted({round(outline, 6), round(otsu(inside), 6)})


def registration_mosaic(warped_file: str, template_file: str, out_png: str, title: str = "",
                        n_cuts: int = N_CUTS) -> dict:
    """Template contours (red: its brain outline and grey/white boundary) on the T1w registered to
    the template; cuts over the registered brain."""
    import nibabel as nib

    warped, template = _canonical(warped_file), _canonical(template_file)
    if warped.shape[:3] != template.shape[:3] or not np.allclose(warped.affine, template.affine, atol=1e-3):
        from nilearn.image import resample_to_img

        template = resample_to_img(template, warped, interpolation="linear", force_resample=True,
                                   copy_header=True)
    brain = nib.Nifti1Image((np.asanyarray(warped.dataobj) > 0).astype(np.uint8), warped.affine)
    (warped, template), brain = crop_to_mask([warped, template], brain)
    cuts = _cuts(brain, n_cuts)
    # The template's outline and grey/white boundary as contours (as fMRIPrep draws them): nilearn's
    # add_edges (a Canny filter with percentile thresholds) outlines numerical noise on the
    # outermost slices, where the template has few real edges.
    tpl = np.asanyarray(template.dataobj).astype(np.float32)
    levels = template_levels(tpl)
    display = _mosaic(warped, cuts, title)
    display.add_contours(nib.Nifti1Image(tpl, template.affine), levels=levels, colors="r", linewidths=0.8)
    _save(display, out_png)
    return cuts


def mean_b0(dwi_file: str, bval_file: str, b0_threshold: float = 50.0):
    """The mean b=0 image (canonical) of a DWI series."""
    import nibabel as nib

    img = _canonical(dwi_file)
    bvals = np.loadtxt(bval_file, ndmin=1)
    b0 = np.flatnonzero(bvals <= b0_threshold)
    if b0.size == 0:
        raise ValueError(f"{bval_file}: no b-value <= {b0_threshold} (no b=0 volume)")
    data = np.asanyarray(img.dataobj)
    if data.ndim != 4 or data.shape[3] != bvals.size:
        raise ValueError(f"{dwi_file}: {data.shape} does not match {bvals.size} b-values in {bval_file}")
    return nib.Nifti1Image(data[..., b0].astype(np.float32).mean(axis=3), img.affine)


def b0_mask_mosaic(dwi_file: str, bval_file: str, mask_file: str, out_png: str, title: str = "",
                   b0_threshold: float = 50.0, n_cuts: int = N_CUTS) -> dict:
    """DWI brain mask (red contour) on the mean b=0 image."""
    b0, mask = _load_pair(mean_b0(dwi_file, bval_file, b0_threshold), mask_file)
    cuts = _cuts(mask, n_cuts)
    display = _mosaic(b0, cuts, title, dim=-0.2)
    display.add_contours(_binary(mask, lambda d: d > 0), levels=[0.5], colors="r", linewidths=0.9)
    _save(display, out_png)
    return cuts


def fa_mosaic(fa_file: str, mask_file: str, out_png: str, title: str = "", n_cuts: int = N_CUTS) -> dict:
    """FA in grey, 0 to 1, with a colourbar."""
    fa, mask = _load_pair(fa_file, mask_file)
    cuts = _cuts(mask, n_cuts)
    display = _mosaic(fa, cuts, title, plot="img", cmap="gray", vmin=0.0, vmax=1.0, colorbar=True,
                      cbar_tick_format="%.1f")
    _save(display, out_png)
    return cuts


def _rgb_unit(rgb: np.ndarray) -> np.ndarray:
    rgb = np.nan_to_num(rgb.astype(np.float32))
    if rgb.max() > 1.5:  # stored as 0..255
        rgb = rgb / 255.0
    return np.clip(rgb, 0.0, 1.0)


def colour_fa_mosaic(rgb_file: str, mask_file: str, out_png: str, title: str = "",
                     n_cuts: int = N_CUTS) -> dict:
    """Colour FA (red left-right, green anterior-posterior, blue inferior-superior) in the same
    mosaic layout, with L/R (A/P on sagittal rows) labels and slice coordinates."""
    rgb_img, mask = _canonical(rgb_file), _canonical(mask_file)
    rgb = np.asanyarray(rgb_img.dataobj)
    if rgb.ndim != 4 or rgb.shape[3] != 3:
        raise ValueError(f"{rgb_file}: colour FA must be 4D with 3 channels, got shape {rgb.shape}")
    (rgb_img,), mask = crop_to_mask([rgb_img], mask)
    cuts = _cuts(mask, n_cuts)
    rgb = _rgb_unit(np.asanyarray(rgb_img.dataobj))
    inv = np.linalg.inv(rgb_img.affine)
    zooms = rgb_img.header.get_zooms()[:3]
    n = max(len(v) for v in cuts.values())
    fig = _figure(n, title)
    rows = [("z", 2, ("L", "R")), ("y", 1, ("L", "R")), ("x", 0, ("P", "A"))]
    for r, (name, ax_i, (left, right)) in enumerate(rows):
        for c, coord in enumerate(cuts[name]):
            ax = fig.add_axes([c / n, TOP * (1 - (r + 1) / 3.0), 1.0 / n, TOP / 3.0 - 0.01])
            ax.set_facecolor("black")
            ax.axis("off")
            point = np.zeros(3)
            point[ax_i] = coord
            k = int(round((inv[:3, :3] @ point + inv[:3, 3])[ax_i]))
            k = min(max(k, 0), rgb.shape[ax_i] - 1)
            sl = np.take(rgb, k, axis=ax_i)  # remaining axes in RAS order
            other = [a for a in range(3) if a != ax_i]
            ax.imshow(np.transpose(sl, (1, 0, 2))[::-1], interpolation="nearest",
                      aspect=zooms[other[1]] / zooms[other[0]])
            ax.text(0.02, 0.02, f"{name}={coord:.0f}", color="w", fontsize=10, transform=ax.transAxes)
            ax.text(0.03, 0.9, left, color="w", fontsize=10, transform=ax.transAxes)
            ax.text(0.9, 0.9, right, color="w", fontsize=10, transform=ax.transAxes)
    _save(fig, out_png)
    return cuts
