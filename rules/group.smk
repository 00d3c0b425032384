# Group-level tables (tidy long format) and the derivative dataset description.


rule group_anat_volumes:
    input:
        tables=lambda wc: expand_visits(TISSUE_VOL, T1W),
    output:
        **sidecars(GROUP_ANAT_VOLUMES),
        tsv=report(GROUP_ANAT_VOLUMES, caption="../report/anat_volumes.rst", category="Group tables"),
    log:
        logfile("group_anat_volumes", visit=False),
    benchmark:
        benchfile("group_anat_volumes", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("group_anat_volumes"),
    params:
        atlas="tissue",
        prov=prov("group.tables"),
    script:
        "../scripts/group_tables.py"


use rule group_anat_volumes as group_dti_stats with:
    input:
        tables=lambda wc: expand_visits(DTI_STATS, DWI),
    output:
        **sidecars(GROUP_DTI_STATS),
        tsv=report(GROUP_DTI_STATS, caption="../report/dti_stats.rst", category="Group tables"),
    log:
        logfile("group_dti_stats", visit=False),
    benchmark:
        benchfile("group_dti_stats", visit=False)
    threads: 1
    resources:
        **res("group_dti_stats"),
    params:
        atlas="dti_roi",
        prov=prov("group.tables"),


rule dataset_description:
    output:
        DATASET_DESCRIPTION,
        readme=_paths.dataset_file(OUT, "README.md"),
        descriptions=_paths.dataset_file(OUT, "descriptions.tsv"),
        bidsignore=_paths.dataset_file(OUT, ".bidsignore"),
    log:
        logfile("dataset_description", visit=False),
    benchmark:
        benchfile("dataset_description", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("dataset_description"),
    params:
        bids_dir=config["bids_dir"],
        container=CONTAINERS["neurosmk"],
    script:
        "../scripts/dataset_description.py"


# One combined long table of every group table (tissue volumes, DTI ROI stats, FreeSurfer
# stats and global measures), so one report table covers them all.
GROUP_LONG = _paths.group_file(OUT, "long")


if (
    (config["steps"]["anat"] and T1W)
    or (config["steps"]["dwi"] and DWI)
    or (config["freesurfer_dir"] and config["steps"]["freesurfer_stats"])
):
    EXTRA_TARGETS.append(GROUP_LONG)


# Light cohort-level jobs run beside snakemake, not as cluster jobs (on SLURM each job costs
# seconds to minutes of submission and polling, and these sit at the end of every run).
localrules:
    qc_group_page,
    group_long,
    group_anat_volumes,
    group_dti_stats,
    dataset_description,
    methods,


rule group_long:
    input:
        unpack(_group_long_inputs),
    output:
        **sidecars(GROUP_LONG),
        tsv=report(GROUP_LONG, caption="../report/neurosmk_long.rst", category="Group tables"),
        parquet=_paths.group_file(OUT, "long_parquet"),
    log:
        logfile("group_long", visit=False),
    benchmark:
        benchfile("group_long", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("group_long"),
    params:
        prov=prov("group.long"),
    script:
        "../scripts/group_long.py"
