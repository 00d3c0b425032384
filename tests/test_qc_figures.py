"""QC mosaics and per-visit QC numbers on small synthetic images with known answers."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from neurosmk import qc, qc_metrics


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return str(path)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A 'head' (60 x 64 x 56, 2 mm) whose brain (ellipsoid) sits off-centre, up and forward, with
    WM core, GM shell, CSF rim; a scalp far outside it. dseg 1 CSF, 2 GM, 3 WM."""
    d = tmp_path_factory.mktemp("head")
    shape = (60, 64, 56)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-60, -64, -40]
    ii, jj, kk = np.indices(shape)
    centre = np.array([30, 38, 36])  # brain above and in front of the volume's middle
    r = np.sqrt(((ii - centre[0]) / 18) ** 2 + ((jj - centre[1]) / 20) ** 2 + ((kk - centre[2]) / 14) ** 2)
    dseg = np.zeros(shape, np.uint8)
    dseg[r < 1.0] = 1
    dseg[r < 0.85] = 2
    dseg[r < 0.6] = 3
    rng = np.random.default_rng(0)
    t1 = np.where(dseg == 3, 100.0, np.where(dseg == 2, 70.0, np.where(dseg == 1, 30.0, 0.0)))
    rh = np.sqrt(((ii - 30) / 29) ** 2 + ((jj - 32) / 31) ** 2 + ((kk - 28) / 27) ** 2)
    t1[(rh > 0.9) & (rh < 1.0)] = 80.0  # scalp
    t1 = t1 + rng.normal(0, 5, shape) * (t1 > 0)
    mask = (dseg > 0).astype(np.uint8)
    return {"dir": d, "aff": aff, "shape": shape, "dseg_arr": dseg, "t1_arr": t1,
            "t1": _save(d / "t1.nii.gz", t1.astype(np.float32), aff),
            "mask": _save(d / "mask.nii.gz", mask, aff),
            "dseg": _save(d / "dseg.nii.gz", dseg, aff)}


def test_brain_cuts_lie_in_the_brain_not_mid_volume(head):
    cuts = qc.brain_cuts(qc._canonical(head["mask"]), n=8)
    idx = np.argwhere(head["dseg_arr"] > 0)
    world = idx * 2.0 + head["aff"][:3, 3]
    for ax, name in enumerate("xyz"):
        assert len(cuts[name]) == 8
        assert world[:, ax].min() < min(cuts[name]) and max(cuts[name]) < world[:, ax].max(), name
        assert cuts[name] == sorted(cuts[name])
    # the brain is above the volume's middle: every axial cut is above it (mid-volume z = -40 + 55)
    assert min(cuts["z"]) > -40 + 55 - 2 * 14 * 0.9
    assert np.mean(cuts["z"]) == pytest.approx(-40 + 2 * 36, abs=2.5)


def test_brain_cuts_empty_mask_is_an_error(head):
    empty = nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="mask is empty"):
        qc.brain_cuts(empty)


def _png(path):
    import matplotlib.image as mpimg
    from PIL import Image

    with Image.open(path) as im:
        dpi = im.info.get("dpi")
    return mpimg.imread(path), dpi


def test_mask_and_dseg_mosaics(head, tmp_path):
    out = tmp_path / "mask.png"
    cuts = qc.mask_mosaic(head["t1"], head["mask"], str(out), title="sub-x: brain mask")
    img, dpi = _png(out)
    assert dpi is not None and round(dpi[0]) >= 150
    assert img.shape[1] >= 2000 and img.shape[0] >= 900  # 3 rows x 8 cuts at 150 dpi
    rgb = img[..., :3]
    red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    assert red.sum() > 500, "no red mask contour drawn"
    # 24 panels, 8 per row: contours in every row of the mosaic
    thirds = np.array_split(red, 3, axis=0)
    assert all(t.sum() > 50 for t in thirds)
    assert sorted(cuts) == ["x", "y", "z"]

    out2 = tmp_path / "dseg.png"
    qc.dseg_mosaic(head["t1"], head["dseg"], head["mask"], str(out2), title="sub-x: tissues")
    img2, _ = _png(out2)
    rgb2 = img2[..., :3]
    for colour in qc.TISSUE_COLOURS.values():
        c = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        near = (np.abs(rgb2 - c).max(axis=-1) < 0.08).sum()
        assert near > 100, f"tissue contour colour {colour} missing"


def test_no_temp_files_left_and_overwrite_atomic(head, tmp_path):
    out = tmp_path / "m.png"
    qc.mask_mosaic(head["t1"], head["mask"], str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_registration_mosaic_draws_template_contours(head, tmp_path):
    brain = np.where(head["dseg_arr"] > 0, head["t1_arr"], 0).astype(np.float32)
    warped = _save(tmp_path / "warped.nii.gz", brain, head["aff"])
    tpl = _save(tmp_path / "tpl.nii.gz", (head["dseg_arr"] * 30.0).astype(np.float32), head["aff"])
    out = tmp_path / "reg.png"
    qc.registration_mosaic(warped, tpl, str(out), title="reg")
    img, _ = _png(out)
    rgb = img[..., :3]
    assert ((rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.35) & (rgb[..., 2] < 0.35)).sum() > 300


@pytest.fixture(scope="module")
def dwi(tmp_path_factory, head):
    """A DWI series on a 3 mm grid: 3 b=0 volumes (mean 200 in the brain, noise SD 10) + 4 b=1000."""
    d = tmp_path_factory.mktemp("dwi")
    shape = (30, 32, 24)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = [-45, -48, -20]
    ii, jj, kk = np.indices(shape)
    r = np.sqrt(((ii - 15) / 10) ** 2 + ((jj - 17) / 11) ** 2 + ((kk - 13) / 8) ** 2)
    brain = r < 1
    rng = np.random.default_rng(1)
    vols = []
    for b in (0, 1000, 0, 1000, 1000, 0, 1000):
        base = 200.0 if b == 0 else 80.0
        vols.append(np.where(brain, base + rng.normal(0, 10, shape), rng.normal(0, 2, shape).clip(0)))
    data = np.stack(vols, axis=3).astype(np.float32)
    bval = d / "dwi.bval"
    bval.write_text("0 1000 0 1000 1000 0 1000\n")
    fa = np.where(brain, np.clip(1 - r, 0, 1), 0).astype(np.float32)
    rgb = np.zeros(shape + (3,), np.float32)
    rgb[..., 0] = fa * (ii > 15)
    rgb[..., 1] = fa * (ii <= 15)
    return {"dwi": _save(d / "dwi.nii.gz", data, aff), "bval": str(bval),
            "mask": _save(d / "mask.nii.gz", brain.astype(np.uint8), aff),
            "fa": _save(d / "fa.nii.gz", fa, aff), "rgb": _save(d / "rgb.nii.gz", rgb, aff),
            "brain": brain}


def test_dwi_mosaics(dwi, tmp_path):
    b0 = qc.mean_b0(dwi["dwi"], dwi["bval"])
    assert float(np.asanyarray(b0.dataobj)[15, 17, 13]) == pytest.approx(200, abs=20)
    out = tmp_path / "b0.png"
    qc.b0_mask_mosaic(dwi["dwi"], dwi["bval"], dwi["mask"], str(out), title="b0")
    img, dpi = _png(out)
    assert round(dpi[0]) >= 150
    assert ((img[..., 0] > 0.8) & (img[..., 1] < 0.3)).sum() > 300

    out = tmp_path / "fa.png"
    qc.fa_mosaic(dwi["fa"], dwi["mask"], str(out), title="FA")
    img, _ = _png(out)
    # the colourbar: a column of grey levels from black to white at the right edge
    right = img[:, int(img.shape[1] * 0.95):, :3]
    greys = right[(np.abs(right[..., 0] - right[..., 1]) < 0.02) & (np.abs(right[..., 1] - right[..., 2]) < 0.02)]
    assert greys[:, 0].min() < 0.1 and greys[:, 0].max() > 0.9

    out = tmp_path / "cfa.png"
    cuts = qc.colour_fa_mosaic(dwi["rgb"], dwi["mask"], str(out), title="colour FA")
    img, _ = _png(out)
    rgb = img[..., :3]
    redish = (rgb[..., 0] > 0.3) & (rgb[..., 1] < 0.1)
    greenish = (rgb[..., 1] > 0.3) & (rgb[..., 0] < 0.1)
    assert redish.sum() > 200 and greenish.sum() > 200
    # axial row: red (x > middle, the right) is drawn right of green (neurological: R on the right)
    top = slice(0, img.shape[0] // 3)
    w = img.shape[1] // len(cuts["z"])
    first = slice(3 * w, 4 * w)  # the fourth axial panel, mid-brain
    xr = np.argwhere(redish[top, first])[:, 1].mean()
    xg = np.argwhere(greenish[top, first])[:, 1].mean()
    assert xr > xg


def test_dwi_b0_must_exist(dwi, tmp_path):
    bad = tmp_path / "nob0.bval"
    bad.write_text("1000 1000 1000 1000 1000 1000 1000\n")
    with pytest.raises(ValueError, match="no b-value"):
        qc.mean_b0(dwi["dwi"], str(bad))


def test_t1w_iqms_known_values(head):
    m = qc_metrics.t1w_iqms(head["t1"], head["dseg"])
    # WM 100 +- 5, GM 70 +- 5: SNR ~20, CNR ~ 30 / sqrt(50) ~ 4.24, CJV ~ 10 / 30
    assert m["t1w_snr_wm"] == pytest.approx(20, rel=0.1)
    assert m["t1w_cnr"] == pytest.approx(30 / np.sqrt(50), rel=0.1)
    assert m["t1w_cjv"] == pytest.approx(1 / 3, rel=0.1)


def test_dwi_b0_snr_temporal_and_single(dwi, tmp_path):
    m = qc_metrics.dwi_b0_snr(dwi["dwi"], dwi["bval"], dwi["mask"])
    # temporal SNR over 3 b=0 volumes: 200 / 10 (median of noisy SD estimates; SD of 3 samples is
    # biased low, so the median SNR lies a little above 20)
    assert 16 < m["dwi_b0_snr"] < 32
    assert m["dwi_mask_ml"] == pytest.approx(dwi["brain"].sum() * 27 / 1000)
    one = tmp_path / "one.bval"
    one.write_text("0 1000 5000 1000 1000 3000 1000\n")
    m1 = qc_metrics.dwi_b0_snr(dwi["dwi"], str(one), dwi["mask"])
    # one b=0: DIPY's local noise estimate, which also counts the brain edge as noise: below 200 / 10
    assert 8 < m1["dwi_b0_snr"] < 20
    short = tmp_path / "short.bval"
    short.write_text("0 1000\n")
    with pytest.raises(ValueError, match="7 volumes but 2 b-values"):
        qc_metrics.dwi_b0_snr(dwi["dwi"], str(short), dwi["mask"])


def test_visit_metrics_from_tables(head, tmp_path):
    vol = tmp_path / "vol.tsv"
    vol.write_text("subject\tsession\tstructure\tmeasure\tvalue\tunit\n"
                   "01\t\tCSF\tvolume\t300.5\tmL\n01\t\tGM\tvolume\t650\tmL\n01\t\tWM\tvolume\t500\tmL\n"
                   "01\t\tbrainmask\tvolume\t1450.5\tmL\n")
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"correlation_before": 0.41, "correlation_after": 0.93, "transform": "SyN"}))
    dti = tmp_path / "dti.tsv"
    dti.write_text("subject\tsession\tstructure\tmeasure\tvalue\tunit\n"
                   "01\t\tbrain\tFA_mean\t0.25\tunitless\n01\t\twm_fa0.2\tFA_mean\t0.41\tunitless\n")
    rec = qc_metrics.visit_metrics("sub-01", None, t1w=head["t1"], dseg=head["dseg"], volumes=str(vol),
                                   reg_metrics=str(reg), dti_stats=str(dti))
    m = rec["metrics"]
    assert rec["session_id"] == "n/a" and set(m) == set(qc_metrics.METRICS)
    assert (m["csf_ml"], m["gm_ml"], m["wm_ml"], m["brainmask_ml"]) == (300.5, 650.0, 500.0, 1450.5)
    assert (m["reg_similarity_before"], m["reg_similarity_after"]) == (0.41, 0.93)
    assert m["fa_wm_mean"] == 0.41
    assert m["dwi_b0_snr"] is None and m["fs_etiv_ml"] is None  # missing inputs: None, never 0
    reg.write_text(json.dumps({"transform": "SyN"}))
    with pytest.raises(ValueError, match="lack correlation_before"):
        qc_metrics.registration_numbers(str(reg))


def test_freesurfer_numbers(tmp_path):
    import pandas as pd

    g = pd.DataFrame({"subject": ["sub-01"] * 4, "session": [""] * 4,
                      "atlas": ["aseg", "aparc", "aparc", "aseg"], "hemisphere": ["", "lh", "rh", ""],
                      "structure": ["eTIV", "MeanThickness", "MeanThickness", "BrainSeg"],
                      "measure": ["EstimatedTotalIntraCranialVol", "MeanThickness", "MeanThickness", "BrainSegVol"],
                      "value": [1_500_000.0, 2.4, 2.6, 1_100_000.0]})
    p = tmp_path / "g.parquet"
    g.to_parquet(p)
    m = qc_metrics.freesurfer_numbers(str(p))
    assert m == {"fs_etiv_ml": 1500.0, "fs_mean_thickness_mm": pytest.approx(2.5)}


def test_empty_mask_still_gives_a_figure(head, tmp_path):
    """A failed (empty) brain mask is shown over the whole field of view, not a crashed QC job."""
    empty = _save(tmp_path / "empty.nii.gz", np.zeros(head["shape"], np.uint8), head["aff"])
    out = tmp_path / "m.png"
    cuts = qc.mask_mosaic(head["t1"], empty, str(out))
    assert min(cuts["z"]) < -40 + 10 and max(cuts["z"]) > -40 + 2 * 55 - 10  # spread over the whole volume
    img, _ = _png(out)
    assert img[..., :3].std() > 0.05


def test_template_levels_outline_and_grey_white():
    # a brain template: background 0, a thin CSF rim 30, GM 70, WM 100 (+ noise): the outline below
    # the CSF, the boundary between GM and WM
    ii, jj, kk = np.indices((40, 40, 40))
    r = np.sqrt((ii - 20) ** 2 + (jj - 20) ** 2 + (kk - 20) ** 2) / 18
    tpl = np.select([r < 0.75, r < 0.96, r < 1.0], [100.0, 70.0, 30.0], 0.0)
    tpl = tpl + np.random.default_rng(2).normal(0, 3, tpl.shape) * (tpl > 0)
    outline, gw = qc.template_levels(tpl)
    assert 0 < outline < 30 and 70 < gw < 100
    with pytest.raises(ValueError, match="empty"):
        qc.template_levels(np.zeros((3, 3, 3)))
