"""Damage guards for ``output_dir``, checked at start before anything is written.

* ``output_dir`` equal to or inside ``bids_dir`` (except under ``bids_dir/derivatives/``), or
  inside a subject folder (a path component ``sub-<label>``), is refused: derivatives written
  there land inside a raw dataset, and later runs index them as raw data.
* A lock file ``output_dir/.neurosmk/lock`` (JSON: host, pid, checkout, working directory, start
  time) keeps a run from another checkout (another working directory) out of an output_dir that
  a live run is using. Runs from the same working directory are left to Snakemake's own lock. A
  lock whose process is dead on this host is stale and taken over (so ``kill -9`` does not wedge
  anyone); one held on another host is reported with its holder, for the user to judge.

The lock is written in Snakemake's ``onstart`` handler, which dry runs do not call: a dry run
writes nothing into output_dir. It is removed by ``onsuccess``/``onerror`` and, as a fallback, at
the exit of the Snakemake process.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import re
import socket
from pathlib import Path

from .paths import STATE_DIR

LOCK_NAME = os.path.join(STATE_DIR, "lock")
_SUBJECT_DIR = re.compile(r"sub-[A-Za-z0-9]+")


class OutputDirError(ValueError):
    """output_dir would damage a dataset, or is in use by another run."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_dir(output_dir: str | os.PathLike, bids_dir: str | os.PathLike) -> None:
    """Raise :class:`OutputDirError` if output_dir is, or is inside, the raw dataset (other than
    its derivatives/ folder) or a subject folder. Symlinks are resolved first."""
    out, bids = _real(output_dir), _real(bids_dir)
    if out == bids:
        raise OutputDirError(
            f"output_dir {output_dir} is the BIDS dataset itself (bids_dir {bids_dir}): derivatives would be "
            f"written into the raw data. Use a folder outside it, or {bids / 'derivatives' / 'neurosmk'}")
    deriv = bids / "derivatives"
    if _inside(out, bids) and deriv not in out.parents:  # bids_dir/derivatives/<name>/ is the place
        raise OutputDirError(
            f"output_dir {output_dir} is inside the BIDS dataset {bids_dir}: derivatives would be written "
            f"into the raw data. Use a folder outside it, or one under {bids / 'derivatives'}/")
    subj = [p for p in out.parts if _SUBJECT_DIR.fullmatch(p)]
    if subj:
        raise OutputDirError(
            f"output_dir {output_dir} is inside a subject folder ({subj[0]}): derivatives would be mixed "
            f"with that subject's data. Use a folder outside any sub-<label> folder")


# ---- lock --------------------------------------------------------------------------------------
def lock_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LOCK_NAME


def read_lock(output_dir: str | os.PathLike) -> dict | None:
    """The lock's holder, or None when there is no lock. An unreadable lock file (a run killed
    while writing it) counts as a lock of unknown holder."""
    p = lock_path(output_dir)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        if isinstance(info, dict):
            return info
    except ValueError:
        pass
    return {"host": None, "pid": None, "checkout": None, "workdir": None, "started": None, "unreadable": True}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def is_stale(info: dict, host: str | None = None) -> bool:
    """A lock is stale when its process is dead on this host (a killed run)."""
    host = host or socket.gethostname()
    pid = info.get("pid")
    return info.get("host") == host and isinstance(pid, int) and not _pid_alive(pid)


def describe(info: dict) -> str:
    if info.get("unreadable"):
        return "an unreadable lock file (holder unknown)"
    return (f"host {info.get('host')}, pid {info.get('pid')}, checkout {info.get('checkout')}, "
            f"working directory {info.get('workdir')}, started {info.get('started')}")


def acquire_lock(output_dir: str | os.PathLike, checkout: str, workdir: str | None = None) -> bool:
    """Take the output_dir lock for this process. Returns True when this process now holds it,
    False when a live run from the same working directory holds it (Snakemake's own lock guards
    that case). Raises :class:`OutputDirError` naming the holder when a run from another
    checkout/working directory holds it."""
    workdir = os.path.realpath(workdir or os.getcwd())
    host = socket.gethostname()
    me = {"host": host, "pid": os.getpid(), "checkout": os.path.realpath(checkout), "workdir": workdir,
          "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    p = lock_path(output_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = read_lock(output_dir)
            if info is None:
                continue  # released meanwhile
            if info.get("host") == host and info.get("pid") == os.getpid():
                return True
            if is_stale(info, host):
                print(f"neurosmk: removing the stale lock of a run that is gone ({describe(info)}): {p}")
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                continue
            if info.get("workdir") == workdir and not info.get("unreadable"):
                return False  # same working directory: Snakemake's lock decides
            raise OutputDirError(
                f"output_dir {output_dir} is in use by another neurosmk run ({describe(info)}). "
                f"Wait for it to finish. If that run is gone (e.g. its node crashed), remove {p}")
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        atexit.register(release_lock, output_dir)
        return True
    raise OutputDirError(f"could not take the lock {p} (it keeps changing)")


def release_lock(output_dir: str | os.PathLike) -> bool:
    """Remove the lock if this process holds it. Returns True if it was removed."""
    info = read_lock(output_dir)
    if info and info.get("host") == socket.gethostname() and info.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock_path(output_dir).unlink()
        return True
    return False
