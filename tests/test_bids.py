import nibabel as nib
import numpy as np
import pytest

from neurosmk.bids import index_bids, parse_entities, pick_dwi, pick_t1w, validate_inputs
from neurosmk.io import InputError

from .conftest import DEMO_BIDS


def _nii(path, shape, value=1.0, dtype=np.float32):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(shape, value, dtype=dtype)
    if value == 1.0:
        data = np.random.default_rng(0).random(shape).astype(dtype) + 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def _dwi(root, sub, nvol=5, nbval=None, nbvec=None, shape=(4, 4, 4)):
    d = root / f"sub-{sub}" / "dwi"
    _nii(d / f"sub-{sub}_dwi.nii.gz", shape + (nvol,) if nvol else shape)
    nbval = nvol if nbval is None else nbval
    nbvec = nvol if nbvec is None else nbvec
    (d / f"sub-{sub}_dwi.bval").write_text(" ".join(["0"] + ["1000"] * (nbval - 1)) + "\n")
    (d / f"sub-{sub}_dwi.bvec").write_text("\n".join(" ".join(["0.5"] * nbvec) for _ in range(3)) + "\n")
    return d


def test_parse_entities():
    ents, suffix, ext = parse_entities("sub-01_ses-a_acq-mp2_run-2_T1w.nii.gz")
    assert ents == {"sub": "01", "ses": "a", "acq": "mp2", "run": "2"}
    assert (suffix, ext) == ("T1w", ".nii.gz")


def test_index_demo():
    idx = index_bids(DEMO_BIDS)
    assert idx.subjects == ["01", "02"]
    assert not idx.has_sessions
    v1 = idx.visits[("01", None)]
    v2 = idx.visits[("02", None)]
    assert pick_t1w(v1).endswith("sub-01_T1w.nii.gz") and pick_dwi(v1) is None
    d = pick_dwi(v2)
    assert d.bval.endswith("sub-02_dwi.bval") and d.bvec.endswith("sub-02_dwi.bvec")
    validate_inputs(idx)


def test_sessions_and_selection(tmp_path):
    for sub in ("a", "b"):
        for ses in ("1", "2"):
            _nii(tmp_path / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_T1w.nii.gz", (4, 4, 4))
    idx = index_bids(tmp_path)
    assert idx.has_sessions and len(idx.visits) == 4
    sel = idx.select(["b"], ["2"])
    assert list(sel.visits) == [("b", "2")]
    with pytest.raises(InputError, match="participant_label not found.*zz"):
        idx.select(["zz"])
    # leaving subjects out (after participant_label); an unknown one is named
    assert sorted(idx.select(participant_exclude=["a"]).visits) == [("b", "1"), ("b", "2")]
    assert list(idx.select(["a", "b"], ["1"], participant_exclude=["b"]).visits) == [("a", "1")]
    sel = idx.select(participant_exclude=["a", "yy"])
    assert sorted(sel.visits) == [("b", "1"), ("b", "2")]
    assert sel.warnings == [*idx.warnings,
                            f"{tmp_path}: participant_exclude not in the dataset (nothing to leave out): yy"]
    assert idx.select(participant_exclude=["yy"], strict=False).warnings == idx.warnings


def test_mixed_session_layout_rejected(tmp_path):
    _nii(tmp_path / "sub-a" / "ses-1" / "anat" / "sub-a_ses-1_T1w.nii.gz", (4, 4, 4))
    _nii(tmp_path / "sub-b" / "anat" / "sub-b_T1w.nii.gz", (4, 4, 4))
    with pytest.raises(InputError, match="some subjects have ses"):
        index_bids(tmp_path)


def test_ambiguous_t1w_needs_filter(tmp_path):
    for run in ("1", "2"):
        _nii(tmp_path / "sub-a" / "anat" / f"sub-a_run-{run}_T1w.nii.gz", (4, 4, 4))
    idx = index_bids(tmp_path)
    with pytest.raises(InputError, match="2 T1w images match.*bids_filters.t1w"):
        pick_t1w(idx.visits[("a", None)])
    assert pick_t1w(idx.visits[("a", None)], {"run": "2"}).endswith("run-2_T1w.nii.gz")


# the input checks (header and voxel level) are tested in tests/test_validate.py


def test_index_many_subjects_fast(tmp_path):
    # 2,000 subjects here (the 10,000-subject figure is in benchmarks/bench_bids_index.py)
    for i in range(2000):
        d = tmp_path / f"sub-{i:05d}" / "anat"
        d.mkdir(parents=True)
        (d / f"sub-{i:05d}_T1w.nii.gz").touch()
    idx = index_bids(tmp_path)
    assert len(idx.subjects) == 2000
    assert all(len(v.t1w) == 1 for v in idx.visits.values())
