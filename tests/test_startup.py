"""A job's own snakemake process (cluster job, group job step) indexes only its subjects
(neurosmk.startup, rules/common.smk) and gives the same job as the whole-cohort parse."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neurosmk import bids
from neurosmk.io import InputError
from neurosmk.startup import job_subjects, target_job_specs

REPO = Path(__file__).resolve().parents[1]


def test_target_job_specs_reads_the_command_line():
    argv = ["--snakefile", "S", "--target-jobs", "dwi_tensor_dipy:subject=01", "validate_dwi:subject=02",
            "--allowed-rules", "dwi_tensor_dipy", "--cores", "1"]
    assert target_job_specs(argv) == ["dwi_tensor_dipy:subject=01", "validate_dwi:subject=02"]
    assert target_job_specs(["--target-jobs=a:subject=3"]) == ["a:subject=3"]
    assert target_job_specs(["--cores", "1"]) is None


@pytest.mark.parametrize("argv, main, expected", [
    (["--target-jobs", "dwi_tensor_dipy:subject=01", "--mode", "remote"], False, {"01"}),
    (["--target-jobs", "a:subject=01,session=A", "b:subject=02,session=B"], False, {"01", "02"}),
    # the main process always takes the whole cohort
    (["--target-jobs", "dwi_tensor_dipy:subject=01"], True, None),
    # a cohort-level job (no subject wildcard: its inputs list every subject) in the group
    (["--target-jobs", "dwi_tensor_dipy:subject=01", "group_dwi_tables:"], False, None),
    (["--target-jobs", "fs_parse_subject:fssub=sub-01"], False, None),
    ([], False, None),
])
def test_job_subjects(argv, main, expected):
    got = job_subjects(argv, main_process=main)
    assert (None if got is None else set(got)) == expected


def _dataset(root: Path, subjects, sessions=None):
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text("{}")
    for s in subjects:
        for ses in sessions or [None]:
            d = root / f"sub-{s}" / (f"ses-{ses}" if ses else "") / "anat"
            d.mkdir(parents=True)
            name = f"sub-{s}" + (f"_ses-{ses}" if ses else "") + "_T1w.nii.gz"
            (d / name).write_bytes(b"")


def test_index_of_some_subjects(tmp_path):
    _dataset(tmp_path, ["01", "02", "03"], ["A", "B"])
    full = bids.index_bids(tmp_path)
    part = bids.index_bids(tmp_path, subjects={"02"})
    assert sorted(part.visits) == [("02", "A"), ("02", "B")]
    assert part.visits[("02", "A")] == full.visits[("02", "A")]
    assert part.has_sessions
    # labels of the other subjects/sessions: an error for the whole index only
    with pytest.raises(InputError, match="participant_label not found.*01"):
        part.select(["01", "02"], None)
    assert sorted(part.select(["01", "02"], ["B"], strict=False).visits) == [("02", "B")]


def test_job_process_parses_its_subject_only(tmp_path):
    """The job command a cluster runs (--target-jobs ... --mode remote, dry) builds the same job
    with an index of its own subject, and skips the header checks: a broken header of another
    subject stops the main process, not the job."""
    bids_dir = tmp_path / "bids"
    shutil.copytree(REPO / "demo" / "bids", bids_dir)
    # another subject whose T1w is not NIfTI: refused at start by the main process
    bad = bids_dir / "sub-99" / "anat"
    bad.mkdir(parents=True)
    (bad / "sub-99_T1w.nii.gz").write_bytes(b"not a nifti")
    # and one whose file name is refused when its folder is indexed
    hostile = bids_dir / "sub-98" / "anat"
    hostile.mkdir(parents=True)
    (hostile / "sub-98_acq-$(x)_T1w.nii.gz").write_bytes(b"")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"bids_dir: {bids_dir}\noutput_dir: {tmp_path / 'out'}\nfreesurfer_dir: null\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    smk = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(cfg),
           "-n", "--cores", "1"]
    main = subprocess.run(smk, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert main.returncode != 0 and "sub-98_acq-$(x)_T1w.nii.gz" in main.stdout + main.stderr
    shutil.rmtree(bids_dir / "sub-98")
    main = subprocess.run(smk, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert main.returncode != 0 and "sub-99_T1w.nii.gz" in main.stdout + main.stderr
    hostile.mkdir(parents=True)
    (hostile / "sub-98_acq-$(x)_T1w.nii.gz").write_bytes(b"")
    job = smk + ["--target-jobs", "dwi_tensor_dipy:subject=02", "--allowed-rules", "dwi_tensor_dipy",
                 "--mode", "remote", "--nolock", "--ignore-incomplete", "--printshellcmds"]
    p = subprocess.run(job, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = p.stdout + p.stderr
    assert "rule dwi_tensor_dipy" in out and "subject=02" in out
    assert "sub-99" not in out and "sub-98" not in out


def test_config_defaults_without_the_schema_check():
    """A job process fills in the same defaults as the main process, without the schema check
    (the main process refused a bad configuration before submitting any job)."""
    from neurosmk.config import ConfigError, validate_config

    cfg = {"bids_dir": "b", "output_dir": "o"}
    assert validate_config(cfg, check=False) == validate_config(cfg)
    bad = dict(cfg, no_such_key=1)
    with pytest.raises(ConfigError, match="no_such_key"):
        validate_config(bad)
    assert validate_config(bad, check=False)["no_such_key"] == 1


FROZEN_SNAKEFILE = """
import inspect, sys
sys.path.insert(0, {src!r})
from neurosmk.startup import freeze_signatures

def pick(wildcards):
    return f"in/{{wildcards.x}}.txt"

rule all:
    input: "out/a.txt"

rule one:
    input: pick
    output: "out/{{x}}.txt"
    params:
        tag=lambda wildcards, input, output: f"{{wildcards.x}}:{{input[0]}}:{{output[0]}}",
        plain="p",
    resources:
        mem_mb=lambda wildcards, attempt, threads: 100 * attempt + threads,
        runtime=5,
    threads: 1
    shell: "echo {{params.tag:q}} {{resources.mem_mb}} {{resources.runtime}} > {{output:q}}"

n = freeze_signatures(workflow.rules)
for f in (pick, rules.one.rule.params.tag):
    assert list(getattr(f, "_overwrite_params")) == list(inspect.signature(f).parameters), f
print(f"frozen {{n}}", file=sys.stderr)
"""


def test_freeze_signatures_keeps_what_functions_receive(tmp_path):
    """Input, params and resource functions whose signature was recorded once
    (freeze_signatures) still get exactly their arguments from Snakemake: input/output for the
    params function, attempt/threads for the resource."""
    (tmp_path / "Snakefile").write_text(FROZEN_SNAKEFILE.format(src=str(REPO / "src")))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    p = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1"], cwd=tmp_path,
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    # at least the input function, the params lambda and the resource lambda
    assert int(p.stderr.split("frozen ")[1].split()[0]) >= 3
    assert (tmp_path / "out" / "a.txt").read_text().split() == ["a:in/a.txt:out/a.txt", "101", "5"]


def test_resource_evaluate_gets_the_parameters_of_its_bound_method():
    """freeze_signatures records the parameters of Snakemake's Resource.evaluate, through which
    every resource is called, as inspect gives them for a bound method (without self)."""
    import inspect

    from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR, get_function_params
    from snakemake.resources import Resource

    from neurosmk.startup import freeze_signatures

    freeze_signatures([])
    assert hasattr(Resource.evaluate, FUNC_OVERWRITE_PARAMS_ATTR)
    res = Resource("mem_mb", lambda wildcards, attempt: 100 * attempt)
    assert dict(get_function_params(res.evaluate)) == dict(inspect.signature(res.evaluate).parameters)
    assert res.evaluate({}, attempt=3).value == 300


def test_run_steps_in_job_only_in_a_cluster_job_of_its_own():
    """Every rule becomes local in a --mode remote process (a SLURM job runs its steps itself), not
    in the main process, and not in a task of a SLURM array job, whose jobstep executor must pick
    the task's own job from --slurm-jobstep-array-execs."""
    from types import SimpleNamespace

    from neurosmk.startup import run_steps_in_job

    def workflow(remote):
        local = set()
        rules = [SimpleNamespace(name="dwi_mask_dipy"), SimpleNamespace(name="dwi_tensor_dipy")]
        return SimpleNamespace(remote_exec=remote, rules=rules, localrules=lambda *names: local.update(names)), local

    wf, local = workflow(remote=True)
    assert run_steps_in_job(wf, argv=["snakemake", "--mode", "remote"], environ={"SLURM_JOB_ID": "7"})
    assert local == {"dwi_mask_dipy", "dwi_tensor_dipy"}
    wf, local = workflow(remote=False)
    assert not run_steps_in_job(wf, argv=["snakemake"], environ={}) and not local
    wf, local = workflow(remote=True)
    assert not run_steps_in_job(wf, argv=["snakemake", "--mode", "remote"],
                                environ={"SLURM_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1"}) and not local
    assert not run_steps_in_job(wf, argv=["snakemake", "--slurm-jobstep-array-execs=e30="], environ={}) and not local


def test_tool_rule_files_are_included_when_a_rule_of_theirs_is_selected():
    """The Snakefile reads a tool rule file (MRtrix3, TORTOISE, FSL, FreeSurfer) only for a
    configuration that selects one of its rules: every backend's registered rules must still be
    defined by the files it gets, and a Python-only configuration gets none of them."""
    from neurosmk import backends
    from neurosmk.startup import TOOL_RULE_FILES, rules_defined, tool_rule_files

    always = {f"rules/{m}" for m in re.findall(r'^include: "rules/(\w+\.smk)"', (REPO / "Snakefile").read_text(), re.M)}
    assert always and not always & set(TOOL_RULE_FILES)
    assert set(TOOL_RULE_FILES) | always == {f"rules/{p.name}" for p in (REPO / "rules").glob("*.smk")}
    in_tool_files = {f: rules_defined(REPO / f) for f in TOOL_RULE_FILES}
    assert all(in_tool_files.values())
    for step, methods in backends.STEPS.items():
        for method, backend in methods.items():
            picked = tool_rule_files(REPO, backends.selected_rules({step: method}, recon_all=False))
            # each tool rule file that defines one of the backend's rules, and only those
            assert picked == [f for f, rules in in_tool_files.items() if rules & set(backend.rules)], (step, method)
    # (every registered rule is then defined: rules/safety.smk checks it at each start, and the
    # scenario dry runs, tests/test_scenarios.py, start every tool backend)
    from neurosmk.config import validate_config

    cfg = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    default = backends.check_methods(cfg, check_tools=False)
    assert tool_rule_files(REPO, backends.selected_rules(default, recon_all=False)) == []
    assert tool_rule_files(REPO, backends.selected_rules(default, recon_all=True)) == ["rules/freesurfer.smk"]


CACHED_SNAKEFILE = """
import sys
sys.path.insert(0, {src!r})
from neurosmk.startup import cache_rule_file_translations

cache_rule_file_translations()

include: "rules.smk"
"""

CACHED_RULES = """
rule all:
    output: "out.txt"
    shell: "echo {word} > {{output:q}}"


if config.get("boom"):
    raise ValueError("boom on line eight")
"""


def _run_cached(wd, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--forceall", "out.txt", *args], cwd=wd,
                          capture_output=True, text=True, check=False)


def test_rule_file_translations_are_kept_and_renewed(tmp_path):
    """cache_rule_file_translations: a start reads an included rule file's translation from
    .snakemake/neurosmk/parsed (shown by editing the kept translation), a changed file is
    translated anew, and an error in a rule file still names its own line on a start that used
    the kept translation (the line map is kept too)."""
    (tmp_path / "Snakefile").write_text(CACHED_SNAKEFILE.format(src=str(REPO / "src")))
    (tmp_path / "rules.smk").write_text(CACHED_RULES.format(word="first"))
    p = _run_cached(tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text() == "first\n"
    kept = list((tmp_path / ".snakemake" / "neurosmk" / "parsed").glob("*.json"))
    assert len(kept) == 1, kept  # rules.smk (the Snakefile itself is read before the call)
    assert '"first"' not in kept[0].read_text() and "first" in kept[0].read_text()
    kept[0].write_text(kept[0].read_text().replace("first", "kept"))
    p = _run_cached(tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text() == "kept\n"
    # the file changed: translated again, its new text is what runs
    (tmp_path / "rules.smk").write_text(CACHED_RULES.format(word="second"))
    p = _run_cached(tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text() == "second\n"
    assert len(list((tmp_path / ".snakemake" / "neurosmk" / "parsed").glob("*.json"))) == 2
    # a start from the kept translation still reports a rule file's error at that file's line
    p = _run_cached(tmp_path, "--config", "boom=1")
    assert p.returncode != 0
    assert "boom on line eight" in p.stderr and 'rules.smk", line 8' in p.stderr, p.stderr[-2000:]
    # nothing half-written is left beside the entries
    assert not list((tmp_path / ".snakemake" / "neurosmk" / "parsed").glob(".*"))


NBFORMAT_SNAKEFILE = """
import sys
sys.path.insert(0, {src!r})
from neurosmk.startup import python_scripts_without_nbformat

python_scripts_without_nbformat()

rule all:
    output: "out.txt"
    script: "write.py"

onsuccess:
    print("nbformat imported:", "nbformat" in sys.modules, file=sys.stderr)
"""


def test_python_scripts_without_nbformat(tmp_path):
    """A `script:` rule with a .py script runs, and Snakemake (which checks every script job's
    language while it builds the DAG) did not import nbformat for it; any other script is still
    left to Snakemake's own get_language (an R script: "r", a notebook: read by nbformat)."""
    (tmp_path / "Snakefile").write_text(NBFORMAT_SNAKEFILE.format(src=str(REPO / "src")))
    (tmp_path / "write.py").write_text("open(snakemake.output[0], 'w').write('ran')\n")
    p = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1"], cwd=tmp_path, capture_output=True,
                       text=True, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text() == "ran"
    assert "nbformat imported: False" in p.stderr, p.stderr[-2000:]
    code = f"""
import sys
sys.path.insert(0, {str(REPO / "src")!r})
from snakemake import script
from snakemake.sourcecache import LocalSourceFile
from neurosmk.startup import python_scripts_without_nbformat
assert python_scripts_without_nbformat() and not python_scripts_without_nbformat()
assert script.get_language(LocalSourceFile("a.py"), "") == "python"
assert "nbformat" not in sys.modules
assert script.get_language(LocalSourceFile("a.R"), "") == "r"
nb = '{{"cells": [], "metadata": {{"language_info": {{"name": "R"}}}}, "nbformat": 4, "nbformat_minor": 5}}'
assert script.get_language(LocalSourceFile("a.ipynb"), nb) == "jupyter_r"
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
