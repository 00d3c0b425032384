"""A fast BIDS indexer for the inputs neurosmk uses (T1w images and DWI series).

It walks ``sub-*/[ses-*/]{anat,dwi}/`` with ``os.scandir`` only (no per-file stat, no JSON
parsing), which indexes 10,000 subjects in well under a second.  pybids is far more general but
orders of magnitude slower at this scale (see ``benchmarks/bench_bids_index.py``).

Validation of the selected files (readable NIfTI, dimensionality, not empty/NaN, DWI volume
count against ``.bval``/``.bvec``) is separate, in :func:`validate_inputs`, and cached.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from .io import InputError, split_ext

_ENTITY_RE = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")
NIFTI_EXTS = (".nii.gz", ".nii")


def parse_entities(filename: str) -> tuple[dict[str, str], str, str]:
    """Split a BIDS filename into (entities, suffix, extension)."""
    stem, ext = split_ext(filename)
    parts = stem.split("_")
    suffix = parts[-1]
    ents = {}
    for p in parts[:-1]:
        m = _ENTITY_RE.match(p)
        if m:
            ents[m.group(1)] = m.group(2)
    return ents, suffix, ext


@dataclass
class DWISeries:
    nifti: str
    bval: str | None
    bvec: str | None
    json: str | None
    entities: dict = field(default_factory=dict)


@dataclass
class Visit:
    """One subject × session (session is None for datasets without sessions)."""

    subject: str
    session: str | None
    t1w: list[str] = field(default_factory=list)
    dwi: list[DWISeries] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # files with a T1w/dwi suffix but no NIfTI extension


@dataclass
class BIDSIndex:
    root: str
    visits: dict[tuple[str, str | None], Visit]

    @property
    def subjects(self) -> list[str]:
        return sorted({s for s, _ in self.visits})

    @property
    def has_sessions(self) -> bool:
        return any(ses is not None for _, ses in self.visits)

    def select(self, participant_label=None, session_label=None) -> "BIDSIndex":
        """Return a sub-index; unknown labels raise an error that names them."""
        visits = dict(self.visits)
        if participant_label:
            missing = sorted(set(participant_label) - set(self.subjects))
            if missing:
                raise InputError(self.root, f"participant_label not found in the dataset: {', '.join(missing)}")
            visits = {k: v for k, v in visits.items() if k[0] in set(participant_label)}
        if session_label:
            found = {k[1] for k in visits}
            missing = sorted(set(session_label) - found)
            if missing:
                raise InputError(self.root, f"session_label not found in the dataset: {', '.join(missing)}")
            visits = {k: v for k, v in visits.items() if k[1] in set(session_label)}
        return BIDSIndex(self.root, visits)


def _scan_datadir(path: str, visit: Visit) -> None:
    with os.scandir(path) as it:
        names = [e.name for e in it if e.is_file() or e.is_symlink()]
    nameset = set(names)
    dtype = os.path.basename(path)
    for name in sorted(names):
        if name.startswith("."):
            continue
        ents, suffix, ext = parse_entities(name)
        if dtype == "anat" and suffix == "T1w":
            if ext in NIFTI_EXTS:
                visit.t1w.append(os.path.join(path, name))
            elif ext not in (".json",):
                visit.other.append(os.path.join(path, name))
        elif dtype == "dwi" and suffix == "dwi":
            if ext in NIFTI_EXTS:
                stem = name[: -len(ext)]
                bval = stem + ".bval"
                bvec = stem + ".bvec"
                js = stem + ".json"
                visit.dwi.append(DWISeries(
                    nifti=os.path.join(path, name),
                    bval=os.path.join(path, bval) if bval in nameset else None,
                    bvec=os.path.join(path, bvec) if bvec in nameset else None,
                    json=os.path.join(path, js) if js in nameset else None,
                    entities=ents,
                ))
            elif ext not in (".json", ".bval", ".bvec"):
                visit.other.append(os.path.join(path, name))


def index_bids(root: str | os.PathLike) -> BIDSIndex:
    """Index T1w and DWI files of a BIDS dataset (sub-*/[ses-*/]{anat,dwi})."""
    root = str(root)
    if not os.path.isdir(root):
        raise InputError(root, "bids_dir does not exist or is not a directory")
    visits: dict[tuple[str, str | None], Visit] = {}
    with os.scandir(root) as it:
        subdirs = sorted(e.name for e in it if e.name.startswith("sub-") and e.is_dir())
    for sd in subdirs:
        subject = sd[4:]
        if not re.fullmatch(r"[a-zA-Z0-9]+", subject):
            raise InputError(os.path.join(root, sd), "subject label must be alphanumeric (BIDS)")
        spath = os.path.join(root, sd)
        with os.scandir(spath) as it:
            entries = sorted((e.name, e.is_dir()) for e in it)
        sessions = [n for n, isdir in entries if isdir and n.startswith("ses-")]
        if sessions:
            for ses in sessions:
                label = ses[4:]
                if not re.fullmatch(r"[a-zA-Z0-9]+", label):
                    raise InputError(os.path.join(spath, ses), "session label must be alphanumeric (BIDS)")
                v = Visit(subject, label)
                for n in ("anat", "dwi"):
                    p = os.path.join(spath, ses, n)
                    if os.path.isdir(p):
                        _scan_datadir(p, v)
                visits[(subject, label)] = v
        else:
            v = Visit(subject, None)
            for n, isdir in entries:
                if isdir and n in ("anat", "dwi"):
                    _scan_datadir(os.path.join(spath, n), v)
            visits[(subject, None)] = v
    if not visits:
        raise InputError(root, "no sub-* folders found: not a BIDS dataset?")
    with_ses = {k for k in visits if k[1] is not None}
    if with_ses and len(with_ses) != len(visits):
        nos = sorted(k[0] for k in visits if k[1] is None)
        raise InputError(root, "some subjects have ses-* folders and others do not "
                               f"(without sessions: {', '.join('sub-' + s for s in nos[:5])}); "
                               "neurosmk needs one layout for the whole dataset")
    return BIDSIndex(root, visits)


def _matches(ents: dict, filters: dict) -> bool:
    return all(ents.get(k) == str(v) for k, v in filters.items())


def pick_t1w(visit: Visit, filters: dict | None = None) -> str | None:
    cands = [p for p in visit.t1w if _matches(parse_entities(os.path.basename(p))[0], filters or {})]
    if not cands:
        return None
    if len(cands) > 1:
        raise InputError(os.path.dirname(cands[0]),
                         f"{len(cands)} T1w images match ({', '.join(os.path.basename(c) for c in cands)}); "
                         "choose one with bids_filters.t1w (e.g. {run: '1'})")
    return cands[0]


def pick_dwi(visit: Visit, filters: dict | None = None) -> DWISeries | None:
    cands = [d for d in visit.dwi if _matches(d.entities, filters or {})]
    if not cands:
        return None
    if len(cands) > 1:
        raise InputError(os.path.dirname(cands[0].nifti),
                         f"{len(cands)} DWI series match ({', '.join(os.path.basename(c.nifti) for c in cands)}); "
                         "choose one with bids_filters.dwi (e.g. {dir: AP})")
    return cands[0]


# --------------------------------------------------------------------------------------------
# validation


def read_bval(path: str) -> "list[float]":
    try:
        with open(path) as fh:
            vals = [float(x) for x in fh.read().split()]
    except ValueError as exc:
        raise InputError(path, f"not a .bval file: {exc}") from exc
    if not vals:
        raise InputError(path, "empty .bval file")
    return vals


def read_bvec(path: str) -> "list[list[float]]":
    try:
        with open(path) as fh:
            rows = [[float(x) for x in line.split()] for line in fh if line.strip()]
    except ValueError as exc:
        raise InputError(path, f"not a .bvec file: {exc}") from exc
    if len(rows) != 3 or len({len(r) for r in rows}) != 1:
        raise InputError(path, f"a .bvec file must have 3 rows of equal length, got {len(rows)} rows "
                               f"with lengths {[len(r) for r in rows]}")
    return rows


def _check_image(path: str, ndim, what: str) -> tuple:
    import numpy as np

    from .io import load_nifti

    img = load_nifti(path, ndim=ndim)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(path, f"image data cannot be read ({type(exc).__name__}: {exc})") from exc
    if data.size == 0:
        raise InputError(path, f"{what} has no voxels")
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.any():
            raise InputError(path, f"{what} is entirely NaN/Inf")
        if not np.any(data[finite] != 0):
            raise InputError(path, f"{what} is entirely zero")
    elif not np.any(data):
        raise InputError(path, f"{what} is entirely zero")
    return img.shape


def validate_t1w(path: str) -> None:
    _check_image(path, 3, "T1w image")


def validate_dwi(series: DWISeries) -> None:
    if series.bval is None:
        raise InputError(series.nifti, "missing .bval file next to the DWI series "
                                       f"(expected {series.nifti.rsplit('.nii', 1)[0]}.bval)")
    if series.bvec is None:
        raise InputError(series.nifti, "missing .bvec file next to the DWI series "
                                       f"(expected {series.nifti.rsplit('.nii', 1)[0]}.bvec)")
    from .io import load_nifti

    img = load_nifti(series.nifti)
    if img.ndim != 4:
        raise InputError(series.nifti, f"a DWI series must be 4D, got {img.ndim}D with shape {img.shape}")
    shape = _check_image(series.nifti, 4, "DWI series")
    bvals = read_bval(series.bval)
    bvecs = read_bvec(series.bvec)
    nvol = shape[3]
    if len(bvals) != nvol:
        raise InputError(series.bval, f"{len(bvals)} b-values but the DWI series {os.path.basename(series.nifti)} "
                                      f"has {nvol} volumes")
    if len(bvecs[0]) != nvol:
        raise InputError(series.bvec, f"{len(bvecs[0])} gradient directions but the DWI series "
                                      f"{os.path.basename(series.nifti)} has {nvol} volumes")


class ValidationCache:
    """Remembers files already validated, keyed by path, size and mtime (ns)."""

    def __init__(self, path: str | None):
        self.path = path
        self.data: dict[str, list] = {}
        if path and os.path.exists(path):
            try:
                with open(path) as fh:
                    self.data = json.load(fh)
            except (OSError, ValueError):
                self.data = {}
        self.dirty = False

    @staticmethod
    def _key(paths) -> list:
        out = []
        for p in paths:
            if p is None:
                out.append(None)
            else:
                st = os.stat(p)
                out.append([st.st_size, st.st_mtime_ns])
        return out

    def ok(self, paths) -> bool:
        try:
            return self.data.get(str(paths[0])) == self._key(paths)
        except FileNotFoundError:
            return False

    def mark(self, paths) -> None:
        self.data[str(paths[0])] = self._key(paths)
        self.dirty = True

    def save(self) -> None:
        if self.path and self.dirty:
            from .io import write_json

            write_json(self.path, self.data)


def validate_inputs(index: BIDSIndex, filters: dict | None = None, cache_path: str | None = None) -> None:
    """Validate every selected T1w and DWI; raise InputError on the first bad file."""
    filters = filters or {}
    cache = ValidationCache(cache_path)
    try:
        for visit in index.visits.values():
            if visit.other:
                raise InputError(visit.other[0], "not a NIfTI file (expected .nii or .nii.gz)")
            t1 = pick_t1w(visit, filters.get("t1w"))
            if t1 and not cache.ok([t1]):
                validate_t1w(t1)
                cache.mark([t1])
            dwi = pick_dwi(visit, filters.get("dwi"))
            if dwi:
                paths = [dwi.nifti, dwi.bval, dwi.bvec]
                if None in paths or not cache.ok(paths):
                    validate_dwi(dwi)
                    cache.mark(paths)
    finally:
        cache.save()
