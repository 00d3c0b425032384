from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.provenance import write_methods  # noqa: E402

s = snakemake  # noqa: F821
print(write_methods(s.output.md, list(s.input.sidecars), dict(s.params.methods)))
