"""The one place where each step's ``method`` selects its implementation.

``STEPS[step][method]`` describes a backend: the external tools it runs (checked on PATH at
start unless ``--sdm conda``/``apptainer`` is used or the run is a dry run), the optional Python
packages it imports (checked the same way, by import name), the conda env and
container image its rule declares, and what to install.  The rule files define a step's rule
only for the method the config chose (``if METHOD['dwi.denoise'] == 'mrtrix':``), and every
backend of a step writes the same BIDS-Derivatives file names, so downstream rules never care.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    tools: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # optional Python packages (import names) beyond the base install
    env: str = "neurosmk"
    install: str = "pip install -e . (the project's own environment)"
    notes: str = ""
    # step options this backend supports only in part: ((key, allowed values), ...)
    choices: tuple[tuple[str, tuple], ...] = ()
    # the tools it runs instead when the step's use_gpu is true (None: the same tools on the GPU)
    gpu_tools: tuple[str, ...] | None = None

    def tools_for(self, step_cfg: dict | None) -> tuple[str, ...]:
        """The external tools this backend runs with the step's config (``use_gpu`` may swap them)."""
        if self.gpu_tools is not None and (step_cfg or {}).get("use_gpu"):
            return self.gpu_tools
        return self.tools


PY = Backend()
NONE = Backend(notes="step skipped; the previous step's output is used")

MRTRIX = Backend(tools=("dwidenoise", "mrdegibbs", "dwi2mask", "dwi2tensor", "tensor2metric", "mrconvert"),
                 env="mrtrix3", install="MRtrix3 3.0.x (conda install -c mrtrix3 mrtrix3=3.0.4)")
_FSL_INSTALL = "FSL 6.0.7 (https://fsl.fmrib.ox.ac.uk/fsl/docs/#/install/) with FSLDIR set"
_FS_INSTALL = ("FreeSurfer 7.4.1 (https://surfer.nmr.mgh.harvard.edu/fswiki/DownloadAndInstall) with FREESURFER_HOME "
               "and FS_LICENSE set")
_TORTOISE_INSTALL = ("TORTOISE 4 (https://github.com/eurotomania/TORTOISEV4; DRBUDDI, DRBUDDI_cuda), or run with "
                     "--sdm apptainer (the pinned image)")
_TORCH_INSTALL = "PyTorch: pip install 'neurosmk[gpu]' (torch==2.13.0; the Linux wheels on PyPI include CUDA)"


def _mrtrix(*tools: str) -> Backend:
    return Backend(tools=tools, env="mrtrix3", install=MRTRIX.install)


def _fsl(*tools: str) -> Backend:
    return Backend(tools=tools, env="fsl", install=_FSL_INSTALL)


def _fs(*tools: str) -> Backend:
    return Backend(tools=tools, env="freesurfer", install=_FS_INSTALL)


STEPS: dict[str, dict[str, Backend]] = {
    "anat.biascorrect": {"ants": PY, "freesurfer": _fs("AntsN4BiasFieldCorrectionFs")},
    "anat.skullstrip": {"brainextractor": PY, "dipy": PY, "fsl_bet": _fsl("bet"),
                        # recon-all -autorecon1 + mri_convert (FreeSurfer env), then fslmaths (FSL env)
                        "freesurfer": Backend(tools=("recon-all", "mri_convert", "fslmaths"), env="freesurfer",
                                              install=_FS_INSTALL + ", and " + _FSL_INSTALL),
                        "synthstrip": _fs("mri_synthstrip")},
    "anat.segment": {"atropos": PY, "fsl_fast": _fsl("fast")},
    "anat.synthseg": {"none": NONE, "freesurfer": _fs("mri_synthseg")},
    "anat.segstats": {"none": NONE, "freesurfer": _fs("mri_segstats")},
    "anat.subcortical": {"none": NONE, "fsl_first": _fsl("run_first_all", "first_roi_slicesdir")},
    "anat.register": {"ants": PY, "fsl": _fsl("flirt", "fnirt", "invwarp", "applywarp"),
                      # affine then deformable (mri_synthmorph -m affine, then -i affine -m deform);
                      # use_gpu: -g and resources gpu=1
                      "synthmorph": _fs("mri_synthmorph"),
                      "none": Backend(notes="no spatial normalisation: the outputs in template space, the "
                                            "registration metrics and figure are not made")},
    "anat.atlas": {"none": NONE, "fsl_applywarp": _fsl("applywarp")},
    "dwi.denoise": {"dipy_mppca": PY, "none": NONE, "mrtrix": _mrtrix("dwidenoise"),
                    # DIPY's MP-PCA batched over patches in PyTorch: CUDA when visible, else CPU
                    "torch": Backend(modules=("torch",), env="neurosmk-gpu", install=_TORCH_INSTALL,
                                     notes="device from dwi.denoise.device (auto|cpu|cuda)")},
    "dwi.degibbs": {"dipy": PY, "none": NONE, "mrtrix": _mrtrix("mrdegibbs")},
    "dwi.preproc": {"none": NONE,
                    "fsl_dwifslpreproc": Backend(tools=("dwifslpreproc", "eddy"), env="fsl",
                                                 install="MRtrix3 3.0.4 (dwifslpreproc) and " + _FSL_INSTALL),
                    # TORTOISE DRBUDDI (blip-up/blip-down susceptibility correction); use_gpu: DRBUDDI_cuda
                    "drbuddi": Backend(tools=("DRBUDDI",), gpu_tools=("DRBUDDI_cuda",), env="tortoise",
                                       install=_TORTOISE_INSTALL,
                                       notes="container only (TORTOISE is not packaged for conda or PyPI)")},
    "dwi.mask": {"dipy": PY, "mrtrix": _mrtrix("dwi2mask")},
    "dwi.tensor": {"dipy": PY,
                   # dwi2tensor: -ols -iter 0 / 1 (rules/mrtrix.smk MRTRIX_TENSOR_FIT)
                   "mrtrix": Backend(tools=("dwi2tensor", "tensor2metric"), env="mrtrix3", install=MRTRIX.install,
                                     choices=(("fit_method", ("OLS", "WLS")),)),
                   # batched WLS/OLS in PyTorch: CUDA when a GPU is visible, else the CPU
                   "torch": Backend(modules=("torch",), env="neurosmk-gpu", install=_TORCH_INSTALL,
                                    notes="device from dwi.tensor.device (auto|cpu|cuda)",
                                    choices=(("fit_method", ("WLS", "OLS")),))},
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
