from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.dwi import tensor_fit  # noqa: E402

s = snakemake  # noqa: F821
tensor_fit(s.input.dwi, s.input.bval, s.input.bvec, s.input.mask,
           {k: s.output[k] for k in ("FA", "MD", "AD", "RD", "RGB", "V1")},
           fit_method=s.params.fit_method, b0_threshold=s.params.b0_threshold)
