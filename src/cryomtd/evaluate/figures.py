"""Evaluation figures (matplotlib, PNG, written atomically).

All volume panels of one figure share one colour scale (the range of the truth and of
every aligned estimate), so intensities compare across columns. Volumes are ``[z, y, x]``;
"central" means index ``L//2``; a projection along an axis is the plain sum over it (the
projection convention of docs/conventions.md for the z axis).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cryomtd.io import atomic_path  # noqa: E402

__all__ = ["plot_fsc", "plot_volume_panels", "plot_convergence", "save_figure", "FIGURES"]

FIGURES = ("fsc", "slices", "projections", "mip", "convergence")
_AXES = (("z", 0), ("y", 1), ("x", 2))


def save_figure(fig: "plt.Figure", path: str | os.PathLike, dpi: int = 110) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def plot_fsc(curves: Mapping[str, np.ndarray], frequencies: np.ndarray, thresholds: Sequence[float] = (0.5, 0.143),
             *, voxel_size: float = 1.0, title: str = "") -> "plt.Figure":
    """FSC of each estimator vs spatial frequency (1/Å, or 1/voxel), with the threshold lines."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, c in curves.items():
        ax.plot(frequencies, c, marker="o", ms=3, label=name)
    for t in thresholds:
        ax.axhline(t, color="grey", lw=0.8, ls="--")
        ax.text(frequencies[-1], t, f" {t:g}", va="center", fontsize=8, color="grey")
    ax.set_xlabel("spatial frequency (1/Å)" if voxel_size != 1.0 else "spatial frequency (1/voxel)")
    ax.set_ylabel("FSC with truth")
    ax.set_ylim(min(-0.1, min((float(np.min(c)) for c in curves.values()), default=0.0)), 1.05)
    ax.set_title(title)
    if curves:
        ax.legend(frameon=False)
    ax.grid(alpha=0.3)
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


def plot_volume_panels(volumes: Mapping[str, np.ndarray], kind: str, *, title: str = "") -> "plt.Figure":
    """Rows: volumes (truth first); columns: along z, y, x. ``kind``: slices | projections | mip."""
    names = list(volumes)
    panels = {n: [_panel(np.asarray(volumes[n]), kind, ax) for _, ax in _AXES] for n in names}
    allv = np.concatenate([p.ravel() for ps in panels.values() for p in ps])
    vmin, vmax = float(allv.min()), float(allv.max())
    fig, axes = plt.subplots(len(names), 3, figsize=(7.5, 2.4 * len(names) + 0.4), squeeze=False)
    im = None
    for i, n in enumerate(names):
        for j, (lab, _) in enumerate(_AXES):
            a = axes[i, j]
            im = a.imshow(panels[n][j], cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if i == 0:
                a.set_title({"slices": f"central slice, {lab} = L//2", "projections": f"projection along {lab}",
                             "mip": f"max intensity along {lab}"}[kind], fontsize=9)
            if j == 0:
                a.set_ylabel(n)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="density (shared scale)")
    if title:
        fig.suptitle(title)
    return fig


def plot_convergence(traces: Mapping[str, Mapping[str, Any]], *, title: str = "") -> "plt.Figure":
    """One panel per estimator: its trace (LS cost on a log axis, EM log-likelihood) per iteration."""
    names = list(traces)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.5 * max(1, len(names)), 3.4), squeeze=False)
    if not names:
        axes[0, 0].text(0.5, 0.5, "no convergence trace recorded", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for a, n in zip(axes[0], names):
        vals = np.asarray(traces[n]["values"], dtype=np.float64)
        label = traces[n].get("label", "")
        a.plot(np.arange(1, vals.size + 1), vals, marker=".", ms=3)
        if "cost" in label and vals.size and np.all(vals > 0):
            a.set_yscale("log")
        a.set_xlabel("iteration")
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        a.set_ylabel(label)
        a.set_title(n)
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
