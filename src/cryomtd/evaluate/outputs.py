"""Write one experiment's evaluation to files: metrics.json, aligned/{name}.mrc, figures/*.png."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cryomtd.evaluate import figures as F
from cryomtd.io import write_json
from cryomtd.volume import write_mrc

__all__ = ["write_evaluation"]


def write_evaluation(metrics: Mapping[str, Any], aligned: Mapping[str, np.ndarray], truth: np.ndarray,
                     traces: Mapping[str, Any], *, metrics_path: str | os.PathLike,
                     aligned_paths: Mapping[str, str | os.PathLike],
                     figure_paths: Mapping[str, str | os.PathLike]) -> None:
    """Write the outputs of :func:`cryomtd.evaluate.evaluate_experiment`.

    ``figure_paths`` maps figure names of ``cryomtd.evaluate.figures.FIGURES`` to PNG paths
    (a subset is fine). The metrics file is written last, so its presence means all is done.
    """
    name = metrics.get("experiment", "")
    vs = float(metrics.get("voxel_size", 1.0))
    for est, path in aligned_paths.items():
        write_mrc(path, aligned[est], vs)
    vols = {"truth": truth, **{k: aligned[k] for k in aligned}}
    for fig_name, path in figure_paths.items():
        if fig_name == "fsc":
            curves = {k: np.asarray(v["fsc"]) for k, v in metrics["estimators"].items()}
            fig = F.plot_fsc(curves, np.asarray(metrics["frequencies"]), metrics.get("thresholds", (0.5, 0.143)),
                             voxel_size=vs, title=f"{name}: FSC against the truth")
        elif fig_name in ("slices", "projections", "mip"):
            fig = F.plot_volume_panels(vols, fig_name, title=f"{name}: truth vs aligned estimates")
        elif fig_name == "convergence":
            fig = F.plot_convergence(traces, title=f"{name}: convergence")
        else:
            raise ValueError(f"unknown figure {fig_name!r}; expected one of {F.FIGURES}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        F.save_figure(fig, path)
    write_json(metrics_path, metrics)
