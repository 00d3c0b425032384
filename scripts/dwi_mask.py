from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.dwi import b0_mask  # noqa: E402

s = snakemake  # noqa: F821
b0_mask(s.input.dwi, s.input.bval, s.input.bvec, s.output.mask, median_radius=s.params.median_radius,
        numpass=s.params.numpass, b0_threshold=s.params.b0_threshold)
