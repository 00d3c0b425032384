"""Cohort status: which subject reached which stage, which failed and why.

    neurosmk-status OUTPUT_DIR [--workdir DIR] [--tsv PATH] [--all | --failed-only]

Reads only what a run leaves behind, never the workflow or the BIDS data:

* the job logs and benchmark records under ``OUTPUT_DIR`` (their layout is known only to
  ``neurosmk.paths``: ``log_path``/``bench_path``/``iter_job_logs``);
* in the directory snakemake ran in: its incomplete markers (``.snakemake/incomplete``, one file
  per output of a job that started and never finished: killed, node lost, running), its lock
  (``.snakemake/locks``) and, when a job did not finish, the error reports in its run logs
  (``.snakemake/log/*.snakemake.log``, those written since) and the SLURM logs they name.

One job = one log. Its state:

* **done**: its benchmark record exists and is not older than its log (Snakemake writes the
  record after the job succeeded; a log newer than its record belongs to a later run that did not
  finish) -- unless a later error report lists the job and its outputs are gone: a SLURM group
  job fails as a whole, and Snakemake removes the outputs of its finished jobs too (their records
  stay); such a job is **not run**, with the SLURM log in ``error``; so is a finished job of a
  chain (anat, dwi) whose validation job ran again after it and did not finish (the raw data
  changed: Snakemake redoes the chain once the validation passes);
* **failed**: a log without a (newer) benchmark record. ``error`` is the first error line of
  the log (the exception line after a Python traceback, else the first line that reads like an
  error); when the log holds none: why SLURM ended the job, from the SLURM log of the error report
  that lists it (out of memory, time limit, cancelled, node failure), else that the job was
  interrupted when Snakemake marked outputs of the visit incomplete. A job with an empty log in a
  failed SLURM job where another job wrote to its log did not start (Snakemake creates the missing
  logs of a failed group job's jobs): **not run**. An error report counts only for the attempt it
  follows (not for a job whose log or record is newer);
* **running**: as failed, with no error line in its log yet, while a snakemake holds the lock of
  the working directory and outputs of the visit are marked incomplete (a stale lock, left by a
  snakemake that was killed, reads the same: ``snakemake --unlock``);
* **not run**: no log (a stage other visits reached, or ``validate``).

Stages are named after the config's steps (``anat.skullstrip``, ``dwi.tensor``, ...; the
backend's rule, e.g. ``dwi_tensor_mrtrix``, maps to its step), plus ``validate``,
``anat.volumes``, ``dwi.stats``, ``freesurfer.recon_all``, ``qc`` and one cohort-level ``group``
row (group tables, methods and every other job without a subject; ``not run`` until one of them
left a log) with participant_id ``n/a``; ``dataset_description`` (written first, metadata) is
not a stage. A stage's state for a visit combines the jobs of all its rules (``validate_anat``
and ``validate_dwi``; the QC figures, numbers and page; two rules of one backend): failed when
any failed (the newest failure's log and error), else running when any runs, else done. Rules
of another backend of the same step (an earlier ``method``) count only when that backend's
newest log is newer than the current one's. A stage counts as expected for a visit when any visit
reached it.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from base64 import urlsafe_b64decode
from pathlib import Path
from typing import NamedTuple

from . import paths

COLUMNS = ["participant_id", "session_id", "stage", "state", "error", "log"]
STATES = ("done", "failed", "running", "not run")
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
    out_abs = os.path.realpath(output_dir)
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
            full = os.path.realpath(os.path.join(workdir, path))
            if not (full == out_abs or full.startswith(out_abs + os.sep)):
                continue
            m = _VISIT_IN_PATH.search(os.path.relpath(full, out_abs))
            key = (f"sub-{m.group(1)}", f"ses-{m.group(2)}" if m.group(2) else "n/a") if m else ("n/a", "n/a")
            out[key] = out.get(key, 0) + 1
    return out


# what SLURM (slurmstepd, srun) writes into a job's log when it ends the job
_SLURM_END = re.compile(r"oom[-_ ]kill|exceeded (job )?memory limit|out of memory|DUE TO TIME LIMIT|CANCELLED AT|"
                        r"NODE FAILURE|DUE TO NODE|PREEMPTION", re.IGNORECASE)
# Snakemake's run log .snakemake/log/*.snakemake.log: the lines that matter, found by one regex
# pass (a 10,000-subject SLURM run writes ~100 MB): its timestamps ("[Tue Dec  1 05:47:39 2026]",
# time.asctime), the error report of a failed job ("Error in rule X:") or SLURM group job
# ("    message: Error in group X", its jobs as "        rule X:" entries), and the logs it copies in
# ("Logfile X:", then the log between two equal lines of "=", which may hold copied logs of their
# own: a SLURM job's log holds the error reports of the snakemake that ran in it), which are skipped.
_RUN_LOG_EVENT = re.compile(  # on "\n" + text: each match starts with the newline before its line
    r"\n(?:(?P<ts>\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\])|(?P<rule>Error in rule \S+:)"
    r"|(?P<group> +message: Error in group [^\n]*)|(?P<logfile>Logfile [^\n]*:)|(?P<eq>=+))(?=\n|\Z)")
_REPORT_END = re.compile(r"\n(?=[^ \t\n])")  # the next line that is not indented
_GROUP_RULE = re.compile(r"^ {8}rule (\S+):$")
_SUB_REPORT = re.compile(r"^\s+Error in rule \S+:$")
_LOG_LINE = re.compile(r"^\s+log: (.*?)(?: \(check log file\(s\) for error details\))?$")
_OUT_LINE = re.compile(r"^\s+output: (.*)$")


class FailedJob(NamedTuple):
    """A job in an error report of Snakemake's run log: the SLURM logs of the SLURM job it was in
    (none for a local job), its outputs (absolute), when the report was written, and which report."""
    slurm_logs: tuple[str, ...]
    outputs: tuple[str, ...]
    when: float
    report: tuple[str, int]  # (run log, offset)


def error_reports(text: str, mtime: float = 0.0) -> list:
    """(time, offset, SLURM logs of the report, [(logs, outputs) of each job]) for every error
    report in a run log's text; the time is that of the timestamp line before it. Snakemake writes
    them in its own time zone (time.asctime), which need not be this process's (a container in
    UTC): the time is shifted by the difference between the run log's last write (``mtime``) and
    its last timestamp, rounded to a quarter hour (time zones differ by multiples of it)."""
    import time

    def parse(stamp):
        try:
            return time.mktime(time.strptime(stamp, "[%a %b %d %H:%M:%S %Y]"))
        except ValueError:
            return None

    reports = []

    copied: list[str] = []  # the closing lines of the logs being copied, innermost last
    header_end = -1  # where the last "Logfile X:" line ended
    when, skip_to, stamp, last = None, 0, "", ""  # when: a stamp's time, in the run's time zone
    text = "\n" + text
    for m in _RUN_LOG_EVENT.finditer(text):
        if m.start() < skip_to:
            continue
        kind = m.lastgroup
        line = m.group(kind)
        if kind == "eq" and m.start() == header_end:
            copied.append(line)
        elif copied:
            if kind == "eq" and line == copied[-1]:
                copied.pop()
            elif kind == "logfile":
                header_end = m.end()
        elif kind == "logfile":
            header_end = m.end()
        elif kind == "ts":
            stamp = last = line  # parsed only for a report (a run log has one per job)
        elif kind in ("rule", "group"):
            if stamp:
                when = parse(stamp) or when
                stamp = ""
            end = _REPORT_END.search(text, m.end())
            skip_to = end.start() if end else len(text)
            report_logs: list[str] = []
            job: tuple[list, list] | None = ([], []) if kind == "rule" else None
            jobs = [job] if job else []
            for ln in text[m.end():skip_to].splitlines():
                if _GROUP_RULE.match(ln):
                    job = ([], [])
                    jobs.append(job)
                elif _SUB_REPORT.match(ln):  # the group's jobs' own reports (no --show-failed-logs)
                    break
                elif lm := _LOG_LINE.match(ln):
                    (report_logs if job is None else job[0]).extend(f for f in lm.group(1).split(", ") if f)
                elif (om := _OUT_LINE.match(ln)) and job is not None:
                    job[1].extend(f for f in om.group(1).split(", ") if f)
            reports.append((when, m.start(), report_logs, jobs))
    shift = 0.0
    if last and mtime and (t_last := parse(last)) is not None:
        shift = round((mtime - t_last) / 900) * 900
    # a report without a stamp before it gets the run log's last write (this process's clock)
    return [(mtime if when is None else when + shift, *rest) for when, *rest in reports]


def failed_jobs(workdir: str | os.PathLike | None, output_dir: str, since: float) -> dict[str, FailedJob]:
    """Job log (absolute, under ``output_dir``) -> :class:`FailedJob`, from the error reports of
    Snakemake's run logs in ``workdir/.snakemake/log`` written at or after ``since`` (a later
    report wins). Paths in them are relative to ``workdir`` unless absolute."""
    out: dict[str, FailedJob] = {}
    if workdir is None:
        return out
    workdir = os.path.realpath(workdir)
    try:
        runs = [(e.stat().st_mtime, e.path) for e in os.scandir(os.path.join(workdir, ".snakemake", "log"))
                if e.name.endswith(".snakemake.log")]
    except OSError:
        return out
    job_logs = os.path.join(output_dir, paths.LOGS_DIR, "")

    def full(f):
        return os.path.realpath(os.path.join(workdir, f))  # an absolute f stays itself, resolved

    for mtime, run_log in sorted(runs):
        if mtime < since:
            continue
        try:
            with open(run_log, errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        for when, offset, report_logs, jobs in error_reports(text, mtime):
            report_slurm = tuple(full(f) for f in report_logs)
            for logs, outputs in jobs:
                logs = [full(f) for f in logs]
                mine = [f for f in logs if f.startswith(job_logs)]
                slurm = report_slurm + tuple(f for f in logs if not f.startswith(job_logs))
                job = FailedJob(slurm, tuple(full(o) for o in outputs), when, (run_log, offset))
                out.update(dict.fromkeys(mine, job))
    return out


def slurm_ending(slurm_logs) -> tuple[str, str]:
    """(the line where SLURM says it ended the job, that SLURM log); ('', first log) when none says so."""
    for f in slurm_logs:
        try:
            with open(f, errors="replace") as fh:
                line = next((ln.strip() for ln in fh if _SLURM_END.search(ln)), "")
        except OSError:
            continue
        if line:
            return line, f
    return "", slurm_logs[0] if slurm_logs else ""


class Job(NamedTuple):
    mtime: float         # of its log
    log: str
    done: bool           # a benchmark record not older than the log
    bench: float | None  # the record's mtime


def collect(output_dir: str | os.PathLike, workdir: str | os.PathLike | None = None, run_logs: bool = True):
    """One row per (visit, stage): participant_id, session_id, stage, state, error, log.

    ``workdir`` is where snakemake ran (its ``.snakemake/``); default: the current directory
    when it has one. ``run_logs`` False: Snakemake's run logs are not read (a visit's QC page,
    made after its steps succeeded, has no use for them). Raises FileNotFoundError when
    ``output_dir`` does not exist.
    """
    import pandas as pd

    # real paths: Snakemake's run logs name files through whatever path snakemake ran with (a
    # symlinked /home or /project), matched here against the resolved one
    output_dir = os.path.realpath(os.fspath(output_dir))
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"output directory not found: {output_dir}")
    if workdir is None and os.path.isdir(".snakemake"):
        workdir = os.getcwd()
    benches = paths.benchmark_mtimes(output_dir)
    stage_of: dict[str, str] = {}
    # (participant, session, stage) -> {rule: Job}
    jobs: dict[tuple[str, str, str], dict[str, Job]] = {}
    visits: set[tuple[str, str]] = set()
    for rule, visit, log, bench, mtime in paths.iter_job_logs(output_dir):
        stage = stage_of[rule] if rule in stage_of else stage_of.setdefault(rule, rule_stage(rule))
        if not stage:
            continue
        if visit is None:  # a cohort-level job (group tables, methods, a study template, ...)
            key, stage = ("n/a", "n/a"), GROUP_STAGE
        else:
            m = _VISIT.match(visit)
            if not m:
                continue
            key = (f"sub-{m.group(1)}", f"ses-{m.group(2)}" if m.group(2) else "n/a")
            visits.add(key)
        b = benches.get(bench)
        jobs.setdefault((*key, stage), {})[rule] = Job(mtime, log, b is not None and b + _MTIME_SLACK >= mtime, b)
    incomplete = incomplete_visits(workdir, output_dir)
    locked = snakemake_holds_lock(workdir)
    # Snakemake's own error reports, read only when a job did not finish (a failed SLURM job also
    # takes the finished jobs of its group with it, which fail after their logs were written)
    unfinished = [j.mtime for per in jobs.values() for j in per.values() if not j.done]
    failed = failed_jobs(workdir, output_dir, min(unfinished) - _MTIME_SLACK) if unfinished and run_logs else {}
    # a report counts for the attempt it follows: not for a job whose log was written after it
    logs_mtime = {j.log: j.mtime for per in jobs.values() for j in per.values()}
    failed = {log: f for log, f in failed.items() if _follows(f, log, logs_mtime.get(log, 0.0))}
    not_started = _not_started(jobs, failed)
    stages = sorted({k[2] for k in jobs if k[2] != GROUP_STAGE}, key=_stage_order)
    rows = []
    cohort: dict[str, tuple[float, str]] = {}  # the same over every visit, for the cohort-level jobs
    for visit in sorted(visits):
        earlier: dict[str, tuple[float, str]] = {}  # chain -> its validation job, when it did not finish
        for stage in stages:
            per_rule = jobs.get((*visit, stage))
            rows.append(_row(visit, stage, per_rule, incomplete, locked, failed, not_started, earlier))
            if stage == "validate":
                for rule, job in (per_rule or {}).items():
                    if not job.done:
                        for m in _chains(rule):
                            earlier[m] = max(earlier.get(m, (0.0, "")), (job.mtime, rule))
        for m, e in earlier.items():
            cohort[m] = max(cohort.get(m, e), e)
    if visits or jobs:
        rows.append(_row(("n/a", "n/a"), GROUP_STAGE, jobs.get(("n/a", "n/a", GROUP_STAGE)), incomplete, locked,
                         failed, not_started, cohort))
    return pd.DataFrame(rows, columns=COLUMNS)


def _not_started(jobs, failed: dict[str, FailedJob]) -> set[str]:
    """Logs of jobs that never started. A SLURM group job runs its jobs one at a time and stops at
    the first that fails: of its unfinished jobs in one error report, the one whose log was written
    last failed; the others never started (Snakemake created their missing logs, empty; a log of an
    earlier run stays as it was). When all logs are empty (SLURM killed the job as it started),
    the first in stage order is taken for the one that failed."""
    by_report: dict[tuple[str, int], list[tuple[bool, float, tuple, str]]] = {}
    for (pid, ses, stage), per in jobs.items():
        for rule, job in per.items():
            f = failed.get(job.log)
            if not job.done and f is not None and f.slurm_logs:
                empty = _empty(job.log)
                # sorted: a non-empty log before empty ones, then the newest, then stage order
                by_report.setdefault(f.report, []).append(
                    (empty, 0.0 if empty else -job.mtime, (_stage_order(stage), pid, ses, rule), job.log))
    out: set[str] = set()
    for members in by_report.values():
        out.update(log for *_key, log in sorted(members)[1:])
    return out


def _follows(f: FailedJob, log: str, log_mtime: float) -> bool:
    """Whether the error report ``f`` is about the attempt that wrote ``log``: the log is not newer
    than the report, or it is empty and made just after it (Snakemake creates a failed group job's
    missing logs after its report, 0.1 s per level of the group)."""
    return f.when + _MTIME_SLACK >= log_mtime or (log_mtime <= f.when + _EMPTY_LOG_WINDOW and _empty(log))


_EMPTY_LOG_WINDOW = 120.0


def _chains(rule: str) -> tuple[str, ...]:
    """The chains (anat, dwi) whose validation job a rule's job depends on: validate_anat and every
    anat_* rule (the first takes the visit's report, the others its outputs), validate_dwi and
    dwi_*, the DWI QC figures; the other QC jobs, the group tables and the methods read both. The
    FreeSurfer rules read the raw T1w without the report: none."""
    if rule.startswith(("validate_anat", "anat_")):
        return ("anat",)
    if rule.startswith(("validate_dwi", "dwi_", "qc_dwi")):
        return ("dwi",)
    return ("anat", "dwi") if rule.startswith(("qc_", "group_", "methods")) else ()


@functools.cache
def _backend_of() -> dict[str, tuple[str, str]]:
    """rule -> (step, method) for every backend rule of the registry."""
    from .backends import STEPS

    return {rule: (step, method) for step, methods in STEPS.items()
            for method, backend in methods.items() for rule in backend.rules}


def current_jobs(per_rule: dict[str, Job]) -> dict[str, Job]:
    """Of one visit's jobs of one stage (rule -> Job), those that count: all, less the rules of
    every backend of the step but the one whose newest log is newest (an earlier ``method`` of the
    step; its old logs stay in the output directory)."""
    backend = _backend_of()
    newest: dict[tuple[str, str], float] = {}
    for rule, job in per_rule.items():
        if rule in backend:
            newest[backend[rule]] = max(job.mtime, newest.get(backend[rule], job.mtime))
    if len(newest) < 2:
        return per_rule
    current = max(newest, key=newest.get)
    return {r: job for r, job in per_rule.items() if backend.get(r, current) == current}


def snakemake_holds_lock(workdir: str | os.PathLike | None) -> bool:
    """True when ``workdir/.snakemake/locks`` holds a lock file: a snakemake runs there (or one
    that was killed left its lock: ``snakemake --unlock`` removes it)."""
    if workdir is None:
        return False
    try:
        return any(e.name.endswith(".lock") for e in os.scandir(Path(workdir) / ".snakemake" / "locks"))
    except OSError:
        return False


def _lost(job: Job, failed: dict[str, FailedJob]) -> FailedJob | None:
    """The error report of a finished job whose outputs Snakemake removed afterwards, because the
    SLURM group job it was in failed (at another job of the group); None when that is not so."""
    f = failed.get(job.log)
    if f is None or not f.slurm_logs or job.bench is None or f.when + _MTIME_SLACK < job.bench:
        return None
    return f if any(not os.path.exists(o) for o in f.outputs) else None


def _row(visit, stage, per_rule, incomplete, locked, failed, not_started, earlier) -> dict:
    """The row of one visit's stage. ``not_started``: logs of jobs of a failed SLURM job that never
    started (:func:`_not_started`). ``earlier``: per chain (anat, dwi), its validation job when that
    did not finish; a finished job of the chain older than it is outdated (the raw data changed:
    Snakemake redoes it once the validation passes)."""
    row = {"participant_id": visit[0], "session_id": visit[1], "stage": stage}
    if not per_rule:
        return {**row, "state": "not run", "error": "", "log": ""}
    recs = current_jobs(per_rule)
    lost = {r: f for r, job in recs.items() if job.done and (f := _lost(job, failed))}
    stale = {r: e for r, job in recs.items() if job.done and r not in lost
             for m in _chains(r) if (e := earlier.get(m)) and e[0] > job.bench + _MTIME_SLACK}
    unfinished = sorted(((job.mtime, rule, job.log) for rule, job in recs.items() if not job.done), reverse=True)
    if not unfinished and not lost and not stale:
        return {**row, "state": "done", "error": "", "log": max(recs.values()).log}
    if not unfinished and not lost:
        rule, (_t, before) = next(iter(stale.items()))
        return {**row, "state": "not run", "log": recs[rule].log,
                "error": f"{rule} is outdated: {before} ran again after it (the raw data changed) and did not "
                         "finish; it runs again after that"}
    n = incomplete.get(visit, 0)
    silent = None
    for _mtime, rule, log in unfinished:  # the newest failure with an error line decides
        if log in not_started:
            continue
        err = first_error_line(log)
        if err:
            return {**row, "state": "failed", "error": err, "log": log}
        silent = silent or (rule, log)
    if silent is None and unfinished:  # its jobs never started: their SLURM job failed at another step
        _mtime, rule, log = unfinished[0]
        return {**row, "state": "not run", "log": log,
                "error": f"{rule} did not start: the SLURM job it was in failed at another step "
                         f"(SLURM log: {failed[log].slurm_logs[0]})"}
    if silent is None:  # every job of the stage had finished: its outputs were removed later
        rule, f = next(iter(lost.items()))
        return {**row, "state": "not run", "log": recs[rule].log,
                "error": f"{rule} finished, but Snakemake removed its outputs when the SLURM job it ran in failed "
                         f"(at another job; SLURM log: {f.slurm_logs[0]})"}
    rule, log = silent
    if locked and n:
        return {**row, "state": "running", "error": "", "log": log}
    slurm = failed[log].slurm_logs if log in failed else ()
    if slurm:
        line, slurm_log = slurm_ending(slurm)
        if line:
            return {**row, "state": "failed", "log": log, "error": f"{rule}{_BY_SLURM}{line} (SLURM log: {slurm_log})"}
        return {**row, "state": "failed", "log": log,
                "error": f"{rule}{_NO_ERROR}no error in its log; SLURM log: {slurm_log})"}
    err = (f"{_INTERRUPTED}{rule} did not finish ({n} output(s) marked incomplete by Snakemake; "
           "--rerun-incomplete redoes them)" if n else f"{rule}{_NO_ERROR}no error in its log)")
    return {**row, "state": "failed", "error": err, "log": log}


# how the errors that are not a job's own error line start (the exclusion hint leaves them out)
_INTERRUPTED = "interrupted: "
_BY_SLURM = " ended by SLURM: "
_NO_ERROR = " did not finish ("


def _empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


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


def exclude_hint(failed) -> str:
    """How to leave out the subjects whose own step failed (an error in its log), so that the group
    tables (which wait for every subject) are made from the rest; '' when none did. Subjects whose
    job stopped without an error of its own (interrupted, ended by SLURM for memory or time, or
    no error line at all) are named apart: they need another run first."""
    import json

    def subjects(rows):
        return sorted({p.removeprefix("sub-") for p in rows["participant_id"] if p != "n/a"})

    again = failed["error"].str.startswith(_INTERRUPTED) | failed["error"].str.contains(_BY_SLURM, regex=False) \
        | failed["error"].str.contains(_NO_ERROR, regex=False)
    own = subjects(failed[~again])
    rerun = sorted(set(subjects(failed[again])) - set(own))
    lines = []
    if own:
        value = json.dumps(own, separators=(",", ":"))
        lines.append(f"{len(own)} subject(s) with a failed job; the group tables wait for every subject. To make them "
                     f"from the others: snakemake ... --config 'participant_exclude={value}'")
    if rerun:
        lines.append(f"{len(rerun)} subject(s) stopped without an error of their own (interrupted, ended by SLURM or "
                     f"no error in the log: {', '.join(rerun)}): run again first (--rerun-incomplete; profiles/slurm "
                     "retries with more memory and time)")
    return "\n".join(lines)


_MARK = {"done": "done", "failed": "FAILED", "running": "running", "not run": "-"}


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
    hint = exclude_hint(failed)
    if hint:
        print(f"\n{hint}")
    if a.tsv != "-":
        from .io import write_tsv

        dest = a.tsv or paths.status_tsv(a.output_dir)
        write_tsv(dest, df, na_rep="")
        print(f"\nwritten: {dest}")
    return 1 if len(failed) else 0


if __name__ == "__main__":
    sys.exit(main())
