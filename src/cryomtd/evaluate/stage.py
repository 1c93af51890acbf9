"""Config plumbing of the evaluation rules, kept out of the rule files (``snakemake --lint``).

Pure functions of an experiment's (defaults-filled) config block; no Snakemake import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryomtd.layout import ESTIMATORS, Layout

__all__ = ["FIGURES", "FIGURE_LABELS", "estimator_enabled", "evaluate_inputs", "is_data_experiment"]

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


def is_data_experiment(exp_cfg: Mapping[str, Any]) -> bool:
    """A data experiment (your own micrographs) has a ``data`` block instead of a ``volume``."""
    return "data" in exp_cfg


def evaluate_inputs(
    exp_cfg: Mapping[str, Any],
    exp: str,
    results: str,
    from_micrographs: bool,
    *,
    n_micrographs: int | None = None,
) -> dict[str, Any]:
    """Named inputs of rule ``evaluate`` for experiment ``exp`` (paths of ``Layout(results, exp)``).

    Simulated experiment (no ``data`` block): ``truth_npz``, ``truth_mrc``; ``<name>_npz``,
    ``<name>_mrc`` (the common estimate format) for lsq when ``lsq.enabled`` and for em when
    ``em.enabled`` and the experiment has micrographs (approximate EM works on micrographs, so
    an exact-moments experiment has no EM estimate); ``micrographs``: micrographs/{k}.json
    (γ truth) then, else [].

    Data experiment (``"data" in exp_cfg``; always from micrographs): no truth files;
    ``micrographs``: the ``n_micrographs`` side files micrographs/{k}.json (required: the count
    is not in the config); per enabled estimator ``<name>_npz``, ``<name>_mrc`` (all
    micrographs) and ``<name>_half1_npz``, ``<name>_half1_mrc``, ``<name>_half2_npz``,
    ``<name>_half2_mrc`` (the estimates of the even / odd micrographs,
    ``Layout(results, exp).half(i)``, i.e. ``<exp>/half<i>/<name>.npz``); ``reference``: the
    map of ``exp_cfg["reference"]`` when set (as written, relative to the working directory).
    """
    paths = Layout(results, exp)
    data = is_data_experiment(exp_cfg)
    d: dict[str, Any] = {"micrographs": []}
    if data:
        if n_micrographs is None:
            raise ValueError(f"experiment {exp}: a data experiment needs n_micrographs (not in its config)")
        d["micrographs"] = [paths.micrograph_info(k) for k in range(int(n_micrographs))]
        if exp_cfg.get("reference"):
            d["reference"] = str(exp_cfg["reference"])
    else:
        d = {"truth_npz": paths.truth_npz, "truth_mrc": paths.truth_mrc, "micrographs": []}
        if from_micrographs:
            n = int(exp_cfg["micrographs"]["n_micrographs"])
            d["micrographs"] = [paths.micrograph_info(k) for k in range(n)]
    micro = data or from_micrographs
    for name in ESTIMATORS:
        if not estimator_enabled(exp_cfg, name) or (name == "em" and not micro):
            continue
        d.update({f"{name}_npz": paths.estimate(name), f"{name}_mrc": paths.estimate_mrc(name)})
        if data:
            for i in (1, 2):
                h = paths.half(i)
                d.update({f"{name}_half{i}_npz": h.estimate(name), f"{name}_half{i}_mrc": h.estimate_mrc(name)})
    return d
