"""DRBUDDI's displacement field applied to every DWI volume; the gradient table is unchanged."""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
import shutil  # noqa: E402

from neurosmk.drbuddi import apply_field  # noqa: E402
from neurosmk.io import atomic_path  # noqa: E402

s = snakemake  # noqa: F821
apply_field(s.input.dwi, s.input.field, s.input.b0, s.output.dwi)
for src, dst in ((s.input.bval, s.output.bval), (s.input.bvec, s.output.bvec)):
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
