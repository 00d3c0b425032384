"""neurosmk: reproducible Snakemake neuroimaging pipelines."""

__version__ = "0.1.0"
