# neurosmk — reproducible neuroimaging pipelines on BIDS data.
#
#   snakemake --cores 2 --configfile config/config.yaml
#
# Every step is a file-to-file rule in rules/*.smk; config/schema/config.schema.yaml documents
# every key; the config's `method` of each step chooses the rule (src/neurosmk/backends.py).

from snakemake.utils import min_version

min_version("9.0")

import os
import sys

# the checkout, and its package (src/neurosmk) for the rule files; the rule files' translation by
# Snakemake's parser is kept across starts (every cluster job starts Snakemake again):
# neurosmk.startup.cache_rule_file_translations
NEUROSMK_ROOT = os.path.abspath(workflow.basedir)
NEUROSMK_SRC = os.path.join(NEUROSMK_ROOT, "src")
sys.path.insert(0, NEUROSMK_SRC)
from neurosmk.startup import cache_rule_file_translations

cache_rule_file_translations()


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/provenance.smk"
include: "rules/validate.smk"
include: "rules/anat.smk"
include: "rules/dwi.smk"


# the tool rule files (MRtrix3, TORTOISE, FSL, FreeSurfer: neurosmk.startup.TOOL_RULE_FILES),
# only those that define a rule the config selects
for _tool_rules in tool_rule_files(
    workflow.basedir,
    _backends.selected_rules(METHOD, config["freesurfer"]["recon_all"]["enabled"]),
):

    include: _tool_rules


include: "rules/group.smk"
include: "rules/aggregate.smk"
include: "rules/bids.smk"
include: "rules/qc.smk"
include: "rules/safety.smk"  # last: wraps the rule files' onstart handler


rule all:
    default_target: True
    input:
        all_targets(),
