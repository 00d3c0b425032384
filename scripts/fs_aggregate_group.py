"""Snakemake ``script:``: concatenate per-subject parquets into the group tables.

input:  long (list of per-subject long parquets), global_ (list of global parquets)
output: long_tsv, long_parquet, global_tsv, global_parquet, wide_dir (directory),
        qc_dir (directory of PNGs), outliers (TSV)
"""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821  (log redirection, thread limits)

from pathlib import Path

import pandas as pd

from neurosmk.fsstats.qc import group_plots, outlier_flags
from neurosmk.fsstats.tables import (concat_tables, wide_tables, write_long_tsv,
                                     write_table_parquet)
from neurosmk.io import write_tsv

sm = snakemake  # noqa: F821
long = concat_tables([pd.read_parquet(p) for p in sm.input.long])
glob = concat_tables([pd.read_parquet(p) for p in sm.input.global_])
write_table_parquet(sm.output.long_parquet, long)
write_long_tsv(sm.output.long_tsv, long)
write_table_parquet(sm.output.global_parquet, glob)
write_tsv(sm.output.global_tsv, glob)
Path(sm.output.wide_dir).mkdir(parents=True, exist_ok=True)
for name, table in wide_tables(long, glob).items():
    write_tsv(Path(sm.output.wide_dir) / f"{name}.tsv", table)
group_plots(long, glob, sm.output.qc_dir)
write_tsv(sm.output.outliers, outlier_flags(long))
print(f"{long['subject'].nunique()} subjects, {len(long)} values, {len(glob)} global values")
