"""Config plumbing of the evaluation rules, kept out of the rule files (``snakemake --lint``).

Pure functions of an experiment's (defaults-filled) config block; no Snakemake import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    """Named inputs of rule ``evaluate`` for experiment ``exp`` (paths under ``results``).

    truth.npz/truth.mrc always; lsq.npz/lsq.mrc when ``lsq.enabled``; em.npz/em.mrc/em_trace.json
    when ``em.enabled`` and the experiment has micrographs (approximate EM works on micrographs,
    so an exact-moments experiment has no EM estimate); micrographs/{k}.json (γ truth) then too.
    """
    base = f"{results}/{exp}"
    d: dict[str, Any] = {"truth_npz": f"{base}/truth.npz", "truth_mrc": f"{base}/truth.mrc", "micrographs": []}
    if from_micrographs:
        n = int(exp_cfg["micrographs"]["n_micrographs"])
        d["micrographs"] = [f"{base}/micrographs/{k}.json" for k in range(n)]
    if estimator_enabled(exp_cfg, "lsq"):
        d.update(lsq_npz=f"{base}/lsq.npz", lsq_mrc=f"{base}/lsq.mrc")
    if estimator_enabled(exp_cfg, "em") and from_micrographs:  # EM needs micrographs (exact moments: lsq only)
        d.update(em_npz=f"{base}/em.npz", em_mrc=f"{base}/em.mrc", em_trace=f"{base}/em_trace.json")
    return d
