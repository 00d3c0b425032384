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
        mem_mb=1000,
        runtime=10,
    log:
        f"{OUT}/logs/group_anat_volumes.log",
    benchmark:
        f"{OUT}/benchmarks/group_anat_volumes.tsv"
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
        mem_mb=1000,
        runtime=10,
    log:
        f"{OUT}/logs/group_dti_stats.log",
    benchmark:
        f"{OUT}/benchmarks/group_dti_stats.tsv"
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/group_tables.py"


rule dataset_description:
    output:
        f"{OUT}/dataset_description.json",
    params:
        bids_dir=config["bids_dir"],
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    log:
        f"{OUT}/logs/dataset_description.log",
    benchmark:
        f"{OUT}/benchmarks/dataset_description.tsv"
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    script:
        "../scripts/dataset_description.py"
