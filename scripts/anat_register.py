from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.anat import register  # noqa: E402

s = snakemake  # noqa: F821
m = register(s.input.brain, s.input.template, s.output.affine, s.output.warp, s.output.invwarp,
             s.output.warped, transform=s.params.transform, syn_iterations=s.params.syn_iterations,
             seed=s.params.seed, metrics_json=s.output.metrics)
print(m)
