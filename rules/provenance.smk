# Provenance: the per-output JSON sidecars (neurosmk.provenance) and the methods paragraph.
#
# Each rule declares its sidecars as outputs, `**sidecars(OUT_A, OUT_B)` (one <stem>.json per
# output stem), and gets the DAG-time part of their content as `params: prov=prov("<step>")`:
# step, method, parameters, conda env, container (no paths, thread counts or versions, so it
# re-runs nothing that would not re-run anyway). Python rules write the sidecars when their
# script exits without error (neurosmk.runtime.setup); shell rules end their command with
# SIDECAR, which runs scripts/sidecar.sh in the tool's own environment after the tool succeeded.
#
# Tool calls go through the one wrapper scripts/toolrun.sh, sourced by the job's shell in the
# tool's environment: tool_shell(TOOL_COMMAND) writes into a private "$tmp" under $TMPDIR (removed
# on success, failure and SIGTERM; a SIGKILL leftover by the next run of the job), toolrun_end
# renames the outputs into place only once the tool wrote them all, and SIDECAR follows.

import json as _json
import shlex as _shlex

from snakemake.io import apply_wildcards as _apply_wildcards

from neurosmk import provenance as _provenance

# The shell rules reach their helper scripts, the neurosmk version and the dataset folders through
# environment variables set here at parse time (every process that runs a job parses the workflow
# first, and containers inherit the environment), so that a shell command names nothing from
# outside its rule (snakemake --lint) and a moved checkout re-runs nothing. Expanded in double
# quotes, a value is one word and never evaluated.
os.environ.update(
    NEUROSMK_SIDECAR_SH=os.path.join(NEUROSMK_ROOT, "scripts", "sidecar.sh"),
    NEUROSMK_TOOLRUN_SH=os.path.join(NEUROSMK_ROOT, "scripts", "toolrun.sh"),
    NEUROSMK_VERSION=NEUROSMK_VERSION,
    NEUROSMK_OUT=OUT,
    NEUROSMK_BIDS_DIR=config["bids_dir"],
)
# every path shlex-quoted (:q); {params.prov} is already a pair of shlex-quoted words (prov below)
SIDECAR = (
    ' && NEUROSMK_PROV=sidecar sh "$NEUROSMK_SIDECAR_SH" {params.prov}'
    ' "$NEUROSMK_OUT" "$NEUROSMK_BIDS_DIR" {output:q} -- {input:q}'
)
# the job's private folder is named after its rule, which toolrun_begin reads from the log's path
TOOLRUN = '. "$NEUROSMK_TOOLRUN_SH" && toolrun_begin {log:q} {output:q} && '


def tool_shell(*parts, sidecar=True):
    """A tool rule's shell command: the wrapper's set-up (TOOLRUN), the parts (the tool's call into
    "$tmp", then toolrun_end), then the sidecar writer (SIDECAR) unless ``sidecar`` is false."""
    return "".join((TOOLRUN, *parts, SIDECAR if sidecar else ""))


SIDECAR_TEMPLATES = []  # every declared sidecar path pattern, for the methods rule


def sidecars(*outputs):
    """Named outputs ``sidecar``, ``sidecar2``, ... for the given outputs' sidecars."""
    named = {}
    for i, path in enumerate(_provenance.sidecars_of(outputs)):
        named["sidecar" + (str(i + 1) if i else "")] = path
        if path not in SIDECAR_TEMPLATES:
            SIDECAR_TEMPLATES.append(path)
    return named


_PROV_RULES = {}


def _prov_rule(fn):
    if fn not in _PROV_RULES:
        found = [r for r in workflow.rules if any(v is fn for v in r.params)]
        if len(found) != 1:
            raise ValueError(f"provenance: prov() must be the param of exactly one rule, found {len(found)}")
        _PROV_RULES[fn] = found[0]
    return _PROV_RULES[fn]


_PARAM_ARGS = {}  # param function -> the names of its arguments after wildcards (inspect is slow)
_PROV_CACHE = {}  # (rule, evaluated params) -> the record: the same for every job with those params


def _param_value(value, wildcards, input, output):
    if callable(value):
        names = _PARAM_ARGS.get(value)
        if names is None:
            import inspect

            names = _PARAM_ARGS[value] = list(inspect.signature(value).parameters)[1:]
        aux = {"input": input, "output": output}
        return value(wildcards, **{k: aux[k] for k in names if k in aux})
    if isinstance(value, str):
        return _apply_wildcards(value, wildcards)
    return value


def prov(step, versions=None):
    """A ``step`` rule's ``prov`` param: its sidecars' DAG-time record (a JSON string for
    script rules; for shell rules the shell-quoted JSON and version command for SIDECAR)."""

    def _prov(wildcards, input, output):
        r_ = _prov_rule(_prov)
        # out_* params only route outputs (paths): not parameters of the method
        params = {
            k: _param_value(v, wildcards, input, output)
            for k, v in r_.params.items()
            if k != "prov" and not k.startswith("out_")
        }
        # the rest of the record depends on the rule, these params and whether the outputs are
        # skull-stripped only: one per rule at scale
        ss = _provenance.skull_stripped_of(output)
        key = (r_.name, _json.dumps(params, sort_keys=True, default=str), ss)
        if key not in _PROV_CACHE:
            _PROV_CACHE[key] = _prov_text(r_, step, versions, params, ss)
        return _PROV_CACHE[key]

    return _prov


def _prov_text(r_, step, versions, params, skull_stripped):
    method = params.get("method", "neurosmk")
    backend = _backends.STEPS.get(step, {}).get(method)
    tools = backend.tools if backend else ()
    env = os.path.basename(r_.conda_env).rsplit(".", 1)[0] if isinstance(r_.conda_env, str) else None
    resources = dict(r_.resources.items()) if r_.resources is not None else {}
    shell = r_.shellcmd is not None
    # string keys: formatted one per line, `rule=...` or `container=...` would start a line, and
    # Snakemake's parser reads those as directives
    rec = _provenance.static_record(
        **{
            "step": step,
            "method": method,
            "rule": r_.name,
            "parameters": params,
            "conda_env": f"envs/{env}.yaml" if env else None,
            "container": r_.container_img,
            "device": "gpu" if resources.get("gpu") else "cpu",
            # the tool's command: without the wrapper's set-up (TOOLRUN) and the sidecar call
            "command_template": (
                r_.shellcmd.split(" && NEUROSMK_PROV=sidecar")[0].removeprefix(TOOLRUN) if shell else None
            ),
            "script": os.path.normpath(os.path.join(NEUROSMK_ROOT, "rules", r_.script)) if r_.script else None,
            "skull_stripped": skull_stripped,
        }
    )
    if backend is not None and backend.function:  # a script serving several methods calls this one
        rec["Functions"] = [backend.function]
    text = _json.dumps(rec, default=str)
    if not shell:
        return _provenance.ProvJSON(text)  # readable in the report (its format()), JSON otherwise
    vcmd = _provenance.version_command(versions or env, tools, image=r_.container_img)
    return f"{_shlex.quote(text)} {_shlex.quote(vcmd)}"


# ---- methods paragraph ------------------------------------------------------------------------
METHODS_MD = _paths.docs_file(OUT, "methods.md")  # BIDS docs/: documentation of the dataset
EXTRA_TARGETS.append(METHODS_MD)


def _methods_inputs(wc):
    """The sidecars of every output this configuration makes (per visit, per FreeSurfer subject,
    and the group tables that are targets)."""
    target_sidecars = {_provenance.sidecar_path(t) for t in all_targets() if t != METHODS_MD}
    files = []
    for tpl in SIDECAR_TEMPLATES:
        if "{fssub}" in tpl:
            files += [tpl.format(fssub=s) for s in sorted(FS_SUBJECTS)]
        elif "{subject}" in tpl:
            kind = "anat" if "anat" in tpl.split(os.sep) else "dwi"
            if config["steps"][kind]:
                files += expand_visits(tpl, T1W if kind == "anat" else DWI)
        elif tpl in target_sidecars:
            files.append(tpl)
    return files
