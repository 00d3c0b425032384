# Per-visit input validation: the first job of every subject's (and session's) chain.
#
# The header-level checks ran at start (rules/common.smk). This job reads the voxels of the
# visit's raw T1w and DWI (readable data, no NaN/Inf, no constant image or volume) in parallel
# with the other visits' jobs, so a bad subject fails only its own chain (`--keep-going` finishes
# the rest) with an error naming the file and the cause. Its small JSON report lives under
# output_dir/.neurosmk/ (hidden, not part of the BIDS derivatives).
#
# The first rules that read raw data take it as input `valid` (`**validated()`): ancient(), so its mtime
# never makes finished jobs re-run (a re-validation after a rule-code change re-runs nothing
# downstream), while a missing report still runs it first. It reads no config into params:
# the checks do not depend on configuration (those that do are header checks at start), and
# `validate_inputs: false` (read at run time) only skips the voxel reading.

VALIDATED = f"{OUT}/.neurosmk/validate/{visit_wc()}.json"


_DWI_ORDER = ("dwi.denoise", "dwi.degibbs", "dwi.preproc", "dwi.mask")


def validated(step=None):
    """``**validated()`` in a rule's input: the visit's report as input ``valid`` (ancient).
    For a later DWI step, only when every step before it is 'none' (it then reads the raw
    series); the anatomical first rules and the denoise rules always read raw data."""
    if step is not None and any(METHOD.get(s, "none") != "none" for s in _DWI_ORDER[:_DWI_ORDER.index(step)]):
        return {}
    return {"valid": ancient(VALIDATED)}


def _validate_inputs(wc):
    files = {}
    key = _key(wc)
    if key in T1W:
        files["t1w"] = T1W[key]
    if key in DWI:
        d = DWI[key]
        files.update({"dwi": d.nifti, "bval": d.bval, "bvec": d.bvec})
    return files


rule validate_visit:
    input:
        unpack(_validate_inputs),
    output:
        report=VALIDATED,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        logfile("validate_visit"),
    benchmark:
        benchfile("validate_visit")
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/validate_visit.py"
