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


# ---- dataset-level files: group tables, QC pages, FreeSurfer, figures, docs, state ------------
# The one place that knows the layout of the derivative dataset beyond the per-visit BIDS files
# (``deriv``): the rules, scripts and tests build these paths through the functions below.
GROUP_DIR = "group"
# group/ files by name (tidy long tables, the QC page and its table)
GROUP_FILES = {
    "anat_volumes": "anat_tissue_volumes.tsv",
    "dti_stats": "dwi_dti_roistats.tsv",
    "long": "neurosmk_long.tsv",
    "long_parquet": "neurosmk_long.parquet",
    "qc_page": "qc.html",
    "qc_metrics": "qc_metrics.tsv",
}
# group/freesurfer/ files by name (the FreeSurfer stats aggregation, rules/aggregate.smk)
FS_GROUP_FILES = {
    "long": "freesurfer_stats_long.tsv",
    "long_parquet": "freesurfer_stats_long.parquet",
    "global": "freesurfer_global_measures.tsv",
    "global_parquet": "freesurfer_global_measures.parquet",
    "outliers": "freesurfer_outliers.tsv",
    "wide": "wide",
    "qc": "qc",
}
# recon-all's files the pipeline reads or keeps, relative to the subject's folder
RECON_ALL_FILES = {
    "aseg": "stats/aseg.stats",
    "lh_aparc": "stats/lh.aparc.stats",
    "rh_aparc": "stats/rh.aparc.stats",
    "aparcaseg": "mri/aparc+aseg.mgz",
    "aseg_mgz": "mri/aseg.mgz",
    "done": "scripts/neurosmk_recon-all_all.done",
}
STATE_DIR = ".neurosmk"  # neurosmk's own records (validation reports, work folders)


def dataset_file(output_dir: str, name: str) -> str:
    """A file at the top of the derivative dataset (``dataset_description.json``, ``README.md``,
    a visit's QC page ``sub-X.html``)."""
    return os.path.join(str(output_dir), name)


def group_file(output_dir: str, name: str) -> str:
    """``{output_dir}/group/<file>`` for a name of ``GROUP_FILES`` (KeyError otherwise)."""
    return os.path.join(str(output_dir), GROUP_DIR, GROUP_FILES[name])


def fs_group_file(output_dir: str, name: str) -> str:
    """``{output_dir}/group/freesurfer/<file>`` for a name of ``FS_GROUP_FILES``."""
    return os.path.join(str(output_dir), GROUP_DIR, "freesurfer", FS_GROUP_FILES[name])


def fs_subject_table(output_dir: str, fssub: str, kind: str, ext: str = ".parquet") -> str:
    """One FreeSurfer subject's parsed stats (``kind`` long, global or skipped):
    ``{output_dir}/group/freesurfer/subjects/{fssub}_{kind}{ext}``; ``fssub`` may be a wildcard."""
    return os.path.join(str(output_dir), GROUP_DIR, "freesurfer", "subjects", f"{fssub}_{kind}{ext}")


def recon_all_dir(output_dir: str) -> str:
    """The SUBJECTS_DIR of the pipeline's own recon-all runs."""
    return os.path.join(str(output_dir), "freesurfer")


def recon_all_file(output_dir: str, subject: str, name: str) -> str:
    """A recon-all file of ``RECON_ALL_FILES`` for one subject folder (may be a pattern)."""
    return os.path.join(recon_all_dir(output_dir), subject, RECON_ALL_FILES[name])


def figure_path(output_dir: str, subject: str, visit: str, desc: str, suffix: str, ext: str = ".png") -> str:
    """A visit's figure: ``{output_dir}/sub-{subject}/figures/{visit}_desc-{desc}_{suffix}{ext}``
    (``subject``/``visit`` may be patterns)."""
    return os.path.join(str(output_dir), f"sub-{subject}", "figures", f"{visit}_desc-{desc}_{suffix}{ext}")


def docs_file(output_dir: str, name: str) -> str:
    """BIDS ``docs/``: documentation of the dataset (``methods.md``)."""
    return os.path.join(str(output_dir), "docs", name)


def template_file(output_dir: str, stem: str, suffix: str) -> str:
    """A template copied into the dataset: ``{output_dir}/sourcedata/templates/{stem}_{suffix}``."""
    return os.path.join(str(output_dir), "sourcedata", "templates", f"{stem}_{suffix}")


def state_path(output_dir: str, *parts: str) -> str:
    """neurosmk's own records under ``{output_dir}/.neurosmk/`` (validation reports, work folders)."""
    return os.path.join(str(output_dir), STATE_DIR, *parts)
