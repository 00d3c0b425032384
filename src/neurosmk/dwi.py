"""Portable diffusion backends (DIPY): MP-PCA denoising, Gibbs removal, b=0 mask, tensor fit."""

from __future__ import annotations

import numpy as np

from .io import InputError, load_nifti, save_nifti, write_tsv
from .tables import visit_ids


def _save_like(data, ref, path, dtype=np.float32):
    import nibabel as nib

    hdr = ref.header.copy()
    hdr.set_data_dtype(dtype)
    if data.ndim == 3 and hdr["dim"][0] == 4:
        hdr.set_data_shape(data.shape)
    save_nifti(nib.Nifti1Image(np.asarray(data, dtype=dtype), ref.affine, hdr), path)


def denoise_mppca(in_file: str, out_file: str, noise_file: str, patch_radius: int = 2) -> None:
    from dipy.denoise.localpca import mppca

    img = load_nifti(in_file, ndim=4)
    data = img.get_fdata(dtype=np.float32)
    den, sigma = mppca(data, patch_radius=patch_radius, return_sigma=True)
    _save_like(den, img, out_file)
    _save_like(sigma, img, noise_file)


def denoise_lpca(in_file: str, out_file: str, noise_file: str, bval: str, bvec: str, patch_radius: int = 2) -> None:
    """DIPY's local PCA (Manjon et al. 2013): the noise level per voxel is estimated from the
    residuals of a PCA of the diffusion-weighted signal (pca_noise_estimate, the b-values and
    vectors give the acquisition), then each patch keeps the components above it; the noise map
    (sigma) is written like MP-PCA's."""
    from dipy.denoise.localpca import localpca
    from dipy.denoise.pca_noise_estimate import pca_noise_estimate

    img = load_nifti(in_file, ndim=4)
    data = img.get_fdata(dtype=np.float32)
    _, _, gtab = load_gradients(bval, bvec, data.shape[-1])
    sigma = pca_noise_estimate(data, gtab, correct_bias=True, smooth=3)
    den = localpca(data, sigma=sigma, patch_radius=patch_radius, tau_factor=2.3)
    _save_like(den, img, out_file)
    _save_like(sigma, img, noise_file)


def degibbs(in_file: str, out_file: str, slice_axis: int = 2, n_points: int = 3, num_processes: int = 1) -> None:
    from dipy.denoise.gibbs import gibbs_removal

    img = load_nifti(in_file, ndim=4)
    data = img.get_fdata(dtype=np.float32)
    out = gibbs_removal(data, slice_axis=slice_axis, n_points=n_points, num_processes=num_processes)
    _save_like(out, img, out_file)


def load_gradients(bval: str, bvec: str, nvol: int):
    from dipy.core.gradients import gradient_table

    from .bids import read_bval, read_bvec

    bvals = np.array(read_bval(bval))
    bvecs = np.array(read_bvec(bvec)).T
    if len(bvals) != nvol or len(bvecs) != nvol:
        raise InputError(bval, f"{len(bvals)} b-values / {len(bvecs)} directions for {nvol} volumes")
    return bvals, bvecs, gradient_table(bvals, bvecs=bvecs)


def b0_mask(in_file: str, bval: str, bvec: str, mask_file: str, median_radius: int = 2, numpass: int = 1,
            b0_threshold: float = 50) -> None:
    import nibabel as nib
    from dipy.segment.mask import median_otsu

    img = load_nifti(in_file, ndim=4)
    bvals, _, _ = load_gradients(bval, bvec, img.shape[3])
    b0 = np.flatnonzero(bvals <= b0_threshold)
    if b0.size == 0:
        raise InputError(bval, f"no b=0 volume (no b-value <= {b0_threshold})")
    data = img.get_fdata(dtype=np.float32)
    mean_b0 = data[..., b0].mean(axis=3)
    _, mask = median_otsu(mean_b0, median_radius=median_radius, numpass=numpass)
    hdr = img.header.copy()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape(mask.shape)
    save_nifti(nib.Nifti1Image(mask.astype(np.uint8), img.affine, hdr), mask_file)


def fsl_bvec_to_world(affine) -> np.ndarray:
    """3x3 rotation taking a direction in the FSL bvec frame to scanner (world, RAS+) axes.

    FSL bvecs are given along the image's voxel axes, with x negated when the voxel-to-world
    matrix has a positive determinant (FSL's radiological convention); MRtrix3 applies exactly
    this when it reads ``-fslgrad`` (x flip, then the rotation part of the image transform), and
    DIPY fits the tensor in the bvec frame. The rotation is the orthogonal polar factor of the
    affine's 3x3 part (voxel sizes and any shear removed)."""
    lin = np.asarray(affine, dtype=float)[:3, :3]
    u, _, vt = np.linalg.svd(lin)
    rot = u @ vt
    if np.linalg.det(lin) > 0:
        rot = rot @ np.diag([-1.0, 1.0, 1.0])
    return rot


def tensor_fit(in_file: str, bval: str, bvec: str, mask_file: str, out: dict[str, str],
               fit_method: str = "WLS", b0_threshold: float = 50) -> None:
    """Fit DTI; write FA, MD, AD, RD, colour FA (RGB) and the principal eigenvector V1.

    V1 and RGB are in scanner (world, RAS+) axes, the convention of MRtrix3 ``tensor2metric
    -vector`` (RGB = |V1| x FA: red = left-right, green = anterior-posterior, blue =
    inferior-superior), so both backends write the same values whatever the image orientation.
    """
    from dipy.reconst.dti import TensorModel

    img = load_nifti(in_file, ndim=4)
    mask = np.asanyarray(load_nifti(mask_file, ndim=3).dataobj) > 0
    _, _, gtab = load_gradients(bval, bvec, img.shape[3])
    data = img.get_fdata(dtype=np.float32)
    fit = TensorModel(gtab, fit_method=fit_method).fit(data, mask=mask)
    write_tensor_maps(fit, mask, img, out)


def write_tensor_maps(fit, mask, img, out: dict[str, str]) -> None:
    """Write FA, MD, AD, RD, colour FA and V1 of a DIPY ``TensorFit`` (masked, NaN -> 0).

    Every tensor backend written in Python (DIPY, and the PyTorch one in ``dwi_torch``, which
    wraps its eigenvalues/eigenvectors in a ``TensorFit``) writes its maps here, so the map
    conventions (V1/RGB in world axes, see :func:`tensor_fit`) live in one place.
    """
    fa = np.clip(np.nan_to_num(fit.fa), 0, 1)
    maps = {"FA": fa, "MD": fit.md, "AD": fit.ad, "RD": fit.rd}
    for k, v in maps.items():
        _save_like(np.nan_to_num(v) * mask, img, out[k])
    v1 = np.nan_to_num(fit.evecs[..., 0]) @ fsl_bvec_to_world(img.affine).T  # bvec frame -> world axes
    v1 *= mask[..., None]
    rgb = np.abs(v1) * fa[..., None]  # as dipy color_fa, on the world-axis V1
    _save_like(rgb, img, out["RGB"])
    _save_like(v1, img, out["V1"])


def dti_roi_stats(maps: dict[str, str], mask_file: str, out_tsv: str, subject: str, session: str | None,
                  wm_fa_threshold: float = 0.2) -> None:
    """Mean/median/SD of FA, MD, AD, RD in the brain mask and in FA-thresholded white matter."""
    import pandas as pd

    mask = np.asanyarray(load_nifti(mask_file, ndim=3).dataobj) > 0
    fa = np.asanyarray(load_nifti(maps["FA"], ndim=3).dataobj)
    rois = {"brain": mask, f"wm_fa{wm_fa_threshold:g}": mask & (fa > wm_fa_threshold)}
    units = {"FA": "unitless", "MD": "mm^2/s", "AD": "mm^2/s", "RD": "mm^2/s"}
    rows = []
    for param in ("FA", "MD", "AD", "RD"):
        vals = np.asanyarray(load_nifti(maps[param], ndim=3).dataobj)
        for roi, m in rois.items():
            v = vals[m]
            for stat, f in (("mean", np.mean), ("median", np.median), ("std", np.std)):
                rows.append({**visit_ids(subject, session), "structure": roi,
                             "measure": f"{param}_{stat}", "value": float(f(v)) if v.size else np.nan,
                             "unit": units[param]})
            if param == "FA":
                rows.append({**visit_ids(subject, session), "structure": roi,
                             "measure": "nvoxels", "value": float(m.sum()), "unit": "count"})
    write_tsv(out_tsv, pd.DataFrame(rows))
