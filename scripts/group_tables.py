from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.tables import concat_long  # noqa: E402

s = snakemake  # noqa: F821
concat_long(list(s.input.tables), s.output.tsv, atlas=s.params.atlas)
