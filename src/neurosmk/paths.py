"""BIDS-Derivatives path building, shared by the rules of every backend.

``deriv(root, datatype, has_sessions, **entities)`` returns a Snakemake path pattern such as
``{root}/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_desc-brain_mask.nii.gz``;
entity values may be literal strings or Snakemake wildcards.  Entity order follows the BIDS
specification so every backend writes the same names.
"""

from __future__ import annotations

import os

# BIDS entity order (spec appendix "Entity table"), plus derivative entities.
ENTITY_ORDER = [
    "sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "hemi", "space", "res", "den",
    "from", "to", "mode", "atlas", "seg", "roi", "label", "model", "param", "desc",
]


def entity_string(entities: dict[str, str | None]) -> str:
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities: {sorted(unknown)}")
    return "_".join(f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) not in (None, ""))


def deriv(root: str, datatype: str, suffix: str, ext: str, has_sessions: bool,
          subject: str = "{subject}", session: str = "{session}", **entities: str) -> str:
    """Path pattern of one derivative file for one subject (and session)."""
    ents = {"sub": subject, "ses": session if has_sessions else None}
    for k, v in entities.items():
        ents[k.rstrip("_")] = v  # allow from_= since 'from' is a keyword
    folder = [f"sub-{subject}"] + ([f"ses-{session}"] if has_sessions else []) + [datatype]
    name = f"{entity_string(ents)}_{suffix}{ext}"
    return os.path.join(root, *folder, name)


# ---- per-job logs and benchmarks -------------------------------------------------------------
# The one place that knows where job logs and benchmark records live (rules/common.smk's
# logfile()/benchfile() and neurosmk.status read them from here). A per-visit job of rule R
# logs to {output_dir}/logs/R/{visit}.log, a cohort-level job to {output_dir}/logs/R.log;
# visit = sub-X or sub-X_ses-Y.

LOG_DIR = "logs"
BENCH_DIR = "benchmarks"


def log_path(output_dir: str, rule: str, visit: str | None = None) -> str:
    """Log of one job: per visit (``visit`` = ``sub-X[_ses-Y]``, may hold wildcards) or cohort-level."""
    root = os.path.join(output_dir, LOG_DIR)
    return os.path.join(root, rule, f"{visit}.log") if visit else os.path.join(root, f"{rule}.log")


def bench_path(output_dir: str, rule: str, visit: str | None = None) -> str:
    """Benchmark record of one job (written by Snakemake when the job succeeded)."""
    root = os.path.join(output_dir, BENCH_DIR)
    return os.path.join(root, rule, f"{visit}.tsv") if visit else os.path.join(root, f"{rule}.tsv")


def iter_job_logs(output_dir: str):
    """Every job log under ``output_dir``: yields ``(rule, visit or None, log path, benchmark
    path, log mtime)``; one directory scan per rule, no per-file stat beyond the scan's own."""
    root = os.path.join(output_dir, LOG_DIR)
    try:
        top = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in top:
        if entry.is_dir():
            rule = entry.name
            # bench_path(output_dir, rule, visit) without a join per file (10,000s of files)
            bench_prefix = os.path.join(output_dir, BENCH_DIR, rule, "")
            for f in os.scandir(entry.path):
                name = f.name
                if name.endswith(".log"):
                    visit = name[:-4]
                    yield rule, visit, f.path, bench_prefix + visit + ".tsv", f.stat().st_mtime
        elif entry.name.endswith(".log") and entry.is_file():
            rule = entry.name[:-4]
            yield rule, None, entry.path, bench_path(output_dir, rule), entry.stat().st_mtime


def benchmark_mtimes(output_dir: str) -> dict[str, float]:
    """Path -> mtime of every benchmark record under ``output_dir`` (one scan per rule)."""
    root = os.path.join(output_dir, BENCH_DIR)
    out: dict[str, float] = {}
    try:
        top = list(os.scandir(root))
    except FileNotFoundError:
        return out
    for entry in top:
        if entry.is_dir():
            for f in os.scandir(entry.path):
                if f.name.endswith(".tsv"):
                    out[f.path] = f.stat().st_mtime
        elif entry.name.endswith(".tsv"):
            out[entry.path] = entry.stat().st_mtime
    return out


def status_tsv(output_dir: str) -> str:
    """Where `neurosmk-status` writes its table (beside the logs it summarises)."""
    return os.path.join(output_dir, LOG_DIR, "neurosmk_status.tsv")
