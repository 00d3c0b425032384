"""Faults (issue #15): kill -9 of the Snakemake process and of one job mid-write, a full disk,
two runs at once on one output folder, an output deleted after a complete run.

tests/test_rerun.py kills a whole run (its process group) while the first job writes; these
tests cover the other faults. All run the DWI-only pipeline on a 6-slice slab of the demo DWI
(deterministic, so outputs compare exactly with a clean run's) and start from a copy of one
clean run (``output_dir: out`` relative to the working folder, so a copy of the folder, with its
``.snakemake`` records, is a complete run too) with only the later jobs left to do.

Each case checks: a failing run exits non-zero with a message naming the cause; no output file
is corrupt yet marked complete (every NIfTI/TSV/JSON/Parquet under the output folder loads, or
Snakemake's incomplete markers or ``--summary`` say it will be re-made); the re-run
(``--unlock``, ``--rerun-incomplete`` where needed) finishes with outputs equal to the clean
run's (NIfTI compared decompressed, everything else byte for byte), no temporary files left.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, dwi_slab_bids, job_counts, run_snakemake, write_config
from .test_rerun import compare_outputs, downstream, output_files, parse_jobs, smk_batch

pytestmark = pytest.mark.slow

CFG = ["--configfile", "config.yaml"]
TENSOR_MAPS = [f"sub-02_model-DTI_param-{p}_dwimap" for p in ("FA", "MD", "AD", "RD", "RGB", "V1")]
LOCK_MESSAGE = "Directory cannot be locked"  # Snakemake's own (LockException)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("faults")
    bids = dwi_slab_bids(root, z0=14, nz=6)
    work = root / "clean"
    work.mkdir()
    write_config(work / "config.yaml", bids_dir=str(bids), output_dir="out",
                 **{"steps.anat": False, "steps.freesurfer_stats": False})
    run_snakemake(["--cores", "2", *CFG], cwd=work)
    return {"root": root, "work": work, "out": work / "out"}


def copy_of(clean: dict, name: str) -> Path:
    """A copy of the clean run's working folder (mtimes kept): Snakemake sees a complete run."""
    work = clean["root"] / name
    shutil.copytree(clean["work"], work, symlinks=True)
    return work


def start(work: Path, *args) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    path = work / f"run{len(list(work.glob('run*.log')))}.log"
    with open(path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args, *CFG],
                                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = path
    return proc


def wait_for(cond, proc: subprocess.Popen, what: str, timeout=300):
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.005)


def temp_of_tensor_map(work: Path):
    """A tensor map being written: neurosmk.io.atomic_path's temporary file."""
    d = work / "out" / "sub-02" / "dwi"
    return lambda: any(d.glob(".sub-02_model-DTI_param-*.tmp.nii.gz"))


def log_text(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()


def incomplete_markers(work: Path) -> set[str]:
    """Outputs Snakemake has marked incomplete (.snakemake/incomplete/<urlsafe base64 of path>)."""
    d = work / ".snakemake" / "incomplete"
    if not d.exists():
        return set()
    return {base64.urlsafe_b64decode("".join(p.relative_to(d).parts)).decode()
            for p in d.rglob("*") if p.is_file()}


def summary(work: Path) -> dict[str, tuple[str, str]]:
    """``snakemake --summary``: output -> (status, plan)."""
    p = run_snakemake(["--summary", *CFG], cwd=work)
    rows = [line.split("\t") for line in p.stdout.splitlines() if line.startswith("out/")]
    return {r[0]: (r[-2], r[-1]) for r in rows}


def loads(path: Path) -> str | None:
    """None if the file loads completely, else the error."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    try:
        name = path.name
        if name.endswith(".nii.gz"):
            data = nib.load(path).get_fdata()
            assert np.isfinite(data).all(), "non-finite values"
        elif name.endswith(".tsv"):
            assert len(pd.read_csv(path, sep="\t")) > 0, "no rows"
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".parquet"):
            pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any failure to load is what we look for
        return f"{type(exc).__name__}: {exc}"
    return None


def no_corrupt_output_marked_complete(work: Path, smk_summary=True) -> dict:
    """Every data file under out/ loads, or Snakemake will not take it as a result: an
    incomplete marker, or (asked only when some file does not load) ``--summary`` plans to
    re-make it. Returns the counts."""
    out = work / "out"
    marked = incomplete_markers(work)
    files = [p for p in out.rglob("*") if p.is_file() and p.name.endswith((".nii.gz", ".tsv", ".json", ".parquet"))
             and not str(p.relative_to(out)).startswith(("logs/", "benchmarks/"))]
    # neurosmk.io.atomic_path's temporary files (".<name>.<random>.tmp<ext>"), which a SIGKILLed
    # writer cannot remove: never an output (the next write of that output removes them)
    temps = [p for p in files if p.name.startswith(".") and ".tmp" in p.name]
    files = [p for p in files if p not in temps]
    broken = {str(p.relative_to(work)): err for p in files if (err := loads(p))}
    unmarked = {rel: err for rel, err in broken.items() if rel not in marked}
    plan = summary(work) if unmarked and smk_summary else {}
    bad = {rel: err for rel, err in unmarked.items() if plan.get(rel, ("", "no update"))[1] == "no update"}
    assert not bad, f"corrupt outputs marked complete: {bad}"
    return {"files": len(files), "not loading": len(broken), "incomplete markers": len(marked),
            "temporary files": len(temps)}


def assert_equals_clean(work: Path, clean: dict) -> None:
    ours, theirs = output_files(work / "out"), output_files(clean["out"])
    assert ours.keys() == theirs.keys(), set(ours) ^ set(theirs)  # also: no temporary file left
    compare_outputs(clean["out"], work / "out", sorted(ours))
    assert "Nothing to be done" in run_snakemake(["-n", "--cores", "1", *CFG], cwd=work).stdout
    assert not incomplete_markers(work)


def processes_of(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


# ---- kill -9 of the Snakemake process ----------------------------------------------------------

def test_kill9_of_snakemake_mid_write_then_unlock_and_rerun_incomplete(clean):
    """The main process dies while a job writes; the job itself (its child) runs on, orphaned,
    and may finish its files. They are still not taken as results."""
    import psutil

    work = copy_of(clean, "kill_snakemake")
    proc = start(work, "--cores", "2", "--forcerun", "dwi_tensor_dipy")
    wait_for(temp_of_tensor_map(work), proc, "tensor map being written")
    jobs = processes_of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    _, alive = psutil.wait_procs(jobs, timeout=120)  # the orphaned job, left to finish
    assert not alive, alive
    marked = incomplete_markers(work)
    assert {f"out/sub-02/dwi/{m}.nii.gz" for m in TENSOR_MAPS} <= marked, marked

    counts = no_corrupt_output_marked_complete(work)
    left = [m for m in TENSOR_MAPS if (work / "out" / "sub-02" / "dwi" / f"{m}.nii.gz").exists()]
    print("after kill -9 of snakemake:", counts, f"; the orphaned job left {len(left)} of 6 maps")

    # the next run refuses the orphan's outputs, naming them and the way out; the killed run's
    # lock stops --rerun-incomplete, with Snakemake's message and the way out (one process:
    # tests/_smk_batch.py, to save the imports)
    plain, locked, unlock = smk_batch([(["--cores", "2", *CFG], work),
                                       (["--cores", "2", "--rerun-incomplete", *CFG], work),
                                       (["--unlock", *CFG], work)])
    assert plain["rc"] != 0 and "IncompleteFilesException" in plain["out"], plain["out"][-2000:]
    assert "--rerun-incomplete" in plain["out"]
    assert "out/sub-02/dwi/sub-02_model-DTI_param-FA_dwimap.nii.gz" in plain["out"]
    assert locked["rc"] != 0 and LOCK_MESSAGE in locked["out"] and "--unlock" in locked["out"], locked["out"][-2000:]
    assert unlock["rc"] == 0, unlock["out"][-2000:]
    p = run_snakemake(["--cores", "2", "--rerun-incomplete", *CFG], cwd=work)
    assert job_counts(p.stdout + p.stderr).get("dwi_tensor_dipy") == 1
    assert_equals_clean(work, clean)


# ---- kill -9 of one job ------------------------------------------------------------------------

def test_kill9_of_one_job_mid_write_then_rerun(clean):
    work = copy_of(clean, "kill_job")
    proc = start(work, "--cores", "2", "--forcerun", "dwi_tensor_dipy")
    wait_for(temp_of_tensor_map(work), proc, "tensor map being written")
    # the job's Python process (bash may run it as its child or exec it)
    job = [p for p in processes_of(proc.pid)
           if p.name().startswith("python") and any(a.endswith(".dwi_tensor.py") for a in p.cmdline())]
    assert len(job) == 1, [p.cmdline() for p in processes_of(proc.pid)]
    job[0].send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=300)
    text = log_text(proc)
    assert rc != 0 and "Error in rule dwi_tensor_dipy" in text, text[-3000:]
    assert "-9" in text or "SIGKILL" in text or "signal 9" in text, text[-3000:]
    # Snakemake removed the killed job's outputs and ran nothing that needs them
    d = work / "out" / "sub-02" / "dwi"
    assert not [m for m in TENSOR_MAPS if (d / f"{m}.nii.gz").exists()]
    counts = no_corrupt_output_marked_complete(work)
    print("after kill -9 of the tensor job:", counts)

    p = run_snakemake(["--cores", "2", *CFG], cwd=work)
    assert job_counts(p.stdout + p.stderr).get("dwi_tensor_dipy") == 1
    assert_equals_clean(work, clean)


# ---- a full disk -------------------------------------------------------------------------------

@pytest.fixture
def tmpfs():
    """mount -t tmpfs (needs root and CAP_SYS_ADMIN); yields mount(dir, size) and remount."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk test mounts a tmpfs: needs root")
    mounted = []

    def mount(path: Path, size: int, remount=False):
        opts = f"{'remount,' if remount else ''}size={size}"
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
        if p.returncode != 0:
            if remount:
                raise AssertionError(p.stderr)
            pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
        if not remount:
            mounted.append(path)

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_fails_cleanly_then_rerun_completes(clean, tmpfs):
    work = copy_of(clean, "full_disk")
    out = work / "out"
    out.rename(work / "out_copy")
    out.mkdir()
    tmpfs(out, 64 << 20)
    shutil.copytree(work / "out_copy", out, dirs_exist_ok=True)
    shutil.rmtree(work / "out_copy")
    d = out / "sub-02" / "dwi"
    need = 0
    for m in TENSOR_MAPS:  # the tensor job's outputs gone; room for about half of them
        for ext in (".nii.gz", ".json"):
            need += (d / f"{m}{ext}").stat().st_size
            (d / f"{m}{ext}").unlink()
    st = os.statvfs(out)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    tmpfs(out, used + need // 2, remount=True)

    p = run_snakemake(["--cores", "2", *CFG], cwd=work, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "Error in rule dwi_tensor_dipy" in text, text[-3000:]
    assert "No space left on device" in text, text[-3000:]
    assert not [m for m in TENSOR_MAPS if (d / f"{m}.nii.gz").exists()]
    assert not [q for q in out.rglob(".*") if ".tmp" in q.name]  # atomic writes cleaned up
    counts = no_corrupt_output_marked_complete(work)
    print("after the disk filled:", counts, f"(room for {need // 2} of {need} bytes)")

    tmpfs(out, 64 << 20, remount=True)
    p = run_snakemake(["--cores", "2", *CFG], cwd=work)
    assert job_counts(p.stdout + p.stderr).get("dwi_tensor_dipy") == 1
    assert_equals_clean(work, clean)


# ---- an output deleted; a second run while it re-runs ------------------------------------------

def test_deleted_output_reruns_exactly_its_consumers_and_a_second_run_is_locked_out(clean):
    work = copy_of(clean, "deleted")
    gone = "out/sub-02/dwi/sub-02_model-DTI_param-FA_dwimap.nii.gz"
    (work / gone).unlink()
    full, p = smk_batch([(["-n", "--forceall", "--cores", "2", *CFG], work), (["-n", "--cores", "2", *CFG], work)])
    assert full["rc"] == 0 and p["rc"] == 0, (full["out"] + p["out"])[-3000:]
    dag = parse_jobs(full["out"])
    producer = {k for k, j in dag.items() if gone in j["output"]}
    expected = downstream(dag, producer)  # the producer and everything that reads its outputs
    planned = parse_jobs(p["out"])
    assert set(planned) == expected, (sorted(planned), sorted(expected))
    assert {j["rule"] for j in planned.values()} >= {"dwi_tensor_dipy", "dwi_stats_qc", "group_dti_stats"}
    assert not {"dwi_denoise_dipy", "dwi_degibbs_dipy", "dwi_mask_dipy"} & set(job_counts(p["out"]))
    print(f"deleted {gone}: {len(planned)} of {len(dag)} jobs re-run:", sorted(planned))

    # the re-run, and a second run from the same folder while the first holds the lock (the
    # first is stopped, SIGSTOP, while the second tries, so they overlap on any machine)
    proc = start(work, "--cores", "2")
    wait_for(lambda: any((work / ".snakemake" / "locks").glob("*.lock")), proc, "lock taken")
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        second = run_snakemake(["--cores", "2", *CFG], cwd=work, check=False)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    text = second.stdout + second.stderr
    assert second.returncode != 0 and LOCK_MESSAGE in text and "--unlock" in text, text[-2000:]
    assert "Finished jobid" not in text  # it ran nothing
    assert proc.wait(timeout=600) == 0, log_text(proc)[-3000:]
    assert job_counts(log_text(proc)) == job_counts(p["out"])
    no_corrupt_output_marked_complete(work)
    assert_equals_clean(work, clean)


def test_deleted_intermediate_output_is_not_remade(clean):
    """Snakemake re-makes a missing intermediate file only when a job needs it: the denoised and
    Gibbs-corrected DWIs are not targets of `all` (rules/dwi.smk DWI_TARGETS), so deleting one
    after a complete run re-runs nothing and the results made from it stay valid. Asking for
    it by name re-makes that one job only."""
    work = copy_of(clean, "deleted_intermediate")
    gone = "out/sub-02/dwi/sub-02_desc-degibbs_dwi.nii.gz"
    (work / gone).unlink()
    plain, named = smk_batch([(["-n", "--cores", "2", *CFG], work), (["-n", "--cores", "2", gone, *CFG], work)])
    assert "Nothing to be done" in plain["out"], plain["out"][-2000:]
    assert job_counts(named["out"]) == {"dwi_degibbs_dipy": 1}, named["out"][-2000:]
