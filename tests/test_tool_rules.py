"""MRtrix3 / FSL / FreeSurfer rule families, checked through `snakemake -n -p` (no FSL or
FreeSurfer here: their rules are tested by the exact command lines Snakemake would run, the file
wiring between rules, the resources, and the environment declarations)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from . import helpers as H
from .helpers import DEMO_BIDS as BIDS  # noqa: F401 (used by other test files)
from .helpers import REPO, parse_dry_run
from .helpers import merge as _merge

sys.path.insert(0, str(REPO / "src"))

from neurosmk.backends import STEPS  # noqa: E402

from .niwrap_oracle import simple_commands, tool_name  # noqa: E402


# ---- helpers (running Snakemake and reading its dry runs: tests/helpers.py) -----------------------
def write_config(tmp_path: Path, overrides: dict, bids: Path = BIDS) -> tuple[Path, Path]:
    out = tmp_path / "out"
    cfg = H.write_config(tmp_path / "config.yaml", _merge(overrides, {"bids_dir": str(bids), "output_dir": str(out)}))
    return cfg, out


def snakemake(cfg: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return H.run_snakemake(["--configfile", str(cfg), *args], env=env, check=False, timeout=120)


def dry_run(tmp_path: Path, overrides: dict, bids: Path = BIDS) -> tuple[dict[str, dict], Path]:
    cfg, out = write_config(tmp_path, overrides, bids)
    res = snakemake(cfg, "-n", "-p", "--cores", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return parse_dry_run(res.stdout), out


def calls(job: dict, tool: str) -> list[list[str]]:
    """The argv (shlex words) of every call of ``tool`` in a job's shell command: behaviour is
    checked on the parsed words, whatever the quoting; the interfaces in test_niwrap_interfaces.py."""
    import re

    from .niwrap_oracle import simple_commands, tool_name

    # shell variables the command sets (`dwi=<output>; ... "$dwi.tmp.nii.gz"`) are expanded, so
    # the words are what the tool receives
    # and a `for V in WORDS; do CMD; done` loop runs CMD once per word
    def expand(w, env):
        return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: env.get(m.group(1), m.group(0)), w)

    import shlex

    lex = shlex.shlex(job["shell"], posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    words = list(lex)
    # standalone assignments `NAME=value;` (simple_commands drops them with env prefixes)
    env = dict(w.split("=", 1) for w, nxt in zip(words, words[1:] + [""])
               if nxt == ";" and re.fullmatch(r"[A-Za-z_]\w*=.*", w, re.S))
    out, loop = [], None
    for a in simple_commands(job["shell"]):
        if len(a) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", a[0], re.S):
            k, v = a[0].split("=", 1)
            env[k] = v
            continue
        if len(a) >= 3 and a[0] == "for" and a[2] == "in":
            loop = (a[1], [expand(w, env) for w in a[3:]])
            continue
        if a and a[0] == "done":
            loop = None
            continue
        if a and a[0] == "do":
            a = a[1:]
        runs = [{**env, loop[0]: v} for v in loop[1]] if loop else [env]
        for e in runs:
            b = [expand(w, e) for w in a]
            if b and tool_name(b[0]) == tool:
                out.append(b)
    return out


def call(job: dict, tool: str) -> list[str]:
    found = calls(job, tool)
    assert len(found) == 1, (tool, found)
    return found[0]


def opt(argv: list[str], name: str, n: int = 1):
    """The value(s) of option ``name`` (``-x v`` or ``--x=v``); None when absent."""
    for i, a in enumerate(argv):
        if a == name:
            vals = argv[i + 1:i + 1 + n]
            return vals[0] if n == 1 else vals
        if name.endswith("=") and a.startswith(name):
            return a[len(name):]
    return None


def moves(job: dict) -> dict[str, str]:
    """destination -> source of the job's final renames (the temporary files become the outputs):
    the SRC DEST pairs of scripts/toolrun.sh's toolrun_end."""
    return {a[i + 1]: a[i] for a in calls(job, "toolrun_end") for i in range(1, len(a) - 1, 2)}


RAW_DWI = f"{BIDS}/sub-02/dwi/sub-02_dwi.nii.gz"
RAW_BVAL = f"{BIDS}/sub-02/dwi/sub-02_dwi.bval"
RAW_BVEC = f"{BIDS}/sub-02/dwi/sub-02_dwi.bvec"
RAW_T1 = f"{BIDS}/sub-01/anat/sub-01_T1w.nii.gz"
DTI_PARAMS = ("FA", "MD", "AD", "RD", "RGB", "V1")
MRTRIX_ALL = {"steps": {"anat": False},
              "dwi": {m: {"method": "mrtrix"} for m in ("denoise", "degibbs", "mask", "tensor")}}


def dwi_paths(out: Path) -> dict[str, str]:
    d = f"{out}/sub-02/dwi/sub-02"
    p = {"den": f"{d}_desc-denoised_dwi.nii.gz", "noise": f"{d}_desc-mppca_noise.nii.gz",
         "gibbs": f"{d}_desc-degibbs_dwi.nii.gz", "mask": f"{d}_desc-brain_mask.nii.gz",
         "pre": f"{d}_desc-preproc_dwi.nii.gz", "pre_bval": f"{d}_desc-preproc_dwi.bval",
         "pre_bvec": f"{d}_desc-preproc_dwi.bvec"}
    p.update({k: f"{d}_model-DTI_param-{k}_dwimap.nii.gz" for k in DTI_PARAMS})
    return p


def anat_paths(out: Path, tpl: str = "MNI152NLin2009aSym", atlas: str = "JHU") -> dict[str, str]:
    a = f"{out}/sub-01/anat/sub-01"
    return {"pre": f"{a}_desc-preproc_T1w.nii.gz", "mask": f"{a}_desc-brain_mask.nii.gz",
            "brain": f"{a}_desc-brain_T1w.nii.gz", "dseg": f"{a}_dseg.nii.gz",
            **{t: f"{a}_label-{t}_probseg.nii.gz" for t in ("CSF", "GM", "WM")},
            "first": f"{a}_seg-FIRST_dseg.nii.gz", "firstqc": f"{out}/sub-01/figures/sub-01_desc-first_slicesdir",
            "affine": f"{a}_from-T1w_to-{tpl}_mode-image_desc-affine_xfm.mat",
            "warp": f"{a}_from-T1w_to-{tpl}_mode-image_desc-warp_xfm.nii.gz",
            "invwarp": f"{a}_from-{tpl}_to-T1w_mode-image_desc-warp_xfm.nii.gz",
            "warped": f"{a}_space-{tpl}_desc-brain_T1w.nii.gz",
            "metrics": f"{a}_space-{tpl}_desc-registration_metrics.json",
            "atlas": f"{a}_space-T1w_atlas-{atlas}_dseg.nii.gz"}


def log(out: Path, rule: str, visit: str) -> str:
    return f"{out}/logs/{rule}/{visit}.log"


def assert_private_tmp(job: dict) -> None:
    """Tool outputs go to the job's private folder (scripts/toolrun.sh) and are renamed into place
    (the wrapper itself: tests/test_toolrun.py)."""
    assert calls(job, "toolrun_begin") and moves(job)
    assert all(src.startswith("$tmp/") for src in moves(job).values()), moves(job)


# ---- MRtrix3 ---------------------------------------------------------------------------------
def test_mrtrix_backends_wiring_and_resources(tmp_path):
    jobs, out = dry_run(tmp_path, MRTRIX_ALL)
    p = dwi_paths(out)
    assert {"dwi_denoise_mrtrix", "dwi_degibbs_mrtrix", "dwi_mask_mrtrix", "dwi_tensor_mrtrix"} <= set(jobs)
    assert not any(r.endswith("_dipy") for r in jobs)

    den = jobs["dwi_denoise_mrtrix"]
    assert den["input"] == [RAW_DWI] and den["output"] == [p["den"], p["noise"]]
    dn = call(den, "dwidenoise")
    assert dn[1] == RAW_DWI and opt(dn, "-extent") == "5,5,5" and opt(dn, "-nthreads") == "2"
    assert den["resources"]["mem_mb"] == "4000" and den["resources"]["runtime"] == "60"

    gib = jobs["dwi_degibbs_mrtrix"]
    assert gib["input"] == [p["den"]]  # wired to the denoised series
    g = call(gib, "mrdegibbs")
    assert g[1] == p["den"] and opt(g, "-axes") == "0,1" and opt(g, "-nshifts") == "20"

    mask = jobs["dwi_mask_mrtrix"]
    assert mask["input"] == [p["gibbs"], RAW_BVAL, RAW_BVEC]
    assert opt(call(mask, "dwi2mask"), "-fslgrad", 2) == [RAW_BVEC, RAW_BVAL]  # bvecs first

    ten = jobs["dwi_tensor_mrtrix"]
    assert ten["input"] == [p["gibbs"], RAW_BVAL, RAW_BVEC, p["mask"]]
    assert ten["output"] == [p[k] for k in DTI_PARAMS]
    t = call(ten, "dwi2tensor")
    assert t[1] == p["gibbs"] and opt(t, "-mask") == p["mask"] and opt(t, "-iter") == "1" and "-ols" in t
    metrics = calls(ten, "tensor2metric")
    assert [opt(m, "-modulate") for m in metrics] == ["none", "fa"]  # V1 unmodulated, colour FA by FA
    assert opt(call(ten, "mrcalc"), "-datatype") == "float32"
    # downstream rule is unchanged and reads the MRtrix outputs
    assert sorted(jobs["dwi_stats_qc"]["input"]) == sorted([p["mask"], *(p[k] for k in DTI_PARAMS)])


def test_mrtrix_params_follow_config(tmp_path):
    over = _merge(MRTRIX_ALL, {"dwi": {"denoise": {"method": "none"},
                                       "degibbs": {"slice_axis": 0, "nshifts": 12},
                                       "tensor": {"fit_method": "OLS"}}})
    jobs, out = dry_run(tmp_path, over)
    assert "dwi_denoise_mrtrix" not in jobs
    gib = jobs["dwi_degibbs_mrtrix"]
    assert gib["input"] == [RAW_DWI]  # denoise none: the raw series
    g = call(gib, "mrdegibbs")
    assert opt(g, "-axes") == "1,2" and opt(g, "-nshifts") == "12"
    assert opt(call(jobs["dwi_tensor_mrtrix"], "dwi2tensor"), "-iter") == "0"


def test_mrtrix_denoise_extent(tmp_path):
    jobs, _ = dry_run(tmp_path, _merge(MRTRIX_ALL, {"dwi": {"denoise": {"extent": [3, 3, 3]}}}))
    assert opt(call(jobs["dwi_denoise_mrtrix"], "dwidenoise"), "-extent") == "3,3,3"


def test_mrtrix_tensor_rejects_unsupported_fit(tmp_path):
    cfg, _ = write_config(tmp_path, _merge(MRTRIX_ALL, {"dwi": {"tensor": {"fit_method": "NLLS"}}}))
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0
    said = res.stdout + res.stderr
    assert "dwi.tensor.fit_method" in said and "'NLLS'" in said and "OLS" in said


# ---- dwi.preproc (dwifslpreproc) -------------------------------------------------------------
def _bids_with_sidecar(tmp_path: Path, meta: dict | None) -> Path:
    bids = tmp_path / "bids"
    d = bids / "sub-02" / "dwi"
    d.mkdir(parents=True)
    shutil.copy(BIDS / "dataset_description.json", bids)
    for f in (BIDS / "sub-02" / "dwi").iterdir():
        (d / f.name).symlink_to(f)
    if meta is not None:
        (d / "sub-02_dwi.json").write_text(json.dumps(meta))
    return bids


def test_preproc_dwifslpreproc_cpu(tmp_path):
    over = _merge(MRTRIX_ALL, {"dwi": {"preproc": {"method": "fsl_dwifslpreproc", "pe_dir": "AP"}}})
    jobs, out = dry_run(tmp_path, over)
    p = dwi_paths(out)
    pre = jobs["dwi_preproc_dwifslpreproc"]
    assert pre["input"] == [p["gibbs"], RAW_BVAL, RAW_BVEC]
    assert pre["output"] == [p["pre"], p["pre_bval"], p["pre_bvec"]]
    assert "gpu" not in pre["resources"]
    d = call(pre, "dwifslpreproc")
    assert d[1] == p["gibbs"] and opt(d, "-fslgrad", 2) == [RAW_BVEC, RAW_BVAL]
    assert "-rpe_none" in d and opt(d, "-pe_dir") == "AP" and opt(d, "-eddy_options") == " --slm=linear --repol "
    assert "CUDA_VISIBLE_DEVICES= dwifslpreproc" in pre["shell"]  # CPU: GPUs hidden, eddy_cpu runs
    assert set(moves(pre)) == {p["pre"], p["pre_bval"], p["pre_bvec"]}
    # the mask and the tensor fit use the corrected series and the rotated gradients
    assert jobs["dwi_mask_mrtrix"]["input"] == [p["pre"], p["pre_bval"], p["pre_bvec"]]
    assert jobs["dwi_tensor_mrtrix"]["input"] == [p["pre"], p["pre_bval"], p["pre_bvec"], p["mask"]]
    assert opt(call(jobs["dwi_tensor_mrtrix"], "dwi2tensor"), "-fslgrad", 2) == [p["pre_bvec"], p["pre_bval"]]


def test_preproc_gpu_and_sidecar(tmp_path):
    bids = _bids_with_sidecar(tmp_path, {"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.0589})
    over = {"steps": {"anat": False},
            "dwi": {"preproc": {"method": "fsl_dwifslpreproc", "use_gpu": True, "eddy_options": "--repol"}}}
    jobs, out = dry_run(tmp_path, over, bids=bids)
    pre = jobs["dwi_preproc_dwifslpreproc"]
    assert pre["resources"]["gpu"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in pre["shell"]
    d = call(pre, "dwifslpreproc")
    assert opt(d, "-pe_dir") == "j-" and opt(d, "-readout_time") == "0.0589" and opt(d, "-eddy_options") == " --repol "
    # DIPY mask after preproc
    assert jobs["dwi_mask_dipy"]["input"][0] == dwi_paths(out)["pre"]


def test_preproc_rpe_header(tmp_path):
    bids = _bids_with_sidecar(tmp_path, {"PhaseEncodingDirection": "j"})
    over = {"steps": {"anat": False}, "dwi": {"preproc": {"method": "fsl_dwifslpreproc", "rpe": "header"}}}
    jobs, _ = dry_run(tmp_path, over, bids=bids)
    d = call(jobs["dwi_preproc_dwifslpreproc"], "dwifslpreproc")
    assert "-rpe_header" in d and opt(d, "-json_import") == f"{bids}/sub-02/dwi/sub-02_dwi.json"


def test_preproc_needs_phase_encoding(tmp_path):
    cfg, _ = write_config(tmp_path, {"steps": {"anat": False}, "dwi": {"preproc": {"method": "fsl_dwifslpreproc"}}})
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0
    assert "dwi.preproc.pe_dir" in (res.stdout + res.stderr) and "PhaseEncodingDirection" in (res.stdout + res.stderr)


# ---- FSL structural --------------------------------------------------------------------------
FSL_TPL = "MNI152NLin6Asym"


def test_fsl_structural_family(tmp_path):
    atlas = tmp_path / "JHU-ICBM-labels-1mm.nii.gz"
    atlas.write_bytes(b"")
    over = {"steps": {"dwi": False}, "template": {"name": FSL_TPL},
            "anat": {"skullstrip": {"method": "fsl_bet", "fractional_threshold": 0.3, "vertical_gradient": 0.1},
                     "segment": {"method": "fsl_fast"},
                     "subcortical": {"method": "fsl_first"},
                     "register": {"method": "fsl"},
                     "atlas": {"method": "fsl_applywarp", "image": str(atlas)}}}
    jobs, out = dry_run(tmp_path, over)
    a = anat_paths(out, FSL_TPL, atlas="JHUICBMlabels")  # the label comes from the image's name

    bet = jobs["anat_skullstrip_fsl_bet"]
    assert bet["input"] == [a["pre"]] and bet["output"] == [a["mask"], a["brain"]]
    b = call(bet, "bet")
    assert b[1] == a["pre"] and opt(b, "-f") == "0.3" and opt(b, "-g") == "0.1" and "-R" in b and "-m" in b
    assert moves(bet) == {a["mask"]: "$tmp/brain_mask.nii.gz", a["brain"]: "$tmp/brain.nii.gz"}
    assert_private_tmp(bet)

    fast = jobs["anat_segment_fsl_fast"]
    assert fast["input"] == [a["brain"]]
    assert fast["output"] == [a["dseg"], a["CSF"], a["GM"], a["WM"]]
    f = call(fast, "fast")
    assert f[-1] == a["brain"] and opt(f, "-t") == "1" and opt(f, "-n") == "3"
    # with -t 1 -n 3 the classes are ordered by intensity: pve_0/1/2 = CSF/GM/WM
    assert moves(fast) == {a["dseg"]: "$tmp/fast_seg.nii.gz", a["CSF"]: "$tmp/fast_pve_0.nii.gz",
                           a["GM"]: "$tmp/fast_pve_1.nii.gz", a["WM"]: "$tmp/fast_pve_2.nii.gz"}

    first = jobs["anat_subcortical_fsl_first"]
    assert first["input"] == [a["brain"]] and first["output"] == [a["first"], a["firstqc"]]
    r = call(first, "run_first_all")
    assert opt(r, "-i") == a["brain"] and "-b" in r and "-s" not in r
    assert call(first, "first_roi_slicesdir")[1] == a["brain"]

    # FSL's documented recipe: flirt brain -> template brain; fnirt head -> template head with the
    # config's dilated brain mask; all template images FSL's MNI152 at the config's 2 mm
    tpl = anat_template_paths(out)
    reg = jobs["anat_register_fsl"]
    assert reg["input"] == [a["pre"], a["brain"], tpl["head"], tpl["brain"], tpl["mask_dil"]]
    assert reg["output"] == [a["affine"], a["warp"], a["invwarp"], a["warped"]]
    fl = call(reg, "flirt")
    assert opt(fl, "-in") == a["brain"] and opt(fl, "-ref") == tpl["brain"] and opt(fl, "-dof") == "12"
    fn = call(reg, "fnirt")
    assert opt(fn, "--in=") == a["pre"]  # the head, not the brain
    assert opt(fn, "--ref=") == tpl["head"] and opt(fn, "--refmask=") == tpl["mask_dil"]
    assert opt(fn, "--config=") == "T1_2_MNI152_2mm" and opt(fn, "--aff=") == opt(fl, "-omat")
    iw = call(reg, "invwarp")
    assert opt(iw, "--ref=") == a["brain"] and opt(iw, "--warp=") == opt(fn, "--fout=")
    aw = call(reg, "applywarp")
    assert opt(aw, "--ref=") == tpl["head"] and opt(aw, "--in=") == a["brain"]
    assert opt(aw, "--warp=") == opt(fn, "--fout=")
    assert moves(reg)[a["invwarp"]] == opt(iw, "--out=")
    t, tb = jobs["anat_template_fsl"], jobs["anat_template_fsl_brain"]
    assert t["output"] == [tpl["head"]] and tb["output"] == [tpl["brain"], tpl["mask_dil"]]
    # which of $FSLDIR's images they copy: test_tool_shell_behaviour.py (run with stand-in files)
    assert jobs["anat_register_metrics_fsl"]["output"] == [a["metrics"]]
    assert jobs["anat_register_metrics_fsl"]["input"][2] == tpl["brain"]

    at = jobs["anat_atlas_fsl_applywarp"]
    assert at["input"] == [str(atlas), a["brain"], a["invwarp"]]  # the inverse warp of anat_register_fsl
    assert at["output"] == [a["atlas"]]
    w = call(at, "applywarp")
    assert opt(w, "--in=") == str(atlas) and opt(w, "--ref=") == a["brain"] and opt(w, "--interp=") == "nn"
    # downstream QC reads the FSL outputs under the common names, and FSL's template brain
    assert {a["pre"], a["mask"], a["dseg"], a["warped"], tpl["brain"]} <= set(jobs["anat_volumes_qc"]["input"])


def anat_template_paths(out: Path) -> dict[str, str]:
    t = f"{out}/sourcedata/templates/tpl-{FSL_TPL}_res-02"
    return {"head": f"{t}_T1w.nii.gz", "brain": f"{t}_desc-brain_T1w.nii.gz",
            "mask_dil": f"{t}_desc-braindil_mask.nii.gz"}


def test_atlas_name_from_config_or_image(tmp_path):
    atlas = tmp_path / "HarvardOxford-sub-maxprob-thr25-1mm.nii.gz"
    atlas.write_bytes(b"")
    base = {"steps": {"dwi": False}, "template": {"name": FSL_TPL},
            "anat": {"register": {"method": "fsl"}, "atlas": {"method": "fsl_applywarp", "image": str(atlas)}}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    jobs, out = dry_run(tmp_path / "a", base)
    atlas = anat_paths(out, FSL_TPL, "HarvardOxfordsubmaxprobthr25")["atlas"]
    assert jobs["anat_atlas_fsl_applywarp"]["output"] == [atlas]
    jobs, out = dry_run(tmp_path / "b", _merge(base, {"anat": {"atlas": {"name": "HOsub"}}}))
    assert jobs["anat_atlas_fsl_applywarp"]["output"] == [anat_paths(out, FSL_TPL, "HOsub")["atlas"]]


def test_fsl_registration_needs_fsl_template(tmp_path):
    cfg, _ = write_config(tmp_path, {"anat": {"register": {"method": "fsl"}}})  # template.name 2009a
    res = snakemake(cfg, "-n", "--cores", "1")
    msg = res.stdout + res.stderr
    assert res.returncode != 0 and "template.name: MNI152NLin6Asym" in msg and "'MNI152NLin2009aSym'" in msg


def test_fsl_bet_variant_and_first_on_head(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"skullstrip": {"method": "fsl_bet", "bet_variant": "none"},
                     "subcortical": {"method": "fsl_first", "input": "preproc", "structures": "L_Hipp,R_Hipp"}}}
    jobs, out = dry_run(tmp_path, over)
    a = anat_paths(out)
    b = call(jobs["anat_skullstrip_fsl_bet"], "bet")
    assert not {"-R", "-S", "-B"} & set(b) and opt(b, "-f") == "0.5"
    first = jobs["anat_subcortical_fsl_first"]
    assert first["input"] == [a["pre"]]
    r = call(first, "run_first_all")
    assert opt(r, "-i") == a["pre"] and opt(r, "-s") == "L_Hipp,R_Hipp" and "-b" not in r


def test_atlas_needs_fsl_registration(tmp_path):
    cfg, _ = write_config(tmp_path, {"anat": {"atlas": {"method": "fsl_applywarp", "image": "/x.nii.gz"}}})
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0 and "anat.register.method 'fsl'" in (res.stdout + res.stderr)


# ---- FreeSurfer ------------------------------------------------------------------------------
def test_freesurfer_family(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"biascorrect": {"method": "freesurfer", "shrink_factor": 2, "convergence_iters": [20, 10]},
                     "skullstrip": {"method": "freesurfer", "threads": 3}},
            "freesurfer": {"recon_all": {"enabled": True, "threads": 6, "extra_args": "-3T"}}}
    jobs, out = dry_run(tmp_path, over)
    a = anat_paths(out)
    n4 = jobs["anat_biascorrect_freesurfer"]
    assert n4["input"] == [RAW_T1] and n4["output"] == [a["pre"]]
    n = call(n4, "AntsN4BiasFieldCorrectionFs")
    assert opt(n, "-i") == RAW_T1 and opt(n, "-s") == "2" and opt(n, "-t", 2) == ["20", "10"]
    assert_private_tmp(n4)

    # skull strip: recon-all -autorecon1, mri_convert --like (FreeSurfer env), then fslmaths -mas
    # (FSL env): two rules, one per tool env
    fsmask = f"{out}/sub-01/anat/sub-01_desc-fsbrainmask_T1w.nii.gz"
    ss = jobs["anat_skullstrip_freesurfer"]
    assert ss["input"] == [a["pre"]] and ss["output"] == [fsmask]
    ra = call(ss, "recon-all")
    assert opt(ra, "-i") == a["pre"] and "-autorecon1" in ra and opt(ra, "-openmp") == "2"
    mc = call(ss, "mri_convert")
    assert mc[1] == "$tmp/fs/mri/brainmask.mgz" and opt(mc, "--like") == a["pre"] and opt(mc, "-rt") == "nearest"
    fm = jobs["anat_skullstrip_freesurfer_fslmaths"]
    assert fm["input"] == [a["pre"], fsmask] and fm["output"] == [a["mask"], a["brain"]]
    brain, mask = calls(fm, "fslmaths")
    assert brain[1] == a["pre"] and opt(brain, "-mas") == fsmask
    assert mask[1] == fsmask and "-bin" in mask and opt(mask, "-odt") == "char"
    # downstream reads the fslmaths outputs
    assert jobs["anat_segment_atropos"]["input"] == [a["pre"], a["mask"]]

    fs = f"{out}/freesurfer/sub-01"
    rj = jobs["freesurfer_recon_all"]
    assert rj["input"] == [RAW_T1]
    assert rj["output"] == [f"{fs}/stats/aseg.stats", f"{fs}/stats/lh.aparc.stats", f"{fs}/stats/rh.aparc.stats",
                            f"{fs}/mri/aparc+aseg.mgz", f"{fs}/mri/aseg.mgz",
                            f"{fs}/scripts/neurosmk_recon-all_all.done"]
    # the registry's (one place; the SLURM profile used to say 8000/720 against the rule's 16000/1440)
    assert rj["resources"]["mem_mb"] == "8000" and rj["resources"]["runtime"] == "720"
    r = call(rj, "recon-all")
    assert "-all" in r and opt(r, "-openmp") == "2" and r[-1] == "-3T"
    assert f"SUBJECTS_DIR={out}/freesurfer" in rj["shell"]
    # scripts/fs_clear_stale_lock.py, through the environment the workflow sets (rules/freesurfer.smk)
    assert rj["shell"].index('"$NEUROSMK_FS_LOCK_SCRIPT"') < rj["shell"].index("recon-all -sd")


def test_skullstrip_freesurfer_rules_use_one_tool_env_each(tmp_path):
    """Each of the two rules runs only its own family's tools, in that family's env and image (as
    the parsed workflow declares them and the dry run's commands call them)."""
    over = {"steps": {"dwi": False}, "anat": {"skullstrip": {"method": "freesurfer"}}}
    jobs, _ = dry_run(tmp_path, over)
    fs, fsl = "anat_skullstrip_freesurfer", "anat_skullstrip_freesurfer_fslmaths"
    props = H.rule_properties(tmp_path / "config.yaml", fs, fsl)
    tools = {r: {tool_name(a[0]) for a in simple_commands(jobs[r]["shell"])} for r in (fs, fsl)}
    assert {"recon-all", "mri_convert"} <= tools[fs] and "fslmaths" not in tools[fs]
    assert "fslmaths" in tools[fsl] and not {"recon-all", "mri_convert"} & tools[fsl]
    assert props[fs]["conda_env"].endswith("envs/freesurfer.yaml")
    assert "freesurfer/freesurfer:" in props[fs]["container"]
    assert props[fsl]["conda_env"].endswith("envs/fsl.yaml") and "/fsl_" in props[fsl]["container"]


# ---- SynthSeg and mri_segstats ----------------------------------------------------------------
SYN_DSEG = "sub-01/anat/sub-01_desc-synthseg_dseg.nii.gz"
SYN_VOL = "sub-01/anat/sub-01_desc-synthseg_volumes.csv"


def test_synthseg_cpu_default(tmp_path):
    jobs, out = dry_run(tmp_path, {"steps": {"dwi": False}, "anat": {"synthseg": {"method": "freesurfer"}}})
    dseg, vol = f"{out}/{SYN_DSEG}", f"{out}/{SYN_VOL}"
    syn = jobs["anat_synthseg_freesurfer"]
    assert syn["input"] == [RAW_T1] and sorted(syn["output"]) == sorted([dseg, vol])
    assert "gpu" not in syn["resources"]
    assert syn["resources"]["mem_mb"] == "12000" and syn["resources"]["runtime"] == "30"
    s = call(syn, "mri_synthseg")
    assert opt(s, "--i") == RAW_T1 and "--cpu" in s and opt(s, "--threads") == "1"
    assert moves(syn) == {dseg: opt(s, "--o"), vol: opt(s, "--vol")}
    assert "anat_segstats_freesurfer" not in jobs  # off by default


def test_synthseg_gpu_robust_parc_no_vol(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"synthseg": {"method": "freesurfer", "use_gpu": True, "robust": True, "parc": True,
                                  "vol": False, "threads": 2}}}
    jobs, out = dry_run(tmp_path, over)
    dseg = f"{out}/{SYN_DSEG}"
    syn = jobs["anat_synthseg_freesurfer"]
    assert syn["output"] == [dseg]
    assert syn["resources"]["gpu"] == "1" and syn["resources"]["mem_mb"] == "16000"
    s = call(syn, "mri_synthseg")
    assert {"--robust", "--parc"} <= set(s) and "--cpu" not in s and opt(s, "--threads") == "2"
    # without vol the volumes CSV stays in the job's temporary folder: only the dseg is moved out
    assert set(moves(syn)) == {dseg}


def test_segstats_on_synthseg(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"synthseg": {"method": "freesurfer"}, "segstats": {"method": "freesurfer"}}}
    jobs, out = dry_run(tmp_path, over)
    stats = f"{out}/sub-01/anat/sub-01_desc-synthseg_segstats.stats"
    st = jobs["anat_segstats_freesurfer"]
    assert st["input"] == [f"{out}/{SYN_DSEG}"] and st["output"] == [stats]  # wired to SynthSeg's output
    assert st["resources"]["mem_mb"] == "2000"
    s = call(st, "mri_segstats")
    assert opt(s, "--seg") == f"{out}/{SYN_DSEG}" and "--ctab-default" in s and opt(s, "--excludeid") == "0"
    assert moves(st) == {stats: opt(s, "--sum")}


def test_segstats_on_recon_all_aseg(tmp_path):
    over = {"steps": {"dwi": False}, "anat": {"segstats": {"method": "freesurfer", "seg": "aseg"}},
            "freesurfer": {"recon_all": {"enabled": True}}}
    jobs, out = dry_run(tmp_path, over)
    aseg = f"{out}/freesurfer/sub-01/mri/aseg.mgz"
    assert aseg in jobs["freesurfer_recon_all"]["output"]
    st = jobs["anat_segstats_freesurfer"]
    assert st["input"] == [aseg]
    assert st["output"] == [f"{out}/sub-01/anat/sub-01_desc-aseg_segstats.stats"]
    assert opt(call(st, "mri_segstats"), "--seg") == aseg


@pytest.mark.parametrize("seg,needs", [("synthseg", "anat.synthseg.method 'freesurfer'"),
                                       ("aseg", "freesurfer.recon_all.enabled")])
def test_segstats_needs_its_segmentation(tmp_path, seg, needs):
    cfg, _ = write_config(tmp_path, {"anat": {"segstats": {"method": "freesurfer", "seg": seg}}})
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0
    assert "anat.segstats.seg" in res.stdout + res.stderr and needs in res.stdout + res.stderr


def _segstats_like(src: Path, dst: Path) -> None:
    """The layout `mri_segstats --seg X --ctab-default --excludeid 0 --sum` writes (no --i, no
    --empty: only non-empty labels; columns Index SegId NVoxels Volume_mm3 StructName), cut out
    of a real FreeSurfer 7.4.1 aseg.stats (itself an mri_segstats --sum table)."""
    head, rows = [], []
    for line in src.read_text().splitlines():
        if line.startswith("# Measure") or re.match(r"# TableCol\s+([6-9]|10)\s", line):
            continue
        if line.startswith("#"):
            head.append(line)
        elif line.strip():
            parts = line.split()
            if int(parts[2]) > 0:
                rows.append(parts[:5])
    head = [f"# NRows {len(rows)}" if h.startswith("# NRows") else "# NTableCols 5" if h.startswith("# NTableCols")
            else "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName" if h.startswith("# ColHeaders") else h
            for h in head]
    dst.write_text("\n".join(head + [" ".join(r) for r in rows]) + "\n")


def test_segstats_output_is_read_by_fsstats_parser(tmp_path):
    from neurosmk.fsstats.parser import parse_stats_file

    src = REPO / "demo" / "freesurfer" / "ds000005_sub-01" / "stats" / "aseg.stats"
    f = tmp_path / "sub-01_desc-synthseg_segstats.stats"
    _segstats_like(src, f)
    parsed = parse_stats_file(f, subject="sub-01")
    assert parsed.kind == "segstats"
    assert parsed.columns == ["Index", "SegId", "NVoxels", "Volume_mm3", "StructName"]
    assert parsed.n_values > 0
    i = parsed.structures.index("Left-Hippocampus")
    vol = [ln.split() for ln in src.read_text().splitlines() if " Left-Hippocampus " in f" {ln} "][0][3]
    assert parsed.values[i, parsed.numeric_columns.index("Volume_mm3")] == pytest.approx(float(vol))
    assert parsed.row_hemispheres[i] == "lh"


# ---- recon-all -> FreeSurfer stats aggregation ----------------------------------------------
FSG_LONG = "group/freesurfer/freesurfer_stats_long.tsv"


def _recon_bids(tmp_path: Path) -> Path:
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    shutil.copy(BIDS / "dataset_description.json", bids)
    shutil.copy(RAW_T1, bids / "sub-01" / "anat")  # a copy: the test changes its mtime
    return bids


def _finish_recon_all(out: Path) -> list[Path]:
    """The files a finished recon-all leaves (as Snakemake protects them: read-only)."""
    fs = out / "freesurfer" / "sub-01"
    real = REPO / "demo" / "freesurfer" / "ds000005_sub-01" / "stats"
    files = []
    for rel in ("stats/aseg.stats", "stats/lh.aparc.stats", "stats/rh.aparc.stats", "mri/aparc+aseg.mgz",
                "mri/aseg.mgz", "scripts/neurosmk_recon-all_all.done"):
        f = fs / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith("stats/"):
            shutil.copy(real / f.name, f)
        else:
            f.write_bytes(b"")
        f.chmod(0o444)
        files.append(f)
    return files


def test_recon_all_chains_into_fs_aggregation(tmp_path):
    over = {"steps": {"dwi": False}, "freesurfer": {"recon_all": {"enabled": True}}}
    jobs, out = dry_run(tmp_path, over)
    fs = f"{out}/freesurfer/sub-01"
    parse = f"{out}/group/freesurfer/subjects/sub-01"
    assert jobs["freesurfer_recon_all"]["output"][-1] == f"{fs}/scripts/neurosmk_recon-all_all.done"
    # the config's freesurfer_dir subjects are still aggregated too; the recon-all subject is added
    cfg, _ = write_config(tmp_path, over)
    res = snakemake(cfg, "-n", "-p", "--cores", "2", f"{out}/group/freesurfer/subjects/sub-01_long.parquet")
    assert res.returncode == 0, res.stderr[-3000:]
    one = parse_dry_run(res.stdout)
    # validate_anat: rules/validate.smk
    assert set(one) == {"validate_anat", "freesurfer_recon_all", "fs_parse_subject"}
    assert one["fs_parse_subject"]["input"] == [f"{fs}/stats/aseg.stats", f"{fs}/stats/lh.aparc.stats",
                                                f"{fs}/stats/rh.aparc.stats",
                                                f"{fs}/scripts/neurosmk_recon-all_all.done"]
    group = jobs["fs_aggregate_group"]
    assert f"{parse}_long.parquet" in group["input"] and f"{parse}_global.parquet" in group["input"]
    assert any("/Subj001_long.parquet" in f for f in group["input"])
    assert f"{out}/{FSG_LONG}" in group["output"]


def test_recon_all_only_source_of_fs_stats(tmp_path):
    bids = _recon_bids(tmp_path)
    over = {"freesurfer_dir": None, "steps": {"dwi": False}, "freesurfer": {"recon_all": {"enabled": True}}}
    jobs, out = dry_run(tmp_path, over, bids=bids)
    assert jobs["fs_aggregate_group"]["input"] == [f"{out}/group/freesurfer/subjects/sub-01_long.parquet",
                                                   f"{out}/group/freesurfer/subjects/sub-01_global.parquet"]
    assert {"freesurfer_recon_all", "fs_parse_subject", "fs_aggregate_group"} <= set(jobs)


def test_recon_all_subject_also_in_freesurfer_dir_fails(tmp_path):
    fsdir = tmp_path / "subjects"
    (fsdir / "sub-01" / "stats").mkdir(parents=True)
    shutil.copy(REPO / "demo" / "freesurfer" / "ds000005_sub-01" / "stats" / "aseg.stats", fsdir / "sub-01" / "stats")
    cfg, _ = write_config(tmp_path, {"freesurfer_dir": str(fsdir), "steps": {"dwi": False},
                                     "freesurfer": {"recon_all": {"enabled": True}}})
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0
    assert f"{fsdir}: freesurfer_dir has subjects that recon-all also makes" in res.stdout + res.stderr
    assert "(sub-01)" in res.stdout + res.stderr


def test_finished_recon_all_is_not_redone(tmp_path):
    bids = _recon_bids(tmp_path)
    over = {"freesurfer_dir": None, "steps": {"dwi": False}, "freesurfer": {"recon_all": {"enabled": True}}}
    cfg, out = write_config(tmp_path, over, bids)
    _finish_recon_all(out)
    res = snakemake(cfg, "-n", "-p", "--cores", "2", str(out / FSG_LONG))
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = parse_dry_run(res.stdout)
    assert set(jobs) == {"fs_parse_subject", "fs_aggregate_group"}  # recon-all's outputs are used as they are
    assert jobs["fs_parse_subject"]["input"][0] == f"{out}/freesurfer/sub-01/stats/aseg.stats"


# as root, os.access() reports every file writable, so Snakemake's write protection (a file
# without write permission) is void; this makes W_OK follow the permission bits, as for a user
_AS_USER = """
import os, stat, sys
_access = os.access
def access(path, mode, *a, **k):
    if mode & os.W_OK and os.path.exists(path) and not os.stat(path).st_mode & 0o222:
        return False
    return _access(path, mode, *a, **k)
os.access = access
from snakemake.cli import main
sys.argv = ["snakemake", *sys.argv[1:]]
main()
"""


def test_finished_recon_all_outputs_stay_protected(tmp_path):
    """recon-all marks every output protected() (Snakemake makes them read-only when the job
    ends; read from the parsed workflow, not the rule's text); a newer T1w then makes Snakemake want to re-run
    recon-all, and the read-only outputs
    stop the run at start ("Write-protected output files"): nothing is deleted or redone."""
    (tmp_path / "flags").mkdir()
    flags = H.rule_properties(write_config(tmp_path / "flags", {"freesurfer": {"recon_all": {"enabled": True}}})[0],
                              "freesurfer_recon_all")["freesurfer_recon_all"]["protected"]
    assert flags == {"aseg.stats": True, "lh.aparc.stats": True, "rh.aparc.stats": True, "aparc+aseg.mgz": True,
                     "aseg.mgz": True, "neurosmk_recon-all_all.done": True}
    bids = _recon_bids(tmp_path)
    over = {"freesurfer_dir": None, "steps": {"dwi": False}, "freesurfer": {"recon_all": {"enabled": True}}}
    cfg, out = write_config(tmp_path, over, bids)
    files = _finish_recon_all(out)
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns, f.stat().st_mode) for f in files}
    os.utime(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")  # newer than the recon-all outputs
    res = subprocess.run([sys.executable, "-c", _AS_USER, "-s", "Snakefile", "--configfile", str(cfg), "-n", "-p",
                          "--cores", "2", str(out / FSG_LONG)], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    msg = res.stdout + res.stderr
    assert res.returncode != 0, msg[-3000:]
    assert "Write-protected output files" in msg and "freesurfer_recon_all" in msg, msg[-3000:]
    assert f"{out}/freesurfer/sub-01/stats/aseg.stats" in msg
    # nothing deleted, rewritten or made writable
    after = {f: (f.read_bytes(), f.stat().st_mtime_ns, f.stat().st_mode) for f in files if f.exists()}
    assert after == before


def test_synthstrip_gpu(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"skullstrip": {"method": "synthstrip", "use_gpu": True, "synthstrip_no_csf": True,
                                    "synthstrip_border": 2}}}
    jobs, out = dry_run(tmp_path, over)
    a = anat_paths(out)
    ss = jobs["anat_skullstrip_synthstrip"]
    assert ss["resources"]["gpu"] == "1"
    s = call(ss, "mri_synthstrip")
    assert opt(s, "-i") == a["pre"] and opt(s, "-b") == "2" and {"--no-csf", "-g"} <= set(s)
    assert moves(ss) == {a["mask"]: opt(s, "-m"), a["brain"]: opt(s, "-o")}
    assert_private_tmp(ss)
    assert jobs["anat_segment_atropos"]["input"] == [a["pre"], a["mask"]]


# ---- V1 convention (DIPY backend) ------------------------------------------------------------
def test_fsl_bvec_to_world():
    """DIPY eigenvectors are rotated from the FSL bvec frame to scanner axes as MRtrix3 does for
    -fslgrad: x negated when det(affine) > 0, then the rotation part of the affine."""
    import numpy as np

    from neurosmk.dwi import fsl_bvec_to_world

    demo = np.diag([-3.0, -3.0, 3.0, 1.0])  # the demo DWI: det > 0 -> x flip, then diag(-1,-1,1)
    assert np.allclose(fsl_bvec_to_world(demo), np.diag([1.0, -1.0, 1.0]))
    las = np.diag([-2.0, 2.0, 2.0, 1.0])  # det < 0 (radiological storage): no flip
    assert np.allclose(fsl_bvec_to_world(las), np.diag([-1.0, 1.0, 1.0]))
    c, s = np.cos(0.3), np.sin(0.3)
    obl = np.eye(4)
    obl[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([2.0, 2.0, 4.0])
    r = fsl_bvec_to_world(obl)
    assert np.allclose(r @ r.T, np.eye(3))  # voxel sizes removed
    assert np.allclose(r, np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-1.0, 1.0, 1.0]))


# ---- start-up checks -------------------------------------------------------------------------
def test_unknown_method_fails_at_start(tmp_path):
    cfg, _ = write_config(tmp_path, {"dwi": {"denoise": {"method": "mrtrixx"}}})
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0
    known = ", ".join(sorted(STEPS["dwi.denoise"]))  # the registry's methods of the step
    assert f"step 'dwi.denoise': unknown method 'mrtrixx' (known: {known})" in (res.stdout + res.stderr)


def test_missing_tool_fails_at_start_in_real_run(tmp_path):
    cfg, out = write_config(tmp_path, {"steps": {"dwi": False}, "anat": {"skullstrip": {"method": "fsl_bet"}}})
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "bet").exists())
    res = snakemake(cfg, "--cores", "1", anat_paths(out)["mask"], env=env)
    assert res.returncode != 0
    assert "step 'anat.skullstrip' with method 'fsl_bet' needs bet on PATH" in (res.stdout + res.stderr)
    assert "install FSL 6.0.7" in (res.stdout + res.stderr) and "envs/fsl.yaml" in (res.stdout + res.stderr)
    assert not (out / "sub-01").exists()  # nothing ran


# ---- static checks ---------------------------------------------------------------------------
def _rule_blocks():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        starts = [m.start() for m in re.finditer(r"^\s*rule \w+:", text, re.M)] + [len(text)]
        for s, e in zip(starts, starts[1:]):
            block = text[s:e]
            yield smk.name, re.search(r"rule (\w+):", block).group(1), block


def test_every_rule_declares_conda_and_container():
    blocks = list(_rule_blocks())
    shell_rules = [(f, r) for f, r, b in blocks if re.search(r"^\s+shell:", b, re.M)]
    assert len(shell_rules) >= 12
    for f, r, b in blocks:
        if re.search(r"^\s+(shell|script):", b, re.M):
            assert re.search(r"^\s+conda:", b, re.M), f"{f}:{r} has no conda:"
            assert re.search(r"^\s+container:", b, re.M), f"{f}:{r} has no container:"


def test_containers_are_pinned_and_envs_exist():
    from neurosmk.backends import containers  # the tool families' images (rules/common.smk CONTAINERS)

    images = list(containers().values())
    assert len(images) >= 4
    for img in images:
        name, _, tag = img[len("docker://"):].rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), img
    for env in ("neurosmk", "mrtrix3", "fsl", "freesurfer"):
        assert (REPO / "envs" / f"{env}.yaml").exists()
    for backends in STEPS.values():
        for b in backends.values():
            assert (REPO / "envs" / f"{b.env}.yaml").exists()


def _deps(items):
    for d in items:
        if isinstance(d, dict):
            for sub in d.values():
                yield from _deps(sub)
        else:
            yield d


@pytest.mark.parametrize("env", sorted(p.name for p in (REPO / "envs").glob("*.yaml")))
def test_env_files_pin_every_package(env):
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    deps = list(_deps(spec["dependencies"]))
    assert deps
    for d in deps:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(={1,2})[0-9][A-Za-z0-9_.\-]*", d), f"{env}: {d!r} is not pinned exactly"


def fsl_release_problems(env_text: str, common_text: str, manifest: dict) -> list[str]:
    """Why envs/fsl.yaml and the FSL container are not one FSL release ([] if they are): the env's
    '# release:' line, the release in the container's name (vnmd/fsl_6.0.7.18:20250928) and the
    env's fsl* pins against that release's environment file (``manifest``)."""
    releases = re.findall(r"^# release: (\S+)$", env_text, re.M)
    if len(releases) != 1:
        return [f"envs/fsl.yaml: {len(releases)} '# release:' lines"]
    release, problems = releases[0], []
    image = re.search(r'^\s*"fsl": ToolFamily\("fsl", "(docker://[^"]+)"', common_text, re.M).group(1)
    m = re.search(r"(?<![\d.])(\d+\.\d+\.\d+(?:\.\d+)?)(?![\d.])", image)
    if not m or m.group(1) != release:
        problems.append(f"container {image} is FSL {m.group(1) if m else '?'}, envs/fsl.yaml FSL {release}")
    if release not in manifest:
        return problems + [f"no transcribed environment of FSL {release} (tests/data/interfaces/fsl_releases.yaml)"]
    pins = dict(d.split("=", 1) for d in _deps(yaml.safe_load(env_text)["dependencies"]))
    fsl_pins = {k: v for k, v in pins.items() if k.startswith("fsl")}
    if not fsl_pins:
        problems.append("envs/fsl.yaml pins no FSL package")
    problems += [f"{k}={v}, FSL {release} has {manifest[release].get(k)}" for k, v in fsl_pins.items()
                 if manifest[release].get(k) != v]
    return problems


FSL_RELEASES = REPO / "tests" / "data" / "interfaces" / "fsl_releases.yaml"


def test_fsl_env_and_container_are_one_release():
    env = (REPO / "envs" / "fsl.yaml").read_text()
    common = (REPO / "src" / "neurosmk" / "backends.py").read_text()  # the fsl tool family
    manifest = yaml.safe_load(FSL_RELEASES.read_text())
    assert fsl_release_problems(env, common, manifest) == []
    # the check fails for what it must catch
    other_image = re.sub(r'("fsl": ToolFamily\("fsl", )"docker://[^"]+"', r'\1"docker://brainlife/fsl:6.0.7.22"',
                         common)
    assert fsl_release_problems(env, other_image, manifest) == [
        "container docker://brainlife/fsl:6.0.7.22 is FSL 6.0.7.22, envs/fsl.yaml FSL 6.0.7.18"]
    other_pin = env.replace("fsl-bet2=2111.8", "fsl-bet2=2111.9")
    assert fsl_release_problems(other_pin, common, manifest) == ["fsl-bet2=2111.9, FSL 6.0.7.18 has 2111.8"]
    unlisted = env.replace("  - fsl-topup=", "  - fsl-bianca=2209.3\n  - fsl-topup=")
    assert fsl_release_problems(unlisted, common, manifest) == ["fsl-bianca=2209.3, FSL 6.0.7.18 has None"]
    no_line = env.replace("# release: ", "# FSL ")
    assert fsl_release_problems(no_line, common, manifest) == ["envs/fsl.yaml: 0 '# release:' lines"]


def test_schema_method_descriptions_list_every_backend():
    from neurosmk.config import load_schema  # the method lists are generated from the registry

    schema = load_schema()
    for step, backends in STEPS.items():
        section, name = step.split(".")
        desc = schema["properties"][section]["properties"][name]["properties"]["method"]["description"]
        for method in backends:
            assert method in desc, f"{step}: {method} missing from the method description"


# ---- stale recon-all lock ------------------------------------------------------------------
def _lock_module():
    spec = importlib.util.spec_from_file_location("fs_lock", REPO / "scripts" / "fs_clear_stale_lock.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_proc(root: Path, procs: dict[int, list[str]]) -> Path:
    proc = root / "proc"
    for pid, argv in procs.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    proc.mkdir(exist_ok=True)
    return proc


def _recon_all_lock(tmp_path: Path, text: str) -> Path:
    """sub-01's recon-all lock file (SUBJECTS_DIR = tmp_path/subjects) with ``text``."""
    scripts = tmp_path / "subjects" / "sub-01" / "scripts"
    scripts.mkdir(parents=True)
    lock = scripts / "IsRunning.lh+rh"
    lock.write_text(text)
    return lock


def test_stale_lock_removed_when_no_recon_all_runs(tmp_path):
    mod = _lock_module()
    lock = _recon_all_lock(tmp_path, "SUBJECT sub-01\nHOST thishost\nPROCESSID 999\n")
    proc = _fake_proc(tmp_path, {10: ["/bin/bash", "/opt/fs/bin/recon-all", "-s", "sub-02", "-all"]})
    removed = mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(proc), hostname="thishost")
    assert removed == [str(lock)] and not lock.exists()
    assert mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(proc)) == []


def test_lock_kept_while_recon_all_runs_or_from_other_host(tmp_path):
    mod = _lock_module()
    lock = _recon_all_lock(tmp_path, "HOST thishost\n")
    proc = _fake_proc(tmp_path, {42: ["/bin/tcsh", "-f", "/opt/fs/bin/recon-all", "-s", "sub-01", "-all"]})
    with pytest.raises(RuntimeError, match="pid 42"):
        mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(proc), hostname="thishost")
    assert lock.exists()
    lock.write_text("HOST otherhost\n")
    with pytest.raises(RuntimeError, match="otherhost"):
        mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(tmp_path / "empty"), hostname="me")
    assert lock.exists()


# ---- seed steps: no normalisation, SynthMorph, the DSI guard, DRBUDDI -------------------------
def test_register_none_skips_template_space(tmp_path):
    jobs, out = dry_run(tmp_path, {"steps": {"dwi": False}, "anat": {"register": {"method": "none"}}})
    a = anat_paths(out)
    assert not [r for r in jobs if r.startswith("anat_register")]
    outputs = {o for j in jobs.values() for o in j["output"]}
    assert not {a["affine"], a["warp"], a["invwarp"], a["warped"], a["metrics"]} & outputs
    qc = jobs["anat_volumes_qc"]
    assert qc["input"] == [a["pre"], a["mask"], a["dseg"]]  # no warped T1w, no template
    assert not any("desc-reg_T1w.png" in o for o in qc["output"])
    assert any("desc-dseg_T1w.png" in o for o in qc["output"])


def test_register_none_refuses_atlas(tmp_path):
    cfg, _ = write_config(tmp_path, {"anat": {"register": {"method": "none"},
                                              "atlas": {"method": "fsl_applywarp", "image": "/x.nii.gz"}}})
    res = snakemake(cfg, "-n", "--cores", "1")
    msg = res.stdout + res.stderr
    assert res.returncode != 0 and "needs anat.register.method 'fsl'" in msg and "not 'none'" in msg


def test_register_synthmorph_gpu(tmp_path):
    jobs, out = dry_run(tmp_path, {"steps": {"dwi": False},
                                   "anat": {"register": {"method": "synthmorph", "use_gpu": True, "threads": 1}}})
    a = anat_paths(out)
    reg = jobs["anat_register_synthmorph"]
    assert reg["input"][0] == a["brain"] and reg["output"] == [a["affine"], a["warp"], a["invwarp"], a["warped"]]
    assert reg["resources"]["gpu"] == "1"
    aff, deform, inv_aff, inv_deform = calls(reg, "mri_synthmorph")
    tpl = reg["input"][1]
    assert opt(aff, "-m") == "affine" and aff[-2:] == [a["brain"], tpl]  # MOVING FIXED
    assert opt(deform, "-m") == "deform" and opt(deform, "-i") == opt(aff, "-t") and deform[-2:] == [a["brain"], tpl]
    assert inv_deform[-2:] == [tpl, a["brain"]] and opt(inv_deform, "-i") == opt(inv_aff, "-t")
    assert all("-g" in c and opt(c, "-j") == "1" for c in (aff, deform, inv_aff, inv_deform))
    assert moves(reg) == {a["affine"]: opt(aff, "-t"), a["warp"]: opt(deform, "-t"),
                          a["invwarp"]: opt(inv_deform, "-t"), a["warped"]: opt(deform, "-o")}
    assert "4x4 RAS matrix" in reg["sidecar"]  # SynthMorph's convention goes into the sidecars
    assert jobs["anat_register_metrics_synthmorph"]["output"] == [a["metrics"]]
    (tmp_path / "cpu").mkdir()
    jobs, _ = dry_run(tmp_path / "cpu", {"steps": {"dwi": False}, "anat": {"register": {"method": "synthmorph"}}})
    assert "gpu" not in jobs["anat_register_synthmorph"]["resources"]
    assert not any("-g" in c for c in calls(jobs["anat_register_synthmorph"], "mri_synthmorph"))


def _dsi_bids(tmp_path: Path) -> Path:
    """The demo DWI (21 volumes) with the b-values of a DSI-like grid: b = bmax |q|^2 / qmax^2."""
    bids = _bids_with_sidecar(tmp_path, None)
    bval = bids / "sub-02" / "dwi" / "sub-02_dwi.bval"
    bval.unlink()
    q2 = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22]
    bval.write_text(" ".join(str(round(4000 * k / 22)) for k in q2) + "\n")
    return bids


def test_dsi_scheme_stops_eddy_at_start(tmp_path):
    bids = _dsi_bids(tmp_path)
    cfg, _ = write_config(tmp_path, {"steps": {"anat": False}, "validate_inputs": False,
                                     "dwi": {"preproc": {"method": "fsl_dwifslpreproc", "pe_dir": "AP"}}}, bids)
    res = snakemake(cfg, "-n", "--cores", "1")
    msg = res.stdout + res.stderr
    assert res.returncode != 0
    assert "sub-02_dwi.bval" in msg and "20 distinct b-values" in msg and "Gaussian-process" in msg
    assert "'drbuddi'" in msg
    # the demo's own scheme (one shell) passes
    (tmp_path / "ok").mkdir()
    jobs, _ = dry_run(tmp_path / "ok", {"steps": {"anat": False},
                                        "dwi": {"preproc": {"method": "fsl_dwifslpreproc", "pe_dir": "AP"}}})
    assert "dwi_preproc_dwifslpreproc" in jobs


@pytest.mark.parametrize("use_gpu", [False, True])
def test_drbuddi_start_check_looks_for_the_binary_use_gpu_runs(use_gpu):
    """The start-up tool check asks for the binary the rule will call: DRBUDDI on the CPU,
    DRBUDDI_cuda with use_gpu (the other one being on PATH does not satisfy it)."""
    from neurosmk.backends import BackendError, check_methods
    from neurosmk.config import validate_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.setdefault("dwi", {}).setdefault("preproc", {}).update(method="drbuddi", use_gpu=use_gpu)
    cfg = validate_config(cfg)
    needed, other = ("DRBUDDI_cuda", "DRBUDDI") if use_gpu else ("DRBUDDI", "DRBUDDI_cuda")
    with pytest.raises(BackendError) as err:
        check_methods(cfg, which=lambda t: f"/opt/bin/{t}" if t == other else None)
    gpu = " (use_gpu: true)" if use_gpu else ""
    assert f"step 'dwi.preproc' with method 'drbuddi'{gpu} needs {needed} on PATH" in str(err.value)
    assert check_methods(cfg, which=lambda t: f"/opt/bin/{t}" if t == needed else None)["dwi.preproc"] == "drbuddi"
    # the rule calls the same binary
    assert STEPS["dwi.preproc"]["drbuddi"].tools_for(cfg["dwi"]["preproc"]) == (needed,)


def test_drbuddi_tool_version_line(tmp_path):
    from neurosmk.drbuddi import tool_version

    f = tmp_path / "drbuddi_version.txt"
    f.write_text("TORTOISE DRBUDDI from docker://pennlinc/qsiprep-drbuddi:24.4.29 (x)\n")
    assert tool_version(str(f)) == "TORTOISE DRBUDDI from docker://pennlinc/qsiprep-drbuddi:24.4.29 (x)"
    f.write_text("\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(f))}: no DRBUDDI version line"):
        tool_version(str(f))


def test_drbuddi_needs_reverse_phase_encoding(tmp_path):
    bids = _bids_with_sidecar(tmp_path, {"PhaseEncodingDirection": "j-"})
    cfg, _ = write_config(tmp_path, {"steps": {"anat": False}, "dwi": {"preproc": {"method": "drbuddi"}}}, bids)
    res = snakemake(cfg, "-n", "--cores", "1")
    msg = res.stdout + res.stderr
    assert res.returncode != 0 and "reverse phase-encoded b=0" in msg and "'j'" in msg and "sub-02_dwi.nii.gz" in msg


def test_methods_text_for_the_seed_steps():
    from neurosmk import provenance as P

    anat = {"Step": "anat.skullstrip", "Method": "dipy", "Versions": {"dipy": "1.12.1"},
            "Parameters": {"median_radius": 4, "numpass": 4}}
    drb = {"Step": "dwi.preproc", "Method": "drbuddi", "Versions": {"antspyx": "0.6.3"}, "Parameters": {}}
    text = P.methods_text([anat, drb], {"anat.register": "none", "anat.skullstrip": "dipy", "dwi.preproc": "drbuddi"})
    assert "No spatial normalisation to a template was applied." in text
    assert "TORTOISE DRBUDDI" in text and "Irfanoglu MO" in text and "ANTsPy 0.6.3" in text
    sm = {"Step": "anat.register", "Method": "synthmorph", "ToolVersion": "freesurfer 7.4.1",
          "Parameters": {"template": "MNI152NLin2009aSym"}}
    text = P.methods_text([sm], {"anat.register": "synthmorph"})
    assert "with SynthMorph (affine, then deformable" in text and "Hoffmann M" in text
    fsl = {"Step": "anat.register", "Method": "fsl", "ToolVersion": "FSL 6.0.7.18",
           "Parameters": {"template": "MNI152NLin6Asym", "fnirt_config": "T1_2_MNI152_2mm"}}
    text = P.methods_text([fsl], {"anat.register": "fsl"})
    assert "Grabner G" in text and "Fonov V" not in text  # FSL's MNI152, not the 2009 template
