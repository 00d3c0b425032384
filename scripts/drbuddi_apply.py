"""DRBUDDI's displacement field applied to every DWI volume; the gradient table is unchanged. The
sidecars' ToolVersion is DRBUDDI's, as the DRBUDDI job recorded it."""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
import shutil  # noqa: E402

from neurosmk.drbuddi import apply_field, tool_version  # noqa: E402
from neurosmk.io import atomic_path  # noqa: E402
from neurosmk.runtime import note  # noqa: E402

s = snakemake  # noqa: F821
note(ToolVersion=tool_version(s.input.version))  # DRBUDDI's, as its job recorded it
apply_field(s.input.dwi, s.input.field, s.input.b0, s.output.dwi)
for src, dst in ((s.input.bval, s.output.bval), (s.input.bvec, s.output.bvec)):
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
