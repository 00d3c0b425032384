"""Long, global and wide (aparcstats2table / asegstats2table style) tables.

The long tables hold one row per number.  Their string columns are pandas categoricals,
built from integer codes in one pass over all parsed files, so 10,000 subjects (tens of
millions of rows) fit in memory and concatenate quickly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from neurosmk.fsstats.parser import ParsedStats

__all__ = ["LONG_COLUMNS", "GLOBAL_COLUMNS", "long_table", "global_table", "wide_tables",
           "concat_tables", "write_long_tsv", "write_fast_tsv", "write_table_parquet",
           "write_group_tables", "APARC_MEASURES", "ASEG_MEASURES", "LONG_NAME", "GLOBAL_NAME"]

LONG_COLUMNS = ["participant_id", "session_id", "atlas", "hemisphere", "structure", "measure",
                "value", "unit", "label", "hemi", "region", "freesurfer_version", "source_file"]
GLOBAL_COLUMNS = ["participant_id", "session_id", "atlas", "hemisphere", "structure", "measure",
                  "description", "value", "unit", "freesurfer_version", "source_file"]
_STR_LONG = [c for c in LONG_COLUMNS if c != "value"]
_STR_GLOBAL = [c for c in GLOBAL_COLUMNS if c != "value"]
LONG_NAME = "freesurfer_stats_long"
GLOBAL_NAME = "freesurfer_global_measures"

# ---- FreeSurfer 7.4.1 aparcstats2table / asegstats2table column rules -------------------------
# aparcstats2table (scripts/aparcstats2table; parser fsbindings/legacy.py AparcStatsParser):
# --meas name -> the ?h.<parc>.stats column it reads (measure_column_map, by position, here by
# the ColHeaders name at that position).  NumVert has no --meas.
APARC_MEASURES = {"SurfArea": "area", "GrayVol": "volume", "ThickAvg": "thickness",
                  "ThickStd": "thicknessstd", "MeanCurv": "meancurv", "GausCurv": "gauscurv",
                  "FoldInd": "foldind", "CurvInd": "curvind"}
# '# Measure' lines AparcStatsParser.parse appends (file order) after the structures:
# (name, key) -> column, and the --meas it is appended for (None: every measure).  TableWriter
# writes eTIV and BrainSegVolNotVent without the hemi_ prefix / _meas suffix.
APARC_EXTRAS = {("EstimatedTotalIntraCranialVol", "eTIV"): ("eTIV", None),
                ("BrainSegNotVent", "BrainSegVolNotVent"): ("BrainSegVolNotVent", None),
                ("Cortex", "WhiteSurfArea"): ("WhiteSurfArea", "area"),
                ("Cortex", "MeanThickness"): ("MeanThickness", "thickness")}
APARC_UNDECORATED = ("eTIV", "BrainSegVolNotVent")
# asegstats2table (scripts/asegstats2table; AsegStatsParser): --meas -> column (by position:
# nvoxels/nvertices 2, volume/Area_mm2 3, mean 5, std 6, max 8, snr 10), named here by the
# ColHeaders names mri_segstats writes at those positions.  Columns are the StructNames as is.
ASEG_MEASURES = {"NVoxels": "nvoxels", "NVertices": "nvertices", "Volume_mm3": "volume",
                 "Area_mm2": "Area_mm2", "normMean": "mean", "Mean": "mean",
                 "normStdDev": "std", "StdDev": "std", "normMax": "max", "Max": "max",
                 "SNR": "snr"}
# With --meas volume (and vol extras on, the default) AsegStatsParser appends these '# Measure'
# lines (file order) after the structures: (name, key) -> column (beg_struct_tuple).
ASEG_VOL_EXTRAS = {
    ("lhCortex", "lhCortexVol"): "lhCortexVol", ("rhCortex", "rhCortexVol"): "rhCortexVol",
    ("Cortex", "CortexVol"): "CortexVol",
    ("lhCorticalWhiteMatter", "lhCorticalWhiteMatterVol"): "lhCorticalWhiteMatterVol",
    ("rhCorticalWhiteMatter", "rhCorticalWhiteMatterVol"): "rhCorticalWhiteMatterVol",
    ("CorticalWhiteMatter", "CorticalWhiteMatterVol"): "CorticalWhiteMatterVol",
    ("lhCerebralWhiteMatter", "lhCerebralWhiteMatterVol"): "lhCerebralWhiteMatterVol",
    ("rhCerebralWhiteMatter", "rhCerebralWhiteMatterVol"): "rhCerebralWhiteMatterVol",
    ("CerebralWhiteMatter", "CerebralWhiteMatterVol"): "CerebralWhiteMatterVol",
    ("SubCortGray", "SubCortGrayVol"): "SubCortGrayVol",
    ("TotalGray", "TotalGrayVol"): "TotalGrayVol",
    ("SuperTentorial", "SuperTentorialVol"): "SuperTentorialVol",
    ("SupraTentorial", "SupraTentorialVol"): "SupraTentorialVol",
    ("SupraTentorialNotVent", "SupraTentorialVolNotVent"): "SupraTentorialVolNotVent",
    ("SupraTentorialNotVentVox", "SupraTentorialVolNotVentVox"): "SupraTentorialVolNotVentVox",
    ("IntraCranialVol", "ICV"): "IntraCranialVol",
    ("EstimatedTotalIntraCranialVol", "eTIV"): "EstimatedTotalIntraCranialVol",
    ("SegmentedTotalIntraCranialVol", "sTIV"): "SegmentedTotalIntracranialVol",
    ("Mask", "MaskVol"): "MaskVol",
    ("BrainVol-to-eTIV", "BrainVol-to-eTIV"): "BrainVol-to-eTIV",
    ("BrainSegVol-to-eTIV", "BrainSegVol-to-eTIV"): "BrainSegVol-to-eTIV",
    ("MaskVol-to-eTIV", "MaskVol-to-eTIV"): "MaskVol-to-eTIV",
    ("lhSurfaceHoles", "lhSurfaceHoles"): "lhSurfaceHoles",
    ("rhSurfaceHoles", "rhSurfaceHoles"): "rhSurfaceHoles",
    ("SurfaceHoles", "SurfaceHoles"): "SurfaceHoles",
    ("BrainSeg", "BrainSegVol"): "BrainSegVol",
    ("BrainSegNotVent", "BrainSegVolNotVent"): "BrainSegVolNotVent",
    ("BrainSegNotVentSurf", "BrainSegVolNotVentSurf"): "BrainSegVolNotVentSurf",
}
# atlases with no aparcstats2table equivalent: mris_curvature_stats summaries (?h.curv.stats,
# ?h.curv.pial.stats) stay in the long table only
_NOT_WIDE_ATLAS_PREFIXES = ("curv",)
# prefixes removed from a whole-brain structure name for the ggseg-style 'region'
_REGION_PREFIXES = ("ctx-lh-", "ctx-rh-", "ctx_lh_", "ctx_rh_", "wm-lh-", "wm-rh-", "wm_lh_",
                    "wm_rh_", "Left-", "Right-", "lh-", "rh-", "lh_", "rh_")
_GGSEG_HEMI = {"lh": "left", "rh": "right"}


def _ids_of(p: ParsedStats) -> tuple:
    """(participant_id, session_id or None) of a parsed file's subject folder."""
    from neurosmk.tables import participant_id, session_id

    return participant_id(p.subject), session_id(p.session)


def _region(structure: str, file_hemi: str) -> str:
    if file_hemi:
        return structure
    for pre in _REGION_PREFIXES:
        if structure.startswith(pre):
            return structure[len(pre):]
    return structure


class _Interner:
    """String -> integer code, in order of first appearance; None (n/a) -> -1."""
    __slots__ = ("codes", "names")

    def __init__(self):
        self.codes: dict = {}
        self.names: list = []

    def __call__(self, s) -> int:
        if s is None:
            return -1
        c = self.codes.get(s)
        if c is None:
            c = self.codes[s] = len(self.names)
            self.names.append(s)
        return c


def _frame(columns: dict, interners: dict, order: list) -> pd.DataFrame:
    data = {}
    for name in order:
        col = columns[name]
        if name in interners:
            data[name] = pd.Categorical.from_codes(col, categories=pd.Index(
                interners[name].names, dtype=object))
        else:
            data[name] = col
    return pd.DataFrame(data, copy=False)


def _per_file_keys(p: ParsedStats) -> dict:
    pid, sid = _ids_of(p)
    return {"participant_id": pid, "session_id": sid, "atlas": p.atlas,
            "hemisphere": p.hemisphere or None, "freesurfer_version": p.freesurfer_version or None,
            "source_file": p.path}


def _note_file(per_file: dict, it: dict, p: ParsedStats) -> None:
    """Append the interned per-file keys (participant_id, session_id, ...) of ``p``."""
    keys = _per_file_keys(p)
    for c, lst in per_file.items():
        lst.append(it[c](keys[c]))


def _per_file_columns(per_file: dict, counts) -> dict:
    """Per-file key codes repeated over each file's number of rows."""
    counts_a = np.asarray(counts, dtype=np.int64)
    return {name: np.repeat(np.asarray(v, dtype=np.int32), counts_a) for name, v in per_file.items()}


def long_table(parsed_list: Iterable[ParsedStats]) -> pd.DataFrame:
    """One row per number in the table rows of every parsed file (every numeric column), and
    one per value of the curvature (``?h.curv.stats``) files.  Columns LONG_COLUMNS; ``label``
    / ``hemi`` / ``region`` are the ggseg-style keys of the structure."""
    it = {c: _Interner() for c in _STR_LONG}
    per_file = {c: [] for c in ("participant_id", "session_id", "atlas", "freesurfer_version",
                                "source_file")}
    row_cols = ("structure", "hemisphere", "measure", "unit", "label", "hemi", "region")
    parts = {c: [] for c in row_cols}
    counts, values = [], []
    cache: dict = {}
    for p in parsed_list:
        v = p.values
        if v.size == 0:
            continue
        key = (v.ndim, p.hemisphere, tuple(p.structures), tuple(p.row_hemispheres),
               tuple(p.numeric_columns), tuple(p.units))
        arrs = cache.get(key)
        if arrs is None:
            per_row = {
                "structure": list(p.structures), "hemisphere": list(p.row_hemispheres),
                "label": [f"{p.hemisphere}_{s}" if p.hemisphere else s for s in p.structures],
                "hemi": [_GGSEG_HEMI.get(h) for h in p.row_hemispheres],
                "region": [_region(s, p.hemisphere) for s in p.structures]}
            per_col = {"measure": list(p.numeric_columns), "unit": list(p.units)}
            codes = {c: np.array([it[c](x) for x in xs], dtype=np.int32)
                     for c, xs in {**per_row, **per_col}.items()}
            if v.ndim == 1:  # curvature files: one structure/measure/unit per value
                arrs = codes
            else:
                n, k = v.shape
                arrs = {c: (np.repeat(a, k) if c in per_row else np.tile(a, n))
                        for c, a in codes.items()}
            cache[key] = arrs
        for c in row_cols:
            parts[c].append(arrs[c])
        values.append(v.ravel())
        counts.append(v.size)
        _note_file(per_file, it, p)
    cols = _per_file_columns(per_file, counts)
    for c in row_cols:
        cols[c] = np.concatenate(parts[c]) if parts[c] else np.empty(0, dtype=np.int32)
    cols["value"] = np.concatenate(values) if values else np.empty(0, dtype=np.float64)
    return _frame(cols, it, LONG_COLUMNS)


def global_table(parsed_list: Iterable[ParsedStats]) -> pd.DataFrame:
    """The ``# Measure`` values of every parsed file, long form and oriented like the long
    table: structure = the Measure name (e.g. ``Cortex``, ``EstimatedTotalIntraCranialVol``),
    measure = its key (e.g. ``MeanThickness``, ``eTIV``).  Rows in file order."""
    it = {c: _Interner() for c in _STR_GLOBAL}
    per_file = {c: [] for c in ("participant_id", "session_id", "atlas", "hemisphere",
                                "freesurfer_version", "source_file")}
    counts, values, parts = [], [], []
    cache: dict = {}
    for p in parsed_list:
        ms = p.measures
        if not ms:
            continue
        key = tuple((m[0], m[1], m[2], m[4]) for m in ms)
        arrs = cache.get(key)
        if arrs is None:
            arrs = cache[key] = tuple(
                np.array([it[c](m[j]) for m in ms], dtype=np.int32)
                for c, j in (("structure", 0), ("measure", 1), ("description", 2), ("unit", 4)))
        parts.append(arrs)
        values.extend([m[3] for m in ms])
        counts.append(len(ms))
        _note_file(per_file, it, p)
    cols = _per_file_columns(per_file, counts)
    for j, c in enumerate(("structure", "measure", "description", "unit")):
        cols[c] = (np.concatenate([x[j] for x in parts]) if parts
                   else np.empty(0, dtype=np.int32))
    cols["value"] = np.asarray(values, dtype=np.float64)
    return _frame(cols, it, GLOBAL_COLUMNS)


def _categorical(df: pd.DataFrame) -> pd.DataFrame:
    """String columns as categoricals (a column that is all n/a comes back from Parquet as
    plain nulls)."""
    conv = {c: "category" for c in df.columns
            if c != "value" and not isinstance(df[c].dtype, pd.CategoricalDtype)
            and (df[c].dtype == object or str(df[c].dtype) in ("null", "string"))}
    return df.astype(conv) if conv else df


def concat_tables(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate long/global frames, uniting their categories (codes remapped into one
    preallocated array of the smallest integer type, no strings materialised)."""
    frames = [_categorical(f) for f in frames if f is not None]
    if not frames:
        raise ValueError("no tables to concatenate")
    if len(frames) == 1:
        return frames[0]
    first = frames[0]
    sizes = [len(f) for f in frames]
    total = sum(sizes)
    out = {}
    for col in first.columns:
        if isinstance(first[col].dtype, pd.CategoricalDtype):
            cats = pd.Index(pd.unique(np.concatenate(
                [f[col].cat.categories.to_numpy(dtype=object) for f in frames])), dtype=object)
            n = len(cats)
            dtype = np.int8 if n < 127 else np.int16 if n < 32767 else np.int32
            codes = np.empty(total, dtype=dtype)
            pos = 0
            for f, size in zip(frames, sizes):
                mapping = cats.get_indexer(f[col].cat.categories).astype(dtype)
                c = f[col].cat.codes.to_numpy()
                dst = codes[pos:pos + size]
                if size and len(mapping) == 0:  # all n/a
                    dst[:] = -1
                elif size and c.min() < 0:  # NaN stays NaN (-1)
                    dst[:] = np.where(c < 0, -1, mapping[np.maximum(c, 0)])
                else:
                    np.take(mapping, c, out=dst)
                pos += size
            out[col] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats),
                                                 validate=False)
        else:
            out[col] = np.concatenate([f[col].to_numpy() for f in frames])
    return pd.DataFrame(out, copy=False)


def _is_hemi_file(path: str) -> bool:
    return os.path.basename(str(path)).startswith(("lh.", "rh."))


def _visit_codes(df: pd.DataFrame, pid_cats: pd.Index, sid_cats: pd.Index) -> np.ndarray:
    """One integer per row for its (participant_id, session_id) in the category space
    (pid_cats, sid_cats): pid * (len(sid_cats) + 1) + sid + 1 (session n/a -> 0); -1 where the
    participant is not in pid_cats."""
    p = pid_cats.get_indexer(df["participant_id"].cat.categories)[df["participant_id"].cat.codes]
    sc = df["session_id"].cat.codes.to_numpy()
    s = np.where(sc < 0, -1, sid_cats.get_indexer(df["session_id"].cat.categories)[np.maximum(sc, 0)]
                 if len(df["session_id"].cat.categories) else -1)
    key = p.astype(np.int64) * (len(sid_cats) + 1) + s + 1
    return np.where(p < 0, -1, key)


def _runs(keys: np.ndarray):
    """Stable grouping: (sorted order, unique keys, start of each key's run in that order)."""
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    return order, uniq, starts


def _sequences(codes: np.ndarray, starts: np.ndarray) -> list:
    return np.split(codes, starts[1:]) if len(codes) else []


def _signature_ids(codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One id per run (runs of ``counts`` items in ``codes``): equal sequences, equal ids."""
    n = len(counts)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if (counts == counts[0]).all():  # the usual case: one vectorised comparison
        mat = codes.reshape(n, int(counts[0])) if counts[0] else np.zeros((n, 0), np.int64)
        if mat.shape[1] == 0 or (mat == mat[0]).all():
            return np.zeros(n, dtype=np.int64)
        return np.unique(mat, axis=0, return_inverse=True)[1].ravel().astype(np.int64)
    ids: dict = {}
    out = np.empty(n, dtype=np.int64)
    for i, seq in enumerate(np.split(codes, np.cumsum(counts)[:-1])):
        out[i] = ids.setdefault(seq.tobytes(), len(ids))
    return out


def wide_tables(long: pd.DataFrame, global_: pd.DataFrame | None = None) -> dict:
    """FreeSurfer 7.4.1 ``aparcstats2table`` / ``asegstats2table`` tables, one per atlas x
    hemisphere x --meas: ``<atlas>_<lh|rh>_<meas>`` for surface parcellations (columns
    ``lh_<structure>_<meas>``, plus ``lh_MeanThickness_thickness`` / ``lh_WhiteSurfArea_area``
    / ``BrainSegVolNotVent`` / ``eTIV`` where the files have them), ``<atlas>_both_<meas>`` for
    whole-brain segmentations (columns = StructNames, plus the global volumes with --meas
    volume), ``<atlas>_<lh|rh>_<meas>`` for per-hemisphere mri_segstats tables (w-g.pct).
    Column names and order follow those scripts (see APARC_* / ASEG_*); the subject column is
    replaced by ``participant_id`` + ``session_id``; a value a subject lacks is NaN (FreeSurfer
    writes 0.0)."""
    out: dict = {}
    if long.empty:
        return out
    long = _categorical(long)
    global_ = _categorical(global_) if global_ is not None else None
    pid_cats = pd.Index(long["participant_id"].cat.categories, dtype=object)
    sid_cats = pd.Index(long["session_id"].cat.categories, dtype=object)
    n_s1 = len(sid_cats) + 1
    vkey = _visit_codes(long, pid_cats, sid_cats)
    atlas_codes = long["atlas"].cat.codes.to_numpy()
    hemi_codes = long["hemisphere"].cat.codes.to_numpy()
    meas_codes = long["measure"].cat.codes.to_numpy()
    struct_codes = long["structure"].cat.codes.to_numpy()
    src_codes = long["source_file"].cat.codes.to_numpy()
    values = long["value"].to_numpy()
    meas_cats = long["measure"].cat.categories
    struct_cats = long["structure"].cat.categories
    hemi_cats = long["hemisphere"].cat.categories
    # rows of each atlas: one stable (radix) sort instead of a scan per atlas
    order = np.argsort(atlas_codes, kind="stable")
    bounds = np.searchsorted(atlas_codes[order], np.arange(len(long["atlas"].cat.categories) + 1))

    g_groups: dict = {}
    if global_ is not None and not global_.empty:
        g_vkey = _visit_codes(global_, pid_cats, sid_cats)
        gs_cats, gm_cats = global_["structure"].cat.categories, global_["measure"].cat.categories
        g_pair = (global_["structure"].cat.codes.to_numpy().astype(np.int64) * len(gm_cats)
                  + global_["measure"].cat.codes.to_numpy())
        g_pairs = {int(c): (gs_cats[c // len(gm_cats)], gm_cats[c % len(gm_cats)])
                   for c in np.unique(g_pair)}
        g_vals = global_["value"].to_numpy()
        g_unit = global_["unit"].astype(object).to_numpy()
        g_desc = global_["description"].astype(object).to_numpy()
        ga = global_["atlas"].cat.codes.to_numpy().astype(np.int64)
        gh = global_["hemisphere"].cat.codes.to_numpy().astype(np.int64) + 1  # n/a -> 0
        g_order, g_keys, g_starts = _runs(ga * (len(global_["hemisphere"].cat.categories) + 1) + gh)
        g_hcats = [None] + list(global_["hemisphere"].cat.categories)
        n_h1 = len(g_hcats)
        for k, idx in zip(g_keys.tolist(), _sequences(g_order, g_starts)):
            g_groups[(global_["atlas"].cat.categories[k // n_h1], g_hcats[k % n_h1])] = idx
    for a_code, atlas in enumerate(long["atlas"].cat.categories):
        if atlas.startswith(_NOT_WIDE_ATLAS_PREFIXES):
            continue
        rows = order[bounds[a_code]:bounds[a_code + 1]]
        if rows.size == 0:
            continue
        present = {meas_cats[m] for m in np.unique(meas_codes[rows])}
        aseg_style = "SegId" in present
        fs_meas = ASEG_MEASURES if aseg_style else APARC_MEASURES
        split = _is_hemi_file(long["source_file"].cat.categories[src_codes[rows[0]]])
        groups = ([(hemi_cats[h], rows[hemi_codes[rows] == h]) for h in np.unique(hemi_codes[rows])]
                  if split else [("both", rows)])
        for hemi, grows in groups:
            gsel = g_groups.get((atlas, hemi if split else None))
            for m_code in np.unique(meas_codes[grows]):
                mcol = meas_cats[m_code]
                meas = fs_meas.get(mcol)
                if meas is None:
                    continue
                r = grows[meas_codes[grows] == m_code]
                name = f"{atlas}_{hemi}_{meas}"
                unit = long["unit"].cat.categories[long["unit"].cat.codes.to_numpy()[r[0]]]
                out[name] = _one_wide(r, vkey, struct_codes, values, struct_cats, pid_cats, sid_cats,
                                      n_s1, atlas, hemi, meas, aseg_style, split,
                                      *(_extra_rows(gsel, g_vkey, g_pair, g_pairs, g_vals, meas,
                                                    aseg_style, g_unit, g_desc)
                                        if gsel is not None else (None, None, None, [], {})),
                                      mcol=mcol, unit=unit)
    return out


def _extra_rows(gsel, g_vkey, g_pair, g_pairs, g_vals, meas, aseg_style, g_unit, g_desc):
    """The global rows appended as columns for this --meas: (visit keys, extra codes, values,
    extra column names), in file order."""
    if aseg_style:
        wanted = ASEG_VOL_EXTRAS if meas == "volume" else {}
    else:
        wanted = {k: v[0] for k, v in APARC_EXTRAS.items() if v[1] in (None, meas)}
    pc = g_pair[gsel]
    code_col = {c: wanted[pair] for c, pair in g_pairs.items() if pair in wanted}
    keep = gsel[np.isin(pc, list(code_col))] if code_col else gsel[:0]
    names: list = []
    docs: dict = {}
    for i, c in zip(keep.tolist(), g_pair[keep].tolist()):  # first-seen (file) order
        if code_col[c] not in names:
            names.append(code_col[c])
            docs[code_col[c]] = (g_desc[i], g_unit[i], g_pairs[c])
    lut = {c: names.index(col) for c, col in code_col.items() if col in names}
    codes = np.fromiter((lut[c] for c in g_pair[keep].tolist()), dtype=np.int64, count=len(keep))
    return g_vkey[keep].astype(np.int64), codes, g_vals[keep].astype(np.float64), names, docs


def _one_wide(r, vkey, struct_codes, values, struct_cats, pid_cats, sid_cats, n_s1, atlas, hemi,
              meas, aseg_style, split, x_keys, x_codes, x_vals, x_names, x_docs, mcol=None,
              unit=None) -> pd.DataFrame:
    """One wide table; its data dictionary (column -> Description/Units) in ``.attrs["columns"]``."""
    order, visits, starts = _runs(vkey[r])
    rs = r[order]
    sc = struct_codes[rs].astype(np.int64)
    counts = np.diff(np.append(starts, len(rs)))
    if x_names:
        ok = x_keys >= 0
        x_keys, x_codes, x_vals = x_keys[ok], x_codes[ok], x_vals[ok]
        x_order, x_visits, x_starts = _runs(x_keys)
        xcs, xvs = x_codes[x_order], x_vals[x_order]
    else:
        x_visits = x_starts = xcs = np.empty(0, dtype=np.int64)
        xvs = np.empty(0)
    x_counts = np.diff(np.append(x_starts, len(xcs)))
    extra_only = np.setdiff1d(x_visits, visits)
    all_visits = np.concatenate([visits, extra_only]).astype(np.int64)
    # per visit of all_visits: its run index among the structure runs / the extras runs (-1: none)
    s_idx = np.concatenate([np.arange(len(visits)), np.full(len(extra_only), -1)])
    xp = np.searchsorted(x_visits, all_visits)
    x_idx = np.where((xp < len(x_visits)) & (x_visits[np.minimum(xp, max(len(x_visits) - 1, 0))]
                                             == all_visits) if len(x_visits) else False, xp, -1)
    # column order of aparcstats2table/asegstats2table: per subject (in order) its structures in
    # file order, then its appended '# Measure' columns in file order; the table's columns are
    # the union in first-seen order (fsbindings/legacy.py unique_union).  Subjects with the same
    # sequences add nothing new, so each distinct (structures, extras) pair is read once.
    s_sig, x_sig = _signature_ids(sc, counts), _signature_ids(xcs, x_counts)
    seen: dict = {}
    done: set = set()
    x_idx = np.broadcast_to(x_idx, s_idx.shape)
    for si, xi in zip(s_idx.tolist(), x_idx.tolist()):
        key = (s_sig[si] if si >= 0 else -1, x_sig[xi] if xi >= 0 else -1)
        if key in done:
            continue
        done.add(key)
        if si >= 0:
            for c in sc[starts[si]:starts[si] + counts[si]].tolist():
                seen.setdefault(("s", c), None)
        if xi >= 0:
            for c in xcs[x_starts[xi]:x_starts[xi] + x_counts[xi]].tolist():
                seen.setdefault(("x", c), None)
    cols = list(seen)
    lut_s = np.full(len(struct_cats), -1, dtype=np.int64)
    lut_x = np.full(len(x_names), -1, dtype=np.int64)
    for j, (kind, c) in enumerate(cols):
        (lut_s if kind == "s" else lut_x)[c] = j
    ri = np.repeat(np.arange(len(visits)), counts)
    ci = lut_s[sc]
    lin = ri * len(cols) + ci
    if len(np.unique(lin)) != len(lin):
        dup = int(np.flatnonzero(np.bincount(lin) > 1)[0])
        v = int(visits[dup // len(cols)])
        name = struct_cats[cols[dup % len(cols)][1]]
        raise ValueError(
            f"duplicate value for participant {pid_cats[v // n_s1]!r} session "
            f"{sid_cats[v % n_s1 - 1] if v % n_s1 else 'n/a'!r}, atlas {atlas!r}, structure "
            f"{name!r} (same subject given twice?)")
    mat = np.full((len(all_visits), len(cols)), np.nan)
    mat[ri, ci] = values[rs]
    if len(xcs):
        xi = np.repeat(np.flatnonzero(x_idx >= 0)[np.argsort(x_idx[x_idx >= 0])], x_counts)
        mat[xi, lut_x[xcs]] = xvs  # a repeated '# Measure' line: the last one (as FreeSurfer)
    names, docs = [], {}
    src = f"{hemi}.{atlas}.stats" if split else f"{atlas}.stats"
    for kind, c in cols:
        n = struct_cats[c] if kind == "s" else x_names[c]
        if aseg_style or (kind == "x" and n in APARC_UNDECORATED):
            col = n
        else:
            col = f"{hemi}_{n}_{meas}"
        if col in docs:
            raise ValueError(f"wide table {atlas}_{hemi}_{meas}: two sources for column {col!r}")
        names.append(col)
        if kind == "s":
            docs[col] = {"Description": f"{mcol} of {n} ({src}, column {mcol})", "Units": unit}
        else:
            d, u, (mname, key) = x_docs[n]
            docs[col] = {"Description": f"{d} ({src}, '# Measure {mname}, {key}')", "Units": u}
    av = all_visits
    sess = av % n_s1
    t = pd.DataFrame(mat, columns=names)
    t.insert(0, "session_id", [sid_cats[s - 1] if s else None for s in sess.tolist()])
    t.insert(0, "participant_id", list(pid_cats[av // n_s1]))
    t.attrs["columns"] = docs
    return t


def write_long_tsv(path, df: pd.DataFrame) -> None:
    """Write a (possibly very large) table as TSV atomically, NaN as ``n/a``, using
    pyarrow's CSV writer (pandas' ``to_csv`` is several times slower here)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from neurosmk.io import atomic_path

    table = pa.Table.from_pandas(df, preserve_index=False)
    schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f
                        for f in table.schema])
    step = 1 << 20  # write in 1M-row slices: bounded memory, no 2 GB string-array overflow

    def _write(tmp, quoting):
        opts = pacsv.WriteOptions(delimiter="\t", null_string="n/a", quoting_style=quoting,
                                  quoting_header="none" if quoting == "none" else "needed",
                                  batch_size=65536)
        with pacsv.CSVWriter(str(tmp), schema, write_options=opts) as w:
            for start in range(0, max(table.num_rows, 1), step):
                part = table.slice(start, step)
                w.write_table(pa.Table.from_arrays(
                    [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c
                     for c in part.columns], schema=schema))

    with atomic_path(path) as tmp:
        try:  # no quotes (like pandas) unless a value needs them
            _write(tmp, "none")
        except pa.ArrowInvalid:
            _write(tmp, "needed")

write_fast_tsv = write_long_tsv


def write_table_parquet(path, df: pd.DataFrame) -> None:
    """Write a long/global/wide table as Parquet atomically.  Categorical columns become
    dictionary-encoded columns (read back as categoricals); min/max statistics only for the
    non-dictionary columns (string statistics over millions of rows double the write time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neurosmk.io import atomic_path

    table = pa.Table.from_pandas(df, preserve_index=False)
    stats = [f.name for f in table.schema if not pa.types.is_dictionary(f.type)]
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp), write_statistics=stats or False)


WIDE_ID_DOC = "participant_id and session_id replace the first column FreeSurfer writes " \
              "(aparcstats2table: '<hemi>.<parc>.<meas>', asegstats2table: 'Measure:<meas>')."


def write_group_tables(out_dir, long: pd.DataFrame, glob: pd.DataFrame, skipped=(), wide=True,
                       long_tsv=True, threads=2) -> list[str] | None:
    """The one writer of the FreeSurfer group tables (``neurosmk-stats`` and the pipeline's
    fs_aggregate_group both call it, so their tables are byte-identical): long and global
    tables (TSV + Parquet), ``wide/<atlas>_<hemi>_<meas>.tsv``, ``skipped_files.tsv`` (rewritten
    every run, header only when nothing was skipped: never a stale manifest), and a BIDS data
    dictionary (``<name>.json``) beside every TSV.  Returns the wide table names written (None
    without ``wide``).  All
    written atomically; the long Parquet/TSV in background threads (pyarrow releases the GIL)
    while the wide tables are built here."""
    from concurrent.futures import ThreadPoolExecutor

    from neurosmk.io import write_json
    from neurosmk.tables import data_dictionary, write_data_dictionary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wide_written = None
    with ThreadPoolExecutor(max_workers=max(threads, 1)) as ex:
        futures = [ex.submit(write_table_parquet, out / f"{LONG_NAME}.parquet", long)]
        if long_tsv:
            futures.append(ex.submit(write_long_tsv, out / f"{LONG_NAME}.tsv", long))
        futures.append(ex.submit(write_table_parquet, out / f"{GLOBAL_NAME}.parquet", glob))
        futures.append(ex.submit(write_long_tsv, out / f"{GLOBAL_NAME}.tsv", glob))
        write_data_dictionary(out / f"{LONG_NAME}.tsv", list(long.columns))
        write_data_dictionary(out / f"{GLOBAL_NAME}.tsv", list(glob.columns))
        if wide:
            wdir = out / "wide"
            wdir.mkdir(exist_ok=True)
            wide_written = []
            for name, t in wide_tables(long, glob).items():
                docs = t.attrs.get("columns", {})
                futures.append(ex.submit(write_long_tsv, wdir / f"{name}.tsv", t))
                write_json(wdir / f"{name}.json",
                           {**data_dictionary(["participant_id", "session_id"]),
                            **docs, "Notes": WIDE_ID_DOC})
                wide_written.append(name)
        sk = pd.DataFrame(list(skipped), columns=["file", "reason", "kind"])
        futures.append(ex.submit(write_long_tsv, out / "skipped_files.tsv", sk))
        write_data_dictionary(out / "skipped_files.tsv", list(sk.columns))
        for f in futures:
            f.result()
    return wide_written
