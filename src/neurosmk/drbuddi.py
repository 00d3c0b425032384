"""The Python ends of the TORTOISE DRBUDDI backend (rules/tortoise.smk).

DRBUDDI (TORTOISE 4) estimates the susceptibility field from a blip-up / blip-down pair. Its
command line as QSIPrep drives it (qsiprep/interfaces/tortoise.py, class DRBUDDI, "epi" mode):
``DRBUDDI -u up_b0.nii --up_json up.json -d down_b0.nii``, writing ``deformation_FINV.nii.gz``
(blip-up space -> corrected) and ``b0_corrected_final.nii`` into the working folder.

- ``prepare_inputs``: the mean b=0 of the DWI (blip up), the mean of the reverse phase-encoded
  image (its b=0 volumes when it is a DWI series with a .bval), float32 in LPS+ voxel order as
  QSIPrep hands them over, and the JSON with the up image's PhaseEncodingDirection.
- ``apply_field``: the FINV displacement field applied to every DWI volume (ANTsPy, linear), the
  step QSIPrep does with antsApplyTransforms; gradients are unchanged (no rotation: a
  susceptibility field is not a head motion). No Jacobian modulation.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from neurosmk.io import atomic_path


def mean_b0(data: np.ndarray, bvals: np.ndarray | None, b0_threshold: float, name: str) -> np.ndarray:
    if data.ndim == 3:
        return data.astype(np.float32)
    if bvals is None:
        return data.mean(axis=3, dtype=np.float64).astype(np.float32)
    if bvals.size != data.shape[3]:
        raise ValueError(f"{name}: {data.shape[3]} volumes but {bvals.size} b-values")
    sel = bvals <= b0_threshold
    if not sel.any():
        raise ValueError(f"{name}: no b=0 volume (b <= {b0_threshold:g})")
    return data[..., sel].mean(axis=3, dtype=np.float64).astype(np.float32)


def _lps(img: nib.Nifti1Image, data: np.ndarray) -> nib.Nifti1Image:
    out = nib.Nifti1Image(data, img.affine)
    src = nib.orientations.io_orientation(img.affine)
    tr = nib.orientations.ornt_transform(src, nib.orientations.axcodes2ornt("LPS"))
    return out.as_reoriented(tr)


def prepare_inputs(dwi: str, bval: str, reverse: str, reverse_bval: str | None, pe_up: str,
                   out_up: str, out_down: str, out_json: str, b0_threshold: float = 50.0) -> None:
    img = nib.load(dwi)
    up = mean_b0(np.asarray(img.dataobj), np.loadtxt(bval, ndmin=1).ravel(), b0_threshold, dwi)
    rimg = nib.load(reverse)
    rb = np.loadtxt(reverse_bval, ndmin=1).ravel() if reverse_bval else None
    down = mean_b0(np.asarray(rimg.dataobj), rb, b0_threshold, reverse)
    if up.shape != down.shape:
        raise ValueError(f"{reverse}: grid {down.shape} differs from the DWI's {up.shape} ({dwi})")
    for data, src, dst in ((up, img, out_up), (down, rimg, out_down)):
        with atomic_path(dst) as tmp:
            nib.save(_lps(src, data), tmp)
    with atomic_path(out_json) as tmp:
        with open(tmp, "w") as fh:
            json.dump({"PhaseEncodingDirection": pe_up}, fh)


def apply_field(dwi: str, field: str, reference: str, out: str) -> None:
    import ants

    ref = ants.image_read(reference)
    img = nib.load(dwi)
    data = np.asarray(img.dataobj, dtype=np.float32)
    vols = []
    for i in range(data.shape[3]):
        vol = ants.from_nibabel(nib.Nifti1Image(data[..., i], img.affine))
        vols.append(ants.apply_transforms(fixed=ref, moving=vol, transformlist=[field],
                                          interpolator="linear").numpy())
    ref_nib = ants.to_nibabel(ref)
    with atomic_path(out) as tmp:
        nib.save(nib.Nifti1Image(np.stack(vols, axis=3).astype(np.float32), ref_nib.affine), tmp)


def tool_version(path: str) -> str:
    """The version line the DRBUDDI job wrote (its first line; ValueError naming the file if empty)."""
    with open(path) as fh:
        line = fh.readline().strip()
    if not line:
        raise ValueError(f"{path}: no DRBUDDI version line (the DRBUDDI job writes one after it ran)")
    return line
