from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.dwi_torch import denoise_mppca_torch  # noqa: E402

s = snakemake  # noqa: F821
# the device is cosmetic (not a param): read from the config so switching it re-runs nothing
device = denoise_mppca_torch(s.input.nii, s.output.dwi, s.output.noise, patch_radius=s.params.patch_radius,
                             device=s.config["dwi"]["denoise"]["device"], threads=s.threads)
print(f"dwi_denoise_torch: denoised on {device}")
