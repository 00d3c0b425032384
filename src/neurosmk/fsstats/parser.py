"""Parse one FreeSurfer ``*.stats`` file into a :class:`ParsedStats`.

Nothing here knows a fixed column list: the table columns come from the file's own
``# ColHeaders`` line (units from its ``# TableCol N Units`` lines where present), the global
values from its ``# Measure`` lines, and the provenance from its header lines.  Plain Python
string splitting plus one numpy array per file keeps this fast (well under a millisecond for
a typical file), which matters when aggregating tens of thousands of subjects.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurosmk.io import InputError

__all__ = ["ParsedStats", "StatsParseError", "NotATableError", "parse_stats_file",
           "atlas_and_hemi_from_name", "structure_hemisphere", "split_subject_session",
           "UNIT_BY_COLUMN"]


class StatsParseError(InputError):
    """A malformed FreeSurfer stats file; the message names the file and the line."""

    def __init__(self, path, line: int, problem: str):
        self.line = line
        super().__init__(path, f"line {line}: {problem}")


class NotATableError(InputError):
    """A FreeSurfer stats file of a known kind that is not a table (e.g. ``lh.curv.stats``,
    written by ``mris_curvature_stats``).  Callers skip it with a manifest entry."""

    def __init__(self, path, kind: str, problem: str):
        self.kind = kind
        super().__init__(path, problem)


# Units by column name, used only where the file has no ``# TableCol N Units`` line.
UNIT_BY_COLUMN = {
    "Volume_mm3": "mm^3", "GrayVol": "mm^3", "SurfArea": "mm^2", "Area_mm2": "mm^2",
    "ThickAvg": "mm", "ThickStd": "mm", "MeanCurv": "mm^-1", "GausCurv": "mm^-2",
    "FoldInd": "unitless", "CurvInd": "unitless", "NumVert": "count", "nvertices": "count",
    "NVertices": "count", "NVoxels": "count", "Index": "NA", "SegId": "NA",
    "normMean": "MR", "normStdDev": "MR", "normMin": "MR", "normMax": "MR", "normRange": "MR",
}

_HEADER_KEYS = ("generating_program", "cvs_version", "cmdline", "CreationTime", "subjectname",
                "hemi", "annot", "Annot", "AnnotationFile", "ColorTable", "SegVolFile",
                "anatomy_type", "Title", "SUBJECTS_DIR", "InVolFile")

_VERSION_RE = re.compile(r"^\d+(\.\d+)+")
_CVS_RE = re.compile(r"\$Id:\s*(\S+?),v\s+(\S+)")
_SESSION_RE = re.compile(r"^(?P<sub>.+?)_(?P<ses>ses-[^_]+)$")


@dataclass
class ParsedStats:
    path: str
    subject: str
    session: str
    atlas: str
    hemisphere: str            # "lh"/"rh" for per-hemisphere files, "" for whole-brain files
    kind: str                  # "surface", "segstats" or "measures"
    freesurfer_version: str
    header: dict = field(default_factory=dict)
    # global values: one tuple (name, key, description, value, unit) per "# Measure" line
    measures: list = field(default_factory=list)
    columns: list = field(default_factory=list)          # all ColHeaders, in order
    numeric_columns: list = field(default_factory=list)  # the numeric ones, in order
    units: list = field(default_factory=list)            # one per numeric column
    structures: list = field(default_factory=list)       # one per row, raw names
    row_hemispheres: list = field(default_factory=list)  # one per row
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # rows x numeric cols

    @property
    def n_values(self) -> int:
        return int(self.values.size)


def split_subject_session(name: str) -> tuple[str, str]:
    """``sub-01_ses-02`` -> ("sub-01", "ses-02"); ``X_ses-Y`` likewise; else (name, "")."""
    m = _SESSION_RE.match(name)
    if m:
        return m.group("sub"), m.group("ses")
    return name, ""


def atlas_and_hemi_from_name(filename: str) -> tuple[str, str]:
    """``lh.aparc.a2009s.stats`` -> ("aparc.a2009s", "lh"); ``aseg.stats`` -> ("aseg", "")."""
    base = os.path.basename(filename)
    if base.endswith(".stats"):
        base = base[: -len(".stats")]
    for h in ("lh", "rh"):
        if base.startswith(h + "."):
            return base[3:], h
    return base, ""


def structure_hemisphere(name: str, file_hemi: str = "") -> str:
    """Hemisphere of a structure from its name (segstats tables), else the file's."""
    if file_hemi:
        return file_hemi
    low = name.lower()
    if low.startswith(("left-", "lh-", "wm-lh-", "ctx-lh-", "ctx_lh_", "lh_")):
        return "lh"
    if low.startswith(("right-", "rh-", "wm-rh-", "ctx-rh-", "ctx_rh_", "rh_")):
        return "rh"
    return "bilateral"


def _version_of(header: dict) -> str:
    v = header.get("cvs_version", "").strip()
    if not v:
        return ""
    if _VERSION_RE.match(v):
        return v.split()[0]
    m = _CVS_RE.search(v)  # FreeSurfer <= 6: "$Id: mri_segstats.c,v 1.121 2016/05/31 ... $"
    if m:
        return f"cvs {m.group(1)} v{m.group(2)}"
    return v


def _parse_measure(path, lineno: int, rest: str):
    # "Name, Key, Description, value, unit".  FreeSurfer 6 writes
    # "Cortex, CortexVol Total cortical gray matter volume, 509668.8, mm^3" (one comma
    # missing), so value and unit are taken from the right and the rest split leniently.
    parts = [p.strip() for p in rest.split(",")]
    if len(parts) < 4:
        raise StatsParseError(path, lineno, f"'# Measure' line has {len(parts)} comma-separated "
                                            f"fields, expected 5: {rest.strip()!r}")
    unit = parts[-1]
    try:
        value = float(parts[-2])
    except ValueError:
        raise StatsParseError(path, lineno, f"'# Measure' value {parts[-2]!r} is not a number")
    name = parts[0]
    if len(parts) >= 5:
        key = parts[1]
        desc = ", ".join(parts[2:-2])
    else:  # missing comma between key and description: key is the first word
        key_desc = parts[1].split(None, 1)
        key = key_desc[0] if key_desc else ""
        desc = key_desc[1] if len(key_desc) > 1 else ""
    if not name or not key:
        raise StatsParseError(path, lineno, f"'# Measure' line without a name or key: {rest!r}")
    return name, key, desc, value, unit


def _numeric_error(path, lineno: int, parts, num_idx, columns):
    for j in num_idx:
        try:
            float(parts[j])
        except ValueError:
            return StatsParseError(path, lineno, f"column {columns[j]!r}: value {parts[j]!r} "
                                                 "is not a number")
    return StatsParseError(path, lineno, "non-numeric value")


def parse_stats_file(path, subject: str | None = None, session: str | None = None) -> ParsedStats:
    """Parse a FreeSurfer stats file (aparc-style, segstats-style or measures-only).

    Raises :class:`StatsParseError` (file + line number) for a malformed file and
    :class:`NotATableError` for a known non-table format such as ``lh.curv.stats``.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(p, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
            text = ""
        if "\x00" in text or not text:
            raise StatsParseError(p, 1, "not a FreeSurfer stats file (binary content)")
    if "\x00" in text:
        raise StatsParseError(p, 1, "not a FreeSurfer stats file (binary content)")
    lines = text.splitlines()
    n_lines = len(lines)

    atlas, hemi = atlas_and_hemi_from_name(p.name)
    header: dict = {}
    measures: list = []
    tablecol_header: dict = {}
    tablecol_units: dict = {}
    columns: list | None = None
    colheaders_line = 0
    nrows_expected = None
    nrows_line = 0
    data_rows: list = []   # (lineno, parts)
    saw_comment = False

    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            saw_comment = True
            body = line[1:].strip()
            if not body:
                continue
            word, _, rest = body.partition(" ")
            if word == "Measure":
                measures.append(_parse_measure(p, i, rest))
            elif word == "ColHeaders":
                columns = rest.split()
                colheaders_line = i
            elif word == "TableCol":
                bits = rest.split(None, 2)
                if len(bits) == 3:
                    if bits[1] == "ColHeader":
                        tablecol_header[bits[0]] = bits[2].strip()
                    elif bits[1] == "Units":
                        tablecol_units[bits[0]] = bits[2].strip()
            elif word == "NRows":
                try:
                    nrows_expected = int(rest.split()[0])
                    nrows_line = i
                except (ValueError, IndexError):
                    raise StatsParseError(p, i, f"'# NRows' is not an integer: {rest!r}")
            elif word in _HEADER_KEYS and word not in header:
                header[word] = rest.strip()
            continue
        # a data (non-comment) line
        if columns is None:
            if not saw_comment:
                if "(using '" in text and "Curvature Calculation Type" in text:
                    raise NotATableError(p, "mris_curvature_stats",
                                         "mris_curvature_stats text output (summary values, "
                                         "not a table); not parsed")
                raise StatsParseError(p, i, "not a FreeSurfer stats file (data before any "
                                            "'#' header line)")
            raise StatsParseError(p, i, "table row before any '# ColHeaders' line "
                                        "(missing ColHeaders)")
        data_rows.append((i, line.split()))

    if not saw_comment and not data_rows:
        raise StatsParseError(p, max(n_lines, 1), "not a FreeSurfer stats file (no '#' header "
                                                  "lines)" if n_lines else "empty file")
    if columns is None:
        if measures and atlas == "brainvol":
            kind = "measures"
        elif measures or tablecol_header or "Title" in header or "generating_program" in header:
            raise StatsParseError(p, n_lines, "missing '# ColHeaders' line (file truncated?)")
        else:
            raise StatsParseError(p, 1, "not a FreeSurfer stats file (no '# Measure' or "
                                        "'# ColHeaders' lines)")
        columns = []
    else:
        if not columns:
            raise StatsParseError(p, colheaders_line, "'# ColHeaders' line names no columns")
        if not data_rows:
            raise StatsParseError(p, n_lines, "no table rows after '# ColHeaders' (file "
                                              "truncated?)")
        if nrows_expected is not None and len(data_rows) != nrows_expected:
            raise StatsParseError(p, data_rows[-1][0],
                                  f"'# NRows {nrows_expected}' (line {nrows_line}) but "
                                  f"{len(data_rows)} table rows (file truncated?)")
        kind = "surface" if columns[0] == "StructName" else "segstats"

    # column roles
    ncol = len(columns)
    try:
        name_idx = columns.index("StructName")
    except ValueError:
        name_idx = -1
        if columns:
            raise StatsParseError(p, colheaders_line, "'# ColHeaders' has no StructName column")
    num_idx = [j for j in range(ncol) if j != name_idx]
    numeric_columns = [columns[j] for j in num_idx]
    # units: TableCol N Units (N is 1-based, matched via its ColHeader) else by name
    units_by_name = {}
    for n, h in tablecol_header.items():
        if n in tablecol_units:
            units_by_name[h] = tablecol_units[n]
    units = [units_by_name.get(c) or UNIT_BY_COLUMN.get(c, "unknown") for c in numeric_columns]

    structures = []
    flat = []
    for lineno, parts in data_rows:
        if len(parts) != ncol:
            raise StatsParseError(p, lineno, f"row has {len(parts)} columns, '# ColHeaders' "
                                             f"(line {colheaders_line}) names {ncol} "
                                             "(file truncated or malformed?)")
        structures.append(parts[name_idx])
        flat.extend([parts[j] for j in num_idx])
    if flat:
        try:
            values = np.array(flat, dtype=np.float64)
        except ValueError:
            for lineno, parts in data_rows:
                for j in num_idx:
                    try:
                        float(parts[j])
                    except ValueError:
                        raise _numeric_error(p, lineno, parts, num_idx, columns) from None
            raise StatsParseError(p, data_rows[0][0], "non-numeric value")  # pragma: no cover
        values = values.reshape(len(data_rows), len(num_idx))
    else:
        values = np.empty((len(data_rows), len(num_idx)))

    if not hemi:
        h = header.get("hemi", "").split()
        if h and h[0] in ("lh", "rh"):
            hemi = h[0]
    if kind == "segstats" and not hemi:
        row_hemis = [structure_hemisphere(s) for s in structures]
    else:
        row_hemis = [hemi or "bilateral"] * len(structures)

    if subject is None:
        subject = header.get("subjectname", "").split()[0] if header.get("subjectname") else ""
        if not subject:
            subject = p.parent.parent.name if p.parent.name == "stats" else ""
    if session is None:
        subject, session = split_subject_session(subject)

    return ParsedStats(path=str(p), subject=subject, session=session, atlas=atlas,
                       hemisphere=hemi, kind=kind, freesurfer_version=_version_of(header),
                       header=header, measures=measures, columns=list(columns),
                       numeric_columns=numeric_columns, units=units, structures=structures,
                       row_hemispheres=row_hemis, values=values)
