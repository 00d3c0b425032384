"""Execution profiles (profiles/*/config.v8+.yaml): keys, a dry run, GPU requests. No SLURM needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .helpers import run_snakemake

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"

# rules whose tools have GPU builds (eddy_cuda, SynthStrip, the PyTorch tensor fit); only these
# may ask for one: the backend registry's GPU-capable rules
from neurosmk.backends import gpu_rules, rule_resources  # noqa: E402

GPU_RULES = gpu_rules()


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.v8+.yaml").read_text())


def snakemake(args, timeout=120):
    proc = run_snakemake(args, timeout=timeout)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def workflow_rules() -> set[str]:
    out = snakemake(["--list-rules"])
    return {line.strip() for line in out.splitlines() if re.fullmatch(r"\s*\w+\s*", line)}


def test_laptop_profile_keys():
    p = load("laptop")
    assert p["cores"] == 2
    assert p["resources"]["mem_mb"] >= 6000            # the largest rule (anat_register_ants) fits
    assert p["rerun-triggers"] == ["mtime", "params", "input", "software-env", "code"]
    assert p["keep-going"] is False
    assert p["printshellcmds"] is True and p["show-failed-logs"] is True
    assert "latency-wait" in p
    assert "executor" not in p


@pytest.mark.parametrize("name", ["slurm", "slurm-gpu"])
def test_slurm_profile_keys(name):
    p = load(name)
    assert p["executor"] == "slurm"
    assert p["jobs"] >= 1 and p["retries"] == 2
    d = p["default-resources"]
    assert {"mem_mb", "runtime"} <= set(d) and d["slurm_partition"] == "cpu"
    assert "gpu" not in d
    # works without an accounting database
    assert p["slurm-status-command"] == "squeue"
    assert p["slurm-init-seconds-before-status-checks"] <= 10
    # per-rule memory and time (attempt-scaled) come from the backend registry, not the profile
    # (tests/test_backends_registry.py)
    assert not any({"mem_mb", "runtime"} & set(r) for r in (p.get("set-resources") or {}).values()), name


def test_gpu_profile_requests_gpu_only_for_gpu_rules(workflow_rules):
    p = load("slurm-gpu")
    with_gpu = {r for r, res in p["set-resources"].items() if res.get("gpu")}
    assert with_gpu == GPU_RULES
    for rule in with_gpu:
        assert p["set-resources"][rule]["gpu"] == 1
        assert p["set-resources"][rule]["slurm_partition"] == "gpu"
    for rule, res in p["set-resources"].items():
        if rule not in GPU_RULES:
            assert "gpu" not in res and res.get("slurm_partition", "cpu") == "cpu", rule
    # no rule of the current workflow is a GPU rule unless listed
    assert workflow_rules, "no rules listed"
    assert not any("gpu" in str(v) for v in load("slurm").get("set-resources", {}).values())
    assert p.get("apptainer-args") == "--nv"


def test_gpu_profile_dry_run_resources():
    """Dry run through the GPU profile: every job of the demo stays on partition cpu, no gpu."""
    out = snakemake(["-n", "--forceall", "--profile", str(PROFILES / "slurm-gpu"), "--executor", "dryrun"])
    res_lines = [ln for ln in out.splitlines() if ln.strip().startswith("resources:")]
    assert res_lines
    for ln in res_lines:
        assert "slurm_partition=cpu" in ln and "gpu=" not in ln, ln


def test_laptop_profile_dry_run():
    out = snakemake(["-n", "--profile", str(PROFILES / "laptop"), "--forceall"])
    assert "dwi_tensor_dipy" in out and "anat_register_ants" in out
    assert re.search(r"total\s+\d+", out)


def test_profile_rule_names_exist_in_workflow():
    """set-resources entries for unknown rules are silently ignored by snakemake: catch typos."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    defined = set(rule_resources())  # the registry lists every rule (tests/test_backends_registry.py)
    for prof in ("laptop", "slurm", "slurm-gpu"):
        cfg = yaml.safe_load((root / "profiles" / prof / "config.v8+.yaml").read_text())
        unknown = set(cfg.get("set-resources", {}) or {}) - defined
        assert not unknown, (prof, unknown)


def test_slurm_profile_groups_every_subject_chain():
    """profiles/slurm groups each subject's anat and dwi chain: every anat_*/dwi_* rule of every
    backend is in group anat or dwi (a rule left out would cost one SLURM job per subject), the
    names are real rules, group-components covers both groups, and slurm-gpu stays ungrouped
    (a GPU rule in a group would put the whole chain on the GPU partition)."""
    defined = set(rule_resources())  # the registry lists every rule (tests/test_backends_registry.py)
    p = load("slurm")
    groups = p["groups"]
    assert set(groups) <= defined, set(groups) - defined
    # per-visit rules; anat_template_fsl(_brain) run once per run (grouped, it would join every chain)
    chain_rules = {r for r in defined if r.startswith(("anat_", "dwi_", "validate_"))} - {"anat_template_fsl",
                                                                                         "anat_template_fsl_brain"}
    assert chain_rules <= set(groups), chain_rules - set(groups)
    # the QC rules of a visit: its DWI figures join the dwi chain, its numbers and page a qc group
    assert groups["qc_dwi_figures"] == "dwi"
    assert groups["qc_visit_metrics"] == groups["qc_visit_page"] == "qc"
    for r in chain_rules:
        assert groups[r] == (r.split("_")[1] if r.startswith("validate_") else r.split("_")[0]), r
    assert set(p["group-components"]) == set(groups.values())
    assert all(isinstance(n, int) and n >= 1 for n in p["group-components"].values())
    assert "groups" not in load("slurm-gpu")


def test_slurm_profile_group_jobs_dry_run():
    """A dry run of the demo through profiles/slurm forms one anat and one dwi group job per subject."""
    out = snakemake(["-n", "--forceall", "--profile", str(PROFILES / "slurm"), "--executor", "dryrun"])
    assert out.count("Group job anat") == 1 and out.count("Group job dwi") == 1, out[-3000:]
