"""Tests for neurosmk.fsstats on real FreeSurfer 6.0 and 7.4.1 stats files.

Expected values are taken by re-reading the fixture files here with plain string splitting,
independently of the parser under test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurosmk.fsstats import qc
from neurosmk.fsstats.cli import aggregate, find_subject_dirs, parse_subject_dir
from neurosmk.fsstats.parser import StatsParseError, atlas_and_hemi_from_name, parse_stats_file, split_subject_session
from neurosmk.fsstats.tables import global_table, long_table, wide_tables
from neurosmk.io import InputError

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "demo" / "freesurfer"
FS6 = FIX / "Subj001" / "stats"
FS7 = FIX / "ds000005_sub-01" / "stats"
ALL_FILES = sorted(FIX.glob("*/stats/*.stats"))
TABLE_FILES = [f for f in ALL_FILES if "curv" not in f.name and f.name != "brainvol.stats"]
MEASURE_FILES = [f for f in ALL_FILES if "# Measure " in f.read_text()]


def _ids(files):
    return [f"{f.parent.parent.name}/{f.name}" for f in files]


# --------------------------------------------------------------------------- independent reading
def _read_table(path: Path):
    """(columns, units-by-column, rows as lists of tokens with line numbers)."""
    cols, units, tc, rows = None, {}, {}, []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("# ColHeaders"):
            cols = line.split()[2:]
        elif line.startswith("# TableCol"):
            t = line.split()
            if t[3] == "ColHeader":
                tc[t[2]] = t[4]
            elif t[3] == "Units":
                units[tc[t[2]]] = t[4]
        elif line.strip() and not line.startswith("#"):
            rows.append((i, line.split()))
    return cols, units, rows


def _read_measures(path: Path):
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("# Measure "):
            rest = line[len("# Measure "):]
            head, value, unit = rest.rsplit(",", 2)
            fields = head.split(",")
            key = fields[1].strip() if len(fields) >= 3 else fields[1].split()[0]
            out.append((fields[0].strip(), key, float(value), unit.strip()))
    return out


def _expected_hemi(path: Path, structure: str) -> str:
    if path.name.startswith(("lh.", "rh.")):
        return path.name[:2]
    s = structure.lower()
    if s.startswith(("left-", "wm-lh-", "lh-", "ctx-lh-")):
        return "lh"
    if s.startswith(("right-", "wm-rh-", "rh-", "ctx-rh-")):
        return "rh"
    return "bilateral"


@pytest.fixture(scope="module")
def parsed():
    out, skipped = [], []
    for d in (FIX / "Subj001", FIX / "ds000005_sub-01"):
        p, s = parse_subject_dir(d)
        out.extend(p)
        skipped.extend(s)
    return out, skipped


@pytest.fixture(scope="module")
def long(parsed):
    return long_table(parsed[0])


@pytest.fixture(scope="module")
def glob(parsed):
    return global_table(parsed[0])


# --------------------------------------------------------------------------- long table
@pytest.mark.parametrize("path", TABLE_FILES, ids=_ids(TABLE_FILES))
def test_every_table_number_in_long_table(path, long):
    cols, units, rows = _read_table(path)
    assert cols and rows
    subject = path.parent.parent.name
    atlas = path.name[:-len(".stats")]
    if atlas[:3] in ("lh.", "rh."):
        atlas = atlas[3:]
    mine = long[long["source_file"] == str(path)]
    numeric = [c for c in cols if c != "StructName"]
    assert len(mine) == len(rows) * len(numeric)
    assert set(mine["participant_id"]) == {"sub-" + subject}
    assert mine["session_id"].isna().all()
    assert set(mine["atlas"]) == {atlas}
    got = {(r.structure, r.measure): r for r in mine.itertuples()}
    for _, toks in rows:
        row = dict(zip(cols, toks))
        name = row["StructName"]
        for c in numeric:
            r = got[(name, c)]
            want = float(row[c])
            if np.isnan(want):
                assert np.isnan(r.value)
            else:
                assert r.value == want, (name, c)
            assert r.hemisphere == _expected_hemi(path, name)
            assert r.unit == units[c]
            # ggseg-style keys
            file_hemi = path.name[:2] if path.name[:3] in ("lh.", "rh.") else ""
            assert r.label == (f"{file_hemi}_{name}" if file_hemi else name)
            want_hemi = {"lh": "left", "rh": "right"}.get(_expected_hemi(path, name))
            assert (r.hemi if isinstance(r.hemi, str) else None) == want_hemi
            if file_hemi:
                assert r.region == name
            else:
                assert r.region == re.sub(r"^(ctx-[lr]h-|wm-[lr]h-|Left-|Right-)", "", name)


def test_known_values_and_raw_names(long):
    fs6 = long[long["source_file"] == str(FS6 / "wmparc.stats")]
    v = fs6[(fs6.structure == "wm-lh-bankssts") & (fs6.measure == "Volume_mm3")].value
    assert v.tolist() == [3508.1]
    aseg = long[long["atlas"] == "aseg"]
    assert "Left-Thalamus" in set(aseg.structure)  # raw 7.x name, not renamed
    bs = aseg[(aseg.structure == "Brain-Stem")].hemisphere.unique().tolist()
    assert bs == ["bilateral"]
    # every numeric column, including identifiers and counts, is kept
    assert {"Index", "SegId", "NVoxels", "Volume_mm3", "normMean"} <= set(aseg.measure)
    assert set(long[long["atlas"] == "aparc"].freesurfer_version) == {
        "cvs mris_anatomical_stats.c v1.79", "7.4.1"}


def test_nan_value_kept_as_nan(long):
    wg = long[(long.source_file == str(FS7 / "lh.w-g.pct.stats")) & (long.structure == "unknown")
              & (long.measure == "SNR")]
    assert len(wg) == 1 and np.isnan(wg.value.iloc[0])


# --------------------------------------------------------------------------- global table
@pytest.mark.parametrize("path", MEASURE_FILES, ids=_ids(MEASURE_FILES))
def test_every_measure_in_global_table(path, glob):
    want = _read_measures(path)
    mine = glob[glob["source_file"] == str(path)]
    assert len(mine) == len(want)
    for (name, key, value, unit), r in zip(want, mine.itertuples()):
        # oriented like the long table: structure = what is measured, measure = the quantity
        assert (r.structure, r.measure, r.value, r.unit) == (name, key, value, unit)
        assert r.participant_id == "sub-" + path.parent.parent.name
        assert pd.isna(r.session_id)
        if path.name[:3] in ("lh.", "rh."):
            assert r.hemisphere == path.name[:2]
        else:
            assert pd.isna(r.hemisphere)


def test_fs6_missing_comma_measure():
    p = parse_stats_file(FS6 / "lh.aparc.stats")
    m = [x for x in p.measures if x[1] == "CortexVol"]
    assert m == [("Cortex", "CortexVol", "Total cortical gray matter volume", 509668.845191,
                  "mm^3")]
    assert p.freesurfer_version.startswith("cvs mris_anatomical_stats.c")
    assert p.header["subjectname"] == "Subj001"


def test_header_provenance():
    p = parse_stats_file(FS7 / "aseg.stats")
    assert p.freesurfer_version == "7.4.1"
    assert p.header["generating_program"] == "mri_segstats"
    assert p.header["SegVolFile"] == "mri/aseg.mgz"
    assert p.header["cmdline"].startswith("mri_segstats --seed 1234")
    assert (p.atlas, p.hemisphere, p.kind) == ("aseg", "", "segstats")
    q = parse_stats_file(FS7 / "brainvol.stats")
    assert (q.atlas, q.kind, q.values.size, len(q.measures)) == ("brainvol", "measures", 0, 16)


@pytest.mark.parametrize("name,atlas,hemi", [
    ("lh.aparc.a2009s.stats", "aparc.a2009s", "lh"), ("aseg.stats", "aseg", ""),
    ("wmparc.stats", "wmparc", ""), ("rh.BA_exvivo.thresh.stats", "BA_exvivo.thresh", "rh"),
    ("lh.w-g.pct.stats", "w-g.pct", "lh"), ("brainvol.stats", "brainvol", "")])
def test_atlas_and_hemi_from_name(name, atlas, hemi):
    assert atlas_and_hemi_from_name(name) == (atlas, hemi)


@pytest.mark.parametrize("name,expected", [
    ("sub-01_ses-02", ("sub-01", "ses-02")), ("bert_ses-1", ("bert", "ses-1")),
    ("sub-01", ("sub-01", "")), ("Subj001", ("Subj001", ""))])
def test_split_subject_session(name, expected):
    assert split_subject_session(name) == expected


def test_units_fallback_without_tablecol(tmp_path):
    f = tmp_path / "lh.aparc.stats"
    f.write_text("".join(ln for ln in (FS7 / "lh.aparc.stats").open() if "TableCol" not in ln))
    p = parse_stats_file(f, subject="x")
    u = dict(zip(p.numeric_columns, p.units))
    assert u["ThickAvg"] == "mm" and u["SurfArea"] == "mm^2" and u["GrayVol"] == "mm^3"
    assert u["MeanCurv"] == "mm^-1" and u["GausCurv"] == "mm^-2"


CURV_FILES = [f for f in ALL_FILES if ".curv." in f.name]


def _curv_numbers(path: Path):
    """Every number after the last ':' of every line (units such as mm^2 are not numbers)."""
    out = []
    for line in path.read_text().splitlines():
        if ":" not in line:
            continue
        for tok in re.split(r"[\s()%]+", line.rsplit(":", 1)[1]):
            try:
                out.append(float(tok))
            except ValueError:
                pass
    return out


def test_no_stats_file_skipped(parsed):
    assert parsed[1] == []
    assert len(CURV_FILES) == 2
    assert {Path(p.path).name for p in parsed[0]} == {f.name for f in ALL_FILES}


@pytest.mark.parametrize("path", CURV_FILES, ids=_ids(CURV_FILES))
def test_every_curv_number_in_long_table(path, long):
    mine = long[long["source_file"] == str(path)]
    want = _curv_numbers(path)
    assert len(want) > 300
    assert sorted(mine.value.tolist()) == sorted(want)
    hemi = path.name[:2]
    assert set(mine.atlas) == {"curv"} and set(mine.hemisphere) == {hemi}
    assert set(mine.participant_id) == {"sub-ds000005_sub-01"}
    assert not mine.duplicated(["structure", "measure"]).any()


def test_curv_known_values():
    p = parse_stats_file(FS7 / "lh.curv.stats")
    assert (p.kind, p.atlas, p.hemisphere, p.subject) == ("curvature", "curv", "lh",
                                                         "ds000005_sub-01")
    got = {(s, m): (v, u) for s, m, v, u in zip(p.structures, p.numeric_columns, p.values,
                                                 p.units)}
    assert got[("Raw (lh.curv)", "mean")] == (-0.02041, "unknown")
    assert got[("Raw (lh.curv)", "std")] == (0.1602, "unknown")
    assert got[("Raw (lh.curv)", "Min")] == (-1.44224, "unknown")
    assert got[("Raw (lh.curv)", "Min vertex")] == (23703, "index")
    assert got[("Raw (lh.sulc)", "Max")] == (16.32161, "unknown")
    assert got[("Raw (lh.sulc)", "Mean Positive Surface Integral across")] == (57608,
                                                                               "vertices")
    assert got[("Raw (lh.sulc)", "Mean Positive Surface Integral across %")] == (46.83, "%")
    assert got[("K (lh.smoothwm)", "mean")] == (0.39323, "mm^-2")
    assert got[("K (lh.smoothwm)", "std")] == (120.2050, "mm^-2")
    assert got[("H (lh.smoothwm)", "Mean Vertex Separation (Whole Surface)")] == (0.85109, "mm")
    assert got[("H (lh.smoothwm)", "Mean Vertex Separation (Whole Surface) std")] == (0.14240,
                                                                                      "mm")
    assert got[("H (lh.smoothwm)", "Total Surface Area")] == (76322.60156, "mm^2")
    assert got[("H (lh.smoothwm)", "Total Number of Vertices")] == (123004, "count")
    assert got[("H (lh.smoothwm)", "AreaNorm Negative Surface Integral across")] == (
        36050.832031, "mm^2")
    assert got[("curv", "Folding Index (FI)")] == (1382.26331, "unknown")
    assert got[("curv", "Intrinsic Curvature Index - natural  (ICIt)")] == (0.80567, "unknown")
    assert got[("curv", "Mean across 10 curvatures")] == (3.8775, "unknown")
    assert got[("curv", "Mean across 10 curvatures std")] == (5.7937, "unknown")
    assert p.header["K (lh.smoothwm) calculation type"] == "discrete"
    assert p.header["curv calculation type"] == "discrete"
    f = p.to_frame()
    assert len(f) == len(p.values) and set(f.atlas) == {"curv"}


def test_curv_layout_cache_reads_each_file(tmp_path):
    """Second and later files of one layout are read via the cached layout: their own numbers
    and units, never the cached ones."""
    from neurosmk.fsstats import parser as P

    P._CURV_LAYOUTS.clear()
    first = parse_stats_file(FS7 / "lh.curv.stats")
    assert len(P._CURV_LAYOUTS) == 1
    again = parse_stats_file(FS7 / "lh.curv.stats")
    assert again.structures == first.structures and again.units == first.units
    np.testing.assert_array_equal(again.values, first.values)
    text = (FS7 / "lh.curv.stats").read_text()
    f = tmp_path / "lh.curv.stats"
    f.write_text(text.replace("76322.60156 mm^2", "76322.70156 cm^2", 1)
                 .replace("-1.44224 at vertex 23703", "-1.55555 at vertex 42"))
    changed = parse_stats_file(f, subject="x")
    got = {(s, m): (v, u) for s, m, v, u in zip(changed.structures, changed.numeric_columns,
                                                 changed.values, changed.units)}
    assert got[("Raw (lh.curv)", "Total Surface Area")] == (76322.70156, "cm^2")
    assert got[("Raw (lh.sulc)", "Total Surface Area")] == (76322.60156, "mm^2")
    assert got[("Raw (lh.curv)", "Min")] == (-1.55555, "unknown")
    assert got[("Raw (lh.curv)", "Min vertex")] == (42, "index")
    P._CURV_LAYOUTS.clear()
    fresh = parse_stats_file(f, subject="x")
    assert fresh.units == changed.units and fresh.numeric_columns == changed.numeric_columns
    np.testing.assert_array_equal(fresh.values, changed.values)


def test_curv_bad_value_names_line(tmp_path):
    lines = _lines(FS7 / "lh.curv.stats")
    i = next(k for k, ln in enumerate(lines) if "Raw Max:" in ln)
    lines[i] = lines[i].replace("1.05909", "1.05x09")
    f = tmp_path / "lh.curv.stats"
    f.write_text("".join(lines))
    with pytest.raises(StatsParseError) as ei:
        parse_stats_file(f, subject="x")
    assert ei.value.line == i + 1 and "Max" in str(ei.value) and str(f) in str(ei.value)


def test_to_frame_matches_long_table(parsed):
    for p in parsed[0]:
        if p.values.size == 0:
            continue
        a = p.to_frame()  # the parser's own per-file frame (subject/session as parsed)
        b = long_table([p])
        assert a["subject"].map(lambda x: "sub-" + x).tolist() == b["participant_id"].tolist()
        assert set(a["session"]) == {""} and b["session_id"].isna().all()
        for c in [c for c in a.columns if c not in ("subject", "session")]:
            if c == "value":
                np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy())
            else:  # the parser's "" (none) is n/a in the table
                assert a[c].replace("", None).tolist() == b[c].astype(object).where(
                    b[c].notna(), None).tolist(), (p.path, c)
    t = parse_stats_file(FS7 / "lh.aparc.stats").table_frame()
    assert t.loc["bankssts", "ThickAvg"] == 2.268 and t.shape == (34, 9)


# --------------------------------------------------------------------------- wide tables
def _wide_index(t):
    return t.assign(session_id=t["session_id"].fillna("n/a")).set_index(
        ["participant_id", "session_id"])


def _key(r):
    return (r.participant_id, r.session_id if isinstance(r.session_id, str) else "n/a")


def test_wide_tables_agree_with_long(long, glob):
    wide = wide_tables(long, glob)
    assert "aparc_lh_thickness" in wide and "aseg_both_volume" in wide
    assert "aparc.a2009s_rh_area" in wide and "wmparc_both_volume" in wide
    t = _wide_index(wide["aparc_lh_thickness"])
    sub = long[(long.atlas == "aparc") & (long.hemisphere == "lh") & (long.measure == "ThickAvg")]
    assert t.shape[0] == 2
    for r in sub.itertuples():
        assert t.loc[_key(r), f"lh_{r.structure}_thickness"] == r.value
    n_struct = sub.groupby("participant_id", observed=True).size()
    structs = [c for c in t.columns if c != "lh_MeanThickness_thickness"]
    assert t[structs].filter(like="_thickness").notna().sum(axis=1).tolist() == n_struct.tolist()
    e = glob[(glob.atlas == "aparc") & (glob.hemisphere == "lh") & (glob.measure == "eTIV")]
    assert len(e) == 2
    for r in e.itertuples():
        assert t.loc[_key(r), "eTIV"] == r.value
    mt = glob[(glob.atlas == "aparc") & (glob.hemisphere == "lh") & (glob.measure == "MeanThickness")]
    for r in mt.itertuples():
        assert t.loc[_key(r), "lh_MeanThickness_thickness"] == r.value
    area = _wide_index(wide["aparc_lh_area"])
    wsa = glob[(glob.atlas == "aparc") & (glob.hemisphere == "lh") & (glob.measure == "WhiteSurfArea")]
    for r in wsa.itertuples():
        assert area.loc[_key(r), "lh_WhiteSurfArea_area"] == r.value
    a = _wide_index(wide["aseg_both_volume"])
    seg = long[(long.atlas == "aseg") & (long.measure == "Volume_mm3")]
    for r in seg.itertuples():
        assert a.loc[_key(r), r.structure] == r.value
    assert a.loc[("sub-ds000005_sub-01", "n/a"), "BrainSegVolNotVent"] == 1063465.0
    assert a.loc[("sub-ds000005_sub-01", "n/a"), "EstimatedTotalIntraCranialVol"] == 1269108.687970
    assert "Index" not in " ".join(wide) and "numvert" not in " ".join(wide)  # no such --meas


def _copy_subject(dst: Path, drop=()):
    """Copy the 7.4.1 subject, removing the table rows of the structures in ``drop``
    (adjusting '# NRows')."""
    (dst / "stats").mkdir(parents=True)
    for f in FS7.glob("*.stats"):
        lines = f.read_text().splitlines(keepends=True)
        keep = [ln for ln in lines
                if ln.startswith("#") or not ln.strip() or not (set(ln.split()) & set(drop))]
        n_dropped = len(lines) - len(keep)
        if n_dropped:
            keep = [(f"# NRows {int(ln.split()[2]) - n_dropped} \n" if ln.startswith("# NRows")
                     else ln) for ln in keep]
        (dst / "stats" / f.name).write_text("".join(keep))


def test_missing_structure_is_nan_not_zero(tmp_path):
    _copy_subject(tmp_path / "sub-02_ses-01", drop=("bankssts", "Left-Hippocampus"))
    parsed = parse_subject_dir(FIX / "ds000005_sub-01")[0] + \
        parse_subject_dir(tmp_path / "sub-02_ses-01")[0]
    lg, gl = long_table(parsed), global_table(parsed)
    assert set(zip(lg.participant_id, lg.session_id.astype(object).fillna("n/a"))) == {
        ("sub-ds000005_sub-01", "n/a"), ("sub-02", "ses-01")}
    wide = wide_tables(lg, gl)
    t = _wide_index(wide["aparc_lh_thickness"])
    assert np.isnan(t.loc[("sub-02", "ses-01"), "lh_bankssts_thickness"])
    assert t.loc[("sub-ds000005_sub-01", "n/a"), "lh_bankssts_thickness"] == 2.268
    assert t.loc[("sub-02", "ses-01"), "lh_cuneus_thickness"] == 1.779
    a = _wide_index(wide["aseg_both_volume"])
    assert np.isnan(a.loc[("sub-02", "ses-01"), "Left-Hippocampus"])
    assert a.loc[("sub-ds000005_sub-01", "n/a"), "Left-Hippocampus"] > 0


# --------------------------------------------------------------------------- bad files
def _lines(path):
    return path.read_text().splitlines(keepends=True)


def _first_data_line(lines):
    return next(i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#"))


def _truncated(tmp):
    lines = _lines(FS7 / "lh.aparc.stats")
    i = _first_data_line(lines) + 5
    toks = lines[i].split()
    tmp.write_text("".join(lines[:i]) + "  ".join(toks[:4]))   # cut mid-row
    return i + 1, "columns"


def _truncated_at_row(tmp):
    lines = _lines(FS7 / "aseg.stats")
    i = _first_data_line(lines) + 10
    tmp.write_text("".join(lines[:i]))                          # cut between rows
    return i, "NRows"


def _truncated_header(tmp):
    lines = _lines(FS7 / "lh.aparc.stats")
    i = next(k for k, ln in enumerate(lines) if ln.startswith("# TableCol"))
    tmp.write_text("".join(lines[:i]))
    return i, "ColHeaders"


def _no_colheaders(tmp):
    lines = _lines(FS7 / "lh.aparc.stats")
    tmp.write_text("".join(ln for ln in lines if not ln.startswith("# ColHeaders")))
    return _first_data_line(lines), "ColHeaders"            # one line fewer before it


def _wrong_columns(tmp):
    lines = _lines(FS6 / "wmparc.stats")
    i = _first_data_line(lines) + 3
    toks = lines[i].split()
    lines[i] = " ".join(toks[:-1]) + "\n"
    tmp.write_text("".join(lines))
    return i + 1, "columns"


def _non_numeric(tmp):
    lines = _lines(FS7 / "lh.aparc.stats")
    i = _first_data_line(lines) + 7
    toks = lines[i].split()
    toks[4] = "2.5x"
    lines[i] = " ".join(toks) + "\n"
    tmp.write_text("".join(lines))
    return i + 1, "ThickAvg"


def _not_stats(tmp):
    tmp.write_text("subject,age\nsub-01,34\n")
    return 1, "not a FreeSurfer stats file"


def _binary(tmp):
    tmp.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return 1, "not a FreeSurfer stats file"


def _bad_measure(tmp):
    lines = _lines(FS7 / "aseg.stats")
    i = next(k for k, ln in enumerate(lines) if ", eTIV," in ln)
    lines[i] = lines[i].replace("1269108.687970", "lots")
    tmp.write_text("".join(lines))
    return i + 1, "Measure"


BAD = {"truncated": _truncated, "truncated_at_row": _truncated_at_row,
       "truncated_header": _truncated_header, "no_colheaders": _no_colheaders,
       "wrong_columns": _wrong_columns, "non_numeric": _non_numeric, "not_stats": _not_stats,
       "binary": _binary, "bad_measure": _bad_measure}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_raises_with_file_and_line(kind, tmp_path):
    f = tmp_path / "lh.aparc.stats"
    line, word = BAD[kind](f)
    with pytest.raises(StatsParseError) as ei:
        parse_stats_file(f, subject="x")
    msg = str(ei.value)
    assert str(f) in msg and f"line {line}:" in msg and word in msg, msg
    assert ei.value.line == line
    assert isinstance(ei.value, InputError)


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "neurosmk.fsstats.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture
def subjects_dir(tmp_path):
    sd = tmp_path / "subjects"
    shutil.copytree(FIX / "Subj001", sd / "Subj001")
    shutil.copytree(FIX / "ds000005_sub-01", sd / "sub-01_ses-A")
    return sd


def test_cli_bad_file_fails_and_writes_nothing(subjects_dir, tmp_path):
    bad = subjects_dir / "Subj001" / "stats" / "lh.aparc.stats"
    line, _ = _non_numeric(bad)
    out = tmp_path / "out"
    r = _run_cli(subjects_dir, "--output-dir", out)
    assert r.returncode == 1
    assert str(bad) in r.stderr and f"line {line}" in r.stderr
    assert not out.exists() or not any(out.rglob("*.tsv"))


def test_cli_skip_bad_writes_manifest(subjects_dir, tmp_path):
    bad = subjects_dir / "Subj001" / "stats" / "wmparc.stats"
    _wrong_columns(bad)
    out = tmp_path / "out"
    r = _run_cli(subjects_dir, "--output-dir", out, "--skip-bad", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "skipped 1 bad file" in r.stderr
    man = pd.read_csv(out / "skipped_files.tsv", sep="\t")
    assert set(man.columns) == {"file", "reason", "kind"}
    bad_rows = man[man.kind == "parse-error"]
    assert bad_rows.file.tolist() == [str(bad)] and "line" in bad_rows.reason.iloc[0]
    assert len(man) == 1  # curv.stats are parsed, not skipped
    lg = pd.read_parquet(out / "freesurfer_stats_long.parquet")
    assert str(bad) not in set(lg.source_file)
    assert str(subjects_dir / "Subj001" / "stats" / "lh.aparc.stats") in set(lg.source_file)


@pytest.mark.slow
def test_cli_end_to_end(subjects_dir, tmp_path):
    out = tmp_path / "out"
    r = _run_cli(subjects_dir, "--output-dir", out)
    assert r.returncode == 0, r.stderr
    lg = pd.read_parquet(out / "freesurfer_stats_long.parquet")
    tsv = pd.read_csv(out / "freesurfer_stats_long.tsv", sep="\t", keep_default_na=False,
                      na_values={"value": ["n/a"]})
    assert len(tsv) == len(lg) and list(tsv.columns) == [
        "participant_id", "session_id", "atlas", "hemisphere", "structure", "measure", "value",
        "unit", "label", "hemi", "region", "freesurfer_version", "source_file"]
    np.testing.assert_array_equal(tsv.value.to_numpy(), lg.value.to_numpy())
    assert (tsv.structure == lg.structure.astype(str)).all()
    assert set(zip(lg.participant_id, lg.session_id.astype(object).fillna("n/a"))) == {
        ("sub-Subj001", "n/a"), ("sub-01", "ses-A")}
    assert set(zip(tsv.participant_id, tsv.session_id)) == {("sub-Subj001", "n/a"),
                                                            ("sub-01", "ses-A")}
    expected = sum(len(_read_table(f)[2]) * (len(_read_table(f)[0]) - 1)
                   for f in TABLE_FILES) + sum(len(_curv_numbers(f)) for f in CURV_FILES)
    assert len(lg) == expected
    gl = pd.read_csv(out / "freesurfer_global_measures.tsv", sep="\t")
    assert len(gl) == sum(len(_read_measures(f)) for f in MEASURE_FILES)
    wide = out / "wide" / "aparc_lh_thickness.tsv"
    w = pd.read_csv(wide, sep="\t", keep_default_na=False, na_values=["n/a"])
    assert w.participant_id.tolist() == ["sub-Subj001", "sub-01"]
    assert w.session_id.isna().tolist() == [True, False] and w.session_id[1] == "ses-A"
    assert w.loc[w.participant_id == "sub-Subj001", "lh_bankssts_thickness"].item() == 2.764
    for name in ("freesurfer_stats_long", "freesurfer_global_measures", "wide/aparc_lh_thickness"):
        cols = (out / f"{name}.tsv").read_text().split("\n", 1)[0].split("\t")
        doc = json.loads((out / f"{name}.json").read_text())
        assert all("Description" in doc[c] for c in cols), name  # a data dictionary
    # only some subjects
    out2 = tmp_path / "out2"
    r = _run_cli(subjects_dir, "--output-dir", out2, "--subjects", "Subj001")
    assert r.returncode == 0, r.stderr
    assert set(pd.read_parquet(out2 / "freesurfer_stats_long.parquet").participant_id) == {
        "sub-Subj001"}


def test_cli_subject_dir_argument_and_no_subjects(tmp_path):
    assert find_subject_dirs([FIX / "Subj001"]) == [FIX / "Subj001"]
    assert find_subject_dirs([FIX]) == [FIX / "Subj001", FIX / "ds000005_sub-01"]
    r = _run_cli(tmp_path, "--output-dir", tmp_path / "o")
    assert r.returncode == 1 and "no subject directories" in r.stderr


def test_parallel_chunks_equal_serial(subjects_dir):
    dirs = find_subject_dirs([subjects_dir])
    a = aggregate(dirs, jobs=1)
    b = aggregate(dirs, jobs=2, chunk=1)
    pd.testing.assert_frame_equal(a[0].astype(str), b[0].astype(str))
    pd.testing.assert_frame_equal(a[1].astype(str), b[1].astype(str))


# --------------------------------------------------------------------------- QC
def test_outlier_flags(long):
    base = long[(long.source_file == str(FS7 / "lh.aparc.stats"))]
    frames = []
    for i, scale in enumerate([1.0, 1.01, 0.99, 1.02, 0.98, 1.5]):
        f = base.assign(participant_id=f"sub-s{i}", value=base.value * scale)
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    o = qc.outlier_flags(df)
    thick = o[(o.structure == "cuneus") & (o.measure == "ThickAvg")].set_index("participant_id")
    assert thick.loc["sub-s5", "outlier"] is True and thick.loc["sub-s1", "outlier"] is False
    med = np.median(base[(base.structure == "cuneus") & (base.measure == "ThickAvg")].value.item()
                    * np.array([1.0, 1.01, 0.99, 1.02, 0.98, 1.5]))
    assert thick.loc["sub-s0", "median"] == pytest.approx(med)
    # fewer than 3 subjects -> NaN z: the flag is missing (n/a), not False
    o2 = qc.outlier_flags(pd.concat(frames[:2], ignore_index=True))
    assert o2.robust_z.isna().all() and o2.outlier.isna().all()


def test_group_plots(long, glob, tmp_path):
    paths = qc.group_plots(long, glob, tmp_path / "qc")
    names = sorted(p.name for p in paths)
    assert names == ["aparc_lh_thickness.png", "aparc_rh_thickness.png", "aseg_volume_etiv.png"]
    for p in paths:
        assert p.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- Snakemake scripts
_DRIVER = """
import json, runpy, sys
from types import SimpleNamespace
from snakemake.iocontainers import Namedlist as NL
a = json.loads(sys.argv[1])
sm = SimpleNamespace(input=NL(fromdict=a["input"]), output=NL(fromdict=a["output"]),
                     params=NL(fromdict=a["params"]), log=NL(fromdict={"log": a["log"]}))
runpy.run_path(a["script"], init_globals={"snakemake": sm}, run_name="__main__")
"""


def _run_script(name, inp, out, params, log):
    """Run a Snakemake ``script:`` file in a subprocess with a real snakemake Namedlist-based
    ``snakemake`` object (as Snakemake does)."""
    pytest.importorskip("snakemake.iocontainers")
    import json

    arg = json.dumps({"input": inp, "output": out, "params": params, "log": str(log),
                      "script": str(ROOT / "scripts" / name)})
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, "-c", _DRIVER, arg], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr + Path(log).read_text()
    return Path(log).read_text()


@pytest.mark.slow
def test_snakemake_scripts(subjects_dir, tmp_path):
    longs, globs = [], []
    for d, subject, session in ((subjects_dir / "Subj001", "Subj001", ""),
                                (subjects_dir / "sub-01_ses-A", "sub-01", "ses-A")):
        o = tmp_path / "per" / d.name
        out = {"long": str(o / "long.parquet"), "global_": str(o / "global.parquet"),
               "skipped": str(o / "skipped.tsv")}
        log = _run_script("fs_parse_subject.py", {"stats_dir": str(d / "stats")}, out,
                          {"subject": subject, "session": session}, o / "parse.log")
        assert "stats files parsed" in log
        longs.append(out["long"])
        globs.append(out["global_"])
    g = tmp_path / "group"
    out = {"long_tsv": str(g / "freesurfer_stats_long.tsv"),
           "long_parquet": str(g / "freesurfer_stats_long.parquet"),
           "global_tsv": str(g / "freesurfer_global_measures.tsv"),
           "global_parquet": str(g / "freesurfer_global_measures.parquet"),
           "wide_dir": str(g / "wide"), "qc_dir": str(g / "qc"),
           "outliers": str(g / "outliers.tsv")}
    _run_script("fs_aggregate_group.py", {"long": longs, "global_": globs}, out, {},
                g / "aggregate.log")
    lg = pd.read_parquet(out["long_parquet"])
    assert set(zip(lg.participant_id, lg.session_id.astype(object).fillna("n/a"))) == {
        ("sub-Subj001", "n/a"), ("sub-01", "ses-A")}
    direct = long_table(parse_subject_dir(subjects_dir / "Subj001")[0] +
                        parse_subject_dir(subjects_dir / "sub-01_ses-A")[0])
    np.testing.assert_array_equal(lg.value.to_numpy(), direct.value.to_numpy())
    assert (Path(out["wide_dir"]) / "aseg_both_volume.tsv").exists()
    assert (Path(out["qc_dir"]) / "aparc_lh_thickness.png").exists()
    o = pd.read_csv(out["outliers"], sep="\t", keep_default_na=False, na_values=["n/a"])
    assert len(o) > 0 and o.robust_z.isna().all() and o.outlier.isna().all()  # 2 subjects: n/a
    # the same writer as neurosmk-stats: byte-identical tables
    cli = tmp_path / "cli"
    r = _run_cli(subjects_dir, "--output-dir", cli)
    assert r.returncode == 0, r.stderr
    # the CLI names subjects from their folders: the same names as the params above
    for rel in ["freesurfer_stats_long.tsv", "freesurfer_global_measures.tsv"] + [
            f"wide/{p.name}" for p in (cli / "wide").glob("*.tsv")]:
        assert (g / rel).read_bytes() == (cli / rel).read_bytes(), rel
    assert len(list((cli / "wide").glob("*.tsv"))) == len(list((g / "wide").glob("*.tsv"))) > 100
    man = pd.read_csv(tmp_path / "per" / "sub-01_ses-A" / "skipped.tsv", sep="\t")
    assert len(man) == 0 and list(man.columns) == ["file", "reason", "kind"]
    assert "curv" in set(lg.atlas)


# --------------------------------------------------------------------------- combined table
def test_group_long_combines_every_table_exactly(subjects_dir, tmp_path):
    """scripts/group_long.py (rule group_long) joins the tissue-volume, DTI ROI and FreeSurfer
    tables into one long table; every value and label carries over exactly."""
    from neurosmk.tables import COMBINED_COLUMNS

    g = tmp_path / "group"
    g.mkdir()
    tissue = pd.DataFrame({"participant_id": ["sub-01"] * 4, "session_id": [None] * 4,
                           "atlas": ["tissue"] * 4, "hemisphere": [None] * 4,
                           "structure": ["CSF", "GM", "WM", "brainmask"],
                           "measure": ["volume"] * 4,
                           "value": [212.34567890123456, 612.1, 498.76543210987654, 1e-17],
                           "unit": ["mL"] * 4})
    dti = pd.DataFrame({"participant_id": ["sub-02"] * 3, "session_id": [None] * 3,
                        "atlas": ["dti_roi"] * 3, "hemisphere": [None] * 3,
                        "structure": ["brain", "wm_fa0.2", "wm_fa0.2"],
                        "measure": ["MD_mean", "FA_mean", "FA_std"],
                        "value": [0.000712345678901234, np.nan, 0.123456789],
                        "unit": ["mm^2/s", "unitless", "unitless"]})
    tissue.to_csv(g / "anat_tissue_volumes.tsv", sep="\t", index=False, na_rep="n/a")
    dti.to_csv(g / "dwi_dti_roistats.tsv", sep="\t", index=False, na_rep="n/a")
    lg, gl, _ = aggregate(find_subject_dirs([subjects_dir]))
    from neurosmk.fsstats.tables import write_table_parquet

    write_table_parquet(g / "fs_long.parquet", lg)
    write_table_parquet(g / "fs_global.parquet", gl)
    out = {"tsv": str(g / "neurosmk_long.tsv"), "parquet": str(g / "neurosmk_long.parquet")}
    inp = {"tissue": str(g / "anat_tissue_volumes.tsv"), "dti": str(g / "dwi_dti_roistats.tsv"),
           "fs_long": str(g / "fs_long.parquet"), "fs_global": str(g / "fs_global.parquet")}
    log = _run_script("group_long.py", inp, out, {}, g / "group_long.log")
    assert "values from 4 tables" in log

    pq_ = pd.read_parquet(out["parquet"])
    tsv = pd.read_csv(out["tsv"], sep="\t", keep_default_na=False, na_values={"value": ["n/a"]},
                      float_precision="round_trip",
                      dtype={c: str for c in COMBINED_COLUMNS if c != "value"})
    doc = json.loads((g / "neurosmk_long.json").read_text())
    assert list(doc) == sorted(COMBINED_COLUMNS) and all("Description" in d for d in doc.values())
    assert list(pq_.columns) == COMBINED_COLUMNS and list(tsv.columns) == COMBINED_COLUMNS
    assert len(pq_) == len(tsv) == 4 + 3 + len(lg) + len(gl)
    np.testing.assert_array_equal(tsv.value.to_numpy(), pq_.value.to_numpy())  # NaN == NaN
    for c in COMBINED_COLUMNS:
        if c != "value":  # missing (n/a in the TSV) is null in the Parquet
            assert tsv[c].tolist() == pq_[c].astype(object).fillna("n/a").tolist(), c
    for source, want, path in (("tissue_volumes", tissue, inp["tissue"]),
                               ("dti_roistats", dti, inp["dti"]),
                               ("freesurfer", lg, None), ("freesurfer_global", gl, None)):
        got = tsv[tsv.source == source].reset_index(drop=True)
        assert len(got) == len(want), source
        np.testing.assert_array_equal(got.value.to_numpy(), want.value.to_numpy())
        for c in ("participant_id", "session_id", "atlas", "hemisphere", "structure", "measure",
                  "unit"):
            assert got[c].tolist() == want[c].astype(object).fillna("n/a").tolist(), (source, c)
        if path:
            # own tables: relative to the output folder (the run does not depend on where it ran)
            assert set(got.source_file) == {os.path.relpath(path, g.parent)}
            assert set(got.freesurfer_version) == {"n/a"}
        else:
            assert got.source_file.tolist() == want.source_file.astype(str).tolist()
            assert got.freesurfer_version.tolist() == want.freesurfer_version.astype(object).fillna(
                "n/a").tolist()
    assert tsv.loc[tsv.structure == "wm_fa0.2", "value"].isna().sum() == 1
    assert set(tsv[tsv.source == "tissue_volumes"].participant_id) == {"sub-01"}
    assert set(tsv[tsv.source == "tissue_volumes"].session_id) == {"n/a"}  # never empty


def test_group_long_bad_table(tmp_path):
    from neurosmk.tables import combine_long

    bad = tmp_path / "t.tsv"
    bad.write_text("participant_id\tstructure\tmeasure\tvalue\nsub-01\tGM\tvolume\t3\n")
    with pytest.raises(InputError, match=r"t\.tsv.*missing columns \['unit'\]"):
        combine_long([("tissue_volumes", bad)])
    bad.write_text("participant_id\tstructure\tmeasure\tvalue\tunit\nsub-01\tGM\tvolume\tlots\tmL\n")
    with pytest.raises(InputError, match=r"t\.tsv.*'value' is not numeric"):
        combine_long([("tissue_volumes", bad)])


def test_blank_and_comment_lines_among_rows(tmp_path):
    """Rows split by blank lines or a trailing '#' line parse like the original file."""
    lines = _lines(FS7 / "aseg.stats")
    i = _first_data_line(lines) + 4
    f = tmp_path / "aseg.stats"
    f.write_text("".join(lines[:i] + ["\n", "   \n"] + lines[i:] + ["# a trailing comment\n"]))
    a, b = parse_stats_file(FS7 / "aseg.stats"), parse_stats_file(f)
    assert a.structures == b.structures and a.measures == b.measures
    np.testing.assert_array_equal(a.values, b.values)
    lines2 = list(lines)
    lines2[i + 2] = lines2[i + 2].rstrip("\n") + " 7\n"   # one row too long, after a blank line
    f.write_text("".join(lines2[:i] + ["\n"] + lines2[i:]))
    with pytest.raises(StatsParseError) as ei:
        parse_stats_file(f)
    assert ei.value.line == i + 4 and "columns" in str(ei.value)


def test_same_subject_twice_is_an_error():
    p = parse_subject_dir(FIX / "Subj001")[0]
    with pytest.raises(ValueError, match=r"participant 'sub-Subj001' session 'n/a', atlas 'aparc', "
                                         r"structure 'bankssts' \(same subject given twice\?\)"):
        wide_tables(long_table(p + p), global_table(p + p))
