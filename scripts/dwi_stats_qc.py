from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk import qc  # noqa: E402
from neurosmk.dwi import dti_roi_stats  # noqa: E402

s = snakemake  # noqa: F821
session = s.wildcards.get("session")
maps = {k: s.input[k] for k in ("FA", "MD", "AD", "RD")}
dti_roi_stats(maps, s.input.mask, s.output.stats, s.wildcards.subject, session,
              wm_fa_threshold=s.params.wm_fa_threshold)
name = f"sub-{s.wildcards.subject}" + (f" ses-{session}" if session else "")
qc.fa_mosaic(s.input.FA, s.input.mask, s.output.fig_fa, title=f"{name}: FA")
