"""Per-visit QC numbers: the key numbers of the pipeline's outputs plus cheap image-quality
metrics, in one small JSON per visit that the group page reads (it never opens an image).

Metrics (``None`` = not available, written as JSON null and shown as n/a):

- ``brainmask_ml``, ``csf_ml``, ``gm_ml``, ``wm_ml``: from the tissue-volume table
- ``reg_similarity_before`` / ``reg_similarity_after``: correlation with the template (registration JSON)
- ``t1w_snr_wm``: mean / SD of the bias-corrected T1w in white matter (dseg label 3)
- ``t1w_cnr``: |mean WM - mean GM| / sqrt(SD WM^2 + SD GM^2)
- ``t1w_cjv``: coefficient of joint variation, (SD WM + SD GM) / |mean WM - mean GM| (lower is better)
- ``dwi_mask_ml``: DWI brain-mask volume
- ``dwi_b0_snr``: of the raw DWI; with two or more b=0 volumes the median over mask voxels of
  mean/SD across the b=0 volumes (temporal SNR); with one, its mean in the mask over DIPY's
  local-variance noise estimate (``dipy.denoise.noise_estimate.estimate_sigma``, N=0), which
  counts fine anatomy as noise and so reads low
- ``fa_wm_mean``: mean FA in white matter (FA > the ROI table's threshold)
- ``fs_etiv_ml``, ``fs_mean_thickness_mm``: FreeSurfer eTIV and mean cortical thickness (mean of
  both hemispheres), when a FreeSurfer subject of the same name exists
"""

from __future__ import annotations

import json
import math

import numpy as np

from .io import load_nifti, write_json

# metric -> (label, unit, group); the order is the order on the pages
METRICS = {
    "brainmask_ml": ("Brain mask volume", "mL", "anat"),
    "csf_ml": ("CSF volume", "mL", "anat"),
    "gm_ml": ("GM volume", "mL", "anat"),
    "wm_ml": ("WM volume", "mL", "anat"),
    "reg_similarity_before": ("Template similarity before registration", "corr.", "anat"),
    "reg_similarity_after": ("Template similarity after registration", "corr.", "anat"),
    "t1w_snr_wm": ("T1w SNR (WM)", "", "anat"),
    "t1w_cnr": ("T1w GM/WM CNR", "", "anat"),
    "t1w_cjv": ("T1w CJV (lower is better)", "", "anat"),
    "dwi_mask_ml": ("DWI mask volume", "mL", "dwi"),
    "dwi_b0_snr": ("DWI b=0 SNR", "", "dwi"),
    "fa_wm_mean": ("Mean FA in WM", "", "dwi"),
    "fs_etiv_ml": ("FreeSurfer eTIV", "mL", "freesurfer"),
    "fs_mean_thickness_mm": ("FreeSurfer mean cortical thickness", "mm", "freesurfer"),
}
TISSUE_KEYS = {"brainmask": "brainmask_ml", "CSF": "csf_ml", "GM": "gm_ml", "WM": "wm_ml"}


def _f(x) -> float | None:
    """A finite float, or None (never a silent zero)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _data(path: str, ndim: int | None = None) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.as_closest_canonical(load_nifti(path, ndim=ndim)).dataobj)


def t1w_iqms(t1_file: str, dseg_file: str) -> dict:
    """SNR in WM, GM/WM CNR and CJV of the bias-corrected T1w from the three-class dseg."""
    t1 = _data(t1_file, 3).astype(np.float64)
    dseg = _data(dseg_file, 3)
    if t1.shape != dseg.shape:
        raise ValueError(f"{dseg_file}: shape {dseg.shape} differs from the T1w {t1_file} {t1.shape}")
    gm, wm = t1[dseg == 2], t1[dseg == 3]
    out = {"t1w_snr_wm": None, "t1w_cnr": None, "t1w_cjv": None}
    if wm.size > 1:
        sd_wm = wm.std(ddof=1)
        out["t1w_snr_wm"] = _f(wm.mean() / sd_wm) if sd_wm > 0 else None
    if gm.size > 1 and wm.size > 1:
        diff = abs(wm.mean() - gm.mean())
        sds = wm.std(ddof=1), gm.std(ddof=1)
        out["t1w_cnr"] = _f(diff / math.hypot(*sds)) if math.hypot(*sds) > 0 else None
        out["t1w_cjv"] = _f(sum(sds) / diff) if diff > 0 else None
    return out


def dwi_b0_snr(dwi_file: str, bval_file: str, mask_file: str, b0_threshold: float = 50.0) -> dict:
    """b=0 SNR in the DWI mask (see the module docstring) and the DWI mask volume."""
    img = load_nifti(dwi_file, ndim=4)
    bvals = np.loadtxt(bval_file, ndmin=1)
    if img.shape[3] != bvals.size:
        raise ValueError(f"{dwi_file}: {img.shape[3]} volumes but {bvals.size} b-values in {bval_file}")
    mimg = load_nifti(mask_file, ndim=3)
    mask = np.asanyarray(mimg.dataobj) > 0
    if mask.shape != img.shape[:3]:
        raise ValueError(f"{mask_file}: shape {mask.shape} differs from the DWI {dwi_file} {img.shape[:3]}")
    vox_ml = float(np.prod(mimg.header.get_zooms()[:3])) / 1000.0
    out = {"dwi_mask_ml": _f(mask.sum() * vox_ml), "dwi_b0_snr": None}
    b0 = np.flatnonzero(bvals <= b0_threshold)
    if b0.size == 0 or not mask.any():
        return out
    data = np.asanyarray(img.dataobj)
    vals = np.stack([np.asarray(data[..., i], dtype=np.float64)[mask] for i in b0], axis=1)
    if b0.size >= 2:
        sd = vals.std(axis=1, ddof=1)
        ok = sd > 0
        out["dwi_b0_snr"] = _f(np.median(vals.mean(axis=1)[ok] / sd[ok])) if ok.any() else None
    else:
        from dipy.denoise.noise_estimate import estimate_sigma

        sigma = float(estimate_sigma(np.asarray(data[..., b0[0]], dtype=np.float64), N=0)[0])
        out["dwi_b0_snr"] = _f(vals[:, 0].mean() / sigma) if sigma > 0 else None
    return out


def _table(path: str):
    import pandas as pd

    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)


def tissue_numbers(volumes_tsv: str) -> dict:
    t = _table(volumes_tsv)
    for col in ("structure", "value"):
        if col not in t.columns:
            raise ValueError(f"{volumes_tsv}: no column {col!r} (columns: {', '.join(t.columns)})")
    vol = t[t["measure"] == "volume"] if "measure" in t.columns else t
    out = {k: None for k in TISSUE_KEYS.values()}
    for _, row in vol.iterrows():
        key = TISSUE_KEYS.get(str(row["structure"]))
        if key:
            out[key] = _f(row["value"])
    return out


def registration_numbers(metrics_json: str) -> dict:
    with open(metrics_json) as f:
        m = json.load(f)
    missing = [k for k in ("correlation_before", "correlation_after") if k not in m]
    if missing:
        raise ValueError(f"{metrics_json}: registration metrics lack {', '.join(missing)}")
    return {"reg_similarity_before": _f(m["correlation_before"]),
            "reg_similarity_after": _f(m["correlation_after"])}


def fa_wm_number(dti_stats_tsv: str) -> dict:
    t = _table(dti_stats_tsv)
    rows = t[t["structure"].astype(str).str.startswith("wm_fa") & (t["measure"] == "FA_mean")]
    return {"fa_wm_mean": _f(rows["value"].iloc[0]) if len(rows) else None}


def freesurfer_numbers(global_parquet: str) -> dict:
    """eTIV (mm^3 -> mL) and mean cortical thickness (mean of lh and rh) from a subject's global
    FreeSurfer table (neurosmk.fsstats)."""
    import pandas as pd

    g = pd.read_parquet(global_parquet)
    g = g.astype({c: str for c in ("structure", "hemisphere") if c in g.columns})
    etiv = g[g["structure"] == "eTIV"]["value"]
    thick = g[g["structure"] == "MeanThickness"]["value"]
    return {"fs_etiv_ml": _f(etiv.iloc[0] / 1000.0) if len(etiv) else None,
            "fs_mean_thickness_mm": _f(thick.mean()) if len(thick) else None}


def visit_metrics(participant_id: str, session_id: str | None, *, t1w=None, dseg=None, volumes=None,
                  reg_metrics=None, dwi=None, bval=None, dwi_mask=None, dti_stats=None, fs_global=None,
                  b0_threshold: float = 50.0) -> dict:
    """All metrics of one visit from whichever inputs it has (missing inputs give None)."""
    m = {k: None for k in METRICS}
    if volumes:
        m.update(tissue_numbers(volumes))
    if reg_metrics:
        m.update(registration_numbers(reg_metrics))
    if t1w and dseg:
        m.update(t1w_iqms(t1w, dseg))
    if dwi and bval and dwi_mask:
        m.update(dwi_b0_snr(dwi, bval, dwi_mask, b0_threshold))
    if dti_stats:
        m.update(fa_wm_number(dti_stats))
    if fs_global:
        m.update(freesurfer_numbers(fs_global))
    return {"participant_id": participant_id, "session_id": session_id or "n/a", "metrics": m,
            "units": {k: METRICS[k][1] for k in METRICS}}


def write_visit_metrics(out_json: str, record: dict) -> None:
    write_json(out_json, record)


def read_visit_metrics(path: str) -> dict:
    with open(path) as f:
        rec = json.load(f)
    if "participant_id" not in rec or "metrics" not in rec:
        raise ValueError(f"{path}: not a neurosmk QC metrics file (needs participant_id and metrics)")
    return rec
