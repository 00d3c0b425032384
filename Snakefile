# neurosmk — reproducible neuroimaging pipelines on BIDS data.
#
#   snakemake --cores 2 --configfile config/config.yaml
#
# Every step is a file-to-file rule in rules/*.smk; config/schema/config.schema.yaml documents
# every key; the config's `method` of each step chooses the rule (src/neurosmk/backends.py).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/provenance.smk"
include: "rules/validate.smk"
include: "rules/anat.smk"
include: "rules/dwi.smk"
include: "rules/mrtrix.smk"
include: "rules/tortoise.smk"
include: "rules/fsl.smk"
include: "rules/freesurfer.smk"
include: "rules/group.smk"
include: "rules/aggregate.smk"
include: "rules/bids.smk"
include: "rules/qc.smk"
include: "rules/safety.smk"  # last: wraps the rule files' onstart handler


rule all:
    default_target: True
    input:
        all_targets(),
