"""The scenario configs in .test/ (the static gates lint the workflow under each): each one runs
from the repository root as it is written, and selects what it is named for."""

from __future__ import annotations

import pytest

from .helpers import REPO, SCENARIOS, dry_run, scenario_path
from .test_niwrap_interfaces import check_calls

NAMES = ("default", "tools", "torch", "sessions")


@pytest.fixture(scope="module")
def dry_runs() -> dict[str, tuple[dict, str]]:
    runs = {}
    for name in NAMES:
        jobs, proc = dry_run(scenario_path(name).relative_to(REPO), cwd=REPO)
        runs[name] = (jobs, proc.stdout)
    return runs


def test_every_scenario_file_is_tested():
    assert sorted(p.name for p in SCENARIOS.glob("config_*.yaml")) == sorted(f"config_{n}.yaml" for n in NAMES)


def test_default_runs_the_portable_backends(dry_runs):
    jobs, _ = dry_runs["default"]
    assert {"anat_biascorrect_ants", "anat_register_ants", "dwi_denoise_dipy", "dwi_tensor_dipy"} <= set(jobs)
    assert not any(r.endswith(("_fsl", "_mrtrix", "_torch", "_freesurfer")) for r in jobs)


def test_tools_selects_fsl_freesurfer_mrtrix_and_their_calls_match_the_interfaces(dry_runs):
    jobs, _ = dry_runs["tools"]
    for rule in ("anat_skullstrip_fsl_bet", "anat_segment_fsl_fast", "anat_register_fsl", "anat_subcortical_fsl_first",
                 "anat_biascorrect_freesurfer", "anat_synthseg_freesurfer", "anat_segstats_freesurfer",
                 "freesurfer_recon_all", "dwi_denoise_mrtrix", "dwi_degibbs_mrtrix", "dwi_preproc_dwifslpreproc",
                 "dwi_mask_mrtrix", "dwi_tensor_mrtrix"):
        assert rule in jobs, rule
    problems, checked = check_calls(jobs)
    assert not problems, "\n".join(problems)
    assert {"bet", "fast", "flirt", "fnirt", "recon-all", "mri_synthseg", "dwidenoise", "dwifslpreproc"} <= set(checked)


def test_torch_selects_the_torch_rules(dry_runs):
    jobs, _ = dry_runs["torch"]
    assert {"dwi_denoise_torch", "dwi_tensor_torch"} <= set(jobs)
    assert "dwi_denoise_dipy" not in jobs and "dwi_tensor_dipy" not in jobs


def test_sessions_gives_every_visit_its_chain(dry_runs):
    jobs, stdout = dry_runs["sessions"]
    visits = {o.split("/")[-1].split("_desc-")[0] for j in jobs["anat_biascorrect_ants"]["jobs"] for o in j["output"]}
    assert visits == {"sub-01_ses-A", "sub-01_ses-B"}
    assert len(jobs["dwi_tensor_dipy"]["jobs"]) == 1
    assert "results/test_sessions/sub-02/ses-A/dwi/sub-02_ses-A_model-DTI_param-FA_dwimap.nii.gz" in stdout
    assert len(jobs["qc_visit_page"]["jobs"]) == 3
