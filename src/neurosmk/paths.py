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


# ---- logs and benchmarks ----------------------------------------------------------------------
# The one place that knows where job logs and benchmark tables go.  They live under
# ``{output_dir}/logs/``, a top-level folder that BIDS (1.10+, schema "logs", opaque) sets aside
# for logs, so the derivative dataset stays valid with no .bidsignore entry for them.
LOGS_DIR = "logs"


def _job_stem(output_dir: str, rule: str, visit: str | None) -> str:
    if visit:
        return os.path.join(str(output_dir), LOGS_DIR, rule, visit)
    return os.path.join(str(output_dir), LOGS_DIR, rule)


def log_path(output_dir: str, rule: str, visit: str | None = None) -> str:
    """Log of one job: ``{output_dir}/logs/{rule}/{visit}.log`` (``visit`` e.g. ``sub-01`` or
    ``sub-01_ses-A``; a FreeSurfer subject folder name for the per-subject stats parse), or
    ``{output_dir}/logs/{rule}.log`` for a group job (``visit`` None).  May be a Snakemake
    pattern (``visit="sub-{subject}"``)."""
    return _job_stem(output_dir, rule, visit) + ".log"


def bench_path(output_dir: str, rule: str, visit: str | None = None) -> str:
    """Snakemake benchmark table of one job, next to its log:
    ``{output_dir}/logs/{rule}/{visit}.benchmark.tsv`` (``{rule}.benchmark.tsv`` for a group job)."""
    return _job_stem(output_dir, rule, visit) + BENCH_SUFFIX


BENCH_SUFFIX = ".benchmark.tsv"


def iter_job_logs(output_dir: str):
    """Every job log under ``output_dir``: yields ``(rule, visit or None, log path, benchmark
    path, log mtime)``; one directory scan per rule, no per-file stat beyond the scan's own."""
    root = os.path.join(str(output_dir), LOGS_DIR)
    try:
        top = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in top:
        if entry.is_dir():
            rule = entry.name
            prefix = os.path.join(entry.path, "")  # bench_path(...) without a join per file
            for f in os.scandir(entry.path):
                name = f.name
                if name.endswith(".log"):
                    visit = name[:-4]
                    yield rule, visit, f.path, prefix + visit + BENCH_SUFFIX, f.stat().st_mtime
        elif entry.name.endswith(".log") and entry.is_file():
            rule = entry.name[:-4]
            yield rule, None, entry.path, bench_path(output_dir, rule), entry.stat().st_mtime


def benchmark_mtimes(output_dir: str) -> dict[str, float]:
    """Path -> mtime of every benchmark record under ``output_dir`` (one scan per rule)."""
    root = os.path.join(str(output_dir), LOGS_DIR)
    out: dict[str, float] = {}
    try:
        top = list(os.scandir(root))
    except FileNotFoundError:
        return out
    for entry in top:
        if entry.is_dir():
            for f in os.scandir(entry.path):
                if f.name.endswith(BENCH_SUFFIX):
                    out[f.path] = f.stat().st_mtime
        elif entry.name.endswith(BENCH_SUFFIX):
            out[entry.path] = entry.stat().st_mtime
    return out


def status_tsv(output_dir: str) -> str:
    """Where `neurosmk-status` writes its table (beside the logs it summarises)."""
    return os.path.join(str(output_dir), LOGS_DIR, "neurosmk_status.tsv")
