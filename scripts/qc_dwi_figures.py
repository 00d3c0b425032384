from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk import qc  # noqa: E402

s = snakemake  # noqa: F821
session = s.wildcards.get("session")
name = f"sub-{s.wildcards.subject}" + (f" ses-{session}" if session else "")
qc.b0_mask_mosaic(s.input.dwi, s.input.bval, s.input.mask, s.output.b0mask, title=f"{name}: DWI mask on mean b=0",
                  b0_threshold=s.params.b0_threshold)
qc.colour_fa_mosaic(s.input.rgb, s.input.mask, s.output.colorfa, title=f"{name}: colour FA")
