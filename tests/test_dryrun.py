"""Dry runs of the real Snakefile: DAG wiring, BIDS names, sessions, start-up errors."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np

from .conftest import DEMO_BIDS, REPO, job_counts, run_snakemake, write_config


def test_demo_dry_run_jobs(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(DEMO_BIDS), output_dir=str(tmp_path / "out"))
    p = run_snakemake(["-n", "--cores", "2", "--configfile", str(cfg)], cwd=tmp_path)
    jobs = job_counts(p.stdout)
    for rule in ("anat_biascorrect_ants", "anat_skullstrip_python", "anat_segment_atropos", "anat_register_ants",
                 "anat_volumes_qc", "dwi_denoise_dipy", "dwi_degibbs_dipy", "dwi_mask_dipy", "dwi_tensor_dipy",
                 "dwi_stats_qc", "group_anat_volumes", "group_dti_stats", "dataset_description"):
        assert jobs.get(rule) == 1, (rule, jobs)
    out = str(tmp_path / "out")
    assert f"{out}/sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_desc-warp_xfm.nii.gz" in p.stdout
    assert f"{out}/sub-02/dwi/sub-02_model-DTI_param-FA_dwimap.nii.gz" in p.stdout


def test_skipping_steps_rewires_inputs(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(DEMO_BIDS), output_dir=str(tmp_path / "out"),
                       **{"dwi.denoise.method": "none", "dwi.degibbs.method": "none", "steps.anat": False})
    p = run_snakemake(["-n", "--cores", "2", "--configfile", str(cfg)], cwd=tmp_path)
    jobs = job_counts(p.stdout)
    assert "dwi_denoise_dipy" not in jobs and "dwi_degibbs_dipy" not in jobs
    assert not any(r.startswith("anat_") for r in jobs)
    # the tensor now reads the raw DWI straight from the BIDS folder
    block = p.stdout.split("rule dwi_tensor_dipy:")[1].split("\n\n")[0]
    assert str(DEMO_BIDS / "sub-02" / "dwi" / "sub-02_dwi.nii.gz") in block


def _tiny_session_dataset(root):
    rng = np.random.default_rng(0)
    for sub in ("A1", "B2"):
        for ses in ("pre", "post"):
            d = root / f"sub-{sub}" / f"ses-{ses}" / "dwi"
            d.mkdir(parents=True)
            nib.save(nib.Nifti1Image(rng.random((6, 6, 6, 7)).astype(np.float32) + 1, np.eye(4)),
                     str(d / f"sub-{sub}_ses-{ses}_dwi.nii.gz"))
            # 7 volumes, unit vectors: the least a tensor fit takes (neurosmk.validate)
            (d / f"sub-{sub}_ses-{ses}_dwi.bval").write_text("0 1000 1000 1000 1000 1000 1000\n")
            (d / f"sub-{sub}_ses-{ses}_dwi.bvec").write_text(
                "0 1 0 0 0.6 0.8 0\n0 0 1 0 0.8 0 0.6\n0 0 0 1 0 0.6 0.8\n")


def test_sessions_and_participant_selection(tmp_path):
    _tiny_session_dataset(tmp_path / "bids")
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(tmp_path / "bids"), output_dir=str(tmp_path / "out"),
                       participant_label=["B2"], session_label=["post"])
    p = run_snakemake(["-n", "--cores", "2", "--configfile", str(cfg)], cwd=tmp_path)
    assert job_counts(p.stdout)["dwi_tensor_dipy"] == 1
    assert f"{tmp_path}/out/sub-B2/ses-post/dwi/sub-B2_ses-post_model-DTI_param-FA_dwimap.nii.gz" in p.stdout
    assert "sub-A1" not in p.stdout and "ses-pre" not in p.stdout


def test_bad_input_stops_before_any_job(tmp_path):
    _tiny_session_dataset(tmp_path / "bids")
    bad = tmp_path / "bids/sub-A1/ses-pre/dwi/sub-A1_ses-pre_dwi.bval"
    bad.write_text("0 1000\n")
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(tmp_path / "bids"), output_dir=str(tmp_path / "out"))
    p = run_snakemake(["--cores", "1", "--configfile", str(cfg)], cwd=tmp_path, check=False)
    assert p.returncode != 0
    assert f"{bad}: 2 b-values but the DWI series sub-A1_ses-pre_dwi.nii.gz has 7 volumes" in p.stdout + p.stderr
    assert not list((tmp_path / "out").glob("sub-*"))  # nothing ran


def test_unknown_key_and_method_fail_at_start(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(DEMO_BIDS), output_dir=str(tmp_path / "out"),
                       **{"anat.skullstrip.f": 0.3})
    p = run_snakemake(["-n", "--configfile", str(cfg)], cwd=tmp_path, check=False)
    assert p.returncode != 0 and "unknown config key 'anat.skullstrip.f'" in p.stdout + p.stderr
    cfg = write_config(tmp_path / "c.yaml", bids_dir=str(DEMO_BIDS), output_dir=str(tmp_path / "out"),
                       **{"dwi.tensor.method": "camino"})
    p = run_snakemake(["-n", "--configfile", str(cfg)], cwd=tmp_path, check=False)
    assert p.returncode != 0
    assert re.search(r"step 'dwi.tensor': unknown method 'camino' \(known: .*dipy", p.stdout + p.stderr)


def test_every_rule_declares_resources_log_benchmark_env(tmp_path):
    """Introspect the parsed workflow: every job-producing rule has the full declaration."""
    import subprocess
    import sys

    code = f"""
import sys, os
from pathlib import Path
os.chdir({str(tmp_path)!r})
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings
with SnakemakeApi() as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=2),
                      config_settings=ConfigSettings(configfiles=[Path({str(REPO / 'config/config.yaml')!r})],
                          config={{'bids_dir': {str(DEMO_BIDS)!r}, 'output_dir': 'out',
                                  'freesurfer_dir': {str(REPO / 'demo/freesurfer')!r}}}),
                      snakefile=Path({str(REPO / 'Snakefile')!r}))
    w = wf._workflow
    for r in w.rules:
        if r.name == 'all':
            continue
        print(r.name, bool(r.log), bool(r.benchmark), bool(r.conda_env), bool(r.container_img),
              'mem_mb' in r.resources, 'runtime' in r.resources)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln.split() for ln in p.stdout.splitlines() if ln and not ln.startswith(("Building", "Assuming"))]
    assert len(lines) >= 13, p.stdout
    for name, *flags in lines:
        assert flags == ["True"] * 6, (name, flags)
