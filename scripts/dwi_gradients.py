"""Snakemake ``script:``: copy the raw gradient table beside the preprocessed DWI series, which
inherit it (BIDS): input bval, bvec -> output bval, bvec, atomically."""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821  (log redirection)

import shutil  # noqa: E402

from neurosmk.io import atomic_path  # noqa: E402

sm = snakemake  # noqa: F821
for key in ("bval", "bvec"):
    with atomic_path(sm.output[key]) as tmp:
        shutil.copyfile(sm.input[key], tmp)
    print(f"{sm.input[key]} -> {sm.output[key]}")
