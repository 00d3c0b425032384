"""Tidy (long) tables shared by all steps: subject, session, atlas, hemisphere, structure,
measure, value, unit."""

from __future__ import annotations

import pandas as pd

from .io import InputError, write_tsv

LONG_COLUMNS = ["subject", "session", "atlas", "hemisphere", "structure", "measure", "value", "unit"]


def concat_long(paths: list[str], out_tsv: str, atlas: str) -> pd.DataFrame:
    frames = []
    for p in paths:
        df = pd.read_csv(p, sep="\t", dtype={"subject": str, "session": str}, keep_default_na=False,
                         na_values=["n/a"])
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
