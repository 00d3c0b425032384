"""Tool rules' shell commands, run for real with stand-in tools (no FSL here): outputs are made in
a private temporary folder beside them and renamed into place; the folder is removed whether the
tool succeeds or fails, and a failed tool leaves no output behind. (The command lines themselves
are checked against the tools' interfaces in test_niwrap_interfaces.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .helpers import dry_run, write_config

# a stand-in `bet IN PREFIX ... -m`: writes PREFIX.nii.gz and PREFIX_mask.nii.gz, or writes the
# brain and fails before the mask (as a crashed tool would)
STUB_BET = """#!/bin/sh
printf 'brain of %s' "$1" > "$2.nii.gz"
[ "$STUB_MODE" = fail ] && { echo "bet: stand-in failure" >&2; exit 3; }
printf 'mask of %s' "$1" > "$2_mask.nii.gz"
"""


@pytest.fixture
def bet_job(tmp_path):
    tmp = tmp_path / "job"
    tmp.mkdir()
    cfg = write_config(tmp / "config.yaml", {"output_dir": str(tmp / "out"), "steps": {"dwi": False},
                                             "anat": {"skullstrip": {"method": "fsl_bet"}}})
    jobs, _ = dry_run(cfg)
    return jobs["anat_skullstrip_fsl_bet"]


def _run(job: dict, tmp_path: Path, mode: str = "ok", stubs: dict | None = None, **env_extra) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (stubs or {}).items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for f in job["input"]:  # the rule's inputs and the folders Snakemake makes before a job
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).write_text("t1w")
    for f in job["output"]:
        Path(f).parent.mkdir(parents=True, exist_ok=True)
    log = job["shell"].rsplit(" > ", 1)[1].split()[0] if " > " in job["shell"] else None
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_MODE": mode, **env_extra}
    # as Snakemake runs a shell rule (bash strict mode)
    return subprocess.run(["bash", "-c", f"set -euo pipefail; {job['shell']}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def _tmp_dirs(job: dict) -> list[Path]:
    return [p for f in job["output"] for p in Path(f).parent.iterdir() if p.name.startswith(".neurosmk-tmp")]


def test_outputs_renamed_into_place_and_private_tmp_removed(bet_job, tmp_path):
    res = _run(bet_job, tmp_path, "ok", {"bet": STUB_BET})
    assert res.returncode == 0, res.stderr
    mask, brain = bet_job["output"]
    assert Path(mask).read_text() == f"mask of {bet_job['input'][0]}"
    assert Path(brain).read_text() == f"brain of {bet_job['input'][0]}"
    assert _tmp_dirs(bet_job) == []


def test_failed_tool_leaves_no_output_and_no_tmp(bet_job, tmp_path):
    res = _run(bet_job, tmp_path, "fail", {"bet": STUB_BET})
    assert res.returncode != 0
    assert not any(Path(f).exists() for f in bet_job["output"])  # not even the brain it wrote first
    assert _tmp_dirs(bet_job) == []


def test_fsl_template_rules_copy_fsls_own_mni152(tmp_path):
    """anat.register fsl: the template head, brain and dilated brain mask are FSL's MNI152 at the
    fnirt config's 2 mm, taken from $FSLDIR/data/standard."""
    cfg = write_config(tmp_path / "config.yaml", {"output_dir": str(tmp_path / "out"), "steps": {"dwi": False},
                                                  "template": {"name": "MNI152NLin6Asym"},
                                                  "anat": {"register": {"method": "fsl"}}})
    jobs, _ = dry_run(cfg)
    std = tmp_path / "fsl" / "data" / "standard"
    std.mkdir(parents=True)
    for f in ("MNI152_T1_1mm", "MNI152_T1_2mm", "MNI152_T1_1mm_brain", "MNI152_T1_2mm_brain",
              "MNI152_T1_2mm_brain_mask", "MNI152_T1_2mm_brain_mask_dil", "MNI152_T1_1mm_brain_mask_dil"):
        (std / f"{f}.nii.gz").write_text(f)
    got = {}
    for rule in ("anat_template_fsl", "anat_template_fsl_brain"):
        res = _run(jobs[rule], tmp_path, FSLDIR=str(tmp_path / "fsl"))
        assert res.returncode == 0, res.stderr
        got.update({Path(o).name: Path(o).read_text() for o in jobs[rule]["output"]})
        assert _tmp_dirs(jobs[rule]) == []
    head, = jobs["anat_template_fsl"]["output"]
    brain, mask_dil = jobs["anat_template_fsl_brain"]["output"]
    assert got == {Path(head).name: "MNI152_T1_2mm", Path(brain).name: "MNI152_T1_2mm_brain",
                   Path(mask_dil).name: "MNI152_T1_2mm_brain_mask_dil"}
