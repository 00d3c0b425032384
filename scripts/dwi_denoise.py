from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.dwi import denoise_mppca  # noqa: E402

s = snakemake  # noqa: F821
denoise_mppca(s.input.nii, s.output.dwi, s.output.noise, patch_radius=s.params.patch_radius)
