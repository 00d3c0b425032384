from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.anat import skullstrip  # noqa: E402

# params hold only the chosen method's keys (rules/anat.smk); the others keep their defaults
_KEYS = ("method", "fractional_threshold", "iterations", "fov_mm", "median_radius", "numpass")
p = {k: v for k, v in snakemake.params.items() if k in _KEYS}  # noqa: F821
skullstrip(snakemake.input.t1w, snakemake.output.mask, snakemake.output.brain, **p)  # noqa: F821
