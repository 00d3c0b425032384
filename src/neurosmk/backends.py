"""The one place where each step's ``method`` selects its implementation.

``STEPS[step][method]`` describes a backend: the external tools it runs (checked on PATH at
start unless ``--sdm conda``/``apptainer`` is used or the run is a dry run), the conda env and
container image its rule declares, and what to install.  The rule files define a step's rule
only for the method the config chose (``if METHOD['dwi.denoise'] == 'mrtrix':``), and every
backend of a step writes the same BIDS-Derivatives file names, so downstream rules never care.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backend:
    tools: tuple[str, ...] = ()
    env: str = "neurosmk"
    install: str = "pip install -e . (the project's own environment)"
    notes: str = ""


PY = Backend()
NONE = Backend(notes="step skipped; the previous step's output is used")

STEPS: dict[str, dict[str, Backend]] = {
    "anat.biascorrect": {"ants": PY},
    "anat.skullstrip": {"brainextractor": PY, "dipy": PY},
    "anat.segment": {"atropos": PY},
    "anat.register": {"ants": PY},
    "dwi.denoise": {"dipy_mppca": PY, "none": NONE},
    "dwi.degibbs": {"dipy": PY, "none": NONE},
    "dwi.mask": {"dipy": PY},
    "dwi.tensor": {"dipy": PY},
}


class BackendError(ValueError):
    pass


def selected_methods(cfg: dict) -> dict[str, str]:
    out = {}
    for step in STEPS:
        section, name = step.split(".")
        out[step] = cfg.get(section, {}).get(name, {}).get("method")
    return out


def check_methods(cfg: dict, check_tools: bool = True, which=shutil.which) -> dict[str, str]:
    """Validate every step's method; with ``check_tools`` also that its tools are on PATH."""
    methods = selected_methods(cfg)
    problems = []
    for step, method in methods.items():
        known = STEPS[step]
        if method not in known:
            problems.append(f"step '{step}': unknown method '{method}' "
                            f"(known: {', '.join(sorted(known))})")
            continue
        if check_tools:
            missing = [t for t in known[method].tools if which(t) is None]
            if missing:
                problems.append(f"step '{step}' with method '{method}' needs {', '.join(missing)} on PATH, "
                                f"which is missing: install {known[method].install}, or run with "
                                f"--sdm conda (envs/{known[method].env}.yaml) or --sdm apptainer")
    if problems:
        raise BackendError("cannot run this configuration:\n  - " + "\n  - ".join(problems))
    return methods
