from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.anat import atropos  # noqa: E402

s = snakemake  # noqa: F821
atropos(s.input.t1w, s.input.mask, s.output.dseg,
        {"CSF": s.output.csf, "GM": s.output.gm, "WM": s.output.wm},
        mrf_weight=s.params.mrf_weight, iterations=s.params.iterations)
