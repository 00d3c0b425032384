"""Re-running after config edits (issue #6), on the reduced demo.

1. Re-run matrix. Every key of config/schema/config.schema.yaml is cosmetic (COSMETIC: editing
   it re-runs nothing), reaches rules through their params (PARAMS: key -> the rules, of any
   backend, whose output it changes) and/or changes the job graph (STRUCTURAL, and every step's
   `method`, whose values come from neurosmk.backends.STEPS), or is listed in NOT_IN_MATRIX with
   the reason. A key in none of them fails test_every_schema_key_is_in_the_matrix.
   Each case edits one key of a context's config and dry-runs. The expected jobs are computed
   from the job graph of the edited config (dry run --forceall; edges = files): the root jobs
   (the rules PARAMS names; for a method edit the step's rules; any job that is new or whose
   input or output files changed) and everything downstream of them. Contexts:
     real        one completed run of the whole reduced demo (the default Python backends);
     alt         every other backend at once (FreeSurfer N4 and recon-all, FSL bet/FAST/FIRST/
                 FNIRT/applywarp/eddy, MRtrix3 denoise/degibbs/mask/tensor), and
     skull_dipy, skull_synthstrip   the skull-strip backends alt cannot hold at the same time.
   FSL and FreeSurfer cannot run here, so the touched contexts hold placeholder outputs marked
   complete with `snakemake --touch --forceall`, which records the same metadata (params, input
   files, code) a real run records; a dry run then answers exactly as after real runs. This is
   a dynamic check of those backends' params, stronger than reading the rule files.
2. FreeSurfer safety: a finished recon-all is never scheduled by an edit elsewhere, and a real
   run (here --touch, the same start-up check) refuses to redo it unless
   `--forcerun freesurfer_recon_all` is given (rules/freesurfer.smk).
3. Determinism: a second run of the whole reduced demo from scratch gives byte-identical outputs
   (gzip streams compared decompressed), except the ANTs registration outputs, which use the
   configured seed but vary with 2 ITK threads: they are compared against the tolerances below.
4. Interrupted run: a DWI-only run is SIGKILLed (process group) while its first job writes its
   outputs, resumed with --rerun-incomplete, and must equal the uninterrupted run.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from neurosmk import backends
from neurosmk.config import load_schema, validate_config

from .conftest import REPO, job_counts, reduced_config, run_snakemake
from .helpers import run_in_server

pytestmark = pytest.mark.slow

SNAKEFILE = str(REPO / "Snakefile")

# ---- the matrix --------------------------------------------------------------------------------

# Editing these re-runs nothing: thread counts, the report title, the licence location and the
# start-up input check change no output.
COSMETIC = {
    "anat.biascorrect.threads", "anat.skullstrip.threads", "anat.segment.threads",
    "anat.subcortical.threads", "anat.register.threads", "dwi.denoise.threads", "dwi.degibbs.threads",
    "dwi.preproc.threads", "dwi.mask.threads", "dwi.tensor.threads", "freesurfer.recon_all.threads",
    "freesurfer.recon_all.license", "report.title", "validate_inputs",
    "anat.synthseg.threads", "anat.segstats.threads",
    "dwi.denoise.device", "dwi.tensor.device",  # torch backends: CPU or GPU, same numbers (tested)
    "dwi.preproc.max_shells",  # the DSI guard: a start-up check, no output
}

# key -> the rules whose params carry it. "rule:method" counts only while the step's method is
# that one (one rule serves several methods).
PARAMS = {
    "anat.biascorrect.shrink_factor": {"anat_biascorrect_ants", "anat_biascorrect_freesurfer"},
    "anat.biascorrect.convergence_iters": {"anat_biascorrect_ants", "anat_biascorrect_freesurfer"},
    "anat.biascorrect.convergence_tol": {"anat_biascorrect_ants"},
    "anat.biascorrect.spline_distance": {"anat_biascorrect_ants"},
    "anat.skullstrip.fractional_threshold": {"anat_skullstrip_python:brainextractor", "anat_skullstrip_fsl_bet"},
    "anat.skullstrip.iterations": {"anat_skullstrip_python:brainextractor"},
    "anat.skullstrip.fov_mm": {"anat_skullstrip_python:brainextractor"},
    "anat.skullstrip.median_radius": {"anat_skullstrip_python:dipy"},
    "anat.skullstrip.numpass": {"anat_skullstrip_python:dipy"},
    "anat.skullstrip.vertical_gradient": {"anat_skullstrip_fsl_bet"},
    "anat.skullstrip.bet_variant": {"anat_skullstrip_fsl_bet"},
    "anat.skullstrip.synthstrip_border": {"anat_skullstrip_synthstrip"},
    "anat.skullstrip.synthstrip_no_csf": {"anat_skullstrip_synthstrip"},
    "anat.skullstrip.use_gpu": {"anat_skullstrip_synthstrip"},
    "anat.segment.mrf_weight": {"anat_segment_atropos"},
    "anat.segment.iterations": {"anat_segment_atropos"},
    "anat.subcortical.input": {"anat_subcortical_fsl_first"},
    "anat.subcortical.structures": {"anat_subcortical_fsl_first"},
    "anat.register.transform": {"anat_register_ants"},
    "anat.register.syn_iterations": {"anat_register_ants"},
    "anat.register.seed": {"anat_register_ants"},
    "anat.atlas.image": {"anat_atlas_fsl_applywarp"},
    "anat.atlas.name": {"anat_atlas_fsl_applywarp"},
    "template.name": {"anat_register_ants", "anat_register_fsl"},
    "dwi.denoise.patch_radius": {"dwi_denoise_dipy"},
    "dwi.denoise.extent": {"dwi_denoise_mrtrix"},
    "dwi.degibbs.slice_axis": {"dwi_degibbs_dipy", "dwi_degibbs_mrtrix"},
    "dwi.degibbs.n_points": {"dwi_degibbs_dipy"},
    "dwi.degibbs.nshifts": {"dwi_degibbs_mrtrix"},
    "dwi.degibbs.min_w": {"dwi_degibbs_mrtrix"},
    "dwi.degibbs.max_w": {"dwi_degibbs_mrtrix"},
    "dwi.preproc.rpe": {"dwi_preproc_dwifslpreproc"},
    "dwi.preproc.pe_dir": {"dwi_preproc_dwifslpreproc"},
    "dwi.preproc.readout_time": {"dwi_preproc_dwifslpreproc"},
    "dwi.preproc.eddy_options": {"dwi_preproc_dwifslpreproc"},
    "dwi.preproc.use_gpu": {"dwi_preproc_dwifslpreproc", "dwi_preproc_drbuddi", "dwi_preproc_drbuddi_apply"},
    "anat.register.use_gpu": {"anat_register_synthmorph"},
    "dwi.mask.median_radius": {"dwi_mask_dipy"},
    "dwi.mask.numpass": {"dwi_mask_dipy"},
    # (the QC numbers read it only for a visit with DWI: "@dwi")
    "dwi.mask.b0_threshold": {"dwi_mask_dipy", "dwi_tensor_dipy", "qc_dwi_figures", "qc_visit_metrics@dwi",
                              "dwi_preproc_drbuddi_inputs"},
    "dwi.tensor.fit_method": {"dwi_tensor_dipy", "dwi_tensor_mrtrix"},
    "dwi.tensor.wm_fa_threshold": {"dwi_stats_qc"},
    "freesurfer.recon_all.extra_args": {"freesurfer_recon_all"},
    "anat.synthseg.robust": {"anat_synthseg_freesurfer"},
    "anat.synthseg.parc": {"anat_synthseg_freesurfer"},
    "anat.synthseg.use_gpu": {"anat_synthseg_freesurfer"},
    "anat.synthseg.vol": {"anat_synthseg_freesurfer"},
    "anat.segstats.seg": {"anat_segstats_freesurfer"},
    "bids_dir": {"dataset_description"},
}

# Keys whose edit changes the job graph (files, inputs, which jobs exist), with the values the
# real context tries ("@..." are copies made by the test). Method keys are added from backends.
STRUCTURAL = {
    "output_dir": ["@out_elsewhere"],
    "bids_dir": ["@bids_copy"],
    "participant_label": [["01"], ["02"]],
    "participant_exclude": [["01"]],
    "freesurfer_dir": ["@fs_copy"],
    "template.name": ["MNI152NLin6Asym"],
    "template.t1w": ["@template_copy"],
    "steps.anat": [False],
    "steps.dwi": [False],
    "steps.freesurfer_stats": [False],
    "freesurfer.recon_all.enabled": [True],
    "anat.subcortical.input": [],
    "anat.atlas.image": [],
    "anat.atlas.name": [],
    "anat.synthseg.vol": [],  # drops the volumes CSV (an output)
    "anat.segstats.seg": [],  # synthseg -> aseg: another input
}

# Not in the matrix, and why.
NOT_IN_MATRIX = {
    "session_label": "selects sessions; the demo has none. Its effect is the set of jobs, the same "
                     "mechanism participant_label tests (test_dryrun.py covers session selection)",
    "bids_filters.t1w": "picks one T1w among several; reaches the rules only as the input file path "
                        "(Snakemake's input trigger); the demo has one image per subject",
    "bids_filters.dwi": "as bids_filters.t1w, for the DWI series",
    "anat.register.fnirt_config": "one allowed value (FSL ships one T1 config, T1_2_MNI152_2mm; NiWrap's fnirt "
                                  "descriptor lists it and the FA one), so there is no edit to try",
}

# Keys tried in the real context only (their edited value is a copy of the real run's inputs).
# template.name: the fsl backend (in the alt context) registers to FSL's MNI152 and accepts only
# MNI152NLin6Asym, so the edit is tried where ANTs runs.
REAL_ONLY = {"bids_dir", "template.name"}

# Edited values where the schema alone does not give one.
VALUES = {
    "anat.subcortical.structures": "L_Hipp,R_Hipp",
    "anat.atlas.image": "@atlas2",
    "anat.atlas.name": "HarvardOxford",
    "template.name": "MNI152NLin6Asym",
    "dwi.denoise.extent": [3, 3, 3],
    "dwi.preproc.readout_time": 0.06,
    "dwi.preproc.eddy_options": "--slm=none",
    "freesurfer.recon_all.extra_args": "-3T",
    "freesurfer.recon_all.license": "@license",
    "report.title": "another title",
    "bids_dir": "@bids_copy",
}

# What a method needs besides itself (the demo's DWI has no phase-encoding sidecar).
_FSL_TEMPLATE = {"template.name": "MNI152NLin6Asym", "template.t1w": None}  # FSL's MNI152 (rules/fsl.smk)
METHOD_NEEDS = {
    ("anat.register", "fsl"): _FSL_TEMPLATE,
    ("anat.atlas", "fsl_applywarp"): {"anat.register.method": "fsl", "anat.atlas.image": "@atlas", **_FSL_TEMPLATE},
    # a reverse phase-encoded b=0 (fmap/*_epi) and the DWI's PhaseEncodingDirection: a copy of the BIDS folder
    ("dwi.preproc", "drbuddi"): {"bids_dir": "@bids_drbuddi"},
    ("dwi.preproc", "fsl_dwifslpreproc"): {"dwi.preproc.pe_dir": "j-"},
    ("anat.segstats", "freesurfer"): {"anat.synthseg.method": "freesurfer"},
}

CONTEXTS = {
    "real": None,  # the shared completed run
    "alt": {
        "anat.biascorrect.method": "freesurfer", "anat.skullstrip.method": "fsl_bet",
        "anat.segment.method": "fsl_fast", "anat.subcortical.method": "fsl_first",
        "anat.register.method": "fsl", "anat.atlas.method": "fsl_applywarp", "anat.atlas.image": "@atlas",
        **_FSL_TEMPLATE,
        "dwi.denoise.method": "mrtrix", "dwi.degibbs.method": "mrtrix",
        "dwi.preproc.method": "fsl_dwifslpreproc", "dwi.mask.method": "mrtrix", "dwi.tensor.method": "mrtrix",
        "freesurfer.recon_all.enabled": True,
        "anat.synthseg.method": "freesurfer", "anat.segstats.method": "freesurfer",
    },
    "skull_dipy": {"anat.skullstrip.method": "dipy"},
    "skull_synthstrip": {"anat.skullstrip.method": "synthstrip"},
}


def schema_leaves(node=None, prefix=""):
    node = node or load_schema()
    out = {}
    for name, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            out.update(schema_leaves(sub, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = sub
    return out


LEAVES = schema_leaves()
METHOD_KEYS = {f"{step}.method": step for step in backends.STEPS}


@dataclass(frozen=True)
class Case:
    ctx: str
    key: str
    value: object = None  # None: derived from the schema and the context's current value
    kind: str = "params"  # params | structural | method | cosmetic | cli
    cli: tuple = ()
    extra: tuple = ()  # further edits a method needs: ((key, value), ...)

    @property
    def id(self):
        v = "" if self.value is None else "=" + json.dumps(self.value, separators=(",", ":")).strip('"')
        return f"{self.ctx}:{self.key}{v}"


def _cases() -> list[Case]:
    cases = []
    for key in sorted(LEAVES):
        if key in COSMETIC:
            cases += [Case("real", key, VALUES.get(key), "cosmetic"), Case("alt", key, VALUES.get(key), "cosmetic")]
        if key in PARAMS:
            kind = "structural" if key in STRUCTURAL else "params"
            cases.append(Case("real", key, VALUES.get(key), kind))
            if key not in REAL_ONLY:
                cases.append(Case("alt", key, VALUES.get(key), kind))
            if key.startswith("anat.skullstrip."):
                cases += [Case("skull_dipy", key, VALUES.get(key), kind),
                          Case("skull_synthstrip", key, VALUES.get(key), kind)]
        if key in STRUCTURAL and key not in PARAMS:
            cases += [Case("real", key, v, "structural") for v in STRUCTURAL[key]]
        if key in METHOD_KEYS:
            step = METHOD_KEYS[key]
            default = LEAVES[key]["default"]
            for m in backends.STEPS[step]:
                if m != default:
                    cases.append(Case("real", key, m, "method", extra=tuple(METHOD_NEEDS.get((step, m), {}).items())))
    cases += [
        Case("real", "--set-threads", kind="cli", cli=("--set-threads", "anat_register_ants=1", "dwi_denoise_dipy=1")),
        Case("real", "--set-resources", kind="cli",
             cli=("--set-resources", "anat_register_ants:mem_mb=1234", "dwi_denoise_dipy:runtime=5")),
        Case("real", "--profile laptop", kind="cli", cli=("--profile", str(REPO / "profiles" / "laptop"))),
    ]
    return cases


CASES = _cases()


# ---- running many dry runs ---------------------------------------------------------------------

def smk_batch(commands: list[tuple[list[str], Path]], timeout=900) -> list[dict]:
    """Run snakemake command lines in the tests' one Snakemake process (tests/helpers.py,
    tests/_smk_batch.py): [(args, cwd)] -> [{rc, out}]."""
    results = []
    for args, cwd in commands:
        p = run_in_server(["-s", SNAKEFILE, *args], cwd, timeout)
        results.append({"rc": p.returncode, "out": p.stdout + p.stderr})
    return results


_RULE_LINE = re.compile(r"^(?:local)?rule (\S+):$")


def parse_jobs(out: str) -> dict[str, dict]:
    """Jobs of a dry run's output: 'rule[wildcards]' -> {rule, input, output, reason}."""
    jobs, cur = {}, None
    for line in out.splitlines():
        m = _RULE_LINE.match(line)
        if m:
            cur = {"rule": m.group(1), "input": set(), "output": set(), "wildcards": "", "reason": ""}
            jobs[id(cur)] = cur
            continue
        if cur is None:
            continue
        if not line.startswith("    ") or ": " not in line:
            cur = None
            continue
        name, _, value = line.strip().partition(": ")
        if name in ("input", "output"):
            cur[name] = set(value.split(", "))
        elif name in ("wildcards", "reason"):
            cur[name] = value
    return {f"{j['rule']}[{j['wildcards']}]": j for j in jobs.values()}


def downstream(dag: dict[str, dict], roots: set[str]) -> set[str]:
    producer = {f: k for k, j in dag.items() for f in j["output"]}
    children = {k: set() for k in dag}
    for k, j in dag.items():
        for f in j["input"]:
            if f in producer:
                children[producer[f]].add(k)
    seen, todo = set(roots), deque(roots)
    while todo:
        for c in children[todo.popleft()]:
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def set_key(cfg: dict, dotted: str, value) -> None:
    cur = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


def get_key(cfg: dict, dotted: str):
    cur = cfg
    for p in dotted.split("."):
        cur = cur[p]
    return cur


def edited_value(key: str, current):
    """A valid value different from ``current``, from the schema entry of ``key``."""
    node = LEAVES[key]
    if key in VALUES:
        return VALUES[key]
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    if "enum" in node:
        return next(v for v in node["enum"] if v != current and v is not None)
    if "boolean" in types:
        return not current
    if "integer" in types:
        return current + 1 if current + 1 <= node.get("maximum", current + 1) else current - 1
    if "number" in types:
        return 0.1 if not current else current / 2
    if "array" in types and current and isinstance(current[0], int):
        return [current[0] + 1, *current[1:]]
    raise KeyError(f"config key {key!r}: give the re-run matrix an edited value in VALUES")


def spec_rule(spec: str) -> str:
    """The rule a PARAMS spec names: ``rule[:method][@dwi]``."""
    return spec.split("@")[0].partition(":")[0]


def rule_applies(spec: str, cfg: dict) -> tuple[str, bool]:
    rule, _, method = spec.split("@")[0].partition(":")
    if not method:
        return rule, True
    step = "anat.skullstrip" if rule == "anat_skullstrip_python" else None
    assert step, f"PARAMS: add the step of rule {rule} to rule_applies"
    return rule, get_key(cfg, step + ".method") == method


@dataclass
class Context:
    name: str
    cwd: Path
    cfg: dict  # the context's base config (as written)
    paths: dict = field(default_factory=dict)  # '@name' -> path

    def resolve(self, value):
        if isinstance(value, str) and value.startswith("@"):
            return str(self.paths[value])
        return value


def dry(cfg_path: Path, *extra) -> list[str]:
    return ["-n", "--cores", "2", "--configfile", str(cfg_path), *extra]


def make_touched_context(name: str, root: Path, reduced: dict, overrides: dict) -> Context:
    """Placeholder outputs for every job of a configuration, marked complete by --touch."""
    root.mkdir(parents=True)
    bids = root / "bids"
    shutil.copytree(reduced["bids"], bids)
    # phase encoding for dwifslpreproc (-rpe_none reads the direction, -rpe_header the whole sidecar)
    (bids / "sub-02" / "dwi" / "sub-02_dwi.json").write_text(
        json.dumps({"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05}))
    shutil.copy2(reduced["template"], root / "tpl.nii.gz")
    paths = {"@atlas": root / "atlas.nii.gz", "@atlas2": root / "atlas2.nii.gz", "@license": root / "license.txt"}
    for p in paths.values():
        p.write_text("stand-in (never read by a dry run or --touch)\n")
    ctx = Context(name, root, {}, paths)
    cfg = {"bids_dir": str(bids), "output_dir": str(root / "out"), "freesurfer_dir": None,
           "template": {"t1w": str(root / "tpl.nii.gz")}}
    for k, v in overrides.items():
        set_key(cfg, k, ctx.resolve(v))
    ctx.cfg = cfg
    base = root / "base.yaml"
    base.write_text(yaml.safe_dump(cfg))
    [dag] = smk_batch([(dry(base, "--forceall"), root)])
    assert dag["rc"] == 0, dag["out"][-3000:]
    for job in parse_jobs(dag["out"]).values():
        for f in job["output"]:
            p = root / f
            if "." in p.name:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("placeholder\n")
            else:  # directory() outputs (FIRST's slicesdir) have no extension
                p.mkdir(parents=True, exist_ok=True)
    # (a finished recon-all is touched again only when named: rules/freesurfer.smk)
    fs_on = validate_config(cfg)["freesurfer"]["recon_all"]["enabled"]
    force_fs = ["--forcerun", "freesurfer_recon_all"] if fs_on else []
    touch, check = smk_batch([(["--touch", "--forceall", *force_fs, "--cores", "1", "--configfile", str(base)], root),
                              (dry(base), root)])
    assert touch["rc"] == 0, touch["out"][-3000:]
    assert "Nothing to be done" in check["out"], check["out"][-3000:]
    return ctx


@pytest.fixture(scope="module")
def real_context(reduced_run) -> Context:
    work = reduced_run["work"]
    cfg = yaml.safe_load(Path(reduced_run["cfg"]).read_text())
    extra = work / "rerun_matrix_inputs"
    if not extra.exists():
        extra.mkdir()
        shutil.copytree(reduced_run["reduced"]["bids"], extra / "bids_copy")  # copy2: same mtimes
        shutil.copytree(REPO / "demo" / "freesurfer", extra / "fs_copy")
        shutil.copy2(reduced_run["reduced"]["template"], extra / "template_copy.nii.gz")
        (extra / "license.txt").write_text("stand-in\n")
        drb = extra / "bids_drbuddi"  # + the DWI's phase encoding and a reverse phase-encoded b=0
        shutil.copytree(reduced_run["reduced"]["bids"], drb)
        (drb / "sub-02" / "dwi" / "sub-02_dwi.json").write_text(json.dumps({"PhaseEncodingDirection": "j-"}))
        (drb / "sub-02" / "fmap").mkdir()
        shutil.copy2(drb / "sub-02" / "dwi" / "sub-02_dwi.nii.gz", drb / "sub-02" / "fmap" / "sub-02_dir-PA_epi.nii.gz")
        (drb / "sub-02" / "fmap" / "sub-02_dir-PA_epi.json").write_text(json.dumps({"PhaseEncodingDirection": "j"}))
    paths = {"@bids_copy": extra / "bids_copy", "@fs_copy": extra / "fs_copy", "@atlas": cfg["template"]["t1w"],
             "@template_copy": extra / "template_copy.nii.gz", "@license": extra / "license.txt",
             "@out_elsewhere": work / "out_elsewhere", "@atlas2": cfg["template"]["t1w"],
             "@bids_drbuddi": extra / "bids_drbuddi"}
    return Context("real", work, cfg, paths)


def case_config(ctx: Context, case: Case) -> dict:
    cfg = copy.deepcopy(ctx.cfg)
    full = validate_config(cfg)
    if case.kind != "cli":
        value = case.value if case.value is not None else edited_value(case.key, get_key(full, case.key))
        set_key(cfg, case.key, ctx.resolve(value))
        for k, v in case.extra:
            set_key(cfg, k, ctx.resolve(v))
    return cfg


def expected_jobs(case: Case, cfg: dict, base_dag: dict, dag: dict) -> set[str]:
    full = validate_config(cfg)
    roots = set()
    for key in (case.key, *(k for k, _ in case.extra)):  # a method's extra edits (METHOD_NEEDS) count too
        for spec in PARAMS.get(key, ()):
            rule, applies = rule_applies(spec, full)
            if applies:
                jobs_ = {k for k, j in dag.items() if j["rule"] == rule}
                if spec.endswith("@dwi"):  # only the jobs of visits that have a DWI chain
                    dwi_visits = {k.split("[", 1)[1] for k, j in dag.items() if j["rule"].startswith("dwi_")}
                    jobs_ = {k for k in jobs_ if k.split("[", 1)[1] in dwi_visits}
                roots |= jobs_
    if case.kind == "method":
        prefix = METHOD_KEYS[case.key].replace(".", "_") + "_"
        roots |= {k for k, j in dag.items() if j["rule"].startswith(prefix)}
    for k, j in dag.items():  # new jobs, or jobs whose files changed (jobs without outputs only follow)
        if j["output"] and (k not in base_dag or j["input"] != base_dag[k]["input"]
                            or j["output"] != base_dag[k]["output"]):
            roots.add(k)
    return downstream(dag, roots) if roots else set()


def run_cases(ctx: Context, cases: list[Case], base_dag: dict | None = None) -> dict[str, dict]:
    """Dry-run every case of a context; returns case id -> {expected, actual, out, rc, dag}.
    ``base_dag``: the job graph the edits are compared with (default: the context's, now)."""
    work = ctx.cwd / "rerun_cases"
    work.mkdir(exist_ok=True)
    base = work / "base.yaml"
    base.write_text(yaml.safe_dump(ctx.cfg))
    commands = [(dry(base, "--forceall"), ctx.cwd)] if base_dag is None else []
    cfgs = {}
    for i, case in enumerate(cases):
        cfg = case_config(ctx, case)
        path = work / f"case{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cfgs[case.id] = (cfg, path)
        commands.append((dry(path, *case.cli), ctx.cwd))
        if case.kind in ("structural", "method"):
            commands.append((dry(path, "--forceall"), ctx.cwd))
    results = iter(smk_batch(commands))
    if base_dag is None:
        base_run = next(results)
        assert base_run["rc"] == 0, base_run["out"][-3000:]
        base_dag = parse_jobs(base_run["out"])
    out = {}
    for case in cases:
        cfg, _ = cfgs[case.id]
        r = next(results)
        dag = base_dag
        if case.kind in ("structural", "method"):
            d = next(results)
            assert d["rc"] == 0, f"{case.id}: dry run --forceall failed\n{d['out'][-3000:]}"
            dag = parse_jobs(d["out"])
        res = {"rc": r["rc"], "out": r["out"], "actual": set(parse_jobs(r["out"])), "dag": dag,
               "value": None if case.kind == "cli" else get_key(cfg, case.key)}
        if r["rc"] == 0:
            res["expected"] = expected_jobs(case, cfg, base_dag, dag)
        out[case.id] = res
    return out


@pytest.fixture(scope="module")
def matrix(real_context, reduced_run, tmp_path_factory) -> dict[str, dict]:
    results = run_cases(real_context, [c for c in CASES if c.ctx == "real"])
    root = tmp_path_factory.mktemp("touched")
    for name, overrides in CONTEXTS.items():
        if overrides is None:
            continue
        ctx = make_touched_context(name, root / name, reduced_run["reduced"], overrides)
        results.update(run_cases(ctx, [c for c in CASES if c.ctx == name]))
    _write_matrix_table(results, root / "rerun_matrix.md")
    return results


def _rules(jobs: set[str]) -> list[str]:
    return sorted({j.split("[")[0] for j in jobs} - {"all"})


def _write_matrix_table(results: dict, path: Path) -> None:
    lines = ["| context:key=value | rules re-run |", "|---|---|"]
    for cid, r in results.items():
        ctx, _, key = cid.partition(":")
        key = key.split("=")[0] if r["value"] is not None else key
        value = "" if r["value"] is None else "=" + json.dumps(r["value"], separators=(",", ":"))
        lines.append(f"| {ctx}:{key}{value} | {', '.join(_rules(r['actual'])) or '(nothing)'} |")
    path.write_text("\n".join(lines) + "\n")
    if os.environ.get("NEUROSMK_PRINT_MATRIX"):
        print("\n" + "\n".join(lines))


# ---- 1. the re-run matrix ----------------------------------------------------------------------

def test_every_schema_key_is_in_the_matrix():
    covered = COSMETIC | set(PARAMS) | set(STRUCTURAL) | set(METHOD_KEYS) | set(NOT_IN_MATRIX)
    missing = sorted(set(LEAVES) - covered)
    assert not missing, (f"config keys without a re-run matrix entry in tests/test_rerun.py: {missing}. "
                         "Add each to COSMETIC, PARAMS (the rules whose params carry it) or STRUCTURAL.")
    assert not (set(covered) - set(LEAVES)), sorted(set(covered) - set(LEAVES))
    assert not COSMETIC & (set(PARAMS) | set(STRUCTURAL)), COSMETIC & (set(PARAMS) | set(STRUCTURAL))
    # every rule PARAMS names is one the backend registry knows (a typo or a renamed rule fails here)
    named = {spec_rule(spec) for specs in PARAMS.values() for spec in specs}
    assert named <= set(backends.rule_resources()), sorted(named - set(backends.rule_resources()))
    # every method of every step is tried from the real run
    tried = {(c.key, c.value) for c in CASES if c.kind == "method"}
    for step, methods in backends.STEPS.items():
        default = LEAVES[f"{step}.method"]["default"]
        assert {m for m in methods if m != default} == {v for k, v in tried if k == f"{step}.method"}


def test_every_params_rule_is_exercised(matrix):
    """Each rule PARAMS names exists in some context, so its params were really edited there."""
    seen = {j.split("[")[0] for r in matrix.values() for j in r["dag"]}
    named = {spec_rule(spec) for specs in PARAMS.values() for spec in specs}
    assert named <= seen, sorted(named - seen)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rerun_matrix(matrix, case):
    r = matrix[case.id]
    assert r["rc"] == 0, r["out"][-4000:]
    assert r["actual"] == r["expected"], (
        f"{case.id}: unexpected re-runs {sorted(r['actual'] - r['expected'])}, "
        f"missing re-runs {sorted(r['expected'] - r['actual'])}")
    if case.kind in ("cosmetic", "cli"):
        assert not r["actual"] and "Nothing to be done" in r["out"]
    if case.kind == "params" and case.ctx == "real" and r["actual"]:
        # the first root job says why: its params changed (a root downstream of another root
        # gives the first reason Snakemake finds: its input is rewritten)
        roots = [j for j in parse_jobs(r["out"]).values() if j["rule"] in {spec_rule(s) for s in PARAMS[case.key]}]
        reasons = [j["reason"] for j in roots]
        assert any(x.startswith("Params have changed") for x in reasons), reasons
        assert all(x.startswith(("Params have changed", "Input files updated by another job")) for x in reasons)
    if case.ctx == "alt" and not case.key.startswith("freesurfer."):
        assert not any(j.startswith("freesurfer_recon_all[") for j in r["actual"])


def test_matrix_spot_checks(matrix):
    """A few rows written out by hand, as a reader would expect them."""
    def rules(cid):
        return _rules(matrix[cid]["actual"])

    # every output change also re-runs group_long (the combined table) and methods (reads the sidecars)
    # and the QC numbers, the visit's QC page and the group QC page (rules/qc.smk)
    qc = ["qc_group_page", "qc_visit_metrics", "qc_visit_page"]
    assert rules("real:dwi.tensor.fit_method") == ["dwi_stats_qc", "dwi_tensor_dipy", "group_dti_stats", "group_long",
                                                   "methods", "qc_dwi_figures", *qc]
    assert rules("real:dwi.tensor.wm_fa_threshold") == ["dwi_stats_qc", "group_dti_stats", "group_long", "methods",
                                                        *qc]
    assert rules("real:anat.segment.mrf_weight") == ["anat_segment_atropos", "anat_volumes_qc", "group_anat_volumes",
                                                     "group_long", "methods", *qc]
    assert rules("real:anat.skullstrip.median_radius") == []  # dipy's key, brainextractor runs
    assert rules("skull_dipy:anat.skullstrip.median_radius")[-6:] == ["group_anat_volumes", "group_long", "methods",
                                                                       *qc]
    assert "anat_skullstrip_python" in rules("skull_dipy:anat.skullstrip.numpass")
    assert rules("real:dwi.degibbs.method=none") == ["dwi_mask_dipy", "dwi_stats_qc", "dwi_tensor_dipy",
                                                     "group_dti_stats", "group_long", "methods", "qc_dwi_figures", *qc]
    assert rules("real:dwi.denoise.method=mrtrix") == ["dwi_degibbs_dipy", "dwi_denoise_mrtrix", "dwi_mask_dipy",
                                                       "dwi_stats_qc", "dwi_tensor_dipy", "group_dti_stats",
                                                       "group_long", "methods", "qc_dwi_figures", *qc]
    # recon-all's stats join the FreeSurfer tables: parse it, re-aggregate, combined table, methods
    # (and sub-01's QC numbers: its eTIV and mean thickness now come from recon-all)
    assert rules("real:freesurfer.recon_all.enabled=true") == ["freesurfer_recon_all", "fs_aggregate_group",
                                                               "fs_parse_subject", "group_long", "methods", *qc]
    assert rules("alt:dwi.preproc.pe_dir") == ["dwi_mask_mrtrix", "dwi_preproc_dwifslpreproc", "dwi_stats_qc",
                                                 "dwi_tensor_mrtrix", "group_dti_stats", "group_long", "methods",
                                                 "qc_dwi_figures", *qc]


def test_batch_runner_matches_the_cli(real_context, matrix):
    """The in-process dry runs answer as a fresh snakemake process does."""
    case = next(c for c in CASES if c.id == "real:dwi.tensor.fit_method")
    path = real_context.cwd / "rerun_cases" / "cli_check.yaml"
    path.write_text(yaml.safe_dump(case_config(real_context, case)))
    p = run_snakemake(dry(path), cwd=real_context.cwd)
    assert set(parse_jobs(p.stdout)) == matrix[case.id]["actual"]


def test_why_names_the_changed_param_and_the_followers(real_context):
    """`make why` (scripts/why.py): the edited step with old and new value, then its followers."""
    case = next(c for c in CASES if c.id == "real:dwi.tensor.fit_method")
    (real_context.cwd / "rerun_cases").mkdir(exist_ok=True)
    path = real_context.cwd / "rerun_cases" / "why_check.yaml"
    path.write_text(yaml.safe_dump(case_config(real_context, case)))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    why = [sys.executable, str(REPO / "scripts" / "why.py"), "-s", SNAKEFILE, "--cores", "2"]
    p = subprocess.run([*why, "--configfile", str(path)], cwd=real_context.cwd, capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    own, _, follow = p.stdout.partition("downstream of those")
    assert own.startswith("dwi_tensor_dipy (subject=02):") and "before: 'WLS' now: 'OLS'" in own, p.stdout
    assert "dwi_stats_qc (subject=02)" in follow and "group_dti_stats" in follow and "all" not in follow.split()
    base = real_context.cwd / "rerun_cases" / "why_base.yaml"
    base.write_text(yaml.safe_dump(real_context.cfg))
    p = subprocess.run([*why, "--configfile", str(base)], cwd=real_context.cwd, capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("Nothing would run"), p.stdout + p.stderr


def _add_subject(bids: Path, src: str, new: str) -> Path:
    dst = bids / f"sub-{new}"
    shutil.copytree(bids / f"sub-{src}", dst)
    for p in sorted(dst.rglob(f"sub-{src}_*")):
        p.rename(p.with_name(p.name.replace(f"sub-{src}_", f"sub-{new}_")))
    return dst


def test_adding_a_subject_runs_only_its_jobs_and_the_group_tables(real_context, reduced_run, matrix):
    bids = Path(reduced_run["reduced"]["bids"])
    cases = [Case("real", "participant_label", v, "structural") for v in ([], ["02", "03"], ["01", "02"], ["03"])]
    base_dag = matrix["real:report.title=another title"]["dag"]  # the job graph before sub-03 exists
    added = _add_subject(bids, "02", "03")
    try:
        res = run_cases(real_context, cases, base_dag=base_dag)
    finally:
        shutil.rmtree(added)
    for case in cases:
        r = res[case.id]
        assert r["rc"] == 0 and r["actual"] == r["expected"], (case.id, r["actual"] ^ r.get("expected", set()))
    new = res[cases[0].id]["actual"]
    assert {j for j in new if "subject=03" not in j} == {"group_dti_stats[]", "group_long[]", "methods[]",
                                                          "qc_group_page[]", "all[]"}, new
    assert _rules({j for j in new if "subject=03" in j}) == [
        "dwi_degibbs_dipy", "dwi_denoise_dipy", "dwi_gradients", "dwi_mask_dipy", "dwi_stats_qc", "dwi_tensor_dipy",
        "qc_dwi_figures", "qc_visit_metrics", "qc_visit_page", "validate_dwi"]
    assert res[cases[1].id]["actual"] == new  # the same subjects, listed
    assert res[cases[2].id]["actual"] == set()  # sub-03 present but not selected
    assert res[cases[3].id]["actual"] == new  # the group table drops sub-02: re-aggregated


# ---- 2. FreeSurfer safety ----------------------------------------------------------------------

def test_finished_recon_all_is_never_redone_without_forcerun(reduced_demo, tmp_path):
    ctx = make_touched_context("fs", tmp_path / "fs", reduced_demo, {"freesurfer.recon_all.enabled": True})
    root = ctx.cwd
    done = root / "out" / "freesurfer" / "sub-01" / "scripts" / "neurosmk_recon-all_all.done"
    stats = root / "out" / "freesurfer" / "sub-01" / "stats" / "aseg.stats"
    assert done.read_text() == "placeholder\n"
    assert not os.stat(stats).st_mode & 0o222  # protected(): read-only after the (touch) run
    before = {p: p.stat().st_mtime_ns for p in (done, stats)}

    def cfg(name, **edits):
        c = copy.deepcopy(ctx.cfg)
        for k, v in edits.items():
            set_key(c, k, v)
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(c))
        return path

    elsewhere = {"anat.biascorrect.shrink_factor": 2, "anat.skullstrip.method": "dipy", "dwi.tensor.fit_method": "OLS",
                 "template.name": "MNI152NLin6Asym", "freesurfer.recon_all.threads": 8,
                 "freesurfer.recon_all.license": str(ctx.paths["@license"])}
    edited = cfg("extra", **{"freesurfer.recon_all.extra_args": "-3T"})
    runs = smk_batch(
        [(dry(cfg(k, **{k: v})), root) for k, v in elsewhere.items()]
        + [(dry(edited), root),
           (["--touch", "--cores", "1", "--configfile", str(edited)], root),
           (["--touch", "--forceall", "--cores", "1", "--configfile", str(root / "base.yaml")], root)])
    for (k, _), r in zip(elsewhere.items(), runs):
        assert r["rc"] == 0, r["out"][-3000:]
        assert "freesurfer_recon_all" not in job_counts(r["out"]), k
    assert job_counts(runs[0]["out"]).get("anat_biascorrect_ants") == 1  # the edit did re-run its own step
    dry_edit, touch_edit, touch_all = runs[len(elsewhere):]
    # the dry run shows the job and why; the run itself refuses before any job starts
    # recon-all and what reads its stats (parse, group tables, combined table, methods)
    # (and the visit's QC numbers and pages: eTIV and mean thickness come from recon-all)
    assert job_counts(dry_edit["out"]) == {"freesurfer_recon_all": 1, "fs_parse_subject": 1, "fs_aggregate_group": 1,
                                           "group_long": 1, "methods": 1, "qc_visit_metrics": 1, "qc_visit_page": 1,
                                           "qc_group_page": 1, "all": 1}
    assert "Params have changed" in parse_jobs(dry_edit["out"])["freesurfer_recon_all[subject=01]"]["reason"]
    for r in (touch_edit, touch_all):
        assert r["rc"] != 0
        assert "refusing to redo a finished FreeSurfer recon-all" in r["out"]
        assert "--forcerun freesurfer_recon_all" in r["out"]
    assert {p: p.stat().st_mtime_ns for p in before} == before and done.read_text() == "placeholder\n"
    # a newer raw T1w (re-downloaded data) is refused the same way
    t1 = Path(ctx.cfg["bids_dir"]) / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    os.utime(t1)
    [newer] = smk_batch([([str(done), "--touch", "--cores", "1",
                           "--configfile", str(root / "base.yaml")], root)])
    low = newer["out"].lower()
    # the reason: the newer T1w itself, or the visit's input checks it makes re-run (rules/validate.smk)
    assert newer["rc"] != 0 and "refusing to redo" in newer["out"] and (
        "updated input" in low or "input files updated by another job" in low), newer["out"][-3000:]
    # the explicit path: --forcerun freesurfer_recon_all (here --touch marks it done again)
    ok, after = smk_batch([(["--touch", "--forcerun", "freesurfer_recon_all", "--cores", "1", "--configfile",
                             str(edited)], root), (dry(edited), root)])
    assert ok["rc"] == 0, ok["out"][-3000:]
    assert "freesurfer_recon_all" not in job_counts(after["out"])


# ---- 3. determinism ----------------------------------------------------------------------------

# Outputs of the ANTs registration (seeded from anat.register.seed) with 2 ITK threads, measured
# in two pairs of runs of the reduced demo (antspyx 0.6.3): warp fields mean |d| 0.024 mm, 99.9th
# percentile 0.37-0.64 mm, max 0.78-1.03 mm; affine matrix |d| <= 0.0014, translation <= 0.026 mm;
# warped T1w mean |d| 0.055-0.081 % of its maximum; correlation_after 0.0005-0.0011; QC figure
# <= 0.001. (Without the seed, as antspyx silently ran before: warp mean 0.08 mm, max 1.8 mm;
# test_ants_seeds_come_from_config checks the seed itself.) With threads 1 they are identical.
TOL_WARP_MEAN_MM, TOL_WARP_P999_MM = 0.12, 2.0
TOL_WARPED_MEAN_FRAC = 0.005
TOL_CORR = 0.01
TOL_AFFINE_MATRIX, TOL_AFFINE_TRANSLATION_MM = 0.01, 0.25
TOL_FIG_MEAN = 0.01  # mean |d| of the registration QC figure's pixels (0..1)

NOT_COMPARED = ("logs/", ".neurosmk/")


def content_digest(path: Path) -> str:
    """sha256 of the file's content; gzip streams decompressed (their header carries a mtime)."""
    h = hashlib.sha256()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def output_files(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for p in sorted(out.rglob("*"))
            if p.is_file() and not str(p.relative_to(out)).startswith(NOT_COMPARED)}


def _registration_kind(rel: str) -> str | None:
    if rel.endswith("_xfm.nii.gz"):
        return "warp"
    if rel.endswith("_xfm.mat"):
        return "affine"
    if re.search(r"_space-[^_/]+_desc-brain_T1w\.nii\.gz$", rel):
        return "warped"
    if rel.endswith("desc-registration_metrics.json"):
        return "metrics"
    if rel.endswith("_desc-reg_T1w.png"):
        return "figure"
    # QC numbers and pages (rules/qc.smk) carry the registration similarity
    if rel.endswith("_desc-qc_metrics.json") or re.search(r"(^|/)group/qc(\.html|_metrics\.tsv)$", rel) or \
            re.fullmatch(r"sub-[^/]+\.html", rel):
        return "qc"
    return None


def compare_outputs(a: Path, b: Path, rels) -> dict:
    """Exact for everything but the registration outputs (tolerances above); returns the figures."""
    import nibabel as nib

    figures = {}
    for rel in rels:
        pa, pb = a / rel, b / rel
        kind = _registration_kind(rel)
        if kind is None and rel.endswith(".json") and "SourceChecksums" in (sa := json.loads(pa.read_text())):
            # a provenance sidecar: exact, except the checksums of registration outputs it read
            sb = json.loads(pb.read_text())
            assert sa["SourceChecksums"].keys() == sb["SourceChecksums"].keys(), rel
            for s_ in (sa, sb):
                s_["SourceChecksums"] = {k: v for k, v in s_["SourceChecksums"].items() if not _registration_kind(k)}
            assert sa == sb, f"{rel} differs between two runs from scratch"
        elif kind is None:
            assert content_digest(pa) == content_digest(pb), f"{rel} differs between two runs from scratch"
        elif kind == "warp":
            d = np.abs(nib.load(pa).get_fdata() - nib.load(pb).get_fdata())
            figures[rel] = (float(d.mean()), float(np.percentile(d, 99.9)), float(d.max()))
            assert d.mean() < TOL_WARP_MEAN_MM and np.percentile(d, 99.9) < TOL_WARP_P999_MM, (rel, figures[rel])
        elif kind == "warped":
            x, y = nib.load(pa).get_fdata(), nib.load(pb).get_fdata()
            frac = float(np.abs(x - y).mean() / np.abs(x).max())
            figures[rel] = frac
            assert frac < TOL_WARPED_MEAN_FRAC, (rel, frac)
        elif kind == "affine":
            import ants

            ta, tb = ants.read_transform(str(pa)), ants.read_transform(str(pb))
            pa_, pb_ = np.asarray(ta.parameters), np.asarray(tb.parameters)
            figures[rel] = (float(np.abs(pa_[:9] - pb_[:9]).max()), float(np.abs(pa_[9:] - pb_[9:]).max()))
            assert figures[rel][0] < TOL_AFFINE_MATRIX and figures[rel][1] < TOL_AFFINE_TRANSLATION_MM, figures[rel]
            assert np.allclose(ta.fixed_parameters, tb.fixed_parameters)
        elif kind == "metrics":
            ma, mb = json.loads(pa.read_text()), json.loads(pb.read_text())
            assert ma.keys() == mb.keys() and ma["transform"] == mb["transform"]
            assert ma["correlation_before"] == pytest.approx(mb["correlation_before"], abs=1e-9)
            figures[rel] = abs(ma["correlation_after"] - mb["correlation_after"])
            assert figures[rel] < TOL_CORR, (rel, ma, mb)
        elif kind == "qc" and rel.endswith(".json"):
            ma, mb = json.loads(pa.read_text()), json.loads(pb.read_text())
            ra, rb = (m_["metrics"].pop("reg_similarity_after") for m_ in (ma, mb))
            assert ma == mb, f"{rel} differs between two runs from scratch"
            assert (ra is None) == (rb is None) and (ra is None or abs(ra - rb) < TOL_CORR), (rel, ra, rb)
        elif kind == "qc":
            # pages and the group table: the same text; numbers (the similarity after registration,
            # its robust z, the positions of its dots) are compared through the metrics JSON above
            num = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?")
            assert num.sub("#", pa.read_text()) == num.sub("#", pb.read_text()), f"{rel} differs"
        elif kind == "figure":
            import matplotlib.image as mpimg

            x, y = mpimg.imread(pa), mpimg.imread(pb)
            assert x.shape == y.shape
            figures[rel] = float(np.abs(x - y).mean())
            assert figures[rel] < TOL_FIG_MEAN, (rel, figures[rel])
    return figures


@pytest.fixture(scope="module")
def second_run(reduced_run, tmp_path_factory) -> dict:
    """The whole reduced demo once more, from scratch, in another folder, SIGKILLed as soon as the
    DWI denoising job has written its first output and finished with --rerun-incomplete: one run
    serves test_two_runs_from_scratch_agree (its outputs) and
    test_sigkill_then_rerun_incomplete_equals_uninterrupted_run (the kill and the resume)."""
    work = tmp_path_factory.mktemp("second_run")
    out = work / "out"
    cfg = reduced_config(reduced_run["reduced"], out, work / "config.yaml")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    denoised = out / "sub-02" / "dwi" / "sub-02_desc-denoised_dwi.nii.gz"
    noise = out / "sub-02" / "dwi" / "sub-02_desc-mppca_noise.nii.gz"
    with open(work / "killed_run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", SNAKEFILE, "--cores", "2",
                                 "--configfile", str(cfg)], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        # the denoising job writes its DWI, then its noise map: kill as soon as the first is in place
        deadline = time.time() + 900
        while not denoised.exists():
            assert proc.poll() is None, (work / "killed_run.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    survived = True
    for _ in range(100):  # the job's own process is in the same group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            survived = False
            break
        time.sleep(0.05)
    noise_written = noise.exists()
    print(f"killed with the noise map {'written' if noise_written else 'not yet written'}")
    after_kill = run_snakemake(dry(cfg), cwd=work, check=False)
    run_snakemake(["--unlock", "--cores", "1", "--configfile", str(cfg)], cwd=work)
    run_snakemake(["--cores", "2", "--rerun-incomplete", "--configfile", str(cfg)], cwd=work, timeout=1500)
    return {"out": out, "work": work, "cfg": cfg, "denoised": denoised, "survived": survived,
            "after_kill": after_kill.stdout + after_kill.stderr, "after_kill_jobs": job_counts(after_kill.stdout)}


def test_two_runs_from_scratch_agree(reduced_run, second_run):
    a, b = reduced_run["out"], second_run["out"]
    fa, fb = output_files(a), output_files(b)
    assert fa.keys() == fb.keys(), set(fa) ^ set(fb)
    kinds = {rel: _registration_kind(rel) for rel in fa}
    assert sorted(k for k in kinds.values() if k and k != "qc") == ["affine", "figure", "metrics", "warp", "warp",
                                                                    "warped"]
    # 2 visit metrics JSONs, 2 visit pages, the group page and its table
    assert sum(k == "qc" for k in kinds.values()) == 6, [r for r, k in kinds.items() if k == "qc"]
    figures = compare_outputs(a, b, sorted(fa))
    print("registration differences between two runs:", json.dumps(figures, indent=1))
    exact = [rel for rel, k in kinds.items() if k is None]
    assert len(exact) > 30 and any(r.endswith("_dseg.nii.gz") for r in exact)  # Atropos: exact too


def test_ants_seeds_come_from_config(reduced_run, monkeypatch):
    """anat.register.seed reaches antsRegistration (--random-seed, via ants.config: antspyx 0.6.3
    drops registration(random_seed=...)); Atropos runs with a constant seed (r=0)."""
    import ants

    from neurosmk import anat

    calls = {}

    def stop(name):
        def spy(*args, **kwargs):
            calls[name] = (kwargs, ants.config._random_seed)
            raise RuntimeError("stop")
        return spy

    monkeypatch.setattr(ants, "registration", stop("registration"))
    monkeypatch.setattr(ants, "atropos", stop("atropos"))
    monkeypatch.setattr(ants.config, "_random_seed", None)
    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
    a = reduced_run["out"] / "sub-01" / "anat"
    with pytest.raises(RuntimeError, match="stop"):
        anat.register(str(a / "sub-01_desc-brain_T1w.nii.gz"), str(reduced_run["reduced"]["template"]),
                      "a", "b", "c", "d", seed=1234)
    kwargs, seed = calls["registration"]
    assert seed == 1234 and "random_seed" not in kwargs
    assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "2"  # the rule's threads are kept
    with pytest.raises(RuntimeError, match="stop"):
        anat.atropos(str(a / "sub-01_desc-preproc_T1w.nii.gz"), str(a / "sub-01_desc-brain_mask.nii.gz"), "x", {})
    assert calls["atropos"][0]["r"] == 0
    # and the seed is a param of the registration rule: editing it re-runs the registration
    assert "real:anat.register.seed" in {c.id.rsplit("=", 1)[0] for c in CASES}


# ---- 4. interrupted run ------------------------------------------------------------------------

def test_sigkill_then_rerun_incomplete_equals_uninterrupted_run(reduced_run, second_run):
    import nibabel as nib

    work, out, cfg = second_run["work"], second_run["out"], second_run["cfg"]
    assert not second_run["survived"], "processes of the killed run survived SIGKILL"
    # the killed job's outputs are not taken as complete: Snakemake refused or re-ran the job
    text = second_run["after_kill"]
    assert ("IncompleteFilesException" in text and str(second_run["denoised"]) in text) or \
        "dwi_denoise_dipy" in second_run["after_kill_jobs"], text[-3000:]
    assert "Nothing to be done" not in text

    assert "Nothing to be done" in run_snakemake(dry(cfg), cwd=work).stdout
    incomplete = work / ".snakemake" / "incomplete"
    assert not incomplete.exists() or not [p for p in incomplete.rglob("*") if p.is_file()]
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    for nii in out.rglob("*.nii.gz"):
        assert np.isfinite(nib.load(nii).get_fdata()).all(), nii
    # equal to the uninterrupted run: the same files (every one compared in
    # test_two_runs_from_scratch_agree); the DWI chain the kill hit, here too
    ours, theirs = output_files(out), output_files(reduced_run["out"])
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    dwi = sorted(k for k in ours if k.startswith("sub-02/dwi/") or k == "group/dwi_dti_roistats.tsv")
    assert any(r.endswith("param-FA_dwimap.nii.gz") for r in dwi) and "group/dwi_dti_roistats.tsv" in dwi
    compare_outputs(reduced_run["out"], out, dwi)
