# Shared helpers for all rule files (experiment lookup and the list of final targets).
# Each rule file appends its final outputs to ALL_TARGETS.
import os
import re

from cryomtd.config import exit_on_error
from cryomtd.layout import Layout
from cryomtd.plan import plan_3d

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
    """The config block of one experiment or half run, from a wildcards object or a name."""
    name = getattr(wildcards_or_name, "exp", wildcards_or_name)
    return PLAN.configs[name] if name in PLAN.configs else config["experiments"][name]


# The 3-D runs: every cryo3d experiment, plus the two half-data runs <exp>/half1, <exp>/half2
# of each experiment on the user's own micrographs (cryomtd.plan).
with exit_on_error():  # an empty glob, mixed pixel sizes: one line naming the key
    PLAN = plan_3d(config["experiments"])

EXP1D = experiments_of("mtd1d")
EXP3D = PLAN.experiments
EXP3D_DATA = [e for e in EXP3D if PLAN.is_data(e)]
EXP3D_SIM = [e for e in EXP3D if not PLAN.is_data(e)]
ALL_TARGETS = []


def moments_source(name):
    """'micrographs' (simulate or prepare → autocorrelate → merge) or 'exact' (model moments of the truth)."""
    return exp_config(name).get("moments", {}).get("source", "micrographs")


EXP3D_MICRO = [e for e in EXP3D if moments_source(e) == "micrographs"]
EXP3D_EXACT = [e for e in EXP3D if moments_source(e) == "exact"]


def owner_paths(name):
    """The Layout of the experiment whose micrographs run ``name`` reads (itself, or a half run's experiment)."""
    return Layout(RESULTS, PLAN.owner[name])


def micrograph_files(name, kind="mrc"):
    """The micrographs of run ``name``: their MRC files (kind 'mrc'), side files ('info') or moments ('moments')."""
    paths = owner_paths(name)
    pick = {"mrc": paths.micrograph, "info": paths.micrograph_info, "moments": paths.micrograph_moments}[kind]
    return [pick(k) for k in PLAN.indices[name]]


def lsq3d_restart_files(wc):
    """lsq/restart_{r}.npz of a 3-D run, r < lsq.restarts (rules refine_lsq, pick_best_restart)."""
    return [Layout(RESULTS, wc.exp).lsq_restart(r) for r in range(exp_config(wc)["lsq"]["restarts"])]


def lsq3d_auto(wc):
    """Whether the run's lsq.symmetry is auto (detected by rule detect_symmetry)."""
    return str(exp_config(wc)["lsq"]["symmetry"]).strip().lower() == "auto"


def lsq3d_symmetry_input(wc):
    """lsq/symmetry.json when lsq.symmetry is auto, else nothing."""
    return [Layout(RESULTS, wc.exp).path("lsq", "symmetry.json")] if lsq3d_auto(wc) else []


def lsq3d_fit_files(wc):
    """The restart files, plus the detection's best fit (lsq/detected.npz) with symmetry auto."""
    extra = [Layout(RESULTS, wc.exp).path("lsq", "detected.npz")] if lsq3d_auto(wc) else []
    return lsq3d_restart_files(wc) + extra


def micrograph_side(wc):
    """Pixels per side of micrograph k of a data experiment (from the file size; for the job's
    memory), else None (the config's micrographs.size)."""
    if wc.exp not in EXP3D_DATA:
        return None
    return int((os.path.getsize(PLAN.files[wc.exp][int(wc.k)]) / 4) ** 0.5)


def voxel_size_source(wc):
    """Where lsq.mrc's voxel size comes from: truth.npz (simulated) or the first micrograph's side file."""
    return Layout(RESULTS, wc.exp).truth_npz if wc.exp in EXP3D_SIM else micrograph_files(wc.exp, "info")[0]
