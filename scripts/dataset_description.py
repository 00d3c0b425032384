from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.provenance import DESCRIPTIONS, write_dataset_description  # noqa: E402

s = snakemake  # noqa: F821
# descriptions.tsv documents every desc- label neurosmk writes (whichever backends run)
write_dataset_description(s.output[0], s.params.bids_dir, readme=s.output.readme,
                          descriptions=s.output.descriptions, bidsignore=s.output.bidsignore,
                          desc_labels=DESCRIPTIONS, container=s.params.container)
