"""Provenance: the dataset description, one JSON sidecar per output, and the methods paragraph.

Sidecars (BIDS-Derivatives style): every NIfTI/TSV/transform/parquet output ``X.nii.gz`` gets
``X.json`` beside it (outputs sharing a stem, e.g. ``X.nii.gz`` + ``X.bval`` + ``X.bvec``, share
one sidecar).  Outputs that are JSON already (registration metrics, dataset_description.json),
figures (their data come from a sidecar'd output of the same job) and directories get none, and
recon-all's own outputs get none (FreeSurfer logs its provenance in ``scripts/recon-all.log``;
adding outputs to that rule would make a finished recon-all look incomplete).

A sidecar records: ``Step``, ``Method``, ``Rule``, the tool and its version (``ToolVersion`` for
command-line tools, ``Versions`` of the Python packages the job loaded), ``CommandLine`` (shell
rules) or ``Script`` + ``Functions`` (Python rules), ``Parameters`` (the rule's params),
``SoftwareEnvironment`` (conda env file, container image, and which one was active), ``Device``,
``Sources`` (BIDS URIs: ``bids::`` this dataset, ``bids:raw:`` the input BIDS dataset) and
``SourceChecksums`` (sha256 of each input file).  No timestamps and no host names: the same
inputs in the same environment give the same sidecar.

The static part (step, method, parameters, environment) is built at DAG time by
``rules/provenance.smk`` as the rule's ``prov`` param; Python rules complete it in
:func:`neurosmk.runtime.setup` (written when the script exits without error), shell rules with
``scripts/sidecar.sh`` right after their tool succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

from . import __version__
from . import backends as _backends
from .io import split_ext, write_json, write_text
from .paths import STATE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# outputs that get no sidecar; the sidecar of any other X.ext is <stem>.json (stem: io.split_ext)
_NO_SIDECAR = (".json", ".png", ".svg", ".html", ".md")

# how a shell rule's tool reports its version (first line kept), by the rule's software
# environment: declared with its tool family in neurosmk.backends.FAMILIES
VERSION_COMMANDS = _backends.version_commands()

# Python distributions whose versions a Python job records when it has loaded them
PY_PACKAGES = {"ants": "antspyx", "dipy": "dipy", "nibabel": "nibabel", "numpy": "numpy", "scipy": "scipy",
               "pandas": "pandas", "pyarrow": "pyarrow", "matplotlib": "matplotlib",
               "brainextractor": "brainextractor", "nilearn": "nilearn", "sklearn": "scikit-learn",
               "torch": "torch"}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# Every desc- label an output of neurosmk can carry (descriptions.tsv of the derivative dataset)
DESCRIPTIONS = {
    "preproc": "Preprocessed: the T1w after N4 bias-field correction (full head); the DWI after "
               "eddy-current and motion correction (dwifslpreproc)",
    "brain": "Brain only: a brain mask, or the image multiplied by it (skull-stripped)",
    "affine": "Affine part of the registration to the template",
    "warp": "Non-linear displacement field of the registration (composite of affine and warp)",
    "registration": "Registration quality metrics (similarity before and after)",
    "tissue": "Tissue-class volumes of the T1w segmentation",
    "denoised": "DWI after MP-PCA denoising",
    "mppca": "Noise level (sigma) estimated by MP-PCA denoising",
    "degibbs": "DWI after Gibbs-ringing removal",
    "roi": "Statistics of DTI metrics in regions of interest (brain mask, white matter)",
    "fsbrainmask": "FreeSurfer brainmask.mgz resampled to the input T1w grid",
    "synthseg": "FreeSurfer SynthSeg segmentation and its volumes",
    "aseg": "FreeSurfer recon-all aseg segmentation statistics",
    "brainmask": "QC figure: brain mask outline over the T1w",
    "dseg": "QC figure: tissue segmentation over the T1w",
    "reg": "QC figure: template edges over the registered T1w",
    "dti": "QC figure: fractional anisotropy map",
    "first": "QC figures of FSL FIRST subcortical segmentation",
    "b0mask": "QC figure: DWI brain mask outline over the mean b=0 image",
    "colorfa": "QC figure: colour FA (direction-encoded FA)",
    "qc": "QC numbers of the visit (volumes, similarity, SNR/CNR, mean FA) for its QC page",
    "braindil": "Dilated brain mask of the template (fnirt --refmask)",
}

# .bidsignore of the derivative dataset: (pattern, why BIDS-Derivatives cannot express it yet)
BIDSIGNORE = [
    ("/group", "group-level tables (long, wide, FreeSurfer, QC plots): BIDS-Derivatives has no "
                "layout for group tables yet (phenotype/ requires one row per participant)"),
    ("*_xfm.*", "transforms (ANTs/FSL affine .mat, displacement fields): the transforms "
                "specification (BEP014) is not part of BIDS yet"),
    ("*_dwimap.*", "DTI parameter maps (model-DTI_param-FA ...): the diffusion-derivatives "
                   "specification (BEP016) is not part of BIDS yet"),
    ("*_noise.*", "MP-PCA noise-level map: no BIDS suffix for noise maps yet (BEP016)"),
    ("*_volumes.*", "per-visit volume tables (tissue volumes; SynthSeg CSV): no BIDS suffix for "
                    "derived measures yet"),
    ("*_stats.*", "per-visit DTI ROI statistics tables: as above"),
    ("*_segstats.*", "mri_segstats tables (FreeSurfer's own text format)"),
    ("*_metrics.json", "registration quality metrics: no BIDS suffix"),
    ("/sub-*/figures", "QC figures: BIDS has no figure datatype (fMRIPrep ignores its figures "
                        "the same way)"),
    ("*_desc-preproc_dwi.bval", "the eddy-rotated gradients of the dwifslpreproc series: BIDS "
                                "allows .bval/.bvec only without desc- (the inherited "
                                "sub-X_dwi.bval/.bvec hold the raw table, right for the denoised "
                                "and degibbs series)"),
    ("*_desc-preproc_dwi.bvec", "as above"),
    ("/sub-*.html", "per-visit QC pages (fMRIPrep's layout, beside the subject folders; they link "
                    "the figures in sub-X/figures): HTML is no BIDS file type"),
    ("/freesurfer", "recon-all SUBJECTS_DIR (FreeSurfer's own layout), when recon-all runs"),
]


def bidsignore_text() -> str:
    return "".join(f"{pat}\n" for pat, _ in BIDSIGNORE)


def derivative_readme(desc: dict) -> str:
    """README.md of the derivative dataset: what it holds and how to read the tables."""
    lines = [
        f"# {desc['Name']}", "",
        "BIDS-Derivatives written by neurosmk "
        f"{desc['GeneratedBy'][0].get('Version', '')} from the raw BIDS dataset "
        f"{desc['SourceDatasets'][0]['URL']}.", "",
        "- `sub-<label>/[ses-<label>/]anat|dwi/`: per-visit images, masks, segmentations, "
        "transforms and tables, each with a JSON sidecar (provenance; for tables also the data "
        "dictionary of every column).",
        "- `group/`: group tables keyed on `participant_id` and `session_id`; "
        "`group/neurosmk_long.tsv` holds every number of every table.",
        "- `descriptions.tsv`: the meaning of every `desc-` label.",
        "- `docs/methods.md`: a methods paragraph (tools, versions, parameters, references).",
        "- `logs/`: one log (`.log`) and one benchmark table (`.benchmark.tsv`) per job.", "",
        "Tables are tab-separated, missing values are `n/a`:", "",
        "```python",
        "import pandas as pd",
        "df = pd.read_csv('group/neurosmk_long.tsv', sep='\\t', na_values='n/a', "
        "keep_default_na=False)",
        "```", "",
        "```r",
        "df <- read.delim('group/neurosmk_long.tsv', na.strings = 'n/a')",
        "```", "",
        "## .bidsignore", "",
        "What BIDS-Derivatives cannot express yet is listed in `.bidsignore`:", "",
    ]
    lines += [f"- `{pat}`: {why}" for pat, why in BIDSIGNORE]
    return "\n".join(lines) + "\n"


def write_dataset_description(path: str, bids_dir: str, *, readme: str | None = None,
                              descriptions: str | None = None, bidsignore: str | None = None,
                              desc_labels=(), authors=(), container: str | None = None) -> dict:
    """dataset_description.json of the derivative dataset (and, when their paths are given, its
    README.md, descriptions.tsv for ``desc_labels`` and .bidsignore)."""
    gen = {"Name": "neurosmk", "Version": __version__, "CodeURL": "https://github.com/neurosmk/neurosmk"}
    commit = git_commit()
    if commit:
        gen["Description"] = f"git commit {commit}"
    if container:
        kind, _, tag = container.partition("://")
        gen["Container"] = {"Type": kind, "Tag": tag, "URI": container}
    raw = "file://" + os.path.abspath(bids_dir)
    raw_authors = []
    try:
        with open(os.path.join(bids_dir, "dataset_description.json")) as fh:
            raw_authors = list(json.load(fh).get("Authors") or [])
    except (OSError, ValueError):
        pass
    desc = {
        "Name": "neurosmk derivatives",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [gen],
        "SourceDatasets": [{"URL": raw}],
        # resolves the "bids:raw:" URIs in the sidecars' Sources
        "DatasetLinks": {"raw": raw},
    }
    if list(authors) or raw_authors:  # the configured authors, else the raw dataset's
        desc["Authors"] = list(authors) or raw_authors
    write_json(path, desc)
    if readme:
        write_text(readme, derivative_readme(desc))
    if descriptions:
        unknown = sorted(set(desc_labels) - set(DESCRIPTIONS))
        if unknown:
            raise ValueError(f"{descriptions}: desc- labels without a description in "
                             f"neurosmk.provenance.DESCRIPTIONS: {unknown}")
        rows = "".join(f"desc-{d}\t{DESCRIPTIONS[d]}\n" for d in sorted(set(desc_labels)))
        write_text(descriptions, "desc_id\tdescription\n" + rows)
    if bidsignore:
        write_text(bidsignore, bidsignore_text())
    return desc


# ---- sidecars ---------------------------------------------------------------------------------
def stem(path: str) -> str:
    return split_ext(path)[0]


def sidecar_path(path: str) -> str | None:
    """``X.nii.gz`` -> ``X.json``; None for outputs that get no sidecar (JSON, figures, folders)."""
    path = str(path)
    if path.endswith(_NO_SIDECAR) or path.endswith("/") or not os.path.splitext(path)[1]:
        return None
    return stem(path) + ".json"


def sidecars_of(outputs) -> list[str]:
    """The sidecar paths of a job's outputs, in order, without duplicates."""
    out = []
    for o in outputs:
        s = sidecar_path(str(o))
        if s and s not in out:
            out.append(s)
    return out


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _abs(path: str) -> str:
    return os.path.normpath(os.path.abspath(str(path)))


def source_uri(path: str, out_dir: str, bids_dir: str) -> str:
    """BIDS URI of an input: ``bids::rel`` inside the derivatives, ``bids:raw:rel`` inside the raw
    dataset, else ``file://`` + absolute path (e.g. a template)."""
    a = _abs(path)
    roots = sorted(((_abs(out_dir), ""), (_abs(bids_dir), "raw")), key=lambda r: -len(r[0]))
    for root, name in roots:
        if a.startswith(root + os.sep):
            return f"bids:{name}:{os.path.relpath(a, root)}"
    return "file://" + a


def sources(inputs, out_dir: str, bids_dir: str) -> tuple[list[str], dict[str, str | None]]:
    """(Sources, SourceChecksums) of a job's inputs; a folder input is listed with checksum null."""
    uris, sums = [], {}
    internal = os.path.join(os.path.abspath(out_dir), STATE_DIR) + os.sep
    for p in dict.fromkeys(str(i) for i in inputs):
        if os.path.abspath(p).startswith(internal):  # neurosmk's own records (input-check report): not data
            continue
        uri = source_uri(p, out_dir, bids_dir)
        uris.append(uri)
        sums[uri] = None if os.path.isdir(p) else "sha256:" + sha256_file(p)
    return uris, sums


def python_versions(modules=None) -> dict[str, str]:
    """Versions of the known distributions whose modules this process has imported."""
    from importlib import metadata

    modules = sys.modules if modules is None else modules
    out = {"python": sys.version.split()[0], "neurosmk": __version__}
    for mod, dist in PY_PACKAGES.items():
        if mod in modules:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    return out


def active_environment(environ=None) -> str:
    env = os.environ if environ is None else environ
    if env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER"):
        return "apptainer"
    if ".snakemake" in env.get("CONDA_PREFIX", ""):
        return "conda"
    return "host"


def script_functions(script: str) -> list[str]:
    """``neurosmk.<module>.<name>`` for each name a rule script imports from neurosmk modules."""
    try:
        text = open(script).read()
    except OSError:
        return []
    out = []
    for mod, names in re.findall(r"^from (neurosmk\.[\w.]+) import ([\w, ()]+)", text, re.M):
        if mod == "neurosmk.runtime":
            continue
        out += [f"{mod}.{n.strip()}" for n in names.strip("()").split(",") if n.strip()]
    for mod, names in re.findall(r"^from (neurosmk) import ([\w, ]+)", text, re.M):
        out += [f"neurosmk.{n.strip()}" for n in names.split(",") if n.strip()]
    return out


# NIfTI suffixes BIDS exempts from SkullStripped (and transforms, which are no images of the head)
_NO_SKULLSTRIPPED = ("dseg", "probseg", "mask", "xfm")


def skull_stripped(path: str) -> bool | None:
    """BIDS ``SkullStripped`` of a derivative NIfTI from its name: True for brain-only images
    (``desc-brain``, FreeSurfer's ``desc-fsbrainmask`` brain, DTI maps fitted in the brain
    mask), False for full-head images (``desc-preproc`` T1w, every ``_dwi``, noise maps); None
    for files it does not apply to (not NIfTI, dseg/probseg/mask, transforms, and anything under
    ``sourcedata/``, e.g. a template's head and brain copied for FSL, which BIDS does not
    validate as derivatives)."""
    name = os.path.basename(str(path))
    if not name.endswith((".nii", ".nii.gz")) or "/sourcedata/" in str(path).replace(os.sep, "/"):
        return None
    suffix = name.split(".")[0].rsplit("_", 1)[-1]
    if suffix in _NO_SKULLSTRIPPED:
        return None
    return "_desc-brain_" in name or "_desc-fsbrainmask_" in name or suffix == "dwimap"


def skull_stripped_of(outputs) -> bool | None:
    """The one SkullStripped value of a job's image outputs (they share a provenance record);
    ValueError if they disagree."""
    vals = {v for v in (skull_stripped(o) for o in outputs) if v is not None}
    if len(vals) > 1:
        raise ValueError(f"outputs {[str(o) for o in outputs]}: some skull-stripped, some not; "
                         "their sidecars share one record")
    return vals.pop() if vals else None


class ProvJSON(str):
    """A Python rule's ``prov`` param (the sidecar's DAG-time JSON). Its value, repr and pickle are
    the JSON; format() (how Snakemake's report shows params) gives one readable line instead of
    escaped JSON."""

    def __format__(self, spec):
        try:
            rec = json.loads(self)
        except ValueError:
            return str.__format__(self, spec)
        params = ", ".join(f"{k}={v}" for k, v in (rec.get("Parameters") or {}).items())
        text = (f"{rec.get('Step')} by {rec.get('Method')}" + (f" ({params})" if params else "")
                + "; versions, command and input checksums: the JSON sidecar beside each output")
        return format(text, spec)


def static_record(*, step: str, method: str, rule: str, parameters: dict, conda_env: str | None,
                  container: str | None, device: str = "cpu", command_template: str | None = None,
                  script: str | None = None, skull_stripped: bool | None = None) -> dict:
    """The DAG-time part of a sidecar. It is a param, i.e. a rerun trigger: no paths, no thread
    counts and no neurosmk version (added when the sidecar is written).  ``skull_stripped``:
    the BIDS ``SkullStripped`` of the job's images (required for derivative images)."""
    rec = {"Step": step, "Method": method, "Rule": rule, "Parameters": parameters, "Device": device,
           "SoftwareEnvironment": {"CondaEnv": conda_env, "Container": container}}
    if skull_stripped is not None:
        rec["SkullStripped"] = skull_stripped
    if command_template is not None:
        rec["CommandTemplate"] = command_template
    if script is not None:
        rec["Script"] = os.path.relpath(script, REPO) if os.path.isabs(script) else script
        rec["Functions"] = script_functions(script if os.path.isabs(script) else os.path.join(REPO, script))
    rec["SoftwareEnvironment"] = rec.pop("SoftwareEnvironment")  # last: scripts/sidecar.sh extends it
    return rec


def version_command(version_env: str, tools, image: str | None = None) -> str:
    """Shell code printing the version of the first of ``tools`` in ``version_env`` (``image``:
    the rule's container, for tools whose only version is their image)."""
    return VERSION_COMMANDS[version_env].format(tool=(list(tools) or ["true"])[0], image=image or "none")


def write_python_sidecars(smk, notes: dict) -> list[str]:
    """Write the sidecars of a finished Python (``script:``) job: see the module docstring."""
    prov = dict(smk.params.items()).get("prov")
    outputs = [str(o) for o in smk.output]
    targets = [o for o in outputs if o.endswith(".json") and any(
        x != o and sidecar_path(x) == o for x in outputs)]
    if not targets:
        return []
    rec = json.loads(prov) if prov else {"Rule": getattr(smk, "rule", None)}
    # out_* params only route outputs (paths), as in rules/provenance.smk prov()
    rec["Parameters"] = {k: v for k, v in smk.params.items() if k != "prov" and not k.startswith("out_")}
    cfg = getattr(smk, "config", {}) or {}
    uris, sums = sources(list(smk.input), cfg.get("output_dir", "."), cfg.get("bids_dir", "."))
    rec["Sources"], rec["SourceChecksums"] = uris, sums
    versions = python_versions()
    if any("/nilearn/" in str(i) for i in smk.input):  # the bundled template, read without importing nilearn
        try:
            from importlib import metadata

            versions["nilearn"] = metadata.version("nilearn")
        except Exception:  # noqa: BLE001
            pass
    rec["Versions"] = versions
    rec.setdefault("SoftwareEnvironment", {})["Active"] = active_environment()
    rec.setdefault("Device", "cpu")
    rec["GeneratedBy"] = {"Name": "neurosmk", "Version": __version__}
    rec.update(notes)
    for target in targets:
        tables = [o for o in outputs if o != target and sidecar_path(o) == target]
        write_json(target, {**table_dictionary(tables), **rec,
                            "Describes": [os.path.basename(o) for o in tables]})
    return targets


def table_dictionary(outputs) -> dict:
    """The BIDS data dictionary (column -> Description/Units/Levels) of the first TSV or Parquet
    among ``outputs`` (a sidecar describes one table, maybe in both formats); {} if none."""
    from .tables import data_dictionary, table_columns

    for o in outputs:
        if str(o).endswith((".tsv", ".parquet")):
            return data_dictionary(table_columns(o))
    return {}


# ---- methods paragraph ------------------------------------------------------------------------
# the references and each backend's sentence live in its record (neurosmk.backends.STEPS)
REFS = _backends.REFERENCES
# (step, method) -> (sentence template, citation keys, version source)
# the template is formatted with P (the parameters), V (the tool's version text) and N (participants);
# version source: a Python distribution name, or "tool" for the shell tool's version line
METHODS = _backends.backend_methods_table()
STEP_ORDER = ["anat.biascorrect", "anat.skullstrip", "anat.segment", "anat.subcortical", "anat.register",
              "anat.atlas", "anat.synthseg", "anat.segstats", "dwi.denoise", "dwi.degibbs", "dwi.preproc", "dwi.mask",
              "dwi.tensor"]
SKIPPED = {"dwi.denoise": "No denoising was applied", "dwi.degibbs": "Gibbs ringing was not corrected",
           "dwi.preproc": "No eddy-current or motion correction was applied",
           "anat.register": "No spatial normalisation to a template was applied"}


def _version_text(records: list[dict], source: str) -> str:
    vals = []
    for r in records:
        v = r.get("ToolVersion") if source == "tool" else r.get("Versions", {}).get(source)
        if v:
            v = re.sub(r"^==\s*\S+\s+(.*?)\s*==$", r"version \1", str(v).strip())
            if v not in vals:
                vals.append(v)
    return " / ".join(vals) if vals else "version unknown"


def methods_text(records: list[dict], methods: dict, commit: str | None = None) -> str:
    """A methods section (Markdown) from the sidecars of the steps that ran and the chosen methods.

    ``records`` are sidecar dicts; ``methods`` maps step -> configured method (for steps that ran
    nothing, method "none").  Each sentence names the tool, its recorded version and parameters.
    """
    by_step: dict[str, list[dict]] = {}
    for r in records:
        by_step.setdefault(r.get("Step"), []).append(r)
    cites: list[str] = []

    def cite(keys):
        nums = []
        for k in keys:
            if k not in cites:
                cites.append(k)
            nums.append(cites.index(k) + 1)
        return "[" + ", ".join(str(n) for n in nums) + "]"

    paras = {"anat": [], "dwi": []}
    for step in STEP_ORDER:
        recs = by_step.get(step, [])
        method = methods.get(step)
        if not recs:
            kind = step.split(".")[0]
            if method == "none" and step in SKIPPED and by_step.keys() & {s for s in STEP_ORDER if s.startswith(kind)}:
                paras[kind].append(SKIPPED[step] + ".")
            continue
        recs = [r for r in recs if r.get("Method") == method] or recs
        m = recs[0].get("Method")
        if (step, m) not in METHODS:
            continue
        tpl, keys, src = METHODS[(step, m)]
        subjects = {s.split(":", 2)[-1].split("/")[0] for r in recs for s in r.get("Sources", [])
                    if s.split(":", 2)[-1].startswith("sub-")}
        params = recs[0].get("Parameters", {})
        try:
            sentence = tpl.format(P=_Fmt(params), V=_version_text(recs, src))
        except (KeyError, IndexError):
            sentence = tpl.split(" (")[0]
        sentence = sentence[0].upper() + sentence[1:]
        if step == "anat.register" and any("/nilearn/" in u for r in recs for u in r.get("Sources", [])):
            nl = _version_text(recs, "nilearn")
            sentence += f"; the template image is the one distributed with nilearn {nl} {cite(['nilearn'])}"
        paras[step.split(".")[0]].append(f"{sentence} {cite(keys)}" + (f" ({len(subjects)} participant"
                                                                          f"{'s' if len(subjects) != 1 else ''})"
                                                                          if subjects else "") + ".")
    qc = by_step.get("dwi.qc", [])
    if qc:
        thr = qc[0].get("Parameters", {}).get("wm_fa_threshold")
        paras["dwi"].append(f"Mean DTI metrics were computed in the brain mask and in white matter "
                            f"(FA > {thr}).")
    fs = sorted({str(r.get("Parameters", {}).get("subject")) for r in by_step.get("freesurfer.stats", [])})
    lines = ["# Methods", "",
             f"*Generated by neurosmk {__version__}" + (f" (git commit {commit})" if commit else "")
             + " from the provenance sidecars of the outputs of this run.*", ""]
    if paras["anat"]:
        lines += ["## Anatomical data", "", " ".join(paras["anat"]), ""]
    if paras["dwi"]:
        lines += ["## Diffusion data", "", " ".join(paras["dwi"]), ""]
    if fs:
        lines += ["## FreeSurfer statistics", "",
                  f"FreeSurfer stats files of {len(fs)} subject folder{'s' if len(fs) != 1 else ''} were parsed "
                  f"into tidy tables by neurosmk {cite(['freesurfer'])}.", ""]
    if cites:
        lines += ["## References", ""] + [f"{i}. {REFS[k]}" for i, k in enumerate(cites, 1)] + [""]
    return "\n".join(lines)


class _Fmt(dict):
    """Parameters for str.format: lists as comma-separated values."""

    def __getitem__(self, key):
        v = dict.__getitem__(self, key)
        if isinstance(v, (list, tuple)):
            return ",".join(str(x) for x in v)
        return v


def write_methods(path: str, sidecar_files, methods: dict) -> str:
    records = []
    for f in sidecar_files:
        with open(f) as fh:
            records.append(json.load(fh))
    text = methods_text(records, methods, commit=git_commit())
    write_text(path, text)
    return text
