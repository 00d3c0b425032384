from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821  (threads, log) before heavy imports
from neurosmk.anat import n4  # noqa: E402

p = snakemake.params  # noqa: F821
n4(snakemake.input.t1w, snakemake.output.t1w, shrink_factor=p.shrink_factor,  # noqa: F821
   convergence_iters=p.convergence_iters, convergence_tol=p.convergence_tol, spline_distance=p.spline_distance)
