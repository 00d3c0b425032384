"""Snakemake ``script:``: concatenate per-subject parquets into the group tables.

input:  long (list of per-subject long parquets), global_ (list of global parquets)
output: long_tsv, long_parquet, global_tsv, global_parquet, wide_dir (directory),
        qc_dir (directory of PNGs), outliers (TSV)
The tables are written by neurosmk.fsstats.tables.write_group_tables, the same writer as
``neurosmk-stats``, so both give byte-identical tables.
"""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821  (log redirection, thread limits)

import os

import pandas as pd

from neurosmk.fsstats.qc import group_plots, outlier_flags
from neurosmk.fsstats.tables import GLOBAL_NAME, LONG_NAME, concat_tables, write_group_tables
from neurosmk.tables import write_table

sm = snakemake  # noqa: F821
out_dir = os.path.dirname(sm.output.long_tsv)
expected = {sm.output.long_tsv: f"{LONG_NAME}.tsv", sm.output.long_parquet: f"{LONG_NAME}.parquet",
            sm.output.global_tsv: f"{GLOBAL_NAME}.tsv", sm.output.global_parquet: f"{GLOBAL_NAME}.parquet",
            sm.output.wide_dir: "wide"}
for path, name in expected.items():  # the rule's outputs are the writer's names in one folder
    if os.path.normpath(path) != os.path.join(out_dir, name):
        raise ValueError(f"fs_aggregate_group: output {path} is not {os.path.join(out_dir, name)}")
long = concat_tables([pd.read_parquet(p) for p in sm.input.long])
glob = concat_tables([pd.read_parquet(p) for p in sm.input.global_])
write_group_tables(out_dir, long, glob, threads=max(int(getattr(sm, "threads", 1) or 1), 1))
group_plots(long, glob, sm.output.qc_dir)
write_table(sm.output.outliers, outlier_flags(long))
print(f"{long['participant_id'].nunique()} participants, {len(long)} values, {len(glob)} global values")
