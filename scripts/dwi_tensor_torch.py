from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.dwi_torch import tensor_fit_torch  # noqa: E402

s = snakemake  # noqa: F821
# the device is cosmetic (not a param): read from the config so switching it re-runs nothing
device = tensor_fit_torch(s.input.dwi, s.input.bval, s.input.bvec, s.input.mask,
                          {k: s.output[k] for k in ("FA", "MD", "AD", "RD", "RGB", "V1")},
                          fit_method=s.params.fit_method, device=s.config["dwi"]["tensor"]["device"],
                          threads=s.threads)
print(f"dwi_tensor_torch: fitted on {device}")
