from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.backends import call_backend  # noqa: E402

# the rule serves every DIPY denoise method: the registry names each one's function
s = snakemake  # noqa: F821
call_backend("dwi.denoise", s.params.method, s.input.nii, s.output.dwi, s.output.noise,
             patch_radius=s.params.patch_radius, bval=s.input.bval, bvec=s.input.bvec)
