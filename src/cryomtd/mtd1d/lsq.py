"""Least-squares inversion of the 1-D moment map with pymanopt (Euclidean(L) × Positive).

Cost over the non-redundant entries (a2: ℓ = 0…L−1; a3: ℓ1 ≤ ℓ2)::

    f(x, γ) = w1 (a1(x,γ) − d1)² + w2 Σ (a2(x,γ) − d2)² + w3 Σ (a3(x,γ) − d3)²

with the model of :func:`cryomtd.mtd1d.moments.model_moments`. Weights: each order's
squared error is divided by its number of entries and by the squared norm of its data
(w_k = 1 / (#entries_k · mean(d_k²))), so the three orders contribute on the same scale
whatever the signal amplitude (a1's mean square is floored at 1e-6 · mean(a2²) for
zero-mean signals).

Noise bias: with ``sigma`` given, the bias σ²δ[ℓ] and σ² a1 (δ[ℓ1]+δ[ℓ2]+δ[ℓ1−ℓ2]) is
part of the model. With ``sigma=None`` the biased entries (a2[0]; a3 with ℓ1 = 0,
ℓ2 = 0 or ℓ1 = ℓ2) are dropped from the cost, so σ is never needed; a1 is unbiased.

Optimiser: pymanopt ``TrustRegions`` with the analytic gradient 2Jᵀr of the weighted
residuals r and the Gauss–Newton Hessian 2JᵀJ (exact at zero residual, so convergence is
quadratic on exact moments); :func:`lsq_cost_terms` is the same cost written with
``autograd.numpy``, kept as the independent reference the tests differentiate. Each
restart starts from x₀ ~ N(0, 1) from ``rng(seed, "mtd1d-lsq", restart)``,
γ₀ drawn log-uniformly in [0.01, 0.5], and x₀ rescaled so that γ₀‖x₀‖²/L matches the
(debiased, when σ is known) a2[0] estimate. Restarts are independent (one job each in the
workflow); the lowest cost wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cryomtd.io import InputError
from cryomtd.mtd1d.moments import Moments1D, model_moments
from cryomtd.seeding import rng

__all__ = ["LSQResult", "fit_lsq", "fit_lsq_restart", "fit_lsq_two_stage", "lsq_cost_terms", "pick_best"]


@dataclass
class LSQResult:
    """Least-squares estimate: ``x`` (L,), density ``gamma``, final ``cost``, restart index."""

    x: np.ndarray
    gamma: float
    cost: float
    restart: int = 0
    iterations: int = 0
    wall_time_s: float = 0.0
    costs: list[float] = field(default_factory=list)  # final cost of every restart run


def _masks(L: int, sigma_known: bool) -> tuple[np.ndarray, np.ndarray]:
    m2 = np.ones(L, dtype=bool)
    l1, l2 = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    m3 = l1 <= l2
    if not sigma_known:
        m2[0] = False
        m3 &= (l1 != 0) & (l2 != 0) & (l1 != l2)
    return m2, m3


def _weights(d1: float, d2: np.ndarray, d3: np.ndarray, m2: np.ndarray, m3: np.ndarray) -> tuple[float, float, float]:
    """w_k = 1 / (#entries_k · mean square of the kept data of order k).

    a1 of a zero-mean signal is ~0 (pure sampling noise), so its mean square is floored at
    1e-6 · mean(a2²), in the units of a2 (a floor that only acts when |a1| is negligible).
    """
    tiny = 1e-300
    s2 = max(float(np.mean(d2[m2] ** 2)), tiny)
    w1 = 1.0 / max(d1**2, 1e-6 * s2)
    w2 = 1.0 / (m2.sum() * s2)
    w3 = 1.0 / (m3.sum() * max(float(np.mean(d3[m3] ** 2)), tiny))
    return w1, w2, w3


def _data_masks_weights(moments: Moments1D, L: int, sigma: float | None):
    """Data (a1, a2[:L], a3[:L, :L]), the masks of the kept entries and the per-order weights."""
    d1, d2, d3 = moments.a1, moments.a2[:L], moments.a3[:L, :L]
    m2, m3 = _masks(L, sigma is not None)
    if not m3.any():
        raise InputError(f"L={L} too small to fit without sigma (no unbiased a3 entries)")
    return d1, d2, d3, m2, m3, _weights(d1, d2, d3, m2, m3)


def lsq_cost_terms(moments: Moments1D, L: int, sigma: float | None):
    """(cost function over (x, γ) with ``autograd.numpy``, masks, weights) for ``moments``."""
    import autograd.numpy as anp  # reference implementation only (tests); the optimiser is analytic

    if moments.L < L:
        raise InputError(f"moments have window {moments.L}, smaller than the signal length L={L}")
    d1, d2, d3, m2, m3, (w1, w2, w3) = _data_masks_weights(moments, L, sigma)
    s = 0.0 if sigma is None else float(sigma)
    i2 = np.flatnonzero(m2)
    i3 = np.flatnonzero(m3.ravel())
    d2s, d3s = d2[i2], d3.ravel()[i3]

    def cost(x, g):
        gamma = anp.sum(g)
        a1, a2, a3 = model_moments(x, gamma, s, xp=anp)
        r1 = a1 - d1
        r2 = a2[i2] - d2s
        r3 = anp.reshape(a3, (-1,))[i3] - d3s
        return w1 * r1**2 + w2 * anp.sum(r2**2) + w3 * anp.sum(r3**2)

    return cost, (m2, m3), (w1, w2, w3)


class _Residuals:
    """Weighted residuals r(x, γ) of the kept moment entries and their Jacobian (analytic).

    r = [√w1 (A1 − d1), √w2 (A2[E2] − d2), √w3 (A3[E3] − d3)], f = ‖r‖². With xp the
    signal padded by L zeros on both sides (xp[L + j] = x[j]):
    ∂c2[ℓ]/∂x_j = x[j+ℓ] + x[j−ℓ];
    ∂c3[p,q]/∂x_j = x[j+p]x[j+q] + x[j−p]x[j−p+q] + x[j−q]x[j−q+p].
    """

    def __init__(self, moments, L, sigma):
        d1, d2, d3, m2, m3, self.w = _data_masks_weights(moments, L, sigma)
        self.L, self.s2 = L, (0.0 if sigma is None else float(sigma)) ** 2
        self.i2 = np.flatnonzero(m2)
        p, q = np.nonzero(m3)
        self.p, self.q = p, q
        self.d = np.concatenate(([d1], d2[self.i2], d3[p, q]))
        self.sw = np.sqrt(np.concatenate(([self.w[0]], np.full(self.i2.size, self.w[1]), np.full(p.size, self.w[2]))))
        self.b2 = (self.i2 == 0).astype(float)  # σ² δ[ℓ]
        self.b3 = (p == 0).astype(float) + (q == 0) + (p == q)  # times σ² A1
        j = np.arange(L)
        self.j = j
        l = self.i2
        self.c2_plus, self.c2_minus = L + j[None, :] + l[:, None], L + j[None, :] - l[:, None]
        P, Q, J = p[:, None], q[:, None], j[None, :]
        self.c3_idx = [(L + J + P, L + J + Q), (L + J - P, L + J - P + Q), (L + J - Q, L + J - Q + P)]

    def model(self, x: np.ndarray, g: float):
        L = self.L
        xp = np.concatenate((np.zeros(L), x, np.zeros(2 * L)))
        S = x.sum()
        c2 = xp[self.c2_plus] @ x
        (a, b) = self.c3_idx[0]
        c3 = (xp[a] * xp[b]) @ x
        return xp, S, c2, c3

    def residual_and_jacobian(self, x: np.ndarray, g: float) -> tuple[np.ndarray, np.ndarray]:
        """r (K,) and J = ∂r/∂(x, γ) (K, L+1)."""
        L = self.L
        xp, S, c2, c3 = self.model(x, g)
        A1 = g * S / L
        A2 = g * c2 / L + self.s2 * self.b2
        A3 = g * c3 / L + self.s2 * A1 * self.b3
        r = (np.concatenate(([A1], A2, A3)) - self.d) * self.sw
        dc2 = xp[self.c2_plus] + xp[self.c2_minus]
        dc3 = sum(xp[a] * xp[b] for a, b in self.c3_idx)
        Jx = np.vstack((np.full((1, L), g / L), g / L * dc2, g / L * dc3 + (self.s2 * g / L) * self.b3[:, None]))
        Jg = np.concatenate(([S / L], c2 / L, c3 / L + self.s2 * S / L * self.b3))
        J = np.hstack((Jx, Jg[:, None])) * self.sw[:, None]
        return r, J


def fit_lsq_restart(
    moments: Moments1D,
    L: int,
    *,
    sigma: float | None = None,
    seed: int = 0,
    restart: int = 0,
    max_iterations: int = 200,
    x0: np.ndarray | None = None,
    gamma0: float | None = None,
) -> LSQResult:
    """One trust-region run from the initial point of ``restart`` (or from ``x0``, ``gamma0``)."""
    import pymanopt  # deferred: pymanopt imports torch (seconds), only LS jobs need it
    from pymanopt.manifolds import Euclidean, Positive, Product

    t0 = time.perf_counter()
    if moments.L < L:
        raise InputError(f"moments have window {moments.L}, smaller than the signal length L={L}")
    res_ = _Residuals(moments, L, sigma)
    manifold = Product([Euclidean(L), Positive(1, 1)])
    cache: dict = {}

    def rj(x, g):
        key = (x.tobytes(), float(np.asarray(g).ravel()[0]))
        if cache.get("key") != key:
            cache["key"], cache["rj"] = key, res_.residual_and_jacobian(x, key[1])
        return cache["rj"]

    @pymanopt.function.numpy(manifold)
    def cost(x, g):
        r, _ = rj(x, g)
        return float(r @ r)

    @pymanopt.function.numpy(manifold)
    def egrad(x, g):
        r, J = rj(x, g)
        gr = 2.0 * (J.T @ r)
        return gr[:L], gr[L:].reshape(1, 1)

    @pymanopt.function.numpy(manifold)
    def ehess(x, g, vx, vg):  # Gauss–Newton: 2 Jᵀ J v (exact at zero residual)
        _, J = rj(x, g)
        hv = 2.0 * (J.T @ (J @ np.concatenate((vx, np.asarray(vg).ravel()))))
        return hv[:L], hv[L:].reshape(1, 1)

    problem = pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    gen = rng(seed, "mtd1d-lsq", restart)
    if gamma0 is None:
        gamma0 = float(np.exp(gen.uniform(np.log(0.01), np.log(0.5))))
    if x0 is None:
        x0 = gen.standard_normal(L)
        energy = moments.a2[0] - (sigma**2 if sigma is not None else 0.0)
        if sigma is None or energy <= 0:
            energy = max(abs(moments.a2[0]), 1e-12) * 0.5
        x0 = x0 * np.sqrt(energy * L / gamma0) / np.linalg.norm(x0)
    optimizer = pymanopt.optimizers.TrustRegions(max_iterations=max_iterations, min_gradient_norm=1e-14, verbosity=0)
    res = optimizer.run(problem, initial_point=[np.asarray(x0, float), np.array([[gamma0]])])
    x, g = res.point
    return LSQResult(
        x=np.asarray(x, float),
        gamma=float(np.asarray(g).ravel()[0]),
        cost=float(res.cost),
        restart=restart,
        iterations=int(res.iterations),
        wall_time_s=time.perf_counter() - t0,
        costs=[float(res.cost)],
    )


def fit_lsq(
    moments: Moments1D,
    L: int,
    *,
    sigma: float | None = None,
    restarts: int = 4,
    seed: int = 0,
    max_iterations: int = 200,
) -> LSQResult:
    """Best of ``restarts`` runs of :func:`fit_lsq_restart` (lowest cost)."""
    if restarts < 1:
        raise InputError(f"lsq.restarts: expected >= 1, got {restarts}")
    runs = [
        fit_lsq_restart(moments, L, sigma=sigma, seed=seed, restart=r, max_iterations=max_iterations)
        for r in range(restarts)
    ]
    return pick_best(runs)


def pick_best(runs: list[LSQResult]) -> LSQResult:
    """The run with the lowest cost; ``costs`` lists every run's cost."""
    best = min(runs, key=lambda r: r.cost)
    best.costs = [r.cost for r in runs]
    return best


def fit_lsq_two_stage(
    moments: Moments1D,
    L: int,
    *,
    sigma: float | None = None,
    restarts: int = 4,
    seed: int = 0,
    max_iterations: int = 200,
) -> LSQResult:
    """The published two-stage fit for a signal whose length is known only to be ≤ L.

    Stage 1 fits a signal of length W = 2L − 1 (``moments`` must have window ≥ W): the true
    x, zero-padded anywhere inside W, is a global minimum. The length-L window of the
    stage-1 estimate with the most energy starts stage 2, an LS fit at length L (density
    converted as γ_L = γ_W · L / W, since a1 = γ_W/W Σx = γ_L/L Σx). Returns the stage-2
    result; ``costs`` holds the stage-1 restart costs.
    """
    W = 2 * L - 1
    if moments.L < W:
        raise InputError(f"two-stage fit needs moments with window >= 2L-1 = {W}, got {moments.L}")
    first = fit_lsq(moments, W, sigma=sigma, restarts=restarts, seed=seed, max_iterations=max_iterations)
    energy = np.convolve(first.x**2, np.ones(L), mode="valid")  # energy of each length-L window
    k = int(np.argmax(energy))
    second = fit_lsq_restart(
        moments,
        L,
        sigma=sigma,
        seed=seed,
        restart=0,
        max_iterations=max_iterations,
        x0=first.x[k : k + L].copy(),
        gamma0=first.gamma * L / W,
    )
    second.costs = first.costs
    return second
