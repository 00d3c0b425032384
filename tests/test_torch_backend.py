"""PyTorch backends: dwi.tensor and dwi.denoise method torch (src/neurosmk/dwi_torch.py).

PyTorch is an optional extra (pip install 'neurosmk[gpu]'): without it these tests skip, unless
NEUROSMK_REQUIRE_TORCH=1 (CI installs torch and sets it), which turns the skip into a failure.
On a machine without a GPU everything runs on the CPU; the CUDA test runs only where a GPU is.

Agreement with DIPY 1.12.1 WLS on the demo DWI (sub-02, 72x72x36x21, b=2000, median_otsu mask
of ~48k voxels), measured here on the CPU: FA max |diff| 2.4e-7, mean 2.8e-8; MD/AD max rel.
diff 1.4e-6, RD 3.1e-5 (float32 output rounding of small RD); V1 |dot| >= 0.99999992. The
tolerances below are ~10-100x those figures.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np
import pytest
import yaml

from .helpers import DEMO_BIDS, REPO, job_counts, parse_dry_run, run_snakemake, write_config

if importlib.util.find_spec("torch") is None:
    _msg = "PyTorch not installed (pip install 'neurosmk[gpu]', torch==2.13.0)"
    if os.environ.get("NEUROSMK_REQUIRE_TORCH") == "1":
        raise ImportError(_msg + " but NEUROSMK_REQUIRE_TORCH=1")
    pytest.skip(_msg, allow_module_level=True)

import nibabel as nib  # noqa: E402
import torch  # noqa: E402

from neurosmk import dwi as D  # noqa: E402
from neurosmk import dwi_torch as T  # noqa: E402
from neurosmk import runtime  # noqa: E402

RAW = DEMO_BIDS / "sub-02" / "dwi" / "sub-02_dwi"
PARAMS = ("FA", "MD", "AD", "RD", "RGB", "V1")
# tolerances (see the module docstring for the measured differences)
FA_MAX, FA_MEAN = 1e-5, 1e-6
DIFF_REL_MAX, DIFF_REL_MEDIAN = 1e-3, 1e-6
V1_DOT_MIN = 0.9999


@pytest.fixture(scope="module")
def demo_fits(tmp_path_factory):
    """DIPY and torch (CPU) WLS fits of the demo DWI with the same mask."""
    tmp = tmp_path_factory.mktemp("torch_dti")
    mask = tmp / "mask.nii.gz"
    D.b0_mask(f"{RAW}.nii.gz", f"{RAW}.bval", f"{RAW}.bvec", str(mask))
    outs = {}
    for backend in ("dipy", "torch"):
        outs[backend] = {p: str(tmp / f"{backend}_{p}.nii.gz") for p in PARAMS}
    D.tensor_fit(f"{RAW}.nii.gz", f"{RAW}.bval", f"{RAW}.bvec", str(mask), outs["dipy"], fit_method="WLS")
    runtime.NOTES.clear()
    used = T.tensor_fit_torch(f"{RAW}.nii.gz", f"{RAW}.bval", f"{RAW}.bvec", str(mask), outs["torch"],
                              fit_method="WLS", device="cpu", threads=1)
    notes = dict(runtime.NOTES)
    load = {b: {p: nib.load(f) for p, f in o.items()} for b, o in outs.items()}
    m = np.asanyarray(nib.load(str(mask)).dataobj) > 0
    return {"img": load, "data": {b: {p: i.get_fdata() for p, i in o.items()} for b, o in load.items()},
            "mask": m, "used": used, "notes": notes}


@pytest.mark.slow
def test_torch_matches_dipy_wls_on_demo(demo_fits):
    d, m = demo_fits["data"], demo_fits["mask"]
    assert m.sum() > 20000
    fa_dipy = d["dipy"]["FA"][m]
    assert 0.1 < fa_dipy.mean() < 0.5 and fa_dipy.max() > 0.7  # a real fit, not zeros
    fa_diff = np.abs(d["torch"]["FA"][m] - fa_dipy)
    assert fa_diff.max() < FA_MAX and fa_diff.mean() < FA_MEAN, (fa_diff.max(), fa_diff.mean())
    for p in ("MD", "AD", "RD"):
        a, b = d["dipy"][p][m], d["torch"][p][m]
        assert np.all(a > 0) and 1e-4 < np.median(a) < 3e-3, p  # mm^2/s
        rel = np.abs(a - b) / np.abs(a)
        assert rel.max() < DIFF_REL_MAX and np.median(rel) < DIFF_REL_MEDIAN, (p, rel.max(), np.median(rel))
    v_dipy, v_torch = d["dipy"]["V1"][m], d["torch"]["V1"][m]
    assert np.allclose(np.linalg.norm(v_torch, axis=-1), 1, atol=1e-5)
    dot = np.abs((v_dipy * v_torch).sum(-1))  # eigenvector signs are arbitrary in both
    assert dot.min() > V1_DOT_MIN, dot.min()
    assert np.abs(d["torch"]["RGB"][m] - d["dipy"]["RGB"][m]).max() < 1e-4


@pytest.mark.slow
def test_torch_outputs_have_dipy_layout(demo_fits):
    """Same shapes, dtypes, affines and zeros outside the mask as the DIPY backend."""
    imgs, m = demo_fits["img"], demo_fits["mask"]
    for p in PARAMS:
        a, b = imgs["dipy"][p], imgs["torch"][p]
        assert a.shape == b.shape and a.get_data_dtype() == b.get_data_dtype(), p
        assert np.allclose(a.affine, b.affine), p
        assert not np.any(demo_fits["data"]["torch"][p][~m]), p
    assert imgs["torch"]["RGB"].shape[-1] == 3 and imgs["torch"]["V1"].shape[-1] == 3


@pytest.mark.slow
def test_device_recorded_for_provenance(demo_fits):
    assert demo_fits["used"] == "cpu"
    assert demo_fits["notes"]["Device"] == "cpu"
    assert demo_fits["notes"]["TorchVersion"] == torch.__version__


def _synthetic(n=500, seed=0):
    """Noise-free signals of known random tensors (b=0 + 30 directions at b=1000)."""
    from dipy.core.gradients import gradient_table

    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(30, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    bvals = np.r_[0, np.full(30, 1000.0)]
    gtab = gradient_table(bvals, bvecs=np.vstack([[0, 0, 0], dirs]))
    evals = np.sort(rng.uniform(0.2e-3, 2e-3, size=(n, 3)), axis=1)[:, ::-1]
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    D_ = q @ (evals[:, :, None] * np.swapaxes(q, 1, 2))
    g = gtab.bvecs
    adc = np.einsum("vi,nij,vj->nv", g, D_, g)
    signal = 1000.0 * np.exp(-bvals[None] * adc)
    return gtab, signal, evals, q


@pytest.mark.parametrize("fit_method", ["WLS", "OLS"])
def test_fit_recovers_known_tensors(fit_method):
    gtab, signal, evals, q = _synthetic()
    got_vals, got_vecs = T.fit_tensors(T.design_matrix(gtab), signal, fit_method=fit_method, device="cpu",
                                       batch_voxels=128)  # several batches
    assert np.allclose(got_vals, evals, rtol=1e-8, atol=1e-12)
    dot = np.abs(np.einsum("ni,ni->n", got_vecs[:, :, 0], q[:, :, 0]))
    assert dot.min() > 1 - 1e-8
    assert np.all(got_vals[:, 0] >= got_vals[:, 1]) and np.all(got_vals[:, 1] >= got_vals[:, 2])


def test_wls_equals_dipy_function_on_noisy_signal():
    """With noise WLS and OLS differ; torch's WLS must equal dipy.reconst.dti.wls_fit_tensor."""
    from dipy.reconst.dti import design_matrix, wls_fit_tensor

    gtab, signal, _, _ = _synthetic(n=300, seed=1)
    noisy = np.abs(signal + np.random.default_rng(2).normal(scale=40, size=signal.shape))
    X = design_matrix(gtab)
    dipy_params, _ = wls_fit_tensor(X, noisy.astype(np.float32))  # (n, 12): evals, then evecs
    dipy_vals = dipy_params[:, :3]
    vals, vecs = T.fit_tensors(T.design_matrix(gtab), noisy.astype(np.float32), "WLS", "cpu")
    # DIPY takes log S in float32, torch in float64: ~1e-6 relative on the smallest eigenvalues
    assert np.allclose(vals, dipy_vals, rtol=2e-5, atol=1e-12)
    ols, _ = T.fit_tensors(T.design_matrix(gtab), noisy.astype(np.float32), "OLS", "cpu")
    assert np.abs(ols - vals).max() > 1e-6  # the refit changes something: it is not OLS


def test_rejects_unsupported_fit_and_degenerate_gradients():
    gtab, signal, _, _ = _synthetic(n=10)
    with pytest.raises(ValueError, match=r"'NLLS' is not available with method 'torch'"):
        T.fit_tensors(T.design_matrix(gtab), signal, fit_method="NLLS")
    from dipy.core.gradients import gradient_table

    few = gradient_table(np.r_[0, 1000, 1000, 1000.0], bvecs=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]))
    with pytest.raises(D.InputError, match="determines only 4 of the 7 tensor parameters"):
        T.design_matrix(few, source="x.bval")


def test_device_choice():
    if torch.cuda.is_available():
        assert T.pick_device("auto").type == "cuda"
    else:
        assert T.pick_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match=r"'dwi.tensor.device' is 'cuda' but PyTorch .* sees no CUDA device"):
            T.pick_device("cuda")
    assert T.pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
        T.pick_device("gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    gtab, signal, _, _ = _synthetic(n=2000, seed=3)
    noisy = np.abs(signal + np.random.default_rng(4).normal(scale=40, size=signal.shape))
    X = T.design_matrix(gtab)
    cpu_vals, _ = T.fit_tensors(X, noisy, "WLS", "cpu")
    gpu_vals, _ = T.fit_tensors(X, noisy, "WLS", "cuda")
    assert np.allclose(cpu_vals, gpu_vals, rtol=1e-9, atol=1e-15)


def test_backend_entry_says_what_to_install():
    from neurosmk.backends import STEPS, BackendError, check_methods

    for step in ("dwi.tensor", "dwi.denoise"):
        b = STEPS[step]["torch"]
        assert b.modules == ("torch",) and "pip install 'neurosmk[gpu]'" in b.install, step
    assert (REPO / "envs" / f"{b.env}.yaml").exists()
    assert "torch==2.13.0" in (REPO / "envs" / f"{b.env}.yaml").read_text()
    assert 'gpu = ["torch==2.13.0"]' in (REPO / "pyproject.toml").read_text()
    from neurosmk.config import validate_config

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base["dwi"]["tensor"]["method"] = "torch"
    cfg = validate_config(base)
    with pytest.raises(BackendError, match=r"needs the Python package\(s\) torch.*pip install 'neurosmk\[gpu\]'"):
        check_methods(cfg, has_module=lambda name: False)
    assert check_methods(cfg, has_module=lambda name: True)["dwi.tensor"] == "torch"


# ---- MP-PCA -------------------------------------------------------------------------------------
# Measured on the full demo DWI (72x72x36x21) against dipy.denoise.localpca.mppca (float32 input,
# so DIPY computes in float32): denoised max |diff| 0.058 (signal up to 2299), 99.9th percentile
# of the relative diff 6.9e-4; sigma median rel. diff 1.4e-7, max 2.9e-3 (0.1 % of voxels above
# 1e-3: a component on the other side of the threshold). CPU time, 1 thread: DIPY 26.2 s, torch
# 19.2 s. The test uses a 30x30x16 crop (seconds).
@pytest.mark.slow
def test_mppca_matches_dipy_on_demo_crop():
    from dipy.denoise.localpca import mppca

    data = nib.load(f"{RAW}.nii.gz").get_fdata(dtype=np.float32)[20:50, 20:50, 10:26]
    ref, ref_sigma = mppca(data, patch_radius=2, return_sigma=True)
    den, sigma = T.mppca(data, patch_radius=2, device="cpu", batch_voxels=1000)  # several batches
    assert den.shape == data.shape and sigma.shape == data.shape[:3]
    # it denoises: the residual is noise-sized, not zero and not the signal
    resid = np.abs(data - den)
    assert 0.2 * np.median(ref_sigma) < np.median(resid) < 5 * np.median(ref_sigma)
    diff = np.abs(den - ref)
    rel = diff / np.maximum(np.abs(ref), 1)
    assert diff.max() < 0.05 and np.quantile(rel, 0.999) < 1e-3, (diff.max(), np.quantile(rel, 0.999))
    srel = np.abs(sigma - ref_sigma) / np.maximum(ref_sigma, 1e-3)
    assert np.median(srel) < 1e-5 and srel.max() < 1e-2, (np.median(srel), srel.max())
    assert np.median(ref_sigma) > 0.1


def test_denoise_file_wrapper_records_device(tmp_path):
    img = nib.load(f"{RAW}.nii.gz")
    small = nib.Nifti1Image(np.asarray(img.dataobj)[25:45, 25:45, 12:22], img.affine, img.header)
    src = tmp_path / "dwi.nii.gz"
    small.to_filename(src)
    runtime.NOTES.clear()
    used = T.denoise_mppca_torch(str(src), str(tmp_path / "den.nii.gz"), str(tmp_path / "noise.nii.gz"),
                                 device="auto", threads=1)
    assert used == ("cuda:0" if torch.cuda.is_available() else "cpu") == runtime.NOTES["Device"]
    ref = {k: tmp_path / f"ref_{k}.nii.gz" for k in ("den", "noise")}
    D.denoise_mppca(str(src), str(ref["den"]), str(ref["noise"]))
    for k in ("den", "noise"):
        a, b = nib.load(ref[k]), nib.load(tmp_path / f"{k}.nii.gz")
        assert a.shape == b.shape and a.get_data_dtype() == b.get_data_dtype() and np.allclose(a.affine, b.affine)
        assert np.abs(a.get_fdata() - b.get_fdata()).max() < 0.05


# ---- rule level --------------------------------------------------------------------------------
def _small_bids(dst):
    """sub-02's DWI cropped to its central 24x24x12 voxels."""
    src = DEMO_BIDS
    (dst / "sub-02" / "dwi").mkdir(parents=True)
    for f in ("dataset_description.json", "participants.tsv"):
        shutil.copy(src / f, dst / f)
    img = nib.load(f"{RAW}.nii.gz")
    x, y, z = (s // 2 for s in img.shape[:3])
    sl = (slice(x - 12, x + 12), slice(y - 12, y + 12), slice(z - 6, z + 6))
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.array([s.start for s in sl]) + img.affine[:3, 3]
    nib.Nifti1Image(np.asarray(img.dataobj)[sl], aff, img.header).to_filename(
        dst / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    for ext in ("bval", "bvec"):
        shutil.copy(f"{RAW}.{ext}", dst / "sub-02" / "dwi" / f"sub-02_dwi.{ext}")
    return dst


def _config(tmp_path, bids, device="auto", denoise="none", **tensor):
    return write_config(tmp_path / f"config-{device}.yaml", {
        "bids_dir": str(bids), "output_dir": str(tmp_path / "out"), "freesurfer_dir": None,
        "steps": {"anat": False, "dwi": True, "freesurfer_stats": False},
        "dwi": {"denoise": {"method": denoise}, "degibbs": {"method": "none"},
                "tensor": {"method": "torch", "fit_method": "WLS", "device": device, **tensor}}}, scenario="torch")


def _resources(out, rule: str) -> dict[str, str]:
    return parse_dry_run(out.stdout)[rule]["resources"]


def test_dry_run_selects_torch_rules_and_gpu_profile_requests_gpu(tmp_path):
    cfg = _config(tmp_path, _small_bids(tmp_path / "bids"), denoise="torch")
    out = run_snakemake(["-n", "--configfile", str(cfg), "--profile", str(REPO / "profiles" / "slurm-gpu"),
                         "--executor", "dryrun"], cwd=tmp_path, timeout=300)
    text = out.stdout + out.stderr
    jobs = job_counts(out.stdout)
    assert jobs.get("dwi_tensor_torch") == 1 and "dwi_tensor_dipy" not in jobs, jobs
    assert jobs.get("dwi_denoise_torch") == 1 and "dwi_denoise_dipy" not in jobs, jobs
    parsed = parse_dry_run(text)
    res = parsed["dwi_tensor_torch"]["resources"]
    assert res["gpu"] == "1" and res["slurm_partition"] == "gpu" and res["mem_mb"] == "4000", res
    res = parsed["dwi_denoise_torch"]["resources"]
    assert res["gpu"] == "1" and res["slurm_partition"] == "gpu" and res["mem_mb"] == "6000", res
    for rule, job in parsed.items():  # every other job stays on the CPU partition without a GPU
        for r in (j["resources"] for j in job["jobs"] if j["resources"]):
            if rule not in ("dwi_tensor_torch", "dwi_denoise_torch"):
                assert r["slurm_partition"] == "cpu" and "gpu" not in r, (rule, r)
    # the CPU SLURM profile: same rule, CPU partition, no GPU (device auto runs on the CPU there);
    # ungrouped for this run (profiles/slurm groups each chain) so the job's own request shows
    out = run_snakemake(["-n", "--configfile", str(cfg), "--profile", str(REPO / "profiles" / "slurm"),
                         "--executor", "dryrun", "--groups", "none=none"], cwd=tmp_path, timeout=300)
    res = _resources(out, "dwi_tensor_torch")
    assert res["slurm_partition"] == "cpu" and "gpu" not in res, res


def test_dry_run_device_cuda_requests_gpu_locally(tmp_path):
    cfg = _config(tmp_path, _small_bids(tmp_path / "bids"), device="cuda")
    out = run_snakemake(["-n", "--configfile", str(cfg), "--profile", str(REPO / "profiles" / "laptop"),
                         "--resources", "gpu=1"], cwd=tmp_path, timeout=300)
    res = _resources(out, "dwi_tensor_torch")
    assert res["gpu"] == "1", res


def test_dry_run_rejects_nlls_with_torch(tmp_path):
    cfg = _config(tmp_path, _small_bids(tmp_path / "bids"), fit_method="NLLS")
    res = run_snakemake(["-n", "--cores", "1", "--configfile", str(cfg)], cwd=tmp_path, timeout=300, check=False)
    assert res.returncode != 0
    assert "'dwi.tensor.fit_method': 'NLLS' is not available with method 'torch'" in res.stdout + res.stderr


@pytest.mark.slow
def test_torch_rule_runs_locally_with_gpu_resource(tmp_path):
    """Both torch rules for real on a cropped DWI, through the laptop profile with --resources gpu=1."""
    bids = _small_bids(tmp_path / "bids")
    cfg = _config(tmp_path, bids, denoise="torch")
    run_snakemake(["--configfile", str(cfg), "--profile", str(REPO / "profiles" / "laptop"),
                   "--resources", "gpu=1", "--cores", "2"], cwd=tmp_path, timeout=600)
    out = tmp_path / "out"
    log = (out / "logs" / "dwi_tensor_torch" / "sub-02.log").read_text()
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"fitted on {want}" in log, log
    assert f"denoised on {want}" in (out / "logs" / "dwi_denoise_torch" / "sub-02.log").read_text()
    # the device reaches the provenance sidecars (runtime.note -> neurosmk.provenance)
    import json

    for side in ("sub-02_model-DTI_param-FA_dwimap.json", "sub-02_desc-denoised_dwi.json"):
        rec = json.loads((out / "sub-02" / "dwi" / side).read_text())
        assert rec["Device"] == ("cuda:0" if want == "cuda" else "cpu"), (side, rec)
        assert rec["TorchVersion"] == torch.__version__, (side, rec)
    fa = nib.load(out / "sub-02" / "dwi" / "sub-02_model-DTI_param-FA_dwimap.nii.gz").get_fdata()
    mask = np.asanyarray(nib.load(out / "sub-02" / "dwi" / "sub-02_desc-brain_mask.nii.gz").dataobj) > 0
    assert mask.sum() > 500 and 0.05 < fa[mask].mean() < 0.8 and not fa[~mask].any()
    # the same maps as the DIPY backend on the same inputs (the torch-denoised series)
    ref = {p: str(tmp_path / f"ref_{p}.nii.gz") for p in PARAMS}
    raw = bids / "sub-02" / "dwi" / "sub-02_dwi"
    den = out / "sub-02" / "dwi" / "sub-02_desc-denoised_dwi.nii.gz"
    assert den.is_file()
    D.tensor_fit(str(den), f"{raw}.bval", f"{raw}.bvec",
                 str(out / "sub-02" / "dwi" / "sub-02_desc-brain_mask.nii.gz"), ref)
    assert np.abs(nib.load(ref["FA"]).get_fdata() - fa).max() < FA_MAX
    assert (out / "group" / "dwi_dti_roistats.tsv").is_file()
    # the device is cosmetic: switching it re-runs nothing
    cfg_cpu = _config(tmp_path, bids, device="cpu", denoise="torch")
    res = run_snakemake(["-n", "--configfile", str(cfg_cpu), "--cores", "1"], cwd=tmp_path, timeout=300)
    assert job_counts(res.stdout) == {}, res.stdout[-2000:]
