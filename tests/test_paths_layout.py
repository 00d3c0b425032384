"""neurosmk.paths is the one place that knows the derivative dataset's layout: its dataset-level
helpers give the documented paths, and no rule or script builds a path as an f-string around a
folder separator (``f"{OUT}/group/..."``) instead of going through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neurosmk import paths as P

REPO = Path(__file__).resolve().parents[1]


def test_dataset_level_layout():
    o = "/d/out"
    assert P.group_file(o, "anat_volumes") == "/d/out/group/anat_tissue_volumes.tsv"
    assert P.group_file(o, "dti_stats") == "/d/out/group/dwi_dti_roistats.tsv"
    assert P.group_file(o, "qc_page") == "/d/out/group/qc.html"
    assert P.fs_group_file(o, "global_parquet") == "/d/out/group/freesurfer/freesurfer_global_measures.parquet"
    skipped = P.fs_subject_table(o, "{fssub}", "skipped", ext=".tsv")
    assert skipped == "/d/out/group/freesurfer/subjects/{fssub}_skipped.tsv"
    done = P.recon_all_file(o, "sub-{subject}", "done")
    assert done == "/d/out/freesurfer/sub-{subject}/scripts/neurosmk_recon-all_all.done"
    assert P.recon_all_file(o, "sub-01", "aparcaseg") == "/d/out/freesurfer/sub-01/mri/aparc+aseg.mgz"
    assert P.figure_path(o, "{subject}", "sub-{subject}", "first", "slicesdir", ext="") == \
        "/d/out/sub-{subject}/figures/sub-{subject}_desc-first_slicesdir"
    assert P.docs_file(o, "methods.md") == "/d/out/docs/methods.md"
    assert P.state_path(o, "validate", "anat", "sub-01.json") == "/d/out/.neurosmk/validate/anat/sub-01.json"
    assert P.template_file(o, "tpl-X_res-02", "T1w.nii.gz") == "/d/out/sourcedata/templates/tpl-X_res-02_T1w.nii.gz"
    assert P.dataset_file(o, "sub-01.html") == "/d/out/sub-01.html"
    with pytest.raises(KeyError):
        P.group_file(o, "no_such_table")


# an f-string whose text has a "/" right after a replacement field: a path built by hand
_FSTRING_PATH = re.compile(r"""\bf(["'])[^"'\n]*\{[^}\n]*\}/[^"'\n]*\1""")


def test_fstring_path_pattern_detects_hand_built_paths():
    assert _FSTRING_PATH.search('x = f"{OUT}/group/anat_tissue_volumes.tsv"')
    assert _FSTRING_PATH.search("x = f'{FSG}/subjects/{{fssub}}_long.parquet'")
    assert not _FSTRING_PATH.search('x = _paths.group_file(OUT, "anat_volumes")')
    assert not _FSTRING_PATH.search('raise ValueError(f"{path}: not a NIfTI")')


@pytest.mark.parametrize("path", sorted([*(REPO / "rules").glob("*.smk"), REPO / "Snakefile",
                                         *(REPO / "scripts").glob("*.py")]), ids=lambda p: p.name)
def test_no_hand_built_paths(path):
    hits = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if _FSTRING_PATH.search(line) and not line.lstrip().startswith("#")]
    assert not hits, "paths built as f-strings (use neurosmk.paths):\n" + "\n".join(hits)
