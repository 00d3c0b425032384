"""The blip-up / blip-down b=0 pair and the up image's phase encoding for DRBUDDI."""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.drbuddi import prepare_inputs  # noqa: E402

s = snakemake  # noqa: F821
prepare_inputs(s.input.dwi, s.input.bval, s.input.rev, s.input.get("rev_bval"), s.params.pe_up,
               s.output.up, s.output.down, s.output.up_json, b0_threshold=s.params.b0_threshold)
