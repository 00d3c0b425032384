"""Diffusion acquisition checks the preprocessing backends need before any job runs.

- ``check_shelled``: FSL eddy models the diffusion signal with a Gaussian process defined on a
  few shells; it refuses non-shelled data unless told otherwise (FSL eddy user guide,
  ``--data_is_shelled``: "eddy will check that the data is shelled ... if it is not, it will
  exit"). A DSI grid or random q-space sampling has many distinct b-values, so
  ``dwi.preproc: fsl_dwifslpreproc`` is refused for it at start, with the reason and the
  alternative (TORTOISE DRBUDDI).
- ``reverse_pe_b0``: the reverse phase-encoded b=0 image DRBUDDI needs, from BIDS ``fmap/``
  (``*_epi.nii.gz``) or ``dwi/`` (another series), by ``PhaseEncodingDirection``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class SchemeError(ValueError):
    pass


def read_bvals(path: str) -> np.ndarray:
    try:
        vals = np.loadtxt(path, ndmin=1).ravel()
    except (OSError, ValueError) as exc:
        raise SchemeError(f"{path}: cannot read the b-values ({exc})") from None
    if vals.size == 0:
        raise SchemeError(f"{path}: no b-values")
    return vals


def shells(bvals, round_to: float = 100.0, b0_threshold: float = 50.0) -> list[float]:
    """Distinct non-zero b-values after rounding to ``round_to`` s/mm^2 (b <= b0_threshold is b=0)."""
    b = np.asarray(bvals, dtype=float)
    b = b[b > b0_threshold]
    return sorted({float(x) for x in np.round(b / round_to) * round_to})


def check_shelled(bval_path: str, max_shells: int, round_to: float = 100.0) -> list[float]:
    """The shells of a scheme; raises SchemeError, naming the file, when it has more than
    ``max_shells`` (not shelled: eddy cannot model it)."""
    found = shells(read_bvals(bval_path), round_to)
    if len(found) > max_shells:
        shown = ", ".join(f"{x:g}" for x in found[:12]) + (", ..." if len(found) > 12 else "")
        raise SchemeError(
            f"{bval_path}: dwi.preproc.method 'fsl_dwifslpreproc' needs shelled data, but this scheme has "
            f"{len(found)} distinct b-values (rounded to {round_to:g} s/mm^2: {shown}; dwi.preproc.max_shells "
            f"is {max_shells}), as a DSI grid or random q-space sampling has. FSL eddy predicts each volume from "
            "a Gaussian-process model of the signal on a few shells, which does not hold for such data. Use "
            "dwi.preproc.method 'drbuddi' (TORTOISE DRBUDDI susceptibility correction with a reverse "
            "phase-encoded b=0, as QSIPrep recommends for DSI) or 'none'; raise dwi.preproc.max_shells only if "
            "the scheme really is shelled.")
    return found


def _pe(json_path: str | os.PathLike | None) -> str | None:
    if not json_path or not os.path.exists(json_path):
        return None
    with open(json_path) as fh:
        return json.load(fh).get("PhaseEncodingDirection")


def _opposite(pe: str) -> str:
    return pe[:-1] if pe.endswith("-") else pe + "-"


def _sidecar(nii: Path) -> Path:
    return nii.with_name(nii.name[: -len(".nii.gz")] + ".json" if nii.name.endswith(".nii.gz")
                         else nii.stem + ".json")


def reverse_pe_b0(dwi_nifti: str, dwi_json: str | None) -> tuple[str, str, str]:
    """(reverse image, its PhaseEncodingDirection, the DWI's) for DRBUDDI: first a ``fmap/*_epi``
    image of the same visit with the opposite PhaseEncodingDirection, else another ``dwi/``
    series with it. Raises SchemeError naming the DWI when there is none."""
    pe = _pe(dwi_json)
    dwi = Path(dwi_nifti)
    if not pe:
        raise SchemeError(f"{dwi_nifti}: dwi.preproc.method 'drbuddi' needs PhaseEncodingDirection in the DWI's "
                          "BIDS sidecar (.json)")
    want = _opposite(pe)
    visit = dwi.parent.parent  # sub-X[/ses-Y]
    candidates = sorted((visit / "fmap").glob("*_epi.nii*")) + sorted(
        p for p in (visit / "dwi").glob("*_dwi.nii*") if p != dwi)
    for c in candidates:
        if _pe(_sidecar(c)) == want:
            return str(c), want, pe
    raise SchemeError(f"{dwi_nifti}: dwi.preproc.method 'drbuddi' needs a reverse phase-encoded b=0 image "
                      f"(PhaseEncodingDirection {want!r}, the DWI has {pe!r}) in {visit / 'fmap'} (*_epi.nii.gz "
                      f"with a .json sidecar) or {visit / 'dwi'}; none found")
