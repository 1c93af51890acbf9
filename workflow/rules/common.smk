# Shared helpers for all rule files (experiment lookup and the list of final targets).
# Each rule file appends its final outputs to ALL_TARGETS.
import os
import re

from cryomtd.layout import Layout

RESULTS = config.get("results_dir", "results")
#: Path patterns of every experiment's files, {exp} left as a wildcard (cryomtd.layout).
PATHS = Layout(RESULTS, "{exp}")
# The clone that envs/*.post-deploy.sh installs into each per-rule conda env (--sdm conda).
os.environ.setdefault("CRYOMTD_SOURCE", workflow.basedir)


def experiments_of(kind):
    """Names of the configured experiments of one kind ('mtd1d' or 'cryo3d')."""
    return [name for name, exp in config["experiments"].items() if exp["kind"] == kind]


def name_regex(names):
    """A wildcard constraint matching exactly these experiment names (never-matching if empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def exp_config(wildcards_or_name):
    """The config block of one experiment, from a wildcards object or a name."""
    name = getattr(wildcards_or_name, "exp", wildcards_or_name)
    return config["experiments"][name]


EXP1D = experiments_of("mtd1d")
EXP3D = experiments_of("cryo3d")
ALL_TARGETS = []


def moments_source(name):
    """'micrographs' (simulate → autocorrelate → merge) or 'exact' (model moments of the truth)."""
    return exp_config(name).get("moments", {}).get("source", "micrographs")


EXP3D_MICRO = [e for e in EXP3D if moments_source(e) == "micrographs"]
EXP3D_EXACT = [e for e in EXP3D if moments_source(e) == "exact"]


def lsq3d_restart_files(wc):
    """lsq/restart_{r}.npz of a cryo3d experiment, r < lsq.restarts (rules refine_lsq, pick_best_restart)."""
    return [Layout(RESULTS, wc.exp).lsq_restart(r) for r in range(exp_config(wc)["lsq"]["restarts"])]
