#!/usr/bin/env python
"""Scaling of the DWI part of the demo with N subjects: wall time against the ideal.

    python benchmarks/bench_scaling.py --subjects 4 --cores 1 2 [--slurm] [--crop 40]

Builds a temporary BIDS dataset with N copies of demo sub-02 (DWI only; by default cropped to
its central 40x40x20 voxels so a leg takes a minute or two, --crop 0 keeps the full 72x72x36),
then runs the DWI stages (anat off) through --profile profiles/laptop at each --cores value and,
with --slurm, through --profile profiles/slurm on a local one-node cluster that the benchmark
starts for itself (scripts/slurm_local.sh with a state dir inside its temporary dir; stopped at
the end; needs root and slurm-wlm/munge). Two SLURM legs, side by side:
  slurm-1job  the profile with grouping switched off (--groups none=none): one SLURM job per
              Snakemake job, as before grouping was the default;
  slurm-grp   the profile as shipped: a subject's DWI chain is one group job, group-components
              packs --group-components (default: the profile's) chains per SLURM job, and the
              group tables + methods are one last job.
For each SLURM leg `sbatch` is the number of SLURM jobs submitted and `sb/subj` that per subject.
--compare CHECKOUT runs each SLURM leg a second time (label base-...) with that checkout's
Snakefile, profile and src/, right after this checkout's, on the same data and cluster.

How "ideal" is computed, per leg:
  job s      each job's own wall time, from the rule's `benchmark:` file (column `s`; it covers
             the job's process: Python start-up, imports, I/O and compute);
  sum        the sum of job s over all jobs of the leg;
  ideal      sum / cores: every core busy all the time, no scheduler cost. For SLURM, cores =
             the CPUs of the cluster's nodes (sinfo);
  ideal(1c)  the same with the 1-core leg's sum: a perfect speed-up of the serial run. ideal
             and ideal(1c) differ when jobs run slower side by side (memory bandwidth, a busy
             machine), which no scheduler setting can recover;
  bound      max(ideal, critical path): the longest subject chain plus the jobs after it
             (group table) cannot be shortened by more cores;
  start-up   snakemake's own start (parse, config validation, BIDS index, DAG), timed with a
             dry run of the same leg; it is serial and counted in wall;
  eff        ideal / wall (the goal: >= 85 % on the laptop, >= 70 % through SLURM);
             eff-st = ideal / (wall - start-up), the scheduling efficiency once snakemake has
             started; ovh/job = (wall - ideal) / jobs.
A per-rule table shows each rule's declared threads against the cores its jobs used
(cpu_time / s): a rule that reserves 2 threads but uses 1 wastes a core on a small machine.
Timings on a shared machine are noisy: compare legs of one invocation only.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM_LOCAL = REPO / "scripts" / "slurm_local.sh"
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def make_bids(dst: Path, n: int, crop: int) -> None:
    import nibabel as nib
    import numpy as np

    src = REPO / "demo" / "bids"
    shutil.copy(src / "dataset_description.json", dst / "dataset_description.json")
    img = nib.load(src / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    if crop:
        c = [s // 2 for s in img.shape[:3]]
        half = [crop // 2, crop // 2, crop // 4]
        sl = tuple(slice(ci - h, ci + h) for ci, h in zip(c, half))
        aff = img.affine.copy()
        aff[:3, 3] = img.affine[:3, :3] @ np.array([s.start for s in sl]) + img.affine[:3, 3]
        img = nib.Nifti1Image(np.asarray(img.dataobj)[sl], aff, img.header)
    rows = ["participant_id"]
    for i in range(1, n + 1):
        sub = f"sub-{i:02d}"
        d = dst / sub / "dwi"
        d.mkdir(parents=True)
        img.to_filename(d / f"{sub}_dwi.nii.gz")
        for ext in ("bval", "bvec"):
            shutil.copy(src / "sub-02" / "dwi" / f"sub-02_dwi.{ext}", d / f"{sub}_dwi.{ext}")
        rows.append(sub)
    (dst / "participants.tsv").write_text("\n".join(rows) + "\n")


def read_jobs(out: Path) -> list[dict]:
    """One row per job from the benchmark files: rule, subject (or None), s, cpu_time."""
    jobs = []
    # neurosmk.paths.bench_path: logs/{rule}/{visit}.benchmark.tsv, logs/{rule}.benchmark.tsv
    for f in sorted(out.glob("logs/**/*.benchmark.tsv")):
        rel = f.relative_to(out / "logs")
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.name[:-len(".benchmark.tsv")]
        m = re.match(r"sub-([A-Za-z0-9]+)", f.name)
        with open(f) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                cpu = row.get("cpu_time", "")
                jobs.append({"rule": rule, "subject": m.group(1) if (m and len(rel.parts) > 1) else None,
                             "s": float(row["s"]), "cpu": float(cpu) if cpu not in ("", "NA") else float("nan")})
    return jobs


def critical_path(jobs: list[dict]) -> float:
    """Longest subject chain + the jobs without a subject that come after it (group tables).

    dataset_description also has no subject but runs beside the chains; it is the only
    subject-less job that is not downstream of them, so it is left out.
    """
    chain = defaultdict(float)
    for j in jobs:
        if j["subject"]:
            chain[j["subject"]] += j["s"]
    after = sum(j["s"] for j in jobs if not j["subject"] and j["rule"] != "dataset_description")
    return max(chain.values(), default=0.0) + after


def rule_threads(wd: Path, extra: list[str], env, repo: Path = REPO) -> dict[str, int]:
    """Threads per rule as snakemake will schedule them (dry-run job listing)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n", *extra]
    out = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=600).stdout
    threads = {}
    for block in re.split(r"\n(?=[ \t]*(?:local)?rule \w+:)", out):  # group jobs indent theirs
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        t = re.search(r"threads: (\d+)", block)
        if m:
            threads[m.group(1)] = int(t.group(1)) if t else 1
    return threads


def setup_leg(label: str, work: Path, bids: Path, repo: Path = REPO) -> tuple[Path, Path]:
    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    out = work / f"out-{label}"
    cfg.update(bids_dir=str(bids), output_dir=str(out), freesurfer_dir=None,
               steps={"anat": False, "dwi": True, "freesurfer_stats": False})
    wd = work / f"wd-{label}"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return wd, out


def run(label: str, work: Path, bids: Path, profile: str, extra: list[str], cores: int, timeout: int,
        serial_sum: float | None, n_subjects: int, env_extra: dict | None = None, repo: Path = REPO):
    wd, out = setup_leg(label, work, bids, repo)
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = str(repo / "src") + os.pathsep + env.get("PYTHONPATH", "")
    args = ["--profile", str(repo / "profiles" / profile), *extra]
    t0 = time.monotonic()
    threads = rule_threads(wd, args, env, repo)
    startup = time.monotonic() - t0
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{label} failed:\n{proc.stderr[-4000:]}")
    jobs = read_jobs(out)
    busy = sum(j["s"] for j in jobs)
    ideal = busy / cores
    bound = max(ideal, critical_path(jobs))
    ideal1 = f"{serial_sum / cores:7.1f}" if serial_sum else "      -"
    n_sbatch = len(SUBMITTED.findall(proc.stdout + proc.stderr))
    sb = f"{n_sbatch:>6} {n_sbatch / n_subjects:7.2f}" if "slurm" in profile else f"{'-':>6} {'-':>7}"
    print(f"{label:<15} {cores:>5} {len(jobs):>4} {wall:7.1f} {busy:7.1f} {ideal:7.1f} {ideal1} {bound:7.1f} "
          f"{startup:7.1f} {ideal / wall:5.0%} {ideal / max(wall - startup, 1e-9):5.0%} "
          f"{(wall - ideal) / max(len(jobs), 1):7.1f} {sb}", flush=True)
    return jobs, threads, busy


def per_rule(label: str, jobs: list[dict], threads: dict[str, int]) -> None:
    by = defaultdict(list)
    for j in jobs:
        by[j["rule"]].append(j)
    print(f"\n{label}: per rule   threads  jobs  mean s  cores used (cpu_time/s)")
    for rule, js in sorted(by.items(), key=lambda kv: -sum(j["s"] for j in kv[1])):
        s = sum(j["s"] for j in js)
        cpu = sum(j["cpu"] for j in js)
        used = f"{cpu / s:5.2f}" if s > 0 and cpu == cpu else "    -"
        print(f"  {rule:<22} {threads.get(rule, '?'):>7} {len(js):>5} {s / len(js):7.2f}  {used}")


def slurm_cores(env) -> int:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %c"], capture_output=True, text=True, timeout=30,
                         check=True, env=env).stdout
    nodes = {}
    for line in out.split("\n"):
        if line.strip():
            name, cpus = line.split()
            nodes[name] = int(cpus)
    return sum(nodes.values())


def slurm_env(state: Path) -> dict:
    """Start a cluster of our own in `state`; the exports its clients need."""
    proc = subprocess.run(["bash", str(SLURM_LOCAL), "start", str(state)], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        sys.exit(f"slurm_local.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    return {"SLURM_CONF": str(state / "slurm.conf"),
            "PATH": str(state / "bin") + os.pathsep + os.environ.get("PATH", "")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--cores", type=int, nargs="*", default=[1, 2],
                    help="laptop legs (cores each); none given: SLURM legs only")
    ap.add_argument("--crop", type=int, default=40, help="in-plane crop size (0: full image)")
    ap.add_argument("--slurm", action="store_true",
                    help="also run through profiles/slurm, ungrouped and grouped, on a local cluster")
    ap.add_argument("--group-components", nargs="*", default=[],
                    help="override the profile's group-components in the grouped leg, e.g. dwi=2")
    ap.add_argument("--compare", type=Path, metavar="CHECKOUT",
                    help="also run each SLURM leg with this checkout's Snakefile, profile and src/ (e.g. a "
                         "worktree of the commit before a change), interleaved, for a before/after in one run")
    ap.add_argument("--timeout", type=int, default=1800)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="neurosmk-bench-") as tmp:
        work = Path(tmp)
        bids = work / "bids"
        bids.mkdir()
        make_bids(bids, a.subjects, a.crop)
        print(f"{a.subjects} subjects (DWI of demo sub-02, crop {a.crop or 'none'}), machine: {os.cpu_count()} CPUs")
        print(f"{'leg':<15} {'cores':>5} {'jobs':>4} {'wall':>7} {'sum':>7} {'ideal':>7} {'ideal1c':>7} "
              f"{'bound':>7} {'startup':>7} {'eff':>5} {'eff-st':>5} {'ovh/job':>7} {'sbatch':>6} {'sb/subj':>7}"
              "   (seconds)")
        serial_sum, tables = None, []
        n = a.subjects
        for c in sorted(a.cores):
            jobs, threads, busy = run(f"laptop-c{c}", work, bids, "laptop", ["--cores", str(c)], c, a.timeout,
                                      serial_sum, n)
            if c == 1:
                serial_sum = busy
            tables.append((f"laptop-c{c}", jobs, threads))
        if a.slurm:
            state = work / "slurm-state"
            try:
                env = slurm_env(state)
                ncpu = slurm_cores(dict(os.environ, **env))
                gc = ["--group-components", *a.group_components] if a.group_components else []
                checkouts = [("", REPO)] + ([("base-", a.compare.resolve())] if a.compare else [])
                for leg, extra in (("slurm-1job", ["--groups", "none=none"]), ("slurm-grp", gc)):
                    for prefix, repo in checkouts:
                        label = prefix + leg
                        jobs, threads, _ = run(label, work, bids, "slurm",
                                               ["--slurm-logdir", str(work / f"slurm_logs_{label}"), *extra],
                                               ncpu, a.timeout, serial_sum, n, env, repo)
                        tables.append((label, jobs, threads))
            finally:
                subprocess.run(["bash", str(SLURM_LOCAL), "stop", str(state)], capture_output=True, timeout=120)
        for label, jobs, threads in tables:
            per_rule(label, jobs, threads)


if __name__ == "__main__":
    main()
