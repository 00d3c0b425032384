"""Portable structural backends: N4, brain extraction, Atropos segmentation, ANTs registration."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from .io import InputError, atomic_path, load_nifti, save_ants, save_nifti, write_tsv
from .tables import visit_ids

TISSUES = ("CSF", "GM", "WM")  # label values 1, 2, 3 of the dseg image


def nilearn_template() -> str:
    # locate the file without importing nilearn (an import costs seconds at workflow start-up)
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.origin:
        raise FileNotFoundError("nilearn is not installed: it provides the default MNI152 2009a template")
    p = Path(spec.origin).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not p.exists():
        raise FileNotFoundError(f"{p}: the nilearn wheel no longer bundles the MNI152 2009a template")
    return str(p)


def n4(in_file: str, out_file: str, shrink_factor: int = 4, convergence_iters=(50, 50, 50, 50),
       convergence_tol: float = 1e-7, spline_distance: float = 200.0) -> None:
    import ants

    load_nifti(in_file, ndim=3)
    img = ants.image_read(in_file)
    out = ants.n4_bias_field_correction(
        img, shrink_factor=shrink_factor,
        convergence={"iters": list(convergence_iters), "tol": convergence_tol},
        spline_param=spline_distance,
    )
    save_ants(out, out_file)


def limit_fov(img, length_mm: float = 170.0) -> np.ndarray:
    """Zero everything more than ``length_mm`` below the top of the head (like FSL robustfov).

    Brain extraction of full-head images with the neck in the field of view otherwise leaks
    into the neck.  Returns the image data with the neck set to 0.
    """
    import nibabel as nib

    data = img.get_fdata(dtype=np.float32)
    if not length_mm:
        return data
    codes = nib.aff2axcodes(img.affine)
    ax = [i for i, c in enumerate(codes) if c in "SI"][0]
    up = codes[ax] == "S"
    thr = np.percentile(data, 98) * 0.1
    prof = (data > thr).sum(axis=tuple(i for i in range(3) if i != ax))
    idx = np.flatnonzero(prof > 0.01 * prof.max())
    if idx.size == 0:
        return data
    top = idx.max() if up else idx.min()
    n = int(round(length_mm / abs(float(img.header.get_zooms()[ax]))))
    keep = np.zeros(data.shape[ax], bool)
    if up:
        keep[max(0, top - n):top + 1] = True
    else:
        keep[top:top + n + 1] = True
    shape = [1, 1, 1]
    shape[ax] = -1
    return data * keep.reshape(shape)


def skullstrip(in_file: str, mask_file: str, brain_file: str, method: str = "brainextractor",
               fractional_threshold: float = 0.5, iterations: int = 1000,
               median_radius: int = 4, numpass: int = 4, fov_mm: float = 170.0) -> None:
    import nibabel as nib

    img = load_nifti(in_file, ndim=3)
    if method == "brainextractor":
        import tempfile

        from brainextractor import BrainExtractor

        np.random.seed(0)
        cropped = nib.Nifti1Image(limit_fov(img, fov_mm), img.affine, img.header)
        be = BrainExtractor(cropped, bt=fractional_threshold)
        be.run(iterations=iterations)
        with tempfile.TemporaryDirectory() as td:
            tmp = os.path.join(td, "mask.nii.gz")
            be.save_mask(tmp)
            mask = np.asanyarray(nib.load(tmp).dataobj) > 0
    elif method == "dipy":
        from dipy.segment.mask import median_otsu

        _, mask = median_otsu(img.get_fdata(dtype=np.float32), median_radius=median_radius, numpass=numpass)
    else:
        raise ValueError(f"unknown skullstrip method {method!r}")
    if not mask.any():
        raise InputError(in_file, f"brain extraction ({method}) produced an empty mask")
    hdr = img.header.copy()
    hdr.set_data_dtype(np.uint8)
    save_nifti(nib.Nifti1Image(mask.astype(np.uint8), img.affine, hdr), mask_file)
    data = img.get_fdata(dtype=np.float32) * mask
    hdr = img.header.copy()
    hdr.set_data_dtype(np.float32)
    save_nifti(nib.Nifti1Image(data, img.affine, hdr), brain_file)


def atropos(t1_file: str, mask_file: str, dseg_file: str, prob_files: dict[str, str],
            mrf_weight: float = 0.2, iterations: int = 5) -> None:
    """Three-class Atropos (k-means init) on the brain; labels sorted by mean intensity."""
    import ants

    t1 = ants.image_read(t1_file)
    mask = ants.image_read(mask_file)
    arr = t1.numpy()
    mk = mask.numpy() > 0
    lo, hi = np.percentile(arr[mk], [1, 99])  # bright vessels/fat would otherwise take a class
    clipped = t1.new_image_like(np.clip(arr, lo, hi).astype("float32"))
    # r=0: Atropos seeds its random number generator with a constant instead of the clock, so
    # the segmentation is bitwise reproducible (with any thread count; Atropos takes no seed value)
    seg = ants.atropos(a=clipped, x=mask, i="kmeans[3]", m=f"[{mrf_weight},1x1x1]",
                       c=f"[{iterations},0]", r=0)
    lab = seg["segmentation"].numpy().astype(np.int16)
    probs = seg["probabilityimages"]
    means = [arr[lab == k].mean() if (lab == k).any() else np.inf for k in (1, 2, 3)]
    order = np.argsort(means)  # CSF darkest, WM brightest on T1w
    new = np.zeros_like(lab)
    for newlab, old in enumerate(order, start=1):
        new[lab == old + 1] = newlab
    save_ants(t1.new_image_like(new.astype("float32")).astype("uint8"), dseg_file)
    for name, old in zip(TISSUES, order):
        save_ants(probs[old], prob_files[name])


def tissue_volumes(dseg_file: str, mask_file: str, out_tsv: str, subject: str, session: str | None) -> None:
    import pandas as pd

    dseg = load_nifti(dseg_file, ndim=3)
    mask = load_nifti(mask_file, ndim=3)
    vox_ml = float(np.prod(dseg.header.get_zooms()[:3])) / 1000.0
    lab = np.asanyarray(dseg.dataobj)
    rows = [{**visit_ids(subject, session), "structure": name, "measure": "volume",
             "value": float((lab == k).sum() * vox_ml), "unit": "mL"}
            for k, name in enumerate(TISSUES, start=1)]
    rows.append({**visit_ids(subject, session), "structure": "brainmask", "measure": "volume",
                 "value": float((np.asanyarray(mask.dataobj) > 0).sum() * vox_ml), "unit": "mL"})
    write_tsv(out_tsv, pd.DataFrame(rows))


def register(moving_file: str, template_file: str, out_affine: str, out_warp: str, out_invwarp: str,
             out_warped: str, transform: str = "SyN", syn_iterations=(40, 20, 0), seed: int = 42,
             metrics_json: str | None = None) -> dict:
    """ANTsPy registration of a brain T1w to the template, keeping forward and inverse transforms."""
    import shutil

    import ants

    # antspyx 0.6.3 silently ignores registration(random_seed=...); antsRegistration gets
    # --random-seed only from ants.config, which config.set_ants_deterministic sets (it also forces ITK to
    # one thread: the rule's thread count is restored). Bitwise reproducible with threads 1; with
    # more threads ITK's parallel sums vary slightly (tolerance: tests/test_rerun.py).
    threads = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    ants.config.set_ants_deterministic(True, seed_value=seed)
    if threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = threads
    fixed = ants.image_read(template_file)
    moving = ants.image_read(moving_file)
    reg = ants.registration(fixed=fixed, moving=moving, type_of_transform=transform,
                            reg_iterations=tuple(syn_iterations))
    # ANTsPy leaves its transforms in the temporary folder (the job's own, neurosmk.runtime):
    # moved, not copied, into the outputs; whatever is left there is removed
    fwd, inv = reg["fwdtransforms"], reg["invtransforms"]
    try:
        affine = [f for f in fwd if f.endswith(".mat")][0]
        warps = [f for f in fwd if f.endswith(".nii.gz")]
        iwarps = [f for f in inv if f.endswith(".nii.gz")]
        for src, dst in ((warps, out_warp), (iwarps, out_invwarp)):
            if not src:
                raise RuntimeError(f"ANTs {transform} registration produced no warp field")
        for src, dst in ((affine, out_affine), (warps[0], out_warp), (iwarps[0], out_invwarp)):
            with atomic_path(dst) as tmp:
                shutil.move(src, tmp)
    finally:
        for f in {*fwd, *inv}:
            with contextlib.suppress(FileNotFoundError):
                os.remove(f)
    save_ants(reg["warpedmovout"], out_warped)
    return registration_metrics(moving, fixed, reg["warpedmovout"], transform, metrics_json)


def registration_metrics(moving, fixed, warped, transform: str, metrics_json: str | None = None) -> dict:
    """Similarity to the template before (moving resampled into the template grid) and after
    registration; the same JSON for every registration backend."""
    import ants

    from .io import write_json

    before = ants.resample_image_to_target(moving, fixed, interp_type="linear")
    metrics = {
        "correlation_before": _masked_corr(before.numpy(), fixed.numpy()),
        "correlation_after": _masked_corr(warped.numpy(), fixed.numpy()),
        "transform": transform,
    }
    if metrics_json:
        write_json(metrics_json, metrics)
    return metrics


def _masked_corr(a: np.ndarray, b: np.ndarray) -> float:
    m = (b > 0) | (a > 0)
    return float(np.corrcoef(a[m].ravel(), b[m].ravel())[0, 1])
