r"""Benchmark neurosmk.fsstats, side by side with baselines, in one run.

1. Per-file time (CPU seconds, median of --repeat) on every fixture stats file:
   neurosmk parse only | parse + tidy long DataFrame (``ParsedStats.to_frame``, 10 columns) |
   parse + the per-structure table DataFrame freesurfer-stats returns (``table_frame``) |
   naive ``pandas.read_csv(comment='#', sep=r'\s+', header=None)`` | ``freesurfer-stats==1.2.1``
   (cortical parcellation files only; run in a throw-away venv under /tmp because it needs
   pandas<2; skipped with the reason if it cannot be installed).  CPU time, not wall time, so
   other processes on a shared machine disturb the figures less.
2. N subjects (default 10,000; each a folder whose ``stats`` is a symlink to the FreeSurfer
   7.4.1 fixture subject's, in a temporary folder removed afterwards) aggregated end to end by
   the ``neurosmk-stats`` command (a subprocess, ``--jobs 2``): wall and CPU seconds, with and
   without the long TSV, and the output sizes.

    PYTHONPATH=src python benchmarks/bench_fsstats.py [--subjects N] [--jobs 2] [--repeat 50]
                                                      [--long-tsv both|yes|no] [--skip-files]
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

from neurosmk.fsstats.parser import parse_stats_file  # noqa: E402

FIX = ROOT / "demo" / "freesurfer"
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
        t = time.process_time(); s = CorticalParcellationStats.read(f)
        s.structural_measurements; s.whole_brain_measurements
        ts.append(time.process_time() - t)
    out[f] = statistics.median(ts)
print(json.dumps(out))
"""


def _time(fn, repeat):
    """Median CPU seconds of ``fn()`` (each sample times a batch of calls, so the clock's
    resolution does not matter)."""
    fn()
    batch = 10
    ts = []
    for _ in range(repeat):
        t = time.process_time()
        for _ in range(batch):
            fn()
        ts.append((time.process_time() - t) / batch)
    return statistics.median(ts)


def _fsstats_times(files, repeat):
    """Median CPU seconds per file for freesurfer-stats 1.2.1, or (None, reason)."""
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
                        str(repeat * 10)], capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"freesurfer-stats run failed: {r.stderr.strip()[-300:]}"
    return json.loads(r.stdout), ""


def _is_cortical(f: Path) -> bool:
    return ".aparc" in f.name or "BA_exvivo" in f.name


def _ms(t):
    """Seconds as milliseconds in an 8-wide column, '-' when not measured."""
    return f"{t * 1e3:8.3f}" if t else f"{'-':>8s}"


def bench_files(repeat: int) -> None:
    files = sorted(FIX.glob("*/stats/*.stats"))
    fs, why = _fsstats_times([f for f in files if _is_cortical(f)], repeat)
    print(f"\n== per-file CPU time, median of {repeat} x 10 calls (ms); speed-up = freesurfer-"
          "stats / ours ==")
    hdr = (f"{'file':40s} {'parse':>7s} {'+tidy df':>8s} {'+tbl df':>8s} {'read_csv':>8s} "
           f"{'fs-stats':>8s} {'x parse':>7s} {'x tidy':>7s} {'x tbl':>7s}")
    print(hdr)
    print("-" * len(hdr))
    sp = {"parse": [], "tidy": [], "tbl": []}
    for f in files:
        p = parse_stats_file(f)
        t_ns = _time(lambda: parse_stats_file(f, subject="s"), repeat)
        t_df = _time(lambda: parse_stats_file(f, subject="s").to_frame(), repeat)
        t_tb = (_time(lambda: parse_stats_file(f, subject="s").table_frame(), repeat)
                if p.values.ndim == 2 else None)
        try:
            t_pd = _time(lambda: pd.read_csv(f, comment="#", sep=r"\s+", header=None), repeat)
        except Exception:  # e.g. curv.stats, brainvol.stats: not a whitespace table
            t_pd = None
        t_fs = fs.get(str(f)) if fs else None
        ratios = []
        for key, t in (("parse", t_ns), ("tidy", t_df), ("tbl", t_tb)):
            if t_fs and t:
                sp[key].append(t_fs / t)
                ratios.append(f"{t_fs / t:6.1f}x")
            else:
                ratios.append(f"{'-':>7s}")
        print(f"{f.parent.parent.name[:15] + '/' + f.name:40s} {t_ns * 1e3:7.3f} {_ms(t_df)} "
              f"{_ms(t_tb)} {_ms(t_pd)} {_ms(t_fs)} {' '.join(ratios)}")
    if fs:
        for key, label in (("parse", "parse only"), ("tidy", "parse + tidy long DataFrame"),
                           ("tbl", "parse + per-structure DataFrame (what fs-stats returns)")):
            v = sp[key]
            print(f"speed-up vs freesurfer-stats 1.2.1, {label}: min {min(v):.1f}x, median "
                  f"{statistics.median(v):.1f}x (goal >= 10x: "
                  f"{'met' if min(v) >= 10 else 'NOT met'})")
    else:
        print(f"freesurfer-stats 1.2.1 skipped: {why}")


def _run_cli(args):
    """Run neurosmk-stats in a subprocess -> (wall s, CPU s of it and its workers, rc, output)."""
    import resource

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "neurosmk.fsstats.cli", *map(str, args)],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.returncode, (r.stdout + r.stderr).strip()


def bench_group(n_subjects: int, jobs: int, long_tsv: str, keep: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fsstats_bench_"))
    try:
        subj = tmp / "subjects"
        subj.mkdir()
        target = FS7_SUBJECT.resolve() / "stats"
        for i in range(n_subjects):
            d = subj / f"sub-{i:05d}"
            d.mkdir()
            os.symlink(target, d / "stats")
        n_files = len(list(target.glob("*.stats")))
        print(f"\n== {n_subjects} subjects x {n_files} stats files = {n_subjects * n_files:,} "
              f"files, neurosmk-stats --jobs {jobs} (cpu count {os.cpu_count()}) ==")
        variants = {"yes": [("default (long TSV + Parquet)", [])],
                    "no": [("--no-long-tsv (Parquet only)", ["--no-long-tsv"])]}
        runs = (variants["no"] + variants["yes"]) if long_tsv == "both" else variants[long_tsv]
        for label, extra in runs:
            out = tmp / "out"
            shutil.rmtree(out, ignore_errors=True)
            wall, cpu, rc, msg = _run_cli([subj, "--output-dir", out, "--jobs", jobs, "--timing",
                                           *extra])
            if rc != 0:
                print(f"{label}: FAILED rc={rc}: {msg[-500:]}")
                continue
            print(f"{label:32s} wall {wall:7.1f} s | CPU {cpu:7.1f} s | goal < 60 s wall: "
                  f"{'met' if wall < 60 else 'NOT met'}")
            print("   " + next((x for x in msg.splitlines() if "subject(s)" in x), ""))
            for line in msg.splitlines():
                if "timing:" in line:
                    print("   " + line.split("timing: ", 1)[1])
            sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
            wide = list((out / "wide").glob("*.tsv"))
            sizes[f"wide/*.tsv ({len(wide)} files)"] = sum(p.stat().st_size for p in wide)
            print("   " + " | ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in sorted(sizes.items())))
            shutil.rmtree(out, ignore_errors=True)
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
    ap.add_argument("--long-tsv", choices=["both", "yes", "no"], default="both",
                    help="group run with the long TSV, without it (--no-long-tsv), or both")
    ap.add_argument("--skip-files", action="store_true", help="skip the per-file benchmark")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    if not a.skip_files:
        bench_files(a.repeat)
    if a.subjects > 0:
        bench_group(a.subjects, a.jobs, a.long_tsv, a.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
