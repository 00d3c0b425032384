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
        b.make_bids(td / "bids", args.n, files)
        cfg = td / "config.yaml"
        cfg.write_text(
            f"bids_dir: {td / 'bids'}\noutput_dir: {td / 'out'}\nvalidate_inputs: true\nfreesurfer_dir: null\n"
        )
        cmd = ["-s", str(b.REPO / "Snakefile"), "-n", "--cores", "2", "--quiet", "rules", "--configfile", str(cfg)]
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
        dirs = {}
        for i, (name, kw) in enumerate(VARIANTS.items()):
            d = td / f"v{i}"
            d.mkdir()
            (d / "dag.json").write_text(json.dumps(_less(dag, **kw)))
            (d / "Snakefile").write_text(b.mirror_snakefile(json.loads((d / "dag.json").read_text()), d / "dag.json"))
            (d / "noop.py").write_text("open(snakemake.output[0], 'w').close()\n")
            dirs[name] = (d, ["-n", "--cores", "2", "--quiet", "rules"])
        (td / "bare").mkdir()
        (td / "bare" / "Snakefile").write_text(b.BARE)
        dirs = {"bare Snakefile, one output per job": (td / "bare", ["-n", "--cores", "2", "--quiet", "rules",
                                                                    "--config", f"njobs={jobs - 1}"]), **dirs}
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
