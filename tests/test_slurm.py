"""Real SLURM runs on a one-node local cluster (scripts/slurm_local.sh).

Skipped when `sbatch` is missing, unless NEUROSMK_REQUIRE_SLURM=1 (CI), which turns the skip
into a failure. Needs root (the script starts munged/slurmctld/slurmd). The session fixture
starts a cluster of its own (state dir under this run's pytest tmp dir, free ports, its own
munged) and always stops exactly that cluster, so test runs side by side on one machine do not
touch each other. Every subprocess has a timeout.

What is checked, from `scontrol show job` (no accounting DB, so no sacct; the cluster keeps
finished jobs for MinJobAge=600 s):
  * the DWI part of the neurosmk demo (2 subjects) runs through --profile profiles/slurm as
    shipped, i.e. grouped: one SLURM job per subject's DWI chain, asking for the chain's
    largest CPUs and memory and its summed time limit, and running the chain's steps in the
    snakemake that the SLURM job started (one per job, from its SLURM log); the cohort-level jobs
    run locally;
  * a gpu=1 rule (tests/data/slurm/Snakefile, --profile profiles/slurm-gpu) lands on
    partition gpu with CUDA_VISIBLE_DEVICES=0;
  * a rule over its memory is killed by SLURM ("exceeded memory limit") and succeeds on attempt 2 with
    the attempt-scaled memory;
  * failed SLURM jobs in neurosmk-status: a subject whose data fail, packed with a good one (the
    good one's outputs are removed with the job), and a group job killed for its memory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from neurosmk import paths

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

pytestmark = pytest.mark.slurm

SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+)")


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory):
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        msg = "SLURM not installed (apt-get install -y slurm-wlm munge)"
        if os.environ.get("NEUROSMK_REQUIRE_SLURM") == "1":
            pytest.fail(msg + " but NEUROSMK_REQUIRE_SLURM=1")
        pytest.skip(msg)
    state = tmp_path_factory.mktemp("slurm_state")
    env = dict(os.environ, SLURM_CONF=str(state / "slurm.conf"),
               PATH=str(state / "bin") + os.pathsep + os.environ.get("PATH", ""))
    env.pop("NEUROSMK_SLURM_STATE", None)
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "start", str(state)], env=env, capture_output=True,
                              text=True, timeout=90)
        if proc.returncode != 0:
            pytest.fail(f"slurm_local.sh start failed:\n{proc.stdout}\n{proc.stderr}")
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], env=env, capture_output=True, timeout=90)


def run_snakemake(args, cwd, env, timeout):
    env = dict(env)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(SNAKEMAKE + list(args), cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, timeout=20)  # this run's cluster only
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"snakemake timed out after {timeout} s:\n{out[-3000:]}\n{err[-6000:]}")
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{log[-8000:]}"
    return log, wall


def scontrol_job(jobid: str, env) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", jobid], env=env, capture_output=True,
                         text=True, timeout=20, check=True).stdout
    fields = {}
    for tok in out.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields.setdefault(k, v)
    return fields


def submitted_jobs(log: str, env) -> list[dict]:
    jobs = [scontrol_job(sid, env) for _, sid in SUBMITTED.findall(log)]
    for j in jobs:
        m = re.match(r"rule_(\w+?)(?:_wildcards_(.*))?$", j.get("Comment", ""))
        j["rule"] = m.group(1) if m else None
    return jobs


def report_timing(label: str, jobs: list[dict], wall: float) -> None:
    """Print SLURM-side run time of each job against the Snakemake wall time (pytest -s)."""
    from datetime import datetime

    def ts(v):
        return datetime.fromisoformat(v)

    busy = 0.0
    for j in jobs:
        run = (ts(j["EndTime"]) - ts(j["StartTime"])).total_seconds()
        queued = (ts(j["StartTime"]) - ts(j["SubmitTime"])).total_seconds()
        busy += run
        print(f"  {j['JobId']:>4} {j['rule']:<22} {j['JobState']:<14} queued {queued:4.0f} s  ran {run:4.0f} s")
    print(f"{label}: {len(jobs)} SLURM jobs, {wall:.1f} s wall, {busy:.0f} s summed job run time")


def mem_mb(job: dict) -> int:
    m = re.match(r"(\d+)([MG])", job["MinMemoryNode"])
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def minutes(limit: str) -> int:
    parts = [int(x) for x in re.split(r"[-:]", limit)]
    if "-" in limit:
        d, h, mi, s = parts
        return d * 1440 + h * 60 + mi
    h, mi, s = parts
    return h * 60 + mi


def _small_bids(dst: Path, subjects=("02",)) -> Path:
    """sub-02's DWI cropped to its central 24x24x12 voxels, as each of `subjects`: same
    pipeline, seconds per job."""
    import nibabel as nib
    import numpy as np

    src = REPO / "demo" / "bids"
    dst.mkdir(parents=True)
    shutil.copy(src / "dataset_description.json", dst / "dataset_description.json")
    (dst / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    img = nib.load(src / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    x, y, z = (s // 2 for s in img.shape[:3])
    sl = (slice(x - 12, x + 12), slice(y - 12, y + 12), slice(z - 6, z + 6))
    data = np.asarray(img.dataobj)[sl]
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.array([s.start for s in sl]) + img.affine[:3, 3]
    for sub in subjects:
        d = dst / f"sub-{sub}" / "dwi"
        d.mkdir(parents=True)
        nib.Nifti1Image(data, aff, img.header).to_filename(d / f"sub-{sub}_dwi.nii.gz")
        for ext in ("bval", "bvec"):
            shutil.copy(src / "sub-02" / "dwi" / f"sub-02_dwi.{ext}", d / f"sub-{sub}_dwi.{ext}")
    return dst


# The DWI chain with denoise/degibbs off: validate -> mask -> tensor -> (stats | QC figures), one
# group job per subject; the visit's QC numbers and page are a second (qc) group job.
# Per rule (mem_mb, runtime min, cpus) as the rule and profiles/slurm ask (cpus = threads).
CHAIN = {"validate_dwi": (2000, 10, 1), "dwi_mask_dipy": (2000, 10, 2), "dwi_tensor_dipy": (3000, 20, 1),
         "dwi_stats_qc": (2000, 10, 1), "qc_dwi_figures": (2000, 10, 1)}
QC_CHAIN = {"qc_visit_metrics": (2000, 10, 1), "qc_visit_page": (1000, 5, 1)}


def serial(chain):
    """What a group job asks for with profiles/slurm's `group_slot` (one per job, a `local`
    resource of which a group job has one): Snakemake stacks the steps that could run side by side
    in series, as the group job runs them (one at a time), so the request is the largest
    step's memory and CPUs and the sum of the steps' time. Without it, the two QC steps that
    can run side by side (dwi_stats_qc, qc_dwi_figures) would add up to 4000 MB and 2 CPUs."""
    return (max(m for m, _, _ in chain.values()), sum(t for _, t, _ in chain.values()),
            max(c for _, _, c in chain.values()))


GROUP_JOB = serial(CHAIN)
QC_GROUP_JOB = serial(QC_CHAIN)
# cohort-level rules run beside snakemake (localrules), not as SLURM jobs
LOCAL = {"dataset_description", "group_dti_stats", "methods", "qc_group_page"}


def test_dwi_demo_runs_as_grouped_slurm_jobs(slurm_env, tmp_path):
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(bids_dir=str(_small_bids(tmp_path / "bids", ("01", "02"))), output_dir=str(tmp_path / "out"),
               freesurfer_dir=None, steps={"anat": False, "dwi": True, "freesurfer_stats": False})
    # Keep the chain short: denoise/degibbs off -> mask -> tensor -> stats per subject.
    cfg["dwi"]["denoise"]["method"] = "none"
    cfg["dwi"]["degibbs"]["method"] = "none"
    cfg["dwi"]["mask"]["threads"] = 2       # checks --cpus-per-task follows the chain's largest threads
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))

    log, wall = run_snakemake(
        ["-s", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm"),
         "--slurm-logdir", str(tmp_path / "slurm_logs"), "--slurm-keep-successful-logs"],
        cwd=work, env=slurm_env, timeout=600)

    jobs = submitted_jobs(log, slurm_env)
    report_timing("DWI demo through SLURM, grouped", jobs, wall)
    # two sbatch per subject: its whole DWI chain, and its QC numbers and page
    assert len(jobs) == 4, [j.get("Comment") for j in jobs]
    for j in jobs:
        assert j["JobState"] == "COMPLETED", j
        assert j["Partition"] == "cpu", j
        chain, expected = (CHAIN, GROUP_JOB) if j["rule"].startswith("dwi_") else (QC_CHAIN, QC_GROUP_JOB)
        assert j["rule"].startswith(("dwi_", "qc_")), j["rule"]          # group name first
        assert all(r in j["rule"] for r in chain), j["rule"]              # then its rules
        assert (mem_mb(j), minutes(j["TimeLimit"]), int(j["NumCPUs"])) == expected, j
    for rule in LOCAL:
        assert re.search(rf"localrule {rule}:", log), rule
    # each group job ran its steps in the one snakemake its SLURM job started
    # (neurosmk.startup.run_steps_in_job), not an srun + a fresh snakemake per step
    for j in jobs:
        text = next((tmp_path / "slurm_logs").glob(f"*/{j['JobId']}.log")).read_text()
        chain = CHAIN if j["rule"].startswith("dwi_") else QC_CHAIN
        assert text.count("Building DAG of jobs") == 1, (j["JobId"], text.count("Building DAG of jobs"))
        assert all(f"localrule {rule}:" in text for rule in chain), text[-3000:]
    # every job of every chain ran (inside its group job) and succeeded
    for sub in ("01", "02"):
        for rule in (*CHAIN, *QC_CHAIN):
            assert Path(paths.bench_path(str(tmp_path / "out"), rule, f"sub-{sub}")).is_file(), (rule, sub)
        assert (tmp_path / "out" / f"sub-{sub}" / "dwi" / f"sub-{sub}_model-DTI_param-FA_dwimap.nii.gz").is_file()
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "group" / "dwi_dti_roistats.tsv", sep="\t", dtype=str)
    col = "participant_id" if "participant_id" in table else "subject"   # the new or the old key
    assert {v.removeprefix("sub-") for v in table[col]} == {"01", "02"}

    # the status command reads the SLURM run like a laptop run
    from neurosmk import status

    df = status.collect(tmp_path / "out", work)
    assert set(df["state"]) == {"done"}, df[df["state"] != "done"]
    assert sorted(df["participant_id"].unique()) == ["n/a", "sub-01", "sub-02"]


def test_gpu_rule_and_memory_retry(slurm_env, tmp_path):
    log, wall = run_snakemake(
        ["-s", str(REPO / "tests" / "data" / "slurm" / "Snakefile"), "-d", str(tmp_path),
         "--profile", str(REPO / "profiles" / "slurm-gpu"),
         "--slurm-logdir", str(tmp_path / "slurm_logs")],
        cwd=tmp_path, env=slurm_env, timeout=240)

    gpu = dict(line.split("=", 1) for line in (tmp_path / "gpu.txt").read_text().split())
    assert gpu["SLURM_JOB_PARTITION"] == "gpu"
    assert gpu["CUDA_VISIBLE_DEVICES"] == "0"

    jobs = submitted_jobs(log, slurm_env)
    report_timing("GPU + memory-retry workflow through SLURM", jobs, wall)
    gpu_jobs = [j for j in jobs if j["rule"] == "gpu_probe"]
    assert len(gpu_jobs) == 1 and gpu_jobs[0]["Partition"] == "gpu"
    assert "gpu" in gpu_jobs[0].get("TresPerJob", "") + gpu_jobs[0].get("TRES", ""), gpu_jobs[0]

    hog = [j for j in jobs if j["rule"] == "memhog"]
    assert [j["JobState"] for j in hog][1:] == ["COMPLETED"], [(j["JobId"], j["JobState"]) for j in hog]
    # attempt 1 was killed by SLURM for its memory (the rule runs in the job's own snakemake,
    # as neurosmk's do). Without the cgroup plugins slurmctld records the job as FAILED, so the
    # cause is read from the job's SLURM log, kept because it failed.
    assert hog[0]["JobState"] in ("FAILED", "OUT_OF_MEMORY")
    first_log = tmp_path / "slurm_logs" / "rule_memhog" / f"{hog[0]['JobId']}.log"
    assert "exceeded memory limit" in first_log.read_text()
    assert [mem_mb(j) for j in hog] == [300, 1200]
    assert "1200" in (tmp_path / "memhog.txt").read_text()


def _dwi_work(root: Path, subjects, bad=None) -> Path:
    """A working directory with the DWI-only config of the grouped test for `subjects`; `bad`'s
    DWI cut short past its header (its validation job fails)."""
    import gzip

    work = root / "work"
    (work / "config").mkdir(parents=True)
    bids = _small_bids(root / "bids", subjects)
    if bad:
        f = bids / f"sub-{bad}" / "dwi" / f"sub-{bad}_dwi.nii.gz"
        raw = gzip.decompress(f.read_bytes())
        f.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(bids_dir=str(bids), output_dir=str(root / "out"), freesurfer_dir=None,
               steps={"anat": False, "dwi": True, "freesurfer_stats": False})
    cfg["dwi"]["denoise"]["method"] = "none"
    cfg["dwi"]["degibbs"]["method"] = "none"
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return work


def _failing_run(work: Path, extra: list[str], env) -> str:
    env = dict(env, PYTHONPATH=str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm"),
                                       "--retries", "0", *extra], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def test_failed_slurm_jobs_in_the_status(slurm_env, tmp_path):
    """What a failed SLURM job leaves, read by neurosmk-status (profiles/README.md, "A group job
    fails as a whole"):
    * two subjects packed into one SLURM job (group-components 2), one with data that fail
      validation: Snakemake removes the finished subject's outputs too; the status names the bad
      subject's validation error, reports the other's steps as not run (their outputs removed) and
      the bad one's later steps as never started, and leaves only the bad subject to exclude;
    * a subject's DWI group job with far too little memory: SLURM kills it in its first step, and
      the status gives SLURM's reason from the SLURM log (named in Snakemake's run log)."""
    from neurosmk import status

    work = _dwi_work(tmp_path / "pack", ("01", "03"), bad="03")
    out = tmp_path / "pack" / "out"
    log = _failing_run(work, ["--group-components", "dwi=2", "qc=2"], slurm_env)
    assert len(SUBMITTED.findall(log)) == 1, log[-3000:]  # both chains in one SLURM job
    assert not (out / "sub-01" / "dwi" / "sub-01_model-DTI_param-FA_dwimap.nii.gz").exists()
    assert Path(paths.bench_path(str(out), "dwi_tensor_dipy", "sub-01")).is_file()  # it had finished
    df = status.collect(out, work)
    got = {(r.participant_id, r.stage): (r.state, r.error) for r in df.itertuples()}
    assert got[("sub-03", "validate")][0] == "failed"
    assert "sub-03_dwi.nii.gz: image data cannot be read" in got[("sub-03", "validate")][1]
    for stage in ("validate", "dwi.mask", "dwi.tensor", "dwi.stats"):
        state, err = got[("sub-01", stage)]
        assert state == "not run" and "finished, but Snakemake removed its outputs when the SLURM job" in err, stage
    state, err = got[("sub-03", "dwi.mask")]
    assert state == "not run" and "did not start: the SLURM job it was in failed at another step" in err
    assert df[df["state"] == "failed"]["participant_id"].tolist() == ["sub-03"]
    assert status.exclude_hint(df[df["state"] == "failed"]).endswith("""participant_exclude=["03"]'""")

    work = _dwi_work(tmp_path / "oom", ("01",))
    chain = ["validate_dwi", "dwi_gradients", *CHAIN]
    _failing_run(work, ["--set-resources", *[f"{r}:mem_mb=60" for r in dict.fromkeys(chain)]], slurm_env)
    df = status.collect(tmp_path / "oom" / "out", work)
    failed = df[df["state"] == "failed"]
    assert failed["stage"].tolist() == ["validate"], df
    assert re.fullmatch(r"validate_dwi ended by SLURM: slurmstepd\S*: error: \S+ exceeded memory limit \(\d+ > "
                        r"62914560\), being killed \(SLURM log: .*/\.snakemake/slurm_logs/group_dwi\S*/\d+\.log\)",
                        failed.iloc[0]["error"]), failed.iloc[0]["error"]
    assert set(df[(df["participant_id"] == "sub-01") & (df["stage"] != "validate")]["state"]) == {"not run"}
