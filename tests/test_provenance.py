"""Provenance: per-output JSON sidecars, the methods paragraph, and the report's contents.

Shell-rule sidecars are checked for real on the MRtrix3 rules (a 6-slice slab of the demo DWI,
~10 s) and, for FSL/FreeSurfer (not installable here), through `snakemake -n -p`: the sidecar
call is part of the command line, with the right record. Python-rule sidecars come from the
same small runs (dwi_stats_qc, group_dti_stats, and dwi_denoise_dipy in the second run).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import dwi_slab_bids
from .helpers import dry_run, run_snakemake, snakemake_env, write_config

REPO = Path(__file__).resolve().parents[1]
BIDS = REPO / "demo" / "bids"
SIDECAR_SH = REPO / "scripts" / "sidecar.sh"
sys.path.insert(0, str(REPO / "src"))

from neurosmk import provenance as P  # noqa: E402

HAVE_MRTRIX = all(shutil.which(t) for t in ("dwidenoise", "mrdegibbs", "dwi2mask", "dwi2tensor", "tensor2metric"))
if not HAVE_MRTRIX and os.environ.get("NEUROSMK_REQUIRE_MRTRIX") == "1":
    raise RuntimeError("NEUROSMK_REQUIRE_MRTRIX=1 but the MRtrix3 commands are not on PATH")
MRTRIX_ALL = {"denoise": "mrtrix", "degibbs": "mrtrix", "mask": "mrtrix", "tensor": "mrtrix"}


def _env():
    return snakemake_env()


def _smk(cfg: Path, *args, check=True, timeout=600):
    return run_snakemake(["--configfile", str(cfg), *args], timeout=timeout, check=check)


def _config(path: Path, bids: Path, out: Path, dwi_methods: dict, **top) -> Path:
    return write_config(path, {"bids_dir": str(bids), "output_dir": str(out),
                               "steps": {"anat": False, "freesurfer_stats": False},
                               "dwi": {s: {"method": m} for s, m in dwi_methods.items()}}, **top)


def _sha(path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _resolve(uri: str, out: Path, bids: Path) -> Path:
    if uri.startswith("bids::"):
        return out / uri[len("bids::"):]
    if uri.startswith("bids:raw:"):
        return bids / uri[len("bids:raw:"):]
    assert uri.startswith("file://"), uri
    return Path(uri[len("file://"):])


def _check_checksums(sc: dict, out: Path, bids: Path):
    assert sc["Sources"] and set(sc["SourceChecksums"]) == set(sc["Sources"])
    for uri, digest in sc["SourceChecksums"].items():
        assert digest == _sha(_resolve(uri, out, bids)), uri


# ---- naming ----------------------------------------------------------------------------------
def test_sidecar_names():
    assert P.sidecar_path("o/sub-01_desc-brain_mask.nii.gz") == "o/sub-01_desc-brain_mask.json"
    assert P.sidecar_path("o/sub-01_desc-tissue_volumes.tsv") == "o/sub-01_desc-tissue_volumes.json"
    assert P.sidecar_path("o/x_desc-affine_xfm.mat") == "o/x_desc-affine_xfm.json"
    for none in ("o/x_metrics.json", "o/sub-01_desc-dti_dwi.png", "o/group/freesurfer/wide", "o/methods.md"):
        assert P.sidecar_path(none) is None, none
    # an image and its gradient table share one sidecar
    assert P.sidecars_of(["d/x_dwi.nii.gz", "d/x_dwi.bval", "d/x_dwi.bvec"]) == ["d/x_dwi.json"]


# ---- scripts/sidecar.sh on its own (paths with spaces, quotes, backslashes) --------------------
def test_sidecar_sh_escapes_paths_and_matches_python(tmp_path):
    out, bids = tmp_path / "out dir", tmp_path / "raw"
    (out / "sub-01").mkdir(parents=True)
    (bids / "sub-01").mkdir(parents=True)
    raw = bids / "sub-01" / 'we"ird \\ name_T1w.nii.gz'
    raw.write_bytes(os.urandom(3 << 20))  # several read blocks
    other = tmp_path / "template.nii.gz"
    other.write_bytes(b"tpl")
    img = out / "sub-01" / "sub-01_desc-x_T1w.nii.gz"
    img.write_bytes(b"img")
    metrics = out / "sub-01" / "sub-01_metrics.json"  # a JSON output of its own: left alone
    metrics.write_text("{}")
    static = json.dumps(P.static_record(step="anat.x", method="m", rule="r", parameters={"a": [1, 2], "s": 'q"'},
                                        conda_env="envs/e.yaml", container="docker://i:1"))
    sc = out / "sub-01" / "sub-01_desc-x_T1w.json"
    res = subprocess.run(["sh", str(SIDECAR_SH), static, "printf 'tool 1.2\\nmore'", str(out), str(bids),
                          str(img), str(metrics), str(sc), "--", str(raw), str(other), str(raw)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert metrics.read_text() == "{}"
    rec = json.loads(sc.read_text())
    assert rec["ToolVersion"] == "tool 1.2" and rec["GeneratedBy"] == {"Name": "neurosmk", "Version": "unknown"}
    assert rec["Parameters"] == {"a": [1, 2], "s": 'q"'}
    assert rec["SoftwareEnvironment"] == {"CondaEnv": "envs/e.yaml", "Container": "docker://i:1", "Active": "host"}
    assert rec["Describes"] == [img.name]
    uris, sums = P.sources([raw, other], str(out), str(bids))  # the Python writer agrees
    assert rec["Sources"] == uris == ['bids:raw:sub-01/we"ird \\ name_T1w.nii.gz', f"file://{other}"]
    assert rec["SourceChecksums"] == sums
    _check_checksums(rec, out, bids)
    assert not list((out / "sub-01").glob("*.tmp.*"))


# ---- Python rules: sidecars only after success ----------------------------------------------
@pytest.mark.parametrize("fail", [False, True])
def test_python_sidecar_written_only_on_success(tmp_path, fail):
    out = tmp_path / "out"
    (out / "sub-01").mkdir(parents=True)
    inp = tmp_path / "in.nii.gz"
    inp.write_bytes(b"input")
    o = out / "sub-01" / "sub-01_desc-y_T1w.nii.gz"
    sc = out / "sub-01" / "sub-01_desc-y_T1w.json"
    prov = json.dumps(P.static_record(step="anat.y", method="m", rule="r", parameters={}, conda_env=None,
                                      container=None, script="scripts/dwi_degibbs.py"))
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        from types import SimpleNamespace
        from neurosmk import runtime
        class L(list):
            def items(self): return list(self.d.items())
        params = L(); params.d = {{"prov": {prov!r}, "k": 3}}
        smk = SimpleNamespace(threads=1, log=[], input=[{str(inp)!r}], output=[{str(o)!r}, {str(sc)!r}],
                              params=params, config={{"output_dir": {str(out)!r}, "bids_dir": "/nowhere"}}, rule="r")
        runtime.setup(smk)
        runtime.note(Device="cuda:0")
        open({str(o)!r}, "w").write("data")
        if {fail}:
            raise RuntimeError("boom")
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env())
    assert (res.returncode != 0) == fail, res.stderr
    if fail:
        assert not sc.exists()
        return
    rec = json.loads(sc.read_text())
    assert rec["Step"] == "anat.y" and rec["Parameters"] == {"k": 3} and rec["Device"] == "cuda:0"
    assert rec["Functions"] == ["neurosmk.dwi.degibbs"] and rec["Script"] == "scripts/dwi_degibbs.py"
    assert rec["Sources"] == [f"file://{inp}"] and rec["SourceChecksums"][f"file://{inp}"] == _sha(inp)
    assert rec["Versions"]["neurosmk"] == P.__version__ and "python" in rec["Versions"]


# ---- real MRtrix3 run + the same after switching dwi.denoise to DIPY -------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not HAVE_MRTRIX:
        pytest.skip("MRtrix3 not on PATH")
    tmp = tmp_path_factory.mktemp("prov")
    bids = dwi_slab_bids(tmp, z0=14, nz=6)

    out = tmp / "out"
    cfg1 = _config(tmp / "mrtrix.yaml", bids, out, MRTRIX_ALL)
    _smk(cfg1, "--cores", "2")
    snap = {p.relative_to(out): p.read_text() for p in out.rglob("*.json")}
    methods1 = (out / "docs" / "methods.md").read_text()
    cfg2 = _config(tmp / "dipy_denoise.yaml", bids, out, {**MRTRIX_ALL, "denoise": "dipy_mppca"})
    _smk(cfg2, "--cores", "2")
    report = tmp / "report.html"
    _smk(cfg2, "--report", str(report), timeout=300)
    assert json.loads((out / "dataset_description.json").read_text())["DatasetLinks"] == {"raw": f"file://{bids}"}
    return {"out": out, "bids": bids, "run1_json": snap, "methods1": methods1,
            "methods2": (out / "docs" / "methods.md").read_text(), "report": report}


def _dwi(out, name):
    return out / "sub-02" / "dwi" / f"sub-02_{name}"


@pytest.mark.slow
def test_mrtrix_sidecars(runs):
    bids = runs["bids"]
    expect = {"desc-denoised_dwi": ("dwi.denoise", "dwidenoise"), "desc-mppca_noise": ("dwi.denoise", "dwidenoise"),
              "desc-degibbs_dwi": ("dwi.degibbs", "mrdegibbs"), "desc-brain_mask": ("dwi.mask", "dwi2mask"),
              **{f"model-DTI_param-{p}_dwimap": ("dwi.tensor", "dwi2tensor")
                 for p in ("FA", "MD", "AD", "RD", "RGB", "V1")}}
    version = subprocess.run(["dwidenoise", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    for name, (step, tool) in expect.items():
        rel = Path("sub-02/dwi") / f"sub-02_{name}.json"
        sc = json.loads(runs["run1_json"][rel])
        assert sc["Step"] == step and sc["Method"] == "mrtrix" and sc["Rule"].endswith("_mrtrix"), sc
        assert sc["Describes"] == [f"sub-02_{name}.nii.gz"]
        # BIDS: required for derivative images (masks exempt); DTI maps are fitted in the mask
        assert sc.get("SkullStripped") == (None if name.endswith("_mask") else name.endswith("_dwimap")), name
        assert re.fullmatch(r"== \w+ 3\.\d+\.\d+ ==", sc["ToolVersion"])
        assert sc["ToolVersion"].split()[2] == version.split()[2]
        assert sc["Device"] == "cpu" and sc["GeneratedBy"] == {"Name": "neurosmk", "Version": P.__version__}
        assert sc["SoftwareEnvironment"] == {"CondaEnv": "envs/mrtrix3.yaml",
                                             "Container": "docker://mrtrix3/mrtrix3:3.0.4", "Active": "host"}
        # the command as run: real paths and thread count, without the sidecar call itself
        cl = sc["CommandLine"]
        assert tool in cl and "{" not in cl.replace("${TMPDIR", "") and "NEUROSMK_PROV" not in cl and "-nthreads " in cl
        if step != "dwi.denoise":  # run 2 changed only the denoise input: later sidecars are re-made
            assert sc["Sources"][0].startswith("bids::sub-02/dwi/")
    den = json.loads(runs["run1_json"][Path("sub-02/dwi/sub-02_desc-denoised_dwi.json")])
    assert den["Parameters"] == {"method": "mrtrix", "extent": "5,5,5"}
    assert den["Sources"] == ["bids:raw:sub-02/dwi/sub-02_dwi.nii.gz"]
    assert f" dwidenoise {bids}/sub-02/dwi/sub-02_dwi.nii.gz " in den["CommandLine"]  # shlex-quoted (plain path)
    ten = json.loads(runs["run1_json"][Path("sub-02/dwi/sub-02_model-DTI_param-FA_dwimap.json")])
    assert ten["Parameters"]["fit"] == "-ols -iter 1"
    assert ten["Sources"] == ["bids::sub-02/dwi/sub-02_desc-degibbs_dwi.nii.gz", "bids:raw:sub-02/dwi/sub-02_dwi.bval",
                              "bids:raw:sub-02/dwi/sub-02_dwi.bvec", "bids::sub-02/dwi/sub-02_desc-brain_mask.nii.gz"]


@pytest.mark.slow
def test_checksums_match_inputs(runs):
    """After run 2 every sidecar on disk describes the inputs as they are now."""
    out, bids = runs["out"], runs["bids"]
    # (figures/ holds the visit's QC numbers as JSON: a record of its own, not a sidecar)
    sidecars = [p for p in out.rglob("*.json") if p.name != "dataset_description.json"
                and ".neurosmk" not in p.parts and "figures" not in p.parts]
    assert len(sidecars) == 14  # 10 dwi images + ROI table + group table + combined table + QC table
    for p in sidecars:
        _check_checksums(json.loads(p.read_text()), out, bids)


@pytest.mark.slow
def test_python_sidecars(runs):
    out = runs["out"]
    den = json.loads(_dwi(out, "desc-denoised_dwi.json").read_text())  # re-made by run 2 (DIPY)
    from importlib import metadata

    assert den["Method"] == "dipy_mppca" and den["Rule"] == "dwi_denoise_dipy"
    assert den["Versions"]["dipy"] == metadata.version("dipy") and "nibabel" in den["Versions"]
    assert den["Functions"] == ["neurosmk.dwi.denoise_mppca"] and den["Script"] == "scripts/dwi_denoise.py"
    assert den["Parameters"] == {"method": "dipy_mppca", "patch_radius": 2} and den["Device"] == "cpu"
    assert set(den["Sources"]) == {f"bids:raw:sub-02/dwi/sub-02_dwi.{e}" for e in ("nii.gz", "bval", "bvec")}
    assert den["SoftwareEnvironment"]["CondaEnv"] == "envs/neurosmk.yaml"
    grp = json.loads((out / "group" / "dwi_dti_roistats.json").read_text())
    assert grp["Step"] == "group.tables" and grp["Sources"] == ["bids::sub-02/dwi/sub-02_model-DTI_desc-roi_stats.tsv"]
    assert grp["Functions"] == ["neurosmk.tables.concat_long"]
    # the table's sidecar is also its BIDS data dictionary
    cols = (out / "group" / "dwi_dti_roistats.tsv").read_text().split("\n", 1)[0].split("\t")
    assert cols[:2] == ["participant_id", "session_id"]
    assert all(grp[c]["Description"] for c in cols) and grp["hemisphere"]["Levels"]["lh"]


@pytest.mark.slow
def test_methods_follow_configured_methods(runs):
    m1, m2 = runs["methods1"], runs["methods2"]
    ver = re.search(r"3\.\d+\.\d+", subprocess.run(["dwidenoise", "-version"], capture_output=True,
                                                   text=True).stdout).group(0)
    assert f"MP-PCA (MRtrix3 dwidenoise, version {ver}; extent 5,5,5)" in m1
    assert f"mrdegibbs, version {ver}" in m1 and "dwi2mask" in m1 and "dwi2tensor (-ols -iter 1)" in m1
    assert "DIPY" not in m1 and "Garyfallidis" not in m1  # nothing ran with DIPY
    assert "Anatomical" not in m1 and "ANTs" not in m1  # anat disabled
    from importlib import metadata

    assert f"MP-PCA (DIPY {metadata.version('dipy')}; patch radius 2)" in m2 and "dwidenoise" not in m2
    assert "Garyfallidis" in m2 and "Veraart" in m2 and "Tournier" in m2  # DIPY, MP-PCA, MRtrix3 cited
    assert "No eddy-current or motion correction was applied." in m1
    # the rest of the text is the same (citation numbers aside)
    def rest(m):
        return re.sub(r"\[[\d, ]+\]", "[]", m.split("Gibbs ringing")[1].split("## References")[0])

    assert rest(m1) == rest(m2)


@pytest.mark.slow
def test_report_contents(runs):
    html = runs["report"].read_text(errors="replace")
    for name in ("methods.md", "dwi_dti_roistats.tsv", "sub-02_desc-dti_dwi.png"):
        assert name in html, name
    for caption in ("Mean FA, MD, AD and RD of every participant", "Methods section generated from the provenance",
                    "Fractional anisotropy (grey scale 0 to 1"):
        assert caption in html, caption


# ---- FSL / FreeSurfer: the sidecar call in the dry-run command lines -------------------------
def _sidecar_call(shell: str) -> list[str]:
    cmd, sep, rest = shell.partition(" && NEUROSMK_PROV=sidecar ")
    assert sep, shell[-300:]
    return shlex.split(rest)


def _dry_commands(cfg: Path) -> dict[str, str]:
    jobs, _ = dry_run(cfg)
    return {rule: job["command"] for rule, job in jobs.items() if job["command"]}


def test_fsl_freesurfer_rules_write_sidecars(tmp_path):
    out = tmp_path / "out"
    cfg = _config(tmp_path / "c.yaml", BIDS, out, {"preproc": "fsl_dwifslpreproc", "denoise": "mrtrix"},
                  **{"steps.anat": True, "anat.biascorrect.method": "freesurfer",
                     "anat.skullstrip.method": "synthstrip", "anat.skullstrip.use_gpu": True,
                     "anat.segment.method": "fsl_fast", "anat.subcortical.method": "fsl_first",
                     "anat.register.method": "fsl", "template.name": "MNI152NLin6Asym",  # FSL's MNI152
                     "dwi.preproc.pe_dir": "AP"})
    cmds = _dry_commands(cfg)
    a = f"{out}/sub-01/anat/sub-01"
    want = {
        "anat_biascorrect_freesurfer": ("anat.biascorrect", "freesurfer", [f"{a}_desc-preproc_T1w.json"],
                                        "build-stamp"),
        "anat_skullstrip_synthstrip": ("anat.skullstrip", "synthstrip",
                                       [f"{a}_desc-brain_mask.json", f"{a}_desc-brain_T1w.json"], "build-stamp"),
        "anat_segment_fsl_fast": ("anat.segment", "fsl_fast", [f"{a}_dseg.json"] + [
            f"{a}_label-{t}_probseg.json" for t in ("CSF", "GM", "WM")], "fslversion"),
        "anat_subcortical_fsl_first": ("anat.subcortical", "fsl_first", [f"{a}_seg-FIRST_dseg.json"], "fslversion"),
        "anat_register_fsl": ("anat.register", "fsl", [
            f"{a}_from-T1w_to-MNI152NLin6Asym_mode-image_desc-affine_xfm.json",
            f"{a}_from-T1w_to-MNI152NLin6Asym_mode-image_desc-warp_xfm.json",
            f"{a}_from-MNI152NLin6Asym_to-T1w_mode-image_desc-warp_xfm.json",
            f"{a}_space-MNI152NLin6Asym_desc-brain_T1w.json"], "fslversion"),
        "dwi_preproc_dwifslpreproc": ("dwi.preproc", "fsl_dwifslpreproc",
                                      [f"{out}/sub-02/dwi/sub-02_desc-preproc_dwi.json"], "fslversion"),
    }
    for rule, (step, method, sidecars, vtag) in want.items():
        args = _sidecar_call(cmds[rule])
        # the script and the dataset folders come from the environment the workflow sets at parse
        # time (rules/provenance.smk); the MRtrix sidecar tests run them for real
        assert args[:2] == ["sh", "$NEUROSMK_SIDECAR_SH"]
        static, vcmd, o, b = args[2:6]
        rec = json.loads(static)
        assert (rec["Step"], rec["Method"], rec["Rule"]) == (step, method, rule)
        assert vtag in vcmd
        assert (o, b) == ("$NEUROSMK_OUT", "$NEUROSMK_BIDS_DIR")
        outputs = args[6:args.index("--")]
        assert [x for x in outputs if x.endswith(".json")] == sidecars
        assert args[args.index("--") + 1:]  # the inputs, checksummed at run time
        assert rec["SoftwareEnvironment"]["Container"].startswith("docker://")
    syn = json.loads(_sidecar_call(cmds["anat_skullstrip_synthstrip"])[2])
    assert syn["Device"] == "gpu" and syn["Parameters"]["flags"] == ["-g"]
    pre = _sidecar_call(cmds["dwi_preproc_dwifslpreproc"])
    assert "dwifslpreproc -version" in pre[3] and "fslversion" in pre[3]  # MRtrix3 and FSL versions
    assert json.loads(pre[2])["Parameters"]["pe"] == ["-rpe_none", "-pe_dir", "AP"]
    # bval/bvec and the image share the one sidecar
    assert [x for x in pre[6:pre.index("--")] if not x.endswith(".json")][-2:] == [
        f"{out}/sub-02/dwi/sub-02_desc-preproc_dwi.bval", f"{out}/sub-02/dwi/sub-02_desc-preproc_dwi.bvec"]
    # recon-all's own outputs get none (a finished recon-all must never look incomplete)
    assert "NEUROSMK_PROV" not in cmds.get("freesurfer_recon_all", "")


def test_prov_param_has_no_threads_or_paths(tmp_path):
    """The prov param is a rerun trigger: thread counts and folder moves must not change it."""
    recs = []
    for i, threads in enumerate((1, 3)):
        cfg = _config(tmp_path / f"c{i}.yaml", BIDS, tmp_path / f"out{i}", MRTRIX_ALL,
                      **{"dwi.denoise.threads": threads, "dwi.tensor.threads": threads})
        cmds = _dry_commands(cfg)
        recs.append({r: _sidecar_call(c)[2:4] for r, c in cmds.items() if "NEUROSMK_PROV" in c})
    assert set(recs[0]) == {"dwi_denoise_mrtrix", "dwi_degibbs_mrtrix", "dwi_mask_mrtrix", "dwi_tensor_mrtrix"}
    assert recs[0] == recs[1]
    assert "out0" not in json.dumps(recs[0]) and str(BIDS) not in json.dumps(recs[0])
    assert P.__version__ not in json.dumps(recs[0])  # a version bump alone re-runs nothing


def test_methods_text_names_template_source_and_skipped_steps():
    reg = {"Step": "anat.register", "Method": "ants", "Versions": {"antspyx": "0.6.3", "nilearn": "0.12.1"},
           "Parameters": {"template": "MNI152NLin2009aSym", "transform": "SyN", "syn_iterations": [40, 20, 0],
                          "seed": 42},
           "Sources": ["bids::sub-01/anat/sub-01_desc-brain_T1w.nii.gz",
                       "file:///x/site-packages/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]}
    ten = {"Step": "dwi.tensor", "Method": "dipy", "Versions": {"dipy": "1.12.1"}, "Parameters": {"fit_method": "OLS"},
           "Sources": ["bids::sub-02/dwi/sub-02_dwi.nii.gz"]}
    text = P.methods_text([reg, ten], {"anat.register": "ants", "dwi.tensor": "dipy", "dwi.denoise": "none",
                                       "dwi.degibbs": "none", "dwi.preproc": "none"})
    assert "SyN transform (ANTsPy 0.6.3; SyN iterations 40,20,0, seed 42)" in text
    assert "distributed with nilearn 0.12.1" in text and "Abraham A" in text and "Fonov V" in text
    assert "fitted by OLS (DIPY 1.12.1)" in text
    assert "No denoising was applied." in text and "Gibbs ringing was not corrected." in text
    assert "denoised" not in text and "MRtrix3" not in text and "FSL" not in text
