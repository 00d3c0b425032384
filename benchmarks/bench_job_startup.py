#!/usr/bin/env python
"""Start-up of one cluster job when the dataset has N subjects (default 1,000).

    python benchmarks/bench_job_startup.py [--subjects 1000] [--repeats 3] [--profile]
        [--compare OTHER_CHECKOUT] [--main]

Under SLURM every job (and every job of a group job) is a fresh `snakemake --target-jobs ...
--mode remote` that re-reads the whole workflow. neurosmk's rules/common.smk then indexes only
the subjects of its target jobs and skips the checks the submitting snakemake did (config
schema, input headers; neurosmk.startup). This builds a synthetic BIDS dataset of N subjects
whose T1w and DWI (+ bval/bvec) are symlinks to one small image each and times, side by side:
  job        the command a SLURM job runs for one subject's dwi_tensor_dipy (dry run: the
             start-up only, no job run): --target-jobs ... --allowed-rules ... --mode remote;
  compare    (--compare DIR) the same command with DIR's Snakefile (e.g. a checkout of the
             commit before this change), for a before/after in one run (a checkout that checks
             input headers in jobs reads them all: dry runs do not fill the header cache);
  bare       the same snakemake invocation on a one-rule Snakefile: Python + Snakemake's own
             start-up, the floor no workflow can go below;
  job-bare   what the neurosmk workflow adds.
--main also times the submitting snakemake's dry run of all N subjects (minutes at 1,000).
--profile prints the top functions (cProfile, cumulative) of one job start-up.
Goal: job < 3 s at 1,000 subjects.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_bids(dst: Path, n: int) -> None:
    import nibabel as nib
    import numpy as np

    src = REPO / "demo" / "bids"
    shutil.copy(src / "dataset_description.json", dst / "dataset_description.json")
    proto = dst.parent / "_proto"  # outside the dataset
    proto.mkdir()
    dwi = nib.load(src / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    c = [s // 2 for s in dwi.shape[:3]]
    sl = (slice(c[0] - 12, c[0] + 12), slice(c[1] - 12, c[1] + 12), slice(c[2] - 6, c[2] + 6))
    nib.Nifti1Image(np.asarray(dwi.dataobj)[sl], dwi.affine, dwi.header).to_filename(proto / "dwi.nii.gz")
    t1 = nib.load(src / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    nib.Nifti1Image(np.asarray(t1.dataobj)[::4, ::4, ::4], t1.affine @ np.diag([4, 4, 4, 1]),
                    t1.header).to_filename(proto / "t1w.nii.gz")
    for ext in ("bval", "bvec"):
        shutil.copy(src / "sub-02" / "dwi" / f"sub-02_dwi.{ext}", proto / f"dwi.{ext}")
    rows = ["participant_id"]
    for i in range(1, n + 1):
        sub = f"sub-{i:04d}"
        (dst / sub / "anat").mkdir(parents=True)
        (dst / sub / "dwi").mkdir()
        os.symlink(proto / "t1w.nii.gz", dst / sub / "anat" / f"{sub}_T1w.nii.gz")
        for ext in ("nii.gz", "bval", "bvec"):
            os.symlink(proto / f"dwi.{ext}", dst / sub / "dwi" / f"{sub}_dwi.{ext}")
        rows.append(sub)
    (dst / "participants.tsv").write_text("\n".join(rows) + "\n")


def run(cmd, cwd, env, timeout=1800) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one job start-up, print the top")
    ap.add_argument("--compare", help="another checkout: time the same job with its Snakefile too")
    ap.add_argument("--main", action="store_true", help="also time the submitting snakemake's dry run")
    a = ap.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    smk = [sys.executable, "-m", "snakemake"]
    with tempfile.TemporaryDirectory(prefix="neurosmk-bench-startup-") as tmp:
        work = Path(tmp)
        bids = work / "bids"
        bids.mkdir()
        make_bids(bids, a.subjects)
        cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        cfg.update(bids_dir=str(bids), output_dir=str(work / "out"), freesurfer_dir=None,
                   steps={"anat": True, "dwi": True, "freesurfer_stats": False})
        wd = work / "wd"
        (wd / "config").mkdir(parents=True)
        (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        t_full = None
        if a.main:  # the submitting snakemake: full dry run (checks every input header)
            t_full = run(smk + ["-s", str(REPO / "Snakefile"), "-n", "--cores", "1", "--quiet"], wd, env)
        sub = "0001"
        job = smk + ["-s", str(REPO / "Snakefile"), "--target-jobs", f"dwi_tensor_dipy:subject={sub}",
                     "--allowed-rules", "dwi_tensor_dipy", "--cores", "1", "-n", "--quiet", "--mode", "remote",
                     "--nolock", "--ignore-incomplete"]
        bare_dir = work / "bare"
        bare_dir.mkdir()
        (bare_dir / "Snakefile").write_text("rule a:\n    output: 'a.txt'\n    shell: 'touch {output}'\n")
        bare = smk + ["-s", str(bare_dir / "Snakefile"), "--target-jobs", "a:", "--allowed-rules", "a", "--cores",
                      "1", "-n", "--quiet", "--mode", "remote", "--nolock", "--ignore-incomplete"]
        other = None
        if a.compare:
            other = job.copy()
            other[other.index("-s") + 1] = str(Path(a.compare).resolve() / "Snakefile")
        load = os.getloadavg()[0]
        # interleaved, so that a change of the machine's load hits every variant alike
        t_job, t_other, t_bare = [], [], []
        for _ in range(a.repeats):
            t_job.append(run(job, wd, env))
            if other:
                t_other.append(run(other, wd, env))
            t_bare.append(run(bare, bare_dir, env))
        mj, mb = statistics.median(t_job), statistics.median(t_bare)
        print(f"{a.subjects} subjects; load average at the start: {load:.1f}, at the end: {os.getloadavg()[0]:.1f}")
        if t_full is not None:
            print(f"submitting snakemake's dry run (all jobs, checks every input header): {t_full:.1f} s")
        print(f"{'':<28} {'median':>7} {'runs':>24}   (seconds)")
        print(f"{'job (one dwi_tensor_dipy)':<28} {mj:7.2f} {' '.join(f'{t:.2f}' for t in t_job):>24}")
        if other:
            mo = statistics.median(t_other)
            print(f"{'same job, --compare':<28} {mo:7.2f} {' '.join(f'{t:.2f}' for t in t_other):>24}"
                  f"   ({a.compare}; job/compare {mj / mo:.2f})")
        print(f"{'bare one-rule Snakefile':<28} {mb:7.2f} {' '.join(f'{t:.2f}' for t in t_bare):>24}")
        print(f"{'job - bare (neurosmk)':<28} {mj - mb:7.2f}      job/bare {mj / mb:.2f}; goal: job < 3 s")
        if a.profile:
            prof = work / "job.prof"
            run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "snakemake", *job[3:]], wd, env)
            import pstats

            st = pstats.Stats(str(prof))
            st.sort_stats("cumulative").print_stats(
                r"neurosmk|snakemake/(dag|workflow|api)\.py|common\.smk|Snakefile", 25)


if __name__ == "__main__":
    main()
