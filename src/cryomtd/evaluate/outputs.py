"""Write one experiment's evaluation to files: figures/*.png, aligned/{name}.mrc (aligned to the
truth or reference), aligned/{name}_half2.mrc (half 2 aligned to half 1), metrics.json.

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

__all__ = ["make_figure", "panel_volumes", "write_aligned", "write_evaluation", "write_figures", "write_metrics"]


def _fsc_figure(ev: Evaluation) -> F.plt.Figure:
    m = ev.metrics
    exp, vs = ev.name, float(ev.voxel_size)
    ests = m["estimators"]
    against = ev.target_label
    halves = any("half_fsc" in v for v in ests.values())
    curves: dict[str, np.ndarray] = {}
    res: dict[str, tuple[float, bool]] = {}
    crit: dict[str, float] = {}
    styles: dict[str, str] = {}
    key, hkey = f"resolution_{F.CRITERION:g}", f"resolution_half_{F.HALF_MAP:g}"
    for name, v in ests.items():
        if "fsc" in v:
            label = f"{name} vs {against}" if halves else name
            curves[label] = np.asarray(v["fsc"])
            if key in v:
                res[label] = (float(v[key]), bool(v.get(f"{key}_bound", False)))
        if "half_fsc" in v:
            label = f"{name} half 1 vs half 2"
            curves[label] = np.asarray(v["half_fsc"])
            crit[label], styles[label] = F.HALF_MAP, "--" if against else "-"
            if hkey in v:
                res[label] = (float(v[hkey]), bool(v.get(f"{hkey}_bound", False)))
    thresholds = list(m.get("thresholds", (F.CRITERION, F.HALF_MAP))) if against else []
    if halves and not any(np.isclose(t, F.HALF_MAP) for t in thresholds):
        thresholds.append(F.HALF_MAP)
    main = ([F.CRITERION] if against else []) + ([F.HALF_MAP] if halves else [])
    labels = {t: F.threshold_label(t, against or "truth", halves) for t in thresholds}
    if against and halves:
        title, ylabel = f"{exp}: FSC against the {against} and half-map FSC", "FSC"
    elif against:
        title, ylabel = f"{exp}: FSC against the {against}", f"FSC with the {against}"
    else:
        title, ylabel = f"{exp}: half-map FSC (half 2 aligned to half 1)", "FSC between the half maps"
    return F.plot_fsc(
        curves,
        np.asarray(m["frequencies"]),
        thresholds,
        voxel_size=vs,
        resolutions=res,
        criteria=crit,
        linestyles=styles,
        main=main,
        labels=labels,
        title=title,
        ylabel=ylabel,
    )


def panel_volumes(ev: Evaluation) -> tuple[dict[str, np.ndarray], str]:
    """The volumes of the slices/projections/MIP figures and what they show: the truth or
    reference and the aligned estimates (against a reference, whose units are not the
    estimates', each at its ``scale_to_reference``); without either, each estimator's half 1
    and its half 2 aligned to half 1."""
    if ev.target is not None:
        against = ev.target_label or "truth"
        if ev.flavour == "reference":  # other units: each estimate at its least-squares scale onto the map
            ests = ev.metrics["estimators"]
            scaled = {n: float(ests[n].get("scale_to_reference", 1.0)) * v for n, v in ev.aligned.items()}
            return {against: ev.target.volume, **scaled}, "the reference and the aligned estimates (scaled onto it)"
        return {against: ev.target.volume, **ev.aligned}, f"the {against} and the aligned estimates"
    vols: dict[str, np.ndarray] = {}
    for name, (h1, h2) in ev.half_maps.items():
        vols[f"{name} half 1"] = h1
        vols[f"{name} half 2 (aligned)"] = h2
    return vols, "the half-data estimates (half 2 aligned to half 1)"


def make_figure(ev: Evaluation, name: str) -> F.plt.Figure:
    """Figure ``name`` (one of :data:`cryomtd.evaluate.figures.FIGURES`) of an evaluation."""
    if name == "fsc":
        return _fsc_figure(ev)
    if name in ("slices", "projections", "mip"):
        vols, shown = panel_volumes(ev)
        what = {"slices": "central slices", "projections": "projections", "mip": "max-intensity projections"}[name]
        return F.plot_volume_panels(vols, name, voxel_size=float(ev.voxel_size), title=f"{ev.name}: {what} of {shown}")
    if name == "convergence":
        return F.plot_convergence(ev.traces, title=f"{ev.name}: convergence")
    raise ValueError(f"unknown figure {name!r}; expected one of {F.FIGURES}")


def write_figures(ev: Evaluation, layout: Layout, figures: Sequence[str] = F.FIGURES) -> None:
    """``layout.figure(name)`` (PNG) for each name in ``figures``."""
    for name in figures:
        path = layout.figure(name)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        F.save_figure(make_figure(ev, name), path)


def write_aligned(ev: Evaluation, layout: Layout) -> None:
    """``layout.aligned_mrc(name)`` for each estimator aligned to the truth or reference, and
    ``layout.aligned_half_mrc(name)`` (half 2 aligned to half 1) for each with half maps:
    float32, the voxel size in the header."""
    Path(layout.aligned_dir).mkdir(parents=True, exist_ok=True)
    for name, vol in ev.aligned.items():
        write_mrc(layout.aligned_mrc(name), vol, ev.voxel_size)
    for name, (_, h2) in ev.half_maps.items():
        write_mrc(layout.aligned_half_mrc(name), h2, ev.voxel_size)


def write_metrics(ev: Evaluation, layout: Layout) -> None:
    """``layout.metrics`` (metrics.json, atomically)."""
    write_json(layout.metrics, ev.metrics)


def write_evaluation(ev: Evaluation, layout: Layout, figures: Sequence[str] = F.FIGURES) -> None:
    """Aligned volumes, figures, then metrics.json (last: its presence means all is done)."""
    write_aligned(ev, layout)
    write_figures(ev, layout, figures)
    write_metrics(ev, layout)
