"""neurosmk.status / neurosmk-status: the cohort's subject x stage table.

* a synthetic output tree (logs, benchmark records, Snakemake incomplete markers) with every
  state: collect() gives exactly the expected rows, the CLI prints them and writes the TSV;
* a real run (laptop, --keep-going) where one subject's DWI is corrupt past its header: that
  subject fails alone, the other finishes, and the status names the failed stage with the
  first error line of its log.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import pandas as pd
import pytest

from neurosmk import paths, status

from .conftest import DEMO_BIDS, run_snakemake, write_config


def _job(out: Path, rule: str, visit: str | None, log_text: str, done: bool, age: float = 100.0) -> Path:
    log = Path(paths.log_path(str(out), rule, visit))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(log_text)
    t = time.time() - age
    os.utime(log, (t, t))
    if done:
        b = Path(paths.bench_path(str(out), rule, visit))
        b.parent.mkdir(parents=True, exist_ok=True)
        b.write_text("s\th:m:s\n1.0\t0:00:01\n")
        os.utime(b, (t + 1, t + 1))
    return log


def _mark_incomplete(workdir: Path, output: str) -> None:
    d = workdir / ".snakemake" / "incomplete"
    d.mkdir(parents=True, exist_ok=True)
    (d / urlsafe_b64encode(output.encode()).decode()).write_text('{"external_jobid": null}')


TRACEBACK = """denoising sub-02
Traceback (most recent call last):
  File "/x/scripts/dwi_tensor.py", line 10, in <module>
    raise ValueError("oops")
neurosmk.io.InputError: /data/sub-02_dwi.nii.gz: 3 of 21 volumes are all NaN
"""


@pytest.fixture()
def tree(tmp_path):
    out = tmp_path / "out"
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / ".snakemake").mkdir()
    # sub-01: everything done (the mask stage's earlier failed backend is older than its success)
    _job(out, "dwi_denoise_dipy", "sub-01", "ok\n", True)
    _job(out, "dwi_mask_mrtrix", "sub-01", "dwi2mask: [ERROR] old failure\n", False, age=500)
    _job(out, "dwi_mask_dipy", "sub-01", "ok\n", True)
    _job(out, "dwi_tensor_dipy", "sub-01", "ok\n", True)
    # sub-02: tensor failed with a traceback
    _job(out, "dwi_denoise_dipy", "sub-02", "ok\n", True)
    _job(out, "dwi_mask_dipy", "sub-02", "ok\n", True)
    _job(out, "dwi_tensor_dipy", "sub-02", TRACEBACK, False)
    # sub-03: denoise was killed (log without error, newer than an old record, outputs incomplete);
    # later stages never ran
    _job(out, "dwi_denoise_dipy", "sub-03", "started\n", True, age=1000)
    _job(out, "dwi_denoise_dipy", "sub-03", "started\n", False, age=10)
    _mark_incomplete(wd, str(out / "sub-03" / "dwi" / "sub-03_desc-denoised_dwi.nii.gz"))
    # cohort level: one done, one failed
    _job(out, "group_dti_stats", None, "ok\n", True)
    _job(out, "methods", None, "Error: sidecar missing for x.nii.gz\n", False)
    return out, wd


def test_rule_stage_names():
    assert status.rule_stage("dwi_tensor_mrtrix") == "dwi.tensor"
    assert status.rule_stage("anat_skullstrip_freesurfer_fslmaths") == "anat.skullstrip"
    assert status.rule_stage("anat_register_metrics_fsl") == "anat.register"
    assert status.rule_stage("anat_volumes_qc") == "anat.volumes"
    assert status.rule_stage("dwi_stats_qc") == "dwi.stats"
    assert status.rule_stage("dwi_preproc_dwifslpreproc") == "dwi.preproc"
    assert status.rule_stage("validate_inputs") == "validate"
    assert status.rule_stage("group_dti_stats") == "group"
    assert status.rule_stage("freesurfer_recon_all") == "freesurfer.recon_all"


def test_first_error_line(tmp_path):
    f = tmp_path / "a.log"
    f.write_text(TRACEBACK)
    assert status.first_error_line(f) == "neurosmk.io.InputError: /data/sub-02_dwi.nii.gz: 3 of 21 volumes are all NaN"
    f.write_text("step 1\nmrconvert: [ERROR] failed to open key/value file\nmore\n")
    assert status.first_error_line(f) == "mrconvert: [ERROR] failed to open key/value file"
    f.write_text("all fine\n")
    assert status.first_error_line(f) == ""


def test_collect_synthetic_tree(tree):
    out, wd = tree
    df = status.collect(out, wd)
    assert list(df.columns) == status.COLUMNS
    got = {(r.participant_id, r.stage): (r.state, r.error, r.log) for r in df.itertuples()}
    assert set(df["session_id"]) == {"n/a"}
    L = lambda rule, v=None: paths.log_path(str(out), rule, v)  # noqa: E731
    assert got == {
        ("sub-01", "dwi.denoise"): ("done", "", L("dwi_denoise_dipy", "sub-01")),
        ("sub-01", "dwi.mask"): ("done", "", L("dwi_mask_dipy", "sub-01")),
        ("sub-01", "dwi.tensor"): ("done", "", L("dwi_tensor_dipy", "sub-01")),
        ("sub-02", "dwi.denoise"): ("done", "", L("dwi_denoise_dipy", "sub-02")),
        ("sub-02", "dwi.mask"): ("done", "", L("dwi_mask_dipy", "sub-02")),
        ("sub-02", "dwi.tensor"): ("failed", "neurosmk.io.InputError: /data/sub-02_dwi.nii.gz: 3 of 21 volumes "
                                   "are all NaN", L("dwi_tensor_dipy", "sub-02")),
        ("sub-03", "dwi.denoise"): ("failed", "interrupted: dwi_denoise_dipy did not finish (1 output(s) marked "
                                    "incomplete by Snakemake; --rerun-incomplete redoes them)",
                                    L("dwi_denoise_dipy", "sub-03")),
        ("sub-03", "dwi.mask"): ("not run", "", ""),
        ("sub-03", "dwi.tensor"): ("not run", "", ""),
        ("n/a", "group"): ("failed", "Error: sidecar missing for x.nii.gz", L("methods")),
    }
    # stages in pipeline order
    assert list(dict.fromkeys(df["stage"])) == ["dwi.denoise", "dwi.mask", "dwi.tensor", "group"]
    s = status.summary(df)
    assert list(s.columns) == ["done", "failed", "running", "not run"]
    assert s.loc["dwi.tensor"].tolist() == [1, 1, 0, 1]
    assert s.loc["dwi.denoise"].tolist() == [2, 1, 0, 0]
    assert s.loc["group"].tolist() == [0, 1, 0, 0]


def test_stage_of_several_rules_fails_when_any_fails(tmp_path):
    """validate_anat and validate_dwi are one stage: a failed validate_dwi stays failed however
    much newer the done validate_anat is (SLURM starts the two chains at different times); so do
    the QC figures beside the QC numbers. An earlier backend of a step counts only while it is the
    newest: its old failure does not hide the current backend's state, nor its old success a
    failure of the current one."""
    out = tmp_path / "out"
    err = "neurosmk.io.InputError: /bids/sub-01_dwi.nii.gz: volume 3 is constant (dropped?)"
    _job(out, "validate_dwi", "sub-01", f"Traceback (most recent call last):\n  x\n{err}\n", False, age=900)
    _job(out, "validate_anat", "sub-01", "ok\n", True, age=10)
    _job(out, "qc_visit_metrics", "sub-01", "ok\n", True, age=10)
    _job(out, "qc_dwi_figures", "sub-01", "ValueError: no b=0 volume\n", False, age=500)
    # sub-02: mrtrix mask failed long ago, dipy mask done since; tensor: dipy done long ago, then
    # the method was switched to mrtrix, which failed
    _job(out, "validate_anat", "sub-02", "ok\n", True)
    _job(out, "dwi_mask_mrtrix", "sub-02", "dwi2mask: [ERROR] old failure\n", False, age=900)
    _job(out, "dwi_mask_dipy", "sub-02", "ok\n", True, age=50)
    _job(out, "dwi_tensor_dipy", "sub-02", "ok\n", True, age=900)
    _job(out, "dwi_tensor_mrtrix", "sub-02", "dwi2tensor: [ERROR] new failure\n", False, age=50)
    got = {(r.participant_id, r.stage): (r.state, r.error, r.log) for r in status.collect(out).itertuples()}
    L = lambda rule, v: paths.log_path(str(out), rule, v)  # noqa: E731
    assert got[("sub-01", "validate")] == ("failed", err, L("validate_dwi", "sub-01"))
    assert got[("sub-01", "qc")] == ("failed", "ValueError: no b=0 volume", L("qc_dwi_figures", "sub-01"))
    assert got[("sub-02", "validate")] == ("done", "", L("validate_anat", "sub-02"))
    assert got[("sub-02", "dwi.mask")] == ("done", "", L("dwi_mask_dipy", "sub-02"))
    assert got[("sub-02", "dwi.tensor")] == ("failed", "dwi2tensor: [ERROR] new failure",
                                             L("dwi_tensor_mrtrix", "sub-02"))


def test_cohort_level_jobs_are_the_group_row(tmp_path):
    """A job without a subject (here a study template, named like a step's rule) is part of the
    cohort-level row, never a column every subject lacks."""
    out = tmp_path / "out"
    _job(out, "anat_biascorrect_ants", "sub-01", "ok\n", True)
    _job(out, "group_anat_volumes", None, "ok\n", True, age=50)
    _job(out, "anat_template_fsl", None, "Error: fslmerge failed\n", False, age=10)
    df = status.collect(out)
    assert sorted(set(df["stage"])) == ["anat.biascorrect", "group"]
    g = df[df["stage"] == "group"].iloc[0]
    assert (g.participant_id, g.state, g.error, g.log) == (
        "n/a", "failed", "Error: fslmerge failed", paths.log_path(str(out), "anat_template_fsl"))


def test_running_jobs_while_snakemake_holds_the_lock(tree):
    """While a snakemake holds .snakemake/locks, a started job without an error line is running
    (exit 0: nothing failed yet); a job with an error line is failed all the same. Without the
    lock the same job reads as interrupted."""
    out, wd = tree
    locks = wd / ".snakemake" / "locks"
    locks.mkdir()
    (locks / "0.input.lock").write_text(str(out))
    got = {(r.participant_id, r.stage): r for r in status.collect(out, wd).itertuples()}
    assert (got[("sub-03", "dwi.denoise")].state, got[("sub-03", "dwi.denoise")].error) == ("running", "")
    assert got[("sub-02", "dwi.tensor")].state == "failed"
    assert status.summary(status.collect(out, wd)).loc["dwi.denoise"].tolist() == [2, 0, 1, 0]
    (locks / "0.input.lock").unlink()
    assert status.collect(out, wd).set_index(["participant_id", "stage"]).loc[("sub-03", "dwi.denoise"), "state"] \
        == "failed"


def test_sessions_and_missing_dir(tmp_path):
    out = tmp_path / "out"
    _job(out, "anat_biascorrect_ants", "sub-01_ses-pre", "ok\n", True)
    _job(out, "anat_biascorrect_ants", "sub-01_ses-post", "RuntimeError: bad\n", False)
    df = status.collect(out, None)
    visits = df[df["participant_id"] != "n/a"]
    assert sorted(zip(visits["session_id"], visits["state"])) == [("ses-post", "failed"), ("ses-pre", "done")]
    assert df[df["stage"] == "group"]["state"].tolist() == ["not run"]
    with pytest.raises(FileNotFoundError, match="output directory not found"):
        status.collect(tmp_path / "nope")


def test_cli_prints_and_writes_tsv(tree, capsys):
    out, wd = tree
    dest = out.parent / "st.tsv"
    rc = status.main([str(out), "--workdir", str(wd), "--tsv", str(dest)])
    text = capsys.readouterr().out
    assert rc == 1  # failures present
    assert ("FAILED sub-02 dwi.tensor: neurosmk.io.InputError: /data/sub-02_dwi.nii.gz: 3 of 21 volumes are all NaN\n"
            f"       log: {paths.log_path(str(out), 'dwi_tensor_dipy', 'sub-02')}") in text
    # the subjects whose own step failed, as the config value that leaves them out (not the cohort
    # row); the interrupted one needs another run instead
    assert ("1 subject(s) with a failed job; the group tables wait for every subject. To make them from the "
            """others: snakemake ... --config 'participant_exclude=["02"]'\n1 subject(s) stopped without an error of """
            "their own (interrupted, ended by SLURM or no error in the log: 03): run again first (--rerun-incomplete; "
            "profiles/slurm retries with more memory and time)\n") in text
    grid = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines() if ln.startswith("sub-0")}
    assert grid["sub-01"] == ["done", "done", "done"]
    assert grid["sub-02"] == ["done", "done", "FAILED"]
    assert grid["sub-03"] == ["FAILED", "-", "-"]
    written = pd.read_csv(dest, sep="\t", keep_default_na=False)
    expected = status.collect(out, wd)
    pd.testing.assert_frame_equal(written, expected)
    assert not list(dest.parent.glob(".st.tsv*"))  # no temp file left
    # default destination, and a bad workdir is a clear error
    assert status.main([str(out), "--workdir", str(wd)]) == 1
    assert Path(paths.status_tsv(str(out))).is_file()
    assert status.main([str(out), "--workdir", str(out)]) == 2
    assert "has no .snakemake/" in capsys.readouterr().err


def _small_dwi(dst: Path, sub: str) -> None:
    import nibabel as nib
    import numpy as np

    src = DEMO_BIDS / "sub-02" / "dwi" / "sub-02_dwi"
    img = nib.load(f"{src}.nii.gz")
    x, y, z = (s // 2 for s in img.shape[:3])
    sl = (slice(x - 12, x + 12), slice(y - 12, y + 12), slice(z - 6, z + 6))
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.array([s.start for s in sl]) + img.affine[:3, 3]
    d = dst / f"sub-{sub}" / "dwi"
    d.mkdir(parents=True)
    nib.Nifti1Image(np.asarray(img.dataobj)[sl], aff, img.header).to_filename(d / f"sub-{sub}_dwi.nii.gz")
    for ext in (".bval", ".bvec"):
        shutil.copy(f"{src}{ext}", d / f"sub-{sub}_dwi{ext}")


@pytest.mark.slow
def test_keep_going_run_names_the_failed_subject(tmp_path):
    """sub-02's DWI is cut short past its header (a truncated download): its first DWI job fails,
    sub-01 finishes under --keep-going, and neurosmk-status names sub-02's stage and error."""
    bids = tmp_path / "bids"
    bids.mkdir()
    shutil.copy(DEMO_BIDS / "dataset_description.json", bids)
    for sub in ("01", "02"):
        _small_dwi(bids, sub)
    bad = bids / "sub-02" / "dwi" / "sub-02_dwi.nii.gz"
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw[: 352 + (len(raw) - 352) // 3]))  # header intact, data cut
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "config.yaml", bids_dir=str(bids), output_dir=str(out), freesurfer_dir=None,
                       steps={"anat": False, "dwi": True, "freesurfer_stats": False},
                       validate_inputs=False, **{"dwi.denoise.method": "none", "dwi.degibbs.method": "none"})
    proc = run_snakemake(["--cores", "2", "--keep-going", "--configfile", str(cfg)], cwd=tmp_path,
                         timeout=900, check=False)
    assert proc.returncode != 0
    assert (out / "sub-01" / "dwi" / "sub-01_model-DTI_param-FA_dwimap.nii.gz").is_file()
    assert not (out / "sub-02" / "dwi" / "sub-02_model-DTI_param-FA_dwimap.nii.gz").exists()

    df = status.collect(out, tmp_path)
    by = {(r.participant_id, r.stage): r for r in df.itertuples()}
    assert {r.state for (p, _), r in by.items() if p == "sub-01"} == {"done"}
    failed = df[df["state"] == "failed"]
    assert failed["participant_id"].tolist() == ["sub-02"], failed
    row = failed.iloc[0]
    assert row["stage"] == "dwi.mask"
    assert row["log"] == paths.log_path(str(out), "dwi_mask_dipy", "sub-02")
    # the exception line of the log (nibabel's message goes on over two lines: kept whole)
    assert row["error"].startswith("OSError: Expected "), row["error"]
    assert row["error"].endswith("- could the file be damaged?"), row["error"]
    assert row["error"].split(" - ")[0].strip() in Path(row["log"]).read_text()
    later = df[(df["participant_id"] == "sub-02") & (df["stage"].isin(["dwi.tensor", "dwi.stats"]))]
    assert set(later["state"]) == {"not run"}
    # the group table waits for every subject: not run under --keep-going
    assert by[("n/a", "group")].state == "not run"


def _error_report(group: bool, jobs: list[dict], slurm_logs: list[str], message: str | None = None) -> str:
    """An error report as Snakemake 9 writes it into its run log (its own formatter, with the
    failed jobs' logs copied in: show_failed_logs, as the SLURM executor's runs have it)."""
    from snakemake.logging import DefaultFormatter

    fmt = DefaultFormatter(show_failed_logs=True)
    if group:
        lines = fmt._format_group_error({"msg": message or "Error in group dwi", "aux_logs": slurm_logs,
                                         "job_error_info": jobs})
    else:
        j = jobs[0]
        lines = fmt._format_job_error({"rule_name": j["rule_name"], "msg": message, "rule_msg": message,
                                       "jobid": j["jobid"], "input": [], "output": j["output"],
                                       "log": j["log"] + slurm_logs, "conda_env": None, "shellcmd": None,
                                       "aux": {}})
    return "\n".join(lines) + "\n"


def test_snakemake_error_reports_explain_slurm_failures(tmp_path, capsys):
    """Snakemake's run log (.snakemake/log) names the jobs of every failed (SLURM group) job and its
    SLURM log. From it: why SLURM ended a job whose own log has no error; a group job's finished
    jobs whose outputs Snakemake then removed (a pack-mate's failure) are not done; its jobs that
    never started (Snakemake creates their empty logs) are not run. The SLURM logs copied into the
    run log, with the reports of the snakemake that ran inside the job, do not count."""
    out, wd = tmp_path / "out", tmp_path / "wd"
    (wd / ".snakemake" / "log").mkdir(parents=True)
    slurm_dir = wd / ".snakemake" / "slurm_logs" / "group_dwi"
    slurm_dir.mkdir(parents=True)
    L = lambda rule, v: paths.log_path(str(out), rule, v)  # noqa: E731

    def job(rule, visit, text, done, outputs_exist, age=60):
        _job(out, rule, visit, text, done, age=age)
        outs = [str(out / visit / "dwi" / f"{visit}_{rule}.nii.gz")]
        if outputs_exist:
            Path(outs[0]).parent.mkdir(parents=True, exist_ok=True)
            Path(outs[0]).write_text("x")
        return {"rule_name": rule, "jobid": 1, "output": outs, "log": [L(rule, visit)]}

    oom = "slurmstepd-n1: error: StepId=812.batch exceeded memory limit (106041344 > 62914560), being killed"
    tl = "slurmstepd-n1: error: *** JOB 813 ON n1 CANCELLED AT 2026-11-30T10:00:00 DUE TO TIME LIMIT ***"
    # sub-04: its DWI group job killed for memory in the tensor fit; the mask had finished (its outputs
    # removed), stats never started
    g4 = [job("dwi_mask_dipy", "sub-04", "ok\n", True, False),
          job("dwi_tensor_dipy", "sub-04", "fitting\n", False, False),
          job("dwi_stats_qc", "sub-04", "", False, False)]
    (slurm_dir / "812.log").write_text(f"Building DAG of jobs...\nlocalrule dwi_tensor_dipy:\n{oom}\n")
    # sub-05 and sub-06 in one SLURM job: sub-05's data fail validation; sub-06 finished, then lost its outputs
    err = "neurosmk: input check failed: /bids/sub-05_dwi.nii.gz: image data cannot be read"
    g5 = [job("validate_dwi", "sub-05", f"{err}\n", False, False), job("dwi_mask_dipy", "sub-05", "", False, False),
          job("validate_dwi", "sub-06", "ok\n", True, False), job("dwi_mask_dipy", "sub-06", "ok\n", True, False)]
    inner = _error_report(False, [g5[0]], [])  # the job's own snakemake, copying sub-05's log
    (slurm_dir / "814.log").write_text("SNAKEMAKE\n=========\n  Date: today\n" + inner + "Exiting\n")
    # sub-07: a SLURM job of one rule, over its time; its log line names the SLURM log too
    g7 = [job("dwi_tensor_dipy", "sub-07", "fitting\n", False, False)]
    (slurm_dir / "813.log").write_text(f"localrule dwi_tensor_dipy:\n{tl}\n")
    # sub-08: a local job without an error line (no SLURM log); sub-09: a finished job of a laptop run
    g8 = [job("dwi_tensor_dipy", "sub-08", "fitting\n", False, False)]
    job("dwi_tensor_dipy", "sub-09", "ok\n", True, True)
    # sub-12 and sub-13 in one SLURM job: sub-12's validation failed first, sub-13's jobs never
    # started (Snakemake created their empty logs); sub-14: killed at its start, nothing written
    # (sub-13's tensor log is from an earlier run, when it failed: a job that never starts keeps it)
    g12 = [job("validate_dwi", "sub-12", f"{err}\n", False, False), job("validate_dwi", "sub-13", "", False, False),
           job("dwi_mask_dipy", "sub-13", "", False, False),
           job("dwi_tensor_dipy", "sub-13", "ValueError: an old failure\n", False, False, age=5000)]
    # (its last log made 10 s after the report: Snakemake makes them 0.1 s per level, after it)
    g14 = [job("validate_dwi", "sub-14", "", False, False), job("dwi_mask_dipy", "sub-14", "", False, False),
           job("dwi_tensor_dipy", "sub-14", "", False, False, age=20)]
    (slurm_dir / "815.log").write_text(f"{oom}\n")
    # sub-15: attempt 1 of its SLURM job failed (the report), attempt 2 succeeded after it; its
    # temp() outputs are gone by now
    g15 = [job("dwi_mask_dipy", "sub-15", "ok\n", True, False, age=10)]
    # sub-16: killed for memory in run 1, then failed without an error line in run 2 on a laptop:
    # run 1's report does not explain run 2
    g16 = [job("dwi_tensor_dipy", "sub-16", "fitting again\n", False, False, age=10)]
    # paths as snakemake prints them when output_dir is relative to where it ran
    rel = [{**j, "log": [os.path.relpath(f, wd) for f in j["log"]], "output": [os.path.relpath(f, wd) for f in
                                                                               j["output"]]} for j in g4]
    run_log = wd / ".snakemake" / "log" / "2026-12-01T000000.000000.snakemake.log"
    stamp = f"[{time.asctime(time.localtime(time.time() - 30))}]\n"  # after the jobs (60-120 s ago)
    run_log.write_text(
        "Building DAG of jobs...\n[Tue Dec  1 05:47:39 2026]\n" + stamp
        + _error_report(True, rel, [os.path.relpath(slurm_dir / "812.log", wd)])
        + stamp + _error_report(True, g5, [str(slurm_dir / "814.log")])
        + stamp
        + _error_report(False, g7, [str(slurm_dir / "813.log")], "SLURM-job '813' failed, SLURM status is: 'TIMEOUT'")
        + _error_report(False, g8, []) + _error_report(True, g12, [str(slurm_dir / "816.log")])
        + _error_report(True, g14, [str(slurm_dir / "815.log")])
        + _error_report(True, g15, [str(slurm_dir / "817.log")])
        + _error_report(True, g16, [str(slurm_dir / "815.log")]) + "Shutting down, this might take some time.\n")
    assert "\nError in rule validate_dwi:" in run_log.read_text()  # inside the copied SLURM log

    got = {(r.participant_id, r.stage): (r.state, r.error, r.log) for r in status.collect(out, wd).itertuples()}
    s812, s813, s814 = (str(slurm_dir / f"{i}.log") for i in (812, 813, 814))
    lost = "{} finished, but Snakemake removed its outputs when the SLURM job it ran in failed (at another job; " \
           "SLURM log: {})"
    assert got[("sub-04", "dwi.mask")] == ("not run", lost.format("dwi_mask_dipy", s812), L("dwi_mask_dipy", "sub-04"))
    assert got[("sub-04", "dwi.tensor")] == ("failed", f"dwi_tensor_dipy ended by SLURM: {oom} (SLURM log: {s812})",
                                             L("dwi_tensor_dipy", "sub-04"))
    assert got[("sub-04", "dwi.stats")] == (
        "not run", f"dwi_stats_qc did not start: the SLURM job it was in failed at another step (SLURM log: {s812})",
        L("dwi_stats_qc", "sub-04"))
    assert got[("sub-05", "validate")] == ("failed", err, L("validate_dwi", "sub-05"))
    assert got[("sub-05", "dwi.mask")][0] == "not run"
    assert got[("sub-06", "validate")] == ("not run", lost.format("validate_dwi", s814), L("validate_dwi", "sub-06"))
    assert got[("sub-06", "dwi.mask")][0] == "not run"
    assert got[("sub-07", "dwi.tensor")] == ("failed", f"dwi_tensor_dipy ended by SLURM: {tl} (SLURM log: {s813})",
                                             L("dwi_tensor_dipy", "sub-07"))
    assert got[("sub-08", "dwi.tensor")] == ("failed", "dwi_tensor_dipy did not finish (no error in its log)",
                                             L("dwi_tensor_dipy", "sub-08"))
    assert got[("sub-09", "dwi.tensor")][0] == "done"
    assert got[("sub-12", "validate")] == ("failed", err, L("validate_dwi", "sub-12"))
    s816 = str(slurm_dir / "816.log")
    for stage, rule in (("validate", "validate_dwi"), ("dwi.mask", "dwi_mask_dipy"), ("dwi.tensor", "dwi_tensor_dipy")):
        assert got[("sub-13", stage)] == ("not run", f"{rule} did not start: the SLURM job it was in failed at "
                                          f"another step (SLURM log: {s816})", L(rule, "sub-13"))
    assert got[("sub-14", "validate")][:2] == ("failed", f"validate_dwi ended by SLURM: {oom} (SLURM log: "
                                               f"{slurm_dir / '815.log'})")
    assert got[("sub-14", "dwi.mask")][0] == got[("sub-14", "dwi.tensor")][0] == "not run"
    assert got[("sub-15", "dwi.mask")][0] == "done"
    assert got[("sub-16", "dwi.tensor")][:2] == ("failed", "dwi_tensor_dipy did not finish (no error in its log)")
    # only the subjects whose own step failed are to be left out; those ended by SLURM need a run
    assert status.main([str(out), "--workdir", str(wd), "--tsv", "-"]) == 1
    text = capsys.readouterr().out
    assert """participant_exclude=["05","12"]'\n""" in text
    assert "5 subject(s) stopped without an error of their own (interrupted, ended by SLURM or no error in the log: " \
           "04, 07, 08, 14, 16): run again first" in text


def test_finished_steps_outdated_by_a_failed_revalidation(tmp_path):
    """The raw DWI of sub-10 was replaced and its validation now fails: the DWI steps that finished
    before are outdated (Snakemake redoes them once the validation passes), its T1w steps are not,
    nor are the group tables of a cohort that was complete before. A later step that failed (here
    the segmentation) outdates nothing: a step beside it (registration) may not depend on it."""
    out = tmp_path / "out"
    for rule in ("validate_anat", "anat_biascorrect_ants", "validate_dwi", "dwi_mask_dipy", "dwi_tensor_dipy"):
        _job(out, rule, "sub-10", "ok\n", True, age=900)
    _job(out, "group_dti_stats", None, "ok\n", True, age=800)
    _job(out, "validate_dwi", "sub-10", "neurosmk: input check failed: x_dwi.nii.gz: volume 3 is all NaN\n", False,
         age=10)
    _job(out, "anat_register_ants", "sub-11", "ok\n", True, age=900)
    _job(out, "anat_segment_atropos", "sub-11", "ValueError: no brain\n", False, age=10)
    got = {(r.participant_id, r.stage): (r.state, r.error) for r in status.collect(out).itertuples()}
    assert got[("sub-10", "validate")][0] == "failed"
    for stage, rule in (("dwi.mask", "dwi_mask_dipy"), ("dwi.tensor", "dwi_tensor_dipy")):
        assert got[("sub-10", stage)] == ("not run", f"{rule} is outdated: validate_dwi ran again after it (the raw "
                                          "data changed) and did not finish; it runs again after that")
    assert got[("sub-10", "anat.biascorrect")] == ("done", "")
    assert got[("n/a", "group")][0] == "not run" and "group_dti_stats is outdated" in got[("n/a", "group")][1]
    assert got[("sub-11", "anat.register")] == ("done", "")


def test_run_log_in_another_time_zone_and_without_copied_logs(tmp_path):
    """Snakemake stamps its run log in its own time zone (time.asctime): a run in a container on UTC
    read from a shell 3 hours off. The report's time is shifted by the run log's last stamp against
    its last write, so a report from before a job's later attempt still does not explain that
    attempt. Without --show-failed-logs a group report is followed by its jobs' own (indented)
    reports, which belong to none of its jobs."""
    from snakemake.logging import DefaultFormatter

    out, wd = tmp_path / "out", tmp_path / "wd"
    (wd / ".snakemake" / "log").mkdir(parents=True)
    log17 = _job(out, "dwi_tensor_dipy", "sub-17", "fitting again\n", False, age=10)  # after the report
    log18 = _job(out, "dwi_mask_dipy", "sub-18", "ok\n", True, age=60)
    slurm = wd / "900.log"
    slurm.write_text("slurmstepd: error: Exceeded job memory limit\n")
    shifted = lambda age: f"[{time.asctime(time.gmtime(time.time() - age + 3 * 3600))}]\n"  # noqa: E731
    jobs = [{"rule_name": "dwi_tensor_dipy", "jobid": 1, "output": [str(out / "t.nii.gz")], "log": [str(log17)]},
            {"rule_name": "dwi_mask_dipy", "jobid": 2, "output": [str(out / "m.nii.gz")], "log": [str(log18)]}]
    fmt = DefaultFormatter(show_failed_logs=False)
    subs = [("    " + ln) for j in jobs for ln in fmt._format_job_error(
        {"rule_name": j["rule_name"], "msg": None, "rule_msg": None, "jobid": j["jobid"], "input": [],
         "output": [str(out / "other.nii.gz")], "log": [str(out / "logs" / "other.log")], "conda_env": None,
         "shellcmd": "dwi2tensor in.mif out.mif", "aux": {}})]
    run_log = wd / ".snakemake" / "log" / "x.snakemake.log"
    run_log.write_text(shifted(30) + "\n".join(fmt._format_group_error(
        {"msg": "Error in group dwi", "aux_logs": [str(slurm)], "job_error_info": jobs}) + subs)
        + "\n" + shifted(0) + "Complete log(s): x\n")
    reports = status.failed_jobs(wd, str(out), 0.0)
    assert sorted(reports) == sorted([str(log17), str(log18)])
    assert reports[str(log18)].outputs == (str(out / "m.nii.gz"),)
    assert abs(reports[str(log17)].when - (time.time() - 30)) < 5  # the stamp, in this process's time
    # a report with no stamp before it gets the run log's last write, unshifted
    no_stamp = "Error in rule x:\n    log: /o/logs/x.log (check log file(s) for error details)\n" + shifted(0)
    assert status.error_reports(no_stamp, 1000.0)[0][0] == 1000.0
    got = {(r.participant_id, r.stage): (r.state, r.error) for r in status.collect(out, wd).itertuples()}
    assert got[("sub-17", "dwi.tensor")] == ("failed", "dwi_tensor_dipy did not finish (no error in its log)")
