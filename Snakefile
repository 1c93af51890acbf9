# cryomtd workflow: thin entry point. All science lives in src/cryomtd; the rules in
# workflow/rules wire files to one script each. See README.md for the config reference.
import os

from snakemake.utils import min_version

from cryomtd.config import check_config_file, exit_on_error, fill_defaults, validate_config

min_version("8.0")

with exit_on_error():  # a YAML syntax error: one line with the file and line, no traceback
    check_config_file("config.yaml")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


with exit_on_error():  # one line per schema error, naming the config key
    validate_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))
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
