"""Every FSL / MRtrix3 / FreeSurfer / TORTOISE call of every scenario config, checked against an
independent description of the tool's interface (not against the rule's own strings):

- FSL and MRtrix3: NiWrap's generated wrappers (niwrap-fsl / niwrap-mrtrix 1.1.0; Boutiques
  descriptors of FSL 6.0.4 and MRtrix3 3.0.4), probed by tests/niwrap_oracle.py;
- FreeSurfer: the argument parsers in FreeSurfer's own source, transcribed with their commit in
  tests/data/interfaces/freesurfer.yaml (every FreeSurfer tool the rules call, recon-all and
  mri_convert included);
- TORTOISE DRBUDDI: QSIPrep's interface (tests/data/interfaces/tortoise.yaml).

Each scenario is a dry run (`snakemake -n -p`); its shell commands are split into simple
commands with shlex, and every option and value is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from .niwrap_oracle import check_argv, load_spec, simple_commands, tool_name
from .test_tool_rules import BIDS, MRTRIX_ALL, _bids_with_sidecar, _merge, dry_run

DATA = Path(__file__).parent / "data" / "interfaces"
FS_SPEC = yaml.safe_load((DATA / "freesurfer.yaml").read_text())
TORTOISE_SPEC = yaml.safe_load((DATA / "tortoise.yaml").read_text())

FSL_TOOLS = {"bet", "fast", "run_first_all", "first_roi_slicesdir", "flirt", "fnirt", "invwarp", "applywarp",
             "fslmaths"}
MRTRIX_TOOLS = {"dwidenoise", "mrdegibbs", "dwi2mask", "dwi2tensor", "tensor2metric", "mrcalc", "dwifslpreproc"}
SHELL_BUILTINS = {"mv", "cp", "mkdir", "mktemp", "echo", "[", "command", "sh", "printf", "date", "for", "do", "done",
                  "", "toolrun_begin", "toolrun_end"}  # ". scripts/toolrun.sh" (tool_name(".") is "")

_SPECS: dict[str, object] = {}


def _spec(tool):
    if tool not in _SPECS:
        _SPECS[tool] = load_spec("fsl" if tool in FSL_TOOLS else "mrtrix", tool)
    return _SPECS[tool]


def check_yaml_spec(spec: dict, argv: list[str]) -> list[str]:
    problems, pos, seen = [], 0, set()
    opts = spec["options"]
    slot_opts = set(spec.get("fills_positional", ()))
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in opts:
            o = opts[a]
            seen.add(a)
            if o["nargs"] == "+":  # one or more values, up to the next option
                n = 0
                while i + 1 + n < len(argv) and not (argv[i + 1 + n].startswith("-") and argv[i + 1 + n] in opts):
                    n += 1
            else:
                n = o["nargs"]
            vals = argv[i + 1:i + 1 + n]
            if len(vals) < max(n, 1 if o["nargs"] == "+" else 0):
                problems.append(f"{argv[0]} {a}: missing value")
            for v in vals:
                if o.get("type") == "int" and not v.lstrip("-").isdigit():
                    problems.append(f"{argv[0]} {a}: {v!r} is not an integer")
                if o.get("type") == "float":
                    try:
                        float(v)
                    except ValueError:
                        problems.append(f"{argv[0]} {a}: {v!r} is not a number")
                if o.get("type") == "choice" and v not in o["choices"]:
                    problems.append(f"{argv[0]} {a}: {v!r} is not one of {o['choices']}")
            if a in slot_opts:  # e.g. mri_convert -i IN: the option takes the first free slot
                pos += 1
            i += 1 + n
            continue
        if a.startswith("-"):
            problems.append(f"{argv[0]}: option {a!r} is not accepted ({spec['source']})")
        else:
            pos += 1
        i += 1
    if pos != spec["positional"]:
        problems.append(f"{argv[0]}: {pos} positional arguments, the parser takes {spec['positional']}")
    for name, o in opts.items():
        if o.get("required") and name not in seen:
            problems.append(f"{argv[0]}: required option {name} missing")
    return problems


def check_calls(jobs: dict) -> tuple[list[str], dict[str, str]]:
    """(problems, tool -> oracle) for every tool call in the dry run's shell commands."""
    problems, checked = [], {}
    for rule, job in jobs.items():
        if not job.get("shell"):
            continue
        for argv in simple_commands(job["shell"]):
            tool = tool_name(argv[0])
            if tool in FSL_TOOLS | MRTRIX_TOOLS:
                problems += [f"{rule}: {p}" for p in check_argv(_spec(tool), argv)]
                checked[tool] = f"NiWrap {'niwrap-fsl' if tool in FSL_TOOLS else 'niwrap-mrtrix'} 1.1.0"
            elif tool in FS_SPEC:
                problems += [f"{rule}: {p}" for p in check_yaml_spec(FS_SPEC[tool], argv)]
                checked[tool] = FS_SPEC[tool]["source"]
            elif tool in TORTOISE_SPEC or tool == "DRBUDDI_cuda":
                problems += [f"{rule}: {p}" for p in check_yaml_spec(TORTOISE_SPEC["DRBUDDI"], argv)]
                checked[tool] = TORTOISE_SPEC["DRBUDDI"]["source"]
            elif tool not in SHELL_BUILTINS and not tool.startswith("$("):
                problems.append(f"{rule}: {tool}: no interface description (add it to the oracle)")
    return problems, checked


def _bids_with_reverse_pe(tmp_path: Path) -> Path:
    """The demo DWI with its phase encoding, and a reverse-phase-encoded b=0 in fmap/."""
    bids = _bids_with_sidecar(tmp_path, {"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05})
    fm = bids / "sub-02" / "fmap"
    fm.mkdir()
    (fm / "sub-02_dir-PA_epi.nii.gz").symlink_to(BIDS / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    (fm / "sub-02_dir-PA_epi.json").write_text(json.dumps({"PhaseEncodingDirection": "j"}))
    return bids


def _atlas(tmp_path):
    p = tmp_path / "JHU-ICBM-labels-1mm.nii.gz"
    p.write_bytes(b"")
    return str(p)


FSL_TPL = {"template": {"name": "MNI152NLin6Asym"}}
SCENARIOS = {
    "fsl_anat": lambda t: _merge(FSL_TPL, {
        "steps": {"dwi": False},
        "anat": {"skullstrip": {"method": "fsl_bet", "fractional_threshold": 0.3, "vertical_gradient": 0.1},
                 "segment": {"method": "fsl_fast"},
                 "subcortical": {"method": "fsl_first", "structures": "L_Hipp,R_Hipp", "input": "preproc"},
                 "register": {"method": "fsl"},
                 "atlas": {"method": "fsl_applywarp", "image": _atlas(t)}}}),
    "freesurfer": lambda t: {
        "steps": {"dwi": False},
        "anat": {"biascorrect": {"method": "freesurfer"}, "skullstrip": {"method": "freesurfer"},
                 "synthseg": {"method": "freesurfer", "robust": True, "parc": True},
                 "segstats": {"method": "freesurfer"}},
        "freesurfer": {"recon_all": {"enabled": True, "extra_args": "-3T"}}},
    "synthstrip_synthmorph_gpu": lambda t: {
        "steps": {"dwi": False},
        "anat": {"skullstrip": {"method": "synthstrip", "use_gpu": True, "synthstrip_no_csf": True},
                 "register": {"method": "synthmorph", "use_gpu": True}}},
    "mrtrix_eddy": lambda t: _merge(MRTRIX_ALL, {"dwi": {"preproc": {"method": "fsl_dwifslpreproc", "pe_dir": "AP"},
                                                         "tensor": {"fit_method": "OLS"}}}),
    "recon_all_aseg": lambda t: {
        "steps": {"dwi": False},
        "anat": {"segstats": {"method": "freesurfer", "seg": "aseg"}},
        "freesurfer": {"recon_all": {"enabled": True, "threads": 2, "extra_args": "-cw256 -notal-check -parallel"}}},
}
# the tools each scenario must reach (so a scenario that silently stops calling one fails)
EXPECTED_TOOLS = {
    "fsl_anat": {"bet", "fast", "run_first_all", "first_roi_slicesdir", "flirt", "fnirt", "invwarp", "applywarp"},
    "freesurfer": {"AntsN4BiasFieldCorrectionFs", "recon-all", "mri_convert", "fslmaths", "mri_synthseg",
                   "mri_segstats"},
    "synthstrip_synthmorph_gpu": {"mri_synthstrip", "mri_synthmorph"},
    "mrtrix_eddy": {"dwidenoise", "mrdegibbs", "dwi2mask", "dwi2tensor", "tensor2metric", "dwifslpreproc"},
    "recon_all_aseg": {"recon-all", "mri_convert", "mri_segstats"},
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_tool_call_matches_its_interface(tmp_path, name):
    jobs, _ = dry_run(tmp_path, SCENARIOS[name](tmp_path))
    problems, checked = check_calls(jobs)
    assert not problems, "\n".join(problems)
    assert EXPECTED_TOOLS[name] <= set(checked), f"{name}: {EXPECTED_TOOLS[name] - set(checked)} not called"
    print(name, json.dumps(checked, indent=1))


def test_drbuddi_call_matches_qsiprep_interface(tmp_path):
    bids = _bids_with_reverse_pe(tmp_path)
    jobs, out = dry_run(tmp_path, {"steps": {"anat": False},
                                   "dwi": {"preproc": {"method": "drbuddi", "use_gpu": True}}},
                        bids=bids)
    problems, checked = check_calls(jobs)
    assert not problems, "\n".join(problems)
    assert "DRBUDDI_cuda" in checked
    drb = jobs["dwi_preproc_drbuddi"]
    assert drb["resources"]["gpu"] == "1"
    prep = jobs["dwi_preproc_drbuddi_inputs"]
    assert str(bids / "sub-02" / "fmap" / "sub-02_dir-PA_epi.nii.gz") in prep["input"]
    # the corrected series feeds the mask and the tensor fit under the common names
    pre = f"{out}/sub-02/dwi/sub-02_desc-preproc_dwi.nii.gz"
    assert jobs["dwi_preproc_drbuddi_apply"]["output"][0] == pre
    assert jobs["dwi_mask_dipy"]["input"][0] == pre
    # DRBUDDI's version (it has no version option: the image it ran in) goes from its job to the
    # sidecars of the corrected series
    version_file = [o for o in drb["output"] if o.endswith("drbuddi_version.txt")]
    assert len(version_file) == 1 and version_file[0] in jobs["dwi_preproc_drbuddi_apply"]["input"]
    sh = [c for c in simple_commands(drb["shell"]) if c[:2] == ["sh", "-c"]]
    assert len(sh) == 1
    image = "docker://pennlinc/qsiprep-drbuddicuda:24.4.29"
    env = {k: v for k, v in os.environ.items() if k not in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER")}
    inside = subprocess.run(sh[0], env={**env, "APPTAINER_CONTAINER": "/x/img.sif"}, capture_output=True, text=True)
    assert inside.stdout == (f"TORTOISE DRBUDDI_cuda from {image} "
                             "(DRBUDDI has no version option: the image tag is the version)")
    outside = subprocess.run(sh[0], env=env, capture_output=True, text=True)
    assert outside.stdout.startswith("TORTOISE DRBUDDI_cuda, version unknown") and image in outside.stdout


# ---- the oracle itself must reject what the tools reject -----------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["fnirt", "--in=a", "--ref=b", "--config=T1_2_MNI152_1mm"], "is not one of"),   # no such config
    (["flirt", "-in", "a", "-ref", "b", "-dof", "twelve"], "not an integer"),
    (["bet", "a", "b", "-q"], "'-q' is not in NiWrap"),
    (["tensor2metric", "t.mif", "-modulate", "FAX"], "is not one of"),
    (["dwidenoise", "in.nii"], "positional"),
    (["applywarp", "--in=a", "--ref=b", "--interp=cubic"], "is not one of"),
])
def test_oracle_rejects_bad_calls(argv, needle):
    tool = argv[0]
    problems = check_argv(load_spec("fsl" if tool in FSL_TOOLS else "mrtrix", tool), argv)
    assert any(needle in p for p in problems), problems


def test_freesurfer_spec_rejects_bad_calls():
    n4 = FS_SPEC["AntsN4BiasFieldCorrectionFs"]
    assert check_yaml_spec(n4, ["AntsN4BiasFieldCorrectionFs", "-i", "a", "-o", "b", "-t", "20", "10", "-s", "2"]) == []
    assert any("not an integer" in p for p in check_yaml_spec(n4, ["AntsN4BiasFieldCorrectionFs", "-i", "a", "-o", "b",
                                                                   "-t", "20", "x"]))
    assert any("--i" in p for p in check_yaml_spec(FS_SPEC["mri_synthseg"], ["mri_synthseg", "--o", "x"]))
    assert any("-i" in p for p in check_yaml_spec(FS_SPEC["mri_synthseg"], ["mri_synthseg", "-i", "a", "--i", "a",
                                                                            "--o", "b"]))
    assert any("not an integer" in p for p in check_yaml_spec(FS_SPEC["mri_segstats"],
                                                              ["mri_segstats", "--seg", "s", "--excludeid", "zero"]))
    assert any("-t" in p for p in check_yaml_spec(FS_SPEC["mri_synthstrip"], ["mri_synthstrip", "-i", "a", "-t", "2"]))
    assert any("not one of" in p for p in check_yaml_spec(FS_SPEC["mri_synthmorph"],
                                                          ["mri_synthmorph", "-m", "joint", "a", "b"]))
    assert any("positional" in p for p in check_yaml_spec(FS_SPEC["mri_synthmorph"], ["mri_synthmorph", "a"]))


@pytest.mark.parametrize("argv,needle", [
    (["mri_convert", "a.mgz", "b.nii.gz", "--like", "t1.nii.gz", "-rt", "trilinear"], "is not one of"),
    (["mri_convert", "a.mgz", "b.nii.gz", "--like-image", "t1.nii.gz"], "'--like-image' is not accepted"),
    (["mri_convert", "a.mgz", "b.nii.gz", "c.nii.gz"], "3 positional arguments"),
    (["mri_convert", "-i", "a.mgz", "-o", "b.nii.gz", "c.nii.gz"], "3 positional arguments"),
    (["mri_convert", "a.mgz", "b.nii.gz", "-vs", "1", "1"], "missing value"),  # -vs takes 3 floats
    (["mri_convert", "a.mgz", "b.nii.gz", "-vs", "1", "1", "x"], "not a number"),
    (["recon-all", "-s", "x", "-all", "-openmp", "four"], "not an integer"),
    (["recon-all", "-s", "x", "-autorecon4"], "'-autorecon4' is not accepted"),
    (["recon-all", "-s", "x", "-all", "extra_word"], "1 positional arguments"),
    (["recon-all", "-s", "x", "-all", "-hemi", "both"], "is not one of"),
    (["recon-all", "-s", "x", "-all", "--threads", "2"], "'--threads' is not accepted"),  # only in FreeSurfer 8
])
def test_freesurfer_spec_rejects_bad_mri_convert_and_recon_all(argv, needle):
    problems = check_yaml_spec(FS_SPEC[argv[0]], argv)
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("argv", [
    ["mri_convert", "a.mgz", "b.nii.gz", "--like", "t1.nii.gz", "-rt", "nearest"],
    ["mri_convert", "-i", "a.mgz", "-o", "b.nii.gz", "-odt", "uchar"],
    ["mri_convert", "-i", "a.mgz", "b.nii.gz"],
    ["recon-all", "-sd", "/s", "-s", "fs", "-i", "t1.nii.gz", "-autorecon1", "-openmp", "4"],
    ["recon-all", "-sd", "/s", "-s", "sub-01", "-all", "-openmp", "8", "-3T", "-cw256", "-notal-check", "-parallel"],
])
def test_freesurfer_spec_accepts_documented_calls(argv):
    assert check_yaml_spec(FS_SPEC[argv[0]], argv) == []
