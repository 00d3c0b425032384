"""Long, global and wide (aparcstats2table / asegstats2table style) tables.

The long tables hold one row per number.  Their string columns are pandas categoricals,
built from integer codes in one pass over all parsed files, so 10,000 subjects (tens of
millions of rows) fit in memory and concatenate quickly.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import pandas as pd

from neurosmk.fsstats.parser import ParsedStats

__all__ = ["LONG_COLUMNS", "GLOBAL_COLUMNS", "long_table", "global_table", "wide_tables",
           "concat_tables", "write_long_tsv", "write_fast_tsv", "write_table_parquet", "MEASURE_NAMES", "WIDE_EXTRA_MEASURES"]

LONG_COLUMNS = ["subject", "session", "atlas", "hemisphere", "structure", "measure", "value",
                "unit", "freesurfer_version", "source_file"]
GLOBAL_COLUMNS = LONG_COLUMNS[:6] + ["description"] + LONG_COLUMNS[6:]
_STR_LONG = [c for c in LONG_COLUMNS if c != "value"]
_STR_GLOBAL = [c for c in GLOBAL_COLUMNS if c != "value"]

# aparcstats2table-style measure names for wide column/table names; others are lower-cased
MEASURE_NAMES = {"ThickAvg": "thickness", "SurfArea": "area", "GrayVol": "volume",
                 "ThickStd": "thicknessstd", "MeanCurv": "meancurv", "GausCurv": "gauscurv",
                 "FoldInd": "foldind", "CurvInd": "curvind", "NumVert": "numvert",
                 "Volume_mm3": "volume", "Area_mm2": "area"}
# measures never worth a wide table (identifiers, not measurements)
_NOT_WIDE = {"Index", "SegId"}
# atlases with no aparcstats2table equivalent: mris_curvature_stats summaries (?h.curv.stats,
# ?h.curv.pial.stats) stay in the long table only
_NOT_WIDE_ATLAS_PREFIXES = ("curv",)
# global values appended to each wide table when the same files carry them
WIDE_EXTRA_MEASURES = ("BrainSegVolNotVent", "eTIV")


class _Interner:
    __slots__ = ("codes", "names")

    def __init__(self):
        self.codes: dict = {}
        self.names: list = []

    def __call__(self, s: str) -> int:
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


def _note_file(per_file: dict, it: dict, p: ParsedStats) -> None:
    """Append the interned per-file keys (subject, session, ...) of ``p`` to ``per_file``."""
    for c, lst in per_file.items():
        lst.append(it[c](p.path if c == "source_file" else getattr(p, c)))


def _per_file_columns(per_file: dict, counts) -> dict:
    """Per-file key codes repeated over each file's number of rows."""
    counts_a = np.asarray(counts, dtype=np.int64)
    return {name: np.repeat(np.asarray(v, dtype=np.int32), counts_a) for name, v in per_file.items()}


def long_table(parsed_list: Iterable[ParsedStats]) -> pd.DataFrame:
    """One row per number in the table rows of every parsed file (every numeric column), and
    one per value of the curvature (``?h.curv.stats``) files."""
    it = {c: _Interner() for c in _STR_LONG}
    per_file = {c: [] for c in ("subject", "session", "atlas", "freesurfer_version",
                                "source_file")}
    counts, values, structs, hemis, meas, units = [], [], [], [], [], []
    cache: dict = {}
    for p in parsed_list:
        v = p.values
        if v.size == 0:
            continue
        key = (v.ndim, tuple(p.structures), tuple(p.row_hemispheres), tuple(p.numeric_columns),
               tuple(p.units))
        arrs = cache.get(key)
        if arrs is None:
            s = np.array([it["structure"](x) for x in p.structures], dtype=np.int32)
            h = np.array([it["hemisphere"](x) for x in p.row_hemispheres], dtype=np.int32)
            m = np.array([it["measure"](x) for x in p.numeric_columns], dtype=np.int32)
            u = np.array([it["unit"](x) for x in p.units], dtype=np.int32)
            if v.ndim == 1:  # curvature files: one structure/measure/unit per value
                arrs = (s, h, m, u)
            else:
                n, k = v.shape
                arrs = (np.repeat(s, k), np.repeat(h, k), np.tile(m, n), np.tile(u, n))
            cache[key] = arrs
        structs.append(arrs[0])
        hemis.append(arrs[1])
        meas.append(arrs[2])
        units.append(arrs[3])
        values.append(v.ravel())
        counts.append(v.size)
        _note_file(per_file, it, p)
    cols = _per_file_columns(per_file, counts)
    cat = (lambda parts: np.concatenate(parts) if parts else np.empty(0, dtype=np.int32))
    cols["structure"] = cat(structs)
    cols["hemisphere"] = cat(hemis)
    cols["measure"] = cat(meas)
    cols["unit"] = cat(units)
    cols["value"] = np.concatenate(values) if values else np.empty(0, dtype=np.float64)
    return _frame(cols, it, LONG_COLUMNS)


def global_table(parsed_list: Iterable[ParsedStats]) -> pd.DataFrame:
    """The ``# Measure`` values of every parsed file, long form: structure = the measure key
    (e.g. ``eTIV``), measure = the Measure name (e.g. ``EstimatedTotalIntraCranialVol``)."""
    it = {c: _Interner() for c in _STR_GLOBAL}
    per_file = {c: [] for c in ("subject", "session", "atlas", "hemisphere",
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
                for c, j in (("structure", 1), ("measure", 0), ("description", 2), ("unit", 4)))
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


def concat_tables(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate long/global frames, uniting their categories (codes remapped into one
    preallocated array of the smallest integer type, no strings materialised)."""
    frames = [f for f in frames if f is not None]
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
                if size and c.min() < 0:  # NaN stays NaN (-1)
                    dst[:] = np.where(c < 0, -1, mapping[np.maximum(c, 0)])
                else:
                    np.take(mapping, c, out=dst)
                pos += size
            out[col] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats),
                                                 validate=False)
        else:
            out[col] = np.concatenate([f[col].to_numpy() for f in frames])
    return pd.DataFrame(out, copy=False)


def _dense_unique(keys: np.ndarray):
    """``np.unique(keys, return_inverse=True)`` for small non-negative integer keys, without
    sorting (O(n))."""
    present = np.zeros(int(keys.max()) + 1 if keys.size else 0, dtype=bool)
    present[keys] = True
    uniq = np.flatnonzero(present)
    rank = np.cumsum(present, dtype=np.int64) - 1
    return uniq, rank[keys]


def _is_hemi_file(path: str) -> bool:
    return os.path.basename(str(path)).startswith(("lh.", "rh."))


def _subject_index(df: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, int]:
    n_sess = max(len(df["session"].cat.categories), 1)
    key = (df["subject"].cat.codes.to_numpy()[rows].astype(np.int64) * n_sess
           + df["session"].cat.codes.to_numpy()[rows])
    return key, n_sess


def wide_tables(long: pd.DataFrame, global_: pd.DataFrame | None = None) -> dict:
    """aparcstats2table/asegstats2table-style tables, one per atlas x hemisphere x measure.

    Keys are ``<atlas>_<hemi>_<measure>`` (hemi ``both`` for whole-brain segmentations such as
    aseg/wmparc).  Each table has one row per subject (+session); columns ``lh_<structure>_
    <measure>`` for per-hemisphere files, the raw structure name for whole-brain ones, plus
    ``BrainSegVolNotVent``/``eTIV`` where the source files carry them.  A structure missing
    for a subject is NaN.
    """
    out: dict = {}
    if long.empty:
        return out
    subj_cats = long["subject"].cat.categories
    sess_cats = long["session"].cat.categories
    atlas_codes = long["atlas"].cat.codes.to_numpy()
    hemi_codes = long["hemisphere"].cat.codes.to_numpy()
    meas_codes = long["measure"].cat.codes.to_numpy()
    struct_codes = long["structure"].cat.codes.to_numpy()
    src_codes = long["source_file"].cat.codes.to_numpy()
    values = long["value"].to_numpy()
    meas_cats = long["measure"].cat.categories
    struct_cats = long["structure"].cat.categories
    hemi_cats = long["hemisphere"].cat.categories
    n_struct = len(struct_cats)
    skip_meas = np.array([m in _NOT_WIDE for m in meas_cats], dtype=bool)
    # rows of each atlas, in table order: one stable (radix) sort instead of a scan per atlas
    keep = np.flatnonzero(~skip_meas[meas_codes])
    order = keep[np.argsort(atlas_codes[keep], kind="stable")]
    bounds = np.searchsorted(atlas_codes[order], np.arange(len(long["atlas"].cat.categories) + 1))

    for a_code, atlas in enumerate(long["atlas"].cat.categories):
        if atlas.startswith(_NOT_WIDE_ATLAS_PREFIXES):
            continue
        rows = order[bounds[a_code]:bounds[a_code + 1]]
        if rows.size == 0:
            continue
        split = _is_hemi_file(long["source_file"].cat.categories[src_codes[rows[0]]])
        groups = ([(hemi_cats[h], rows[hemi_codes[rows] == h]) for h in np.unique(hemi_codes[rows])]
                  if split else [("both", rows)])
        for hemi, grows in groups:
            rkey, n_sess = _subject_index(long, grows)
            ckey = meas_codes[grows].astype(np.int64) * n_struct + struct_codes[grows]
            # pivot with numpy: rows = subject(+session), columns = measure x structure
            ur, rinv = _dense_unique(rkey)
            uc, cinv = _dense_unique(ckey)
            lin = rinv.astype(np.int64) * len(uc) + cinv
            hits = np.bincount(lin, minlength=len(ur) * len(uc))
            if (hits > 1).any():
                d = int(np.flatnonzero(hits > 1)[0])
                r, c = ur[d // len(uc)], uc[d % len(uc)]
                raise ValueError(
                    f"duplicate value for subject {subj_cats[r // n_sess]!r} session "
                    f"{sess_cats[r % n_sess]!r}, atlas {atlas!r}, structure "
                    f"{struct_cats[c % n_struct]!r} (same subject given twice?)")
            mat = np.full(len(ur) * len(uc), np.nan)
            mat[lin] = values[grows]
            mat = mat.reshape(len(ur), len(uc))
            index = pd.MultiIndex.from_arrays(
                [subj_cats[ur // n_sess].astype(object), sess_cats[ur % n_sess].astype(object)],
                names=["subject", "session"])
            extra = _extras(global_, atlas, "" if hemi == "both" else hemi)
            mcode = uc // n_struct
            for m_code in np.unique(mcode):
                mcol = meas_cats[m_code]
                mname = MEASURE_NAMES.get(mcol, mcol.lower())
                sel = np.flatnonzero(mcode == m_code)
                names = [struct_cats[x % n_struct] for x in uc[sel]]
                t = pd.DataFrame(mat[:, sel], index=index,
                                 columns=[f"{hemi}_{s}_{mname}" for s in names] if split
                                 else names)
                if extra is not None:
                    t = t.join(extra, how="left")
                t = t.reset_index()
                out[f"{atlas}_{hemi}_{mname}"] = t
    return out


def _extras(global_: pd.DataFrame | None, atlas: str, hemi: str):
    if global_ is None or global_.empty:
        return None
    g = global_[(global_["atlas"] == atlas) & (global_["hemisphere"] == hemi)
                & global_["structure"].isin(WIDE_EXTRA_MEASURES)]
    if g.empty:
        return None
    g = g.assign(subject=g["subject"].astype(object), session=g["session"].astype(object),
                 structure=g["structure"].astype(object))
    g = g.drop_duplicates(["subject", "session", "structure"], keep="first")
    e = g.pivot(index=["subject", "session"], columns="structure", values="value")
    e.columns.name = None
    return e[[c for c in WIDE_EXTRA_MEASURES if c in e.columns]]


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
