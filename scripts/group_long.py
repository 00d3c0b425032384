"""Snakemake ``script:``: one combined long table of every group table.

input (all optional, named): tissue (group tissue volumes TSV), dti (group DTI ROI TSV),
       fs_long / fs_global (FreeSurfer long and global-measure Parquet tables)
output: tsv, parquet
"""
import os

from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821  (log redirection, thread limits)

from neurosmk.tables import combine_long, write_combined  # noqa: E402

sm = snakemake  # noqa: F821
SOURCES = {"tissue": "tissue_volumes", "dti": "dti_roistats", "fs_long": "freesurfer",
           "fs_global": "freesurfer_global"}
parts = [(source, sm.input[name]) for name, source in SOURCES.items() if name in sm.input.keys()]
# own tables' source_file relative to the output folder ({output_dir}/group/neurosmk_long.tsv)
df = combine_long(parts, root=os.path.dirname(os.path.dirname(os.path.abspath(sm.output.tsv))))
write_combined(df, sm.output.tsv, sm.output.parquet)
print(f"{len(df)} values from {len(parts)} tables: "
      + ", ".join(f"{s} {n}" for s, n in df["source"].value_counts(sort=False).items()))
