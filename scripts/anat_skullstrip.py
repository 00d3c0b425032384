from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.anat import skullstrip  # noqa: E402

p = snakemake.params  # noqa: F821
skullstrip(snakemake.input.t1w, snakemake.output.mask, snakemake.output.brain, method=p.method,  # noqa: F821
           fractional_threshold=p.fractional_threshold, iterations=p.iterations,
           median_radius=p.median_radius, numpass=p.numpass, fov_mm=p.fov_mm)
