"""1-D evaluation: relative errors and figures (truth vs estimates, EM log-likelihood)."""

from __future__ import annotations

import os

import numpy as np

from cryomtd.io import atomic_path

__all__ = ["relative_error", "plot_overlay", "plot_loglik"]


def relative_error(estimate: np.ndarray | float, truth: np.ndarray | float) -> float:
    """‖estimate − truth‖₂ / ‖truth‖₂ (x is identifiable from a³: no shift or sign to align)."""
    e, t = np.asarray(estimate, float), np.asarray(truth, float)
    return float(np.linalg.norm(e - t) / np.linalg.norm(t))


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
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("log-likelihood per patch (nats)")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
