"""Nothing left behind in $TMPDIR (issue #15), and memory caps (neurosmk.runtime).

Every Python rule script calls neurosmk.runtime.setup, which gives the job a private folder under
resources.tmpdir/$TMPDIR (TMPDIR and the tempfile module point into it) and removes it when the
script exits: on success, on an exception, on SIGTERM. A job killed with SIGKILL leaves its
folder; the next run of the same job removes it. ANTsPy's registration transforms are moved out of
it into the outputs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .helpers import SNAKEMAKE, run_snakemake, write_config

REPO = Path(__file__).resolve().parents[1]

# A rule script's view of Snakemake, enough for runtime.setup: a fake `snakemake` object.
DRIVER = r"""
import os, sys, tempfile, time, types
tmpbase, out, mode = sys.argv[1:4]
smk = types.SimpleNamespace(rule="anat_fake", threads=1, output=[out], input=[], log=[out + ".log"],
                            resources={"tmpdir": tmpbase, "mem_mb": int(os.environ.get("MEM_MB", "1000"))},
                            wildcards=types.SimpleNamespace(subject="07"), params={})
from neurosmk.runtime import setup
setup(smk)
fd, name = tempfile.mkstemp(suffix=".nii.gz")       # the tempfile module: into the job's folder
os.write(fd, b"x" * 1000); os.close(fd)
open(os.path.join(os.environ["TMPDIR"], "itk_warp.nii.gz"), "wb").write(b"y" * 1000)  # $TMPDIR too
assert os.path.dirname(name) == os.environ["TMPDIR"] != tmpbase, (name, tmpbase)
print("tmp", os.environ["TMPDIR"], flush=True)
if mode == "fail":
    raise ValueError("deliberate failure")
if mode == "sleep":
    sys.__stdout__.write("ready\n"); sys.__stdout__.flush()
    time.sleep(60)
if mode == "oom":
    import numpy as np
    a = np.ones(int(os.environ["ALLOC_MB"]) << 17)   # 8 bytes each
open(out, "w").write("done")
"""


def _driver(tmp_path, mode, out=None, wait=True, **env):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    base = tmp_path / "tmpbase"
    base.mkdir(exist_ok=True)
    out = out or tmp_path / "result.txt"
    e = dict(os.environ, PYTHONPATH=str(REPO / "src"), **env)
    args = [sys.executable, str(script), str(base), str(out), mode]
    if not wait:
        return subprocess.Popen(args, env=e, stdout=subprocess.PIPE, text=True), base
    return subprocess.run(args, env=e, capture_output=True, text=True, timeout=120), base


def test_job_tmpdir_removed_on_success(tmp_path):
    res, base = _driver(tmp_path, "ok")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "result.txt").read_text() == "done"
    log = (tmp_path / "result.txt.log").read_text()
    assert f"tmp {base}/neurosmk-job-anat_fake-" in log
    assert os.listdir(base) == []


def test_job_tmpdir_removed_on_failure(tmp_path):
    res, base = _driver(tmp_path, "fail")
    assert res.returncode == 1
    assert "deliberate failure" in (tmp_path / "result.txt.log").read_text()
    assert os.listdir(base) == []


def test_job_tmpdir_removed_on_sigterm_and_after_sigkill_rerun(tmp_path):
    p, base = _driver(tmp_path, "sleep", wait=False)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 128 + signal.SIGTERM
    assert os.listdir(base) == []
    # SIGKILL cannot be caught: the folder stays ...
    p, base = _driver(tmp_path, "sleep", wait=False)
    assert p.stdout.readline().strip() == "ready"
    p.kill()
    p.wait(30)
    left = os.listdir(base)
    assert len(left) == 1 and left[0].startswith("neurosmk-job-anat_fake-")
    # ... a different job leaves it alone, the re-run of the same job removes it
    res, _ = _driver(tmp_path, "ok", out=tmp_path / "other.txt")
    assert res.returncode == 0 and os.listdir(base) == left
    res, _ = _driver(tmp_path, "ok")
    assert res.returncode == 0, res.stderr
    assert os.listdir(base) == []


def test_memory_cap_gives_memoryerror_naming_subject(tmp_path):
    from neurosmk.runtime import HEADROOM_MB, PER_THREAD_MB

    head = HEADROOM_MB + PER_THREAD_MB  # one thread
    # 600 MB more than the cap of mem_mb=100 (+ headroom): a MemoryError, not the OOM killer
    res, base = _driver(tmp_path, "oom", MEM_MB="100", ALLOC_MB=str(head + 700))
    log = (tmp_path / "result.txt.log").read_text()
    assert res.returncode == 1, log
    assert "MemoryError: sub-07: rule anat_fake ran out of its memory cap of " \
           f"{100 + head} MB (resources mem_mb=100" in log
    assert "--set-resources anat_fake:mem_mb=200" in log
    assert os.listdir(base) == []
    # an allocation within the cap succeeds, and the peak is logged
    res, _ = _driver(tmp_path, "oom", MEM_MB="4000", ALLOC_MB="200")
    log = (tmp_path / "result.txt.log").read_text()
    assert res.returncode == 0, log
    assert f"cap {4000 + head}" in log and "MB resident (VmHWM)" in log


# ---- the real anat jobs through Snakemake ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_anat(tmp_path_factory):
    """The demo T1w and the MNI template at 3 mm: the anat chain (N4, brainextractor, Atropos,
    ANTs affine+SyN, volumes) in about a minute."""
    import shutil

    import nibabel as nib
    from nibabel.processing import resample_to_output

    from neurosmk.anat import nilearn_template

    root = tmp_path_factory.mktemp("tiny_anat")
    bids = root / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    shutil.copy(REPO / "demo" / "bids" / "dataset_description.json", bids)
    t1 = resample_to_output(nib.load(str(REPO / "demo" / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")), 3.0)
    nib.save(nib.Nifti1Image(np.clip(np.asarray(t1.dataobj), 0, None).astype(np.int16), t1.affine),
             str(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"))
    tpl = resample_to_output(nib.load(nilearn_template()), 3.0)
    nib.save(nib.Nifti1Image(np.asarray(tpl.dataobj).astype(np.float32), tpl.affine), str(root / "tpl.nii.gz"))
    return root


def _anat_run(tiny, work: Path, tmpdir: Path, *args, wait=True, template=None):
    cfg = write_config(work / "config.yaml", {
        "bids_dir": str(tiny / "bids"), "output_dir": str(work / "out"), "freesurfer_dir": None,
        "steps": {"anat": True, "dwi": False}, "template": {"t1w": str(template or tiny / "tpl.nii.gz")},
        "anat": {"register": {"syn_iterations": [10, 5, 0]}, "skullstrip": {"iterations": 300}}})
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(REPO / "src"))
    args = ["--configfile", str(cfg), "--cores", "2", *args]
    if not wait:
        return subprocess.Popen(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), *args], cwd=work, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run_snakemake(args, cwd=work, env=env, timeout=1200, check=False)


def _job_pids(work: Path, script: str) -> list[int]:
    """Processes running the rule script `script` for the run in `work`."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
                if f"{work}/.snakemake/scripts/" in cmd and script in cmd:
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
def test_anat_jobs_leave_nothing_in_tmpdir(tiny_anat, tmp_path):
    """Success: the ANTs/Atropos/brainextractor jobs leave $TMPDIR as it was; the warps were
    moved out of the job folders into the outputs."""
    import nibabel as nib

    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    res = _anat_run(tiny_anat, tmp_path, tmpdir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert os.listdir(tmpdir) == []
    a = tmp_path / "out" / "sub-01" / "anat"
    warp = nib.load(str(a / "sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_desc-warp_xfm.nii.gz"))
    assert warp.shape[-1] == 3 and np.abs(warp.get_fdata()).max() > 0.1
    assert (a / "sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_desc-affine_xfm.mat").stat().st_size > 0
    gm = nib.load(str(a / "sub-01_label-GM_probseg.nii.gz")).get_fdata()
    assert 0.99 < gm.max() <= 1.0 + 1e-6
    logs = (tmp_path / "out" / "logs" / "anat_register_ants" / "sub-01.log").read_text()
    assert "neurosmk: peak memory" in logs


@pytest.mark.slow
def test_memory_cap_real_job_fails_naming_subject(tmp_path):
    """brainextractor on the full-resolution demo T1w (192x256x256; it needs ~1.9 GB of address
    space) with mem_mb=1: the job fails with a MemoryError naming the subject (no kernel OOM
    kill), and $TMPDIR holds nothing afterwards."""
    import shutil

    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    shutil.copy(REPO / "demo" / "bids" / "dataset_description.json", bids)
    shutil.copytree(REPO / "demo" / "bids" / "sub-01" / "anat", bids / "sub-01" / "anat")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    cfg = write_config(tmp_path / "config.yaml", {
        "bids_dir": str(bids), "output_dir": str(tmp_path / "out"), "freesurfer_dir": None,
        "steps": {"anat": True, "dwi": False},
        "anat": {"biascorrect": {"shrink_factor": 8, "convergence_iters": [5]}}})  # a quick N4 first
    mask = tmp_path / "out" / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz"
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(REPO / "src"))
    res = run_snakemake(["--configfile", str(cfg), "--cores", "2", str(mask),
                         "--set-resources", "anat_skullstrip_python:mem_mb=1"], cwd=tmp_path, env=env, timeout=900,
                        check=False)
    assert res.returncode == 1
    log = (tmp_path / "out" / "logs" / "anat_skullstrip_python" / "sub-01.log").read_text()
    assert "MemoryError: sub-01: rule anat_skullstrip_python ran out of its memory cap of" in log, log[-3000:]
    assert "Unable to allocate" in log and "--set-resources anat_skullstrip_python:mem_mb=2" in log
    assert not mask.exists()
    assert os.listdir(tmpdir) == []


@pytest.mark.slow
def test_failed_and_killed_jobs_leave_nothing_after_rerun(tiny_anat, tmp_path):
    """A job that fails (an unreadable template: ANTs fails after the job's folder was made) and
    a job killed with SIGKILL mid-run: after the run and its re-run, $TMPDIR holds nothing new."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    # everything up to the registration, and the registration failing on a template that is not
    # an image (a truncated .nii.gz is no good: ITK reads it, zero-filled, without an error)
    bad = tmp_path / "tpl_broken.nii.gz"
    bad.write_bytes(b"not an image\n" * 100)
    res = _anat_run(tiny_anat, tmp_path, tmpdir, "--keep-going", template=bad)
    assert res.returncode != 0
    log = (tmp_path / "out" / "logs" / "anat_register_ants" / "sub-01.log").read_text()
    assert "Traceback" in log and "neurosmk: peak memory" in log, log[-3000:]
    assert os.listdir(tmpdir) == []
    # the registration with the good template, its job killed with SIGKILL mid-run
    p = _anat_run(tiny_anat, tmp_path, tmpdir, wait=False)
    deadline = time.time() + 600
    pids = []
    # killed as soon as its folder is there: the registration of the tiny image takes ~2 s after
    # that on an idle machine, so a later kill (it was 1 s polling + 3 s) can come after the job ended
    while time.time() < deadline and not pids and p.poll() is None:
        time.sleep(0.05)
        if any(n.startswith("neurosmk-job-anat_register_ants-") for n in os.listdir(tmpdir)):
            pids = _job_pids(tmp_path, "anat_register")
    assert pids, "the registration job never started"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert p.wait(600) != 0
    left = os.listdir(tmpdir)
    assert any(n.startswith("neurosmk-job-anat_register_ants-") for n in left), left  # SIGKILL: not cleaned
    res = _anat_run(tiny_anat, tmp_path, tmpdir, "--rerun-incomplete")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert os.listdir(tmpdir) == []
