"""Cohort status: which subject reached which stage, which failed and why.

    neurosmk-status OUTPUT_DIR [--workdir DIR] [--tsv PATH] [--all | --failed-only]

Reads only what a run leaves behind, never the workflow or the BIDS data:

* the job logs and benchmark records under ``OUTPUT_DIR`` (their layout is known only to
  ``neurosmk.paths``: ``log_path``/``bench_path``/``iter_job_logs``);
* Snakemake's incomplete markers in the working directory it ran in (``.snakemake/incomplete``,
  one file per output of a job that started and never finished: killed, node lost, running).

One job = one log. Its state:

* **done**: its benchmark record exists and is not older than its log. Snakemake writes a job's
  benchmark record only after the job succeeded, and removes the outputs (the record included)
  of a job that failed, so a log newer than its record belongs to a later run that did not
  finish;
* **failed**: a log without a (newer) benchmark record. ``error`` is the first error line of
  the log (the exception line after a Python traceback, else the first line that reads like an
  error); when the log holds none and Snakemake marked outputs of the visit incomplete, it says
  the job was interrupted;
* **not run**: no log (a stage other visits reached, or ``validate``).

Stages are named after the config's steps (``anat.skullstrip``, ``dwi.tensor``, ...; the
backend's rule, e.g. ``dwi_tensor_mrtrix``, maps to its step), plus ``validate``,
``anat.volumes``, ``dwi.stats``, ``freesurfer.recon_all`` and one cohort-level ``group`` row
(group tables and methods; ``not run`` until one of them left a log) with participant_id
``n/a``; ``dataset_description`` (written first, metadata) is not a stage. When several rules of
one stage left logs for a visit (two rules of one backend, or an earlier backend), the one
whose log is newest decides. A stage counts as expected for a visit when any visit reached it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from base64 import urlsafe_b64decode
from pathlib import Path

from . import paths

COLUMNS = ["participant_id", "session_id", "stage", "state", "error", "log"]
STATES = ("done", "failed", "not run")
GROUP_STAGE = "group"

_VISIT = re.compile(r"^sub-([A-Za-z0-9]+)(?:_ses-([A-Za-z0-9]+))?$")
_VISIT_IN_PATH = re.compile(r"sub-([A-Za-z0-9]+)(?:[/_]ses-([A-Za-z0-9]+))?")
# an exception line after a traceback: "ValueError: ...", "neurosmk.io.InputError: ..."
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*")
_ERROR_WORD = re.compile(r"\b(error|exception|fatal|failed|killed|cannot|could not|no such file)\b",
                         re.IGNORECASE)
# slack for file systems with coarse mtimes (the record is written after the log's last line)
_MTIME_SLACK = 2.0


def rule_stage(rule: str) -> str:
    """Stage of a rule: ``dwi_tensor_mrtrix`` -> ``dwi.tensor``; unknown rules keep their name."""
    if rule.startswith("validate"):
        return "validate"
    if rule.startswith(("group_", "methods", "fs_aggregate", "qc_group")):
        return GROUP_STAGE
    if rule.startswith("qc_"):  # a visit's QC figures, numbers and page (rules/qc.smk)
        return "qc"
    if rule == "dataset_description":  # metadata written at the start, not a result
        return ""
    if rule.startswith("freesurfer_recon_all"):
        return "freesurfer.recon_all"
    from .backends import STEPS

    best = ""
    for step in STEPS:
        prefix = step.replace(".", "_") + "_"
        if rule.startswith(prefix) and len(step) > len(best):
            best = step
    if best:
        return best
    m = re.match(r"^(anat|dwi)_([a-z]+)_", rule)  # anat_volumes_qc, dwi_stats_qc
    return f"{m.group(1)}.{m.group(2)}" if m else rule


def first_error_line(log: str | os.PathLike, max_bytes: int = 1 << 20) -> str:
    """The first error line of a log ('' when none): after a traceback, its exception line."""
    try:
        with open(log, errors="replace") as fh:
            text = fh.read(max_bytes)
    except OSError as exc:
        return f"cannot read log: {exc.strerror}"
    lines = [ln.rstrip() for ln in text.splitlines()]
    in_tb = False
    for i, ln in enumerate(lines):
        if ln.startswith("Traceback (most recent call last)"):
            in_tb = True
            continue
        if in_tb:
            if ln.startswith((" ", "\t")) or not ln:
                continue
            if _EXC_LINE.match(ln):
                # a message that goes on over a few lines (up to a blank line) is kept whole
                more = []
                for nxt in lines[i + 1:i + 4]:
                    # neurosmk's own exit lines (peak memory, ...) are not part of the message
                    if not nxt.strip() or nxt.startswith(("Traceback", "During handling", "neurosmk:")):
                        break
                    more.append(nxt.strip())
                return " ".join([ln.strip(), *more])
            in_tb = False
        if _EXC_LINE.match(ln) or _ERROR_WORD.search(ln):
            return ln.strip()
    return ""


def incomplete_visits(workdir: str | os.PathLike | None, output_dir: str) -> dict[tuple[str, str], int]:
    """(subject, session or 'n/a') -> number of outputs under ``output_dir`` that Snakemake marks
    incomplete in ``workdir/.snakemake/incomplete`` (a started, unfinished job)."""
    out: dict[tuple[str, str], int] = {}
    if workdir is None:
        return out
    root = Path(workdir) / ".snakemake" / "incomplete"
    if not root.is_dir():
        return out
    out_abs = os.path.abspath(output_dir)
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        chunks = [] if rel == "." else [c.lstrip("@") for c in rel.split(os.sep)]
        for f in files:
            if f == "migration_underway":
                continue
            try:
                path = urlsafe_b64decode("".join(chunks + [f])).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            full = path if os.path.isabs(path) else os.path.abspath(os.path.join(workdir, path))
            if not (full == out_abs or full.startswith(out_abs + os.sep)):
                continue
            m = _VISIT_IN_PATH.search(os.path.relpath(full, out_abs))
            key = (f"sub-{m.group(1)}", f"ses-{m.group(2)}" if m.group(2) else "n/a") if m else ("n/a", "n/a")
            out[key] = out.get(key, 0) + 1
    return out


def collect(output_dir: str | os.PathLike, workdir: str | os.PathLike | None = None):
    """One row per (visit, stage): participant_id, session_id, stage, state, error, log.

    ``workdir`` is where snakemake ran (its ``.snakemake/``); default: the current directory
    when it has one. Raises FileNotFoundError when ``output_dir`` does not exist.
    """
    import pandas as pd

    output_dir = os.path.abspath(os.fspath(output_dir))
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"output directory not found: {output_dir}")
    if workdir is None and os.path.isdir(".snakemake"):
        workdir = os.getcwd()
    benches = paths.benchmark_mtimes(output_dir)
    stage_of: dict[str, str] = {}
    # (participant, session, stage) -> (log mtime, rule, log, done)
    latest: dict[tuple[str, str, str], tuple[float, str, str, bool]] = {}
    visits: set[tuple[str, str]] = set()
    for rule, visit, log, bench, mtime in paths.iter_job_logs(output_dir):
        if visit is None:
            key = ("n/a", "n/a")
        else:
            m = _VISIT.match(visit)
            if not m:
                continue
            key = (f"sub-{m.group(1)}", f"ses-{m.group(2)}" if m.group(2) else "n/a")
            visits.add(key)
        stage = stage_of[rule] if rule in stage_of else stage_of.setdefault(rule, rule_stage(rule))
        if not stage:
            continue
        b = benches.get(bench)
        done = b is not None and b + _MTIME_SLACK >= mtime
        k = (*key, stage)
        prev = latest.get(k)
        # newest log decides; a failed cohort-level rule outweighs a done one
        if prev is None or (stage == GROUP_STAGE and prev[3] and not done) or \
                (stage != GROUP_STAGE and mtime > prev[0]) or \
                (stage == GROUP_STAGE and prev[3] == done and mtime > prev[0]):
            latest[k] = (mtime, rule, log, done)
    incomplete = incomplete_visits(workdir, output_dir)
    stages = sorted({k[2] for k in latest if k[2] != GROUP_STAGE}, key=_stage_order)
    rows = []
    for visit in sorted(visits):
        for stage in stages:
            rows.append(_row(visit, stage, latest.get((*visit, stage)), incomplete))
    if visits or latest:
        rows.append(_row(("n/a", "n/a"), GROUP_STAGE, latest.get(("n/a", "n/a", GROUP_STAGE)), incomplete))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(visit, stage, rec, incomplete) -> dict:
    row = {"participant_id": visit[0], "session_id": visit[1], "stage": stage}
    if rec is None:
        return {**row, "state": "not run", "error": "", "log": ""}
    _mtime, rule, log, done = rec
    if done:
        return {**row, "state": "done", "error": "", "log": log}
    err = first_error_line(log)
    if not err:
        n = incomplete.get(visit, 0)
        err = (f"interrupted: {rule} did not finish ({n} output(s) marked incomplete by Snakemake; "
               "--rerun-incomplete redoes them)" if n else f"{rule} did not finish (no error in its log)")
    return {**row, "state": "failed", "error": err, "log": log}


_ORDER = ["validate", "anat.biascorrect", "anat.skullstrip", "anat.segment", "anat.synthseg", "anat.segstats",
          "anat.subcortical", "anat.register", "anat.atlas", "anat.volumes", "freesurfer.recon_all",
          "dwi.denoise", "dwi.degibbs", "dwi.preproc", "dwi.mask", "dwi.tensor", "dwi.stats", "qc"]


def _stage_order(stage: str):
    return (_ORDER.index(stage), "") if stage in _ORDER else (len(_ORDER), stage)


def summary(df):
    """Counts per stage: rows = stages in pipeline order, columns = done, failed, not run."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(columns=list(STATES))
    counts = df.groupby(["stage", "state"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(STATES), fill_value=0)
    return counts.loc[sorted(counts.index, key=_stage_order)]


_MARK = {"done": "done", "failed": "FAILED", "not run": "-"}


def format_table(df) -> str:
    """Visit x stage grid (done / FAILED / -)."""
    if df.empty:
        return "(no job logs found)"
    per = df[df["stage"] != GROUP_STAGE]
    grid = per.pivot_table(index=["participant_id", "session_id"], columns="stage", values="state",
                           aggfunc="first")
    grid = grid[sorted(grid.columns, key=_stage_order)].map(lambda s: _MARK.get(s, s))
    grid.columns.name = None
    if (per["session_id"] == "n/a").all():
        grid = grid.droplevel("session_id")
    return grid.to_string()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="neurosmk-status",
        description="Subject x stage status of a neurosmk output directory: done / failed (first error "
                    "line of its log + log path) / not run; a count per stage; the same as a TSV.")
    ap.add_argument("output_dir", help="the run's output_dir (BIDS-Derivatives root)")
    ap.add_argument("--workdir", default=None,
                    help="where snakemake ran (its .snakemake/ holds the incomplete markers); default: "
                         "the current directory")
    ap.add_argument("--tsv", default=None,
                    help=f"TSV to write (long format: {', '.join(COLUMNS)}); default: "
                         f"{paths.status_tsv('OUTPUT_DIR')}; '-' for none")
    view = ap.add_mutually_exclusive_group()
    view.add_argument("--all", action="store_true", help="print the grid for every visit, however many")
    view.add_argument("--failed-only", action="store_true", help="print only the failed jobs")
    a = ap.parse_args(argv)
    if a.workdir is not None and not os.path.isdir(os.path.join(a.workdir, ".snakemake")):
        print(f"neurosmk-status: {a.workdir} has no .snakemake/ (not a directory snakemake ran in)",
              file=sys.stderr)
        return 2
    try:
        df = collect(a.output_dir, a.workdir)
    except FileNotFoundError as exc:
        print(f"neurosmk-status: {exc}", file=sys.stderr)
        return 2
    n_visits = df.loc[df["participant_id"] != "n/a", ["participant_id", "session_id"]].drop_duplicates().shape[0]
    if not a.failed_only and (a.all or n_visits <= 100):
        print(format_table(df))
        print()
    elif not a.failed_only:
        print(f"{n_visits} visits: grid not printed (--all prints it); failed jobs below.\n")
    failed = df[df["state"] == "failed"]
    for r in failed.itertuples():
        visit = r.participant_id + ("" if r.session_id == "n/a" else f" {r.session_id}")
        print(f"FAILED {visit} {r.stage}: {r.error}\n       log: {r.log}")
    if len(failed):
        print()
    print(summary(df).to_string() if not df.empty else "no job logs found")
    if a.tsv != "-":
        from .io import write_tsv

        dest = a.tsv or paths.status_tsv(a.output_dir)
        write_tsv(dest, df, na_rep="")
        print(f"\nwritten: {dest}")
    return 1 if len(failed) else 0


if __name__ == "__main__":
    sys.exit(main())
