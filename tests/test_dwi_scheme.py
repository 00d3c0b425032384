"""Unit tests of the DSI guard, the reverse-phase-encoding lookup and DRBUDDI's b=0 inputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from neurosmk.drbuddi import mean_b0, prepare_inputs
from neurosmk.dwi_scheme import SchemeError, check_shelled, reverse_pe_b0, shells


def test_shells_round_to_100():
    assert shells([0, 5, 995, 1005, 2000, 1990, 3010]) == [1000.0, 2000.0, 3000.0]


def test_check_shelled(tmp_path):
    ok = tmp_path / "multi.bval"
    ok.write_text("0 1000 1000 2000 3000 990\n")
    assert check_shelled(str(ok), max_shells=8) == [1000.0, 2000.0, 3000.0]
    dsi = tmp_path / "dsi.bval"
    dsi.write_text(" ".join(str(v) for v in range(0, 4000, 180)) + "\n")  # 22 distinct b-values
    with pytest.raises(SchemeError, match=r"dsi\.bval: .*distinct b-values.*drbuddi"):
        check_shelled(str(dsi), max_shells=8)
    assert len(check_shelled(str(dsi), max_shells=30)) > 8


def _nii(path, data, affine=np.diag([2.0, 2.0, 2.0, 1.0])):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), path)


def test_reverse_pe_from_fmap_then_dwi(tmp_path):
    d, f = tmp_path / "sub-01" / "dwi", tmp_path / "sub-01" / "fmap"
    d.mkdir(parents=True)
    f.mkdir()
    dwi = d / "sub-01_dir-AP_dwi.nii.gz"
    _nii(dwi, np.ones((2, 2, 2, 3)))
    (d / "sub-01_dir-AP_dwi.json").write_text(json.dumps({"PhaseEncodingDirection": "j-"}))
    other = d / "sub-01_dir-PA_dwi.nii.gz"
    _nii(other, np.ones((2, 2, 2, 3)))
    (d / "sub-01_dir-PA_dwi.json").write_text(json.dumps({"PhaseEncodingDirection": "j"}))
    assert reverse_pe_b0(str(dwi), str(d / "sub-01_dir-AP_dwi.json")) == (str(other), "j", "j-")
    epi = f / "sub-01_dir-PA_epi.nii.gz"
    _nii(epi, np.ones((2, 2, 2)))
    (f / "sub-01_dir-PA_epi.json").write_text(json.dumps({"PhaseEncodingDirection": "j"}))
    assert reverse_pe_b0(str(dwi), str(d / "sub-01_dir-AP_dwi.json"))[0] == str(epi)  # fmap/ first
    (f / "sub-01_dir-PA_epi.json").write_text(json.dumps({"PhaseEncodingDirection": "i"}))
    (d / "sub-01_dir-PA_dwi.json").write_text(json.dumps({"PhaseEncodingDirection": "j-"}))
    with pytest.raises(SchemeError, match="reverse phase-encoded b=0.*'j'"):
        reverse_pe_b0(str(dwi), str(d / "sub-01_dir-AP_dwi.json"))
    with pytest.raises(SchemeError, match="PhaseEncodingDirection"):
        reverse_pe_b0(str(dwi), None)


def test_mean_b0_selects_b0_volumes():
    data = np.stack([np.full((2, 2, 2), v, float) for v in (10, 99, 30, 99)], axis=3)
    assert np.allclose(mean_b0(data, np.array([0, 1000, 5, 1000]), 50, "x"), 20)
    assert np.allclose(mean_b0(data, None, 50, "x"), (10 + 99 + 30 + 99) / 4)  # an epi fieldmap: all volumes
    with pytest.raises(ValueError, match="no b=0"):
        mean_b0(data, np.array([1000] * 4), 50, "x")
    with pytest.raises(ValueError, match="4 volumes but 3 b-values"):
        mean_b0(data, np.array([0, 0, 0]), 50, "x")


def test_prepare_inputs_writes_lps_pair_and_json(tmp_path):
    data = np.random.default_rng(0).random((3, 4, 5, 3)).astype(np.float32)
    _nii(tmp_path / "dwi.nii.gz", data)  # RAS+ storage
    (tmp_path / "dwi.bval").write_text("0 1000 0\n")
    _nii(tmp_path / "rev.nii.gz", data[..., 0] * 2)
    prepare_inputs(str(tmp_path / "dwi.nii.gz"), str(tmp_path / "dwi.bval"), str(tmp_path / "rev.nii.gz"), None, "j-",
                   str(tmp_path / "up.nii"), str(tmp_path / "down.nii"), str(tmp_path / "up.json"))
    up = nib.load(tmp_path / "up.nii")
    assert nib.aff2axcodes(up.affine) == ("L", "P", "S")
    assert np.allclose(up.get_fdata()[::-1, ::-1, :], (data[..., 0] + data[..., 2]) / 2, atol=1e-6)
    assert np.allclose(nib.load(tmp_path / "down.nii").get_fdata()[::-1, ::-1, :], data[..., 0] * 2, atol=1e-6)
    assert json.loads((tmp_path / "up.json").read_text()) == {"PhaseEncodingDirection": "j-"}
