# FreeSurfer stats aggregation: per-subject parse (adding a subject parses only that subject),
# then one group concatenation into tidy long tables, wide tables, QC plots and outlier flags.
# Source: an existing SUBJECTS_DIR given as `freesurfer_dir`.

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

FSG = f"{OUT}/group/freesurfer"

if FS_SUBJECTS:
    EXTRA_TARGETS += [f"{FSG}/freesurfer_stats_long.tsv", f"{FSG}/freesurfer_global_measures.tsv",
                      f"{FSG}/wide", f"{FSG}/qc", f"{FSG}/freesurfer_outliers.tsv"]


rule fs_parse_subject:
    input:
        stats_dir=lambda wc: os.path.join(FS_DIR, wc.fssub, "stats"),
        files=lambda wc: FS_SUBJECTS[wc.fssub],
    output:
        long=f"{FSG}/subjects/{{fssub}}_long.parquet",
        global_=f"{FSG}/subjects/{{fssub}}_global.parquet",
        skipped=f"{FSG}/subjects/{{fssub}}_skipped.tsv",
        **sidecars(f"{FSG}/subjects/{{fssub}}_long.parquet", f"{FSG}/subjects/{{fssub}}_global.parquet",
                   f"{FSG}/subjects/{{fssub}}_skipped.tsv"),
    params:
        subject="{fssub}",
        session="",
        skip_bad=False,
        prov=prov("freesurfer.stats"),
    wildcard_constraints:
        fssub="[^/]+",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        f"{OUT}/logs/fs_parse_subject/{{fssub}}.log",
    benchmark:
        f"{OUT}/benchmarks/fs_parse_subject/{{fssub}}.tsv"
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/fs_parse_subject.py"


rule fs_aggregate_group:
    input:
        long=expand(f"{FSG}/subjects/{{fssub}}_long.parquet", fssub=sorted(FS_SUBJECTS)),
        global_=expand(f"{FSG}/subjects/{{fssub}}_global.parquet", fssub=sorted(FS_SUBJECTS)),
    output:
        long_tsv=report(f"{FSG}/freesurfer_stats_long.tsv", caption="../report/fs_long.rst",
                        category="Group tables"),
        long_parquet=f"{FSG}/freesurfer_stats_long.parquet",
        global_tsv=report(f"{FSG}/freesurfer_global_measures.tsv", caption="../report/fs_global.rst",
                          category="Group tables"),
        global_parquet=f"{FSG}/freesurfer_global_measures.parquet",
        wide_dir=directory(f"{FSG}/wide"),
        qc_dir=report(directory(f"{FSG}/qc"), patterns=["{name}.png"], caption="../report/fs_qc.rst",
                      category="FreeSurfer group QC"),
        outliers=report(f"{FSG}/freesurfer_outliers.tsv", caption="../report/fs_outliers.rst",
                        category="Group tables"),
        **sidecars(f"{FSG}/freesurfer_stats_long.tsv", f"{FSG}/freesurfer_global_measures.tsv",
                   f"{FSG}/freesurfer_outliers.tsv"),
    params:
        prov=prov("freesurfer.group"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        f"{OUT}/logs/fs_aggregate_group.log",
    benchmark:
        f"{OUT}/benchmarks/fs_aggregate_group.tsv"
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/fs_aggregate_group.py"
