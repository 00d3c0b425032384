"""The start-up header checks' cache (output_dir/.neurosmk/validated_headers.json): read at every
start, written only when jobs start (rules/safety.smk onstart), so commands that run no job write
nothing into output_dir."""

from __future__ import annotations

import json

import pytest

from .helpers import DEMO_BIDS, run_snakemake, write_config


@pytest.mark.parametrize("args", [["--list-rules"], ["-n"], ["--lint"]])
def test_commands_that_run_no_job_write_nothing(tmp_path, args):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "config.yaml", bids_dir=str(DEMO_BIDS), output_dir=str(out))
    run_snakemake([*args, "--configfile", str(cfg)], cwd=tmp_path)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.slow
def test_a_run_saves_the_checked_headers(reduced_run):
    cache = reduced_run["out"] / ".neurosmk" / "validated_headers.json"
    entries = json.loads(cache.read_text())
    text = json.dumps(entries)
    # the reduced demo's T1w and DWI series were checked and are remembered
    assert "sub-01_T1w.nii.gz" in text and "sub-02_dwi.nii.gz" in text, text[:500]
