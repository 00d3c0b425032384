from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
from neurosmk.qc_metrics import visit_metrics, write_visit_metrics  # noqa: E402

s = snakemake  # noqa: F821
session = s.wildcards.get("session")
inputs = {k: s.input[k] for k in ("t1w", "dseg", "volumes", "reg_metrics", "dwi", "bval", "dwi_mask",
                                  "dti_stats", "fs_global") if k in s.input.keys()}
record = visit_metrics(f"sub-{s.wildcards.subject}", f"ses-{session}" if session else None,
                       b0_threshold=s.params.b0_threshold, **inputs)
write_visit_metrics(s.output.metrics, record)
print(record)
