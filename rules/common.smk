# Shared set-up: config validation, BIDS indexing and input validation, path helpers,
# backend selection, env/container declarations. Runs once, before any job.

import os
import sys

NEUROSMK_ROOT = os.path.abspath(os.path.join(workflow.basedir))
_SRC = os.path.join(NEUROSMK_ROOT, "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
# rule scripts (and conda envs) import the package from the checkout
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from neurosmk import __version__ as NEUROSMK_VERSION
from neurosmk import backends as _backends
from neurosmk import bids as _bids
from neurosmk.config import validate_config
from neurosmk.paths import bench_path, deriv, log_path
from neurosmk.startup import job_subjects

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
# --touch (mark existing outputs, e.g. a recon-all made elsewhere, as complete) runs no tool;
# the executor is not known yet at parse time either, so the command line tells
_touch = any(a in ("--touch", "-t") for a in sys.argv[1:])
_check_tools = not (DeploymentMethod.CONDA in _sdm or DeploymentMethod.APPTAINER in _sdm
                    or getattr(workflow.output_settings, "dryrun", False) or _touch)
METHOD = _backends.check_methods(config, check_tools=_check_tools)

# ---- BIDS input ------------------------------------------------------------------------------
_index = _bids.index_bids(config["bids_dir"], subjects=JOB_SUBJECTS).select(
    config["participant_label"], config["session_label"], strict=JOB_SUBJECTS is None)
HAS_SES = _index.has_sessions
_filters = config["bids_filters"]
T1W = {}   # (subject, session) -> path
DWI = {}   # (subject, session) -> DWISeries
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
if config["validate_inputs"] and workflow.is_main_process:
    # a dry run writes nothing into output_dir (README "Safety"): it reads the cache only
    _bids.validate_inputs(_index, _filters, settings=VALIDATE_SETTINGS,
                          cache_path=os.path.join(OUT, ".neurosmk", "validated_headers.json"),
                          save_cache=not getattr(workflow.output_settings, "dryrun", False))

wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    session="[a-zA-Z0-9]+",

# ---- environments ----------------------------------------------------------------------------
ENVS = {name: f"../envs/{name}.yaml" for name in ("neurosmk", "mrtrix3", "fsl", "freesurfer", "tortoise")}
CONTAINERS = {
    # the project env is created with conda inside this pinned base image
    "neurosmk": "docker://condaforge/miniforge3:24.11.3-0",
    # official MRtrix3 image; it also carries the FSL parts its scripts call (dwifslpreproc -> eddy)
    "mrtrix3": "docker://mrtrix3/mrtrix3:3.0.4",
    # FSL 6.0.7.18 in both deployment paths: envs/fsl.yaml pins that release's packages; this is
    # Neurodesk's image of it (vnmd/<tool>_<version>:<build date>)
    "fsl": "docker://vnmd/fsl_6.0.7.18:20250928",
    "freesurfer": "docker://freesurfer/freesurfer:7.4.1",
    # TORTOISE 4 (DRBUDDI / DRBUDDI_cuda) as QSIPrep builds it (its Dockerfile's build_tortoise
    # stages, TAG_TORTOISE=24.4.29): binaries in /src/TORTOISEV4/bin
    "tortoise": "docker://pennlinc/qsiprep-drbuddi:24.4.29",
    "tortoise_cuda": "docker://pennlinc/qsiprep-drbuddicuda:24.4.29",
}


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
    return f"{OUT}/sub-{{subject}}/figures/{visit_wc()}_desc-{desc}_{suffix}.png"


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
_FSL_TPL = (f"{OUT}/sourcedata/templates/tpl-{FSL_TEMPLATE_NAME}_res-{int(FSL_TEMPLATE_RES[:-2]):02d}")
FSL_TEMPLATE = {"head": f"{_FSL_TPL}_T1w.nii.gz", "brain": f"{_FSL_TPL}_desc-brain_T1w.nii.gz",
                "mask_dil": f"{_FSL_TPL}_desc-braindil_mask.nii.gz"}


def template_t1w():
    """The template brain the registration QC and metrics compare with."""
    if METHOD["anat.register"] == "fsl":
        return FSL_TEMPLATE["brain"]
    if config["template"]["t1w"]:
        return config["template"]["t1w"]
    from neurosmk.anat import nilearn_template

    return nilearn_template()


def all_targets():
    targets = [f"{OUT}/dataset_description.json"]
    if config["steps"]["anat"] and T1W:
        targets += [t for p in ANAT_TARGETS for t in expand_visits(p, T1W)]
        targets.append(f"{OUT}/group/anat_tissue_volumes.tsv")
    if config["steps"]["dwi"] and DWI:
        targets += [t for p in DWI_TARGETS for t in expand_visits(p, DWI)]
        targets.append(f"{OUT}/group/dwi_dti_roistats.tsv")
    targets += EXTRA_TARGETS
    return targets


# rule files append their final outputs here
ANAT_TARGETS = []
DWI_TARGETS = []
EXTRA_TARGETS = []
