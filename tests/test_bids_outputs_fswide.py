"""The wide FreeSurfer tables have exactly the columns (names and order) that FreeSurfer 7.4.1's
``aparcstats2table`` and ``asegstats2table`` write for the fixture subjects, for every atlas and
every ``--meas`` those scripts accept.

The expected headers come from a small, independent re-statement of those scripts' rules, applied
to the raw stats files line by line (not through neurosmk's parser).  Sources (freesurfer/
freesurfer, the 7.4 tree):

- ``scripts/aparcstats2table``: ``--meas`` choices (``area volume thickness thicknessstd
  thickness.T1 meancurv gauscurv foldind curvind``); ``sanitize_table`` -> ``make_table2d`` with
  the union of the subjects' parcellation lists in first-seen order (``fsutils.unique_union``),
  unless --common-parcs; ``write_table``: row1col1 ``<hemi>.<parc>.<meas>``,
  ``decorate_col_titles(hemi + '_', '_' + meas)``.
- ``python/fsbindings/legacy.py``: ``AparcStatsParser.parse`` (``measure_column_map`` =
  {area: 2, volume: 3, thickness: 4, thicknessstd: 5, meancurv: 6, gauscurv: 7, foldind: 8,
  curvind: 9}; column 0 is the name; then, scanning the file's lines in order, the lines starting
  ``# Measure EstimatedTotalIntraCranialVol, eTIV`` -> ``eTIV``, ``# Measure BrainSegNotVent,
  BrainSegVolNotVent`` -> ``BrainSegVolNotVent``, with area ``# Measure Cortex, WhiteSurfArea,``
  -> ``WhiteSurfArea``, with thickness ``# Measure Cortex, MeanThickness,`` -> ``MeanThickness``);
  ``TableWriter.write``: ``eTIV`` and ``BrainSegVolNotVent`` are written without the hemi/meas
  decoration.
- ``scripts/asegstats2table``: ``--meas`` choices (``volume Area_mm2 nvoxels nvertices mean std
  snr max``); the union of segmentation names (--all-segs; the default needs equal lists);
  row1col1 ``Measure:<meas>``, names undecorated.  ``AsegStatsParser.parse``:
  ``measure_column_map`` = {nvoxels: 2, nvertices: 2, volume: 3, Area_mm2: 3, mean: 5, std: 6,
  max: 8, snr: 10}; name in column 4; with ``--meas volume`` the ``beg_struct_tuple`` lines are
  appended in file order (BEG_STRUCT below, copied from that tuple).

neurosmk's only intended differences: the first column is ``participant_id`` + ``session_id``
instead of row1col1; --meas whose column a file does not have (e.g. ``snr`` of aseg.stats, which
FreeSurfer would fail on) get no table; ``thickness.T1`` (an alias of thickness) gets none;
``numvert`` is no --meas of FreeSurfer and gets none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neurosmk.fsstats.cli import aggregate, find_subject_dirs
from neurosmk.fsstats.tables import wide_tables

FIX = Path(__file__).resolve().parents[1] / "demo" / "freesurfer"
SUBJECTS = ["Subj001", "ds000005_sub-01"]  # sorted, as neurosmk-stats orders them

APARC_MEAS_COL = {"area": 2, "volume": 3, "thickness": 4, "thicknessstd": 5, "meancurv": 6,
                  "gauscurv": 7, "foldind": 8, "curvind": 9}
ASEG_MEAS_COL = {"nvoxels": 2, "nvertices": 2, "volume": 3, "Area_mm2": 3, "mean": 5, "std": 6,
                 "max": 8, "snr": 10}
BEG_STRUCT = [  # legacy.py AsegStatsParser.parse, beg_struct_tuple
    ("# Measure lhCortex, lhCortexVol,", "lhCortexVol"),
    ("# Measure rhCortex, rhCortexVol,", "rhCortexVol"),
    ("# Measure Cortex, CortexVol,", "CortexVol"),
    ("# Measure lhCorticalWhiteMatter, lhCorticalWhiteMatterVol,", "lhCorticalWhiteMatterVol"),
    ("# Measure rhCorticalWhiteMatter, rhCorticalWhiteMatterVol,", "rhCorticalWhiteMatterVol"),
    ("# Measure CorticalWhiteMatter, CorticalWhiteMatterVol,", "CorticalWhiteMatterVol"),
    ("# Measure lhCerebralWhiteMatter, lhCerebralWhiteMatterVol,", "lhCerebralWhiteMatterVol"),
    ("# Measure rhCerebralWhiteMatter, rhCerebralWhiteMatterVol,", "rhCerebralWhiteMatterVol"),
    ("# Measure CerebralWhiteMatter, CerebralWhiteMatterVol,", "CerebralWhiteMatterVol"),
    ("# Measure SubCortGray, SubCortGrayVol,", "SubCortGrayVol"),
    ("# Measure TotalGray, TotalGrayVol,", "TotalGrayVol"),
    ("# Measure SuperTentorial, SuperTentorialVol,", "SuperTentorialVol"),
    ("# Measure SupraTentorial, SupraTentorialVol,", "SupraTentorialVol"),
    ("# Measure SupraTentorialNotVent, SupraTentorialVolNotVent,", "SupraTentorialVolNotVent"),
    ("# Measure SupraTentorialNotVentVox, SupraTentorialVolNotVentVox,",
     "SupraTentorialVolNotVentVox"),
    ("# Measure IntraCranialVol, ICV,", "IntraCranialVol"),
    ("# Measure EstimatedTotalIntraCranialVol, eTIV,", "EstimatedTotalIntraCranialVol"),
    ("# Measure SegmentedTotalIntraCranialVol, sTIV,", "SegmentedTotalIntracranialVol"),
    ("# Measure Mask, MaskVol,", "MaskVol"),
    ("# Measure BrainVol-to-eTIV, BrainVol-to-eTIV,", "BrainVol-to-eTIV"),
    ("# Measure BrainSegVol-to-eTIV, BrainSegVol-to-eTIV,", "BrainSegVol-to-eTIV"),
    ("# Measure MaskVol-to-eTIV, MaskVol-to-eTIV,", "MaskVol-to-eTIV"),
    ("# Measure lhSurfaceHoles, lhSurfaceHoles,", "lhSurfaceHoles"),
    ("# Measure rhSurfaceHoles, rhSurfaceHoles,", "rhSurfaceHoles"),
    ("# Measure SurfaceHoles, SurfaceHoles,", "SurfaceHoles"),
    ("# Measure BrainSeg, BrainSegVol,", "BrainSegVol"),
    ("# Measure BrainSegNotVent, BrainSegVolNotVent,", "BrainSegVolNotVent"),
    ("# Measure BrainSegNotVentSurf, BrainSegVolNotVentSurf,", "BrainSegVolNotVentSurf"),
]


def _data_lines(path: Path):
    """Lines the parsers treat as rows: ``line.rfind('#') == -1`` (and not blank)."""
    return [line.split() for line in path.read_text().splitlines()
            if "#" not in line and line.strip()]


def _unique_union(lists):
    seen, out = set(), []
    for lst in lists:
        for x in lst:
            if x not in seen:
                seen.add(x)
                out.append(x)
    return out


def aparc_keys(path: Path, meas: str) -> list[str]:
    keys = [t[0] for t in _data_lines(path)]
    extra = [("# Measure EstimatedTotalIntraCranialVol, eTIV", "eTIV"),
             ("# Measure BrainSegNotVent, BrainSegVolNotVent", "BrainSegVolNotVent")]
    if meas == "area":
        extra.append(("# Measure Cortex, WhiteSurfArea,", "WhiteSurfArea"))
    if meas == "thickness":
        extra.append(("# Measure Cortex, MeanThickness,", "MeanThickness"))
    for line in path.read_text().splitlines():
        for start, name in extra:
            if line.startswith(start) and name not in keys:
                keys.append(name)
    return keys


def aparc_header(files: list[Path], hemi: str, meas: str) -> list[str]:
    cols = _unique_union(aparc_keys(f, meas) for f in files)
    return [c if c in ("eTIV", "BrainSegVolNotVent") else f"{hemi}_{c}_{meas}" for c in cols]


def aseg_keys(path: Path, meas: str) -> list[str]:
    keys = [t[4] for t in _data_lines(path)]
    if meas == "volume":
        for line in path.read_text().splitlines():
            for start, name in BEG_STRUCT:
                if line.startswith(start):
                    keys.append(name)
    return keys


def aseg_header(files: list[Path], meas: str) -> list[str]:
    return _unique_union(aseg_keys(f, meas) for f in files)


def _ncols(path: Path) -> int:
    return len(next(ln for ln in path.read_text().splitlines() if ln.startswith("# ColHeaders"))
               .split()) - 2


def _expected() -> dict[str, list[str]]:
    """Table name -> header, for every stats file kind and --meas of the fixture subjects."""
    out = {}
    names = sorted({p.name for s in SUBJECTS for p in (FIX / s / "stats").glob("*.stats")})
    for name in names:
        files = [FIX / s / "stats" / name for s in SUBJECTS if (FIX / s / "stats" / name).exists()]
        text = files[0].read_text()
        if "# ColHeaders" not in text:  # brainvol.stats, ?h.curv.stats: no table
            continue
        hemi = name[:2] if name[:3] in ("lh.", "rh.") else None
        atlas = name[3:-6] if hemi else name[:-6]
        segstats = "SegId" in next(ln for ln in text.splitlines() if ln.startswith("# ColHeaders"))
        if segstats:  # asegstats2table --stats <name>
            for meas, col in ASEG_MEAS_COL.items():
                if col < _ncols(files[0]) and not (meas == "nvertices" and "NVoxels" in text
                                                   or meas == "nvoxels" and "NVertices" in text
                                                   or meas == "Area_mm2" and "Volume_mm3" in text
                                                   or meas == "volume" and "Area_mm2" in text):
                    out[f"{atlas}_{hemi or 'both'}_{meas}"] = aseg_header(files, meas)
        else:  # aparcstats2table --hemi <hemi> --parc <atlas>
            for meas in APARC_MEAS_COL:
                out[f"{atlas}_{hemi}_{meas}"] = aparc_header(files, hemi, meas)
    return out


@pytest.fixture(scope="module")
def wide():
    long, glob, _ = aggregate(find_subject_dirs([FIX]))
    return wide_tables(long, glob)


def test_every_freesurfer_table_with_freesurfer_columns(wide):
    want = _expected()
    assert len(want) > 100
    assert sorted(wide) == sorted(want)
    for name, header in want.items():
        got = list(wide[name].columns)
        assert got[:2] == ["participant_id", "session_id"], name
        assert got[2:] == header, name


def test_spec_spot_checks(wide):
    """Known FreeSurfer 7.4.1 columns, from its documentation and typical tables."""
    t = list(wide["aparc_lh_thickness"].columns)
    assert t[-3:] == ["lh_MeanThickness_thickness", "BrainSegVolNotVent", "eTIV"]
    a = list(wide["aparc_rh_area"].columns)
    assert a[-3:] == ["rh_WhiteSurfArea_area", "BrainSegVolNotVent", "eTIV"]
    assert "rh_WhiteSurfArea_area" not in wide["aparc.pial_rh_area"].columns  # PialSurfArea file
    v = list(wide["aseg_both_volume"].columns)
    assert v[2] == "Left-Lateral-Ventricle" and v[-1] == "EstimatedTotalIntraCranialVol"
    assert "BrainSegVolNotVent" in v and "MaskVol-to-eTIV" in v and "Index" not in v
    assert "EstimatedTotalIntraCranialVol" not in wide["aseg_both_mean"].columns  # volume only
