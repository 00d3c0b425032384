"""The input checks inside a Snakemake run (issues #10, #15): header-level problems stop the run
before any job; a subject whose voxels are bad (passing the header check) fails only its own
chain in its validate_dwi job, and with --keep-going the others finish; the per-visit report
never makes finished jobs re-run; hostile file names are refused before anything runs."""

from __future__ import annotations

import gzip
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from neurosmk import status

from .conftest import dwi_slab_bids, job_counts, run_snakemake, write_config

DWI_ONLY = {"steps.anat": False, "freesurfer_dir": None}


def _cohort(tmp_path: Path, subjects=("02", "03", "04")) -> Path:
    """The demo DWI cut to 6 slices, copied to several subjects."""
    bids = dwi_slab_bids(tmp_path, z0=14, nz=6)
    src = bids / "sub-02" / "dwi"
    for s in subjects:
        if s == "02":
            continue
        d = bids / f"sub-{s}" / "dwi"
        d.mkdir(parents=True)
        for ext in (".nii.gz", ".bval", ".bvec"):
            shutil.copy(src / f"sub-02_dwi{ext}", d / f"sub-{s}_dwi{ext}")
    return bids


def _fa(out: Path, s: str) -> Path:
    return out / f"sub-{s}" / "dwi" / f"sub-{s}_model-DTI_param-FA_dwimap.nii.gz"


@pytest.mark.slow
def test_bad_subject_fails_alone_with_keep_going(tmp_path):
    bids = _cohort(tmp_path)
    bad = bids / "sub-03" / "dwi" / "sub-03_dwi.nii.gz"
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # truncated: the header is intact
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(bids), output_dir=str(out), **DWI_ONLY)
    p = run_snakemake(["--cores", "2", "--keep-going", "--configfile", str(cfg)], cwd=tmp_path, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0
    # the bad subject: only its validation job ran, and it names the file and the cause
    log = (out / "logs" / "validate_dwi" / "sub-03.log").read_text()
    assert f"neurosmk: input check failed: {bad}: image data cannot be read (" in log
    assert f"{bad}: image data cannot be read" in text  # also in Snakemake's own output
    assert not (out / ".neurosmk" / "validate" / "dwi" / "sub-03.json").exists()
    assert not (out / "sub-03").exists()
    # neurosmk-status names it: its validate stage failed with that line, later stages not run
    st = status.collect(out, tmp_path)
    failed = st[st["state"] == "failed"]
    assert failed[["participant_id", "stage"]].values.tolist() == [["sub-03", "validate"]], st
    assert f"{bad}: image data cannot be read (" in failed.iloc[0]["error"]
    assert failed.iloc[0]["log"] == str(out / "logs" / "validate_dwi" / "sub-03.log")
    assert set(st[st["participant_id"] == "sub-03"]["state"]) == {"failed", "not run"}
    assert set(st[st["participant_id"].isin(["sub-02", "sub-04"])]["state"]) == {"done"}
    # the others finished, with their reports
    for s in ("02", "04"):
        assert _fa(out, s).stat().st_size > 10000
        rep = (out / ".neurosmk" / "validate" / "dwi" / f"sub-{s}.json").read_text()
        assert '"status": "passed"' in rep and '"shape": [\n        72,' in rep
    # the report is neurosmk's record, not data: no sidecar lists it as a source
    den = (out / "sub-02" / "dwi" / "sub-02_desc-denoised_dwi.json").read_text()
    assert ".neurosmk" not in den and "bids:raw:sub-02/dwi/sub-02_dwi.nii.gz" in den

    # a second run schedules the bad subject's chain only: the good subjects' reports and results stand
    p = run_snakemake(["-n", "--cores", "2", "--configfile", str(cfg)], cwd=tmp_path)
    jobs = job_counts(p.stdout)
    assert jobs.get("validate_dwi") == 1 and jobs.get("dwi_denoise_dipy") == 1, jobs
    assert "sub-02" not in p.stdout.split("Job stats:")[0].replace(str(bids / "sub-02"), "")

    # the status's way out: leave the failed subject out (its own words), and the group tables are
    # made from the others, with no subject's job run again
    hint = status.exclude_hint(failed)
    assert hint.endswith("""--config 'participant_exclude=["03"]'"""), hint
    excl = ["--config", shlex.split(hint.split("--config ", 1)[1])[0]]
    p = run_snakemake(["--cores", "2", "--configfile", str(cfg), *excl], cwd=tmp_path)
    ran = job_counts(p.stdout + p.stderr)
    assert sorted(ran) == ["all", "group_dti_stats", "group_long", "methods", "qc_group_page"], ran
    table = pd.read_csv(out / "group" / "dwi_dti_roistats.tsv", sep="\t")
    assert sorted(set(table["participant_id"])) == ["sub-02", "sub-04"]

    # fixed data, and the subject back in: it runs, nothing else does but the group tables
    shutil.copy(bids / "sub-02" / "dwi" / "sub-02_dwi.nii.gz", bad)
    p = run_snakemake(["--cores", "2", "--configfile", str(cfg)], cwd=tmp_path)
    ran = job_counts(p.stdout + p.stderr)  # one job per rule: sub-03's chain, the group tables
    assert ran.get("validate_dwi") == 1 and ran.get("group_dti_stats") == 1 and set(ran.values()) == {1}, ran
    assert _fa(out, "03").stat().st_size > 10000
    table = pd.read_csv(out / "group" / "dwi_dti_roistats.tsv", sep="\t")
    assert sorted(set(table["participant_id"])) == ["sub-02", "sub-03", "sub-04"]


def test_hostile_file_name_refused_before_anything_runs(tmp_path):
    bids = _cohort(tmp_path, ("02",))
    name = "sub-02_acq-$(touch PWNED)_dwi.nii.gz"
    shutil.copy(bids / "sub-02" / "dwi" / "sub-02_dwi.nii.gz", bids / "sub-02" / "dwi" / name)
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(bids), output_dir=str(out), **DWI_ONLY,
                       **{"dwi.denoise.method": "mrtrix"})
    for args in (["-n"], []):
        p = run_snakemake(args + ["--cores", "1", "--configfile", str(cfg)], cwd=tmp_path, check=False)
        assert p.returncode != 0
        assert (f"{bids}/sub-02/dwi/{name}: not a valid BIDS file name: 'acq-$(touch PWNED)' is not a BIDS "
                "entity key-label pair (labels are alphanumeric); rename or remove it") in p.stdout + p.stderr
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()
    assert not (out / "sub-02").exists() and not (out / "logs").exists()


def test_header_problem_stops_at_start_and_warnings_are_shown(tmp_path):
    bids = _cohort(tmp_path, ("02", "03"))
    (bids / "dataset_description.json").unlink()
    bval = bids / "sub-03" / "dwi" / "sub-03_dwi.bval"
    bval.write_text(bval.read_text().replace("2000", "-2000", 2))
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(bids), output_dir=str(out), **DWI_ONLY)
    p = run_snakemake(["--cores", "2", "--keep-going", "--configfile", str(cfg)], cwd=tmp_path, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0
    assert f"neurosmk: warning: {bids}: no dataset_description.json" in text
    assert f"{bval}: negative b-value(s) [-2000.0, -2000.0] at volume(s) 1, 2" in text
    assert not (out / "logs").exists()  # no job ran, not even the good subject's


def test_first_raw_reading_rule_waits_for_validation(tmp_path):
    """The report is an input of exactly the rules that read the raw DWI: with denoising off,
    Gibbs removal reads the raw series and takes it; the mask (reading the degibbs output) not."""
    from .helpers import parse_dry_run

    bids = _cohort(tmp_path, ("02",))
    out = tmp_path / "out"
    report = f"{out}/.neurosmk/validate/dwi/sub-02.json"
    for over, first, later in ((dict(), "dwi_denoise_dipy", "dwi_degibbs_dipy"),
                               ({"dwi.denoise.method": "none"}, "dwi_degibbs_dipy", "dwi_mask_dipy"),
                               ({"dwi.denoise.method": "none", "dwi.degibbs.method": "none"},
                                "dwi_mask_dipy", "dwi_tensor_dipy")):
        cfg = write_config(tmp_path / "c.yaml", bids_dir=str(bids), output_dir=str(out), **DWI_ONLY, **over)
        jobs = parse_dry_run(run_snakemake(["-n", "--cores", "1", "--configfile", str(cfg)], cwd=tmp_path).stdout)
        assert jobs[first]["valid"] == [report], (over, jobs[first])
        assert jobs[later]["valid"] == [], (over, jobs[later])
        assert jobs["validate_dwi"]["input"] == [str(bids / f"sub-02/dwi/sub-02_dwi{e}")
                                                   for e in (".nii.gz", ".bval", ".bvec")]
