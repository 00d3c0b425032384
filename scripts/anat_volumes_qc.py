from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk import qc  # noqa: E402
from neurosmk.anat import tissue_volumes  # noqa: E402

s = snakemake  # noqa: F821
session = s.wildcards.get("session")
tissue_volumes(s.input.dseg, s.input.mask, s.output.volumes, s.wildcards.subject, session)
name = f"sub-{s.wildcards.subject}" + (f" ses-{session}" if session else "")
qc.mask_mosaic(s.input.t1w, s.input.mask, s.output.fig_mask, title=f"{name}: brain mask")
qc.dseg_mosaic(s.input.t1w, s.input.dseg, s.input.mask, s.output.fig_dseg,
               title=f"{name}: tissue classes")
if "fig_reg" in s.output.keys():  # anat.register.method none: no registration figure
    qc.registration_mosaic(s.input.warped, s.input.template, s.output.fig_reg,
                           title=f"{name}: registration")
