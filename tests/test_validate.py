"""Bad input refused early and by name (issues #10, #15), on small real data: the demo DWI cut to
a slab (tests/conftest.py:dwi_slab_bids) and the demo T1w cropped.

Header level (neurosmk.bids.validate_inputs, at start, before any job): gradient tables,
dimensions, voxel sizes, orientation, slices against the denoise window. Voxel level
(neurosmk.validate.check_visit_data, the per-visit validate_anat/validate_dwi jobs): readable data,
NaN/Inf, constant images and volumes. Dataset level (neurosmk.bids.index_bids): file names,
stray top-level files beside ses-* folders, dataset_description.json.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurosmk.bids import index_bids, pick_dwi, pick_t1w, validate_inputs
from neurosmk.config import validate_config
from neurosmk.io import InputError
from neurosmk.validate import DEFAULT_SETTINGS, check_dwi_data, check_t1w_data, check_visit_data, settings_from_config

from .conftest import DEMO_BIDS, dwi_slab_bids

DWI = "sub-02/dwi/sub-02_dwi"


def _slab(tmp_path, nz=6, z0=14) -> Path:
    return dwi_slab_bids(tmp_path, z0=z0, nz=nz)


def _edit_text(path: Path, fn) -> None:
    rows = [np.array(line.split(), float) for line in path.read_text().splitlines() if line.strip()]
    rows = fn(np.array(rows))
    path.write_text("\n".join(" ".join(f"{v:.8f}" for v in r) for r in np.atleast_2d(rows)) + "\n")


def _resave(path: Path, data=None, hdr_edit=None) -> None:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj) if data is None else data
    hdr = img.header.copy()
    hdr.set_data_shape(data.shape)
    if data.dtype != hdr.get_data_dtype():
        hdr.set_data_dtype(data.dtype)
    nib.Nifti1Image(data, img.affine, hdr).to_filename(str(path))
    if hdr_edit:  # edit the header bytes in place (nibabel's save would re-derive pixdim and codes)
        raw = gzip.decompress(path.read_bytes())
        h = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]))
        hdr_edit(h)
        path.write_bytes(gzip.compress(h.binaryblock + raw[348:]))


def _t1w(root: Path, sub="01", shape=(40, 48, 44)) -> Path:
    """The demo T1w cropped around its centre (real anatomy, int16)."""
    img = nib.load(str(DEMO_BIDS / "sub-01" / "anat" / "sub-01_T1w.nii.gz"))
    c = [s // 2 for s in img.shape]
    sl = tuple(slice(ci - n // 2, ci - n // 2 + n) for ci, n in zip(c, shape))
    data = np.asanyarray(img.dataobj)[sl]
    p = root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
    p.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(data, img.affine, img.header).to_filename(str(p))
    shutil.copy(DEMO_BIDS / "dataset_description.json", root)
    return p


def _header_error(bids, settings=DEFAULT_SETTINGS) -> InputError:
    with pytest.raises(InputError) as e:
        validate_inputs(index_bids(bids), settings=settings)
    return e.value


# ---- header level: gradient tables --------------------------------------------------------------

def test_slab_passes_header_and_data_checks(tmp_path):
    bids = _slab(tmp_path)
    validate_inputs(index_bids(bids))
    d = pick_dwi(index_bids(bids).visits[("02", None)])
    rep = check_visit_data(None, {"nii": d.nifti, "bval": d.bval, "bvec": d.bvec})
    assert rep["sub-02_dwi.nii.gz"]["shape"] == [72, 72, 6, 21]
    assert rep["sub-02_dwi.nii.gz"]["max"] > 100


@pytest.mark.parametrize("case,target,match", [
    ("negative_b", "bval", r"negative b-value\(s\) \[-2000.0, -2000.0\] at volume\(s\) 3, 7"),
    ("nan_b", "bval", r"non-finite b-value\(s\) \(NaN/Inf\) at volume\(s\) 4"),
    ("inf_b", "bval", r"non-finite b-value\(s\) \(NaN/Inf\) at volume\(s\) 2"),
    ("no_b0", "bval", r"no b=0 volume \(no b-value <= dwi.mask.b0_threshold 50; smallest is 2000\)"),
    ("nan_vec", "bvec", r"non-finite gradient vector\(s\) \(NaN/Inf\) at volume\(s\) 5"),
    ("inf_vec", "bvec", r"non-finite gradient vector\(s\) \(NaN/Inf\) at volume\(s\) 6"),
    ("zero_vec", "bvec", r"volume\(s\) 3 are not unit length \(volume 3: norm 0, b=2000"),
    ("short_vec", "bvec", r"volume\(s\) 1, 2, 3, 4, 5 and 15 more are not unit length \(volume 1: norm 0.5,"),
    ("one_volume", "bval", r"has 1 volume\(s\); a tensor fit needs at least 7"),
    ("five_dirs", "bval", r"5 diffusion-weighted volume\(s\) \(b > 50\); a tensor fit needs at least 6"),
])
def test_bad_gradient_table_refused_by_name(tmp_path, case, target, match):
    bids = _slab(tmp_path)
    bval, bvec, nii = (bids / f"{DWI}.bval"), (bids / f"{DWI}.bvec"), (bids / f"{DWI}.nii.gz")
    if case == "negative_b":
        _edit_text(bval, lambda b: np.where(np.isin(np.arange(b.size), [3, 7]), -b, b))
    elif case == "nan_b":
        _edit_text(bval, lambda b: np.where(np.arange(b.size) == 4, np.nan, b))
    elif case == "inf_b":
        _edit_text(bval, lambda b: np.where(np.arange(b.size) == 2, np.inf, b))
    elif case == "no_b0":
        _edit_text(bval, lambda b: np.full_like(b, 2000))
        _edit_text(bvec, lambda v: np.where(np.arange(v.shape[1]) == 0, [[1], [0], [0]], v))
    elif case == "nan_vec":
        _edit_text(bvec, lambda v: np.where(np.arange(v.shape[1]) == 5, np.nan, v))
    elif case == "inf_vec":
        _edit_text(bvec, lambda v: np.where(np.arange(v.shape[1]) == 6, np.inf, v))
    elif case == "zero_vec":
        _edit_text(bvec, lambda v: np.where(np.arange(v.shape[1]) == 3, 0, v))
    elif case == "short_vec":
        _edit_text(bvec, lambda v: v * 0.5)
    elif case == "one_volume":  # the b=0 volume alone (a tensor fit then gave all-zero maps)
        _resave(nii, np.asanyarray(nib.load(str(nii)).dataobj)[..., :1])
        bval.write_text("0\n")
        bvec.write_text("0\n0\n0\n")
    elif case == "five_dirs":
        _resave(nii, np.asanyarray(nib.load(str(nii)).dataobj)[..., :7])  # 7 volumes, 2 of them b=0
        _edit_text(bval, lambda b: np.where(np.arange(7) == 1, 0, b[:, :7]))
        _edit_text(bvec, lambda v: v[:, :7])
    err = _header_error(bids)
    assert err.path.endswith(f"sub-02_dwi.{target}"), err
    assert re.search(match, err.problem), err.problem


def test_bvec_rounding_within_tolerance_accepted(tmp_path):
    bids = _slab(tmp_path)
    _edit_text(bids / f"{DWI}.bvec", lambda v: np.round(v * 1.004, 3))  # norm 1.004, 3 decimals
    validate_inputs(index_bids(bids))


# ---- header level: dimensions, voxel sizes, orientation, slices ---------------------------------

def test_three_slice_dwi_refused_for_the_denoise_window(tmp_path):
    bids = _slab(tmp_path, nz=3)
    err = _header_error(bids)
    assert err.path.endswith("sub-02_dwi.nii.gz")
    assert "has 3 voxel(s) along k (shape (72, 72, 3, 21)); dwi.denoise.patch_radius 2 (method dipy_mppca) " \
           "needs 5 voxels along each axis" in err.problem
    # without denoising 3 slices are enough for the tensor fit: accepted
    cfg = validate_config({"bids_dir": str(bids), "output_dir": str(tmp_path / "o"),
                           "dwi": {"denoise": {"method": "none"}}})
    validate_inputs(index_bids(bids), settings=settings_from_config(cfg, {"dwi.denoise": "none"}))


def test_patch_radius_50_refused_naming_file_and_key(tmp_path):
    bids = _slab(tmp_path)
    cfg = validate_config({"bids_dir": str(bids), "output_dir": str(tmp_path / "o"),
                           "dwi": {"denoise": {"patch_radius": 50}}})
    err = _header_error(bids, settings_from_config(cfg, {"dwi.denoise": "dipy_mppca"}))
    assert err.path.endswith("sub-02_dwi.nii.gz")
    assert "has 72 voxel(s) along i" in err.problem
    assert "dwi.denoise.patch_radius 50 (method dipy_mppca) needs 101 voxels along each axis" in err.problem
    # the MRtrix window comes from dwi.denoise.extent
    cfg = validate_config({"bids_dir": str(bids), "output_dir": str(tmp_path / "o"),
                           "dwi": {"denoise": {"method": "mrtrix", "extent": [5, 5, 7]}}})
    err = _header_error(bids, settings_from_config(cfg, {"dwi.denoise": "mrtrix"}))
    assert "has 6 voxel(s) along k" in err.problem and "dwi.denoise.extent [5, 5, 7]" in err.problem


@pytest.mark.parametrize("kind", ["t1w", "dwi"])
@pytest.mark.parametrize("case,match", [
    ("zero_voxel", r"invalid voxel sizes \[.*0\.0.*\] \(pixdim along k is zero, negative or not finite\)"),
    ("negative_voxel", r"invalid voxel sizes \[-.*\] \(pixdim along i is zero"),
    ("no_orientation", r"no orientation \(qform_code and sform_code are both 0\)"),
    ("complex", r"datatype 32 \(complex64\)"),
])
def test_bad_header_refused_by_name(tmp_path, kind, case, match):
    if kind == "dwi":
        bids = _slab(tmp_path)
        nii = bids / f"{DWI}.nii.gz"
    else:
        nii = _t1w(tmp_path / "bids")
        bids = tmp_path / "bids"

    def edit(h):
        if case == "zero_voxel":
            h["pixdim"][3] = 0
        elif case == "negative_voxel":
            h["pixdim"][1] = -1
        elif case == "no_orientation":
            h["qform_code"] = 0
            h["sform_code"] = 0
    if case == "complex":
        _resave(nii, np.asanyarray(nib.load(str(nii)).dataobj).astype(np.complex64))
    else:
        _resave(nii, hdr_edit=edit)
    err = _header_error(bids)
    assert err.path == str(nii)

    assert re.search(match, err.problem), err.problem


def test_single_slice_t1w_refused(tmp_path):
    nii = _t1w(tmp_path / "bids", shape=(40, 48, 1))
    err = _header_error(tmp_path / "bids")
    assert err.path == str(nii)
    assert "T1w image has 1 voxel(s) along k (shape (40, 48, 1)); an anatomical image needs at least 16" \
           in err.problem


@pytest.mark.parametrize("case,match", [
    ("no_bval", "missing .bval file next to the DWI series"),
    ("no_bvec", "missing .bvec file next to the DWI series"),
    ("count", "20 b-values but the DWI series sub-02_dwi.nii.gz has 21 volumes"),
    ("bvec_count", "22 gradient directions but the DWI series sub-02_dwi.nii.gz has 21 volumes"),
    ("3d", "a DWI series must be 4D, got 3D with shape (72, 72, 6)"),
    ("notnifti", "cannot be read as NIfTI"),
    ("txt", "not a NIfTI file"),
    ("bval_text", "not a .bval file"),
])
def test_bad_dwi_files_refused_at_start(tmp_path, case, match):
    bids = _slab(tmp_path)
    bval, bvec, nii = (bids / f"{DWI}.bval"), (bids / f"{DWI}.bvec"), (bids / f"{DWI}.nii.gz")
    if case == "no_bval":
        bval.unlink()
    elif case == "no_bvec":
        bvec.unlink()
    elif case == "count":
        _edit_text(bval, lambda b: b[:, :20])
    elif case == "bvec_count":
        _edit_text(bvec, lambda v: np.hstack([v, v[:, -1:]]))
    elif case == "3d":
        _resave(nii, np.asanyarray(nib.load(str(nii)).dataobj)[..., 0])
    elif case == "notnifti":
        with gzip.open(nii, "wb") as fh:
            fh.write(b"this is not an image" * 40)
    elif case == "txt":
        (nii.parent / "sub-02_dwi.mif").write_text("x")
    elif case == "bval_text":
        bval.write_text("0 1000 abc\n")
    err = _header_error(bids)
    assert match in err.problem, err.problem
    assert "sub-02_dwi" in err.path


def test_header_checks_read_no_voxel_data(tmp_path):
    """A truncated image passes the header tier (it reads only the header) and is refused by the
    voxel tier, naming the file."""
    bids = _slab(tmp_path)
    nii = bids / f"{DWI}.nii.gz"
    raw = gzip.decompress(nii.read_bytes())
    nii.write_bytes(gzip.compress(raw[: len(raw) // 3]))
    validate_inputs(index_bids(bids))
    with pytest.raises(InputError, match=r"sub-02_dwi.nii.gz: image data cannot be read"):
        check_dwi_data(str(nii))


# ---- voxel level (the validate_anat/validate_dwi jobs) -------------------------------------------------------

def test_nan_volume_refused_naming_the_volume(tmp_path):
    bids = _slab(tmp_path)
    nii = bids / f"{DWI}.nii.gz"
    data = np.asanyarray(nib.load(str(nii)).dataobj).astype(np.float32)
    data[..., 5] = np.nan
    data[3, 4, 2, 9] = np.inf
    _resave(nii, data)
    validate_inputs(index_bids(bids))  # the header is fine
    with pytest.raises(InputError) as e:
        check_dwi_data(str(nii))
    assert e.value.path == str(nii)
    assert e.value.problem.startswith("non-finite (NaN/Inf) values in volume(s) 5 (31104 of 31104 voxels), "
                                      "9 (1 of 31104 voxels)")


def test_all_nan_and_constant_dwi_refused(tmp_path):
    bids = _slab(tmp_path)
    nii = bids / f"{DWI}.nii.gz"
    data = np.asanyarray(nib.load(str(nii)).dataobj).astype(np.float32)
    _resave(nii, np.full_like(data, np.nan))
    with pytest.raises(InputError, match="DWI series is entirely NaN/Inf"):
        check_dwi_data(str(nii))
    _resave(nii, np.zeros_like(data))
    with pytest.raises(InputError, match="DWI series is entirely zero"):
        check_dwi_data(str(nii))
    one = data.copy()
    one[..., 4] = 0  # a dropped volume
    _resave(nii, one)
    with pytest.raises(InputError, match=r"constant volume\(s\) 4 \(every voxel 0\): an empty or dropped volume"):
        check_dwi_data(str(nii))


@pytest.mark.parametrize("case,match", [
    ("constant", r"T1w image is constant \(every voxel 300\): there is no anatomy in it"),
    ("zero", r"T1w image is entirely zero"),
    ("half_nan", r"T1w image has 42240 non-finite \(NaN/Inf\) voxels of 84480 \(50.0%\)"),
])
def test_bad_t1w_data_refused(tmp_path, case, match):
    nii = _t1w(tmp_path / "bids")
    data = np.asanyarray(nib.load(str(nii)).dataobj)
    if case == "constant":  # brainextractor allocated ~24 GB on this one
        data = np.full_like(data, 300)
    elif case == "zero":
        data = np.zeros_like(data)
    else:
        data = data.astype(np.float32)
        data[:, :, : data.shape[2] // 2] = np.nan
    _resave(nii, data)
    validate_inputs(index_bids(tmp_path / "bids"))  # header fine: the voxel tier refuses it
    with pytest.raises(InputError) as e:
        check_t1w_data(str(nii))
    assert e.value.path == str(nii)

    assert re.search(match, e.value.problem), e.value.problem


def test_scaled_integer_t1w_checked_on_stored_values(tmp_path):
    nii = _t1w(tmp_path / "bids")
    _resave(nii, hdr_edit=lambda h: h.set_slope_inter(2.0, 10.0))
    rep = check_t1w_data(str(nii))
    assert rep["shape"] == [40, 48, 44] and rep["max"] > rep["min"]


# ---- dataset level -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,problem", [
    ("sub-02_acq-$(touch PWNED)_dwi.nii.gz", "'acq-$(touch PWNED)' is not a BIDS entity key-label pair"),
    ("sub-02_acq-a`id`_dwi.nii.gz", "'acq-a`id`' is not a BIDS entity key-label pair"),
    ("sub-02_acq-a b_dwi.bval", "'acq-a b' is not a BIDS entity key-label pair"),
    ("sub-02_acq-a;b_dwi.nii.gz", "'acq-a;b' is not a BIDS entity key-label pair"),
    ("sub-02_acq-ü_dwi.nii.gz", "'acq-ü' is not a BIDS entity key-label pair"),
    ("sub-03_dwi.nii.gz", "it must start with sub-02 (its folder)"),
    ("sub-02_run-1_run-2_dwi.nii.gz", "an entity key appears twice"),
    ("x_$(id)_dwi.nii.gz", "'x' is not a BIDS entity"),
])
def test_invalid_bids_names_refused(tmp_path, name, problem):
    bids = _slab(tmp_path)
    (bids / "sub-02" / "dwi" / name).write_bytes((bids / f"{DWI}.nii.gz").read_bytes())
    with pytest.raises(InputError) as e:
        index_bids(bids)
    assert e.value.path == str(bids / "sub-02" / "dwi" / name)
    assert e.value.problem.startswith(f"not a valid BIDS file name: {problem}"), e.value.problem
    assert e.value.problem.endswith("rename or remove it")


def test_unrelated_files_ignored(tmp_path):
    bids = _slab(tmp_path)
    (bids / "sub-02" / "dwi" / "notes.txt").write_text("scanner was noisy")
    (bids / "sub-02" / "dwi" / ".DS_Store").write_text("")
    idx = index_bids(bids)
    assert pick_dwi(idx.visits[("02", None)]).nifti.endswith("sub-02_dwi.nii.gz")


def test_top_level_files_beside_sessions_refused(tmp_path):
    bids = tmp_path / "bids"
    _t1w(bids)
    ses = bids / "sub-01" / "ses-1" / "anat"
    ses.mkdir(parents=True)
    shutil.copy(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz", ses / "sub-01_ses-1_T1w.nii.gz")
    with pytest.raises(InputError) as e:
        index_bids(bids)
    assert e.value.path == str(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    assert "sub-01 has ses-* folders (ses-1), so this file outside them would be ignored" in e.value.problem
    # an empty top-level folder is harmless
    shutil.rmtree(bids / "sub-01" / "anat")
    (bids / "sub-01" / "anat").mkdir()
    assert list(index_bids(bids).visits) == [("01", "1")]


def test_missing_dataset_description_warns(tmp_path):
    bids = _slab(tmp_path)
    assert index_bids(bids).warnings == []
    (bids / "dataset_description.json").unlink()
    idx = index_bids(bids)
    assert len(idx.warnings) == 1 and idx.warnings[0].startswith(f"{bids}: no dataset_description.json")
    assert idx.select(["02"]).warnings == idx.warnings


# ---- the cache -------------------------------------------------------------------------------------

def test_header_cache_skips_unchanged_and_rechecks_changes(tmp_path):
    bids = _slab(tmp_path)
    cache = tmp_path / "cache.json"
    validate_inputs(index_bids(bids), cache_path=str(cache))
    assert "sub-02_dwi.nii.gz" in cache.read_text()
    # a changed gradient table (size/mtime) is re-checked
    bval = bids / f"{DWI}.bval"
    saved = bval.read_text()
    bval.write_text("0 1000\n")
    with pytest.raises(InputError, match="2 b-values"):
        validate_inputs(index_bids(bids), cache_path=str(cache))
    bval.write_text(saved)
    validate_inputs(index_bids(bids), cache_path=str(cache))
    # changed check settings (a larger denoise window) are not hidden by the cache
    cfg = validate_config({"bids_dir": str(bids), "output_dir": str(tmp_path / "o"),
                           "dwi": {"denoise": {"patch_radius": 4}}})
    with pytest.raises(InputError, match="patch_radius 4"):
        validate_inputs(index_bids(bids), cache_path=str(cache),
                        settings=settings_from_config(cfg, {"dwi.denoise": "dipy_mppca"}))
    # a cached pass skips the file: an unreadable header in place (same size, same mtime) goes unseen
    nii = bids / f"{DWI}.nii.gz"
    st = nii.stat()
    nii.write_bytes(b"\0" * st.st_size)
    os.utime(nii, ns=(st.st_atime_ns, st.st_mtime_ns))
    validate_inputs(index_bids(bids), cache_path=str(cache))
    with pytest.raises(InputError, match="cannot be read as NIfTI"):
        validate_inputs(index_bids(bids))


def test_demo_passes(tmp_path):
    idx = index_bids(DEMO_BIDS)
    validate_inputs(idx)
    v1, v2 = idx.visits[("01", None)], idx.visits[("02", None)]
    d = pick_dwi(v2)
    rep = check_visit_data(pick_t1w(v1), None)
    assert rep["sub-01_T1w.nii.gz"]["shape"] == [192, 256, 256]
    rep = check_visit_data(None, {"nii": d.nifti, "bval": d.bval, "bvec": d.bvec})
    assert rep["sub-02_dwi.nii.gz"]["shape"] == [72, 72, 36, 21]


def test_validation_report_is_not_a_source_in_sidecars(tmp_path):
    """The report is an input of the first rules but neurosmk's record, not data: neither sidecar
    writer (Python, scripts/sidecar.sh) lists it in Sources."""
    import json
    import subprocess

    from neurosmk import provenance as P

    from .conftest import REPO

    out, bids = tmp_path / "out", _slab(tmp_path)
    raw = bids / f"{DWI}.nii.gz"
    report = out / ".neurosmk" / "validate" / "sub-02.json"
    report.parent.mkdir(parents=True)
    report.write_text('{"status": "passed"}')
    img = out / "sub-02" / "dwi" / "sub-02_desc-x_dwi.nii.gz"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"img")
    sc = img.with_name("sub-02_desc-x_dwi.json")
    static = json.dumps(P.static_record(step="dwi.x", method="m", rule="r", parameters={}, conda_env=None,
                                        container=None))
    res = subprocess.run(["sh", str(REPO / "scripts" / "sidecar.sh"), static, "echo t 1", str(out), str(bids),
                          str(img), str(sc), "--", str(raw), str(report)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(sc.read_text())["Sources"] == ["bids:raw:sub-02/dwi/sub-02_dwi.nii.gz"]
    assert P.sources([raw, report], str(out), str(bids))[0] == ["bids:raw:sub-02/dwi/sub-02_dwi.nii.gz"]
