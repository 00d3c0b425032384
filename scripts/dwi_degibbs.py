from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.dwi import degibbs  # noqa: E402

s = snakemake  # noqa: F821
degibbs(s.input.dwi, s.output.dwi, slice_axis=s.params.slice_axis, n_points=s.params.n_points)
