"""End-to-end: the default (portable Python) pipeline on a reduced copy of the demo, checked
on the content of its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from .conftest import run_snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(reduced_run):
    return reduced_run  # the session's one run of the reduced demo (tests/conftest.py)


def _vol_ml(path):
    img = nib.load(str(path))
    return float((np.asanyarray(img.dataobj) > 0).sum() * np.prod(img.header.get_zooms()[:3]) / 1000)


def test_brain_mask_volume_plausible(pipeline):
    ml = _vol_ml(pipeline["out"] / "sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    assert 1000 < ml < 1900, ml  # adult intracranial volume range, mL


def test_tissue_volumes_sum_to_mask(pipeline):
    t = pd.read_csv(pipeline["out"] / "sub-01/anat/sub-01_desc-tissue_volumes.tsv", sep="\t",
                    keep_default_na=False, na_values=["n/a"])
    assert set(t.participant_id) == {"sub-01"} and t.session_id.isna().all()
    vols = dict(zip(t.structure, t.value))
    assert set(vols) == {"CSF", "GM", "WM", "brainmask"}
    assert (t.unit == "mL").all()
    assert abs(vols["CSF"] + vols["GM"] + vols["WM"] - vols["brainmask"]) / vols["brainmask"] < 0.01
    # real anatomy: GM and WM each several hundred mL, CSF the smallest of the three
    assert 300 < vols["GM"] < 1100 and 250 < vols["WM"] < 1000, vols
    assert vols["CSF"] < min(vols["GM"], vols["WM"])
    # the label image agrees with the probability maps' argmax for most voxels
    out = pipeline["out"] / "sub-01/anat"
    dseg = np.asanyarray(nib.load(str(out / "sub-01_dseg.nii.gz")).dataobj)
    probs = np.stack([nib.load(str(out / f"sub-01_label-{t}_probseg.nii.gz")).get_fdata() for t in ("CSF", "GM", "WM")])
    m = dseg > 0
    assert (probs.argmax(0)[m] + 1 == dseg[m]).mean() > 0.9


def test_segmentation_ordered_by_intensity(pipeline):
    out = pipeline["out"] / "sub-01/anat"
    t1 = nib.load(str(out / "sub-01_desc-preproc_T1w.nii.gz")).get_fdata()
    dseg = np.asanyarray(nib.load(str(out / "sub-01_dseg.nii.gz")).dataobj)
    means = [t1[dseg == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # CSF < GM < WM on a T1w


def test_registration_improves_similarity(pipeline):
    m = json.loads((pipeline["out"] / "sub-01/anat/"
                    "sub-01_space-MNI152NLin2009aSym_desc-registration_metrics.json").read_text())
    assert m["correlation_after"] > m["correlation_before"] + 0.1, m
    assert m["correlation_after"] > 0.6, m
    warped = nib.load(str(pipeline["out"] / "sub-01/anat/sub-01_space-MNI152NLin2009aSym_desc-brain_T1w.nii.gz"))
    assert warped.ndim == 3
    for name in ("from-T1w_to-MNI152NLin2009aSym_mode-image_desc-warp_xfm.nii.gz",
                 "from-MNI152NLin2009aSym_to-T1w_mode-image_desc-warp_xfm.nii.gz"):
        w = nib.load(str(pipeline["out"] / "sub-01/anat" / f"sub-01_{name}"))
        assert w.ndim == 5 and w.shape[-1] == 3  # ITK displacement field
        assert np.abs(w.get_fdata()).max() > 0.5  # non-trivial deformation (mm)


def test_dti_maps(pipeline):
    out = pipeline["out"] / "sub-02/dwi"
    fa = nib.load(str(out / "sub-02_model-DTI_param-FA_dwimap.nii.gz")).get_fdata()
    md = nib.load(str(out / "sub-02_model-DTI_param-MD_dwimap.nii.gz")).get_fdata()
    ad = nib.load(str(out / "sub-02_model-DTI_param-AD_dwimap.nii.gz")).get_fdata()
    rd = nib.load(str(out / "sub-02_model-DTI_param-RD_dwimap.nii.gz")).get_fdata()
    mask = np.asanyarray(nib.load(str(out / "sub-02_desc-brain_mask.nii.gz")).dataobj) > 0
    assert fa.shape == mask.shape == (72, 72, 36)
    assert 500 < mask.sum() * 27 / 1000 < 2500  # mL at 3 mm
    assert fa.min() >= 0 and fa.max() <= 1
    assert np.allclose(md[mask], (ad[mask] + 2 * rd[mask]) / 3, rtol=1e-3, atol=1e-7)
    assert 0.0004 < np.median(md[mask]) < 0.0015  # mm^2/s, brain tissue at b=2000
    # white matter vs grey matter from the b=0 contrast (independent of FA): on a T2-weighted
    # b=0, WM is darkest, GM brighter, CSF brightest inside the brain
    from scipy.cluster.vq import kmeans2
    from scipy.ndimage import binary_erosion

    dwi = nib.load(str(out / "sub-02_desc-degibbs_dwi.nii.gz")).get_fdata()
    b0 = dwi[..., 0]
    inner = binary_erosion(mask, iterations=2)
    vals = b0[inner].reshape(-1, 1)
    centroids, labels = kmeans2(vals, np.percentile(vals, [20, 60, 95]).reshape(-1, 1), minit="matrix", seed=0)
    order = np.argsort(centroids.ravel())
    fa_in = fa[inner]
    wm, gm = fa_in[labels == order[0]].mean(), fa_in[labels == order[1]].mean()
    assert wm > gm + 0.05, (wm, gm)
    rgb = nib.load(str(out / "sub-02_model-DTI_param-RGB_dwimap.nii.gz"))
    assert rgb.shape == (72, 72, 36, 3)


def test_roi_table_and_group_tables(pipeline):
    out = pipeline["out"]
    stats = pd.read_csv(out / "sub-02/dwi/sub-02_model-DTI_desc-roi_stats.tsv", sep="\t",
                        keep_default_na=False, na_values=["n/a"])
    fa_brain = stats.query("structure == 'brain' and measure == 'FA_mean'").value.item()
    fa_wm = stats.query("structure == 'wm_fa0.2' and measure == 'FA_mean'").value.item()
    assert 0.1 < fa_brain < fa_wm < 0.8
    g = pd.read_csv(out / "group/dwi_dti_roistats.tsv", sep="\t", keep_default_na=False)
    assert list(g.columns) == ["participant_id", "session_id", "atlas", "hemisphere", "structure", "measure",
                               "value", "unit"]
    assert len(g) == len(stats) and set(g.participant_id) == {"sub-02"}
    assert set(g.session_id) == {"n/a"} and set(g.hemisphere) == {"n/a"}  # never an empty cell
    v = pd.read_csv(out / "group/anat_tissue_volumes.tsv", sep="\t", keep_default_na=False)
    assert set(v.participant_id) == {"sub-01"} and (v.atlas == "tissue").all()
    assert not (v == "").any().any() and not (g == "").any().any()
    # every group table has a data dictionary documenting each of its columns
    for t in [out / "group/dwi_dti_roistats.tsv", out / "group/anat_tissue_volumes.tsv",
              out / "group/neurosmk_long.tsv", *sorted((out / "group/freesurfer").glob("*.tsv")),
              *sorted((out / "group/freesurfer/wide").glob("*.tsv"))]:
        cols = t.read_text().split("\n", 1)[0].split("\t")
        doc = json.loads(t.with_suffix(".json").read_text())
        missing = [c for c in cols if "Description" not in doc.get(c, {})]
        assert not missing, (t, missing)


def test_qc_figures_are_real_images(pipeline):
    import matplotlib.image as mpimg

    figs = sorted((pipeline["out"]).glob("sub-*/figures/*.png"))
    assert [f.name for f in figs] == ["sub-01_desc-brainmask_T1w.png", "sub-01_desc-dseg_T1w.png",
                                      "sub-01_desc-reg_T1w.png", "sub-02_desc-b0mask_dwi.png",
                                      "sub-02_desc-colorfa_dwi.png", "sub-02_desc-dti_dwi.png"]
    for f in figs:
        img = mpimg.imread(f)
        assert img.shape[0] > 900 and img.shape[1] > 2000  # 3 x 8 slices at 150 dpi
        assert img[..., :3].std() > 0.05  # not blank


def test_derivatives_metadata_and_logs(pipeline):
    out = pipeline["out"]
    dd = json.loads((out / "dataset_description.json").read_text())
    assert dd["DatasetType"] == "derivative" and dd["GeneratedBy"][0]["Name"] == "neurosmk"
    from neurosmk.paths import bench_path, log_path

    assert not (out / "benchmarks").exists()  # benchmarks live with the logs (BIDS logs/)
    bench = sorted(p.parent.name for p in out.glob("logs/*/sub-*.benchmark.tsv"))
    assert "anat_register_ants" in bench and "dwi_tensor_dipy" in bench
    b = pd.read_csv(bench_path(out, "dwi_tensor_dipy", "sub-02"), sep="\t")
    assert b["s"].iloc[0] > 0
    assert "dwi_tensor_dipy" in Path(log_path(out, "dwi_tensor_dipy", "sub-02")).parent.name
    assert Path(log_path(out, "dwi_tensor_dipy", "sub-02")).is_file()
    assert Path(log_path(out, "group_long")).is_file() and Path(bench_path(out, "group_long")).is_file()
    # no temporary files left behind by the atomic writers
    assert not [p for p in out.rglob(".*.tmp*")]


def test_sidecars_methods_and_report(pipeline, tmp_path):
    out = pipeline["out"]
    anat = out / "sub-01" / "anat"
    for name, step in (("desc-preproc_T1w", "anat.biascorrect"), ("desc-brain_mask", "anat.skullstrip"),
                       ("dseg", "anat.segment"), ("space-MNI152NLin2009aSym_desc-brain_T1w", "anat.register")):
        sc = json.loads((anat / f"sub-01_{name}.json").read_text())
        assert sc["Step"] == step and sc["Device"] == "cpu" and sc["SourceChecksums"], sc
    reg = json.loads((anat / "sub-01_space-MNI152NLin2009aSym_desc-brain_T1w.json").read_text())
    assert reg["Versions"]["antspyx"] and reg["Parameters"]["seed"] == 42
    methods = (out / "docs" / "methods.md").read_text()
    for text in ("N4", "ANTsPy", "brainextractor", "Atropos", "MNI152NLin2009aSym", "DIPY", "MP-PCA",
                 "Gibbs", "WLS", "Tustison", "Garyfallidis", "Fonov"):
        assert text in methods, text
    assert "MRtrix3" not in methods and "FSL" not in methods
    report = tmp_path / "report.html"
    run_snakemake(["--report", str(report), "--configfile", str(pipeline["cfg"])], cwd=pipeline["work"])
    html = report.read_text(errors="replace")
    for name in ("sub-01_desc-brainmask_T1w.png", "sub-01_desc-dseg_T1w.png", "sub-01_desc-reg_T1w.png",
                 "sub-02_desc-dti_dwi.png", "anat_tissue_volumes.tsv", "dwi_dti_roistats.tsv",
                 "freesurfer_stats_long.tsv", "freesurfer_outliers.tsv", "methods.md"):
        assert name in html, name


def test_second_run_does_nothing(pipeline):
    proc = run_snakemake(["-n", "--cores", "2", "--configfile", str(pipeline["cfg"])], cwd=pipeline["work"])
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _dry_jobs(pipeline, tmp_path, **overrides):
    from .conftest import reduced_config

    cfg = reduced_config(pipeline["reduced"], pipeline["out"], tmp_path / "edited.yaml", **overrides)
    p = run_snakemake(["-n", "--cores", "2", "--configfile", str(cfg)], cwd=pipeline["work"])
    from .conftest import job_counts

    return set(job_counts(p.stdout))


def test_param_edit_reruns_exactly_downstream(pipeline, tmp_path):
    jobs = _dry_jobs(pipeline, tmp_path, **{"dwi.tensor.fit_method": "OLS"})
    qc = {"qc_visit_metrics", "qc_visit_page", "qc_group_page"}  # QC numbers and pages (rules/qc.smk)
    assert jobs == {"dwi_tensor_dipy", "dwi_stats_qc", "group_dti_stats", "group_long", "methods", "all",
                    "qc_dwi_figures", *qc}, jobs
    jobs = _dry_jobs(pipeline, tmp_path, **{"anat.segment.mrf_weight": 0.3})
    assert jobs == {"anat_segment_atropos", "anat_volumes_qc", "group_anat_volumes", "group_long", "methods", "all",
                    *qc}, jobs


def test_cosmetic_edit_reruns_nothing(pipeline, tmp_path):
    assert _dry_jobs(pipeline, tmp_path, **{"anat.register.threads": 1, "report.title": "x"}) == set()


def test_freesurfer_aggregation_rules_match_cli(pipeline, tmp_path):
    import subprocess
    import sys

    from .conftest import REPO

    fs = pipeline["out"] / "group" / "freesurfer"
    long = pd.read_parquet(fs / "freesurfer_stats_long.parquet")
    assert set(long.participant_id) == {"sub-Subj001", "sub-ds000005_sub-01"}
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-m", "neurosmk.fsstats.cli", str(REPO / "demo" / "freesurfer"),
                    "--output-dir", str(tmp_path / "cli"), "--skip-bad"], check=True, env=env, timeout=300)
    cli = pd.read_parquet(tmp_path / "cli" / "freesurfer_stats_long.parquet")
    key = ["participant_id", "atlas", "hemisphere", "structure", "measure"]
    a = long.sort_values(key).reset_index(drop=True)
    b = cli.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 5000
    assert np.allclose(a.value.to_numpy(float), b.value.to_numpy(float), equal_nan=True)
    assert sorted(p.name for p in (fs / "qc").glob("*.png"))
    lh_thick = pd.read_csv(fs / "wide" / "aparc_lh_thickness.tsv", sep="\t")
    assert "lh_bankssts_thickness" in lh_thick.columns and len(lh_thick) == 2
    # one writer: the pipeline's tables are byte-identical to neurosmk-stats' (same stats paths)
    names = ["freesurfer_stats_long.tsv", "freesurfer_global_measures.tsv"] + [
        f"wide/{p.name}" for p in sorted((tmp_path / "cli" / "wide").glob("*.tsv"))]
    assert len(names) > 100 and sorted((fs / "wide").glob("*.tsv")) != []
    assert sorted(p.name for p in (fs / "wide").glob("*.tsv")) == sorted(
        p.name for p in (tmp_path / "cli" / "wide").glob("*.tsv"))
    for n in names:
        assert (fs / n).read_bytes() == (tmp_path / "cli" / n).read_bytes(), n
