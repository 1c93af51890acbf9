"""Write one experiment's evaluation to files: figures/*.png, aligned/{name}.mrc, metrics.json.

Paths come from :class:`cryomtd.layout.Layout`; :func:`write_evaluation` writes everything
and metrics.json last, so its presence means the evaluation is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryomtd.evaluate import figures as F
from cryomtd.evaluate.metrics import Evaluation
from cryomtd.io import write_json
from cryomtd.layout import Layout
from cryomtd.volume import write_mrc

__all__ = ["make_figure", "write_aligned", "write_evaluation", "write_figures", "write_metrics"]


def make_figure(ev: Evaluation, name: str) -> F.plt.Figure:
    """Figure ``name`` (one of :data:`cryomtd.evaluate.figures.FIGURES`) of an evaluation."""
    m = ev.metrics
    exp, vs = ev.name, float(m.get("voxel_size", 1.0))
    if name == "fsc":
        ests = m["estimators"]
        curves = {k: np.asarray(v["fsc"]) for k, v in ests.items()}
        key = f"resolution_{F.CRITERION:g}"
        res = {k: (float(v[key]), bool(v.get(f"{key}_bound", False))) for k, v in ests.items() if key in v}
        return F.plot_fsc(
            curves,
            np.asarray(m["frequencies"]),
            m.get("thresholds", (F.CRITERION, F.HALF_MAP)),
            voxel_size=vs,
            resolutions=res,
            title=f"{exp}: FSC against the truth",
        )
    if name in ("slices", "projections", "mip"):
        vols = {"truth": ev.truth.volume, **ev.aligned}
        what = {"slices": "central slices", "projections": "projections", "mip": "max-intensity projections"}[name]
        return F.plot_volume_panels(
            vols, name, voxel_size=vs, title=f"{exp}: {what} of the truth and the aligned estimates"
        )
    if name == "convergence":
        return F.plot_convergence(ev.traces, title=f"{exp}: convergence")
    raise ValueError(f"unknown figure {name!r}; expected one of {F.FIGURES}")


def write_figures(ev: Evaluation, layout: Layout, figures: Sequence[str] = F.FIGURES) -> None:
    """``layout.figure(name)`` (PNG) for each name in ``figures``."""
    for name in figures:
        path = layout.figure(name)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        F.save_figure(make_figure(ev, name), path)


def write_aligned(ev: Evaluation, layout: Layout) -> None:
    """``layout.aligned_mrc(name)`` for each estimator: float32, the truth's voxel size in the header."""
    Path(layout.aligned_dir).mkdir(parents=True, exist_ok=True)
    for name, vol in ev.aligned.items():
        write_mrc(layout.aligned_mrc(name), vol, ev.truth.voxel_size)


def write_metrics(ev: Evaluation, layout: Layout) -> None:
    """``layout.metrics`` (metrics.json, atomically)."""
    write_json(layout.metrics, ev.metrics)


def write_evaluation(ev: Evaluation, layout: Layout, figures: Sequence[str] = F.FIGURES) -> None:
    """Aligned volumes, figures, then metrics.json (last: its presence means all is done)."""
    write_aligned(ev, layout)
    write_figures(ev, layout, figures)
    write_metrics(ev, layout)
