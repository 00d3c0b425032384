# FreeSurfer stats aggregation: per-subject parse (adding a subject parses only that subject),
# then one group concatenation into tidy long tables, wide tables, QC plots and outlier flags.
# Sources: an existing SUBJECTS_DIR given as `freesurfer_dir`, and/or the recon-all subject dirs
# under output_dir/freesurfer when freesurfer.recon_all.enabled (rules/freesurfer.smk): then the
# DAG runs recon-all -> fs_parse_subject -> fs_aggregate_group, and the parse reads the recon-all
# outputs. Those are protected (read-only): a later run that would redo a finished recon-all
# stops at start ("Write-protected output files") instead (root ignores file permissions).

import glob as _glob

FS_DIR = config["freesurfer_dir"]
FS_SUBJECTS = {}
if FS_DIR and config["steps"]["freesurfer_stats"]:
    if not os.path.isdir(FS_DIR):
        raise ValueError(f"{FS_DIR}: freesurfer_dir does not exist or is not a directory")
    for _d in sorted(os.listdir(FS_DIR)):
        _stats = sorted(_glob.glob(os.path.join(FS_DIR, _d, "stats", "*.stats")))
        if _stats:
            FS_SUBJECTS[_d] = _stats
    if not FS_SUBJECTS:
        raise ValueError(f"{FS_DIR}: freesurfer_dir has no <subject>/stats/*.stats files")

# recon-all subjects: name (sub-X[_ses-Y]) -> its recon-all outputs (the stats it parses + sentinel)
FS_RECON_SUBJECTS = {}
if config["freesurfer"]["recon_all"]["enabled"] and config["steps"]["freesurfer_stats"]:
    for _visit in T1W:
        _wc = {"subject": _visit[0], **({"session": _visit[1]} if HAS_SES else {})}
        FS_RECON_SUBJECTS[FS_SUBJECT.format(**_wc)] = [
            FS_OUTPUTS[k].format(**_wc) for k in ("aseg", "lh_aparc", "rh_aparc")
        ] + [FS_DONE.format(**_wc)]
    _clash = sorted(set(FS_RECON_SUBJECTS) & set(FS_SUBJECTS))
    if _clash:
        raise ValueError(
            f"{FS_DIR}: freesurfer_dir has subjects that recon-all also makes under "
            f"{FS_RECON_DIR} ({', '.join(_clash)}): remove them from one source"
        )
    FS_SUBJECTS.update({s: f for s, f in FS_RECON_SUBJECTS.items()})

FSG = {k: _paths.fs_group_file(OUT, k) for k in _paths.FS_GROUP_FILES}  # group/freesurfer/
FS_SUBJECT_LONG = _paths.fs_subject_table(OUT, "{fssub}", "long")
FS_SUBJECT_GLOBAL = _paths.fs_subject_table(OUT, "{fssub}", "global")
FS_SUBJECT_SKIPPED = _paths.fs_subject_table(OUT, "{fssub}", "skipped", ext=".tsv")

if FS_SUBJECTS:
    EXTRA_TARGETS += [FSG[k] for k in ("long", "global", "wide", "qc", "outliers")]


rule fs_parse_subject:
    input:
        files=lambda wc: FS_SUBJECTS[wc.fssub],
    output:
        **sidecars(FS_SUBJECT_LONG, FS_SUBJECT_GLOBAL, FS_SUBJECT_SKIPPED),
        long=FS_SUBJECT_LONG,
        global_=FS_SUBJECT_GLOBAL,
        skipped=FS_SUBJECT_SKIPPED,
    log:
        logfile("fs_parse_subject", "{fssub}"),
    benchmark:
        benchfile("fs_parse_subject", "{fssub}")
    wildcard_constraints:
        fssub="[^/]+",
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("fs_parse_subject"),
    params:
        # a freesurfer_dir subject keeps its folder name; a recon-all one is sub-X[_ses-Y]
        stats_dir=lambda wc: os.path.join(FS_RECON_DIR if wc.fssub in FS_RECON_SUBJECTS else FS_DIR, wc.fssub, "stats"),
        subject=lambda wc: _split_fs_name(wc.fssub)[0],
        session=lambda wc: _split_fs_name(wc.fssub)[1],
        skip_bad=False,
        prov=prov("freesurfer.stats"),
    script:
        "../scripts/fs_parse_subject.py"


rule fs_aggregate_group:
    input:
        long=expand(FS_SUBJECT_LONG, fssub=sorted(FS_SUBJECTS)),
        global_=expand(FS_SUBJECT_GLOBAL, fssub=sorted(FS_SUBJECTS)),
    output:
        **sidecars(FSG["long"], FSG["global"], FSG["outliers"]),
        long_tsv=report(FSG["long"], caption="../report/fs_long.rst", category="Group tables"),
        long_parquet=FSG["long_parquet"],
        global_tsv=report(FSG["global"], caption="../report/fs_global.rst", category="Group tables"),
        global_parquet=FSG["global_parquet"],
        wide_dir=directory(FSG["wide"]),
        qc_dir=report(
            directory(FSG["qc"]),
            patterns=["{name}.png"],
            caption="../report/fs_qc.rst",
            category="FreeSurfer group QC",
        ),
        outliers=report(FSG["outliers"], caption="../report/fs_outliers.rst", category="Group tables"),
    log:
        logfile("fs_aggregate_group", visit=False),
    benchmark:
        benchfile("fs_aggregate_group", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("fs_aggregate_group"),
    params:
        prov=prov("freesurfer.group"),
    script:
        "../scripts/fs_aggregate_group.py"
