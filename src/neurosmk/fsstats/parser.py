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
    """A FreeSurfer stats file of a known kind that has no numbers to tabulate.  No kind in
    the fixtures raises it any more (``?h.curv.stats`` is parsed); callers still skip it with a
    manifest entry."""

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

    def to_frame(self):
        """This file's numbers as a tidy DataFrame with the long-table columns
        (``neurosmk.fsstats.tables.LONG_COLUMNS``): object string columns, float64 value."""
        v = self.values
        strings = np.empty((9, v.size), dtype=object)  # one object block, no type inference
        strings[[0, 1, 2, 7, 8]] = np.array([self.subject, self.session, self.atlas,
                                             self.freesurfer_version, self.path],
                                            dtype=object)[:, None]
        if v.ndim == 1:
            strings[3:7] = np.array([self.row_hemispheres, self.structures,
                                     self.numeric_columns, self.units], dtype=object)
        else:
            n, k = v.shape
            rows = strings[3:5].reshape(2, n, k)
            rows[:] = np.array([self.row_hemispheres, self.structures], dtype=object)[:, :, None]
            cols = strings[5:7].reshape(2, n, k)
            cols[:] = np.array([self.numeric_columns, self.units], dtype=object)[:, None, :]
        return _frame_from_blocks(strings, v.ravel())

    def table_frame(self):
        """The table as freesurfer-stats returns it: one row per structure, one column per
        numeric ColHeader (float64), the raw structure name as the index."""
        import pandas as pd

        if self.values.ndim != 2:
            raise ValueError(f"{self.path}: a {self.kind} file has no table")
        return pd.DataFrame(self.values, index=pd.Index(self.structures, name="StructName"),
                            columns=self.numeric_columns, copy=False)


_FRAME_COLUMNS = ["subject", "session", "atlas", "hemisphere", "structure", "measure", "value",
                  "unit", "freesurfer_version", "source_file"]
_STRING_POS = [0, 1, 2, 3, 4, 5, 7, 8, 9]


def _frame_from_blocks(strings: np.ndarray, values: np.ndarray):
    """DataFrame with ``_FRAME_COLUMNS`` from a (9, n) object block and the float values.

    Built from two blocks with pandas' ``make_block`` (the pseudo-public API pyarrow uses),
    which skips the per-column type inference of ``pd.DataFrame(dict)`` (about 3x faster for
    a 300-row file); falls back to the public constructor if that API is unavailable."""
    import pandas as pd

    try:
        from pandas.core.internals import BlockManager
        from pandas.core.internals.api import make_block

        blocks = (make_block(strings, placement=_STRING_POS),
                  make_block(values.reshape(1, -1), placement=[6]))
        mgr = BlockManager(blocks, [pd.Index(_FRAME_COLUMNS), pd.RangeIndex(len(values))])
        return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - other pandas
        data = {c: strings[j] for j, c in zip(range(9), [c for c in _FRAME_COLUMNS
                                                        if c != "value"])}
        data["value"] = values
        return pd.DataFrame(data, copy=False)[_FRAME_COLUMNS]


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
    head, sep, unit = rest.rpartition(",")
    head, sep2, sval = head.rpartition(",")
    if not sep2 or "," not in head:
        raise StatsParseError(path, lineno, f"'# Measure' line has {rest.count(',') + 1} "
                                            f"comma-separated fields, expected 5: {rest.strip()!r}")
    try:
        value = float(sval)
    except ValueError:
        raise StatsParseError(path, lineno, f"'# Measure' value {sval.strip()!r} is not a "
                                            "number") from None
    name, _, key_desc = head.partition(",")
    name = name.strip()
    if "," in key_desc:
        key, _, desc = key_desc.partition(",")
        key = key.strip()
        desc = ", ".join(d.strip() for d in desc.split(",")) if "," in desc else desc.strip()
    else:  # missing comma between key and description: key is the first word
        key_desc = key_desc.split(None, 1)
        key = key_desc[0] if key_desc else ""
        desc = key_desc[1].strip() if len(key_desc) > 1 else ""
    if not name or not key:
        raise StatsParseError(path, lineno, f"'# Measure' line without a name or key: {rest!r}")
    return name, key, desc, value, unit.strip()


def _numeric_error(path, lineno: int, parts, num_idx, columns):
    for j in num_idx:
        try:
            float(parts[j])
        except ValueError:
            return StatsParseError(path, lineno, f"column {columns[j]!r}: value {parts[j]!r} "
                                                 "is not a number")
    return StatsParseError(path, lineno, "non-numeric value")


def _decode(p: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        if "\x00" in text or not text:
            raise StatsParseError(p, 1, "not a FreeSurfer stats file (binary content)")
    if "\x00" in text:
        raise StatsParseError(p, 1, "not a FreeSurfer stats file (binary content)")
    return text


def parse_stats_file(path, subject: str | None = None, session: str | None = None) -> ParsedStats:
    """Parse a FreeSurfer stats file (aparc-style, segstats-style, measures-only, or the
    ``mris_curvature_stats`` text of ``?h.curv.stats``).

    Raises :class:`StatsParseError` (file + line number) for a malformed file.
    """
    p = path if isinstance(path, Path) else Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(p, f"cannot be read ({exc.strerror or exc})") from exc
    text = _decode(p, raw)
    lines = text.splitlines()
    n_lines = len(lines)
    atlas, hemi = atlas_and_hemi_from_name(p.name)

    # One pass over the lines.  At the first table row, if no '#' line follows (always so in
    # FreeSurfer's output), the rest is split in bulk; otherwise row by row.
    header: dict = {}
    measures: list = []
    tc_header: dict = {}
    tc_units: dict = {}
    columns = None
    colheaders_line = nrows_line = n_comment = 0
    nrows = None
    ncol = 0
    rows: list = []
    row_lines = None  # 1-based line numbers of the rows (row-by-row mode, or for errors)
    start = -1        # index of the first row line (bulk mode)
    n_hash = text.count("\n#") + text.startswith("#")
    for i, line in enumerate(lines):
        if line.startswith("#"):
            n_comment += 1
            word, _, rest = line[1:].strip().partition(" ")
            if word == "TableCol":
                bits = rest.split(None, 2)
                if len(bits) == 3:
                    if bits[1] == "ColHeader":
                        tc_header[bits[0]] = bits[2].strip()
                    elif bits[1] == "Units":
                        tc_units[bits[0]] = bits[2].strip()
            elif word == "Measure":
                measures.append(_parse_measure(p, i + 1, rest))
            elif word == "ColHeaders":
                if rows:
                    raise StatsParseError(p, i + 1, "'# ColHeaders' line after table rows")
                columns = rest.split()
                ncol = len(columns)
                colheaders_line = i + 1
            elif word == "NRows":
                try:
                    nrows = int(rest.split()[0])
                    nrows_line = i + 1
                except (ValueError, IndexError):
                    raise StatsParseError(p, i + 1, f"'# NRows' is not an integer: {rest!r}") \
                        from None
            elif word in _HEADER_KEYS and word not in header:
                header[word] = rest.strip()
            continue
        if not line or line.isspace():
            continue
        if columns is None:
            if not n_comment:
                if "(using '" in text and "<mean> +- <std>" in text:
                    return _parse_curvature(p, text, lines, atlas, hemi, subject, session)
                raise StatsParseError(p, i + 1, "not a FreeSurfer stats file (data before any "
                                                "'#' header line)")
            raise StatsParseError(p, i + 1, "table row before any '# ColHeaders' line "
                                            "(missing ColHeaders)")
        if row_lines is None and n_comment == n_hash:
            bulk = [x.split() for x in lines[i:]]
            if set(map(len, bulk)) == {ncol}:
                rows, start = bulk, i
                break
            row_lines = []  # blank lines among the rows, or a row of the wrong length
        elif row_lines is None:
            row_lines = []
        parts = line.split()
        if len(parts) != ncol:
            raise StatsParseError(p, i + 1, f"row has {len(parts)} columns, '# ColHeaders' "
                                            f"(line {colheaders_line}) names {ncol} "
                                            "(file truncated or malformed?)")
        rows.append(parts)
        row_lines.append(i + 1)
    if row_lines is None and rows:
        row_lines = range(start + 1, start + 1 + len(rows))

    if not n_comment and not rows:
        raise StatsParseError(p, max(n_lines, 1), "not a FreeSurfer stats file (no '#' header "
                                                  "lines)" if n_lines else "empty file")
    if columns is None:
        if measures and atlas == "brainvol":
            kind = "measures"
        elif measures or tc_header or "Title" in header or "generating_program" in header:
            raise StatsParseError(p, n_lines, "missing '# ColHeaders' line (file truncated?)")
        else:
            raise StatsParseError(p, 1, "not a FreeSurfer stats file (no '# Measure' or "
                                        "'# ColHeaders' lines)")
        columns = []
    else:
        if not columns:
            raise StatsParseError(p, colheaders_line, "'# ColHeaders' line names no columns")
        if not rows:
            raise StatsParseError(p, n_lines, "no table rows after '# ColHeaders' (file "
                                              "truncated?)")
        if nrows is not None and len(rows) != nrows:
            raise StatsParseError(p, row_lines[-1],
                                  f"'# NRows {nrows}' (line {nrows_line}) but "
                                  f"{len(rows)} table rows (file truncated?)")
        kind = "surface" if columns[0] == "StructName" else "segstats"

    # column roles
    try:
        name_idx = columns.index("StructName")
    except ValueError:
        name_idx = -1
        if columns:
            raise StatsParseError(p, colheaders_line, "'# ColHeaders' has no StructName column")
    num_idx = [j for j in range(ncol) if j != name_idx]
    numeric_columns = [columns[j] for j in num_idx]
    # units: TableCol N Units (N is 1-based, matched via its ColHeader) else by name
    units_by_name = {hd: tc_units[n] for n, hd in tc_header.items() if n in tc_units}
    units = [units_by_name.get(c) or UNIT_BY_COLUMN.get(c, "unknown") for c in numeric_columns]

    nrow, nnum = len(rows), len(num_idx)
    if rows and nnum:
        flat: list = []
        if name_idx == 0:
            for r in rows:
                flat += r[1:]
        elif name_idx < 0:
            for r in rows:
                flat += r
        else:
            for r in rows:
                flat += r[:name_idx]
                flat += r[name_idx + 1:]
        try:
            values = np.fromiter(map(float, flat), np.float64, len(flat)).reshape(nrow, nnum)
        except ValueError:
            for lineno, parts in zip(row_lines, rows):
                for j in num_idx:
                    try:
                        float(parts[j])
                    except ValueError:
                        raise _numeric_error(p, lineno, parts, num_idx, columns) from None
            raise StatsParseError(p, row_lines[0], "non-numeric value")  # pragma: no cover
    else:
        values = np.empty((nrow, nnum))
    structures = [r[name_idx] for r in rows] if name_idx >= 0 else []

    if not hemi:
        hh = header.get("hemi", "").split()
        if hh and hh[0] in ("lh", "rh"):
            hemi = hh[0]
    if kind == "segstats" and not hemi:
        row_hemis = [structure_hemisphere(s) for s in structures]
    else:
        row_hemis = [hemi or "bilateral"] * len(structures)
    subject, session = _subject_session(p, header, subject, session)
    return ParsedStats(path=str(p), subject=subject, session=session, atlas=atlas,
                       hemisphere=hemi, kind=kind, freesurfer_version=_version_of(header),
                       header=header, measures=measures, columns=list(columns),
                       numeric_columns=numeric_columns, units=units, structures=structures,
                       row_hemispheres=row_hemis, values=values)


def _subject_session(p: Path, header: dict, subject, session):
    if subject is None:
        subject = header.get("subjectname", "").split()[0] if header.get("subjectname") else ""
        if not subject:
            subject = p.parent.parent.name if p.parent.name == "stats" else ""
    if session is None:
        subject, session = split_subject_session(subject)
    return subject, session


# --------------------------------------------------------------------------- curv.stats
def _num(p: Path, i: int, what: str, tok: str) -> float:
    try:
        return float(tok.strip("()%"))
    except ValueError:
        raise StatsParseError(p, i, f"{what}: value {tok!r} is not a number") from None


def _curv_values(p: Path, i: int, structure: str, key: str, toks: list, out: list,
                 names=None) -> None:
    """Append (structure, measure, value, unit) for the value text of one line, split into
    ``toks``: ``v [unit]``, ``v +- sd [unit]``, ``v at vertex N``, ``v across N (pct%) [unit]``
    (``unit`` = what N counts).  Units are the file's; ``unknown`` where it gives none."""
    first, second = names or (key, f"{key} std")
    v = _num(p, i, key, toks[0])
    n = len(toks)
    if n >= 3 and toks[1] == "+-":
        unit = toks[3] if n == 4 else "unknown"
        if n > 4:
            raise StatsParseError(p, i, f"{key}: unexpected text {' '.join(toks[4:])!r}")
        out.append((structure, first, v, unit))
        out.append((structure, second, _num(p, i, key, toks[2]), unit))
    elif n == 4 and toks[1:3] == ["at", "vertex"]:
        out.append((structure, key, v, "unknown"))
        out.append((structure, f"{key} vertex", _num(p, i, key, toks[3]), "index"))
    elif n in (4, 5) and toks[1] == "across" and toks[3].startswith("(") and \
            toks[3].endswith("%)"):
        out.append((structure, key, v, "unknown"))
        out.append((structure, f"{key} across", _num(p, i, key, toks[2]),
                    toks[4] if n == 5 else "unknown"))
        out.append((structure, f"{key} across %", _num(p, i, key, toks[3]), "%"))
    elif n <= 2:
        unit = toks[1] if n == 2 else ("count" if "Number of" in key else "unknown")
        out.append((structure, key, v, unit))
    else:
        raise StatsParseError(p, i, f"{key}: cannot read the value(s) {' '.join(toks)!r}")


def _parse_curvature_lines(p: Path, lines: list):
    """Line-by-line reading of mris_curvature_stats output -> (items, header)."""
    items: list = []
    header: dict = {}
    structure = None
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            structure = None
            continue
        left, sep, rest = s.rpartition(":")
        toks = rest.split()
        if not sep or not toks:
            raise StatsParseError(p, i, "unrecognised line in mris_curvature_stats output: "
                                        f"{s[:80]!r}")
        if "<mean> +- <std>" in left:
            label = left.split(None, 1)[0]
            src = left.split("'")[1] if left.count("'") >= 2 else ""
            structure = f"{label} ({src})"
            if len(toks) < 3 or toks[1] != "+-":
                raise StatsParseError(p, i, f"cannot read '<mean> +- <std>' values {rest!r}")
            _curv_values(p, i, structure, "<mean> +- <std>", toks, items, ("mean", "std"))
            continue
        if " -- " in left:
            label, key = (x.strip() for x in left.split(" -- ", 1))
        elif left.startswith("Mean across "):
            label, key = "curv", left
        else:
            label, _, key = left.partition(" ")
            key = key.strip()
            if structure is None or not structure.startswith(label + " "):
                raise StatsParseError(p, i, "unrecognised line in mris_curvature_stats "
                                            f"output: {s[:80]!r}")
            label = structure
        if key.lower().endswith("calculation type"):
            header[f"{label} calculation type"] = rest.strip()
            continue
        _curv_values(p, i, label, key, toks, items)
    if not items:
        raise StatsParseError(p, max(len(lines), 1), "no values in mris_curvature_stats output")
    return items, header


def _parse_curvature(p: Path, text: str, lines: list, atlas: str, hemi: str, subject, session):
    """``mris_curvature_stats`` output (``?h.curv.stats``, ``?h.curv.pial.stats``): blocks of
    ``<label> <mean> +- <std> (using '<file>'): m +- s [unit]`` followed by ``<label> <Key>:
    value...`` lines, then ``curv -- <Key>: value`` summary lines.  One long-table value per
    number after a ':': structure ``<label> (<file>)`` (e.g. ``K (lh.smoothwm)``, ``Raw
    (lh.sulc)``) or ``curv`` for the summary lines; measure = the file's key (``Min``, ``Total
    Surface Area``, ...; ``mean``/``std`` for the first line of a block and ``<key> std``,
    ``<key> vertex``, ``<key> across``, ``<key> across %`` for a line's further numbers)."""
    parts = [line.rpartition(":") for line in lines]
    key = tuple(x[0] for x in parts)
    hit = _CURV_LAYOUTS.get(key)
    if hit is not None:
        values = _curv_numbers(parts, hit[0])
        if values is not None:
            structures, measures, units, header = hit[1:]
            return _curv_result(p, atlas, hemi, subject, session, list(structures),
                                list(measures), list(units), dict(header), values)
    items, header = _parse_curvature_lines(p, lines)
    structures = [x[0] for x in items]
    measures = [x[1] for x in items]
    units = [x[3] for x in items]
    values = np.array([x[2] for x in items], dtype=np.float64)
    spec = _curv_spec(parts)
    again = _curv_numbers(parts, spec)
    if again is not None and np.array_equal(again, values, equal_nan=True):
        if len(_CURV_LAYOUTS) >= 64:
            _CURV_LAYOUTS.clear()
        _CURV_LAYOUTS[key] = (spec, structures, measures, units, dict(header))
    return _curv_result(p, atlas, hemi, subject, session, structures, measures, units, header,
                        values)


# Layouts of mris_curvature_stats files seen so far: (text before the last ':' of every line)
# -> (spec, structures, measures, units, header).  Files of one FreeSurfer version share a
# layout; for them only the numbers are read, after checking that every other token (units,
# 'at vertex', 'across', the calculation type) is the same as in the file the layout came from.
_CURV_LAYOUTS: dict = {}


def _is_number(tok: str) -> bool:
    try:
        float(tok.strip("()%"))
        return True
    except ValueError:
        return False


def _getter(idx: list):
    """itemgetter that always returns a tuple (or None for no positions)."""
    from operator import itemgetter

    if not idx:
        return None
    if len(idx) == 1:
        j = idx[0]
        return lambda toks: (toks[j],)
    return itemgetter(*idx)


def _curv_spec(parts) -> list:
    """Per line: (line index, token count, getter of the plain numbers, getter of the
    '(pct%)' numbers, getter of the other tokens, the other tokens)."""
    spec = []
    for i, (_, _, rest) in enumerate(parts):
        toks = rest.split()
        num = [j for j, t in enumerate(toks) if _is_number(t)]
        pct = [j for j in num if toks[j] != toks[j].strip("()%")]
        plain = [j for j in num if j not in pct]
        fixed = [j for j in range(len(toks)) if j not in num]
        get_fixed = _getter(fixed)
        spec.append((i, len(toks), _getter(plain), _getter(pct), get_fixed,
                     get_fixed(toks) if get_fixed else None))
    return spec


def _curv_numbers(parts, spec):
    """The numbers of a file laid out as ``spec`` (numbers in line order, the '(pct%)' one
    last on its line); None if any other token differs."""
    nums = []
    for i, n, plain, pct, fixed, other in spec:
        toks = parts[i][2].split()
        if len(toks) != n or (fixed is not None and fixed(toks) != other):
            return None
        if plain is not None:
            nums += plain(toks)
        if pct is not None:
            nums += [t.strip("()%") for t in pct(toks)]
    try:
        return np.fromiter(map(float, nums), np.float64, len(nums))
    except ValueError:
        return None


def _curv_result(p, atlas, hemi, subject, session, structures, measures, units, header,
                 values) -> ParsedStats:
    header["generating_program"] = "mris_curvature_stats"
    subject, session = _subject_session(p, header, subject, session)
    return ParsedStats(path=str(p), subject=subject, session=session, atlas=atlas,
                       hemisphere=hemi, kind="curvature", freesurfer_version="", header=header,
                       measures=[], columns=[], numeric_columns=measures, units=units,
                       structures=structures,
                       row_hemispheres=[hemi or "bilateral"] * len(values), values=values)
