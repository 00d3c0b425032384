"""The derivative dataset is valid BIDS: the official validator (bids-validator-deno 3.0.2, the
schema validator) reports no error on the end-to-end output; .bidsignore holds only what
BIDS-Derivatives cannot express yet, each line documented; logs and benchmarks live under the
BIDS ``logs/`` folder through neurosmk.paths."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neurosmk import provenance as P
from neurosmk.paths import bench_path, log_path

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = [sys.executable, "-c", "import sys; from bids_validator_deno import cli; sys.exit(cli())"]


def validate(root: Path) -> dict:
    """Run the validator (offline: the schema is bundled) and return its JSON report."""
    proc = subprocess.run(VALIDATOR + [str(root), "--format", "json"], capture_output=True,
                          text=True, timeout=600)
    assert proc.stdout.strip(), f"validator printed nothing (rc {proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def _issues(report: dict, severity: str) -> list[dict]:
    return [i for i in report["issues"]["issues"] if i["severity"] == severity]


def _fmt(issues) -> str:
    return "\n".join(f"{i['code']} {i.get('location', '')} {i.get('issueMessage') or ''}"[:300]
                     for i in issues)


# ---- the validator finds errors where there are some (the harness can fail) ------------------
def test_validator_reports_a_broken_derivative(tmp_path):
    root = tmp_path / "deriv"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "t"}]}))
    import nibabel as nib
    import numpy as np

    img = root / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), str(img))
    (root / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.json").write_text("{}")
    (root / "notes.txt").write_text("x")
    codes = {i["code"] for i in _issues(validate(root), "error")}
    assert {"SIDECAR_KEY_REQUIRED", "NOT_INCLUDED"} <= codes, codes
    # and with what neurosmk writes: SkullStripped, .bidsignore -> no error
    (root / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.json").write_text(
        json.dumps({"SkullStripped": P.skull_stripped(img)}))
    (root / ".bidsignore").write_text("/notes.txt\n")
    assert _issues(validate(root), "error") == []


# ---- the end-to-end output --------------------------------------------------------------------
@pytest.mark.slow
def test_e2e_output_is_valid_bids(reduced_run):
    out = reduced_run["out"]
    report = validate(out)
    errors = _issues(report, "error")
    assert errors == [], _fmt(errors)
    warnings = _issues(report, "warning")
    print(f"\nbids-validator-deno: 0 errors, {len(warnings)} warnings:\n{_fmt(warnings)}")
    # what it saw: the per-visit images were validated, not ignored
    summary = report["summary"]
    assert sorted(summary["subjects"]) == ["01", "02"] and summary["totalFiles"] > 20, summary
    assert sorted(summary["dataTypes"]) == ["anat", "dwi"], summary


@pytest.mark.slow
def test_bidsignore_lines_are_documented_and_needed(reduced_run):
    out = reduced_run["out"]
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines == [pat for pat, _ in P.BIDSIGNORE]
    readme = (REPO / "README.md").read_text()
    for pat, why in P.BIDSIGNORE:
        assert f"`{pat}`" in readme, f"{pat} not justified in README.md"
        assert f"`{pat}`: {why}" in (out / "README.md").read_text()
    # every line hides files of this run, but those of recon-all, mri_segstats and dwifslpreproc
    # (off in this configuration)
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    for pat, _ in P.BIDSIGNORE:
        if pat in ("/freesurfer", "*_segstats.*", "*_desc-preproc_dwi.bval", "*_desc-preproc_dwi.bvec"):
            continue
        rx = re.escape(pat.strip("/")).replace(r"\*", "[^/]*")
        hit = [f for f in files if re.search(("^" if pat.startswith("/") else "(^|/)") + rx, f)]
        assert hit, f".bidsignore line {pat} matches nothing"
    # logs (BIDS logs/, opaque) need no line
    assert not any("log" in pat for pat in lines)
    rows = (out / "descriptions.tsv").read_text().splitlines()
    assert rows[0] == "desc_id\tdescription" and all(r.startswith("desc-") for r in rows[1:])


@pytest.mark.slow
def test_dataset_description_readme_descriptions(reduced_run):
    out = reduced_run["out"]
    dd = json.loads((out / "dataset_description.json").read_text())
    gen = dd["GeneratedBy"][0]
    assert gen["Container"] == {"Type": "docker", "Tag": "condaforge/miniforge3:24.11.3-0",
                                "URI": "docker://condaforge/miniforge3:24.11.3-0"}
    raw = json.loads((reduced_run["reduced"]["bids"] / "dataset_description.json").read_text())
    assert dd["Authors"] == raw["Authors"]
    readme = (out / "README.md").read_text()
    assert "na_values='n/a'" in readme and "na.strings = 'n/a'" in readme
    rows = [ln.split("\t") for ln in (out / "descriptions.tsv").read_text().splitlines()]
    assert rows[0] == ["desc_id", "description"]
    documented = {r[0][len("desc-"):] for r in rows[1:]}
    used = {m for p in out.rglob("*") for m in re.findall(r"_desc-([a-zA-Z0-9]+)_", p.name)}
    assert used and used <= documented, used - documented


def test_every_desc_label_of_the_rules_is_described():
    labels = set()
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        labels |= set(re.findall(r'desc="([a-zA-Z0-9]+)"', text))
        labels |= set(re.findall(r'figure\("([a-zA-Z0-9]+)"', text))
        labels |= set(re.findall(r"_desc-([a-zA-Z0-9]+)_", text))
    labels |= {"synthseg", "aseg"}  # anat.segstats.seg values (desc=_SEGSTATS_SEG)
    assert len(labels) > 10 and labels <= set(P.DESCRIPTIONS), labels - set(P.DESCRIPTIONS)


@pytest.mark.slow
def test_preprocessed_dwi_have_gradients_and_skullstripped(reduced_run):
    out = reduced_run["out"]
    raw = reduced_run["reduced"]["bids"] / "sub-02" / "dwi" / "sub-02_dwi"
    d = out / "sub-02" / "dwi"
    series = sorted(d.glob("*_dwi.nii.gz"))
    assert [s.name for s in series] == ["sub-02_desc-degibbs_dwi.nii.gz", "sub-02_desc-denoised_dwi.nii.gz"]
    # one gradient table beside them, inherited by every series (BIDS allows no desc- on .bval)
    for ext in (".bval", ".bvec"):
        assert (d / f"sub-02_dwi{ext}").read_bytes() == Path(f"{raw}{ext}").read_bytes()
    assert sorted(p.name for p in d.glob("*.bv*")) == ["sub-02_dwi.bval", "sub-02_dwi.bvec"]
    for s in series:
        assert json.loads(Path(str(s)[:-len(".nii.gz")] + ".json").read_text())["SkullStripped"] is False
    anat = out / "sub-01" / "anat"
    for name, want in (("desc-preproc_T1w", False), ("desc-brain_T1w", True),
                       ("space-MNI152NLin2009aSym_desc-brain_T1w", True)):
        assert json.loads((anat / f"sub-01_{name}.json").read_text())["SkullStripped"] is want
    # a job of segmentations only records none (BIDS exempts dseg/probseg/mask)
    assert "SkullStripped" not in json.loads((anat / "sub-01_dseg.json").read_text())


def test_skull_stripped_rule_and_shell_sidecar(tmp_path):
    assert P.skull_stripped("o/sub-1_desc-brain_T1w.nii.gz") is True
    assert P.skull_stripped("o/sub-1_desc-preproc_T1w.nii.gz") is False
    assert P.skull_stripped("o/sub-1_desc-denoised_dwi.nii.gz") is False
    assert P.skull_stripped("o/sub-1_model-DTI_param-FA_dwimap.nii.gz") is True
    for none in ("o/sub-1_desc-brain_mask.nii.gz", "o/sub-1_dseg.nii.gz", "o/x_xfm.nii.gz",
                 "o/sub-1_label-GM_probseg.nii.gz", "o/sub-1_desc-roi_stats.tsv"):
        assert P.skull_stripped(none) is None, none
    assert P.skull_stripped_of(["a_desc-brain_mask.nii.gz", "a_desc-brain_T1w.nii.gz"]) is True
    with pytest.raises(ValueError, match="some skull-stripped"):
        P.skull_stripped_of(["a_desc-brain_T1w.nii.gz", "a_desc-preproc_T1w.nii.gz"])
    # shell rules: scripts/sidecar.sh keeps it (it extends the record's last object)
    out, bids = tmp_path / "out", tmp_path / "raw"
    (out / "sub-01").mkdir(parents=True)
    bids.mkdir()
    img = out / "sub-01" / "sub-01_desc-brain_T1w.nii.gz"
    img.write_bytes(b"img")
    sc = out / "sub-01" / "sub-01_desc-brain_T1w.json"
    static = json.dumps(P.static_record(step="anat.x", method="m", rule="r", parameters={},
                                        conda_env=None, container=None, skull_stripped=True))
    res = subprocess.run(["sh", str(REPO / "scripts" / "sidecar.sh"), static, "echo t 1", str(out),
                          str(bids), str(img), str(sc), "--"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rec = json.loads(sc.read_text())
    assert rec["SkullStripped"] is True and rec["SoftwareEnvironment"]["Active"] == "host"


def test_log_and_bench_paths():
    assert log_path("/o", "dwi_tensor_dipy", "sub-02") == "/o/logs/dwi_tensor_dipy/sub-02.log"
    assert bench_path("/o", "dwi_tensor_dipy", "sub-02_ses-A") == \
        "/o/logs/dwi_tensor_dipy/sub-02_ses-A.benchmark.tsv"
    assert log_path("/o", "group_long") == "/o/logs/group_long.log"
    assert bench_path("/o", "group_long") == "/o/logs/group_long.benchmark.tsv"
    # every rule's log and benchmark come from these helpers (no path hard-coded in a rule)
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        assert "/logs/" not in text and "/benchmarks/" not in text, smk.name
