"""DAG construction + dry run of N subjects (default 1,000) through the real neurosmk rules, with
input validation ON and real-size images, side by side with a bare Snakefile with the same
number of trivial jobs.

    .venv/bin/python benchmarks/bench_dag.py [N] [--profile FILE]

Every subject gets a full-resolution T1w (192x256x256 int16, the demo's) and DWI (112x112x70x100
int16, 100 directions + 2 b=0) as symlinks to one pair of files, generated once under
benchmarks/_work/ (gitignored), with its own .bval/.bvec text. The neurosmk dry run is timed
twice: first and again (a dry run writes nothing into output_dir, so both read every header);
the bare Snakefile twice as well, and once with `script:` jobs (Snakemake's own cost of reading
the script of every script job). `--quick` runs the bare Snakefile once and skips the script
reference (for 10,000 subjects). Ratios are to the bare run beside it, in wall and CPU time (the
CPU time is the steadier figure on a shared machine). `--profile FILE` writes a cProfile of
the second neurosmk dry run (read it with `python -m pstats FILE`).
"""

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / "_work"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
T1W_SHAPE = (192, 256, 256)
DWI_SHAPE = (112, 112, 70, 102)  # 100 directions and 2 b=0

BARE = """
N = int(config["njobs"])
rule all:
    input: expand("out/{i}.txt", i=range(N))
rule trivial:
    output: "out/{i}.txt"
    shell: "touch {output}"
"""
# the same with a `script:` rule: Snakemake's own per-job cost of script jobs (it reads the script
# source of every job, even in a dry run), which neurosmk's Python rules pay too
BARE_SCRIPT = BARE.replace('shell: "touch {output}"', 'script: "noop.py"')


def real_size_images() -> dict:
    """One full-size T1w and DWI (+ gradient table), made once in benchmarks/_work/."""
    import nibabel as nib
    import numpy as np

    WORK.mkdir(exist_ok=True)
    t1w, dwi = WORK / "T1w.nii.gz", WORK / "dwi.nii.gz"
    bval, bvec = WORK / "dwi.bval", WORK / "dwi.bvec"
    if not t1w.exists():
        demo = REPO / "demo" / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
        img = nib.load(str(demo))
        assert img.shape == T1W_SHAPE and img.get_data_dtype() == np.int16
        shutil.copy(demo, t1w)
    if not dwi.exists():
        rng = np.random.default_rng(0)
        nd = DWI_SHAPE[3] - 2
        v = rng.normal(size=(3, nd))
        v /= np.linalg.norm(v, axis=0)
        bvals = np.r_[0, np.full(nd // 2, 1000), 0, np.full(nd - nd // 2, 2000)]
        vecs = np.hstack([np.zeros((3, 1)), v[:, : nd // 2], np.zeros((3, 1)), v[:, nd // 2:]])
        # smooth-ish signal: compresses like a real scan, not like noise
        x = np.linspace(-1, 1, DWI_SHAPE[0])[:, None, None]
        base = (1000 * np.exp(-3 * (x ** 2 + x.transpose(1, 0, 2) ** 2))).astype(np.float32)
        base = np.broadcast_to(base, DWI_SHAPE[:3])
        data = np.empty(DWI_SHAPE, np.int16)
        for i, b in enumerate(bvals):
            data[..., i] = base * np.exp(-b * 0.0007) + rng.integers(0, 20, DWI_SHAPE[:3])
        aff = np.diag([2.0, 2.0, 2.0, 1.0])
        tmp = WORK / ".dwi.tmp.nii.gz"
        nib.Nifti1Image(data, aff).to_filename(str(tmp))
        tmp.rename(dwi)
        bval.write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
        bvec.write_text("\n".join(" ".join(f"{x:.6f}" for x in row) for row in vecs) + "\n")
    return {"t1w": t1w, "dwi": dwi, "bval": bval, "bvec": bvec}


def make_bids(root: Path, n: int, files: dict) -> None:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "bench", "BIDSVersion": "1.9.0"}\n')
    for i in range(n):
        s = f"sub-{i:05d}"
        (root / s / "anat").mkdir(parents=True)
        (root / s / "dwi").mkdir()
        (root / s / "anat" / f"{s}_T1w.nii.gz").symlink_to(files["t1w"])
        (root / s / "dwi" / f"{s}_dwi.nii.gz").symlink_to(files["dwi"])
        # the gradient table as each subject's own text files (the checks read them)
        shutil.copy(files["bval"], root / s / "dwi" / f"{s}_dwi.bval")
        shutil.copy(files["bvec"], root / s / "dwi" / f"{s}_dwi.bvec")


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(cmd, cwd):
    """(wall seconds, CPU seconds of the child, job count). CPU time is the steadier figure on a
    shared machine; the ratios use wall time, as a user waits it."""
    t, c = time.perf_counter(), _child_cpu()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt, dc = time.perf_counter() - t, _child_cpu() - c
    if p.returncode != 0:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    m = re.search(r"^total\s+(\d+)", p.stdout, re.M)
    jobs = int(m.group(1)) if m else None
    # progress, so that a run stopped early still shows what it measured
    print(f"  {' '.join(str(c) for c in cmd[2:4])}... in {Path(cwd).name}: {dt:.1f} s wall, {dc:.1f} s CPU, "
          f"{jobs} jobs, load {os.getloadavg()[0]:.1f}", flush=True)
    return dt, dc, jobs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1000)
    ap.add_argument("--profile", help="write a cProfile of the second neurosmk dry run here")
    ap.add_argument("--quick", action="store_true",
                    help="one bare run and no script-rule reference (3 dry runs instead of 5; for 10,000 subjects)")
    args = ap.parse_args()
    n = args.n
    t = time.perf_counter()
    files = real_size_images()
    with tempfile.TemporaryDirectory(dir=WORK) as td:
        td = Path(td)
        make_bids(td / "bids", n, files)
        print(f"set-up: {n} subjects (real-size images, symlinked) in {time.perf_counter() - t:.1f} s", flush=True)
        cfg = td / "config.yaml"
        cfg.write_text(f"bids_dir: {td / 'bids'}\noutput_dir: {td / 'out'}\nvalidate_inputs: true\n"
                       "freesurfer_dir: null\n")
        load = os.getloadavg()[0]
        cmd = ["-s", str(REPO / "Snakefile"), "-n", "--cores", "2", "--quiet", "rules", "--configfile", str(cfg)]
        t_first, c_first, jobs = timed(SNAKEMAKE + cmd, td)
        prof = ["-m", "cProfile", "-o", str(Path(args.profile).resolve())] if args.profile else []
        t_again, c_again, jobs2 = timed([sys.executable, *prof, "-m", "snakemake", *cmd], td)
        assert jobs == jobs2, (jobs, jobs2)
        (td / "bare").mkdir()
        (td / "bare" / "Snakefile").write_text(BARE)
        bare = ["-n", "--cores", "2", "--quiet", "rules", "--config", f"njobs={jobs - 1}"]
        t_bare, c_bare, jobs_bare = timed(SNAKEMAKE + bare, td / "bare")
        rows = [("bare Snakefile, trivial jobs (first)", jobs_bare, t_bare, c_bare, t_bare, c_bare)]
        t_bare2, c_bare2 = t_bare, c_bare
        if not args.quick:
            t_bare2, c_bare2, _ = timed(SNAKEMAKE + bare, td / "bare")
            (td / "bare_script").mkdir()
            (td / "bare_script" / "Snakefile").write_text(BARE_SCRIPT)
            (td / "bare_script" / "noop.py").write_text("open(snakemake.output[0], 'w').close()\n")
            t_bs, c_bs, _ = timed(SNAKEMAKE + bare, td / "bare_script")
            rows += [("bare Snakefile, trivial jobs (again)", jobs_bare, t_bare2, c_bare2, t_bare, c_bare),
                     ("bare Snakefile, script: jobs (reference)", jobs_bare, t_bs, c_bs, t_bare, c_bare)]
    rows += [(f"neurosmk, {n} subjects, first run", jobs, t_first, c_first, t_bare, c_bare),
             (f"neurosmk, {n} subjects, again", jobs, t_again, c_again, t_bare2, c_bare2)]
    print(f"{'dry run':<40}{'jobs':>7}{'wall s':>9}{'ratio':>7}{'CPU s':>9}{'ratio':>7}")
    for name, j, w, c, wb, cb in rows:
        print(f"{name:<40}{j:>7}{w:>9.2f}{w / wb:>7.2f}{c:>9.2f}{c / cb:>7.2f}")
    worst = max(t_first / t_bare, t_again / t_bare2)
    worst_cpu = max(c_first / c_bare, c_again / c_bare2)
    print(f"validation on, real-size images{' (second run under cProfile)' if args.profile else ''}; "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; worst ratio "
          f"{worst:.2f} wall, {worst_cpu:.2f} CPU (goal <= 1.5: {'met' if worst <= 1.5 else 'NOT met'})")

if __name__ == "__main__":
    main()
