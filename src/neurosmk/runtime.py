"""Helpers for rule scripts: thread limits and logging, set before heavy imports, and the
provenance sidecars of the job's outputs, written when the script finishes without error.

``setup`` also gives every Python job
* a private temporary folder under the job's ``resources.tmpdir`` / ``$TMPDIR`` (``TMPDIR`` and
  :mod:`tempfile` point into it, so ANTsPy/ITK/matplotlib temp files land there), removed when the
  script exits, on success, on an exception and on SIGTERM/SIGINT/SIGHUP; a folder left by a job
  that was killed with SIGKILL is removed when the same job runs again;
* a memory cap: the address-space limit (``RLIMIT_AS``) is set to the rule's ``mem_mb`` plus
  :func:`headroom_mb` for the interpreter, the libraries' mappings, thread stacks and malloc
  arenas (``HEADROOM_MB`` + ``PER_THREAD_MB`` per thread), so a job that blows up
  fails with a ``MemoryError`` naming the subject instead of driving the machine into the
  kernel's OOM killer. Not for the ``*_torch`` rules (CUDA reserves terabytes of address space).
  At exit the job's peak memory (``VmHWM`` resident, ``VmPeak`` address space) is logged.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import signal
import sys
import tempfile

_STATE: dict = {"smk": None, "failed": False, "done": False, "tmpdir": None, "cap_mb": None}

# Address space on top of mem_mb: the interpreter and numpy/scipy/ITK/pyarrow map up to ~1.3 GB
# more than they touch (VmPeak - VmHWM on the reduced demo: 1,268 MB for fs_parse_subject, 621 MB
# for anat_register_ants; README "Safety"); each thread adds a stack and a malloc arena.
HEADROOM_MB = 1024
PER_THREAD_MB = 128
TMP_PREFIX = "neurosmk-job-"


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
            if isinstance(exc[1], MemoryError):
                print(memory_error_message(smk), file=sys.stderr)
            previous(*exc)

        sys.excepthook = _hook
        atexit.register(_at_exit)
        job_tmpdir(smk)
        cap_memory(smk)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)


def _exit_on_signal(signum, frame):  # run the atexit clean-up, then die with the signal's code
    _STATE["failed"] = True
    sys.exit(128 + signum)


def _job_key(smk) -> str:
    """Rule name and a digest of the job's first output: the same job gets the same key."""
    rule = getattr(smk, "rule", None) or "job"
    outs = [os.path.abspath(str(o)) for o in getattr(smk, "output", [])]
    digest = hashlib.sha1("\0".join(outs).encode()).hexdigest()[:12]
    return f"{rule}-{digest}"


def job_tmpdir(smk) -> str:
    """Create the job's private temporary folder (see the module doc) and point TMPDIR and
    :mod:`tempfile` at it. Returns its path."""
    if _STATE["tmpdir"]:
        return _STATE["tmpdir"]
    res = getattr(smk, "resources", None)
    base = None
    with contextlib.suppress(Exception):
        base = res.get("tmpdir") if hasattr(res, "get") else getattr(res, "tmpdir", None)
    base = str(base) if base else tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    prefix = f"{TMP_PREFIX}{_job_key(smk)}-"
    # a folder of this same job: left by a run killed with SIGKILL (Snakemake never runs one job
    # twice at once)
    for name in os.listdir(base):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    for var in ("TMPDIR", "TMP", "TEMP"):
        os.environ[var] = path
    tempfile.tempdir = path
    _STATE["tmpdir"] = path  # removed by _at_exit, after the sidecars are written
    return path


def _mem_mb(smk) -> int | None:
    res = getattr(smk, "resources", None)
    with contextlib.suppress(Exception):
        v = res.get("mem_mb") if hasattr(res, "get") else getattr(res, "mem_mb", None)
        return int(v) if v else None
    return None


def cap_memory(smk) -> int | None:
    """Set RLIMIT_AS to mem_mb + HEADROOM_MB (see the module doc). Returns the cap in MB, or None
    where there is none (no mem_mb, a torch rule, a platform without RLIMIT_AS)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    mem = _mem_mb(smk)
    rule = getattr(smk, "rule", "") or ""
    if os.environ.get("NEUROSMK_MEMCAP", "").lower() in ("0", "off", "no"):
        return None  # switched off (measurements; a platform where the cap misfires)
    if not mem or rule.endswith("_torch") or not hasattr(resource, "RLIMIT_AS"):
        return None
    cap_mb = mem + headroom_mb(smk)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = cap_mb << 20
    if hard != resource.RLIM_INFINITY and hard < cap:
        cap = hard
    if soft != resource.RLIM_INFINITY and soft < cap:
        cap = soft  # already stricter: keep it
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    _STATE["cap_mb"] = cap >> 20
    return _STATE["cap_mb"]


def headroom_mb(smk) -> int:
    return HEADROOM_MB + PER_THREAD_MB * int(getattr(smk, "threads", 1) or 1)


def _visit(smk) -> str:
    wc = getattr(smk, "wildcards", None)
    sub = getattr(wc, "subject", None) if wc is not None else None
    ses = getattr(wc, "session", None) if wc is not None else None
    if not sub:
        return "the group job"
    return f"sub-{sub}" + (f"_ses-{ses}" if ses else "")


def memory_error_message(smk) -> str:
    rule = getattr(smk, "rule", "?")
    cap = _STATE["cap_mb"]
    limit = (f"its memory cap of {cap} MB (resources mem_mb={_mem_mb(smk)} + {headroom_mb(smk)} MB for "
             f"the interpreter and its threads)" if cap else "the memory available")
    return (f"MemoryError: {_visit(smk)}: rule {rule} ran out of {limit}. If the input is sound, "
            f"raise it, e.g. --set-resources {rule}:mem_mb={2 * (_mem_mb(smk) or 4000)}")


def peak_memory() -> dict[str, int]:
    """VmHWM (peak resident) and VmPeak (peak address space) of this process in MB (Linux)."""
    out = {}
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                if key in ("VmHWM", "VmPeak"):
                    out[key] = int(val.split()[0]) // 1024
    return out


def finish(smk=None) -> list[str]:
    """Write the sidecars now (idempotent; ``setup`` also does it at a successful exit)."""
    smk = smk or _STATE["smk"]
    if smk is None or _STATE["done"]:
        return []
    _STATE["done"] = True
    from .provenance import write_python_sidecars

    return write_python_sidecars(smk, dict(NOTES))


def _at_exit() -> None:
    try:
        peak = peak_memory()
        if peak:
            print(f"neurosmk: peak memory {peak.get('VmHWM')} MB resident (VmHWM), {peak.get('VmPeak')} MB "
                  f"address space (VmPeak); cap {_STATE['cap_mb'] or 'none'}", file=sys.stderr)
        if not _STATE["failed"]:
            _write_sidecars_if_complete()
    finally:
        if _STATE["tmpdir"]:
            shutil.rmtree(_STATE["tmpdir"], ignore_errors=True)


def _write_sidecars_if_complete() -> None:
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
