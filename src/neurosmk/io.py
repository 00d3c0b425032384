"""Atomic file writing and image loading with clear errors.

Every writer here writes to a temporary file in the destination folder and renames it into
place, so a crash or a kill never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator


class InputError(ValueError):
    """A bad input file: the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


COMPOUND_EXTS = (".nii.gz", ".tsv.gz", ".tar.gz")


def split_ext(path: str) -> tuple[str, str]:
    """``x.nii.gz`` -> (``x``, ``.nii.gz``); ``x.tsv`` -> (``x``, ``.tsv``); ``x`` -> (``x``, "")."""
    for ext in COMPOUND_EXTS:
        if path.endswith(ext):
            return path[: -len(ext)], ext
    return os.path.splitext(path)


def _suffix_of(path: Path) -> str:
    return split_ext(path.name)[1]


def _remove_stale_temps(final: Path) -> None:
    """Remove temporary files that an earlier writer of ``final`` left when it was killed
    (SIGKILL skips the clean-up in atomic_path). Snakemake never runs two jobs for the same
    output at once, so such a file can only be stale."""
    pat = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.tmp{re.escape(_suffix_of(final))}")
    for p in final.parent.iterdir():
        if p.name.startswith("." + final.name) and pat.fullmatch(p.name):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import (os.umask can only be read by setting it, which is not thread-safe)
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the real extension (so ``.nii.gz`` writers compress) and starts
    with a dot, so it is never mistaken for the output.  On error it is removed.  The output gets
    the mode a plain ``open()`` would give (0666 minus the umask), not mkstemp's private 0600.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{_suffix_of(final)}",
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_tsv(path: str | os.PathLike, df, **kwargs) -> None:
    """Write a pandas DataFrame as TSV atomically; NaN is written as ``n/a`` (BIDS)."""
    kwargs.setdefault("index", False)
    kwargs.setdefault("na_rep", "n/a")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", **kwargs)


def save_nifti(img, path: str | os.PathLike) -> None:
    """Save a nibabel image atomically."""
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def save_ants(img, path: str | os.PathLike) -> None:
    """Save an ANTsImage atomically."""
    import ants

    with atomic_path(path) as tmp:
        ants.image_write(img, str(tmp))


def load_nifti(path: str | os.PathLike, ndim: int | tuple[int, ...] | None = None):
    """Load a NIfTI image, raising :class:`InputError` naming the file on any problem."""
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise InputError(p, "file does not exist")
    if not (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
        raise InputError(p, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(p))
        _ = img.shape
    except Exception as exc:  # nibabel raises several types
        raise InputError(p, f"cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(p, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if img.ndim not in allowed:
            raise InputError(p, f"expected a {' or '.join(f'{n}D' for n in allowed)} image, "
                                f"got {img.ndim}D with shape {img.shape}")
    return img
