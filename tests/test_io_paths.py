import pytest

from neurosmk.io import atomic_path, write_text
from neurosmk.paths import deriv, entity_string


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces(tmp_path):
    target = tmp_path / "a" / "b.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]


def test_atomic_write_gets_the_mode_of_a_plain_write(tmp_path):
    """Outputs are readable as a plain open() would make them (umask), not mkstemp's 0600."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = tmp_path / "atomic.tsv"
    write_text(target, "x")
    assert oct(target.stat().st_mode & 0o777) == oct(plain.stat().st_mode & 0o777)


def test_deriv_paths_with_and_without_sessions():
    p = deriv("out", "anat", "xfm", ".nii.gz", True, from_="T1w", to="MNI", mode="image", desc="warp")
    assert p == ("out/sub-{subject}/ses-{session}/anat/"
                 "sub-{subject}_ses-{session}_from-T1w_to-MNI_mode-image_desc-warp_xfm.nii.gz")
    p = deriv("out", "dwi", "dwimap", ".nii.gz", False, model="DTI", param="FA")
    assert p == "out/sub-{subject}/dwi/sub-{subject}_model-DTI_param-FA_dwimap.nii.gz"


def test_entity_order_and_unknown():
    assert entity_string({"desc": "x", "sub": "1", "space": "MNI"}) == "sub-1_space-MNI_desc-x"
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        entity_string({"foo": "1"})
