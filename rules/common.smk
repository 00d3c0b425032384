# Shared set-up: config validation, BIDS indexing and input validation, path helpers,
# backend selection, env/container declarations. Runs once, before any job.

import os
import sys

# NEUROSMK_ROOT, NEUROSMK_SRC (on sys.path): the Snakefile. Rule scripts (and conda envs) import
# the package from the checkout too (set for the jobs, not required from the user: not an
# `envvars:` entry)
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (NEUROSMK_SRC, os.environ.get("PYTHONPATH")) if p))

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from neurosmk import __version__ as NEUROSMK_VERSION
from neurosmk import backends as _backends
from neurosmk import bids as _bids
from neurosmk.config import validate_config
from neurosmk import paths as _paths
from neurosmk.paths import bench_path, deriv, log_path
from neurosmk.startup import job_subjects, tool_rule_files

# A snakemake started for jobs of a main process (a cluster job, a group job's step: --mode
# remote/subprocess with --target-jobs) re-parses this workflow for each job: it indexes only the
# subjects of its jobs and skips the checks the main process did before submitting them
# (config schema, input headers). None: the whole cohort (a main process, a cohort-level job).
JOB_SUBJECTS = job_subjects(sys.argv[1:], main_process=workflow.is_main_process)
config.update(validate_config(config, check=workflow.is_main_process))
OUT = config["output_dir"].rstrip("/")
# output_dir inside the raw dataset or a subject folder: refused before anything is written
from neurosmk.outdir import check_output_dir

check_output_dir(OUT, config["bids_dir"])

_sdm = workflow.deployment_settings.deployment_method
# -n: at parse time workflow.dryrun is still False (no executor yet); output_settings knows
# --touch (mark existing outputs, e.g. a recon-all made elsewhere, as complete) and --lint run no
# tool; the executor is not known yet at parse time either, so the command line tells
_touch = any(a in ("--touch", "-t") for a in sys.argv[1:])
_lint = any(a == "--lint" or a.startswith("--lint=") for a in sys.argv[1:])  # writes nothing either
_check_tools = not (
    DeploymentMethod.CONDA in _sdm
    or DeploymentMethod.APPTAINER in _sdm
    or getattr(workflow.output_settings, "dryrun", False)
    or _touch
    or _lint
)
METHOD = _backends.check_methods(config, check_tools=_check_tools)

# ---- BIDS input ------------------------------------------------------------------------------
_index = _bids.index_bids(config["bids_dir"], subjects=JOB_SUBJECTS).select(
    config["participant_label"],
    config["session_label"],
    strict=JOB_SUBJECTS is None,
    participant_exclude=config["participant_exclude"],
)
HAS_SES = _index.has_sessions
_filters = config["bids_filters"]
T1W = {}  # (subject, session) -> path
DWI = {}  # (subject, session) -> DWISeries
for _key, _visit in sorted(_index.visits.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
    _t = _bids.pick_t1w(_visit, _filters.get("t1w"))
    if _t:
        T1W[_key] = _t
    _d = _bids.pick_dwi(_visit, _filters.get("dwi"))
    if _d:
        DWI[_key] = _d
for _w in _index.warnings:
    print(f"neurosmk: warning: {_w}", file=sys.stderr)
# Header-level input checks (NIfTI headers, gradient tables: no voxel data, cached by size and
# mtime); the voxel-level checks run per visit in the validate_anat/validate_dwi jobs (rules/validate.smk).
from neurosmk import validate as _validate

VALIDATE_SETTINGS = _validate.settings_from_config(config, METHOD)
HEADER_CACHE = None
if config["validate_inputs"] and workflow.is_main_process:
    # read-only here: the cache is saved when jobs start (rules/safety.smk onstart), so a dry run,
    # --lint or --list-rules writes nothing into output_dir (README "Safety")
    HEADER_CACHE = _bids.validate_inputs(
        _index,
        _filters,
        settings=VALIDATE_SETTINGS,
        cache_path=_paths.state_path(OUT, "validated_headers.json"),
        save_cache=False,
    )


wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    session="[a-zA-Z0-9]+",


# ---- environments ----------------------------------------------------------------------------
# one tool family = conda env file + container image + version command, declared once in
# neurosmk.backends.FAMILIES (the project env runs in a pinned conda base image)
ENVS = _backends.env_files()
CONTAINERS = _backends.containers()


def res(rule_name):
    """A rule's resources, from the backend registry (neurosmk.backends): mem_mb and runtime
    scaled by the attempt (retries), gpu=1 when the config puts its backend on the GPU."""
    return _backends.resources(rule_name, config)


def step_cfg(dotted):
    section, name = dotted.split(".")
    return config[section][name]


# ---- paths -----------------------------------------------------------------------------------
def _key(wc):
    return (wc.subject, getattr(wc, "session", None) if HAS_SES else None)


def visit_wc():
    return "sub-{subject}_ses-{session}" if HAS_SES else "sub-{subject}"


def anat(suffix, ext=".nii.gz", **ents):
    return deriv(OUT, "anat", suffix, ext, HAS_SES, **ents)


def dwi(suffix, ext=".nii.gz", **ents):
    return deriv(OUT, "dwi", suffix, ext, HAS_SES, **ents)


def figure(desc, suffix):
    return _paths.figure_path(OUT, "{subject}", visit_wc(), desc, suffix)


def folder_of(path, levels=1):
    """The folder ``levels`` above an output file: params that are a prefix of a job's outputs are
    derived from them (``lambda wc, output: folder_of(output.x)``), never hard-coded."""
    for _ in range(levels):
        path = os.path.dirname(path)
    return path or "."


def logfile(rule_name, visit=True):
    """Log of a rule's job (neurosmk.paths.log_path): per visit, or per group job with visit=False,
    or per any other wildcard given as visit (e.g. "{fssub}")."""
    return log_path(OUT, rule_name, visit_wc() if visit is True else (visit or None))


def benchfile(rule_name, visit=True):
    return bench_path(OUT, rule_name, visit_wc() if visit is True else (visit or None))


def raw_t1w(wc):
    return T1W[_key(wc)]


def raw_dwi(wc):
    d = DWI[_key(wc)]
    return {"nii": d.nifti, "bval": d.bval, "bvec": d.bvec}


def expand_visits(pattern, visits):
    out = []
    for sub, ses in visits:
        wc = {"subject": sub}
        if HAS_SES:
            wc["session"] = ses
        out.append(pattern.format(**wc))
    return out


TEMPLATE_NAME = config["template"]["name"]


# anat.register.method fsl: FSL's MNI152 at the fnirt config's resolution (rules/fsl.smk)
FSL_TEMPLATE_NAME = "MNI152NLin6Asym"
FSL_TEMPLATE_RES = _backends.fnirt_resolution(config["anat"]["register"]["fnirt_config"])  # e.g. "2mm"
_FSL_TPL = f"tpl-{FSL_TEMPLATE_NAME}_res-{int(FSL_TEMPLATE_RES[:-2]):02d}"
FSL_TEMPLATE = {
    k: _paths.template_file(OUT, _FSL_TPL, s)
    for k, s in (("head", "T1w.nii.gz"), ("brain", "desc-brain_T1w.nii.gz"), ("mask_dil", "desc-braindil_mask.nii.gz"))
}


def template_t1w():
    """The template brain the registration QC and metrics compare with."""
    if METHOD["anat.register"] == "fsl":
        return FSL_TEMPLATE["brain"]
    if config["template"]["t1w"]:
        return config["template"]["t1w"]
    from neurosmk.anat import nilearn_template

    return nilearn_template()


# shared by the tool rule files, which the Snakefile includes only when the config selects one of
# their rules (neurosmk.startup.tool_rule_files)
# dwi.preproc (rules/mrtrix.smk dwifslpreproc, rules/tortoise.smk DRBUDDI): eddy/distortion-
# corrected series with its rotated gradients
DWI_PREPROC = dwi("dwi", desc="preproc")
DWI_PREPROC_BVAL = dwi("dwi", ext=".bval", desc="preproc")
DWI_PREPROC_BVEC = dwi("dwi", ext=".bvec", desc="preproc")
# FSL writes NIfTI-gz (its outputs are named after a basename: each rule runs through the tool
# wrapper, TOOLRUN, in the job's private "$tmp", and toolrun_end renames the files it keeps)
_FSL_ENV = "export FSLOUTPUTTYPE=NIFTI_GZ && "
# FreeSurfer recon-all (rules/freesurfer.smk) and its stats tables (rules/aggregate.smk)
FS_RECON_DIR = _paths.recon_all_dir(OUT)
FS_SUBJECT = visit_wc()  # sub-<label>[_ses-<label>]

DATASET_DESCRIPTION = _paths.dataset_file(OUT, "dataset_description.json")
GROUP_ANAT_VOLUMES = _paths.group_file(OUT, "anat_volumes")
GROUP_DTI_STATS = _paths.group_file(OUT, "dti_stats")


def all_targets():
    targets = [DATASET_DESCRIPTION]
    if config["steps"]["anat"] and T1W:
        targets += [t for p in ANAT_TARGETS for t in expand_visits(p, T1W)]
        targets.append(GROUP_ANAT_VOLUMES)
    if config["steps"]["dwi"] and DWI:
        targets += [t for p in DWI_TARGETS for t in expand_visits(p, DWI)]
        targets.append(GROUP_DTI_STATS)
    targets += EXTRA_TARGETS
    return targets


# rule files append their final outputs here
ANAT_TARGETS = []
DWI_TARGETS = []
EXTRA_TARGETS = []


# ---- input functions and helpers of the rule files --------------------------------------------
# (here, not beside their rules: `snakemake --lint` wants rules and functions in separate files)


# rules/dwi.smk
def dwi_after_denoise(wc):
    if METHOD["dwi.denoise"] == "none":
        return raw_dwi(wc)["nii"]
    return DWI_DENOISED.format(**wc)


def dwi_after_degibbs(wc):
    if METHOD["dwi.degibbs"] == "none":
        return dwi_after_denoise(wc)
    return DWI_DEGIBBS.format(**wc)


def dwi_for_model(wc):
    """The DWI series the mask and the tensor fit use, with its gradient table."""
    if METHOD["dwi.preproc"] != "none":  # rules/mrtrix.smk: eddy-corrected series, rotated bvecs
        return {
            "dwi": DWI_PREPROC.format(**wc),
            "bval": DWI_PREPROC_BVAL.format(**wc),
            "bvec": DWI_PREPROC_BVEC.format(**wc),
        }
    return {"dwi": dwi_after_degibbs(wc), "bval": raw_dwi(wc)["bval"], "bvec": raw_dwi(wc)["bvec"]}


# rules/mrtrix.smk
def _mrtrix_degibbs_axes(slice_axis):
    """mrdegibbs -axes: the two in-plane axes, i.e. all but the slice axis."""
    return ",".join(str(a) for a in (0, 1, 2) if a != slice_axis)


# rules/mrtrix.smk
def _dwi_sidecar(wc):
    return DWI[_key(wc)].json


def _preproc_pe_args(wc):
    """-rpe_none -pe_dir X [-readout_time T], or -rpe_header -json_import sidecar: a list of
    arguments, each shell-quoted by {params.pe:q}."""
    c = step_cfg("dwi.preproc")
    sidecar = _dwi_sidecar(wc)
    meta = {}
    if sidecar:
        import json

        with open(sidecar) as fh:
            meta = json.load(fh)
    if c["rpe"] == "header":
        if not sidecar:
            raise ValueError(f"dwi.preproc.rpe 'header' needs a BIDS sidecar (.json) for {raw_dwi(wc)['nii']}")
        return ["-rpe_header", "-json_import", sidecar]
    pe_dir = c["pe_dir"] or meta.get("PhaseEncodingDirection")
    if not pe_dir:
        raise ValueError(
            f"dwi.preproc: no phase-encoding direction for {raw_dwi(wc)['nii']}: set "
            f"config key 'dwi.preproc.pe_dir' or PhaseEncodingDirection in its BIDS sidecar"
        )
    args = ["-rpe_none", "-pe_dir", str(pe_dir)]
    readout = c["readout_time"] or meta.get("TotalReadoutTime")
    if readout:
        args += ["-readout_time", f"{float(readout):g}"]
    return args


def _eddy_options():
    opts = step_cfg("dwi.preproc")["eddy_options"].strip()
    return f" {opts} "  # MRtrix needs the leading space, or it parses "--slm" as its own option


# rules/aggregate.smk
def _split_fs_name(name):
    if name in FS_RECON_SUBJECTS:
        from neurosmk.fsstats.parser import split_subject_session

        return split_subject_session(name)
    return name, ""


# rules/group.smk
def _group_long_inputs(wc):
    inputs = {}
    if config["steps"]["anat"] and T1W:
        inputs["tissue"] = GROUP_ANAT_VOLUMES
    if config["steps"]["dwi"] and DWI:
        inputs["dti"] = GROUP_DTI_STATS
    if FS_SUBJECTS:  # rules/aggregate.smk
        inputs["fs_long"] = FSG["long_parquet"]
        inputs["fs_global"] = FSG["global_parquet"]
    return inputs


# rules/qc.smk
def _visit_name(wc):
    return f"sub-{wc.subject}_ses-{wc.session}" if HAS_SES else f"sub-{wc.subject}"


def _qc_has(wc, kind):
    return _key(wc) in (T1W if kind == "anat" else DWI) and (_QC_ANAT if kind == "anat" else _QC_DWI)


def _qc_metrics_inputs(wc):
    inputs = {}
    if _qc_has(wc, "anat"):
        inputs.update(t1w=T1_PREPROC.format(**wc), dseg=DSEG.format(**wc), volumes=TISSUE_VOL.format(**wc))
        if METHOD["anat.register"] != "none":  # no registration: no template similarity numbers
            inputs["reg_metrics"] = REG_METRICS.format(**wc)
    if _qc_has(wc, "dwi"):
        raw = raw_dwi(wc)  # image quality of the acquisition, not of the denoised series
        inputs.update(
            dwi=raw["nii"], bval=raw["bval"], dwi_mask=DWI_MASK.format(**wc), dti_stats=DTI_STATS.format(**wc)
        )
    name = _visit_name(wc)
    if name in FS_SUBJECTS:  # a recon-all subject, or a freesurfer_dir folder named like the visit
        inputs["fs_global"] = FS_SUBJECT_GLOBAL.format(fssub=name)
    return inputs


# rules/qc.smk: the visit page's figures and captions
def _qc_page_figures(wc):
    return [f.format(**wc) for kind in ("anat", "dwi") if _qc_has(wc, kind) for f, _, _ in QC_FIGURES[kind]]


def _qc_page_captions(wc):
    return [[t, c] for kind in ("anat", "dwi") if _qc_has(wc, kind) for _, t, c in QC_FIGURES[kind]]


# rules/tortoise.smk
def _drb_inputs(wc):
    rev, rb, _ = _DRB_REVERSE[_key(wc)]
    return {"dwi": dwi_after_degibbs(wc), "bval": raw_dwi(wc)["bval"], "rev": rev, **({"rev_bval": rb} if rb else {})}


# rules/freesurfer.smk
def _refuse_recon_all_redo():
    """A finished recon-all (its sentinel exists) is redone only on explicit request.

    Snakemake would redo it whenever one of its triggers fires (a changed recon-all
    parameter, a touched or moved T1w, an edited rule, --forceall) and first delete its
    outputs. protected() stops that only for non-root users, so this check runs before any
    job starts (real runs and --touch; a dry run lists the job with its reason) and
    refuses unless the rule is named in --forcerun.
    """
    from snakemake.exceptions import WorkflowError

    if "freesurfer_recon_all" in workflow.dag_settings.forcerun:
        return
    redo = [
        job
        for job in workflow.dag.needrun_jobs()
        if job.rule.name == "freesurfer_recon_all" and os.path.exists(job.output.done)
    ]
    if redo:
        lines = "\n".join(f"  - {job.output.done} (reason: {workflow.dag.reason(job)})" for job in redo)
        raise WorkflowError(
            f"refusing to redo a finished FreeSurfer recon-all (hours of work):\n{lines}"
            "\nTo keep it, undo the change (`make why` lists what changed). To redo it on purpose, run "
            "again with `--forcerun freesurfer_recon_all` (as a non-root user first `chmod u+w` "
            "its outputs: they are write-protected)."
        )


# rules/validate.smk: the visit's input-check report, as every first rule's input
def validated_report(datatype):
    return _paths.state_path(OUT, "validate", datatype, f"{visit_wc()}.json")


_DWI_ORDER = ("dwi.denoise", "dwi.degibbs", "dwi.preproc", "dwi.mask")


def validated(datatype, step=None):
    """``**validated("anat"|"dwi")`` in a rule's input: the visit's report of that datatype as
    input ``valid``. For a later DWI step, only when every step before it is 'none' (it
    then reads the raw series); the anatomical first rules and the denoise rules always read raw
    data."""
    if step is not None and any(METHOD.get(s, "none") != "none" for s in _DWI_ORDER[: _DWI_ORDER.index(step)]):
        return {}
    return {"valid": validated_report(datatype)}


def _validate_t1w(wc):
    return {"t1w": T1W[_key(wc)]}


def _validate_dwi(wc):
    d = DWI[_key(wc)]
    return {"dwi": d.nifti, "bval": d.bval, "bvec": d.bvec}
