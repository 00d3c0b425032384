"""Group QC for FreeSurfer stats: plots and robust-z outlier flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["outlier_flags", "group_plots", "Z_THRESHOLD", "MIN_SUBJECTS"]

Z_THRESHOLD = 3.5
MIN_SUBJECTS = 3
_MAD_SCALE = 1.4826  # MAD of a normal distribution -> standard deviation


def outlier_flags(long_df: pd.DataFrame, threshold: float = Z_THRESHOLD,
                  min_subjects: int = MIN_SUBJECTS) -> pd.DataFrame:
    """Per-subject robust z-scores, (value - median) / (1.4826 * MAD), within each
    atlas x hemisphere x structure x measure across subjects (+sessions).

    z is NaN where MAD is 0 or fewer than ``min_subjects`` values exist; ``outlier`` is
    |z| > threshold, and missing (written ``n/a``) where z is NaN: undecidable, not "no".
    """
    keys = ["atlas", "hemisphere", "structure", "measure"]
    cols = ["participant_id", "session_id"] + keys + ["value"]
    df = long_df[cols]
    df = df[~df["measure"].isin(["Index", "SegId"])]
    g = df.groupby(keys, observed=True, sort=False)["value"]
    med = g.transform("median")
    absdev = (df["value"] - med).abs()
    mad = absdev.groupby([df[k] for k in keys], observed=True, sort=False).transform("median")
    n = g.transform("count")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (df["value"] - med) / (_MAD_SCALE * mad)
    z = z.where((mad > 0) & (n >= min_subjects))
    out = df.assign(median=med, mad=mad, n_subjects=n, robust_z=z)
    flag = (out["robust_z"].abs() > threshold).astype(object)
    out["outlier"] = flag.where(out["robust_z"].notna(), None)
    return out.reset_index(drop=True)


def group_plots(long_df: pd.DataFrame, global_df: pd.DataFrame | None, out_dir) -> list[Path]:
    """Write PNGs: aparc cortical thickness per region (box + points across subjects) per
    hemisphere, and aseg volumes / eTIV.  Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurosmk.io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def _box(data: pd.DataFrame, ylabel: str, title: str, path: Path):
        data = data.dropna(subset=["value"])
        if data.empty:
            return
        names = list(dict.fromkeys(data["structure"].astype(str)))
        groups = data.groupby(data["structure"].astype(str))["value"]
        vals = [groups.get_group(n).to_numpy() for n in names]
        fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(names) + 2), 4.5))
        ax.boxplot(vals, showfliers=False)
        rng = np.random.default_rng(0)
        for i, v in enumerate(vals, 1):
            if len(v) <= 2000:
                ax.plot(i + rng.uniform(-0.15, 0.15, len(v)), v, ".", ms=3, alpha=0.5,
                        color="tab:blue")
        ax.set_xticks(range(1, len(names) + 1), names, rotation=90, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written.append(path)

    aparc = long_df[(long_df["atlas"] == "aparc") & (long_df["measure"] == "ThickAvg")]
    for hemi in ("lh", "rh"):
        d = aparc[aparc["hemisphere"] == hemi]
        n = d["participant_id"].nunique()
        _box(d, "cortical thickness (mm)", f"aparc {hemi} thickness, {n} subject(s)",
             out / f"aparc_{hemi}_thickness.png")

    if global_df is not None and not global_df.empty:
        ids = ["participant_id", "session_id"]
        etiv = global_df[(global_df["atlas"] == "aseg") & (global_df["measure"] == "eTIV")]
        etiv = etiv.assign(**{c: etiv[c].astype(object).fillna("n/a") for c in ids})
        etiv = etiv.drop_duplicates(ids).set_index(ids)
        seg = long_df[(long_df["atlas"] == "aseg") & (long_df["measure"] == "Volume_mm3")]
        if not seg.empty and not etiv.empty:
            seg = seg.assign(**{c: seg[c].astype(object).fillna("n/a") for c in ids})
            e = etiv["value"].reindex(pd.MultiIndex.from_frame(seg[ids]))
            seg = seg.assign(value=seg["value"].to_numpy() / e.to_numpy() * 100.0)
            n = seg["participant_id"].nunique()
            _box(seg, "volume (% of eTIV)", f"aseg volumes / eTIV, {n} subject(s)",
                 out / "aseg_volume_etiv.png")
    return written
