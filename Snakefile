# cryomtd workflow: thin entry point. All science lives in src/cryomtd; the rules in
# workflow/rules wire files to one script each. See README.md for the config reference.
import os

from snakemake.utils import min_version, validate

from cryomtd.config import fill_defaults

min_version("8.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/config.schema.yaml")
fill_defaults(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))


include: "workflow/rules/common.smk"
include: "workflow/rules/mtd1d.smk"
include: "workflow/rules/volume.smk"
include: "workflow/rules/micrographs.smk"
include: "workflow/rules/moments.smk"
include: "workflow/rules/lsq3d.smk"
include: "workflow/rules/em3d.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        lambda wildcards: ALL_TARGETS,
