# tunebench: which adaptation strategy wins on domain text — dictionaries, bag-of-words, prompting or
# fine-tuning — and at what cost. The study is data: config/config.yaml (schema: workflow/schemas/).
from snakemake.utils import min_version

min_version("9.0")


# The default study, unless a config file is given on the command line (`--configfile`): a given config file
# replaces it rather than being merged into it, so a study never inherits datasets or methods it did not name.
# `--config key=value` overrides keys of whichever file is used.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/report.smk"


localrules:
    prepare,
    aggregate,
    report,


rule all:
    default_target: True
    input:
        final_outputs(),


# The image every job runs in under `snakemake --sdm apptainer` (build it with `apptainer build tunebench.sif
# envs/tunebench.def`, or set the config key to a docker:// or library:// address); ignored otherwise.
container: config.get("container", "tunebench.sif")
