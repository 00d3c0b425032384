"""Damage guards on output_dir (issue #15): not inside the raw dataset or a subject folder; a lock
against a second run from another checkout; dry runs write nothing there (neurosmk.outdir)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from neurosmk import outdir as O

from .helpers import run_snakemake, write_config

REPO = Path(__file__).resolve().parents[1]


# ---- placement -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rel, problem", [
    (".", "is the BIDS dataset itself"),
    ("out", "is inside the BIDS dataset"),
    ("sub-01/out", "is inside the BIDS dataset"),
    ("derivatives", "is inside the BIDS dataset"),
    ("code/../derivatives/../x", "is inside the BIDS dataset"),
])
def test_output_dir_inside_bids_refused(tmp_path, rel, problem):
    bids = tmp_path / "bids"
    bids.mkdir()
    with pytest.raises(O.OutputDirError, match=problem) as exc:
        O.check_output_dir(f"{bids}/{rel}", bids)
    assert str(bids) in str(exc.value)


def test_output_dir_allowed_places(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    O.check_output_dir(bids / "derivatives" / "neurosmk", bids)  # the BIDS place for derivatives
    O.check_output_dir(tmp_path / "results", bids)
    O.check_output_dir(tmp_path, bids)  # above the dataset: writes beside it, not into it
    O.check_output_dir(tmp_path / "bids2", bids)  # a prefix of the name is not "inside"


def test_output_dir_through_symlink_and_in_subject_folder(tmp_path):
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    (tmp_path / "link").symlink_to(bids / "sub-01")
    with pytest.raises(O.OutputDirError, match="inside the BIDS dataset"):
        O.check_output_dir(tmp_path / "link" / "out", bids)
    with pytest.raises(O.OutputDirError, match=r"inside a subject folder \(sub-07\)"):
        O.check_output_dir(tmp_path / "other" / "sub-07" / "out", bids)


# ---- lock ----------------------------------------------------------------------------------------
def _foreign_lock(out: Path, pid: int, host: str | None = None, workdir: str = "/elsewhere") -> dict:
    info = {"host": host or socket.gethostname(), "pid": pid, "checkout": "/other/checkout",
            "workdir": workdir, "started": "2026-01-01T00:00:00Z"}
    O.lock_path(out).parent.mkdir(parents=True, exist_ok=True)
    O.lock_path(out).write_text(json.dumps(info))
    return info


@pytest.fixture
def live_pid():
    p = subprocess.Popen(["sleep", "120"])
    yield p.pid
    p.kill()
    p.wait()


def test_lock_records_holder_and_is_released(tmp_path):
    out = tmp_path / "out"
    assert O.acquire_lock(out, checkout=str(REPO), workdir=str(tmp_path))
    info = json.loads(O.lock_path(out).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["checkout"] == str(REPO.resolve()) and info["workdir"] == str(tmp_path.resolve())
    assert info["started"].endswith("Z")
    assert O.acquire_lock(out, checkout=str(REPO))  # re-entrant for its holder
    assert O.release_lock(out) and not O.lock_path(out).exists()
    assert not O.release_lock(out)


def test_lock_keeps_other_checkout_out(tmp_path, live_pid):
    out = tmp_path / "out"
    held = _foreign_lock(out, live_pid)
    with pytest.raises(O.OutputDirError) as exc:
        O.acquire_lock(out, checkout=str(REPO), workdir=str(tmp_path))
    msg = str(exc.value)
    assert f"pid {live_pid}" in msg and "/other/checkout" in msg and str(O.lock_path(out)) in msg
    assert json.loads(O.lock_path(out).read_text()) == held  # untouched
    assert not O.release_lock(out) and O.lock_path(out).exists()  # not ours to release


def test_lock_same_workdir_left_to_snakemake(tmp_path, live_pid):
    out = tmp_path / "out"
    _foreign_lock(out, live_pid, workdir=str(tmp_path.resolve()))
    assert O.acquire_lock(out, checkout=str(REPO), workdir=str(tmp_path)) is False


def test_stale_lock_taken_over(tmp_path):
    out = tmp_path / "out"
    p = subprocess.Popen(["true"])
    p.wait()
    _foreign_lock(out, p.pid)  # dead pid on this host: a killed run
    assert O.acquire_lock(out, checkout=str(REPO), workdir=str(tmp_path))
    assert json.loads(O.lock_path(out).read_text())["pid"] == os.getpid()
    O.release_lock(out)


def test_lock_of_other_host_not_judged_stale(tmp_path):
    out = tmp_path / "out"
    _foreign_lock(out, 999999, host="node-elsewhere")
    with pytest.raises(O.OutputDirError, match="host node-elsewhere"):
        O.acquire_lock(out, checkout=str(REPO), workdir=str(tmp_path))


def test_unreadable_lock_refuses(tmp_path):
    out = tmp_path / "out"
    O.lock_path(out).parent.mkdir(parents=True)
    O.lock_path(out).write_text("{trunc")
    with pytest.raises(O.OutputDirError, match="unreadable lock"):
        O.acquire_lock(out, checkout=str(REPO), workdir=str(tmp_path))


def test_lock_released_at_exit_and_kill9_recovered(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, time; from neurosmk import outdir as O; "
            f"O.acquire_lock({str(out)!r}, checkout='/c'); print('held', flush=True); "
            "time.sleep(float(sys.argv[1]))")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    subprocess.run([sys.executable, "-c", code, "0"], env=env, check=True, capture_output=True)
    assert not O.lock_path(out).exists()  # atexit released it
    p = subprocess.Popen([sys.executable, "-c", code, "60"], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert json.loads(O.lock_path(out).read_text())["pid"] == p.pid  # kill -9 leaves it
    assert O.acquire_lock(out, checkout=str(REPO), workdir=str(tmp_path))  # stale: taken over
    O.release_lock(out)


# ---- through Snakemake -----------------------------------------------------------------------------
def _smk(tmp_path, bids, out, *args):
    cfg = write_config(tmp_path / "config.yaml",
                       {"bids_dir": str(bids), "output_dir": str(out), "freesurfer_dir": None})
    return run_snakemake(["--configfile", str(cfg), "--cores", "1", *args], cwd=tmp_path, timeout=300, check=False)


def _tree(p: Path) -> set:
    return {str(x.relative_to(p)) for x in p.rglob("*")}


def test_snakemake_refuses_output_in_bids_and_writes_nothing(tmp_path):
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(REPO / "demo" / "bids", bids)
    before = _tree(bids)
    for out in (bids, bids / "sub-01" / "anat" / "out"):
        res = _smk(tmp_path, bids, out, "-n")
        assert res.returncode != 0
        err = res.stdout + res.stderr
        assert "OutputDirError" in err and f"output_dir {out} is" in err, err[-2000:]
        assert _tree(bids) == before


def test_dry_run_writes_nothing_into_output_dir(tmp_path):
    out = tmp_path / "out"
    res = _smk(tmp_path, REPO / "demo" / "bids", out, "-n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "dataset_description" in res.stdout
    assert not out.exists()


@pytest.mark.slow
def test_snakemake_run_locks_out_other_checkout(tmp_path, live_pid):
    out = tmp_path / "out"
    target = str(out / "dataset_description.json")
    held = _foreign_lock(out, live_pid)
    res = _smk(tmp_path, REPO / "demo" / "bids", out, target)
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert "in use by another neurosmk run" in err and f"pid {live_pid}" in err and "/other/checkout" in err
    assert not Path(target).exists()
    assert json.loads(O.lock_path(out).read_text()) == held
    # the holder is gone (kill -9): the next run takes the stale lock over, runs, and releases it
    O.lock_path(out).write_text(json.dumps({**held, "pid": _dead_pid()}))
    res = _smk(tmp_path, REPO / "demo" / "bids", out, target)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(Path(target).read_text())["Name"]
    assert not O.lock_path(out).exists()


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid
