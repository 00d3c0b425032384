"""Where Snakemake's cost of neurosmk's DAG goes: the mirror of bench_dag.py (neurosmk's rules,
jobs and files per job, no-op jobs) with one kind of declaration taken away at a time, against
the bare Snakefile with as many one-output jobs, interleaved, the median of `--repeats` rounds.

    .venv/bin/python benchmarks/bench_dag_parts.py [N] [--repeats 3]

Rows, each a mirror of the row above it with less: all of it; without `benchmark:`; without
`log:` either; with `shell:` instead of `script:` jobs too. What is left in the last row is the
DAG itself: neurosmk's input and output files and the edges between its jobs. Same real-size
images and config as bench_dag.py (validation on; the neurosmk dry run that writes the mirror is
not timed).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dag as b  # noqa: E402


def _less(dag: dict, *, bench=True, log=True, script=True) -> dict:
    dag = json.loads(json.dumps(dag))
    for r in dag["rules"].values():
        r["benchmark"] = r["benchmark"] if bench else None
        r["log"] = r["log"] if log else []
        r["script"] = r["script"] and script
    return dag


VARIANTS = {
    "mirror: all of neurosmk's declarations": {},
    "  without benchmark:": {"bench": False},
    "  without benchmark: and log:": {"bench": False, "log": False},
    "  ... and shell: instead of script: jobs": {"bench": False, "log": False, "script": False},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    files = b.real_size_images()
    with tempfile.TemporaryDirectory(dir=b.WORK) as td:
        td = Path(td)
        cmd = b.neurosmk_dataset(td, args.n, files)
        dag = b.dump_dag(cmd, td, td / "dag.json")
        counts = {k: len(v) for k, v in dag["inputs"].items()}
        jobs = sum(counts.values())
        n_in = sum(len(f) for r in dag["inputs"].values() for f in r.values())
        n_out = sum(len(dag["rules"][k]["output"]) * c for k, c in counts.items())
        print(
            f"{args.n} subjects, {jobs} jobs of {len(counts)} rules: {n_in / jobs:.1f} input files and "
            f"{n_out / jobs:.1f} output files per job, plus a log and a benchmark file",
            flush=True,
        )
        dirs = {"bare Snakefile, one output per job": (td / "bare", b.write_bare(td / "bare", jobs))}
        for i, (name, kw) in enumerate(VARIANTS.items()):
            less, less_json = _less(dag, **kw), td / f"v{i}.json"
            less_json.write_text(json.dumps(less))
            b.write_mirror(td / f"v{i}", less, less_json)
            dirs[name] = (td / f"v{i}", b.DRY)
        wall = {k: [] for k in dirs}
        cpu = {k: [] for k in dirs}
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for name, (d, c) in dirs.items():
                w, cp, j = b.timed(b.SNAKEMAKE + c, d)
                assert j == jobs, (name, j, jobs)
                wall[name].append(w)
                cpu[name].append(cp)
        base_w = statistics.median(wall[next(iter(dirs))])
        base_c = statistics.median(cpu[next(iter(dirs))])
        print(f"{'dry run (median of ' + str(args.repeats) + ')':<44}{'wall s':>9}{'ratio':>7}{'CPU s':>9}{'ratio':>7}")
        for name in dirs:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"{name:<44}{w:>9.2f}{w / base_w:>7.2f}{c:>9.2f}{c / base_c:>7.2f}")
        print(
            f"{time.perf_counter() - t0:.0f} s in all; load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end"
        )


if __name__ == "__main__":
    main()
