# Per-visit input validation: the first job of every subject's (and session's) chains.
#
# The header-level checks ran at start (rules/common.smk). This job reads the voxels of the
# visit's raw T1w and DWI (readable data, no NaN/Inf, no constant image or volume) in parallel
# with the other visits' jobs, so a bad subject fails only its own chain (`--keep-going` finishes
# the rest) with an error naming the file and the cause. Its small JSON report lives under
# output_dir/.neurosmk/validate/{anat,dwi}/ (hidden, not part of the BIDS derivatives).
#
# The first rules that read raw data take it as an ordinary input `valid` (`**validated()`): the
# report is re-made exactly when the raw files it checked change (set, path or mtime), and then
# the chain re-runs anyway. (Not ancient(): Snakemake 9.27.1 skips the own re-run checks of jobs
# downstream of a re-run job, so behind an ancient() report a moved bids_dir re-ran nothing but
# the checks.) A deleted report, or an edit of this rule, re-runs the chain. It reads no config into params:
# the checks do not depend on configuration (those that do are header checks at start), and
# `validate_inputs: false` (read at run time) only skips the voxel reading.

# one job per visit and datatype (validate_anat, validate_dwi), so that each chain starts as soon
# as its own data passed, and each joins its chain's SLURM group (profiles/slurm: groups); its
# input functions and validated() are in rules/common.smk
for _dt, _inputs in (("anat", _validate_t1w), ("dwi", _validate_dwi)):

    rule:
        name:
            f"validate_{_dt}"
        input:
            unpack(_inputs),
        output:
            report=validated_report(_dt),
        log:
            logfile(f"validate_{_dt}"),
        benchmark:
            benchfile(f"validate_{_dt}")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: 1
        resources:
            **res(f"validate_{_dt}"),
        script:
            "../scripts/validate_visit.py"
