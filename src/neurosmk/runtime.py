"""Helpers for rule scripts: thread limits and logging, set before heavy imports."""

from __future__ import annotations

import os
import sys


def setup(smk) -> None:
    """Pass the rule's ``threads`` to OpenMP/BLAS/ITK and send stdout/stderr to its log."""
    n = str(getattr(smk, "threads", 1) or 1)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = n
    if getattr(smk, "log", None):
        log = open(smk.log[0], "w", buffering=1)
        sys.stdout = log
        sys.stderr = log


# Facts a rule's code learns while it runs (e.g. the device it computed on), for the output's
# provenance sidecar: a backend calls note(Device="cuda:0") and the sidecar writer reads NOTES.
NOTES: dict = {}


def note(**fields) -> None:
    """Record run-time facts (``Device``, library versions, ...) for the provenance sidecars."""
    NOTES.update(fields)
