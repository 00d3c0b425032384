"""``neurosmk-stats``: aggregate FreeSurfer ``stats/*.stats`` of many subjects into tables.

    neurosmk-stats SUBJECTS_DIR_OR_SUBJECT_DIR... --output-dir OUT [--skip-bad]
                   [--subjects S ...] [--jobs N] [--no-long-tsv] [--timing]

Writes OUT/freesurfer_stats_long.{tsv,parquet}, OUT/freesurfer_global_measures.{tsv,parquet},
OUT/wide/<atlas>_<hemi>_<measure>.tsv and OUT/skipped_files.tsv (rewritten on every run: the
files this run skipped, header only when none; tables an earlier run left in OUT that this run
does not write are removed, so OUT never mixes two runs).
A malformed file, or a FreeSurfer subject folder without ``stats/`` (``mri/``, ``surf/``,
``scripts/`` or ``label/`` but no ``stats/``, or a ``sub-*`` folder; template subjects such as
``fsaverage`` excepted), stops the run (exit 1, nothing written) unless ``--skip-bad`` is given.
Command-line errors (a path that is not a directory, ``--output-dir`` that is a file, the same
subject found under two paths, ``--subjects`` names not found) exit 2 with a one-line message,
before anything is parsed or written.
``?h.curv.stats`` (mris_curvature_stats text) is parsed into the long table too.

Large cohorts: the long TSV is about 0.85 MB per subject (8.5 GB for 10,000 subjects of a full
recon-all) and writing it takes longer than all the rest; ``--no-long-tsv`` writes the long
table as Parquet only (about 16 kB per subject; ``pandas.read_parquet`` gives it back with
categorical columns).  ``--jobs 2`` parses in 2 processes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pandas as pd

from neurosmk.fsstats.parser import NotATableError, parse_stats_file, split_subject_session
from neurosmk.fsstats.tables import LONG_NAME, concat_tables, global_table, long_table, write_group_tables
from neurosmk.io import InputError

SKIPPED_NAME = "skipped_files.tsv"
SKIPPED_COLUMNS = ["file", "reason", "kind"]
# a folder with one of these but no stats/ is a FreeSurfer subject whose stats are missing
SUBJECT_MARKERS = ("mri", "surf", "scripts", "label")
# FreeSurfer's template subjects have no stats/ and are not subjects of the study
TEMPLATE_SUBJECT = re.compile(r"fsaverage.*|cvs_avg35.*|V1_average|mni305|MNI152.*")
NO_STATS_REASON = "FreeSurfer subject folder without stats/ (recon-all not finished?)"


class UsageError(Exception):
    """A command-line error: exit 2 with a one-line message, before anything is written."""


def _is_subject_without_stats(d: Path) -> bool:
    if (d / "stats").is_dir() or d.name.startswith(".") or TEMPLATE_SUBJECT.fullmatch(d.name):
        return False
    return d.name.startswith("sub-") or any((d / m).is_dir() for m in SUBJECT_MARKERS)


def _selected(d: Path, wanted) -> bool:
    return not wanted or d.name in wanted or split_subject_session(d.name)[0] in wanted


def scan_paths(paths, subjects=None, exclude=()) -> tuple[list[Path], list[Path]]:
    """-> (subject dirs with ``stats/``, FreeSurfer subject dirs without it).

    A path with a ``stats/`` folder (or a ``stats`` folder itself) is a subject dir; a path that
    looks like a FreeSurfer subject but has no ``stats/`` is one without stats; any other
    directory is a SUBJECTS_DIR whose children are sorted the same way (``exclude``: folders to
    pass over, e.g. the output folder).  Raises UsageError for a path that is not a directory
    and for ``subjects`` that match nothing."""
    skip = {Path(e).resolve() for e in exclude}
    skip_names = {e.name for e in skip}
    found, no_stats = [], []
    for p in map(Path, paths):
        if p.name == "stats" and p.is_dir():
            p = p.parent
        if not p.is_dir():
            raise UsageError(f"{p}: {'not a directory' if p.exists() else 'no such directory'}")
        if (p / "stats").is_dir():
            found.append(p)
        elif _is_subject_without_stats(p):
            no_stats.append(p)
        else:
            for c in sorted(p.iterdir()):
                if not c.is_dir() or (c.name in skip_names and c.resolve() in skip):
                    continue
                if (c / "stats").is_dir():
                    found.append(c)
                elif _is_subject_without_stats(c):
                    no_stats.append(c)
    wanted = set(subjects or ())
    if wanted:
        matched = {n for d in found + no_stats for n in (d.name, split_subject_session(d.name)[0])}
        missing = sorted(wanted - matched)
        if missing:
            raise UsageError(f"--subjects: {', '.join(missing)} not found under "
                             f"{' '.join(map(str, paths))}")
    return ([d for d in found if _selected(d, wanted)],
            [d for d in no_stats if _selected(d, wanted)])


def find_subject_dirs(paths, subjects=None) -> list[Path]:
    """A path with a ``stats/`` folder is a subject dir; else each child that has one is."""
    return scan_paths(paths, subjects)[0]


def check_duplicates(subject_dirs) -> None:
    """The same (subject, session) from two folders (or one folder given twice) would be counted
    twice in every table: refuse it, naming both folders, before anything is parsed."""
    seen = {}
    for d in map(Path, subject_dirs):
        key = split_subject_session(d.name)
        if key in seen:
            first = seen[key]
            sub, ses = key
            what = f"subject {sub}" + (f" session {ses}" if ses else "")
            how = ("given twice" if first.resolve() == d.resolve()
                   else f"found twice: {first} and {d}")
            raise UsageError(f"{what} {how}; give each subject once")
        seen[key] = d


def check_output_dir(out) -> None:
    """``--output-dir`` must be a directory or creatable as one, and writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir {out}: exists and is not a directory")
    parent = out
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--output-dir {out}: {parent} is not a directory")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--output-dir {out}: {parent} is not writable")


def parse_subject_dir(subject_dir, subject=None, session=None, skip_bad=False):
    """Parse every ``*.stats`` in ``subject_dir/stats`` (or ``subject_dir`` itself if it is a
    stats folder).  Returns (parsed list, skipped list of (file, reason, kind))."""
    d = Path(subject_dir)
    stats = d / "stats" if (d / "stats").is_dir() else d
    if subject is None:
        subject, ses = split_subject_session(stats.parent.name if stats.name == "stats"
                                             else d.name)
        session = ses if session is None else session
    parsed, skipped = [], []
    files = sorted(stats.glob("*.stats"))
    if not files:
        err = InputError(stats, "no *.stats files")
        if not skip_bad:
            raise err
        skipped.append((str(stats), str(err), "no-stats"))
    for f in files:
        try:
            parsed.append(parse_stats_file(f, subject=subject, session=session or ""))
        except NotATableError as exc:
            skipped.append((str(f), str(exc), f"not-a-table ({exc.kind})"))
        except InputError as exc:
            if not skip_bad:
                raise
            skipped.append((str(f), str(exc), "parse-error"))
    return parsed, skipped


def _work(args):
    """Worker: parse a chunk of subject dirs and build their long/global frames.
    Errors are returned as text (custom exceptions do not survive pickling)."""
    dirs, skip_bad = args
    parsed, skipped = [], []
    try:
        for d in dirs:
            p, s = parse_subject_dir(d, skip_bad=skip_bad)
            parsed.extend(p)
            skipped.extend(s)
    except InputError as exc:
        return None, None, None, str(exc)
    return long_table(parsed), global_table(parsed), skipped, None


def aggregate(subject_dirs, skip_bad=False, jobs=1, chunk=None):
    """Parse all subject dirs (in ``jobs`` processes) -> (long, global, skipped).
    Raises InputError on the first bad file unless ``skip_bad``.  Subjects go to the workers
    in chunks of ``chunk`` (default: about 4 chunks per worker, at most 250 subjects)."""
    dirs = [str(d) for d in subject_dirs]
    if chunk is None:
        chunk = max(1, min(250, -(-len(dirs) // (4 * max(jobs, 1)))))
    chunks = [(dirs[i:i + chunk], skip_bad) for i in range(0, len(dirs), chunk)]
    if jobs > 1 and len(chunks) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_work, chunks, chunksize=1)
    else:
        results = [_work(c) for c in chunks]
    for _, _, _, err in results:
        if err:
            raise StatsError(err)
    long = concat_tables([r[0] for r in results])
    glob = concat_tables([r[1] for r in results])
    skipped = [s for r in results for s in r[2]]
    return long, glob, skipped


class _Clock:
    """``--timing``: wall and CPU seconds (this process; its finished workers) per phase."""

    def __init__(self, on: bool):
        import time

        self.on, self.time = on, time
        self.last = self._now()

    def _now(self):
        import os

        t = os.times()
        return (self.time.perf_counter(), t.user + t.system,
                t.children_user + t.children_system)

    def __call__(self, label: str) -> None:
        if self.on:
            now = self._now()
            print(f"neurosmk-stats: timing: {label}: wall {now[0] - self.last[0]:.2f} s, CPU "
                  f"{now[1] - self.last[1]:.2f} s (+ workers {now[2] - self.last[2]:.2f} s)",
                  file=sys.stderr)
            self.last = now


class StatsError(Exception):
    """A bad input reported by a worker process (message names file and line)."""


def remove_stale_outputs(out_dir, long_tsv=True, wide_written=None) -> list[Path]:
    """Remove the tables an earlier run left in ``out_dir`` that this run did not write (the
    long TSV after ``--no-long-tsv``, wide tables of atlases no longer present), so the folder
    never mixes two runs.  Returns the removed paths."""
    out = Path(out_dir)
    stale = []
    if not long_tsv:
        stale.append(out / f"{LONG_NAME}.tsv")
    if wide_written is not None and (out / "wide").is_dir():
        keep = {f"{n}{ext}" for n in wide_written for ext in (".tsv", ".json")}
        stale.extend(p for p in (out / "wide").iterdir() if p.suffix in (".tsv", ".json") and p.name not in keep)
    removed = []
    for p in stale:
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def write_outputs(out_dir, long: pd.DataFrame, glob: pd.DataFrame, skipped=(), wide=True,
                  long_tsv=True, threads=2):
    """Write all tables atomically (neurosmk.fsstats.tables.write_group_tables, the one writer
    the pipeline uses too), then remove the tables an earlier run left that this run did not
    write."""
    wide_written = write_group_tables(out_dir, long, glob, skipped, wide=wide, long_tsv=long_tsv,
                                      threads=threads)
    remove_stale_outputs(out_dir, long_tsv=long_tsv, wide_written=wide_written)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return n


def _error(msg: str, code: int) -> int:
    print(f"neurosmk-stats: error: {msg}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="neurosmk-stats", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="SUBJECTS_DIR_OR_SUBJECT_DIR")
    ap.add_argument("--output-dir", "-o", required=True)
    ap.add_argument("--skip-bad", action="store_true",
                    help="skip malformed files and subject folders without stats/ (listed in "
                         "OUT/skipped_files.tsv)")
    ap.add_argument("--subjects", nargs="+", help="only these subject (directory) names")
    ap.add_argument("--jobs", "-j", type=_positive_int, default=1)
    ap.add_argument("--timing", action="store_true",
                    help="print the wall and CPU seconds of each phase to stderr")
    ap.add_argument("--no-long-tsv", action="store_true",
                    help="write the long table as Parquet only (for large cohorts: the long "
                         "TSV is ~0.85 MB per subject and dominates the run time)")
    a = ap.parse_args(argv)  # argparse: exit 2 with a usage line
    clock = _Clock(a.timing)
    try:
        check_output_dir(a.output_dir)
        dirs, no_stats = scan_paths(a.paths, a.subjects, exclude=[a.output_dir])
        check_duplicates(dirs + no_stats)
    except UsageError as exc:
        return _error(str(exc), 2)
    if no_stats and not a.skip_bad:
        return _error(f"{no_stats[0]}: {NO_STATS_REASON}"
                      + (f" (and {len(no_stats) - 1} more)" if len(no_stats) > 1 else "")
                      + "; no tables written (use --skip-bad to skip it)", 1)
    if not dirs:
        return _error("no subject directories with a stats/ folder found under "
                      f"{' '.join(a.paths)}", 1)
    clock("find subject dirs")
    try:
        long, glob, skipped = aggregate(dirs, skip_bad=a.skip_bad, jobs=a.jobs)
        clock(f"parse + tables ({a.jobs} jobs)")
    except (InputError, StatsError) as exc:
        print(f"neurosmk-stats: error: {exc}", file=sys.stderr)
        print("neurosmk-stats: no tables written (use --skip-bad to skip bad files)",
              file=sys.stderr)
        return 1
    skipped = [(str(d), NO_STATS_REASON, "no-stats-dir") for d in no_stats] + list(skipped)
    manifest = Path(a.output_dir) / SKIPPED_NAME
    if no_stats:
        print(f"neurosmk-stats: warning: skipped {len(no_stats)} subject folder(s) without "
              f"stats/ ({', '.join(map(str, no_stats))}); see {manifest}", file=sys.stderr)
    n_bad = sum(1 for s in skipped if s[2] == "parse-error")
    n_other = sum(1 for s in skipped if s[2] not in ("parse-error", "no-stats-dir"))
    if n_bad:
        print(f"neurosmk-stats: warning: skipped {n_bad} bad file(s); see {manifest}",
              file=sys.stderr)
    if n_other:
        example = next(s[0] for s in skipped if s[2] not in ("parse-error", "no-stats-dir"))
        print(f"neurosmk-stats: note: {n_other} file(s) of a non-table format not parsed "
              f"(e.g. {example}); listed in {SKIPPED_NAME}", file=sys.stderr)
    try:
        write_outputs(a.output_dir, long, glob, skipped, long_tsv=not a.no_long_tsv)
    except OSError as exc:
        return _error(f"cannot write the tables to {a.output_dir}: {exc}", 1)
    clock("write tables")
    print(f"neurosmk-stats: {len(dirs)} subject(s), {len(long)} table values, {len(glob)} "
          f"global values -> {a.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
