"""MRtrix3 / FSL / FreeSurfer rule families, checked through `snakemake -n -p` (no FSL or
FreeSurfer here: their rules are tested by the exact command lines Snakemake would run, the file
wiring between rules, the resources, and the environment declarations)."""

from __future__ import annotations

import copy
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

REPO = Path(__file__).resolve().parents[1]
BIDS = REPO / "demo" / "bids"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake") if (Path(sys.executable).parent / "snakemake").exists() \
    else shutil.which("snakemake")
sys.path.insert(0, str(REPO / "src"))

from neurosmk.backends import STEPS  # noqa: E402


# ---- helpers ---------------------------------------------------------------------------------
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_config(tmp_path: Path, overrides: dict, bids: Path = BIDS) -> tuple[Path, Path]:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = _merge(cfg, overrides)
    out = tmp_path / "out"
    cfg["bids_dir"] = str(bids)
    cfg["output_dir"] = str(out)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, out


def snakemake(cfg: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, "-s", "Snakefile", "--configfile", str(cfg), *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=120)


def parse_dry_run(text: str) -> dict[str, dict]:
    """rule name -> {'input': [...], 'output': [...], 'resources': {...}, 'threads': n, 'shell': str}."""
    jobs: dict[str, dict] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            cur = jobs.setdefault(m.group(1), {"input": [], "output": [], "resources": {}, "shell": None})
            continue
        if cur is None:
            continue
        if line.startswith("Shell command: "):
            cmd = line[len("Shell command: "):]
            # the provenance sidecar call every shell rule ends with is checked in test_provenance.py
            cmd, _, sidecar = cmd.partition(" && NEUROSMK_PROV=sidecar ")
            cur["shell"] = None if cmd == "None" else cmd
            cur["sidecar"] = sidecar or None
            cur = None
            continue
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            key, val = m.groups()
            if key in ("input", "output"):
                cur[key] = val.split(", ")
                if key == "output":  # provenance sidecars (X.json beside X.nii.gz) apart
                    stems = {re.sub(r"\.(nii\.gz|mat|bval|bvec|tsv|csv|stats)$", "", o) for o in cur[key] if not o.endswith(".json")}
                    cur["sidecars"] = [o for o in cur[key] if o.endswith(".json") and o[:-5] in stems]
                    cur[key] = [o for o in cur[key] if o not in cur["sidecars"]]
            elif key == "resources":
                cur["resources"] = dict(kv.split("=", 1) for kv in val.split(", "))
            elif key == "threads":
                cur["threads"] = int(val)
    return jobs


def dry_run(tmp_path: Path, overrides: dict, bids: Path = BIDS) -> tuple[dict[str, dict], Path]:
    cfg, out = write_config(tmp_path, overrides, bids)
    res = snakemake(cfg, "-n", "-p", "--cores", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return parse_dry_run(res.stdout), out


def tmp_then_mv(*paths: str) -> str:
    return " && ".join(f'mv "{p}.tmp.nii.gz" "{p}"' for p in paths)


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


def anat_paths(out: Path) -> dict[str, str]:
    a = f"{out}/sub-01/anat/sub-01"
    return {"pre": f"{a}_desc-preproc_T1w.nii.gz", "mask": f"{a}_desc-brain_mask.nii.gz",
            "brain": f"{a}_desc-brain_T1w.nii.gz", "dseg": f"{a}_dseg.nii.gz",
            **{t: f"{a}_label-{t}_probseg.nii.gz" for t in ("CSF", "GM", "WM")},
            "first": f"{a}_seg-FIRST_dseg.nii.gz", "firstqc": f"{out}/sub-01/figures/sub-01_desc-first_slicesdir",
            "affine": f"{a}_from-T1w_to-MNI152NLin2009aSym_mode-image_desc-affine_xfm.mat",
            "warp": f"{a}_from-T1w_to-MNI152NLin2009aSym_mode-image_desc-warp_xfm.nii.gz",
            "invwarp": f"{a}_from-MNI152NLin2009aSym_to-T1w_mode-image_desc-warp_xfm.nii.gz",
            "warped": f"{a}_space-MNI152NLin2009aSym_desc-brain_T1w.nii.gz",
            "metrics": f"{a}_space-MNI152NLin2009aSym_desc-registration_metrics.json",
            "atlas": f"{a}_space-T1w_atlas-JHU_dseg.nii.gz"}


def log(out: Path, rule: str, visit: str) -> str:
    return f"{out}/logs/{rule}/{visit}.log"


def fsl_tmp(first_output: str, rule: str) -> str:
    return (f'export FSLOUTPUTTYPE=NIFTI_GZ && tmp=$(mktemp -d "$(dirname "{first_output}")/.{rule}.XXXXXX")'
            f" && trap 'rm -rf \"$tmp\"' EXIT && ")


# ---- MRtrix3 ---------------------------------------------------------------------------------
def test_mrtrix_backends_commands_wiring_resources(tmp_path):
    jobs, out = dry_run(tmp_path, MRTRIX_ALL)
    p = dwi_paths(out)
    assert {"dwi_denoise_mrtrix", "dwi_degibbs_mrtrix", "dwi_mask_mrtrix", "dwi_tensor_mrtrix"} <= set(jobs)
    assert not any(r.endswith("_dipy") for r in jobs)

    den = jobs["dwi_denoise_mrtrix"]
    assert den["input"] == [RAW_DWI]
    assert den["output"] == [p["den"], p["noise"]]
    # paths shlex-quoted (plain paths here: no quotes needed), temp names from shell variables
    assert den["shell"] == (
        f'dwi={p["den"]}; noise={p["noise"]}; '
        f'dwidenoise {RAW_DWI} "$dwi.tmp.nii.gz" -noise "$noise.tmp.nii.gz" -extent 5,5,5 '
        f'-nthreads 2 -force > {log(out, "dwi_denoise_mrtrix", "sub-02")} 2>&1 && ' + tmp_then_mv("$dwi", "$noise"))
    assert den["resources"]["mem_mb"] == "4000" and den["resources"]["runtime"] == "60"

    gib = jobs["dwi_degibbs_mrtrix"]
    assert gib["input"] == [p["den"]]  # wired to the denoised series
    assert gib["shell"] == (
        f'dwi={p["gibbs"]}; mrdegibbs {p["den"]} "$dwi.tmp.nii.gz" -axes 0,1 -nshifts 20 -minW 1 -maxW 3 -nthreads 1 '
        f'-force > {log(out, "dwi_degibbs_mrtrix", "sub-02")} 2>&1 && ' + tmp_then_mv("$dwi"))

    mask = jobs["dwi_mask_mrtrix"]
    assert mask["input"] == [p["gibbs"], RAW_BVAL, RAW_BVEC]
    assert mask["shell"] == (
        f'mask={p["mask"]}; dwi2mask {p["gibbs"]} "$mask.tmp.nii.gz" -fslgrad {RAW_BVEC} {RAW_BVAL} -nthreads 1 '
        f'-force > {log(out, "dwi_mask_mrtrix", "sub-02")} 2>&1 && ' + tmp_then_mv("$mask"))

    ten = jobs["dwi_tensor_mrtrix"]
    assert ten["input"] == [p["gibbs"], RAW_BVAL, RAW_BVEC, p["mask"]]
    assert ten["output"] == [p[k] for k in DTI_PARAMS]
    sh = ten["shell"]
    assert " ".join(f"{k}={p[k]};" for k in ("FA", "MD", "AD", "RD", "V1", "RGB")) in sh
    assert (f'dwi2tensor {p["gibbs"]} "$tmp/tensor.mif" -fslgrad {RAW_BVEC} {RAW_BVAL} '
            f'-mask {p["mask"]} -ols -iter 1 -nthreads 1') in sh
    assert (f'tensor2metric "$tmp/tensor.mif" -mask {p["mask"]} -fa "$FA.tmp.nii.gz" '
            '-adc "$MD.tmp.nii.gz" -ad "$AD.tmp.nii.gz" -rd "$RD.tmp.nii.gz" '
            '-vector "$V1.tmp.nii.gz" -num 1 -modulate none') in sh
    assert '-vector "$tmp/rgb.mif" -num 1 -modulate FA' in sh
    assert 'mrcalc "$tmp/rgb.mif" -abs "$RGB.tmp.nii.gz"' in sh
    assert sh.endswith('for f in "$FA" "$MD" "$AD" "$RD" "$V1" "$RGB"; do mv "$f.tmp.nii.gz" "$f"; done')
    # downstream rule is unchanged and reads the MRtrix outputs
    assert jobs["dwi_stats_qc"]["input"] == [p["mask"], *(p[k] for k in DTI_PARAMS)]


def test_mrtrix_params_follow_config(tmp_path):
    over = _merge(MRTRIX_ALL, {"dwi": {"denoise": {"method": "none"},
                                       "degibbs": {"slice_axis": 0, "nshifts": 12},
                                       "tensor": {"fit_method": "OLS"}}})
    jobs, out = dry_run(tmp_path, over)
    assert "dwi_denoise_mrtrix" not in jobs
    gib = jobs["dwi_degibbs_mrtrix"]
    assert gib["input"] == [RAW_DWI]  # denoise none: the raw series
    assert "-axes 1,2 -nshifts 12 " in gib["shell"]
    assert "-ols -iter 0 " in jobs["dwi_tensor_mrtrix"]["shell"]


def test_mrtrix_denoise_extent(tmp_path):
    jobs, _ = dry_run(tmp_path, _merge(MRTRIX_ALL, {"dwi": {"denoise": {"extent": [3, 3, 3]}}}))
    assert " -extent 3,3,3 " in jobs["dwi_denoise_mrtrix"]["shell"]


def test_mrtrix_tensor_rejects_unsupported_fit(tmp_path):
    cfg, _ = write_config(tmp_path, _merge(MRTRIX_ALL, {"dwi": {"tensor": {"fit_method": "NLLS"}}}))
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0
    assert "dwi.tensor.fit_method" in (res.stdout + res.stderr) and "'NLLS'" in (res.stdout + res.stderr) and "OLS" in (res.stdout + res.stderr)


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
    assert pre["shell"] == (
        "tmp=$(mktemp -d \"${TMPDIR:-/tmp}/neurosmk_eddy.XXXXXX\") && trap 'rm -rf \"$tmp\"' EXIT && "
        f'dwi={p["pre"]}; bval={p["pre_bval"]}; bvec={p["pre_bvec"]}; '
        f'CUDA_VISIBLE_DEVICES= dwifslpreproc {p["gibbs"]} "$dwi.tmp.nii.gz" '
        f"-fslgrad {RAW_BVEC} {RAW_BVAL} -rpe_none -pe_dir AP -eddy_options ' --slm=linear --repol ' "
        '-export_grad_fsl "$bvec.tmp" "$bval.tmp" -scratch "$tmp" -nthreads 2 -force '
        f'> {log(out, "dwi_preproc_dwifslpreproc", "sub-02")} 2>&1 && mv "$bvec.tmp" "$bvec" '
        '&& mv "$bval.tmp" "$bval" && mv "$dwi.tmp.nii.gz" "$dwi"')
    # the mask and the tensor fit use the corrected series and the rotated gradients
    assert jobs["dwi_mask_mrtrix"]["input"] == [p["pre"], p["pre_bval"], p["pre_bvec"]]
    assert jobs["dwi_tensor_mrtrix"]["input"] == [p["pre"], p["pre_bval"], p["pre_bvec"], p["mask"]]
    assert f'-fslgrad {p["pre_bvec"]} {p["pre_bval"]}' in jobs["dwi_tensor_mrtrix"]["shell"]


def test_preproc_gpu_and_sidecar(tmp_path):
    bids = _bids_with_sidecar(tmp_path, {"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.0589})
    over = {"steps": {"anat": False},
            "dwi": {"preproc": {"method": "fsl_dwifslpreproc", "use_gpu": True, "eddy_options": "--repol"}}}
    jobs, out = dry_run(tmp_path, over, bids=bids)
    pre = jobs["dwi_preproc_dwifslpreproc"]
    assert pre["resources"]["gpu"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in pre["shell"]
    assert " -rpe_none -pe_dir j- -readout_time 0.0589 -eddy_options ' --repol ' " in pre["shell"]
    # DIPY mask after preproc
    assert jobs["dwi_mask_dipy"]["input"][0] == dwi_paths(out)["pre"]


def test_preproc_rpe_header(tmp_path):
    bids = _bids_with_sidecar(tmp_path, {"PhaseEncodingDirection": "j"})
    over = {"steps": {"anat": False}, "dwi": {"preproc": {"method": "fsl_dwifslpreproc", "rpe": "header"}}}
    jobs, _ = dry_run(tmp_path, over, bids=bids)
    assert f' -rpe_header -json_import {bids}/sub-02/dwi/sub-02_dwi.json ' in jobs["dwi_preproc_dwifslpreproc"]["shell"]


def test_preproc_needs_phase_encoding(tmp_path):
    cfg, _ = write_config(tmp_path, {"steps": {"anat": False}, "dwi": {"preproc": {"method": "fsl_dwifslpreproc"}}})
    res = snakemake(cfg, "-n", "--cores", "1")
    assert res.returncode != 0
    assert "dwi.preproc.pe_dir" in (res.stdout + res.stderr) and "PhaseEncodingDirection" in (res.stdout + res.stderr)


# ---- FSL structural --------------------------------------------------------------------------
def test_fsl_structural_family(tmp_path):
    atlas = tmp_path / "JHU-ICBM-labels-1mm.nii.gz"
    atlas.write_bytes(b"")
    over = {"steps": {"dwi": False},
            "anat": {"skullstrip": {"method": "fsl_bet", "fractional_threshold": 0.3, "vertical_gradient": 0.1},
                     "segment": {"method": "fsl_fast"},
                     "subcortical": {"method": "fsl_first"},
                     "register": {"method": "fsl"},
                     "atlas": {"method": "fsl_applywarp", "image": str(atlas)}}}
    jobs, out = dry_run(tmp_path, over)
    a = anat_paths(out)

    bet = jobs["anat_skullstrip_fsl_bet"]
    assert bet["input"] == [a["pre"]] and bet["output"] == [a["mask"], a["brain"]]
    assert bet["shell"] == (
        fsl_tmp(a["mask"], "anat_skullstrip_fsl_bet")
        + f'bet "{a["pre"]}" "$tmp/brain" -f 0.3 -g 0.1 -R -m > "{log(out, "anat_skullstrip_fsl_bet", "sub-01")}" 2>&1'
        f' && mv "$tmp/brain_mask.nii.gz" "{a["mask"]}" && mv "$tmp/brain.nii.gz" "{a["brain"]}"')

    fast = jobs["anat_segment_fsl_fast"]
    assert fast["input"] == [a["brain"]]
    assert fast["output"] == [a["dseg"], a["CSF"], a["GM"], a["WM"]]
    assert fast["shell"] == (
        fsl_tmp(a["dseg"], "anat_segment_fsl_fast")
        + f'fast -t 1 -n 3 -g -B -b -p -o "$tmp/fast" "{a["brain"]}" > "{log(out, "anat_segment_fsl_fast", "sub-01")}" 2>&1'
        f' && mv "$tmp/fast_seg.nii.gz" "{a["dseg"]}" && mv "$tmp/fast_pve_0.nii.gz" "{a["CSF"]}"'
        f' && mv "$tmp/fast_pve_1.nii.gz" "{a["GM"]}" && mv "$tmp/fast_pve_2.nii.gz" "{a["WM"]}"')

    first = jobs["anat_subcortical_fsl_first"]
    assert first["input"] == [a["brain"]] and first["output"] == [a["first"], a["firstqc"]]
    assert first["shell"] == (
        fsl_tmp(a["first"], "anat_subcortical_fsl_first")
        + f'( run_first_all -i "{a["brain"]}" -o "$tmp/first" -b  && cd "$tmp" && first_roi_slicesdir '
        f'"{a["brain"]}" "$tmp/first_all_fast_firstseg.nii.gz" ) > "{log(out, "anat_subcortical_fsl_first", "sub-01")}"'
        f' 2>&1 && mv "$tmp/first_all_fast_firstseg.nii.gz" "{a["first"]}" && mv "$tmp/slicesdir" "{a["firstqc"]}"')

    reg = jobs["anat_register_fsl"]
    tpl = reg["input"][1]
    assert reg["input"][0] == a["brain"] and tpl.endswith(".nii.gz")
    assert reg["output"] == [a["affine"], a["warp"], a["invwarp"], a["warped"]]
    sh = reg["shell"]
    for part in (f'flirt -in "{a["brain"]}" -ref "{tpl}" -dof 12 -omat "$tmp/affine.mat"',
                 f'fnirt --in="{a["brain"]}" --ref="{tpl}" --aff="$tmp/affine.mat" --config=T1_2_MNI152_2mm',
                 f'invwarp --warp="$tmp/warp.nii.gz" --ref="{a["brain"]}" --out="$tmp/invwarp.nii.gz"',
                 f'applywarp --in="{a["brain"]}" --ref="{tpl}" --warp="$tmp/warp.nii.gz" --interp=spline',
                 f'mv "$tmp/invwarp.nii.gz" "{a["invwarp"]}"'):
        assert part in sh, part
    assert jobs["anat_register_metrics_fsl"]["output"] == [a["metrics"]]

    at = jobs["anat_atlas_fsl_applywarp"]
    assert at["input"] == [str(atlas), a["brain"], a["invwarp"]]  # the inverse warp of anat_register_fsl
    assert at["output"] == [a["atlas"]]
    assert (f'applywarp --in="{atlas}" --ref="{a["brain"]}" --warp="{a["invwarp"]}" --interp=nn '
            f'--out="$tmp/atlas.nii.gz"') in at["shell"]
    # downstream QC reads the FSL outputs under the common names
    assert jobs["anat_volumes_qc"]["input"][:4] == [a["pre"], a["mask"], a["dseg"], a["warped"]]


def test_fsl_bet_variant_and_first_on_head(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"skullstrip": {"method": "fsl_bet", "bet_variant": "none"},
                     "subcortical": {"method": "fsl_first", "input": "preproc", "structures": "L_Hipp,R_Hipp"}}}
    jobs, out = dry_run(tmp_path, over)
    a = anat_paths(out)
    assert ' -f 0.5 -g 0  -m > ' in jobs["anat_skullstrip_fsl_bet"]["shell"]
    first = jobs["anat_subcortical_fsl_first"]
    assert first["input"] == [a["pre"]]
    assert f'run_first_all -i "{a["pre"]}" -o "$tmp/first"  -s L_Hipp,R_Hipp && ' in first["shell"]


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
    assert n4["shell"] == (
        f'AntsN4BiasFieldCorrectionFs -i "{RAW_T1}" -o "{a["pre"]}.tmp.nii.gz" -s 2 -t 20 10 '
        f'> "{log(out, "anat_biascorrect_freesurfer", "sub-01")}" 2>&1 && ' + tmp_then_mv(a["pre"]))

    # skull strip as the issue asks: recon-all -autorecon1, mri_convert --like (FreeSurfer env),
    # then fslmaths -mas (FSL env): two rules, one per tool env
    fsmask = f"{out}/sub-01/anat/sub-01_desc-fsbrainmask_T1w.nii.gz"
    ss = jobs["anat_skullstrip_freesurfer"]
    assert ss["input"] == [a["pre"]] and ss["output"] == [fsmask]
    assert ss["shell"] == (
        f'tmp=$(mktemp -d "$(dirname "{fsmask}")/.anat_skullstrip_freesurfer.XXXXXX") && trap \'rm -rf "$tmp"\' EXIT'
        f' && ( recon-all -sd "$tmp" -s fs -i "{a["pre"]}" -autorecon1 -openmp 2 && mri_convert '
        f'"$tmp/fs/mri/brainmask.mgz" "$tmp/brainmask.nii.gz" --like "{a["pre"]}" -rt nearest ) '
        f'> "{log(out, "anat_skullstrip_freesurfer", "sub-01")}" 2>&1 && mv "$tmp/brainmask.nii.gz" "{fsmask}"')
    fm = jobs["anat_skullstrip_freesurfer_fslmaths"]
    assert fm["input"] == [a["pre"], fsmask] and fm["output"] == [a["mask"], a["brain"]]
    assert fm["shell"] == (
        fsl_tmp(a["mask"], "anat_skullstrip_freesurfer_fslmaths")
        + f'( fslmaths "{a["pre"]}" -mas "{fsmask}" "$tmp/brain.nii.gz" && fslmaths "{fsmask}" -bin '
        f'"$tmp/mask.nii.gz" -odt char ) > "{log(out, "anat_skullstrip_freesurfer_fslmaths", "sub-01")}" 2>&1'
        f' && mv "$tmp/mask.nii.gz" "{a["mask"]}" && mv "$tmp/brain.nii.gz" "{a["brain"]}"')
    # downstream reads the fslmaths outputs
    assert jobs["anat_segment_atropos"]["input"] == [a["pre"], a["mask"]]

    fs = f"{out}/freesurfer/sub-01"
    ra = jobs["freesurfer_recon_all"]
    assert ra["input"] == [RAW_T1]
    assert ra["output"] == [f"{fs}/stats/aseg.stats", f"{fs}/stats/lh.aparc.stats", f"{fs}/stats/rh.aparc.stats",
                            f"{fs}/mri/aparc+aseg.mgz", f"{fs}/mri/aseg.mgz", f"{fs}/scripts/neurosmk_recon-all_all.done"]
    assert ra["resources"]["mem_mb"] == "16000" and ra["resources"]["runtime"] == "1440"
    sh = ra["shell"]
    assert sh.startswith(f'export SUBJECTS_DIR="{out}/freesurfer" && s="sub-01" && ')
    assert f'"{REPO}/scripts/fs_clear_stale_lock.py" "$SUBJECTS_DIR" "$s" && recon-all -sd "$SUBJECTS_DIR" -s "$s" -all -openmp 2 -3T' in sh
    assert sh.index("fs_clear_stale_lock.py") < sh.index("recon-all -sd")


def test_skullstrip_freesurfer_rules_use_one_tool_env_each():
    src = (REPO / "rules" / "freesurfer.smk").read_text()
    fs = src[src.index("rule anat_skullstrip_freesurfer:"):src.index("rule anat_skullstrip_freesurfer_fslmaths:")]
    fsl = src[src.index("rule anat_skullstrip_freesurfer_fslmaths:"):src.index('if METHOD["anat.skullstrip"] == "synthstrip"')]
    assert 'ENVS["freesurfer"]' in fs and 'CONTAINERS["freesurfer"]' in fs and "fslmaths" not in fs.split("shell:")[1]
    assert 'ENVS["fsl"]' in fsl and 'CONTAINERS["fsl"]' in fsl and "recon-all" not in fsl.split("shell:")[1]


# ---- SynthSeg and mri_segstats ----------------------------------------------------------------
SYN_DSEG = "sub-01/anat/sub-01_desc-synthseg_dseg.nii.gz"
SYN_VOL = "sub-01/anat/sub-01_desc-synthseg_volumes.csv"


def _fs_tmp(first_output: str, rule: str) -> str:
    return (f'tmp=$(mktemp -d "$(dirname "{first_output}")/.{rule}.XXXXXX")'
            f" && trap 'rm -rf \"$tmp\"' EXIT && ")


def test_synthseg_cpu_default(tmp_path):
    jobs, out = dry_run(tmp_path, {"steps": {"dwi": False}, "anat": {"synthseg": {"method": "freesurfer"}}})
    dseg, vol = f"{out}/{SYN_DSEG}", f"{out}/{SYN_VOL}"
    syn = jobs["anat_synthseg_freesurfer"]
    assert syn["input"] == [RAW_T1] and syn["output"] == [dseg, vol]
    assert "gpu" not in syn["resources"]
    assert syn["resources"]["mem_mb"] == "12000" and syn["resources"]["runtime"] == "30"
    assert syn["shell"] == (
        _fs_tmp(dseg, "anat_synthseg_freesurfer")
        + f'mri_synthseg --i "{RAW_T1}" --o "$tmp/synthseg.nii.gz" --vol "$tmp/volumes.csv" --cpu --threads 1 '
        f'> "{log(out, "anat_synthseg_freesurfer", "sub-01")}" 2>&1'
        f' && mv "$tmp/synthseg.nii.gz" "{dseg}" && mv "$tmp/volumes.csv" "{vol}"')
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
    assert syn["shell"] == (
        _fs_tmp(dseg, "anat_synthseg_freesurfer")
        + f'mri_synthseg --i "{RAW_T1}" --o "$tmp/synthseg.nii.gz" --robust --parc --threads 2 '
        f'> "{log(out, "anat_synthseg_freesurfer", "sub-01")}" 2>&1 && mv "$tmp/synthseg.nii.gz" "{dseg}"')
    assert "--cpu" not in syn["shell"]


def test_segstats_on_synthseg(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"synthseg": {"method": "freesurfer"}, "segstats": {"method": "freesurfer"}}}
    jobs, out = dry_run(tmp_path, over)
    stats = f"{out}/sub-01/anat/sub-01_desc-synthseg_segstats.stats"
    st = jobs["anat_segstats_freesurfer"]
    assert st["input"] == [f"{out}/{SYN_DSEG}"] and st["output"] == [stats]  # wired to SynthSeg's output
    assert st["resources"]["mem_mb"] == "2000"
    assert st["shell"] == (
        f'mri_segstats --seg "{out}/{SYN_DSEG}" --ctab-default --excludeid 0 --sum "{stats}.tmp" '
        f'> "{log(out, "anat_segstats_freesurfer", "sub-01")}" 2>&1 && mv "{stats}.tmp" "{stats}"')


def test_segstats_on_recon_all_aseg(tmp_path):
    over = {"steps": {"dwi": False}, "anat": {"segstats": {"method": "freesurfer", "seg": "aseg"}},
            "freesurfer": {"recon_all": {"enabled": True}}}
    jobs, out = dry_run(tmp_path, over)
    aseg = f"{out}/freesurfer/sub-01/mri/aseg.mgz"
    assert aseg in jobs["freesurfer_recon_all"]["output"]
    st = jobs["anat_segstats_freesurfer"]
    assert st["input"] == [aseg]
    assert st["output"] == [f"{out}/sub-01/anat/sub-01_desc-aseg_segstats.stats"]
    assert f'mri_segstats --seg "{aseg}" --ctab-default --excludeid 0 --sum ' in st["shell"]


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
    assert set(one) == {"freesurfer_recon_all", "fs_parse_subject"}
    assert one["fs_parse_subject"]["input"] == [f"{fs}/stats/aseg.stats", f"{fs}/stats/lh.aparc.stats",
                                                f"{fs}/stats/rh.aparc.stats", f"{fs}/scripts/neurosmk_recon-all_all.done"]
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


_PROTECTED_FLAGS = """
import os, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.io import is_flagged
from snakemake.settings.types import ConfigSettings, DeploymentSettings, ResourceSettings
from snakemake_interface_executor_plugins.settings import DeploymentMethod
with SnakemakeApi() as api:  # --sdm conda: parse only, the FreeSurfer tools need not be on PATH
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                      config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]),
                      deployment_settings=DeploymentSettings(deployment_method=[DeploymentMethod.CONDA]))
    rule = wf._workflow.get_rule("freesurfer_recon_all")
    print(*(f"{os.path.basename(f)}:{is_flagged(f, 'protected')}" for f in rule.output))
"""


def test_finished_recon_all_outputs_stay_protected(tmp_path):
    """recon-all marks every output protected() (Snakemake makes them read-only when the job
    ends); a newer T1w then makes Snakemake want to re-run recon-all, and the read-only outputs
    stop the run at start ("Write-protected output files"): nothing is deleted or redone."""
    (tmp_path / "flags").mkdir()
    flags = subprocess.run([sys.executable, "-c", _PROTECTED_FLAGS, str(write_config(
        tmp_path / "flags", {"freesurfer": {"recon_all": {"enabled": True}}})[0])], cwd=REPO, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert flags.returncode == 0, flags.stderr[-3000:]
    assert flags.stdout.split() == ["aseg.stats:True", "lh.aparc.stats:True", "rh.aparc.stats:True",
                                    "aparc+aseg.mgz:True", "aseg.mgz:True", "neurosmk_recon-all_all.done:True"]
    bids = _recon_bids(tmp_path)
    over = {"freesurfer_dir": None, "steps": {"dwi": False}, "freesurfer": {"recon_all": {"enabled": True}}}
    cfg, out = write_config(tmp_path, over, bids)
    files = _finish_recon_all(out)
    os.utime(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")  # newer than the recon-all outputs
    res = subprocess.run([sys.executable, "-c", _AS_USER, "-s", "Snakefile", "--configfile", str(cfg), "-n", "-p",
                          "--cores", "2", str(out / FSG_LONG)], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    msg = res.stdout + res.stderr
    assert res.returncode != 0, msg[-3000:]
    assert "Write-protected output files" in msg and "freesurfer_recon_all" in msg, msg[-3000:]
    assert f"{out}/freesurfer/sub-01/stats/aseg.stats" in msg
    assert all(f.exists() and f.stat().st_size >= 0 for f in files)


def test_recon_all_outputs_are_protected():
    src = (REPO / "rules" / "freesurfer.smk").read_text()
    block = src[src.index("rule freesurfer_recon_all:"):]
    assert "protected(v) for k, v in FS_OUTPUTS.items()" in block and "done=protected(FS_DONE)" in block


def test_synthstrip_gpu(tmp_path):
    over = {"steps": {"dwi": False},
            "anat": {"skullstrip": {"method": "synthstrip", "use_gpu": True, "synthstrip_no_csf": True,
                                    "synthstrip_border": 2}}}
    jobs, out = dry_run(tmp_path, over)
    a = anat_paths(out)
    ss = jobs["anat_skullstrip_synthstrip"]
    assert ss["resources"]["gpu"] == "1"
    assert ss["shell"] == (
        f'mri_synthstrip -i "{a["pre"]}" -o "{a["brain"]}.tmp.nii.gz" -m "{a["mask"]}.tmp.nii.gz" -b 2 --no-csf -g '
        f'-t 1 > "{log(out, "anat_skullstrip_synthstrip", "sub-01")}" 2>&1 && ' + tmp_then_mv(a["mask"], a["brain"]))
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
    assert "step 'dwi.denoise': unknown method 'mrtrixx' (known: dipy_mppca, mrtrix, none, torch)" in (res.stdout + res.stderr)


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
    text = (REPO / "rules" / "common.smk").read_text()
    images = re.findall(r'"(docker://[^"]+)"', text)
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


def test_schema_method_descriptions_list_every_backend():
    schema = yaml.safe_load((REPO / "config" / "schema" / "config.schema.yaml").read_text())
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


def test_stale_lock_removed_when_no_recon_all_runs(tmp_path):
    mod = _lock_module()
    scripts = tmp_path / "subjects" / "sub-01" / "scripts"
    scripts.mkdir(parents=True)
    lock = scripts / "IsRunning.lh+rh"
    lock.write_text("SUBJECT sub-01\nHOST thishost\nPROCESSID 999\n")
    proc = _fake_proc(tmp_path, {10: ["/bin/bash", "/opt/fs/bin/recon-all", "-s", "sub-02", "-all"]})
    removed = mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(proc), hostname="thishost")
    assert removed == [str(lock)] and not lock.exists()
    assert mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(proc)) == []


def test_lock_kept_while_recon_all_runs_or_from_other_host(tmp_path):
    mod = _lock_module()
    scripts = tmp_path / "subjects" / "sub-01" / "scripts"
    scripts.mkdir(parents=True)
    lock = scripts / "IsRunning.lh+rh"
    lock.write_text("HOST thishost\n")
    proc = _fake_proc(tmp_path, {42: ["/bin/tcsh", "-f", "/opt/fs/bin/recon-all", "-s", "sub-01", "-all"]})
    with pytest.raises(RuntimeError, match="pid 42"):
        mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(proc), hostname="thishost")
    assert lock.exists()
    lock.write_text("HOST otherhost\n")
    with pytest.raises(RuntimeError, match="otherhost"):
        mod.clear_stale_locks(str(tmp_path / "subjects"), "sub-01", proc=str(tmp_path / "empty"), hostname="me")
    assert lock.exists()
