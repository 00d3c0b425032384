"""Shared fixtures: a reduced copy of the demo dataset and one finished run of it. Running
Snakemake, writing configs and reading dry runs: tests/helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from .helpers import DEMO_BIDS, DEMO_FREESURFER, REPO, job_counts, run_snakemake, write_config

# re-exported for the test files that import them from here
__all__ = ["DEMO_BIDS", "REPO", "dwi_slab_bids", "job_counts", "reduced_config", "run_snakemake", "write_config"]


# Fixtures that run the real pipeline (minutes): a test that uses one is in the slow tier.
SLOW_FIXTURES = {"reduced_run"}


def pytest_collection_modifyitems(config, items):
    """The slow tier (`make test-fast` = `pytest -m "not slow"` leaves it out): tests marked
    ``slow``, tests that use a fixture of SLOW_FIXTURES, and the local-SLURM tests."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)


def dwi_slab_bids(root: Path, z0: int, nz: int) -> Path:
    """A BIDS dataset with the demo DWI (sub-02) cut to slices z0..z0+nz-1 (affine shifted so the
    slab stays where it was in scanner space); bval/bvec copied. Returns the BIDS folder."""
    import nibabel as nib

    bids = root / "bids"
    d = bids / "sub-02" / "dwi"
    d.mkdir(parents=True)
    shutil.copy(DEMO_BIDS / "dataset_description.json", bids)
    src = DEMO_BIDS / "sub-02" / "dwi" / "sub-02_dwi"
    img = nib.load(f"{src}.nii.gz")
    data = np.asanyarray(img.dataobj)[:, :, z0:z0 + nz]
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ [0, 0, z0] + img.affine[:3, 3]
    hdr = img.header.copy()
    hdr.set_data_shape(data.shape)
    nib.save(nib.Nifti1Image(data, aff, hdr), d / "sub-02_dwi.nii.gz")
    for ext in (".bval", ".bvec"):
        shutil.copy(f"{src}{ext}", d / f"sub-02_dwi{ext}")
    return bids


def _resample(img, zoom_mm, order=1):
    from nibabel.processing import resample_to_output

    return resample_to_output(img, voxel_sizes=zoom_mm, order=order)


@pytest.fixture(scope="session")
def reduced_demo(tmp_path_factory) -> dict:
    """The demo dataset, reduced so the whole pipeline runs in a few minutes.

    sub-01 T1w: resampled to 2 mm isotropic (96x120x120 from 192x256x256 at 0.9x0.94x0.94 mm);
    sub-02 DWI: unchanged (72x72x36x21 at 3 mm is already small);
    template: the nilearn MNI152 2009a template resampled to 2 mm.
    """
    import nibabel as nib

    from neurosmk.anat import nilearn_template

    root = tmp_path_factory.mktemp("reduced_demo")
    bids = root / "bids"
    shutil.copytree(DEMO_BIDS, bids)
    t1 = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    small = _resample(nib.load(str(t1)), 2.0)
    data = np.asarray(small.dataobj)
    nib.save(nib.Nifti1Image(np.clip(data, 0, None).astype(np.int16), small.affine), str(t1))
    tpl = _resample(nib.load(nilearn_template()), 2.0)
    tpl_path = root / "tpl_2mm.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(tpl.dataobj).astype(np.float32), tpl.affine), str(tpl_path))
    return {"root": root, "bids": bids, "template": tpl_path}


def reduced_config(reduced_demo, out: Path, path: Path, **overrides) -> Path:
    base = {
        "bids_dir": str(reduced_demo["bids"]),
        "output_dir": str(out),
        "freesurfer_dir": str(DEMO_FREESURFER),
        "template.t1w": str(reduced_demo["template"]),
        "anat.register.syn_iterations": [20, 10, 0],
        "anat.skullstrip.iterations": 500,
    }
    base.update(overrides)
    return write_config(path, **base)


@pytest.fixture(scope="session")
def reduced_run(reduced_demo, tmp_path_factory) -> dict:
    """One completed run of the whole pipeline on the reduced demo, shared by every test that only
    reads its outputs or dry-runs against it (tests/test_pipeline_e2e.py, tests/test_rerun.py)."""
    work = tmp_path_factory.mktemp("reduced_run")
    out = work / "out"
    cfg = reduced_config(reduced_demo, out, work / "config.yaml")
    run_snakemake(["--cores", "2", "--configfile", str(cfg)], cwd=work, timeout=1500)
    return {"out": out, "cfg": cfg, "work": work, "reduced": reduced_demo}
