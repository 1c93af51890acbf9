"""1-D evaluation: relative errors and figures (truth vs estimates with their residuals, EM log-likelihood)."""

from __future__ import annotations

import os

import numpy as np

from cryomtd.io import atomic_path

__all__ = [
    "align_shift",
    "loglik_figure",
    "overlay_figure",
    "plot_loglik",
    "plot_overlay",
    "relative_error",
    "shift_zero_fill",
]


def shift_zero_fill(x: np.ndarray, d: int) -> np.ndarray:
    """x moved by d samples inside its length-L window, zeros filling in (not circular)."""
    out = np.zeros_like(x)
    L = x.size
    if d >= 0:
        out[d:] = x[: L - d]
    else:
        out[: L + d] = x[-d:]
    return out


def align_shift(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The zero-filled shift of ``estimate`` closest to ``truth`` (see :func:`relative_error`)."""
    e, t = np.asarray(estimate, float), np.asarray(truth, float)
    cands = [shift_zero_fill(e, d) for d in range(-e.size + 1, e.size)]
    return cands[int(np.argmin([np.linalg.norm(c - t) for c in cands]))]


def relative_error(estimate: np.ndarray | float, truth: np.ndarray | float, *, align: bool = True) -> float:
    """‖estimate − truth‖₂ / ‖truth‖₂, minimised over zero-filled shifts of the estimate when
    ``align`` (and for arrays).

    a³ fixes the sign and the reflection of x, but a signal with zeros at its ends (the
    published step: 11 ones, 10 zeros) and its zero-filled shifts inside the length-L window
    have identical moments and likelihood, so they are compared modulo such shifts. For a
    signal with non-zero end samples the minimum is at d = 0 and this is the plain error.
    """
    e, t = np.asarray(estimate, float), np.asarray(truth, float)
    if not align or e.ndim == 0:
        return float(np.linalg.norm(e - t) / np.linalg.norm(t))
    L = e.size
    errs = [np.linalg.norm(shift_zero_fill(e, d) - t) for d in range(-L + 1, L)]
    return float(min(errs) / np.linalg.norm(t))


_STYLES = (
    {"color": "C0", "marker": "o", "ls": "--"},
    {"color": "C3", "marker": "s", "ls": "-"},
    {"color": "C2", "marker": "^", "ls": ":"},
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def overlay_figure(truth: np.ndarray, estimates: dict[str, np.ndarray], title: str = ""):
    """Figure of the true signal and the estimates (top) and of each estimate − truth (bottom).

    The estimates are drawn as given (callers pass them at the shift
    :func:`relative_error` uses, :func:`align_shift`). The residual panel separates
    curves that coincide with the truth in the top panel. Returns the matplotlib Figure.
    """
    plt = _pyplot()
    truth = np.asarray(truth, dtype=np.float64)
    fig, (ax, res) = plt.subplots(2, 1, figsize=(6.2, 5.0), sharex=True, gridspec_kw={"height_ratios": (3, 2)})
    k = np.arange(truth.size)
    ax.plot(k, truth, "k-", lw=2.5, label="truth")
    res.axhline(0.0, color="k", lw=1.0)
    for (name, est), style in zip(estimates.items(), _STYLES * (1 + len(estimates) // len(_STYLES))):
        est = np.asarray(est, dtype=np.float64)
        ax.plot(k, est, ms=4, label=name, **style)
        res.plot(k, est - truth, ms=3.5, label=name, **style)
    ax.set_ylabel("x")
    ax.set_title(title)
    ax.legend(fontsize=8)
    res.set_xlabel("sample")
    res.xaxis.get_major_locator().set_params(integer=True)
    res.set_ylabel("estimate − truth")
    res.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_overlay(path: str | os.PathLike, truth: np.ndarray, estimates: dict[str, np.ndarray], title: str = "") -> None:
    """PNG of :func:`overlay_figure`, written atomically."""
    _save(overlay_figure(truth, estimates, title), path)


def loglik_figure(loglik: list[float], title: str = ""):
    """Figure of the EM log-likelihood (per patch) against the iteration. Returns the matplotlib Figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(loglik) + 1), loglik, "C3.-")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("log-likelihood per patch (nats)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_loglik(path: str | os.PathLike, loglik: list[float], title: str = "") -> None:
    """PNG of :func:`loglik_figure`, written atomically."""
    _save(loglik_figure(loglik, title), path)
