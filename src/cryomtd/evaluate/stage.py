"""Config plumbing of the evaluation rules, kept out of the rule files (``snakemake --lint``).

Pure functions of an experiment's (defaults-filled) config block; no Snakemake import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryomtd.layout import ESTIMATORS, Layout

__all__ = ["FIGURES", "FIGURE_LABELS", "estimator_enabled", "evaluate_inputs"]

FIGURES = ("fsc", "slices", "projections", "mip", "convergence")
FIGURE_LABELS = {
    "fsc": "FSC",
    "slices": "central slices",
    "projections": "projections",
    "mip": "max-intensity projections",
    "convergence": "convergence",
}


def estimator_enabled(exp_cfg: Mapping[str, Any], name: str) -> bool:
    """Whether estimator ``name`` ('lsq' or 'em') runs in this experiment (its block's ``enabled``)."""
    return bool((exp_cfg.get(name) or {}).get("enabled", True))


def evaluate_inputs(exp_cfg: Mapping[str, Any], exp: str, results: str, from_micrographs: bool) -> dict[str, Any]:
    """Named inputs of rule ``evaluate`` for experiment ``exp`` (paths of ``Layout(results, exp)``).

    truth.npz/truth.mrc always; ``<name>.npz``/``<name>.mrc`` (the common estimate format)
    for lsq when ``lsq.enabled`` and for em when ``em.enabled`` and the experiment has
    micrographs (approximate EM works on micrographs, so an exact-moments experiment has no
    EM estimate); micrographs/{k}.json (γ truth) then too.
    """
    paths = Layout(results, exp)
    d: dict[str, Any] = {"truth_npz": paths.truth_npz, "truth_mrc": paths.truth_mrc, "micrographs": []}
    if from_micrographs:
        n = int(exp_cfg["micrographs"]["n_micrographs"])
        d["micrographs"] = [paths.micrograph_info(k) for k in range(n)]
    for name in ESTIMATORS:
        if not estimator_enabled(exp_cfg, name) or (name == "em" and not from_micrographs):
            continue
        d.update({f"{name}_npz": paths.estimate(name), f"{name}_mrc": paths.estimate_mrc(name)})
    return d
