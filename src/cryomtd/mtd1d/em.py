"""Approximate expectation-maximisation for 1-D MTD (docs/design.md §7).

The measurement is cut into ⌊n/L⌋ non-overlapping patches y_i ∈ ℝ^L, treated as
independent. Patch model: y_i = C R_s Z x + ε_i, with Z zero-padding x to length 2L, R_s
the circular shift by s ∈ {0, …, 2L−1} ((R_s z)[j] = z[(j − s) mod 2L]) and C keeping the
first L entries: s = 0 is the whole signal, s = L the empty patch, 1 ≤ s < L a copy
starting at s (its tail cut off), L < s < 2L the tail of a copy that started before the
patch. Unknowns: x and the prior ρ over the 2L shifts.

E-step (vectorised over patches in blocks, no loop over patches or shifts)::

    log w_is = log ρ_s − ‖y_i − T_s‖² / 2σ² − logsumexp_s(…),  T = templates (2L, L)
    ‖y_i − T_s‖² = ‖y_i‖² − 2 (Y Tᵀ)_is + ‖T_s‖²

M-step (diagonal): x[k] = Σ_{i,s} w_is y_i[(k+s) mod 2L] / Σ_{i,s} w_is over the (s, k)
with (k + s) mod 2L < L, computed from A = Wᵀ Y (2L, L); ρ_s = Σ_i w_is / #patches.
Stop when the relative change of the log-likelihood falls below ``tol``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cryomtd.io import InputError
from cryomtd.progress import progress
from cryomtd.seeding import rng

__all__ = ["EMResult", "fit_em", "patches", "templates", "shift_positions", "rho_from_gamma"]


@dataclass
class EMResult:
    """EM estimate ``x`` (L,), shift prior ``rho`` (2L,), log-likelihood per iteration."""

    x: np.ndarray
    rho: np.ndarray
    loglik: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    wall_time_s: float = 0.0

    @property
    def gamma(self) -> float:
        """Density implied by ρ: a copy starts in a patch with probability Σ_{s<L} ρ_s = γ."""
        L = self.x.size
        return float(self.rho[:L].sum())


def patches(y: np.ndarray | list[np.ndarray], L: int) -> np.ndarray:
    """Non-overlapping patches (P, L) of one measurement or of each segment in a list."""
    parts = [y] if isinstance(y, np.ndarray) else list(y)
    out = [np.asarray(p, float)[: (p.size // L) * L].reshape(-1, L) for p in parts]
    return np.concatenate(out) if out else np.zeros((0, L))


def shift_positions(L: int) -> tuple[np.ndarray, np.ndarray]:
    """pos (2L, L): patch index of x[k] under shift s, (k+s) mod 2L; inside (2L, L) bool."""
    s = np.arange(2 * L)[:, None]
    k = np.arange(L)[None, :]
    pos = (k + s) % (2 * L)
    return pos, pos < L


def templates(x: np.ndarray) -> np.ndarray:
    """T (2L, L): T[s] = C R_s Z x."""
    L = x.size
    z = np.concatenate((x, np.zeros(L)))
    j = np.arange(L)[None, :]
    s = np.arange(2 * L)[:, None]
    return z[(j - s) % (2 * L)]


def rho_from_gamma(L: int, gamma: float) -> np.ndarray:
    """Shift prior of a well-separated measurement of density γ: γ/L for each of the 2L−1
    partial/whole placements, the rest on the empty patch s = L."""
    g = float(np.clip(gamma, 1e-6, L / (2 * L - 1) * (1 - 1e-6)))
    rho = np.full(2 * L, g / L)
    rho[L] = 1.0 - (2 * L - 1) * g / L
    return rho


def fit_em(
    y: np.ndarray | list[np.ndarray],
    L: int,
    *,
    sigma: float,
    x0: np.ndarray | None = None,
    rho0: np.ndarray | None = None,
    seed: int = 0,
    iterations: int = 200,
    tol: float = 1e-6,
    block: int = 65536,
    progress_bar: bool | None = None,
) -> EMResult:
    """Approximate EM from ``x0`` (or a random start from ``rng(seed, "mtd1d-em", 0)``).

    ``y``: the measurement (n,) or a list of independent segments; ``sigma``: noise
    standard deviation; ``rho0``: initial shift prior (default uniform over the 2L
    shifts). ``loglik`` is the per-patch-average log-likelihood (nats).
    """
    if sigma <= 0:
        raise InputError(f"em sigma: expected > 0, got {sigma}")
    t0 = time.perf_counter()
    Y = patches(y, L)
    P = Y.shape[0]
    if P == 0:
        raise InputError(f"em: measurement shorter than one patch (L={L})")
    if x0 is None:
        x0 = rng(seed, "mtd1d-em", 0).standard_normal(L) * np.sqrt(max(np.mean(Y**2) - sigma**2, 1e-3))
    x = np.asarray(x0, float).copy()
    rho = np.full(2 * L, 1.0 / (2 * L)) if rho0 is None else np.asarray(rho0, float).copy()
    pos, inside = shift_positions(L)
    ynorm = np.einsum("ij,ij->i", Y, Y)  # ‖y_i‖²
    const = -0.5 * L * np.log(2 * np.pi * sigma**2)
    res = EMResult(x=x, rho=rho)
    prev = None
    for it in progress(range(iterations), desc="mtd1d EM", enable=progress_bar):
        T = templates(x)
        tnorm = np.einsum("ij,ij->i", T, T)
        logrho = np.log(np.maximum(rho, 1e-300))
        A = np.zeros((2 * L, L))
        wsum = np.zeros(2 * L)
        ll = 0.0
        for b in range(0, P, block):
            Yb = Y[b : b + block]
            # log w up to the row constant −‖y_i‖²/2σ² (added back to the log-likelihood below)
            W = Yb @ (T.T / sigma**2)
            W += logrho - tnorm / (2 * sigma**2)
            mx = W.max(axis=1, keepdims=True)
            W -= mx
            np.exp(W, out=W)
            tot = W.sum(axis=1, keepdims=True)
            ll += float(np.log(tot).sum() + mx.sum()) - float(ynorm[b : b + block].sum()) / (2 * sigma**2)
            W /= tot
            A += W.T @ Yb
            wsum += W.sum(axis=0)
        ll = ll / P + const
        res.loglik.append(ll)
        num = np.where(inside, np.take_along_axis(A, np.where(inside, pos, 0), axis=1), 0.0).sum(axis=0)
        den = (inside * wsum[:, None]).sum(axis=0)
        x = np.where(den > 0, num / np.maximum(den, 1e-300), x)
        rho = wsum / P
        res.iterations = it + 1
        if prev is not None and abs(ll - prev) <= tol * abs(prev):
            res.converged = True
            break
        prev = ll
    res.x, res.rho = x, rho
    res.wall_time_s = time.perf_counter() - t0
    return res
