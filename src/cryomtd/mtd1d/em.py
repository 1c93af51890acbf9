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

Arbitrary spacing (``spacing="arbitrary"``, Lan, Bendory, Boumal, Singer 2020): copies
may touch, so a patch can hold the tail of one copy and the head of the next. The patch
configurations are then the 2L above plus every pair (tail of a copy that started k
samples before the patch, k = 1 … L−1; head of a copy starting at t ∈ [L−k, L−1]),
L(L−1)/2 more, each with its own prior ρ_c (the shift-pair prior, learned). Every
configuration's template is linear in x, T_c = M_c x with M_c a 0/1 selection whose
columns are orthogonal (copies do not overlap), so the M-step stays diagonal::

    x[k] = Σ_c (M_cᵀ A_c)[k] / Σ_c w_c (M_cᵀ M_c)[k, k],   A = Wᵀ Y, w_c = Σ_i w_ic

(both sums are one ``bincount`` over the configurations' index maps), and EM's
log-likelihood never decreases. The separated model is the same code with the 2L shifts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cryomtd.io import InputError
from cryomtd.mtd1d.settings import SPACING
from cryomtd.progress import progress
from cryomtd.seeding import rng

__all__ = ["EMResult", "configurations", "fit_em", "patches", "templates", "shift_positions", "rho_from_gamma"]

SPACINGS = ("separated", "arbitrary")


@dataclass
class EMResult:
    """EM estimate ``x`` (L,), shift prior ``rho`` (2L,), log-likelihood per iteration."""

    x: np.ndarray
    rho: np.ndarray
    loglik: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    wall_time_s: float = 0.0
    spacing: str = SPACING

    @property
    def gamma(self) -> float:
        """Density implied by ρ: the expected number of copies starting in a patch,
        Σ ρ_c over the configurations with a copy starting inside (s < L when separated) = γ."""
        return float(self.rho[configurations(self.x.size, self.spacing)[2]].sum())


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


def configurations(L: int, spacing: str = SPACING) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch configurations as index maps into z = [x, 0] (index L is the zero):
    (ia (C, L), ib (C, L), starts (C,) bool); the template of configuration c is
    z[ia[c]] + z[ib[c]], ``starts[c]`` whether a copy starts inside the patch.

    The first 2L rows are the shifts s of :func:`templates` (ib all zero); ``"arbitrary"``
    appends the L(L−1)/2 pairs (tail of a copy started k before the patch, head of one
    starting at t ∈ [L−k, L−1]), ordered by k then t.
    """
    if spacing not in SPACINGS:
        raise InputError(f"spacing: expected one of {', '.join(SPACINGS)}, got {spacing!r}")
    j = np.arange(L)
    s = np.arange(2 * L)[:, None]
    ia = (j[None, :] - s) % (2 * L)
    ia = np.where(ia < L, ia, L)
    ib = np.full((2 * L, L), L)
    starts = np.arange(2 * L) < L
    if spacing == "arbitrary" and L > 1:
        k, t = np.nonzero(np.arange(L)[None, :] >= (L - np.arange(1, L))[:, None])  # t ≥ L − k
        k = k + 1
        a = j[None, :] + k[:, None]
        b = j[None, :] - t[:, None]
        ia = np.vstack((ia, np.where(a < L, a, L)))
        ib = np.vstack((ib, np.where(b >= 0, b, L)))
        starts = np.concatenate((starts, np.ones(k.size, dtype=bool)))
    return ia, ib, starts


def rho_from_gamma(L: int, gamma: float, spacing: str = SPACING) -> np.ndarray:
    """Starting prior for density γ. Separated: γ/L for each of the 2L−1 partial/whole
    placements, the rest on the empty patch s = L. Arbitrary: the same, plus γ²/2 spread
    evenly over the pair configurations (scaled down if the total would exceed 1)."""
    if spacing == "separated":
        g = float(np.clip(gamma, 1e-6, L / (2 * L - 1) * (1 - 1e-6)))
        rho = np.full(2 * L, g / L)
        rho[L] = 1.0 - (2 * L - 1) * g / L
        return rho
    C = configurations(L, spacing)[0].shape[0]
    g = float(np.clip(gamma, 1e-6, 1.0))
    rho = np.full(C, g / L)
    rho[2 * L :] = 0.5 * g**2 / max(C - 2 * L, 1)
    rho[L] = 0.0
    total = rho.sum()
    if total > 1 - 1e-3:
        rho *= (1 - 1e-3) / total
    rho[L] = 1.0 - rho.sum()
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
    spacing: str = SPACING,
) -> EMResult:
    """Approximate EM from ``x0`` (or a random start from ``rng(seed, "mtd1d-em", 0)``).

    ``y``: the measurement (n,) or a list of independent segments; ``sigma``: noise
    standard deviation; ``rho0``: initial shift prior (default uniform over the 2L
    shifts). ``loglik`` is the per-patch-average log-likelihood (nats). ``spacing``:
    ``"separated"`` (2L configurations) or ``"arbitrary"`` (also pairs of copies in a
    patch; ``rho`` then has 2L + L(L−1)/2 entries, see :func:`configurations`).
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
    ia, ib, _ = configurations(L, spacing)
    C = ia.shape[0]
    rho = np.full(C, 1.0 / C) if rho0 is None else np.asarray(rho0, float).copy()
    if rho.shape != (C,):
        raise InputError(f"em: rho0 has {rho.size} entries, the {spacing} model has {C} configurations")
    ia_f, ib_f = ia.ravel(), ib.ravel()
    # how often each x[k] appears in each configuration (M_cᵀM_c diagonal), (C, L+1)
    counts = np.zeros((C, L + 1))
    np.add.at(counts, (np.repeat(np.arange(C), L), ia_f), 1.0)
    np.add.at(counts, (np.repeat(np.arange(C), L), ib_f), 1.0)
    counts = counts[:, :L]
    ynorm = np.einsum("ij,ij->i", Y, Y)  # ‖y_i‖²
    const = -0.5 * L * np.log(2 * np.pi * sigma**2)
    res = EMResult(x=x, rho=rho, spacing=spacing)
    prev = None
    for it in progress(range(iterations), desc="mtd1d EM", enable=progress_bar):
        z = np.concatenate((x, [0.0]))
        T = z[ia] + z[ib]
        tnorm = np.einsum("ij,ij->i", T, T)
        logrho = np.log(np.maximum(rho, 1e-300))
        A = np.zeros((C, L))
        wsum = np.zeros(C)
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
        num = (
            np.bincount(ia_f, weights=A.ravel(), minlength=L + 1)
            + np.bincount(ib_f, weights=A.ravel(), minlength=L + 1)
        )[:L]
        den = wsum @ counts
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
