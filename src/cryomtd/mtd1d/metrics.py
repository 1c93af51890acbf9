"""1-D evaluation: relative errors and figures (truth vs estimates, EM log-likelihood)."""

from __future__ import annotations

import os

import numpy as np

from cryomtd.io import atomic_path

__all__ = ["relative_error", "shift_zero_fill", "align_shift", "plot_overlay", "plot_loglik"]


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


def plot_overlay(path: str | os.PathLike, truth: np.ndarray, estimates: dict[str, np.ndarray],
                 title: str = "") -> None:
    """PNG overlaying the true signal and the estimates (one line each), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    k = np.arange(np.asarray(truth).size)
    ax.plot(k, truth, "k-", lw=2.5, label="truth")
    for (name, est), style in zip(estimates.items(), ["C0o--", "C3s-", "C2^:"]):
        ax.plot(k, est, style, ms=4, label=name)
    ax.set_xlabel("sample")
    ax.set_ylabel("x")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_loglik(path: str | os.PathLike, loglik: list[float], title: str = "") -> None:
    """PNG of the EM log-likelihood (per patch) against the iteration, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(loglik) + 1), loglik, "C3.-")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("log-likelihood per patch (nats)")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
