# latentmech workflow: see README.md. Run with `make run` or
#   snakemake --cores all --profile workflow/profiles/local
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/dic.smk"


if config.get("ve"):

    include: "rules/ve.smk"


if config.get("alloy"):

    include: "rules/alloy.smk"


rule all:
    default_target: True
    input:
        DIC_PLAN.targets(),
        VE_PLAN.targets() if config.get("ve") else [],
        ALLOY_PLAN.targets() if config.get("alloy") else [],
