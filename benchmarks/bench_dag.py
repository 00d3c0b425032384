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
DRY = ["-n", "--cores", "2", "--quiet", "rules"]  # every timed dry run
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

# The mirror: Snakemake's own cost of neurosmk's DAG. DUMP_HOOK runs neurosmk's dry run once more
# (untimed) and writes every rule's output/log/benchmark patterns (wildcard constraints inline)
# and every job's input files to JSON; mirror_snakefile() turns that into a Snakefile with the
# same rules, the same jobs and the same files per job, whose inputs come from a dict lookup and
# whose jobs are no-ops (`script:` where neurosmk's rule is a script, else `shell:`): no config
# schema, BIDS index, header checks, provenance or input-function logic of neurosmk's own.
# A job's inputs are keyed by its wildcards, in both (JOB_KEY: an expression of `wc`).
JOB_KEY = '"|".join(f"{k}={v}" for k, v in sorted(wc.items()))'
DUMP_HOOK = r"""
import json, sys
import snakemake.api
from snakemake import workflow as wfm
out_json = sys.argv.pop(1)
_orig = wfm.Workflow._build_dag
def _key(wc):
    return JOB_KEY
def _build_dag(self):
    res = _orig(self)
    rules, inputs = {}, {}
    for job in self.dag.jobs:
        r = job.rule
        if r.name not in rules:
            rules[r.name] = {"output": [str(o) for o in r.output], "log": [str(x) for x in r.log],
                             "benchmark": str(r.benchmark) if r.benchmark else None,
                             "script": r.script is not None}
        inputs.setdefault(r.name, {})[_key(job.wildcards)] = [str(f) for f in job.input]
    with open(out_json, "w") as f:
        json.dump({"rules": rules, "inputs": inputs}, f)
    return res
wfm.Workflow._build_dag = _build_dag
from snakemake.cli import main
sys.argv = ["snakemake"] + sys.argv[1:]
main()
""".replace("JOB_KEY", JOB_KEY)


def mirror_snakefile(dag: dict, dag_json: Path) -> str:
    """The Snakefile of the mirror (see DUMP_HOOK); `all` first, as in neurosmk."""
    lines = ["import json", f"D = json.load(open({str(dag_json)!r}))", "",
             "def _inputs(name):", '    table = D["inputs"][name]',
             f"    return lambda wc: table[{JOB_KEY}]", ""]
    for name in sorted(dag["rules"], key=lambda n: n != "all"):
        r = dag["rules"][name]
        lines.append(f"rule {name}:")
        if name == "all":
            lines.append('    input: D["inputs"]["all"][""]')
        else:
            lines.append(f"    input: _inputs({name!r})")
        if r["output"]:
            lines.append("    output: " + ", ".join(repr(o) for o in r["output"]))
        if r["log"]:
            lines.append("    log: " + ", ".join(repr(x) for x in r["log"]))
        if r["benchmark"]:
            lines.append(f"    benchmark: {r['benchmark']!r}")
        if name != "all":
            lines.append('    script: "noop.py"' if r["script"] else '    shell: "touch {output}"')
        lines.append("")
    return "\n".join(lines)


def write_mirror(d: Path, dag: dict, dag_json: Path) -> None:
    """The mirror of `dag` (its JSON at `dag_json`, read when the mirror runs) in folder `d`."""
    d.mkdir()
    (d / "Snakefile").write_text(mirror_snakefile(dag, dag_json))
    (d / "noop.py").write_text("open(snakemake.output[0], 'w').close()\n")


def write_bare(d: Path, jobs: int) -> list:
    """The bare Snakefile in folder `d`; the arguments of its dry run with `jobs` jobs."""
    d.mkdir()
    (d / "Snakefile").write_text(BARE)
    return [*DRY, "--config", f"njobs={jobs - 1}"]


def neurosmk_dataset(td: Path, n: int, files: dict) -> list:
    """n subjects of real-size images and a config (validation on) in `td`; the arguments of
    neurosmk's dry run on them."""
    make_bids(td / "bids", n, files)
    cfg = td / "config.yaml"
    cfg.write_text(f"bids_dir: {td / 'bids'}\noutput_dir: {td / 'out'}\nvalidate_inputs: true\nfreesurfer_dir: null\n")
    return ["-s", str(REPO / "Snakefile"), *DRY, "--configfile", str(cfg)]


def dump_dag(cmd: list, cwd: Path, out: Path) -> dict:
    """Run neurosmk's dry run `cmd` (untimed) under DUMP_HOOK; the DAG it wrote to `out`."""
    import json

    p = subprocess.run([sys.executable, "-c", DUMP_HOOK, str(out), *cmd], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    return json.loads(out.read_text())


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
    ap.add_argument("--no-mirror", action="store_true",
                    help="skip the mirror (a Snakefile with neurosmk's DAG and no-op jobs; one more untimed neurosmk "
                         "dry run to write it)")
    ap.add_argument("--quick", action="store_true",
                    help="one bare run and no script-rule reference (3 dry runs instead of 5; for 10,000 subjects)")
    args = ap.parse_args()
    n = args.n
    t = time.perf_counter()
    files = real_size_images()
    with tempfile.TemporaryDirectory(dir=WORK) as td:
        td = Path(td)
        cmd = neurosmk_dataset(td, n, files)
        print(f"set-up: {n} subjects (real-size images, symlinked) in {time.perf_counter() - t:.1f} s", flush=True)
        load = os.getloadavg()[0]
        t_first, c_first, jobs = timed(SNAKEMAKE + cmd, td)
        prof = ["-m", "cProfile", "-o", str(Path(args.profile).resolve())] if args.profile else []
        t_again, c_again, jobs2 = timed([sys.executable, *prof, "-m", "snakemake", *cmd], td)
        assert jobs == jobs2, (jobs, jobs2)
        bare = write_bare(td / "bare", jobs)
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
        mirror = None
        if not args.no_mirror:
            dag_json = td / "dag.json"
            write_mirror(td / "mirror", dump_dag(cmd, td, dag_json), dag_json)
            t_m, c_m, jobs_m = timed(SNAKEMAKE + DRY, td / "mirror")
            t_m2, c_m2, _ = timed(SNAKEMAKE + DRY, td / "mirror")
            assert jobs_m == jobs, (jobs_m, jobs)
            mirror = (min(t_m, t_m2), min(c_m, c_m2))
            rows += [("mirror: neurosmk's DAG, no-op jobs (first)", jobs_m, t_m, c_m, t_bare, c_bare),
                     ("mirror: neurosmk's DAG, no-op jobs (again)", jobs_m, t_m2, c_m2, t_bare2, c_bare2)]
    rows += [(f"neurosmk, {n} subjects, first run", jobs, t_first, c_first, t_bare, c_bare),
             (f"neurosmk, {n} subjects, again", jobs, t_again, c_again, t_bare2, c_bare2)]
    print(f"{'dry run':<44}{'jobs':>7}{'wall s':>9}{'ratio':>7}{'CPU s':>9}{'ratio':>7}")
    for name, j, w, c, wb, cb in rows:
        print(f"{name:<44}{j:>7}{w:>9.2f}{w / wb:>7.2f}{c:>9.2f}{c / cb:>7.2f}")
    worst = max(t_first / t_bare, t_again / t_bare2)
    worst_cpu = max(c_first / c_bare, c_again / c_bare2)
    print(f"validation on, real-size images{' (second run under cProfile)' if args.profile else ''}; "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; worst ratio "
          f"{worst:.2f} wall, {worst_cpu:.2f} CPU (goal <= 1.5: {'met' if worst <= 1.5 else 'NOT met'})")
    if mirror:
        tm, cm = mirror
        print(f"to the mirror (Snakemake's own cost of this DAG, the faster of its two runs): first "
              f"{t_first / tm:.2f} / again {t_again / tm:.2f} wall, {c_first / cm:.2f} / {c_again / cm:.2f} CPU; "
              f"the mirror is {tm / t_bare:.2f}x the bare Snakefile (wall)")

if __name__ == "__main__":
    main()
