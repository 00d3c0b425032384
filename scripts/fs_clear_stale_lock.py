"""Remove a stale recon-all lock (``scripts/IsRunning.lh+rh`` and friends) before resuming.

recon-all refuses to start while ``$SUBJECTS_DIR/<subject>/scripts/IsRunning.*`` exists; a
crashed or killed run leaves it behind. The lock is removed only when no recon-all process for
that subject is running on this machine (checked through /proc). A lock written by another host
is left alone (that run may be alive): remove it by hand.

usage: fs_clear_stale_lock.py SUBJECTS_DIR SUBJECT
"""

from __future__ import annotations

import glob
import os
import socket
import sys


def running_recon_all(subject: str, proc: str = "/proc") -> list[int]:
    """PIDs of recon-all processes whose command line names ``subject``."""
    pids = []
    for d in glob.glob(os.path.join(proc, "[0-9]*")):
        try:
            with open(os.path.join(d, "cmdline"), "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        if any(os.path.basename(a) == "recon-all" for a in argv) and subject in argv:
            pids.append(int(os.path.basename(d)))
    return pids


def lock_host(path: str) -> str | None:
    """The HOST line recon-all writes into its IsRunning file, if any."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("HOST"):
                    return line.split(None, 1)[1].strip() if len(line.split()) > 1 else None
    except OSError:
        pass
    return None


def clear_stale_locks(subjects_dir: str, subject: str, proc: str = "/proc",
                      hostname: str | None = None) -> list[str]:
    """Remove stale IsRunning.* files of ``subject``; return the removed paths.

    Raises RuntimeError when a recon-all for the subject is running here, or the lock is another
    host's."""
    locks = sorted(glob.glob(os.path.join(subjects_dir, subject, "scripts", "IsRunning.*")))
    if not locks:
        return []
    pids = running_recon_all(subject, proc)
    if pids:
        raise RuntimeError(f"recon-all for {subject} is running (pid {', '.join(map(str, pids))}); "
                           f"not removing {', '.join(locks)}")
    hostname = hostname or socket.gethostname()
    for lock in locks:
        host = lock_host(lock)
        if host and host != hostname:
            raise RuntimeError(f"{lock} was written by host {host}, not this one ({hostname}); "
                               "remove it by hand if that run is dead")
    for lock in locks:
        os.remove(lock)
    return locks


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        removed = clear_stale_locks(argv[0], argv[1])
    except RuntimeError as exc:
        print(f"fs_clear_stale_lock: {exc}", file=sys.stderr)
        return 1
    for path in removed:
        print(f"fs_clear_stale_lock: removed stale {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
