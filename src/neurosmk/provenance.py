"""Dataset-level provenance (BIDS-Derivatives dataset_description.json)."""

from __future__ import annotations

import os
import subprocess

from . import __version__
from .io import write_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_dataset_description(path: str, bids_dir: str) -> dict:
    gen = {"Name": "neurosmk", "Version": __version__, "CodeURL": "https://github.com/neurosmk/neurosmk"}
    commit = git_commit()
    if commit:
        gen["Description"] = f"git commit {commit}"
    desc = {
        "Name": "neurosmk derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [gen],
        "SourceDatasets": [{"URL": "file://" + os.path.abspath(bids_dir)}],
    }
    write_json(path, desc)
    return desc
