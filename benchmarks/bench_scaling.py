#!/usr/bin/env python
"""Scaling of the DWI part of the demo with N subjects: wall time against the ideal.

    python benchmarks/bench_scaling.py --subjects 4 --cores 1 2 [--slurm] [--crop 0]

Builds a temporary BIDS dataset with N copies of demo sub-02 (DWI only; by default cropped to
its central 40x40x20 voxels so a run takes minutes, --crop 0 keeps the full 72x72x36), then
runs the DWI stages (anat off) with --profile profiles/laptop at each --cores value, and with
--slurm also through profiles/slurm on the cluster of scripts/slurm_local.sh (must be
running). For each run it prints the wall time, the summed job time from the rules'
benchmark files (column `s`), the ideal sum/cores, and the efficiency ideal/wall.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


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


def job_seconds(out: Path) -> tuple[float, int]:
    total, n = 0.0, 0
    for f in out.glob("benchmarks/**/*.tsv"):
        with open(f) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                total += float(row["s"])
                n += 1
    return total, n


def run(label: str, work: Path, bids: Path, profile: str, extra: list[str], cores: int, timeout: int):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    out = work / f"out-{label}"
    cfg.update(bids_dir=str(bids), output_dir=str(out), freesurfer_dir=None,
               steps={"anat": False, "dwi": True, "freesurfer_stats": False})
    # dipy's gibbs_removal with num_processes>1 starts a process pool that was measured here
    # to take minutes instead of seconds (see report); keep it in-process.
    cfg["dwi"]["degibbs"]["threads"] = 1
    wd = work / f"wd-{label}"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
           "--profile", str(REPO / "profiles" / profile), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{label} failed:\n{proc.stderr[-4000:]}")
    busy, njobs = job_seconds(out)
    ideal = busy / cores
    print(f"{label:<12} cores={cores:<2} jobs={njobs:<3} wall={wall:7.1f} s  sum(job s)={busy:7.1f}  "
          f"ideal={ideal:7.1f} s  efficiency={ideal / wall:5.0%}  overhead/job={(wall - ideal) / njobs:5.1f} s",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--crop", type=int, default=40, help="in-plane crop size (0: full image)")
    ap.add_argument("--slurm", action="store_true", help="also run through profiles/slurm")
    ap.add_argument("--timeout", type=int, default=1800)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="neurosmk-bench-") as tmp:
        work = Path(tmp)
        bids = work / "bids"
        bids.mkdir()
        make_bids(bids, a.subjects, a.crop)
        print(f"{a.subjects} subjects (DWI of demo sub-02, crop {a.crop or 'none'}), machine: {os.cpu_count()} CPUs")
        for c in a.cores:
            run(f"laptop-c{c}", work, bids, "laptop", ["--cores", str(c)], c, a.timeout)
        if a.slurm:
            conf = os.environ.get("SLURM_CONF", "/tmp/neurosmk-slurm/slurm.conf")
            os.environ["SLURM_CONF"] = conf
            ncpu = max(a.cores)
            run("slurm", work, bids, "slurm", ["--slurm-logdir", str(work / "slurm_logs")], ncpu, a.timeout)


if __name__ == "__main__":
    main()
