"""No path reaches a shell unquoted (issue #15).

1. A lint of every shell string in rules/*.smk (the rule's ``shell:`` literals plus the SIDECAR
   tail of rules/provenance.smk they append): every placeholder must use Snakemake's shlex
   quoting (``{input.x:q}``), no placeholder may sit inside a shell quote (``"{output}"``:
   double quotes do not stop ``$(...)``), except the explicitly whitelisted non-path values.
2. The MRtrix3 backends run for real on a DWI slab whose bids_dir and output_dir contain
   ``$(touch PWNED)``, backticks, ``;``, spaces, quotes and unicode: nothing is executed, the
   run succeeds, and its FA equals that of a run on plain paths.
3. A dry run (``snakemake -n -p``) of the MRtrix, FSL and FreeSurfer backends with the same
   hostile folders: every printed command line, split by shlex, carries the hostile folder
   whole inside one token.

Hostile characters are tested in the folder names only: BIDS file names with entities that do
not parse (e.g. ``sub-01_acq-$(x)_dwi.nii.gz``) are refused at start by the BIDS validation.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shlex
import shutil
import string
import subprocess
import tokenize
from pathlib import Path

import numpy as np
import pytest

from .conftest import dwi_slab_bids
from .helpers import merge as _merge
from .helpers import run_snakemake, write_config

REPO = Path(__file__).resolve().parents[1]

# placeholders allowed without :q: values that are not paths and never hold user text, each
# with the reason. (rule, field); rule "*" = any rule.
BARE_OK = {
    ("*", "threads"): "an int",
    ("*", "params.prov"): "already a pair of shlex-quoted words (rules/provenance.smk prov())",
    ("dwi_denoise_mrtrix", "params.extent"): "ints joined by commas (schema: integer array)",
    ("dwi_degibbs_mrtrix", "params.axes"): "'0,1' | '0,2' | '1,2' from the schema's slice_axis enum",
    ("dwi_degibbs_mrtrix", "params.nshifts"): "an int (schema)",
    ("dwi_degibbs_mrtrix", "params.min_w"): "an int (schema)",
    ("dwi_degibbs_mrtrix", "params.max_w"): "an int (schema)",
    ("dwi_tensor_mrtrix", "params.fit"): "option words from MRTRIX_TENSOR_FIT (a fixed dict)",
    ("dwi_preproc_dwifslpreproc", "params.cuda"): "'' or 'CUDA_VISIBLE_DEVICES= ' (fixed strings)",
}


# ---- 1. lint ----------------------------------------------------------------------------------
FSTRING = "\x00f-string\x00"

def _expression(toks, i):
    """The tokens of the expression starting at toks[i]: up to the end of the logical line, or,
    when it starts on the next line (a ``shell:`` block), up to the end of that indented block."""
    block = toks[i].type == tokenize.NEWLINE
    while i < len(toks) and toks[i].type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.COMMENT):
        i += 1
    out, depth, indent = [], 0, 0
    while i < len(toks):
        t = toks[i]
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        elif t.type == tokenize.INDENT:
            indent += 1
        elif t.type == tokenize.DEDENT:
            indent -= 1
            if indent < 0:
                break
        elif t.type == tokenize.NEWLINE and depth <= 0 and not block:
            break
        out.append(t)
        i += 1
    return out


def _text(tokens, consts) -> tuple[str, bool]:
    """The string the tokens concatenate: literals, and module constants (SIDECAR, _FSL_TMP, ...)
    by name, in order. Returns (text, whether an f-string or an unknown name took part)."""
    parts, dynamic, tail = [], False, ""
    names = [t.string for t in tokens if t.type == tokenize.NAME]
    if names[:1] == ["tool_shell"]:  # rules/provenance.smk: TOOLRUN + the parts + SIDECAR (unless sidecar=False)
        parts.append(consts.get("TOOLRUN", FSTRING))
        tail = "" if "False" in names else consts.get("SIDECAR", FSTRING)
        tokens = [t for t in tokens if t.string not in ("tool_shell", "sidecar", "False")]
    for t in tokens:
        if t.type == tokenize.STRING:
            try:
                parts.append(ast.literal_eval(t.string))
            except ValueError:  # an f-string: values pasted in unquoted
                parts.append(FSTRING)
        elif t.type == tokenize.NAME:
            if t.string in consts:
                parts.append(consts[t.string])
            else:
                dynamic = True
    return "".join(parts) + tail, dynamic


def shell_templates() -> list[tuple[str, str, str]]:
    """(file, rule, shell template) for every shell: directive (and shell() call) in rules/*.smk
    and the Snakefile, with module-level string constants they concatenate (SIDECAR, _FSL_TMP)
    resolved; plus ('provenance.smk', 'SIDECAR')."""
    files = sorted((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]
    consts, raw = {}, []
    parsed = {f: list(tokenize.generate_tokens(io.StringIO(f.read_text()).readline)) for f in files}
    for f, toks in parsed.items():  # module-level NAME = <strings>
        for i, t in enumerate(toks):
            if t.type == tokenize.NAME and t.start[1] == 0 and toks[i + 1].string == "=":
                expr = _expression(toks, i + 2)
                if expr and all(x.type in (tokenize.STRING, tokenize.NL, tokenize.COMMENT)
                                or x.string in "()+" for x in expr):
                    consts[t.string] = _text(expr, {})[0]
    for f, toks in parsed.items():
        rule = None
        for i, t in enumerate(toks):
            if t.type == tokenize.NAME and t.string in ("rule", "checkpoint") and i + 2 < len(toks) \
                    and toks[i + 1].type == tokenize.NAME and toks[i + 2].string == ":":
                rule = toks[i + 1].string
            elif t.type == tokenize.NAME and t.string == "shell" and (
                    (toks[i + 1].string == ":" and toks[i - 1].type in (tokenize.INDENT, tokenize.DEDENT,
                                                                          tokenize.NEWLINE, tokenize.NL))
                    or (toks[i + 1].string == "(" and toks[i - 1].string != ".")):
                text, dynamic = _text(_expression(toks, i + 2 if toks[i + 1].string == ":" else i + 1), consts)
                raw.append((f.name, rule, text + (FSTRING if dynamic else "")))
    return raw + [("provenance.smk", "SIDECAR", consts["SIDECAR"])]


def shell_problems(rule: str, template: str) -> list[str]:
    """Placeholders of a shell template that are inside shell quotes, or bare (no :q) and not
    whitelisted in BARE_OK."""
    problems = [f"{rule}: an f-string or a non-constant in a shell command (values pasted in unquoted)"] \
        if FSTRING in template else []
    template = template.replace(FSTRING, "")
    stack: list[str] = []  # open shell quotes and $( ) substitutions at this point of the text
    for literal, field, spec, conv in string.Formatter().parse(template):
        i = 0
        while i < len(literal):
            ch, top = literal[i], (stack[-1] if stack else None)
            if top == "'":
                if ch == "'":
                    stack.pop()
            elif ch == "\\":
                i += 1  # the next character is escaped
            elif ch == "$" and literal[i + 1:i + 2] == "(":
                stack.append("(")
                i += 1
            elif top == '"':
                if ch == '"':
                    stack.pop()
            elif ch in "'\"":
                stack.append(ch)
            elif ch == ")" and top == "(":
                stack.pop()
            i += 1
        quote = stack[-1] if stack and stack[-1] in "'\"" else None  # $( ) inside "..." parses anew
        if field is None:
            continue
        ph = "{" + field + (":" + spec if spec else "") + "}"
        if quote:
            problems.append(f"{rule}: {ph} inside {quote}...{quote} (quotes do not stop $(...); use :q)")
        elif not (spec or "").endswith("q") and (rule, field) not in BARE_OK and ("*", field) not in BARE_OK:
            problems.append(f"{rule}: {ph} without :q (a path must be shlex-quoted; whitelist non-paths in BARE_OK)")
    return problems


def test_lint_finds_every_shell_rule():
    found = {(f, r) for f, r, _ in shell_templates()}
    # every `shell:` directive of the rule files was found (a parse that misses rules lints nothing)
    n_directives = sum(len(re.findall(r"^\s+shell:\s*$", p.read_text(), re.M)) for p in (REPO / "rules").glob("*.smk"))
    assert len(found) - 1 == n_directives  # -1: SIDECAR
    assert {("mrtrix.smk", "dwi_denoise_mrtrix"), ("mrtrix.smk", "dwi_tensor_mrtrix"),
            ("mrtrix.smk", "dwi_preproc_dwifslpreproc")} <= found


def test_lint_detects_bad_quoting():
    """The linter itself: each unsafe form is reported, the safe forms are not."""
    assert shell_problems("r", 'cmd "{input.dwi}" x') and shell_problems("r", "cmd '{output}' x")
    assert shell_problems("r", "cmd {input.dwi} x")
    assert shell_problems("r", 'cmd "$(dirname "{output.x}")"') and shell_problems("r", "cmd \"a {output.x:q}\"")
    assert not shell_problems("r", 'cmd "$(dirname {output.x:q})/x"')  # $( ) inside "..." is parsed anew
    assert shell_problems("r", "cmd {params.extent:q} > {log}")  # log bare
    assert not shell_problems("r", "tmp=$(mktemp -d \"${{TMPDIR:-/tmp}}/x.XXXXXX\")"
                                   " && cmd {input:q} \"$tmp/a\" > {log:q}")
    assert not shell_problems("dwi_denoise_mrtrix", "dwidenoise -extent {params.extent} -nthreads {threads}")


@pytest.mark.parametrize("fname", sorted(p.name for p in (REPO / "rules").glob("*.smk")) + ["SIDECAR"])
def test_no_unquoted_placeholder_in_shell(fname):
    """Fails for rules/fsl.smk and rules/freesurfer.smk until their quoting (branch `recipes`)
    is merged."""
    problems = []
    for f, rule, tpl in shell_templates():
        if (fname == "SIDECAR" and rule == "SIDECAR") or (f == fname and rule != "SIDECAR"):
            problems += shell_problems(rule, tpl)
    assert not problems, "\n".join(problems)


# ---- hostile folders ---------------------------------------------------------------------------
HOSTILE = "ev il $(touch PWNED) `touch PWNED` ; touch PWNED 'q' \"dq\" ünï€ode"


def _pwned(*roots: Path) -> list[str]:
    hits = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            hits += [os.path.join(dirpath, f) for f in files if f == "PWNED"]
    return hits


def _config(path: Path, bids: Path, out: Path, **dwi_methods) -> Path:
    return write_config(path, {"bids_dir": str(bids), "output_dir": str(out), "steps": {"anat": False},
                               "freesurfer_dir": None, "dwi": {s: {"method": m} for s, m in dwi_methods.items()}})


def _snakemake(args, cwd, timeout=900):
    return run_snakemake(args, cwd=cwd, timeout=timeout, check=False)


HAVE_MRTRIX = all(shutil.which(t) for t in ("dwidenoise", "mrdegibbs", "dwi2mask", "dwi2tensor", "tensor2metric"))
if not HAVE_MRTRIX and os.environ.get("NEUROSMK_REQUIRE_MRTRIX") == "1":
    raise RuntimeError("NEUROSMK_REQUIRE_MRTRIX=1 but the MRtrix3 commands are not on PATH")

MRTRIX = dict(denoise="mrtrix", degibbs="mrtrix", mask="mrtrix", tensor="mrtrix")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MRTRIX, reason="MRtrix3 (dwidenoise) not on PATH")
def test_mrtrix_runs_with_hostile_folders(tmp_path):
    """The four MRtrix3 steps and their sidecars, for real, with hostile bids_dir and
    output_dir (and working directory); FA/MD/mask equal those of a run on plain folders."""
    import nibabel as nib

    results = {}
    for name, folder in (("plain", "plain"), ("hostile", HOSTILE)):
        root = tmp_path / folder
        root.mkdir()
        bids = dwi_slab_bids(root, z0=14, nz=6)
        out = root / ("out" if name == "plain" else f"out {HOSTILE}")
        cfg = _config(root / "config.yaml", bids, out, **MRTRIX)
        res = _snakemake(["--cores", "2", "--configfile", str(cfg)], cwd=root)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
        assert not _pwned(tmp_path, REPO, Path.cwd()), "a hostile path was executed by a shell"
        d = out / "sub-02" / "dwi"
        results[name] = {k: nib.load(str(d / f"sub-02_model-DTI_param-{k}_dwimap.nii.gz")).get_fdata()
                         for k in ("FA", "MD")}
        results[name]["mask"] = nib.load(str(d / "sub-02_desc-brain_mask.nii.gz")).get_fdata()
        # the sidecar names the hostile raw file as a BIDS URI, intact
        import json

        side = json.loads((d / "sub-02_desc-denoised_dwi.json").read_text())
        assert side["Sources"] == ["bids:raw:sub-02/dwi/sub-02_dwi.nii.gz"]
        # the command line as run, split as the shell did, names the output whole
        assert str(d / "sub-02_desc-denoised_dwi.nii.gz") in shell_words(side["CommandLine"])
    p, h = results["plain"], results["hostile"]
    assert p["mask"].sum() > 1000 and np.array_equal(p["mask"], h["mask"])
    m = p["mask"] > 0
    assert 0.05 < p["FA"][m].mean() < 0.6
    np.testing.assert_allclose(h["FA"], p["FA"], atol=1e-6)
    np.testing.assert_allclose(h["MD"], p["MD"], rtol=1e-6, atol=1e-12)


def shell_words(cmd: str) -> list[str]:
    """The words the shell sees: shlex.split with ; && > | as separate tokens."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def _commands(dry_run_stdout: str) -> list[str]:
    """The command lines `snakemake -n -p` prints (the indented block after each job's
    resources, up to the next blank line)."""
    cmds, cur = [], None
    for line in dry_run_stdout.splitlines():
        if cur is not None:
            if line.strip():
                cur.append(line.strip())
                continue
            cmds.append(" ".join(cur))
            cur = None
        elif re.match(r"^\s+resources: ", line):
            cur = []
    if cur:
        cmds.append(" ".join(cur))
    return [c for c in cmds if c]


DRY_CASES = {
    "mrtrix": ({"steps": {"anat": False}}, MRTRIX),
    "mrtrix_preproc": ({"steps": {"anat": False}}, {**MRTRIX, "preproc": "fsl_dwifslpreproc"}),
    "fsl": ({"anat": {"skullstrip": {"method": "fsl_bet"}, "segment": {"method": "fsl_fast"},
                      "register": {"method": "fsl"}, "subcortical": {"method": "fsl_first"}},
             "template": {"name": "MNI152NLin6Asym", "t1w": None},  # FSL's own MNI152 (rules/fsl.smk)
             "steps": {"dwi": False}}, {}),
    "freesurfer": ({"anat": {"biascorrect": {"method": "freesurfer"}, "skullstrip": {"method": "freesurfer"},
                             "synthseg": {"method": "freesurfer"}, "segstats": {"method": "freesurfer"}},
                    "freesurfer": {"recon_all": {"enabled": True}}, "steps": {"dwi": False}}, {}),
}


@pytest.mark.parametrize("case", list(DRY_CASES))
def test_dry_run_commands_keep_hostile_paths_whole(tmp_path, case):
    """Every printed command, split as the shell would (shlex), holds each hostile folder whole
    inside one word; no word holds a piece of it. The fsl/freesurfer cases need the quoting of
    the `recipes` branch."""
    over, dwi_methods = DRY_CASES[case]
    root = tmp_path / HOSTILE
    root.mkdir()
    bids = root / "bids"
    shutil.copytree(REPO / "demo" / "bids", bids)
    if (bids / "sub-02" / "dwi" / "sub-02_dwi.json").exists() is False and "preproc" in dwi_methods:
        over = _merge(over, {"dwi": {"preproc": {"pe_dir": "AP"}}})
    out = root / "out"
    cfgp = write_config(tmp_path / "config.yaml", _merge(over, {
        "dwi": {s: {"method": m} for s, m in dwi_methods.items()},
        "bids_dir": str(bids), "output_dir": str(out), "freesurfer_dir": None}))
    res = _snakemake(["-n", "-p", "--cores", "2", "--configfile", str(cfgp)], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cmds = _commands(res.stdout)
    assert cmds, res.stdout[-3000:]
    n_checked = 0
    for cmd in cmds:
        if HOSTILE not in cmd and "PWNED" not in cmd:
            continue  # a command without paths (or a Python job)
        words = shell_words(cmd)
        for w in words:
            if "PWNED" in w or "ev il" in w:
                assert HOSTILE in w, f"hostile folder split by the shell in word {w!r} of:\n{cmd}"
        n_checked += 1
    assert n_checked, "no shell command carried the hostile path"
    assert not out.exists(), "a dry run wrote into output_dir"


def test_sidecar_sh_takes_hostile_paths_as_data(tmp_path):
    """scripts/sidecar.sh gets paths as argv and never evaluates them: hostile output, BIDS and
    input paths end up verbatim (JSON-escaped) in the sidecar and nothing runs."""
    import json

    from neurosmk import provenance as P

    root = tmp_path / HOSTILE
    out, bids = root / f"out {HOSTILE}", root / "bids"
    (out / "sub-01").mkdir(parents=True)
    (bids / "sub-01").mkdir(parents=True)
    raw = bids / "sub-01" / "sub-01_T1w.nii.gz"
    raw.write_bytes(b"raw")
    other = root / "$(touch PWNED).nii.gz"
    other.write_bytes(b"x")
    img = out / "sub-01" / "sub-01_desc-x_T1w.nii.gz"
    img.write_bytes(b"img")
    sc = out / "sub-01" / "sub-01_desc-x_T1w.json"
    static = json.dumps(P.static_record(step="anat.x", method="m", rule="r", parameters={},
                                        conda_env=None, container=None))
    res = subprocess.run(["sh", str(REPO / "scripts" / "sidecar.sh"), static, "echo tool 1", str(out), str(bids),
                          str(img), str(sc), "--", str(raw), str(other)], cwd=root, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not _pwned(tmp_path)
    rec = json.loads(sc.read_text())
    assert rec["Sources"] == ["bids:raw:sub-01/sub-01_T1w.nii.gz", f"file://{other}"]
    assert rec["Describes"] == [img.name] and rec["ToolVersion"] == "tool 1"
