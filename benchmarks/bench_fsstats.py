"""Benchmark neurosmk.fsstats.

1. Per-file parse time on the aparc-style fixture files: neurosmk (parse only, and parse +
   long DataFrame) vs naive ``pandas.read_csv(comment='#', sep=r'\\s+', header=None)`` vs the
   ``freesurfer-stats==1.2.1`` library (run in a throw-away venv under /tmp because it needs
   pandas<2; skipped with the reason if it cannot be installed).
2. N subjects (default 10,000; symlinked copies of the FreeSurfer 7.4.1 fixture subject in a
   temporary folder) aggregated end to end through the CLI code path with 2 worker processes.

    PYTHONPATH=src python benchmarks/bench_fsstats.py [--subjects N] [--jobs 2] [--repeat 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pandas as pd  # noqa: E402

from neurosmk.fsstats import cli  # noqa: E402
from neurosmk.fsstats.parser import parse_stats_file  # noqa: E402
from neurosmk.fsstats.tables import long_table, write_long_tsv  # noqa: E402

FIX = ROOT / "tests" / "data" / "freesurfer"
FS7_SUBJECT = FIX / "ds000005_sub-01"
VENV = Path("/tmp/fsstats-bench-venv")

_FSSTATS_TIMER = r"""
import json, sys, time, statistics
from freesurfer_stats import CorticalParcellationStats
files, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
for f in files:
    CorticalParcellationStats.read(f)  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); s = CorticalParcellationStats.read(f)
        s.structural_measurements; s.whole_brain_measurements
        ts.append(time.perf_counter() - t)
    out[f] = statistics.median(ts)
print(json.dumps(out))
"""


def _time(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _fsstats_times(files, repeat):
    """Median seconds per file for freesurfer-stats 1.2.1, or (None, reason)."""
    py = VENV / "bin" / "python"
    if not py.exists():
        r = subprocess.run(["python3", "-m", "venv", str(VENV)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None, f"python3 -m venv failed: {r.stderr.strip()[-300:]}"
        r = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "freesurfer-stats==1.2.1",
                            "pandas<2", "numpy<2"], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            return None, f"pip install freesurfer-stats==1.2.1 failed: {r.stderr.strip()[-300:]}"
    r = subprocess.run([str(py), "-c", _FSSTATS_TIMER, json.dumps([str(f) for f in files]),
                        str(repeat)], capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"freesurfer-stats run failed: {r.stderr.strip()[-300:]}"
    return json.loads(r.stdout), ""


def bench_files(repeat: int) -> None:
    files = sorted(f for f in FIX.glob("*/stats/*.stats")
                   if "aparc" in f.name or "BA_exvivo" in f.name)
    fs, why = _fsstats_times(files, repeat)
    print(f"\n== per-file parse time, median of {repeat} (ms) ==")
    hdr = (f"{'file':42s} {'neurosmk':>9s} {'+long df':>9s} {'read_csv':>9s} "
           f"{'fs-stats':>9s} {'speedup':>8s}")
    print(hdr)
    print("-" * len(hdr))
    speedups, parse_speedups = [], []
    for f in files:
        t_ns = _time(lambda: parse_stats_file(f, subject="s"), repeat)
        t_df = _time(lambda: long_table([parse_stats_file(f, subject="s")]), repeat)
        t_pd = _time(lambda: pd.read_csv(f, comment="#", sep=r"\s+", header=None), repeat)
        t_fs = fs.get(str(f)) if fs else None
        sp = t_fs / t_df if t_fs else None
        if sp:
            speedups.append(sp)
            parse_speedups.append(t_fs / t_ns)
        print(f"{f.parent.parent.name + '/' + f.name:42s} {t_ns * 1e3:9.3f} {t_df * 1e3:9.3f} "
              f"{t_pd * 1e3:9.3f} {(t_fs or float('nan')) * 1e3:9.3f} "
              f"{(f'{sp:7.1f}x' if sp else '    n/a'):>8s}")
    if fs:
        print(f"speed-up vs freesurfer-stats 1.2.1 (neurosmk parse + long DataFrame): "
              f"min {min(speedups):.1f}x, median {statistics.median(speedups):.1f}x "
              f"(goal >= 10x: {'met' if min(speedups) >= 10 else 'NOT met'})")
        print(f"speed-up vs freesurfer-stats 1.2.1 (neurosmk parse only, numpy result): "
              f"min {min(parse_speedups):.1f}x, median {statistics.median(parse_speedups):.1f}x "
              f"(goal >= 10x: {'met' if min(parse_speedups) >= 10 else 'NOT met'})")
    else:
        print(f"freesurfer-stats 1.2.1 skipped: {why}")


def bench_group(n_subjects: int, jobs: int, keep: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fsstats_bench_"))
    try:
        subj = tmp / "subjects"
        subj.mkdir()
        target = FS7_SUBJECT.resolve() / "stats"
        for i in range(n_subjects):
            d = subj / f"sub-{i:05d}"
            d.mkdir()
            os.symlink(target, d / "stats")
        out = tmp / "out"
        print(f"\n== {n_subjects} subjects x {len(list(target.glob('*.stats')))} stats files, "
              f"--jobs {jobs} (cpu count {os.cpu_count()}) ==")
        t0 = time.perf_counter()
        dirs = cli.find_subject_dirs([subj])
        t1 = time.perf_counter()
        long, glob, skipped = cli.aggregate(dirs, jobs=jobs)
        t2 = time.perf_counter()
        print(f"parse+tables {t2 - t1:6.2f} s", flush=True)
        cli.write_outputs(out, long, glob, skipped, long_tsv=False)
        t3 = time.perf_counter()
        write_long_tsv(out / f"{cli.LONG_NAME}.tsv", long)
        t4 = time.perf_counter()
        sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
        n_wide = len(list((out / "wide").glob("*.tsv")))
        print(f"discover {t1 - t0:6.2f} s | parse+tables {t2 - t1:6.2f} s | write parquet + "
              f"global TSV + wide TSVs {t3 - t2:6.2f} s | total {t3 - t0:6.2f} s "
              f"(= neurosmk-stats --no-long-tsv)")
        print(f"long TSV {t4 - t3:6.2f} s | total with long TSV {t4 - t0:6.2f} s "
              f"(= neurosmk-stats default)")
        print(f"long rows {len(long):,}, global rows {len(glob):,}, skipped (curv) "
              f"{len(skipped):,}, wide tables {n_wide}")
        for k, v in sorted(sizes.items()):
            print(f"  {k:40s} {v / 1e6:10.1f} MB")
        print(f"goal < 60 s: without long TSV {'met' if t3 - t0 < 60 else 'NOT met'}, "
              f"with long TSV {'met' if t4 - t0 < 60 else 'NOT met'}")
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=10000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--skip-files", action="store_true", help="skip the per-file benchmark")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    if not a.skip_files:
        bench_files(a.repeat)
    if a.subjects > 0:
        bench_group(a.subjects, a.jobs, a.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
