"""Tidy (long) tables shared by all steps, their keys and their data dictionaries, and the one
combined group table that joins them with the FreeSurfer tables.

Every table neurosmk writes keys on ``participant_id`` (``sub-<label>``) and ``session_id``
(``ses-<label>``, ``n/a`` in a dataset without sessions), writes ``n/a`` for a missing value,
and has a BIDS-style JSON data dictionary beside it (per column: ``Description``, and
``Units``/``Levels`` where they apply): load with ``pd.read_csv(f, sep="\\t",
na_values="n/a", keep_default_na=False)`` or ``read.delim(f, na.strings="n/a")`` in R.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .io import InputError, split_ext, write_json, write_tsv

ID_COLUMNS = ["participant_id", "session_id"]
LONG_COLUMNS = ID_COLUMNS + ["atlas", "hemisphere", "structure", "measure", "value", "unit"]
# the combined table: LONG_COLUMNS + where each number comes from
COMBINED_COLUMNS = LONG_COLUMNS + ["source", "freesurfer_version", "source_file"]
_REQUIRED = {"participant_id", "structure", "measure", "value", "unit"}
NA = "n/a"


def participant_id(label: str) -> str:
    """``01`` -> ``sub-01``; a value that already has the prefix is kept."""
    label = str(label)
    return label if label.startswith("sub-") else f"sub-{label}"


def session_id(label: str | None):
    """``A`` -> ``ses-A``; no session (None or "") -> None (written ``n/a``)."""
    if label is None or label == "" or (isinstance(label, float) and np.isnan(label)):
        return None
    label = str(label)
    return label if label.startswith("ses-") else f"ses-{label}"


def visit_ids(subject: str, session: str | None) -> dict:
    """The key columns of one visit's rows: ``{"participant_id": "sub-01", "session_id": ...}``."""
    return {"participant_id": participant_id(subject), "session_id": session_id(session)}


# ---- data dictionaries -------------------------------------------------------------------------
HEMISPHERE_LEVELS = {"lh": "left hemisphere", "rh": "right hemisphere",
                     "bilateral": "both hemispheres or a midline structure"}
SOURCE_LEVELS = {"tissue_volumes": "group/anat_tissue_volumes.tsv (tissue volumes of the T1w "
                                   "segmentation)",
                 "dti_roistats": "group/dwi_dti_roistats.tsv (DTI metrics in regions of interest)",
                 "freesurfer": "group/freesurfer/freesurfer_stats_long.tsv (FreeSurfer stats tables)",
                 "freesurfer_global": "group/freesurfer/freesurfer_global_measures.tsv (FreeSurfer "
                                      "'# Measure' header values)"}

COLUMNS: dict[str, dict] = {
    "participant_id": {"Description": "Participant identifier, 'sub-' + the BIDS subject label. "
                                      "For a FreeSurfer subject folder that is not named "
                                      "sub-<label>[_ses-<label>], 'sub-' + the folder name."},
    "session_id": {"Description": "Session identifier, 'ses-' + the BIDS session label; n/a when "
                                  "the dataset has no sessions."},
    "atlas": {"Description": "Atlas, parcellation or table the value belongs to: 'tissue' "
                             "(T1w tissue classes), 'dti_roi' (DTI regions of interest) or the "
                             "FreeSurfer stats file name without hemisphere and '.stats' (e.g. "
                             "'aparc', 'aparc.a2009s', 'aseg', 'wmparc', 'BA_exvivo', 'curv')."},
    "hemisphere": {"Description": "Hemisphere of the structure; n/a when the file has none "
                                  "(whole-brain global measures).",
                   "Levels": HEMISPHERE_LEVELS},
    "structure": {"Description": "Structure (region) name as the source writes it (FreeSurfer "
                                 "StructName, tissue class, ROI name); for global measures the "
                                 "first field of the '# Measure' line (e.g. 'Cortex', "
                                 "'EstimatedTotalIntraCranialVol')."},
    "measure": {"Description": "What the value measures: the FreeSurfer column header (e.g. "
                               "'ThickAvg', 'Volume_mm3'), the key of a '# Measure' line (e.g. "
                               "'MeanThickness', 'eTIV'), 'volume', or a DTI metric statistic "
                               "(e.g. 'FA_mean')."},
    "value": {"Description": "The number; n/a where the source has none (e.g. a FreeSurfer 'nan')."
              , "Units": "given per row in column 'unit'"},
    "unit": {"Description": "Unit of 'value' as the source states it (e.g. 'mm', 'mm^2', 'mm^3', "
                            "'unitless')."},
    "description": {"Description": "Description of the measure from its '# Measure' line."},
    "label": {"Description": "ggseg-style region label: '<hemisphere>_<structure>' for per-"
                             "hemisphere files (e.g. 'lh_precentral'), the structure name for "
                             "whole-brain segmentations (e.g. 'Left-Hippocampus')."},
    "hemi": {"Description": "ggseg-style hemisphere; n/a for bilateral or midline structures.",
             "Levels": {"left": "left hemisphere", "right": "right hemisphere"}},
    "region": {"Description": "Region name without hemisphere prefix (ggseg-style): the "
                              "FreeSurfer structure name with 'Left-'/'Right-'/'ctx-lh-'/'wm-lh-'"
                              "... removed (e.g. 'precentral', 'Hippocampus')."},
    "freesurfer_version": {"Description": "FreeSurfer version that wrote the stats file (from its "
                                          "header); n/a for non-FreeSurfer values or when the "
                                          "header has none."},
    "source_file": {"Description": "File the value was read from (a FreeSurfer stats file, or a "
                                   "per-subject table relative to the derivative dataset)."},
    "source": {"Description": "Group table the row comes from.", "Levels": SOURCE_LEVELS},
    "median": {"Description": "Median of the value across participants (and sessions) for the "
                              "same atlas, hemisphere, structure and measure.",
               "Units": "as 'value'"},
    "mad": {"Description": "Median absolute deviation from that median.", "Units": "as 'value'"},
    "n_subjects": {"Description": "Number of non-missing values the median and MAD are taken "
                                  "over.", "Units": "count"},
    "robust_z": {"Description": "(value - median) / (1.4826 * mad); n/a where mad is 0 or fewer "
                                "than 3 values exist.", "Units": "unitless"},
    "outlier": {"Description": "|robust_z| > 3.5; n/a where robust_z is n/a (not decidable).",
                "Levels": {"True": "|robust_z| > 3.5", "False": "|robust_z| <= 3.5"}},
    "file": {"Description": "Stats file that was not parsed."},
    "reason": {"Description": "Why it was not parsed (the error, naming file and line)."},
    "kind": {"Description": "Kind of problem: 'parse-error' (a malformed file, skipped with "
                            "--skip-bad), 'no-stats' (a subject folder without *.stats files) or "
                            "'not-a-table (<format>)' (a stats file of a format that holds no "
                            "table)."},
}


def _qc_metric_columns() -> dict[str, dict]:
    """Columns of group/qc_metrics.tsv (neurosmk.qcpages.group_table): each QC metric and its
    robust z-score, documented from neurosmk.qc_metrics.METRICS."""
    from .qc_metrics import METRICS

    out = {}
    for key, (label, unit, group) in METRICS.items():
        units = {"": "unitless", "corr.": "Pearson correlation (unitless)"}.get(unit, unit)
        out[key] = {"Description": f"{label} ({group}); n/a when that step did not run or the "
                                   "value is undefined.", "Units": units}
        out[f"{key}_z"] = {"Description": f"Robust z-score of {key} across visits: (value - median) / "
                                          "(1.4826 * MAD); n/a with fewer than 3 values or MAD 0.",
                           "Units": "unitless"}
    return out


COLUMNS.update(_qc_metric_columns())


def column_doc(name: str) -> dict:
    """Data-dictionary entry of a long/group table column; KeyError for an unknown column."""
    return dict(COLUMNS[name])


def data_dictionary(columns, extra: dict | None = None) -> dict:
    """BIDS tabular-file sidecar content for ``columns`` (in order): every column must be
    documented in COLUMNS or in ``extra``."""
    extra = extra or {}
    out = {}
    for c in columns:
        if c in extra:
            out[c] = extra[c]
        elif c in COLUMNS:
            out[c] = column_doc(c)
        else:
            raise KeyError(f"column {c!r} has no data-dictionary entry")
    return out


def table_columns(path) -> list[str]:
    """Column names of a TSV (its header line) or Parquet file."""
    p = str(path)
    if p.endswith(".parquet"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(p).names)
    with open(p, encoding="utf-8") as fh:
        return fh.readline().rstrip("\n").split("\t")


def dictionary_path(table_path) -> str:
    return split_ext(str(table_path))[0] + ".json"


def write_data_dictionary(table_path, columns=None, extra: dict | None = None) -> str:
    """Write ``<stem>.json`` beside a table: its data dictionary.  Returns the JSON path."""
    cols = columns if columns is not None else table_columns(table_path)
    path = dictionary_path(table_path)
    write_json(path, data_dictionary(cols, extra))
    return path


def write_table(path, df: pd.DataFrame) -> None:
    """A small table (TSV, ``n/a`` for missing) and its data dictionary."""
    write_tsv(path, df)
    write_data_dictionary(path, list(df.columns))


# ---- reading and combining -------------------------------------------------------------------
def read_long(path) -> pd.DataFrame:
    """A long table (TSV or Parquet): string columns stay strings ("01" stays "01"), ``n/a`` is
    missing (NaN/None) in every column.  Missing required columns -> InputError."""
    p = Path(path)
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        head = pd.read_csv(p, sep="\t", nrows=0)
        df = pd.read_csv(p, sep="\t", keep_default_na=False, na_values=[NA],
                         float_precision="round_trip",
                         dtype={c: str for c in head.columns if c != "value"})
    missing = _REQUIRED - set(df.columns)
    if missing:
        raise InputError(p, f"missing columns {sorted(missing)}")
    if not pd.api.types.is_float_dtype(df["value"]):
        try:
            df["value"] = df["value"].astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(p, "column 'value' is not numeric") from None
    return df


def concat_long(paths: list[str], out_tsv: str, atlas: str) -> pd.DataFrame:
    """Concatenate per-visit long tables into a group table (with its data dictionary)."""
    frames = [read_long(p) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LONG_COLUMNS)
    df["atlas"] = atlas
    for c in ("session_id", "hemisphere"):
        if c not in df:
            df[c] = None
    df = df[LONG_COLUMNS + [c for c in df.columns if c not in LONG_COLUMNS]]
    write_table(out_tsv, df)
    return df


def combine_long(parts, root=None) -> pd.DataFrame:
    """Join long tables into one: ``parts`` is a list of (source, path) with source a short
    name of the step (``tissue_volumes``, ``dti_roistats``, ``freesurfer``,
    ``freesurfer_global``).  Columns COMBINED_COLUMNS; a table without ``session_id``/``atlas``/
    ``hemisphere``/``freesurfer_version`` gets n/a, without ``source_file`` its own path
    (relative to ``root``, the output folder, when given: the table then does not depend on
    where it ran).  Values are carried over unchanged; string columns become categoricals."""
    frames = []
    for source, path in parts:
        df = read_long(path)
        n = len(df)
        cols = {}
        for c in COMBINED_COLUMNS:
            if c == "source":
                cols[c] = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [source])
            elif c in df.columns:
                cols[c] = df[c] if c == "value" else df[c].astype("category")
            elif c == "source_file":
                fill = os.path.relpath(path, root) if root else str(path)
                cols[c] = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [fill])
            else:  # not applicable to this table: n/a
                cols[c] = pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8),
                                                    pd.Index([], dtype=object))
        frames.append(pd.DataFrame(cols))
    if not frames:
        raise ValueError("combine_long: no input tables")
    from neurosmk.fsstats.tables import concat_tables

    return concat_tables(frames)


def write_combined(df: pd.DataFrame, out_tsv, out_parquet) -> None:
    from neurosmk.fsstats.tables import write_long_tsv, write_table_parquet

    write_table_parquet(out_parquet, df)
    write_long_tsv(out_tsv, df)
    write_data_dictionary(out_tsv, list(df.columns))


def read_dictionary(path) -> dict:
    with open(dictionary_path(path)) as fh:
        return json.load(fh)
