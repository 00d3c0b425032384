"""``neurosmk-stats``: aggregate FreeSurfer ``stats/*.stats`` of many subjects into tables.

    neurosmk-stats SUBJECTS_DIR_OR_SUBJECT_DIR... --output-dir OUT [--skip-bad]
                   [--subjects S ...] [--jobs N] [--no-long-tsv] [--timing]

Writes OUT/freesurfer_stats_long.{tsv,parquet}, OUT/freesurfer_global_measures.{tsv,parquet},
OUT/wide/<atlas>_<hemi>_<measure>.tsv and, when any file was skipped, OUT/skipped_files.tsv.
A malformed file stops the run (exit 1, nothing written) unless ``--skip-bad`` is given.
``?h.curv.stats`` (mris_curvature_stats text) is parsed into the long table too.

Large cohorts: the long TSV is about 0.85 MB per subject (8.5 GB for 10,000 subjects of a full
recon-all) and writing it takes longer than all the rest; ``--no-long-tsv`` writes the long
table as Parquet only (about 16 kB per subject; ``pandas.read_parquet`` gives it back with
categorical columns).  ``--jobs 2`` parses in 2 processes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from neurosmk.fsstats.parser import NotATableError, parse_stats_file, split_subject_session
from neurosmk.fsstats.tables import (GLOBAL_NAME, LONG_NAME, concat_tables, global_table,
                                     long_table, write_group_tables)
from neurosmk.io import InputError

SKIPPED_COLUMNS = ["file", "reason", "kind"]


def find_subject_dirs(paths, subjects=None) -> list[Path]:
    """A path with a ``stats/`` folder is a subject dir; else each child that has one is."""
    found = []
    for p in map(Path, paths):
        if p.name == "stats" and p.is_dir():
            p = p.parent
        if (p / "stats").is_dir():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(c for c in p.iterdir() if (c / "stats").is_dir()))
        else:
            raise InputError(p, "not a directory")
    if subjects:
        wanted = set(subjects)
        found = [d for d in found
                 if d.name in wanted or split_subject_session(d.name)[0] in wanted]
    return found


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


def write_outputs(out_dir, long: pd.DataFrame, glob: pd.DataFrame, skipped=(), wide=True,
                  long_tsv=True, threads=2):
    """Write all tables atomically (neurosmk.fsstats.tables.write_group_tables, the one writer
    the pipeline uses too)."""
    write_group_tables(out_dir, long, glob, skipped, wide=wide, long_tsv=long_tsv,
                       threads=threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="neurosmk-stats", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="SUBJECTS_DIR_OR_SUBJECT_DIR")
    ap.add_argument("--output-dir", "-o", required=True)
    ap.add_argument("--skip-bad", action="store_true",
                    help="skip malformed files (listed in OUT/skipped_files.tsv)")
    ap.add_argument("--subjects", nargs="+", help="only these subject (directory) names")
    ap.add_argument("--jobs", "-j", type=int, default=1)
    ap.add_argument("--timing", action="store_true",
                    help="print the wall and CPU seconds of each phase to stderr")
    ap.add_argument("--no-long-tsv", action="store_true",
                    help="write the long table as Parquet only (for large cohorts: the long "
                         "TSV is ~0.85 MB per subject and dominates the run time)")
    a = ap.parse_args(argv)
    clock = _Clock(a.timing)
    try:
        dirs = find_subject_dirs(a.paths, a.subjects)
        if not dirs:
            print("neurosmk-stats: error: no subject directories with a stats/ folder found "
                  f"under {' '.join(a.paths)}", file=sys.stderr)
            return 1
        clock("find subject dirs")
        long, glob, skipped = aggregate(dirs, skip_bad=a.skip_bad, jobs=max(a.jobs, 1))
        clock(f"parse + tables ({a.jobs} jobs)")
    except (InputError, StatsError) as exc:
        print(f"neurosmk-stats: error: {exc}", file=sys.stderr)
        print("neurosmk-stats: no tables written (use --skip-bad to skip bad files)",
              file=sys.stderr)
        return 1
    n_bad = sum(1 for s in skipped if s[2] == "parse-error")
    n_other = len(skipped) - n_bad
    if n_bad:
        print(f"neurosmk-stats: warning: skipped {n_bad} bad file(s); see "
              f"{Path(a.output_dir) / 'skipped_files.tsv'}", file=sys.stderr)
    if n_other:
        print(f"neurosmk-stats: note: {n_other} file(s) of a non-table format not parsed "
              f"(e.g. {skipped[[s[2] != 'parse-error' for s in skipped].index(True)][0]}); "
              "listed in skipped_files.tsv", file=sys.stderr)
    write_outputs(a.output_dir, long, glob, skipped, long_tsv=not a.no_long_tsv)
    clock("write tables")
    print(f"neurosmk-stats: {len(dirs)} subject(s), {len(long)} table values, {len(glob)} "
          f"global values -> {a.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
