# Group-level tables (tidy long format) and the derivative dataset description.


rule group_anat_volumes:
    input:
        tables=lambda wc: expand_visits(TISSUE_VOL, T1W),
    output:
        tsv=report(f"{OUT}/group/anat_tissue_volumes.tsv", caption="../report/anat_volumes.rst",
                   category="Group tables"),
        **sidecars(f"{OUT}/group/anat_tissue_volumes.tsv"),
    params:
        atlas="tissue",
        prov=prov("group.tables"),
    threads: 1
    resources:
        **res("group_anat_volumes"),
    log:
        logfile("group_anat_volumes", visit=False),
    benchmark:
        benchfile("group_anat_volumes", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/group_tables.py"


rule group_dti_stats:
    input:
        tables=lambda wc: expand_visits(DTI_STATS, DWI),
    output:
        tsv=report(f"{OUT}/group/dwi_dti_roistats.tsv", caption="../report/dti_stats.rst",
                   category="Group tables"),
        **sidecars(f"{OUT}/group/dwi_dti_roistats.tsv"),
    params:
        atlas="dti_roi",
        prov=prov("group.tables"),
    threads: 1
    resources:
        **res("group_dti_stats"),
    log:
        logfile("group_dti_stats", visit=False),
    benchmark:
        benchfile("group_dti_stats", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/group_tables.py"


rule dataset_description:
    output:
        f"{OUT}/dataset_description.json",
        readme=f"{OUT}/README.md",
        descriptions=f"{OUT}/descriptions.tsv",
        bidsignore=f"{OUT}/.bidsignore",
    params:
        bids_dir=config["bids_dir"],
        container=CONTAINERS["neurosmk"],
    threads: 1
    resources:
        **res("dataset_description"),
    log:
        logfile("dataset_description", visit=False),
    benchmark:
        benchfile("dataset_description", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/dataset_description.py"


# One combined long table of every group table (tissue volumes, DTI ROI stats, FreeSurfer
# stats and global measures), so one report table covers them all.
GROUP_LONG = f"{OUT}/group/neurosmk_long.tsv"


if (config["steps"]["anat"] and T1W) or (config["steps"]["dwi"] and DWI) or (
    config["freesurfer_dir"] and config["steps"]["freesurfer_stats"]
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
        tsv=report(GROUP_LONG, caption="../report/neurosmk_long.rst", category="Group tables"),
        parquet=f"{OUT}/group/neurosmk_long.parquet",
        **sidecars(GROUP_LONG),
    params:
        prov=prov("group.long"),
    threads: 1
    resources:
        **res("group_long"),
    log:
        logfile("group_long", visit=False),
    benchmark:
        benchfile("group_long", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/group_long.py"
