"""scripts/toolrun.sh, the one wrapper of the tool (shell) rules, with real commands (cp, sleep,
python) in the job shell Snakemake runs (``bash -c 'set -euo pipefail; ...'``): the private
temporary folder is gone after success, failure and SIGTERM, a SIGKILL leftover is removed by the
next run of the same job, outputs appear all at once or not at all, hostile paths stay data, and
the provenance sidecar written after it (scripts/sidecar.sh) records the command as run.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLRUN = REPO / "scripts" / "toolrun.sh"
SIDECAR = REPO / "scripts" / "sidecar.sh"
HOSTILE = "ev il $(touch PWNED) `touch PWNED` ; touch PWNED 'q' \"dq\" ünï€ode"
q = shlex.quote


def job(rule: str, outputs: list[Path], tool: str, moves: list[tuple[str, Path]], tail: str = "") -> str:
    """A job's shell command as rules/provenance.smk's TOOLRUN builds it (paths shlex-quoted)."""
    outs = " ".join(q(str(o)) for o in outputs)
    pairs = " ".join(f'"$tmp/{src}" {q(str(dst))}' for src, dst in moves)
    log = q(str(Path(outputs[0]).parent / "logs" / rule / "sub-01.log"))  # neurosmk.paths.log_path's shape
    return (f"set -euo pipefail; . {q(str(TOOLRUN))} && toolrun_begin {log} {outs} && "
            f"{tool} && toolrun_end {pairs}{tail}")


def run(cmd: str, base: Path, wait=True, cwd=None):
    env = dict(os.environ, TMPDIR=str(base))
    args = ["bash", "-c", cmd]
    if not wait:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def setup(tmp_path):
    base = tmp_path / "tmpbase"
    base.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "in.txt"
    src.write_text("input data\n")
    return tmp_path, base, out, src


def _wait_for_tmp(base: Path, timeout=20.0) -> list[str]:
    end = time.time() + timeout
    while time.time() < end:
        left = os.listdir(base)
        if left:
            return left
        time.sleep(0.05)
    raise AssertionError("the job's temporary folder never appeared")


def test_success_moves_outputs_and_removes_tmp(setup):
    root, base, out, src = setup
    a, b = out / "a.nii.gz", out / "b.txt"
    code = 'import os; open(os.environ[\"tmp\"] + \"/b.txt\", \"w\").write(\"made in \" + os.environ[\"TMPDIR\"])'
    py = f"{q(sys.executable)} -c '{code}'"
    cmd = job("r", [a, b], f'cp {q(str(src))} "$tmp/a.nii.gz" && export tmp && {py}',
              [("a.nii.gz", a), ("b.txt", b)])
    res = run(cmd, base)
    assert res.returncode == 0, res.stderr
    assert a.read_text() == "input data\n"
    # the tool's own temporary files went into the job's folder (TMPDIR points there)
    assert b.read_text().startswith(f"made in {base}/neurosmk-job-r-")
    assert os.listdir(base) == []
    assert sorted(os.listdir(out)) == ["a.nii.gz", "b.txt"]  # no staging leftovers


def test_failure_removes_tmp_and_writes_nothing(setup):
    root, base, out, src = setup
    a = out / "a.nii.gz"
    cmd = job("r", [a], f'cp {q(str(src))} "$tmp/a.nii.gz" && false', [("a.nii.gz", a)])
    res = run(cmd, base)
    assert res.returncode == 1
    assert os.listdir(base) == [] and os.listdir(out) == []


def test_missing_output_moves_none_and_names_the_file(setup):
    """All or nothing: a tool that wrote one of two outputs leaves neither in place."""
    root, base, out, src = setup
    a, b = out / "a.nii.gz", out / "b.nii.gz"
    cmd = job("r", [a, b], f'cp {q(str(src))} "$tmp/a.nii.gz"', [("a.nii.gz", a), ("b.nii.gz", b)])
    res = run(cmd, base)
    assert res.returncode == 1
    assert "the tool did not write" in res.stderr and "/b.nii.gz (for " + str(b) + ")" in res.stderr
    assert os.listdir(out) == [] and os.listdir(base) == []


def test_sigterm_removes_tmp(setup):
    root, base, out, src = setup
    a = out / "a.nii.gz"
    p = run(job("r", [a], f'cp {q(str(src))} "$tmp/a.nii.gz" && sleep 30', [("a.nii.gz", a)]), base, wait=False)
    _wait_for_tmp(base)
    os.killpg(p.pid, signal.SIGTERM)  # as Snakemake cancels a job: its process group
    assert p.wait(20) == 128 + signal.SIGTERM
    assert os.listdir(base) == [] and os.listdir(out) == []


def test_sigkill_leftover_swept_by_rerun_of_same_job_only(setup):
    root, base, out, src = setup
    a, other = out / "a.nii.gz", out / "other.nii.gz"
    p = run(job("r", [a], 'sleep 30', [("a.nii.gz", a)]), base, wait=False)
    left = _wait_for_tmp(base)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(20)
    assert os.listdir(base) == left and left[0].startswith("neurosmk-job-r-")
    # a different job (other outputs) leaves it alone ...
    res = run(job("r", [other], f'cp {q(str(src))} "$tmp/o"', [("o", other)]), base)
    assert res.returncode == 0, res.stderr
    assert os.listdir(base) == left
    # ... the re-run of the same job removes it
    res = run(job("r", [a], f'cp {q(str(src))} "$tmp/a.nii.gz"', [("a.nii.gz", a)]), base)
    assert res.returncode == 0, res.stderr
    assert os.listdir(base) == [] and a.read_text() == "input data\n"


def test_job_key_names_folders_as_python_jobs_do(tmp_path):
    """The folder name is neurosmk.runtime's: neurosmk-job-<rule>-<digest of the outputs>."""
    import types

    from neurosmk.runtime import _job_key

    outs = [str(tmp_path / "x" / "sub-01_a.nii.gz"), str(tmp_path / "x" / "sub-01_a.json")]
    res = subprocess.run(["bash", "-c", f". {q(str(TOOLRUN))} && toolrun_key r " + " ".join(map(q, outs))],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout == _job_key(types.SimpleNamespace(rule="r", output=outs))
    # relative outputs are taken from the working folder
    res2 = subprocess.run(["bash", "-c", f". {q(str(TOOLRUN))} && toolrun_key r x/sub-01_a.nii.gz x/sub-01_a.json"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert res2.stdout == res.stdout


def test_directory_output_and_relative_paths(setup):
    """A folder output (FSL FIRST's slicesdir) and output paths relative to the working folder."""
    root, base, out, src = setup
    cmd = job("r", [Path("out/qc"), Path("out/a.txt")],
              'mkdir "$tmp/qc" && echo x > "$tmp/qc/p.png" && echo y > "$tmp/a.txt"',
              [("qc", Path("out/qc")), ("a.txt", Path("out/a.txt"))])
    res = run(cmd, base, cwd=root)
    assert res.returncode == 0, res.stderr
    assert (out / "qc" / "p.png").read_text() == "x\n" and (out / "a.txt").read_text() == "y\n"
    assert os.listdir(base) == []


def test_hostile_paths_are_data_and_sidecar_records_the_run(tmp_path):
    """Output, input and TMPDIR folders with shell syntax in their names: nothing is executed, the
    outputs land, and the sidecar written after the wrapper (as the rules' SIDECAR does) describes
    the output, checksums the input and records the tool's command line as run."""
    from neurosmk import provenance as P

    root = tmp_path / HOSTILE
    base, out, bids = root / f"tmp {HOSTILE}", root / f"out {HOSTILE}", root / "bids"
    for d in (base, out / "sub-01", bids / "sub-01"):
        d.mkdir(parents=True)
    raw = bids / "sub-01" / "sub-01_T1w.nii.gz"
    raw.write_bytes(b"raw")
    img, sc = out / "sub-01" / "sub-01_desc-x_T1w.nii.gz", out / "sub-01" / "sub-01_desc-x_T1w.json"
    static = json.dumps(P.static_record(step="anat.x", method="m", rule="r", parameters={},
                                        conda_env=None, container=None))
    tail = (f" && NEUROSMK_PROV=sidecar sh {q(str(SIDECAR))} {q(static)} {q('echo tool 1')} {q(str(out))}"
            f" {q(str(bids))} {q(str(img))} {q(str(sc))} -- {q(str(raw))}")
    cmd = job("r", [img, sc], f'cp {q(str(raw))} "$tmp/x.nii.gz"', [("x.nii.gz", img)], tail)
    res = run(cmd, base, cwd=root)
    assert res.returncode == 0, res.stderr
    hits = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f == "PWNED"]
    assert not hits
    assert img.read_bytes() == b"raw" and os.listdir(base) == []
    rec = json.loads(sc.read_text())
    assert rec["Describes"] == [img.name] and rec["ToolVersion"] == "tool 1"
    assert rec["Sources"] == ["bids:raw:sub-01/sub-01_T1w.nii.gz"]
    assert rec["SourceChecksums"]["bids:raw:sub-01/sub-01_T1w.nii.gz"].startswith("sha256:")
    cl = rec["CommandLine"]
    assert f'cp {q(str(raw))} "$tmp/x.nii.gz"' in cl and "NEUROSMK_PROV" not in cl and "toolrun_end" in cl


def test_usage_errors(setup):
    root, base, out, src = setup
    res = run(f". {q(str(TOOLRUN))} && toolrun_begin r && echo no", base)
    assert res.returncode == 2 and "usage" in res.stderr and "no" not in res.stdout
    res = run(f". {q(str(TOOLRUN))} && toolrun_begin r {q(str(out / 'a'))} && toolrun_end onlyone", base)
    assert res.returncode == 2 and "usage" in res.stderr
    assert os.listdir(base) == []


def test_rule_name_comes_from_the_log_path(tmp_path):
    """toolrun_begin LOG ...: the folder is named after the rule that neurosmk.paths.log_path put in
    the log's path (a visit job's logs/<rule>/<visit>.log, a run-level job's logs/<rule>.log)."""
    from neurosmk.paths import log_path

    for visit in ("sub-01_ses-A", None):
        path = log_path(str(tmp_path / "o u$(t)"), "anat_skullstrip_fsl_bet", visit)
        res = subprocess.run(["sh", "-c", f". {q(str(TOOLRUN))} && toolrun_rule {q(path)}"],
                             capture_output=True, text=True)
        assert (res.returncode, res.stdout) == (0, "anat_skullstrip_fsl_bet"), (visit, res)
