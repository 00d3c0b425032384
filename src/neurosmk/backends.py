"""The backend registry: one declarative record per (step, method).

``STEPS[step][method]`` is a :class:`Backend`: the rules that implement it (each with its
resources), the external tools it runs (checked on PATH at start unless ``--sdm conda``/
``apptainer`` is used or the run is a dry run), the optional Python packages it imports, its tool
family (conda env file + container image + version command, declared once in ``FAMILIES``), what
to install, its GPU switch, the config keys it reads, and its methods sentence with references
(``docs/methods.md``).  The rule files define a step's rules only for the method the config chose
(``if METHOD['dwi.denoise'] == 'mrtrix':``); every backend of a step writes the same
BIDS-Derivatives file names, so downstream rules never care.  Rules that are not a step's
backend (QC, group tables, recon-all) have their resources in ``SUPPORT_RULES``; every rule reads
its resources with ``res(rule)`` (rules/common.smk), so they live here only: the profiles do not
restate them (tests/test_backends_registry.py).

At start, :func:`check_methods` checks the configuration against the registry and
:func:`check_rules` (rules/safety.smk, after every rule file) that each selected method's rules
exist and that it has a methods sentence.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

# ---- tool families: env file + container + version command, declared once ----------------------


@dataclass(frozen=True)
class ToolFamily:
    env: str                      # conda env file, envs/<env>.yaml
    container: str                # pinned image (--sdm apptainer)
    # how a shell rule's tool reports its version (first line kept), {tool}/{image} formatted in
    version_command: str | None = None
    install: str = ""


_MRTRIX_VERSION = '{tool} -version 2>&1 | head -n 1'
_FSL_VERSION = 'printf "FSL %s" "$(cat "$FSLDIR/etc/fslversion" 2>/dev/null || echo unknown)"'
# TORTOISE's DRBUDDI has no version option (QMICodeBase/TORTOISEV4 src/tools/DRBUDDI/
# DRBUDDI_parserBase.cxx @ 009d9d2d: up_data, up_json, down_data, structural, grad_nonlin, DRBUDDI_*, ...,
# ncores), so its version is the pinned image it ran in; outside a container it is unknown
_TORTOISE_VERSION = (
    'case "${{APPTAINER_CONTAINER:-}}${{SINGULARITY_CONTAINER:-}}" in '
    '?*) printf "TORTOISE %s from %s (DRBUDDI has no version option: the image tag is the version)"'
    ' "{tool}" "{image}" ;; '
    '*) printf "TORTOISE %s, version unknown (DRBUDDI has no version option; not run in the pinned image %s)" '
    '"{tool}" "{image}" ;; esac')

_FSL_INSTALL = "FSL 6.0.7 (https://fsl.fmrib.ox.ac.uk/fsl/docs/#/install/) with FSLDIR set"
_FS_INSTALL = ("FreeSurfer 7.4.1 (https://surfer.nmr.mgh.harvard.edu/fswiki/DownloadAndInstall) with "
               "FREESURFER_HOME and FS_LICENSE set")
_MRTRIX_INSTALL = "MRtrix3 3.0.x (conda install -c mrtrix3 mrtrix3=3.0.4)"
_TORTOISE_INSTALL = ("TORTOISE 4 (https://github.com/eurotomania/TORTOISEV4; DRBUDDI, DRBUDDI_cuda), or run with "
                     "--sdm apptainer (the pinned image)")
_TORCH_INSTALL = "PyTorch: pip install 'neurosmk[gpu]' (torch==2.13.0; the Linux wheels on PyPI include CUDA)"
_PY_INSTALL = "pip install -e . (the project's own environment)"

FAMILIES: dict[str, ToolFamily] = {
    # the project env is created with conda inside this pinned base image
    "neurosmk": ToolFamily("neurosmk", "docker://condaforge/miniforge3:24.11.3-0", install=_PY_INSTALL),
    # the project env plus PyTorch (the torch backends); same base image
    "neurosmk-gpu": ToolFamily("neurosmk-gpu", "docker://condaforge/miniforge3:24.11.3-0", install=_TORCH_INSTALL),
    # official MRtrix3 image; it also carries the FSL parts its scripts call (dwifslpreproc -> eddy)
    "mrtrix3": ToolFamily("mrtrix3", "docker://mrtrix3/mrtrix3:3.0.4", _MRTRIX_VERSION, _MRTRIX_INSTALL),
    # FSL 6.0.7.18 in both deployment paths: envs/fsl.yaml pins that release's packages; this is
    # Neurodesk's image of it (vnmd/<tool>_<version>:<build date>)
    "fsl": ToolFamily("fsl", "docker://vnmd/fsl_6.0.7.18:20250928", _FSL_VERSION, _FSL_INSTALL),
    "freesurfer": ToolFamily("freesurfer", "docker://freesurfer/freesurfer:7.4.1",
                             'cat "$FREESURFER_HOME/build-stamp.txt" 2>/dev/null'
                             ' || recon-all -version 2>&1 | head -n 1', _FS_INSTALL),
    # TORTOISE 4 (DRBUDDI / DRBUDDI_cuda) as QSIPrep builds it (its Dockerfile's build_tortoise
    # stages, TAG_TORTOISE=24.4.29): binaries in /src/TORTOISEV4/bin
    "tortoise": ToolFamily("tortoise", "docker://pennlinc/qsiprep-drbuddi:24.4.29", _TORTOISE_VERSION,
                           _TORTOISE_INSTALL),
    "tortoise_cuda": ToolFamily("tortoise", "docker://pennlinc/qsiprep-drbuddicuda:24.4.29", _TORTOISE_VERSION,
                                _TORTOISE_INSTALL),
}


def env_files() -> dict[str, str]:
    """Family -> conda env file, relative to rules/ (the ``conda:`` directive's base)."""
    return {name: f"../envs/{fam.env}.yaml" for name, fam in FAMILIES.items()}


def containers() -> dict[str, str]:
    return {name: fam.container for name, fam in FAMILIES.items()}


def version_commands() -> dict[str, str]:
    """Version command by family (the software environment of a shell rule); dwifslpreproc is
    MRtrix3 driving FSL's eddy, so "mrtrix3+fsl" prints both."""
    out = {name: fam.version_command for name, fam in FAMILIES.items() if fam.version_command}
    out["mrtrix3+fsl"] = _MRTRIX_VERSION + '; printf "; "; ' + _FSL_VERSION
    return out


# ---- resources --------------------------------------------------------------------------------
Amount = int | Callable[[dict], int]  # a number, or a function of the step's config


@dataclass(frozen=True)
class Res:
    """A rule's resources for the first attempt; each retry (``attempt`` 2, 3) asks for that many
    times as much memory and time (SLURM kills a job over either)."""
    mem_mb: Amount
    runtime: Amount               # minutes
    gpu: bool = False             # the rule runs on the GPU when its backend's GPU switch is on
    gpu_runtime: int | None = None  # minutes on the GPU, when shorter


@dataclass(frozen=True)
class Backend:
    tools: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # optional Python packages (import names) beyond the base install
    family: str = "neurosmk"       # tool family (FAMILIES): env file, container, version command
    install: str | None = None     # what to install (None: the family's)
    notes: str = ""
    # step options this backend supports only in part: ((key, allowed values), ...)
    choices: tuple[tuple[str, tuple], ...] = ()
    # the tools it runs instead when the step's use_gpu is true (None: the same tools on the GPU)
    gpu_tools: tuple[str, ...] | None = None
    # rule name -> resources: the rules this backend defines (none for a skipped step)
    rules: dict[str, Res] = field(default_factory=dict)
    # GPU switch: (step key, value) that puts the backend's gpu rules on the GPU
    gpu: tuple[str, object] | None = None
    # the step's config keys its rules read (their params: editing another backend's re-runs nothing)
    config_keys: tuple[str, ...] = ()
    # methods paragraph: sentence template (P: parameters, V: version text), reference keys and
    # where the version comes from (a Python distribution name, or "tool" for the shell tool's line)
    methods: str | None = None
    refs: tuple[str, ...] = ()
    version_source: str = "tool"
    doc: str = ""  # one line for the README/schema: what the method is
    # Python backends served by one rule and script: the function that script calls for this
    # method ("neurosmk.dwi.denoise_mppca"), also the sidecars' Functions
    function: str | None = None

    def __post_init__(self):
        if self.install is None:  # the family's
            object.__setattr__(self, "install", FAMILIES[self.family].install)

    @property
    def env(self) -> str:
        return FAMILIES[self.family].env

    @property
    def container(self) -> str:
        return FAMILIES[self.family].container

    def tools_for(self, step_cfg: dict | None) -> tuple[str, ...]:
        """The external tools this backend runs with the step's config (``use_gpu`` may swap them)."""
        if self.gpu_tools is not None and (step_cfg or {}).get("use_gpu"):
            return self.gpu_tools
        return self.tools

    def on_gpu(self, step_cfg: dict | None) -> bool:
        return self.gpu is not None and (step_cfg or {}).get(self.gpu[0]) == self.gpu[1]


def _py(rules: dict, **kw) -> Backend:
    return Backend(rules=rules, version_source=kw.pop("version_source", "dipy"), **kw)


def _mrtrix(tool: str, rules: dict, **kw) -> Backend:
    return Backend(tools=(tool,), family="mrtrix3", rules=rules, **kw)


def _fsl(tools: tuple, rules: dict, **kw) -> Backend:
    return Backend(tools=tools, family="fsl", rules=rules, **kw)


def _fs(tool: str, rules: dict, **kw) -> Backend:
    return Backend(tools=(tool,), family="freesurfer", rules=rules, **kw)


NONE = Backend(notes="step skipped; the previous step's output is used", doc="skipped")


STEPS: dict[str, dict[str, Backend]] = {
    "anat.biascorrect": {
        "ants": Backend(
            rules={"anat_biascorrect_ants": Res(3000, 30)},
            config_keys=("shrink_factor", "convergence_iters", "convergence_tol", "spline_distance"),
            methods=("The T1-weighted image was corrected for intensity non-uniformity with N4 (shrink factor "
                     "{P[shrink_factor]}, spline distance {P[spline_distance]} mm) as implemented in ANTsPy {V}"),
            refs=("n4", "ants"), version_source="antspyx", doc="ANTsPy N4"),
        "freesurfer": _fs(
            "AntsN4BiasFieldCorrectionFs", {"anat_biascorrect_freesurfer": Res(3000, 30)},
            config_keys=("shrink_factor", "convergence_iters"),
            methods=("The T1-weighted image was corrected for intensity non-uniformity with N4 "
                     "(AntsN4BiasFieldCorrectionFs, shrink factor {P[shrink_factor]}) from FreeSurfer ({V})"),
            refs=("n4", "freesurfer"), doc="AntsN4BiasFieldCorrectionFs"),
    },
    "anat.skullstrip": {
        "brainextractor": _py(
            {"anat_skullstrip_python": Res(4000, 30)},
            config_keys=("fractional_threshold", "iterations", "fov_mm"),
            methods=("the brain was extracted with a BET-style deformable surface (brainextractor {V}; "
                     "fractional threshold {P[fractional_threshold]}, {P[iterations]} iterations)"),
            refs=("brainextractor",), version_source="brainextractor", doc="brainextractor (Python BET)"),
        "dipy": _py(
            {"anat_skullstrip_python": Res(4000, 30)}, config_keys=("median_radius", "numpass"),
            methods=("the brain was extracted with median Otsu thresholding (DIPY {V}; median radius "
                     "{P[median_radius]}, {P[numpass]} passes)"),
            refs=("dipy",), doc="DIPY median_otsu"),
        "fsl_bet": _fsl(
            ("bet",), {"anat_skullstrip_fsl_bet": Res(2000, 30)},
            config_keys=("fractional_threshold", "vertical_gradient", "bet_variant"),
            methods="the brain was extracted with BET (fractional threshold {P[f]}) from {V}",
            refs=("bet", "fsl"), doc="FSL bet"),
        # recon-all -autorecon1 + mri_convert (FreeSurfer env), then fslmaths (FSL env)
        "freesurfer": Backend(
            tools=("recon-all", "mri_convert", "fslmaths"), family="freesurfer",
            install=_FS_INSTALL + ", and " + _FSL_INSTALL,
            rules={"anat_skullstrip_freesurfer": Res(4000, 60), "anat_skullstrip_freesurfer_fslmaths": Res(1000, 10)},
            methods="the brain was extracted with recon-all -autorecon1 (FreeSurfer {V})", refs=("freesurfer",),
            doc="recon-all -autorecon1 + mri_convert, then fslmaths -mas"),
        "synthstrip": _fs(
            "mri_synthstrip", {"anat_skullstrip_synthstrip": Res(8000, 20, gpu=True)}, gpu=("use_gpu", True),
            config_keys=("synthstrip_border", "synthstrip_no_csf", "use_gpu"),
            methods="the brain was extracted with SynthStrip (border {P[border]} mm; FreeSurfer {V})",
            refs=("synthstrip", "freesurfer"), doc="FreeSurfer mri_synthstrip"),
    },
    "anat.segment": {
        "atropos": Backend(
            rules={"anat_segment_atropos": Res(4000, 30)}, config_keys=("mrf_weight", "iterations"),
            methods=("Cerebrospinal fluid, grey and white matter were segmented with Atropos (ANTsPy {V}; MRF "
                     "weight {P[mrf_weight]}, {P[iterations]} iterations)"),
            refs=("atropos", "ants"), version_source="antspyx", doc="ANTsPy Atropos, 3 classes"),
        "fsl_fast": _fsl(
            ("fast",), {"anat_segment_fsl_fast": Res(4000, 60)},
            methods="Cerebrospinal fluid, grey and white matter were segmented with FAST ({V})",
            refs=("fast", "fsl"), doc="FSL fast"),
    },
    "anat.synthseg": {
        "none": NONE,
        "freesurfer": _fs(
            "mri_synthseg",
            {"anat_synthseg_freesurfer": Res(lambda c: 16000 if c["robust"] else 12000, 30, gpu=True)},
            gpu=("use_gpu", True), config_keys=("robust", "parc", "vol", "use_gpu"),
            methods="Brain structures were segmented with SynthSeg on the raw T1-weighted image (FreeSurfer {V})",
            refs=("synthseg", "freesurfer"), doc="mri_synthseg"),
    },
    "anat.segstats": {
        "none": NONE,
        "freesurfer": _fs(
            "mri_segstats", {"anat_segstats_freesurfer": Res(2000, 10)}, config_keys=("seg",),
            methods="Regional volumes were tabulated from the {P[seg]} segmentation with mri_segstats (FreeSurfer {V})",
            refs=("freesurfer",), doc="mri_segstats on the SynthSeg or recon-all aseg"),
    },
    "anat.subcortical": {
        "none": NONE,
        "fsl_first": _fsl(
            ("run_first_all", "first_roi_slicesdir"), {"anat_subcortical_fsl_first": Res(4000, 120)},
            config_keys=("input", "structures"),
            methods="Subcortical structures were segmented with FIRST ({V})", refs=("first", "fsl"),
            doc="FSL run_first_all"),
    },
    "anat.register": {
        "ants": Backend(
            rules={"anat_register_ants": Res(6000, 60)}, config_keys=("transform", "syn_iterations", "seed"),
            methods=("The brain was normalised to the {P[template]} template with a {P[transform]} transform "
                     "(ANTsPy {V}; SyN iterations {P[syn_iterations]}, seed {P[seed]})"),
            refs=("syn", "ants", "mni2009"), version_source="antspyx", doc="ANTsPy affine + SyN"),
        "fsl": _fsl(
            ("flirt", "fnirt", "invwarp", "applywarp"),
            {"anat_template_fsl": Res(500, 5), "anat_template_fsl_brain": Res(500, 5),
             "anat_register_fsl": Res(8000, 90), "anat_register_metrics_fsl": Res(2000, 10)},
            config_keys=("fnirt_config",),
            methods=("The brain was normalised to the {P[template]} template with FLIRT (12 degrees of freedom) "
                     "followed by FNIRT ({P[fnirt_config]}; {V})"),
            refs=("flirt", "fnirt", "fsl", "mni152nlin6"), doc="FSL flirt + fnirt"),
        # affine then deformable (mri_synthmorph -m affine, then -i affine -m deform);
        # use_gpu: -g and resources gpu=1
        "synthmorph": _fs(
            "mri_synthmorph",
            {"anat_register_synthmorph": Res(16000, 30, gpu=True), "anat_register_metrics_synthmorph": Res(2000, 10)},
            gpu=("use_gpu", True), config_keys=("use_gpu",),
            methods=("The brain was normalised to the {P[template]} template with SynthMorph (affine, then "
                     "deformable; FreeSurfer {V})"),
            refs=("synthmorph", "freesurfer", "mni2009"), doc="FreeSurfer mri_synthmorph"),
        "none": Backend(notes="no spatial normalisation: the outputs in template space, the registration metrics "
                              "and figure are not made", doc="no spatial normalisation"),
    },
    "anat.atlas": {
        "none": NONE,
        "fsl_applywarp": _fsl(
            ("applywarp",), {"anat_atlas_fsl_applywarp": Res(2000, 10)}, config_keys=("image", "name"),
            methods=("The {P[atlas]} atlas was brought to each T1w with the inverse FNIRT warp (applywarp, nearest "
                     "neighbour; {V})"),
            refs=("fsl",), doc="FSL applywarp with the inverse fnirt warp"),
    },
    "dwi.denoise": {
        "dipy_mppca": _py(
            {"dwi_denoise_dipy": Res(4000, 60)}, config_keys=("patch_radius",), function="neurosmk.dwi.denoise_mppca",
            methods=("The diffusion-weighted images were denoised with MP-PCA (DIPY {V}; patch radius "
                     "{P[patch_radius]})"),
            refs=("mppca", "dipy"), doc="DIPY MP-PCA"),
        # DIPY's local PCA, noise from pca_noise_estimate: the same rule and script as dipy_mppca
        "dipy_lpca": _py(
            {"dwi_denoise_dipy": Res(4000, 60)}, config_keys=("patch_radius",), function="neurosmk.dwi.denoise_lpca",
            methods=("The diffusion-weighted images were denoised with local PCA, the noise level estimated from "
                     "the diffusion-weighted signal (DIPY {V}; patch radius {P[patch_radius]})"),
            refs=("lpca", "dipy"), doc="DIPY local PCA with the PCA noise estimate"),
        "none": NONE,
        "mrtrix": _mrtrix(
            "dwidenoise", {"dwi_denoise_mrtrix": Res(4000, 60)}, config_keys=("extent",),
            methods=("The diffusion-weighted images were denoised with MP-PCA (MRtrix3 dwidenoise, {V}; extent "
                     "{P[extent]})"),
            refs=("mppca", "mrtrix"), doc="MRtrix3 dwidenoise"),
        # DIPY's MP-PCA batched over patches in PyTorch: CUDA when visible, else CPU
        "torch": Backend(
            modules=("torch",), family="neurosmk-gpu", notes="device from dwi.denoise.device (auto|cpu|cuda)",
            rules={"dwi_denoise_torch": Res(6000, 60, gpu=True)}, gpu=("device", "cuda"),
            config_keys=("patch_radius",),
            methods=("The diffusion-weighted images were denoised with MP-PCA (DIPY's algorithm batched in PyTorch "
                     "{V}; patch radius {P[patch_radius]})"),
            refs=("mppca", "dipy", "pytorch"), version_source="torch",
            doc="DIPY's MP-PCA in PyTorch, CUDA or CPU"),
    },
    "dwi.degibbs": {
        "dipy": _py(
            {"dwi_degibbs_dipy": Res(4000, 60)}, config_keys=("slice_axis", "n_points"),
            methods="Gibbs ringing was removed by local sub-voxel shifts (DIPY {V}; slice axis {P[slice_axis]})",
            refs=("gibbs", "dipy"), doc="DIPY"),
        "none": NONE,
        "mrtrix": _mrtrix(
            "mrdegibbs", {"dwi_degibbs_mrtrix": Res(4000, 30)},
            config_keys=("slice_axis", "nshifts", "min_w", "max_w"),
            methods="Gibbs ringing was removed by local sub-voxel shifts (MRtrix3 mrdegibbs, {V}; axes {P[axes]})",
            refs=("gibbs", "mrtrix"), doc="MRtrix3 mrdegibbs"),
    },
    "dwi.preproc": {
        "none": NONE,
        # eddy: hours for a multi-shell series on the CPU, minutes with eddy_cuda
        "fsl_dwifslpreproc": Backend(
            tools=("dwifslpreproc", "eddy"), family="fsl", install="MRtrix3 3.0.4 (dwifslpreproc) and " + _FSL_INSTALL,
            rules={"dwi_preproc_dwifslpreproc": Res(8000, 360, gpu=True, gpu_runtime=60)}, gpu=("use_gpu", True),
            config_keys=("rpe", "pe_dir", "readout_time", "eddy_options", "use_gpu", "max_shells"),
            methods="Eddy currents and head motion were corrected with FSL eddy driven by MRtrix3 dwifslpreproc ({V})",
            refs=("eddy", "fsl", "mrtrix"), doc="MRtrix3 dwifslpreproc running FSL eddy (topup/eddy)"),
        # TORTOISE DRBUDDI (blip-up/blip-down susceptibility correction); use_gpu: DRBUDDI_cuda
        "drbuddi": Backend(
            tools=("DRBUDDI",), gpu_tools=("DRBUDDI_cuda",), family="tortoise",
            notes="container only (TORTOISE is not packaged for conda or PyPI)",
            rules={"dwi_preproc_drbuddi_inputs": Res(4000, 10),
                   "dwi_preproc_drbuddi": Res(16000, 120, gpu=True, gpu_runtime=60),
                   "dwi_preproc_drbuddi_apply": Res(8000, 30)},
            gpu=("use_gpu", True), config_keys=("use_gpu",),
            methods=("Susceptibility distortions were corrected with TORTOISE DRBUDDI from a reverse phase-encoded "
                     "b=0 image; the field was applied to every volume with ANTsPy {V}"),
            refs=("drbuddi", "ants"), version_source="antspyx", doc="TORTOISE DRBUDDI"),
    },
    "dwi.mask": {
        "dipy": _py(
            {"dwi_mask_dipy": Res(2000, 10)}, config_keys=("median_radius", "numpass", "b0_threshold"),
            methods="A brain mask was computed from the b=0 images by median Otsu thresholding (DIPY {V})",
            refs=("dipy",), doc="DIPY median_otsu on the mean b=0"),
        "mrtrix": _mrtrix(
            "dwi2mask", {"dwi_mask_mrtrix": Res(2000, 10)},
            methods="A brain mask was computed with dwi2mask (MRtrix3, {V})", refs=("dwi2mask", "mrtrix"),
            doc="MRtrix3 dwi2mask"),
    },
    "dwi.tensor": {
        "dipy": _py(
            {"dwi_tensor_dipy": Res(3000, 20)}, config_keys=("fit_method",),
            methods="The diffusion tensor was fitted by {P[fit_method]} (DIPY {V}), giving FA, MD, AD and RD maps",
            refs=("dti_wls", "dipy"), doc="DIPY"),
        # dwi2tensor: -ols -iter 0 / 1 (rules/mrtrix.smk MRTRIX_TENSOR_FIT)
        "mrtrix": Backend(
            tools=("dwi2tensor", "tensor2metric"), family="mrtrix3", choices=(("fit_method", ("OLS", "WLS")),),
            rules={"dwi_tensor_mrtrix": Res(3000, 20)}, config_keys=("fit_method",),
            methods=("The diffusion tensor was fitted with dwi2tensor ({P[fit]}) and its metrics computed with "
                     "tensor2metric (MRtrix3, {V})"),
            refs=("dti_wls", "mrtrix"), doc="MRtrix3 dwi2tensor + tensor2metric"),
        # batched WLS/OLS in PyTorch: CUDA when a GPU is visible, else the CPU
        "torch": Backend(
            modules=("torch",), family="neurosmk-gpu", notes="device from dwi.tensor.device (auto|cpu|cuda)",
            choices=(("fit_method", ("WLS", "OLS")),),
            # 4000 MB (DIPY's fit: 3000): the CUDA context's host memory when it runs on a GPU
            rules={"dwi_tensor_torch": Res(4000, 20, gpu=True)}, gpu=("device", "cuda"), config_keys=("fit_method",),
            methods=("The diffusion tensor was fitted by {P[fit_method]} (DIPY's estimator batched in PyTorch {V}), "
                     "giving FA, MD, AD and RD maps"),
            refs=("dti_wls", "pytorch"), version_source="torch", doc="DIPY's WLS/OLS in PyTorch, CUDA or CPU"),
    },
}

# Rules that are no step's backend: their resources, in the same place
SUPPORT_RULES: dict[str, Res] = {
    "validate_anat": Res(2000, 10), "validate_dwi": Res(2000, 10), "dwi_gradients": Res(200, 5),
    "anat_volumes_qc": Res(2000, 10), "dwi_stats_qc": Res(2000, 10),
    # FreeSurfer recon-all: ~6-8 h single-threaded, 3-4 GB RSS
    "freesurfer_recon_all": Res(8000, 720),
    "fs_parse_subject": Res(1000, 10), "fs_aggregate_group": Res(4000, 30),
    "group_anat_volumes": Res(1000, 10), "group_dti_stats": Res(1000, 10), "group_long": Res(2000, 10),
    "dataset_description": Res(500, 5), "methods": Res(500, 5),
    "qc_dwi_figures": Res(2000, 10), "qc_visit_metrics": Res(2000, 10), "qc_visit_page": Res(1000, 5),
    "qc_group_page": Res(2000, 10),
}


# ---- references of the methods sentences ---------------------------------------------------
REFERENCES = {
    "ants": "Avants BB, Tustison NJ, Song G, et al. A reproducible evaluation of ANTs similarity metric "
            "performance in brain image registration. NeuroImage 54(3):2033-2044, 2011.",
    "n4": "Tustison NJ, Avants BB, Cook PA, et al. N4ITK: improved N3 bias correction. IEEE Trans Med Imaging "
          "29(6):1310-1320, 2010.",
    "atropos": "Avants BB, Tustison NJ, Wu J, Cook PA, Gee JC. An open source multivariate framework for n-tissue "
               "segmentation with evaluation on public data. Neuroinformatics 9(4):381-400, 2011.",
    "syn": "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image registration with "
           "cross-correlation. Med Image Anal 12(1):26-41, 2008.",
    "bet": "Smith SM. Fast robust automated brain extraction. Hum Brain Mapp 17(3):143-155, 2002.",
    "dipy": "Garyfallidis E, Brett M, Amirbekian B, et al. Dipy, a library for the analysis of diffusion MRI "
            "data. Front Neuroinform 8:8, 2014.",
    "mppca": "Veraart J, Novikov DS, Christiaens D, et al. Denoising of diffusion MRI using random matrix "
             "theory. NeuroImage 142:394-406, 2016.",
    "lpca": "Manjon JV, Coupe P, Concha L, Buades A, Collins DL, Robles M. Diffusion weighted image denoising "
            "using overcomplete local PCA. PLoS One 8(9):e73021, 2013.",
    "gibbs": "Kellner E, Dhital B, Kiselev VG, Reisert M. Gibbs-ringing artifact removal based on local "
             "subvoxel-shifts. Magn Reson Med 76(5):1574-1581, 2016.",
    "mrtrix": "Tournier J-D, Smith R, Raffelt D, et al. MRtrix3: a fast, flexible and open software framework "
              "for medical image processing and visualisation. NeuroImage 202:116137, 2019.",
    "dwi2mask": "Dhollander T, Raffelt D, Connelly A. Unsupervised 3-tissue response function estimation from "
                "single-shell or multi-shell diffusion MR data without a co-registered T1 image. ISMRM "
                "Workshop on Breaking the Barriers of Diffusion MRI, 2016.",
    "dti_wls": "Basser PJ, Mattiello J, LeBihan D. Estimation of the effective self-diffusion tensor from the "
               "NMR spin echo. J Magn Reson B 103(3):247-254, 1994.",
    "fsl": "Jenkinson M, Beckmann CF, Behrens TE, Woolrich MW, Smith SM. FSL. NeuroImage 62(2):782-790, 2012.",
    "fast": "Zhang Y, Brady M, Smith S. Segmentation of brain MR images through a hidden Markov random field "
            "model and the expectation-maximization algorithm. IEEE Trans Med Imaging 20(1):45-57, 2001.",
    "first": "Patenaude B, Smith SM, Kennedy DN, Jenkinson M. A Bayesian model of shape and appearance for "
             "subcortical brain segmentation. NeuroImage 56(3):907-922, 2011.",
    "flirt": "Jenkinson M, Smith S. A global optimisation method for robust affine registration of brain "
             "images. Med Image Anal 5(2):143-156, 2001.",
    "fnirt": "Andersson JLR, Jenkinson M, Smith S. Non-linear registration, aka spatial normalisation. FMRIB "
             "technical report TR07JA2, 2007.",
    "eddy": "Andersson JLR, Sotiropoulos SN. An integrated approach to correction for off-resonance effects "
            "and subject movement in diffusion MR imaging. NeuroImage 125:1063-1078, 2016.",
    "freesurfer": "Fischl B. FreeSurfer. NeuroImage 62(2):774-781, 2012.",
    "synthstrip": "Hoopes A, Mora JS, Dalca AV, Fischl B, Hoffmann M. SynthStrip: skull-stripping for any brain "
                  "image. NeuroImage 260:119474, 2022.",
    "mni2009": "Fonov V, Evans AC, Botteron K, et al. Unbiased average age-appropriate atlases for pediatric "
               "studies. NeuroImage 54(1):313-327, 2011.",
    "mni152nlin6": "Grabner G, Janke AL, Budge MM, Smith D, Pruessner J, Collins DL. Symmetric atlasing and "
                   "model based segmentation: an application to the hippocampus in older adults. MICCAI 2006, "
                   "LNCS 4191:58-66 (the MNI152 template distributed with FSL).",
    "synthmorph": "Hoffmann M, Billot B, Greve DN, Iglesias JE, Fischl B, Dalca AV. SynthMorph: learning "
                  "contrast-invariant registration without acquired images. IEEE Trans Med Imaging "
                  "41(3):543-558, 2022.",
    "drbuddi": "Irfanoglu MO, Modi P, Nayak A, Hutchinson EB, Sarlls J, Pierpaoli C. DR-BUDDI (Diffeomorphic "
               "Registration for Blip-Up blip-Down Diffusion Imaging) method for correcting echo planar imaging "
               "distortions. NeuroImage 106:284-299, 2015.",
    "nilearn": "Abraham A, Pedregosa F, Eickenberg M, et al. Machine learning for neuroimaging with "
               "scikit-learn. Front Neuroinform 8:14, 2014.",
    "brainextractor": "Smith SM. Fast robust automated brain extraction. Hum Brain Mapp 17(3):143-155, 2002 "
                      "(BET algorithm, reimplemented in the brainextractor Python package).",
    "pytorch": "Paszke A, Gross S, Massa F, et al. PyTorch: an imperative style, high-performance deep learning "
               "library. Advances in Neural Information Processing Systems 32:8024-8035, 2019.",
    "synthseg": "Billot B, Greve DN, Puonti O, et al. SynthSeg: segmentation of brain MRI scans of any contrast and "
                "resolution without retraining. Med Image Anal 86:102789, 2023.",
}


class BackendError(ValueError):
    pass


def selected_methods(cfg: dict) -> dict[str, str]:
    out = {}
    for step in STEPS:
        section, name = step.split(".")
        out[step] = cfg.get(section, {}).get(name, {}).get("method")
    return out


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_methods(cfg: dict, check_tools: bool = True, which=shutil.which,
                  has_module=_has_module) -> dict[str, str]:
    """Validate every step's method and the options its backend supports only in part; with
    ``check_tools`` also that its tools and packages exist."""
    methods = selected_methods(cfg)
    problems = []
    for step, method in methods.items():
        known = STEPS[step]
        if method not in known:
            problems.append(f"step '{step}': unknown method '{method}' "
                            f"(known: {', '.join(sorted(known))})")
            continue
        section, name = step.split(".")
        for key, allowed in known[method].choices:
            value = cfg[section][name][key]
            if value not in allowed:
                problems.append(f"config key '{step}.{key}': {value!r} is not available with method '{method}' "
                                f"(choices: {', '.join(allowed)}; method 'dipy' has all)")
        if check_tools:
            tools = known[method].tools_for(cfg.get(section, {}).get(name, {}))
            missing = [t for t in tools if which(t) is None]
            if missing:
                gpu = " (use_gpu: true)" if tools != known[method].tools else ""
                problems.append(f"step '{step}' with method '{method}'{gpu} needs {', '.join(missing)} on PATH, "
                                f"which is missing: install {known[method].install}, or run with "
                                f"--sdm conda (envs/{known[method].env}.yaml) or --sdm apptainer")
            missing = [m for m in known[method].modules if not has_module(m)]
            if missing:
                problems.append(f"step '{step}' with method '{method}' needs the Python package(s) "
                                f"{', '.join(missing)}, which this Python lacks: {known[method].install}, "
                                f"or run with --sdm conda (envs/{known[method].env}.yaml)")
    if problems:
        raise BackendError("cannot run this configuration:\n  - " + "\n  - ".join(problems))
    return methods


# ---- the registry, read by the rules and the start-up check ---------------------------------------


def rule_resources() -> dict[str, Res]:
    """Every rule the registry knows -> its resources (a rule several backends share: one entry)."""
    out = dict(SUPPORT_RULES)
    for methods in STEPS.values():
        for backend in methods.values():
            out.update(backend.rules)
    return out


def _owner(rule: str, cfg: dict) -> tuple[str | None, Backend | None]:
    """The step and backend a rule belongs to, preferring the method the config selected."""
    chosen = selected_methods(cfg)
    found = None
    for step, methods in STEPS.items():
        for method, backend in methods.items():
            if rule in backend.rules:
                if method == chosen[step]:
                    return step, backend
                found = found or (step, backend)
    return found or (None, None)


def _per_attempt(amount: int):
    def scaled(wildcards, attempt):
        return amount * attempt

    return scaled


def resources(rule: str, cfg: dict) -> dict:
    """A rule's ``resources:`` (rules/common.smk ``res``): mem_mb and runtime as functions of the
    attempt (1, then 2, 3 on retries: that many times the first attempt's), plus ``gpu=1`` when
    the rule's backend is switched to the GPU by the config."""
    step, backend = _owner(rule, cfg)
    spec = backend.rules[rule] if backend else SUPPORT_RULES.get(rule)
    if spec is None:
        raise BackendError(f"rule '{rule}' has no resources in src/neurosmk/backends.py: add it to its backend's "
                           f"rules (STEPS) or to SUPPORT_RULES")
    step_cfg = {}
    if step:
        section, name = step.split(".")
        step_cfg = cfg.get(section, {}).get(name, {})
    on_gpu = bool(spec.gpu and backend and backend.on_gpu(step_cfg))
    mem = spec.mem_mb(step_cfg) if callable(spec.mem_mb) else spec.mem_mb
    runtime = spec.gpu_runtime if (on_gpu and spec.gpu_runtime) else spec.runtime
    runtime = runtime(step_cfg) if callable(runtime) else runtime
    out = {"mem_mb": _per_attempt(mem), "runtime": _per_attempt(runtime)}
    if on_gpu:
        out["gpu"] = 1
    return out


def gpu_rules() -> set[str]:
    """The rules that may run on a GPU (profiles/slurm-gpu sends exactly these to the gpu partition)."""
    return {r for methods in STEPS.values() for b in methods.values() for r, spec in b.rules.items() if spec.gpu}


def selected_rules(methods: dict[str, str], recon_all: bool) -> set[str]:
    """The rules a configuration asks the rule files for: the registered rules of each selected
    (step, method), and FreeSurfer recon-all when ``freesurfer.recon_all.enabled``."""
    rules = {r for step, method in methods.items() if method in STEPS[step] for r in STEPS[step][method].rules}
    return rules | ({"freesurfer_recon_all"} if recon_all else set())


def check_rules(defined: set[str], methods: dict[str, str]) -> None:
    """After every rule file is read (rules/safety.smk): each selected method's registered rules
    are defined, no other method's rule of the step is, a method other than ``none`` has rules, and
    each method that runs has its methods sentence. A method registered here without a rule
    fails here, at start, instead of later with a MissingInputException."""
    problems = []
    for step, method in methods.items():
        backend = STEPS[step].get(method)
        if backend is None:
            continue  # check_methods reports it
        where = f"step '{step}' method '{method}'"
        if method != "none" and not backend.rules:
            problems.append(f"{where}: no rule registered (src/neurosmk/backends.py STEPS['{step}']['{method}'].rules)")
        missing = sorted(set(backend.rules) - defined)
        if missing:
            problems.append(f"{where}: registered rule(s) {', '.join(missing)} not defined by any rule file "
                            f"(rules/*.smk, under `if METHOD[\"{step}\"] == \"{method}\":`)")
        others = sorted({r for m, b in STEPS[step].items() if m != method for r in b.rules}
                        - set(backend.rules) & defined)
        if others:
            problems.append(f"{where}: rule(s) {', '.join(others)} of another method of the step are defined too "
                            f"(a step resolves to one backend's rules)")
        if method != "none" and backend.rules and not backend.methods:
            problems.append(f"{where}: no methods sentence (src/neurosmk/backends.py: methods=, refs=) for "
                            f"docs/methods.md")
        unknown = [k for k in backend.refs if k not in REFERENCES]
        if unknown:
            problems.append(f"{where}: unknown reference key(s) {', '.join(unknown)} (backends.REFERENCES)")
    if problems:
        raise BackendError("the backend registry and the rule files disagree:\n  - " + "\n  - ".join(problems))


def call_backend(step: str, method: str, *args, **kwargs):
    """Call the ``function`` of a Python backend (a rule script serving several methods), with
    the keyword arguments its signature takes."""
    import importlib
    import inspect

    backend = STEPS[step][method]
    if not backend.function:
        raise BackendError(f"step '{step}' method '{method}' has no function in src/neurosmk/backends.py")
    module, _, name = backend.function.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    accepted = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in kwargs.items() if k in accepted})


def backend_methods_table() -> dict[tuple[str, str], tuple[str, list[str], str]]:
    """(step, method) -> (sentence template, reference keys, version source), for methods.md."""
    return {(step, m): (b.methods, list(b.refs), b.version_source)
            for step, methods in STEPS.items() for m, b in methods.items() if b.methods}


# ---- helpers for the rules --------------------------------------------------------------------
# FSL ships one T1 fnirt config: $FSLDIR/etc/flirtsch/T1_2_MNI152_2mm.cnf (--ref=MNI152_T1_2mm,
# --refmask=MNI152_T1_2mm_brain_mask_dil); NiWrap's fnirt descriptor (FSL 6.0.4) lists it and
# FA_2_FMRIB58_1mm, the FA one.
FNIRT_T1_CONFIGS = {"T1_2_MNI152_2mm": "2mm"}


def fnirt_resolution(config_name: str) -> str:
    """The template resolution a fnirt config was tuned for ("2mm"): its ref and refmask grid."""
    try:
        return FNIRT_T1_CONFIGS[config_name]
    except KeyError:
        raise BackendError(f"config key 'anat.register.fnirt_config': {config_name!r} is not an FSL T1 config "
                           f"(choices: {', '.join(FNIRT_T1_CONFIGS)})") from None


def atlas_label(image: str, name: str | None) -> str:
    """The ``atlas-`` label of the native-space atlas: ``name`` if given, else taken from the
    image's file name (its BIDS ``atlas-`` entity, or the name without extension, resolution suffix
    and non-alphanumerics: JHU-ICBM-labels-1mm.nii.gz -> JHUICBMlabels)."""
    import os
    import re

    if name:
        return name
    base = os.path.basename(image)
    m = re.search(r"(?:^|_)atlas-([a-zA-Z0-9]+)(?:_|\.)", base)
    if m:
        return m.group(1)
    stem = re.sub(r"\.nii(\.gz)?$", "", base)
    stem = re.sub(r"[-_]\d+(\.\d+)?mm$", "", stem)
    label = re.sub(r"[^a-zA-Z0-9]", "", stem)
    if not label:
        raise BackendError(f"{image}: cannot derive an atlas label from the file name; set anat.atlas.name")
    return label
