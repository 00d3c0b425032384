from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.provenance import write_dataset_description  # noqa: E402

write_dataset_description(snakemake.output[0], snakemake.params.bids_dir)  # noqa: F821
