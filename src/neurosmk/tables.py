"""Tidy (long) tables shared by all steps: subject, session, atlas, hemisphere, structure,
measure, value, unit; and the one combined group table that joins them with the FreeSurfer
tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .io import InputError, write_tsv

LONG_COLUMNS = ["subject", "session", "atlas", "hemisphere", "structure", "measure", "value", "unit"]
# the combined table: LONG_COLUMNS + where each number comes from
COMBINED_COLUMNS = LONG_COLUMNS + ["source", "freesurfer_version", "source_file"]
_REQUIRED = {"subject", "structure", "measure", "value", "unit"}


def read_long(path) -> pd.DataFrame:
    """A long table (TSV or Parquet): string columns stay strings ("01" stays "01", an empty
    session stays ""), ``n/a`` in ``value`` is NaN.  Missing required columns -> InputError."""
    p = Path(path)
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        head = pd.read_csv(p, sep="\t", nrows=0)
        df = pd.read_csv(p, sep="\t", keep_default_na=False, na_values={"value": ["n/a"]},
                         float_precision="round_trip",
                         dtype={c: str for c in head.columns if c != "value"})
    missing = _REQUIRED - set(df.columns)
    if missing:
        raise InputError(p, f"missing columns {sorted(missing)}")
    if not pd.api.types.is_float_dtype(df["value"]):
        try:
            df["value"] = df["value"].astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(p, "column 'value' is not numeric") from None
    return df


def concat_long(paths: list[str], out_tsv: str, atlas: str) -> pd.DataFrame:
    frames = []
    for p in paths:
        df = pd.read_csv(p, sep="\t", dtype={"subject": str, "session": str}, keep_default_na=False,
                         na_values=["n/a"], float_precision="round_trip")
        missing = {"subject", "structure", "measure", "value", "unit"} - set(df.columns)
        if missing:
            raise InputError(p, f"missing columns {sorted(missing)}")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LONG_COLUMNS)
    df["atlas"] = atlas
    if "hemisphere" not in df:
        df["hemisphere"] = ""
    if "session" not in df:
        df["session"] = ""
    df = df[LONG_COLUMNS + [c for c in df.columns if c not in LONG_COLUMNS]]
    write_tsv(out_tsv, df)
    return df


def combine_long(parts, root=None) -> pd.DataFrame:
    """Join long tables into one: ``parts`` is a list of (source, path) with source a short
    name of the step (``tissue_volumes``, ``dti_roistats``, ``freesurfer``,
    ``freesurfer_global``).  Columns COMBINED_COLUMNS; a table without ``session``/``atlas``/
    ``hemisphere``/``freesurfer_version`` gets "", without ``source_file`` its own path (relative
    to ``root``, the output folder, when given: the table then does not depend on where it ran).
    Values are carried over unchanged; string columns become categoricals."""
    frames = []
    for source, path in parts:
        df = read_long(path)
        n = len(df)
        cols = {}
        for c in COMBINED_COLUMNS:
            if c == "source":
                cols[c] = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [source])
            elif c in df.columns:
                cols[c] = df[c] if c == "value" else df[c].astype("category")
            else:
                fill = (os.path.relpath(path, root) if root else str(path)) if c == "source_file" else ""
                cols[c] = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [fill])
        frames.append(pd.DataFrame(cols))
    if not frames:
        raise ValueError("combine_long: no input tables")
    from neurosmk.fsstats.tables import concat_tables

    return concat_tables(frames)


def write_combined(df: pd.DataFrame, out_tsv, out_parquet) -> None:
    from neurosmk.fsstats.tables import write_long_tsv, write_table_parquet

    write_table_parquet(out_parquet, df)
    write_long_tsv(out_tsv, df)
