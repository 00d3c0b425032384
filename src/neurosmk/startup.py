"""What a Snakemake process started for one job (a cluster job, a group job's step) needs of the
cohort.

The submitting snakemake (the main process) indexes the whole BIDS dataset, validates the
configuration and checks every input header before any job starts. Every job it submits to a
cluster is a fresh ``snakemake --target-jobs RULE:subject=X,... --mode remote|subprocess`` that
parses the whole workflow again; done for all N subjects, that start-up grows with the cohort
(seconds per job at 1,000 subjects). :func:`job_subjects` tells such a process which subjects its
jobs belong to, so that it indexes only those and skips the checks the main process already did.
"""

from __future__ import annotations

import re
from pathlib import Path


def target_job_specs(argv: list[str]) -> list[str] | None:
    """The values of ``--target-jobs`` on a snakemake command line (``RULE:wc=v,...``), or None
    when it has none."""
    specs = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--target-jobs":
            specs = [] if specs is None else specs
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                specs.append(argv[i])
                i += 1
            continue
        if arg.startswith("--target-jobs="):
            specs = (specs or []) + [arg.split("=", 1)[1]]
        i += 1
    return specs


def job_subjects(argv: list[str], main_process: bool) -> frozenset[str] | None:
    """The subject labels of the target jobs when this snakemake runs jobs for a main process
    (``main_process`` False: ``--mode remote``/``subprocess``) and every target job has a
    ``subject`` wildcard; otherwise None (the whole cohort: a main process, or a cohort-level
    job such as the group tables, whose inputs list every subject)."""
    if main_process:
        return None
    specs = target_job_specs(argv)
    if not specs:
        return None
    from snakemake.target_jobs import parse_target_jobs_cli_args

    try:
        parsed = parse_target_jobs_cli_args(specs)
    except ValueError:  # malformed (no ':' or '='): snakemake reports it; index the whole cohort
        return None
    subjects = set()
    for spec in parsed:
        sub = spec.wildcards_dict.get("subject")
        if not sub:
            return None
        subjects.add(str(sub).strip('"'))
    return frozenset(subjects)


# Snakemake asks ``inspect.signature`` which arguments an input function, a params function or a
# callable resource takes every time it calls one: per job and item, ~5 calls per job of this
# workflow at ~0.1 ms each. The answer never changes, so each function gets it once, through
# Snakemake's own override (snakemake.common.overwrite_function_params, whose attribute
# get_function_params reads first).


def _rule_functions(rule):
    """The plain Python functions a parsed rule calls per job: its input and params functions and
    its callable resources (Snakemake keeps an input function inside the _IOFile it made of it,
    and a resource's function as the Resource's evaluator)."""
    for item in list(rule.input) + list(rule.params):
        fn = getattr(getattr(item, "_file", None), "callable", None) or item
        if callable(fn):
            yield fn
    for value in rule.resources.values():
        fn = getattr(value, "_evaluator", None)
        if callable(fn):
            yield fn


def freeze_signatures(rules) -> int:
    """Record each rule function's parameters on it once (overwrite_function_params), so
    that Snakemake does not recompute ``inspect.signature`` per job. Returns how many functions
    were given one. Functions that cannot take attributes (builtins, bound methods) are left as
    they are, and so is a function that already has an override (Snakemake's own); Snakemake's
    Resource.evaluate, whose bound methods call every resource, gets one on its function."""
    import inspect
    import types

    from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR, overwrite_function_params

    done = 0
    for rule in rules:
        for fn in _rule_functions(rule):
            if not isinstance(fn, types.FunctionType) or hasattr(fn, FUNC_OVERWRITE_PARAMS_ATTR):
                continue
            overwrite_function_params(fn, inspect.signature(fn).parameters)
            done += 1
    # Snakemake calls every resource through the bound method Resource.evaluate(*args, **kwargs)
    # and asks for that method's parameters too (~8 times per job). A bound method reads the
    # attributes of its function, and every instance's answer is the same (*args, **kwargs):
    # recorded once on the function.
    from snakemake.resources import Resource

    if not hasattr(Resource.evaluate, FUNC_OVERWRITE_PARAMS_ATTR):
        bound = types.MethodType(Resource.evaluate, object())
        overwrite_function_params(Resource.evaluate, inspect.signature(bound).parameters)
        done += 1
    return done


def run_steps_in_job(workflow, argv=None, environ=None) -> bool:
    """Inside a cluster job: run its steps in this snakemake process, not one snakemake each.

    A SLURM job (one rule's job, or a group job's chain) starts snakemake with ``--mode remote``
    and the jobstep executor, which starts every step with ``srun`` and a new snakemake that
    re-reads the workflow (~3.5 s a step). Marking every rule local in that process makes
    Snakemake run the steps with its local executor (``Workflow.is_local``), in the job's
    allocation. The main process (``--mode default``) is left as is, and so is a task of a SLURM
    array job (``--slurm-array-jobs``): its command line names the array's first job, and the
    jobstep executor picks the task's own job from ``--slurm-jobstep-array-execs``. True when
    applied. ``argv``/``environ``: the process's (sys.argv, os.environ) unless given.
    """
    import os
    import sys

    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if not workflow.remote_exec:
        return False
    if "SLURM_ARRAY_TASK_ID" in environ or any(a.startswith("--slurm-jobstep-array-execs") for a in argv):
        return False
    workflow.localrules(*(rule.name for rule in workflow.rules))
    return True


_RULE_NAME = re.compile(r"^[ \t]*(?:rule|checkpoint)[ \t]+(\w+)[ \t]*:|^[ \t]*use[ \t]+rule\b.*?\bas[ \t]+(\w+)", re.M)


def rules_defined(path) -> set[str]:
    """The names of the rules a rule file defines (``rule x:``, ``checkpoint x:``, ``use rule ...
    as x``), under any ``if``: read from its text, without running it."""
    return {a or b for a, b in _RULE_NAME.findall(Path(path).read_text())}


# rule files the Snakefile includes only when they define a rule the config selects (relative to
# the Snakefile, in include order); every other rule file is always included
TOOL_RULE_FILES = ("rules/mrtrix.smk", "rules/tortoise.smk", "rules/fsl.smk", "rules/freesurfer.smk")


def tool_rule_files(basedir, wanted: set[str], files=TOOL_RULE_FILES) -> list[str]:
    """Of the rule files ``files`` (relative to the Snakefile's folder ``basedir``), those that
    define a rule in ``wanted`` (backends.selected_rules), in the order given.

    Snakemake's parser translates every included file at every start, that of each cluster job
    too; the tool rule files (FSL, FreeSurfer, MRtrix3, TORTOISE) define rules only for methods a
    configuration picks, so the Snakefile includes only those it needs. A rule left out by mistake
    stops the start at ``backends.check_rules`` (rules/safety.smk), naming it."""
    return [f for f in files if rules_defined(Path(basedir) / f) & wanted]


def cache_rule_file_translations(cache_dir=".snakemake/neurosmk/parsed") -> bool:
    """Keep Snakemake's translation of each rule file it includes after this call (its parser
    turns a .smk file into Python at every start, that of every cluster job too, ~0.2 s for
    neurosmk's rule files) in ``cache_dir`` (relative: to the working directory), keyed by the
    file's path and bytes, the rule count it starts from and Snakemake's and Python's versions,
    so a changed file is translated anew. A cache entry is written to a temporary file and
    renamed (cluster jobs may write the same one at once); one that cannot be read or written
    is translated as before. Only files on the local filesystem; returns True when installed
    (False: already installed)."""
    import hashlib
    import json
    import os
    import sys
    import tempfile

    import snakemake
    from snakemake import parser
    from snakemake import workflow as sm_workflow
    from snakemake.sourcecache import LocalSourceFile

    translate = sm_workflow.parse
    if getattr(translate, "neurosmk_cache", None):
        return False
    cache = Path(cache_dir).absolute()

    def parse(path, workflow, linemap, overwrite_shellcmd=None, rulecount=0):
        def fresh():
            return translate(path, workflow, linemap, overwrite_shellcmd=overwrite_shellcmd, rulecount=rulecount)

        if not isinstance(path, LocalSourceFile):
            return fresh()
        name = path.get_path_or_uri(secret_free=True)
        try:
            text = Path(name).read_bytes()
        except OSError:
            return fresh()
        head = json.dumps([snakemake.__version__, sys.version, name, rulecount, overwrite_shellcmd])
        entry = cache / (hashlib.sha256(head.encode() + b"\0" + text).hexdigest() + ".json")
        try:
            kept = json.loads(entry.read_text())
        except (OSError, ValueError):
            kept = None
        if kept is not None:
            parser.Shell.overwrite_cmd = overwrite_shellcmd  # what parse() sets, as it would
            linemap.update({int(k): v for k, v in kept["linemap"].items()})
            return kept["code"], kept["rulecount"]
        code, count = fresh()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"code": code, "rulecount": count, "linemap": linemap}, f)
                os.replace(tmp, entry)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass
        return code, count

    parse.neurosmk_cache = True
    sm_workflow.parse = parse
    return True


def python_scripts_without_nbformat() -> bool:
    """Tell a ``.py`` script's language without importing nbformat.

    Snakemake's ``snakemake.script.get_language`` imports nbformat (and with it jsonschema, ~0.25 s
    of every cluster job's start-up) before it looks at the file name, though only a notebook
    needs it. This answers "python" for a ``.py`` file, as that function does, and leaves every
    other file to it. Returns True when installed (False: already installed)."""
    from snakemake import script

    language_of = script.get_language
    if getattr(language_of, "neurosmk_py", None):
        return False

    def get_language(source_file, source):
        if source_file.get_filename().endswith(".py"):
            return "python"
        return language_of(source_file, source)

    get_language.neurosmk_py = True
    script.get_language = get_language
    return True
