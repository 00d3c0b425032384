"""Snakemake ``script:``: parse every *.stats of one subject into per-subject parquets.

input:  files (the subject's stats files; or stats_dir, the folder, when params has none)
output: long (parquet), global_ (parquet), skipped (TSV manifest, may be empty)
params: stats_dir (a subject's stats/ folder), subject, session (optional, default ""),
        skip_bad (optional, default False)
"""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821  (log redirection, thread limits)

import pandas as pd

from neurosmk.fsstats.cli import SKIPPED_COLUMNS, parse_subject_dir
from neurosmk.fsstats.tables import global_table, long_table
from neurosmk.io import write_parquet, write_tsv

sm = snakemake  # noqa: F821
params = dict(sm.params.items())
parsed, skipped = parse_subject_dir(params.get("stats_dir") or sm.input.stats_dir, subject=params["subject"],
                                    session=params.get("session", ""),
                                    skip_bad=bool(params.get("skip_bad", False)))
for f, reason, kind in skipped:
    print(f"skipped ({kind}): {reason}")
write_parquet(sm.output.long, long_table(parsed))
write_parquet(sm.output.global_, global_table(parsed))
write_tsv(sm.output.skipped, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))
print(f"{len(parsed)} stats files parsed, {len(skipped)} skipped")
