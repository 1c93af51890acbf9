"""Evaluation figures (matplotlib, PNG, written atomically).

All volume panels of one figure share one colour scale (the range of the truth or
reference and of every aligned estimate, or of the half-data estimates), so intensities
compare across panels. Volumes are ``[z, y, x]``; "central" means index ``L//2``; a
projection along an axis is the plain sum over it (the projection convention of
docs/conventions.md for the z axis). Images are drawn with ``origin="lower"``: the first
remaining volume axis runs up, the second to the right.

The figure functions return the :class:`matplotlib.figure.Figure` (tests read its
artists); :func:`save_figure` writes and closes it.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from cryomtd.io import atomic_path

__all__ = [
    "CRITERION",
    "FIGURES",
    "HALF_MAP",
    "ConvergenceTrace",
    "plot_convergence",
    "plot_fsc",
    "plot_volume_panels",
    "save_figure",
    "scale_bar_length",
    "threshold_label",
]

FIGURES = ("fsc", "slices", "projections", "mip", "convergence")
#: FSC value read as the resolution criterion against a known truth.
CRITERION = 0.5
#: The half-map criterion (two independent half reconstructions), drawn for reference.
HALF_MAP = 0.143
_AXES = (("z", 0), ("y", 1), ("x", 2))
#: The image axes (vertical, horizontal) left after taking a panel along z, y, x of a [z, y, x] volume.
_IMAGE_AXES = {"z": ("y", "x"), "y": ("z", "x"), "x": ("z", "y")}
_SCALE_BAR_COLOR = "gold"  # readable on black and on white


@dataclass(frozen=True)
class ConvergenceTrace:
    """One estimator's per-iteration trace: ``values`` (one per iteration) described by ``label``.

    ``stage_ends``: number of entries at the end of each stage (frequency-marching stages,
    the refinement of a restart); ``stage_labels``: a name per stage (may be empty);
    ``note``: a remark drawn in the panel (e.g. that a stochastic EM evaluates each value on
    a subset of patches).
    """

    label: str
    values: np.ndarray
    stage_ends: tuple[int, ...] = ()
    stage_labels: tuple[str, ...] = ()
    note: str = ""


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def threshold_label(t: float, against: str = "truth", half_maps: bool = False) -> str:
    """The text drawn on the FSC threshold line ``t``: 0.5 is the criterion against the
    ``against`` map (truth or reference); 0.143 the half-map criterion, "for reference" when
    no half-map curve is drawn."""
    if math.isclose(t, CRITERION):
        return f"{t:g}: criterion against the {against}"
    if math.isclose(t, HALF_MAP):
        return f"{t:g}: half-map criterion" + ("" if half_maps else " (for reference)")
    return f"{t:g}"


def _length_unit(voxel_size: float | None) -> str:
    return "voxels" if voxel_size is None or voxel_size == 1.0 else "Å"


def plot_fsc(
    curves: Mapping[str, np.ndarray],
    frequencies: np.ndarray,
    thresholds: Sequence[float] = (CRITERION, HALF_MAP),
    *,
    voxel_size: float = 1.0,
    title: str = "",
    resolutions: Mapping[str, tuple[float, bool]] | None = None,
    criteria: Mapping[str, float] | None = None,
    linestyles: Mapping[str, str] | None = None,
    main: Sequence[float] = (CRITERION,),
    labels: Mapping[float, str] | None = None,
    ylabel: str = "FSC with the truth",
) -> plt.Figure:
    """FSC of each estimator vs spatial frequency (1/Å, or 1/voxel when ``voxel_size`` is 1).

    The threshold lines carry their labels inside the axes (left end, just above the line;
    ``labels`` overrides :func:`threshold_label`); those in ``main`` (default 0.5, the
    criterion against a known truth) are drawn solid, the others dashed.
    ``resolutions`` (curve → (resolution, bound)) adds the value to the legend, read at
    ``criteria[curve]`` (default 0.5; 0.143 for half-map curves) ("bound": the curve never
    falls below it, the value is the last shell's). ``linestyles``: per curve (default solid).
    The legend sits outside the axes, to the right.
    """
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    unit = _length_unit(voxel_size)
    for name, c in curves.items():
        label = name
        crit = (criteria or {}).get(name, CRITERION)
        if resolutions and name in resolutions:
            r, bound = resolutions[name]
            label = (
                f"{name}: above {crit:g} to the last shell ({r:.3g} {unit})"
                if bound
                else f"{name}: {r:.3g} {unit} at FSC {crit:g}"
            )
        ax.plot(frequencies, c, marker="o", ms=3, ls=(linestyles or {}).get(name, "-"), label=label)
    trans = ax.get_yaxis_transform()  # x in axes fraction, y in data
    for t in thresholds:
        is_main = any(math.isclose(t, m) for m in main)
        ax.axhline(
            t, color="0.25" if is_main else "0.55", lw=1.0 if is_main else 0.8, ls="-" if is_main else "--", zorder=0
        )
        text = next((v for k, v in (labels or {}).items() if math.isclose(k, t)), None) or threshold_label(t)
        ax.text(
            0.015,
            t,
            text,
            transform=trans,
            ha="left",
            va="bottom",
            fontsize=8,
            color="0.2" if is_main else "0.45",
            gid=f"threshold-{t:g}",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    ax.set_xlabel("spatial frequency (1/Å)" if unit == "Å" else "spatial frequency (1/voxel)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(min(-0.1, min((float(np.min(c)) for c in curves.values()), default=0.0)), 1.05)
    ax.set_xlim(0, float(np.max(frequencies)) * 1.02 if len(frequencies) else 1)
    ax.set_title(title)
    if curves:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _panel(vol: np.ndarray, kind: str, axis: int) -> np.ndarray:
    L = vol.shape[axis]
    if kind == "slices":
        return np.take(vol, L // 2, axis=axis)
    if kind == "projections":
        return vol.sum(axis=axis)
    if kind == "mip":
        return vol.max(axis=axis)
    raise ValueError(f"unknown panel kind {kind!r}")


def scale_bar_length(box: float) -> float:
    """A round length (1, 2 or 5 × 10^k) of at most 30 % of ``box`` (the image side, in Å or voxels)."""
    target = 0.3 * float(box)
    if not target > 0:
        raise ValueError(f"box must be positive, got {box}")
    k = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10.0**k <= target:
            return m * 10.0**k
    return 10.0**k


def _add_scale_bar(ax: plt.Axes, n_pixels: int, voxel_size: float | None) -> AnchoredSizeBar:
    vs = 1.0 if voxel_size is None else float(voxel_size)
    unit = _length_unit(voxel_size)
    length = scale_bar_length(n_pixels * vs)
    bar = AnchoredSizeBar(
        ax.transData,
        length / vs,
        f"{length:g} {unit}",
        loc="lower left",
        pad=0.3,
        sep=2,
        color=_SCALE_BAR_COLOR,
        frameon=False,
        size_vertical=max(0.25, n_pixels / 60),
        fontproperties={"size": 7},
    )
    bar.set_gid("scale-bar")
    ax.add_artist(bar)
    return bar


def _panel_title(name: str, kind: str, axis: str, L: int) -> str:
    what = {"slices": f"slice {axis} = {L // 2}", "projections": f"sum along {axis}", "mip": f"max along {axis}"}[kind]
    return f"{name}: {what}" if len(name) <= 12 else f"{name}:\n{what}"  # long names on a line of their own


def plot_volume_panels(
    volumes: Mapping[str, np.ndarray], kind: str, *, voxel_size: float | None = None, title: str = ""
) -> plt.Figure:
    """Rows: volumes (the truth or reference first, or half 1 then half 2); columns: along z, y,
    x. ``kind``: slices | projections | mip.

    Every panel is titled with its volume and its cut (``"lsq: slice z = 5"``) and its image
    axes are named; the first panel of each row carries a scale bar (Å with ``voxel_size``,
    else voxels).
    """
    if kind not in ("slices", "projections", "mip"):
        raise ValueError(f"unknown panel kind {kind!r}")
    names = list(volumes)
    panels = {n: [_panel(np.asarray(volumes[n]), kind, ax) for _, ax in _AXES] for n in names}
    allv = np.concatenate([p.ravel() for ps in panels.values() for p in ps])
    vmin, vmax = float(allv.min()), float(allv.max())
    fig, axes = plt.subplots(len(names), 3, figsize=(8.0, 2.5 * len(names) + 0.5), squeeze=False)
    im = None
    for i, n in enumerate(names):
        L = int(np.asarray(volumes[n]).shape[0])
        for j, (lab, _) in enumerate(_AXES):
            a = axes[i, j]
            img = panels[n][j]
            im = a.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            up, right = _IMAGE_AXES[lab]
            a.set_xlabel(right, fontsize=7, labelpad=1)
            a.set_ylabel(up, fontsize=7, labelpad=1)
            a.set_title(_panel_title(n, kind, lab, L), fontsize=8.5)
            if j == 0:
                _add_scale_bar(a, img.shape[1], voxel_size)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="density (one scale for all panels)")
    if title:
        fig.suptitle(title)
    return fig


def _stage_bounds(trace: ConvergenceTrace) -> list[int]:
    n = np.asarray(trace.values).size
    return [int(e) for e in trace.stage_ends if 0 < int(e) < n]


def plot_convergence(traces: Mapping[str, ConvergenceTrace], *, title: str = "") -> plt.Figure:
    """One panel per estimator: its trace per iteration (a positive cost on a log axis).

    Stage boundaries recorded in the trace are dashed vertical lines between the last
    iteration of a stage and the first of the next, labelled with the stage names; a
    trace's ``note`` is written under its panel.
    """
    names = list(traces)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.8 * max(1, len(names)), 3.6), squeeze=False)
    if not names:
        axes[0, 0].text(0.5, 0.5, "no convergence trace recorded", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for a, n in zip(axes[0], names):
        tr = traces[n]
        vals = np.asarray(tr.values, dtype=np.float64)
        a.plot(np.arange(1, vals.size + 1), vals, marker=".", ms=3)
        if "cost" in tr.label and vals.size and np.all(vals > 0):
            a.set_yscale("log")
        bounds = _stage_bounds(tr)
        for b in bounds:
            a.axvline(b + 0.5, color="0.5", ls="--", lw=0.8, gid="stage-boundary")
        if tr.stage_labels:
            starts = [0, *bounds]
            stops = [*bounds, vals.size]
            for lab, s0, s1 in zip(tr.stage_labels, starts, stops):
                a.text(
                    (s0 + s1) / 2 + 0.5,
                    0.97,
                    lab,
                    transform=a.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=7,
                    color="0.35",
                )
        if tr.note:  # under the x label (offset in points, clear of tick labels and label): never over the curve
            a.annotate(
                textwrap.fill(tr.note, 64),
                xy=(0.0, 0.0),
                xycoords="axes fraction",
                xytext=(0, -38),
                textcoords="offset points",
                ha="left",
                va="top",
                fontsize=7.5,
                color="0.25",
                gid="trace-note",
            )
        a.set_xlabel("iteration")
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        a.set_ylabel(tr.label)
        a.set_title(n)
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
