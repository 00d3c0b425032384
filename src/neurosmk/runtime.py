"""Helpers for rule scripts: thread limits and logging, set before heavy imports, and the
provenance sidecars of the job's outputs, written when the script finishes without error."""

from __future__ import annotations

import atexit
import os
import sys

_STATE: dict = {"smk": None, "failed": False, "done": False}


def setup(smk) -> None:
    """Pass the rule's ``threads`` to OpenMP/BLAS/ITK, send stdout/stderr to its log, and arrange
    for the outputs' sidecars (neurosmk.provenance) to be written when the script succeeds."""
    n = str(getattr(smk, "threads", 1) or 1)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = n
    if getattr(smk, "log", None):
        log = open(smk.log[0], "w", buffering=1)
        sys.stdout = log
        sys.stderr = log
    if _STATE["smk"] is None:
        _STATE["smk"] = smk
        previous = sys.excepthook

        def _hook(*exc):  # an uncaught exception: the job failed, write no sidecar
            _STATE["failed"] = True
            previous(*exc)

        sys.excepthook = _hook
        atexit.register(_at_exit)


def finish(smk=None) -> list[str]:
    """Write the sidecars now (idempotent; ``setup`` also does it at a successful exit)."""
    smk = smk or _STATE["smk"]
    if smk is None or _STATE["done"]:
        return []
    _STATE["done"] = True
    from .provenance import write_python_sidecars

    return write_python_sidecars(smk, dict(NOTES))


def _at_exit() -> None:
    if _STATE["failed"]:
        return
    smk = _STATE["smk"]
    # a script that ended by sys.exit(non-zero) or without writing its outputs failed
    if any(not os.path.exists(str(o)) for o in smk.output if not str(o).endswith(".json")):
        return
    try:
        finish(smk)
    except Exception as exc:  # noqa: BLE001 - the job then fails on its missing sidecar output
        print(f"neurosmk: could not write provenance sidecars: {exc!r}", file=sys.stderr)


# Facts a rule's code learns while it runs (e.g. the device it computed on), for the output's
# provenance sidecar: a backend calls note(Device="cuda:0") and the sidecar writer reads NOTES.
NOTES: dict = {}


def note(**fields) -> None:
    """Record run-time facts (``Device``, library versions, ...) for the provenance sidecars."""
    NOTES.update(fields)
