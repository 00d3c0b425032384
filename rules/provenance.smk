# Provenance: the per-output JSON sidecars (neurosmk.provenance) and the methods paragraph.
#
# Each rule declares its sidecars as outputs, `**sidecars(OUT_A, OUT_B)` (one <stem>.json per
# output stem), and gets the DAG-time part of their content as `params: prov=prov("<step>")`:
# step, method, parameters, conda env, container (no paths, thread counts or versions, so it
# re-runs nothing that would not re-run anyway). Python rules write the sidecars when their
# script exits without error (neurosmk.runtime.setup); shell rules end their command with
# SIDECAR, which runs scripts/sidecar.sh in the tool's own environment after the tool succeeded.
#
# Tool calls go through the one wrapper scripts/toolrun.sh (sourced by the job's shell, in the
# tool's environment): TOOLRUN + '( TOOL ... "$tmp/x" ) > {log:q} 2>&1'
# + ' && toolrun_end "$tmp/x" {output.x:q}' + SIDECAR: a private "$tmp" under $TMPDIR, removed
# on success, failure and SIGTERM (a SIGKILL leftover by the next run of the job), outputs renamed
# into place only once the tool wrote them all.

import json as _json
import shlex as _shlex

from snakemake.io import apply_wildcards as _apply_wildcards

from neurosmk import provenance as _provenance

SIDECAR_SH = os.path.join(NEUROSMK_ROOT, "scripts", "sidecar.sh")
# every path shlex-quoted (:q); {params.prov} is already a pair of shlex-quoted words (prov below)
SIDECAR = (' && NEUROSMK_PROV=sidecar NEUROSMK_VERSION={NEUROSMK_VERSION:q} sh {SIDECAR_SH:q} {params.prov}'
           ' {OUT:q} {config[bids_dir]:q} {output:q} -- {input:q}')
TOOLRUN_SH = os.path.join(NEUROSMK_ROOT, "scripts", "toolrun.sh")
TOOLRUN = ". {TOOLRUN_SH:q} && toolrun_begin {rule:q} {output:q} && "
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
        params = {k: _param_value(v, wildcards, input, output) for k, v in r_.params.items()
                  if k != "prov" and not k.startswith("out_")}
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
    rec = _provenance.static_record(**{
        "step": step, "method": method, "rule": r_.name, "parameters": params,
        "conda_env": f"envs/{env}.yaml" if env else None, "container": r_.container_img,
        "device": "gpu" if resources.get("gpu") else "cpu",
        # the tool's command: without the wrapper's set-up (TOOLRUN) and the sidecar call
        "command_template": r_.shellcmd.split(" && NEUROSMK_PROV=sidecar")[0].removeprefix(TOOLRUN) if shell else None,
        "script": os.path.normpath(os.path.join(NEUROSMK_ROOT, "rules", r_.script)) if r_.script else None,
        "skull_stripped": skull_stripped})
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
