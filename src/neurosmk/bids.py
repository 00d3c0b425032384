"""A fast BIDS indexer for the inputs neurosmk uses (T1w images and DWI series).

It walks ``sub-*/[ses-*/]{anat,dwi}/`` with ``os.scandir`` only (no per-file stat, no JSON
parsing), which indexes 10,000 subjects in well under a second.  pybids is far more general but
orders of magnitude slower at this scale (see ``benchmarks/bench_bids_index.py``).

File names must parse as BIDS (``sub-<label>[_<key>-<label>...]_<suffix><ext>``, labels
alphanumeric): a T1w/DWI-looking file that does not is refused with an error naming it, never
picked up (names reach tool command lines). Validation of the selected files is separate:
header level in :func:`validate_inputs` (at start, cached), data level in the per-visit job
(:mod:`neurosmk.validate`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .io import InputError, split_ext
from .validate import read_bval, read_bvec  # noqa: F401 - the gradient-table readers (neurosmk.dwi)

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


_LABEL_RE = re.compile(r"[a-zA-Z0-9]+")
_EXT_RE = re.compile(r"(\.[a-zA-Z0-9]+)+")


def bids_name_problem(filename: str, subject: str, session: str | None) -> str | None:
    """Why ``filename`` (in sub-<subject>[/ses-<session>]) is not a valid BIDS data file name,
    or None: ``sub-<label>[_ses-<label>][_<key>-<label>...]_<suffix><.ext>``, labels and
    suffix alphanumeric, sub/ses matching the folders."""
    stem, ext = split_ext(filename)
    if not _EXT_RE.fullmatch(ext):
        return f"extension {ext!r} is not a BIDS extension"
    parts = stem.split("_")
    if len(parts) < 2:
        return "no entities (expected sub-<label>_..._<suffix>)"
    if not _LABEL_RE.fullmatch(parts[-1]):
        return f"suffix {parts[-1]!r} is not alphanumeric"
    keys = []
    for p in parts[:-1]:
        m = _ENTITY_RE.match(p)
        if not m:
            return f"{p!r} is not a BIDS entity key-label pair (labels are alphanumeric)"
        keys.append((m.group(1), m.group(2)))
    if keys[0] != ("sub", subject):
        return f"it must start with sub-{subject} (its folder)"
    if session is not None and (len(keys) < 2 or keys[1] != ("ses", session)):
        return f"it must start with sub-{subject}_ses-{session} (its folders)"
    if session is None and any(k == "ses" for k, _ in keys):
        return "it has a ses- entity but is not in a ses-* folder"
    if len({k for k, _ in keys}) != len(keys):
        return "an entity key appears twice"
    return None


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
    warnings: list[str] = field(default_factory=list)

    @property
    def subjects(self) -> list[str]:
        return sorted({s for s, _ in self.visits})

    @property
    def has_sessions(self) -> bool:
        return any(ses is not None for _, ses in self.visits)

    def select(self, participant_label=None, session_label=None, strict: bool = True,
               participant_exclude=None) -> BIDSIndex:
        """Return a sub-index; unknown labels raise an error that names them (``strict`` False:
        they are ignored, for an index of some subjects only, ``index_bids(subjects=...)``)."""
        visits = dict(self.visits)
        warnings = list(self.warnings)
        if participant_label:
            missing = sorted(set(participant_label) - set(self.subjects))
            if missing and strict:
                raise InputError(self.root, f"participant_label not found in the dataset: {', '.join(missing)}")
            wanted = set(participant_label)
            visits = {k: v for k, v in visits.items() if k[0] in wanted}
        if participant_exclude:
            # a subject to leave out that is not there is left out already (e.g. one that was removed
            # from the dataset since neurosmk-status listed it): named, not an error
            missing = sorted(set(participant_exclude) - set(self.subjects))
            if missing and strict:
                warnings.append(f"{self.root}: participant_exclude not in the dataset (nothing to leave out): "
                                f"{', '.join(missing)}")
            left_out = set(participant_exclude)
            visits = {k: v for k, v in visits.items() if k[0] not in left_out}
        if session_label:
            found = {k[1] for k in visits}
            missing = sorted(set(session_label) - found)
            if missing and strict:
                raise InputError(self.root, f"session_label not found in the dataset: {', '.join(missing)}")
            sessions = set(session_label)
            visits = {k: v for k, v in visits.items() if k[1] in sessions}
        return BIDSIndex(self.root, visits, warnings)


def _scan_datadir(path: str, visit: Visit) -> None:
    with os.scandir(path) as it:
        names = [e.name for e in it if e.is_file() or e.is_symlink()]
    nameset = set(names)
    dtype = os.path.basename(path)
    for name in sorted(names):
        if name.startswith("."):
            continue
        problem = bids_name_problem(name, visit.subject, visit.session)
        if problem:
            # a name that looks like a data file of this subject but does not parse is refused:
            # it would be silently skipped or, worse, picked up with a hostile name
            if name.startswith("sub-") or re.search(r"_(T1w|dwi)\.", name):
                raise InputError(os.path.join(path, name), f"not a valid BIDS file name: {problem}; "
                                                           "rename or remove it")
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


def index_bids(root: str | os.PathLike, subjects=None) -> BIDSIndex:
    """Index T1w and DWI files of a BIDS dataset (sub-*/[ses-*/]{anat,dwi}).

    ``subjects`` (labels without ``sub-``): index only these subjects' folders (a job process
    of one subject, :mod:`neurosmk.startup`); None indexes every ``sub-*`` folder."""
    root = str(root)
    if not os.path.isdir(root):
        raise InputError(root, "bids_dir does not exist or is not a directory")
    visits: dict[tuple[str, str | None], Visit] = {}
    if subjects is not None:
        subdirs = sorted(f"sub-{s}" for s in subjects if os.path.isdir(os.path.join(root, f"sub-{s}")))
    else:
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
            for n, isdir in entries:
                if isdir and n in ("anat", "dwi"):
                    stray = Visit(subject, None)
                    _scan_datadir(os.path.join(spath, n), stray)
                    files = stray.t1w + [d.nifti for d in stray.dwi] + stray.other
                    if files:
                        raise InputError(files[0], f"sub-{subject} has ses-* folders ({', '.join(sessions)}), "
                                                   "so this file outside them would be ignored; move it into "
                                                   "its ses-<label>/ folder or remove it")
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
    warnings = []
    if not os.path.isfile(os.path.join(root, "dataset_description.json")):
        warnings.append(f"{root}: no dataset_description.json: is this the root of a BIDS dataset? "
                        "(neurosmk goes on; the BIDS validator would refuse it)")
    return BIDSIndex(root, visits, warnings)


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
# validation (neurosmk.validate): the header tier here, at start; the data tier in the
# per-visit validate_anat/validate_dwi jobs (rules/validate.smk)


def validate_inputs(index: BIDSIndex, filters: dict | None = None, cache_path: str | None = None,
                    settings: dict | None = None, save_cache: bool = True):
    """Header-level checks of every selected T1w and DWI; raise InputError on the first bad file.

    Reads NIfTI headers and gradient tables only (cost independent of image size), cached by
    size and mtime in ``cache_path``; returns the cache (neurosmk.validate.HeaderCache)."""
    from .validate import DEFAULT_SETTINGS, check_headers

    filters = filters or {}

    def picks():
        for visit in index.visits.values():
            if visit.other:
                raise InputError(visit.other[0], "not a NIfTI file (expected .nii or .nii.gz)")
            yield pick_t1w(visit, filters.get("t1w")), pick_dwi(visit, filters.get("dwi"))

    return check_headers(picks(), settings or DEFAULT_SETTINGS, cache_path, save_cache=save_cache)
