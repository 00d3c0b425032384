# The backend registry checked against the rules every file defined (neurosmk.backends), and the
# damage guards (neurosmk.outdir): the output_dir lock against runs from another checkout.
# Included last, so that it wraps the onstart handler a rule file may have set (one handler per
# workflow): the lock is taken first, then that handler runs. onstart is not called by dry runs
# (-n) or when there is nothing to do, so those write nothing into output_dir. The output_dir
# placement checks run earlier, in rules/common.smk, before anything is read or written.

from snakemake.exceptions import WorkflowError as _WorkflowError

from neurosmk import outdir as _outdir
from neurosmk.startup import (
    freeze_signatures,
    python_scripts_without_nbformat,
    run_steps_in_job,
)

_RULE_FILES_ONSTART = workflow._onstart

# every rule file is read: each selected (step, method) must resolve to its registered rules and
# have its methods sentence (neurosmk.backends.check_rules), else stop now, naming it
_backends.check_rules({_r.name for _r in workflow.rules}, METHOD)
# and their input/params/resource functions get their signature once, not once per job
# (neurosmk.startup.freeze_signatures)
freeze_signatures(workflow.rules)
# and a `.py` script's language is told without importing nbformat (~0.25 s of every job's start)
python_scripts_without_nbformat()
run_steps_in_job(workflow)


onstart:
    try:
        _outdir.acquire_lock(OUT, checkout=NEUROSMK_ROOT)
    except _outdir.OutputDirError as exc:
        raise _WorkflowError(str(exc)) from None
    if HEADER_CACHE is not None:  # rules/common.smk: the start-up header checks, read-only until now
        HEADER_CACHE.save()
    _RULE_FILES_ONSTART(log)


onsuccess:
    _outdir.release_lock(OUT)


onerror:
    _outdir.release_lock(OUT)
