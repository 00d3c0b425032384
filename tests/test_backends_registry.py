"""The backend registry (src/neurosmk/backends.py) against what is generated from or checked
with it: the rules' resources (dry runs), the profiles, the start-up check, methods.md, the
schema's method lists, the README table and the re-run matrix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neurosmk import backends
from neurosmk.backends import STEPS, BackendError, check_rules, resources, rule_resources
from neurosmk.config import load_schema, validate_config
from neurosmk.provenance import methods_text
from neurosmk.startup import rules_defined

REPO = Path(__file__).resolve().parents[1]
DEMO_CFG = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))


def _cfg(tmp_path: Path, edits: dict) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(bids_dir=str(REPO / "demo" / "bids"), output_dir=str(tmp_path / "out"),
               freesurfer_dir=str(REPO / "demo" / "freesurfer"))
    for key, value in edits.items():
        cur = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake(args, cwd, pre: str = ""):
    """snakemake in a fresh Python; ``pre`` runs first in the same process (to edit the registry)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    code = f"{pre}\nimport sys\nfrom snakemake.cli import main\nsys.argv = ['snakemake'] + {list(args)!r}\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env, check=False)


def _job_resources(out: str) -> dict[str, dict[str, str]]:
    """Rule -> its jobs' resources (key=value) from a dry run's job listing."""
    got, rule = {}, None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            pairs = dict(kv.split("=", 1) for kv in re.split(r",\s*", line.split(":", 1)[1].strip()) if "=" in kv)
            got.setdefault(rule, pairs)
    got.pop("all", None)
    return got


# default configuration; every tool backend with its GPU switched on (use_gpu / device: cuda)
SCENARIOS = {
    "default": {},
    "gpu_tools": {
        "anat.skullstrip.method": "synthstrip", "anat.skullstrip.use_gpu": True,
        "anat.register.method": "synthmorph", "anat.register.use_gpu": True,
        "anat.synthseg.method": "freesurfer", "anat.synthseg.robust": True, "anat.synthseg.use_gpu": True,
        "anat.segstats.method": "freesurfer",
        "dwi.denoise.method": "torch", "dwi.denoise.device": "cuda",
        "dwi.preproc.method": "fsl_dwifslpreproc", "dwi.preproc.use_gpu": True, "dwi.preproc.pe_dir": "j-",
        "dwi.tensor.method": "mrtrix", "freesurfer.recon_all.enabled": True,
    },
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_job_asks_for_the_registry_resources(tmp_path, scenario):
    """Dry run: each job's mem_mb/runtime/gpu are the registry's (attempt 1), for every rule."""
    cfg_path = _cfg(tmp_path, SCENARIOS[scenario])
    p = _snakemake(["-n", "--forceall", "--configfile", str(cfg_path), "-s", str(REPO / "Snakefile"),
                    "-d", str(tmp_path)], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    jobs = _job_resources(p.stdout + p.stderr)
    assert len(jobs) >= 20, jobs
    cfg = validate_config(yaml.safe_load(cfg_path.read_text()))
    for rule, got in jobs.items():
        want = resources(rule, cfg)
        assert int(got["mem_mb"]) == want["mem_mb"](None, 1), (rule, got)
        assert int(got["runtime"]) == want["runtime"](None, 1), (rule, got)
        assert got.get("gpu") == ("1" if "gpu" in want else None), (rule, got)
    if scenario == "gpu_tools":
        gpu = {r for r, g in jobs.items() if g.get("gpu") == "1"}
        assert gpu == {"anat_skullstrip_synthstrip", "anat_register_synthmorph", "anat_synthseg_freesurfer",
                       "dwi_denoise_torch", "dwi_preproc_dwifslpreproc"}
        assert jobs["dwi_preproc_dwifslpreproc"]["runtime"] == "60"   # eddy_cuda: the GPU's runtime
        assert jobs["anat_synthseg_freesurfer"]["mem_mb"] == "16000"  # --robust
        assert jobs["freesurfer_recon_all"] == {**jobs["freesurfer_recon_all"], "mem_mb": "8000", "runtime": "720"}


def test_resources_scale_with_the_attempt():
    for rule in rule_resources():
        r = resources(rule, DEMO_CFG)
        for key in ("mem_mb", "runtime"):
            first = r[key](None, 1)
            assert first > 0 and [r[key](None, a) for a in (2, 3)] == [2 * first, 3 * first], (rule, key)
    # the GPU's shorter runtime applies only with the GPU on
    off = resources("dwi_preproc_dwifslpreproc", DEMO_CFG)["runtime"](None, 1)
    preproc = {**DEMO_CFG["dwi"]["preproc"], "method": "fsl_dwifslpreproc", "use_gpu": True}
    on_cfg = {**DEMO_CFG, "dwi": {**DEMO_CFG["dwi"], "preproc": preproc}}
    assert (off, resources("dwi_preproc_dwifslpreproc", on_cfg)["runtime"](None, 1)) == (360, 60)
    with pytest.raises(BackendError, match="rule 'no_such_rule' has no resources in src/neurosmk/backends.py"):
        resources("no_such_rule", DEMO_CFG)


def test_a_rule_shared_by_backends_has_one_resource_record():
    seen = {}
    for step, methods in STEPS.items():
        for method, b in methods.items():
            for rule, spec in b.rules.items():
                assert seen.setdefault(rule, spec) == spec, (step, method, rule)
                assert rule not in backends.SUPPORT_RULES, rule


def _defined_rules() -> set[str]:
    defined = set().union(*(rules_defined(smk) for smk in (REPO / "rules").glob("*.smk")))
    # named in a loop or after the backend: rules/validate.smk f"validate_{_dt}", rules/anat.smk
    # f"anat_register_metrics_{_REG_METHOD}" (the tool registrations)
    return defined | {"validate_anat", "validate_dwi", "anat_register_metrics_fsl", "anat_register_metrics_synthmorph"}


def test_every_rule_file_rule_is_in_the_registry_and_reads_it():
    """Every rule has its resources in the registry, and every resources: block is res(<its name>)."""
    assert _defined_rules() - {"all"} == set(rule_resources()), _defined_rules() ^ set(rule_resources())
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        for m in re.finditer(r"^(\s*)resources:\n((?:\1    .*\n)+)", text, re.MULTILINE):
            named = r'"\w+"|f"validate_\{_dt\}"|f"anat_register_metrics_\{_REG_METHOD\}"'
            assert re.fullmatch(rf"\s*\*\*res\((?:{named})\),\n", m.group(2)), (smk.name, m.group(2))


def test_profiles_do_not_restate_resources_and_place_the_gpu_rules():
    for prof in ("laptop", "slurm", "slurm-gpu"):
        p = yaml.safe_load((REPO / "profiles" / prof / "config.v8+.yaml").read_text())
        for rule, res in (p.get("set-resources") or {}).items():
            restated = {"mem_mb", "runtime", "mem", "mem_mib"} & set(res)
            assert not restated, f"profiles/{prof}: {rule} restates {sorted(restated)}: the registry has them"
    gpu = yaml.safe_load((REPO / "profiles" / "slurm-gpu" / "config.v8+.yaml").read_text())["set-resources"]
    assert set(gpu) == backends.gpu_rules()
    assert all(v == {"gpu": 1, "slurm_partition": "gpu"} for v in gpu.values()), gpu


# ---- the start-up check ----------------------------------------------------------------------------

def test_check_rules_names_what_is_wrong():
    chosen = backends.selected_methods(DEMO_CFG)
    # what the default configuration's rule files define
    defined = set(backends.SUPPORT_RULES) | {r for s, m in chosen.items() for r in STEPS[s][m].rules}
    check_rules(defined, chosen)  # the default configuration resolves
    with pytest.raises(BackendError, match=r"step 'dwi.denoise' method 'dipy_mppca': registered rule\(s\) "
                                           r"dwi_denoise_dipy not defined"):
        check_rules(defined - {"dwi_denoise_dipy"}, chosen)
    # a second backend's rule of the same step defined too
    with pytest.raises(BackendError, match=r"rule\(s\) dwi_denoise_mrtrix of another method"):
        check_rules(defined | {"dwi_denoise_mrtrix"}, chosen)
    # a method other than none registered without any rule
    steps = {**STEPS, "dwi.degibbs": {**STEPS["dwi.degibbs"], "fancy": backends.Backend(methods="x")}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "STEPS", steps)
        with pytest.raises(BackendError, match=r"step 'dwi.degibbs' method 'fancy': no rule registered"):
            check_rules(defined, {**chosen, "dwi.degibbs": "fancy"})


def test_registered_method_without_rule_or_methods_text_fails_at_start(tmp_path):
    """A method added to the registry alone stops at start, naming step, method and rule, not
    with a MissingInputException later; so does a backend without its methods sentence."""
    cfg = _cfg(tmp_path, {"dwi.degibbs.method": "fancy"})
    pre = ("from neurosmk import backends as b\n"
           "b.STEPS['dwi.degibbs']['fancy'] = b.Backend(rules={'dwi_degibbs_fancy': b.Res(100, 1)}, methods='x')\n")
    p = _snakemake(["-n", "--configfile", str(cfg), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)],
                   cwd=tmp_path, pre=pre)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "step 'dwi.degibbs' method 'fancy': registered rule(s) dwi_degibbs_fancy not defined by any rule file" in out
    assert "MissingInput" not in out
    cfg = _cfg(tmp_path, {})
    pre = ("import dataclasses\nfrom neurosmk import backends as b\n"
           "b.STEPS['dwi.tensor']['dipy'] = dataclasses.replace(b.STEPS['dwi.tensor']['dipy'], methods=None)\n")
    p = _snakemake(["-n", "--configfile", str(cfg), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)],
                   cwd=tmp_path, pre=pre)
    assert p.returncode != 0
    assert "step 'dwi.tensor' method 'dipy': no methods sentence" in p.stdout + p.stderr


# ---- methods.md --------------------------------------------------------------------------------

def test_every_backend_that_runs_has_methods_text_with_known_references():
    for step, methods in STEPS.items():
        for method, b in methods.items():
            if b.rules:
                assert b.methods and b.refs, (step, method)
                assert set(b.refs) <= set(backends.REFERENCES), (step, method, b.refs)


@pytest.mark.parametrize("step,params,versions,expect", [
    ("dwi.denoise", {"method": "torch", "patch_radius": 2}, {"torch": "2.13.0"}, "PyTorch 2.13.0; patch radius 2"),
    ("dwi.tensor", {"method": "torch", "fit_method": "WLS"}, {"torch": "2.13.0"}, "fitted by WLS"),
])
def test_torch_run_writes_a_diffusion_section(step, params, versions, expect):
    """The live bug: a torch run wrote an empty Diffusion section (no methods text for torch)."""
    rec = {"Step": step, "Method": "torch", "Parameters": params, "Versions": versions,
           "Sources": ["bids:raw:sub-01/dwi/sub-01_dwi.nii.gz"]}
    text = methods_text([rec], {step: "torch"})
    section = text.split("## Diffusion data", 1)[1].split("##", 1)[0]
    assert expect in section and "Paszke" in text, text


# ---- schema, README, re-run matrix --------------------------------------------------------------

def _readme_methods() -> dict[str, list[str]]:
    """step -> methods, from README's 'Choosing backends' table (top-level comma list of `method`)."""
    out = {}
    for line in (REPO / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z]+\.[a-z]+)` \| (.*) \|$", line)
        if not m:
            continue
        items, depth, cur = [], 0, ""
        for ch in m.group(2):
            depth += ch == "("
            depth -= ch == ")"
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
            else:
                cur += ch
        items.append(cur)
        out[m.group(1)] = [re.match(r"\s*`([a-z0-9_]+)`", it).group(1) for it in items]
    return out


def test_readme_table_lists_the_registry_default_first():
    table = _readme_methods()
    schema = load_schema()
    assert set(table) == set(STEPS), set(table) ^ set(STEPS)
    for step, methods in STEPS.items():
        section, name = step.split(".")
        default = schema["properties"][section]["properties"][name]["properties"]["method"]["default"]
        assert default in methods, step
        assert sorted(table[step]) == sorted(methods), (step, table[step])
        assert table[step][0] == default, (step, table[step])


def test_schema_method_lists_are_generated_from_the_registry():
    schema = load_schema()
    for step, methods in STEPS.items():
        section, name = step.split(".")
        desc = schema["properties"][section]["properties"][name]["properties"]["method"]["description"]
        listed = desc.split("Registered methods: ", 1)[1]
        assert re.findall(r"(?:^|, )([a-z0-9_]+)(?= \(|,|\.$)", listed) == list(methods), (step, listed)


def test_rerun_matrix_covers_every_config_key_a_backend_reads():
    """Each key a backend's record says it reads is a params key of one of its rules in the
    re-run matrix (tests/test_rerun.py PARAMS), or a start-up/cosmetic key there."""
    from . import test_rerun as rr

    # the torch backends' params are not in the matrix: torch is an optional extra, absent from its
    # contexts (their params: tests/test_torch_backend.py)
    not_in_matrix = {("dwi.denoise", "torch"), ("dwi.tensor", "torch")}
    for step, methods in STEPS.items():
        for method, b in methods.items():
            if (step, method) in not_in_matrix:
                continue
            for key in b.config_keys:
                dotted = f"{step}.{key}"
                structural_only = dotted in rr.STRUCTURAL and dotted not in rr.PARAMS
                if dotted in rr.COSMETIC or dotted in rr.NOT_IN_MATRIX or structural_only:
                    continue
                rules = {spec.split(":")[0].split("@")[0] for spec in rr.PARAMS.get(dotted, ())}
                assert rules & set(b.rules), f"{dotted} ({step} {method}): rules {sorted(b.rules)} not in PARAMS"


# ---- the demonstration backend: dwi.denoise dipy_lpca (a record, a function, a README row, this) --

def test_dipy_lpca_denoises_and_estimates_the_noise(tmp_path):
    """DIPY local PCA through the registry's function: two synthetic tissues (the demo's gradient
    table) with Gaussian noise of sigma 5: the error to the truth drops to < 1/4, the noise map
    is about 5."""
    import nibabel as nib
    import numpy as np

    from neurosmk.backends import call_backend

    bval, bvec = (REPO / "demo" / "bids" / "sub-02" / "dwi" / f"sub-02_dwi.{e}" for e in ("bval", "bvec"))
    b, g = np.loadtxt(bval), np.loadtxt(bvec).T
    x = np.indices((16, 16, 12))[0]
    adc = {t: np.einsum("vi,ij,vj->v", g, d, g) for t, d in (("wm", np.diag([1.7e-3, 0.3e-3, 0.3e-3])),
                                                               ("gm", np.eye(3) * 0.8e-3))}
    truth = np.where((x < 8)[..., None], 100 * np.exp(-b * adc["wm"]), 100 * np.exp(-b * adc["gm"]))
    noisy = truth + np.random.default_rng(0).normal(0, 5, truth.shape)
    nib.save(nib.Nifti1Image(noisy.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "dwi.nii.gz")
    call_backend("dwi.denoise", "dipy_lpca", str(tmp_path / "dwi.nii.gz"), str(tmp_path / "den.nii.gz"),
                 str(tmp_path / "sigma.nii.gz"), patch_radius=2, bval=str(bval), bvec=str(bvec))
    den = nib.load(tmp_path / "den.nii.gz").get_fdata()
    sigma = nib.load(tmp_path / "sigma.nii.gz").get_fdata()

    def rmse(a):
        return float(np.sqrt(np.mean((a - truth) ** 2)))

    assert den.shape == noisy.shape and rmse(den) < rmse(noisy) / 4, (rmse(den), rmse(noisy))
    assert 4 < float(np.median(sigma)) < 6


def test_dipy_lpca_is_selected_by_config_and_described(tmp_path):
    cfg_path = _cfg(tmp_path, {"dwi.denoise.method": "dipy_lpca", "steps.anat": False})
    p = _snakemake(["-n", "--forceall", "--configfile", str(cfg_path), "-s", str(REPO / "Snakefile"),
                    "-d", str(tmp_path)], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "dwi_denoise_dipy" in _job_resources(p.stdout + p.stderr)
    rec = {"Step": "dwi.denoise", "Method": "dipy_lpca", "Parameters": {"method": "dipy_lpca", "patch_radius": 2},
           "Versions": {"dipy": "1.12.1"}}
    text = methods_text([rec], {"dwi.denoise": "dipy_lpca"})
    assert "denoised with local PCA" in text and "DIPY 1.12.1; patch radius 2" in text and "Manjon JV" in text


def test_config_keys_are_schema_keys_of_their_step():
    from neurosmk.config import schema_keys

    keys = {k for k, _ in schema_keys()}
    for step, methods in STEPS.items():
        for method, b in methods.items():
            unknown = [k for k in b.config_keys if f"{step}.{k}" not in keys]
            assert not unknown, (step, method, unknown)


def test_denoise_window_check_follows_the_keys_a_method_reads():
    """The start-up size check of the DWI (validate.settings_from_config) applies the denoise
    window of every method that reads patch_radius or extent, a new one included."""
    from neurosmk.validate import settings_from_config

    for method, b in STEPS["dwi.denoise"].items():
        got = settings_from_config(DEMO_CFG, {"dwi.denoise": method})["dwi_min_dims"]
        r = DEMO_CFG["dwi"]["denoise"]["patch_radius"]
        want = ([2 * r + 1] * 3 if "patch_radius" in b.config_keys
                else list(DEMO_CFG["dwi"]["denoise"]["extent"]) if "extent" in b.config_keys else [1, 1, 1])
        assert got == want, (method, got)
    assert settings_from_config(DEMO_CFG, {"dwi.denoise": "dipy_lpca"})["dwi_min_dims"] == [2 * r + 1] * 3
