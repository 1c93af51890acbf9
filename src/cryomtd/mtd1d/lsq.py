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
from cryomtd.mtd1d.settings import SPACING, Lsq1dSettings
from cryomtd.seeding import rng

__all__ = [
    "LSQResult",
    "fit_lsq",
    "fit_lsq_restart",
    "fit_lsq_two_stage",
    "initial_points",
    "lsq_cost_terms",
    "pick_best",
]

_DEFAULT = Lsq1dSettings()  # the defaults of the lsq block, written once (settings.py = the schema)


@dataclass
class LSQResult:
    """Least-squares estimate: ``x`` (L,), density ``gamma``, final ``cost``, restart index;
    ``xi`` (L − 1,): the fitted pair-separation function (``spacing="arbitrary"``, else None)."""

    x: np.ndarray
    gamma: float
    cost: float
    restart: int = 0
    iterations: int = 0
    wall_time_s: float = 0.0
    costs: list[float] = field(default_factory=list)  # final cost of every restart run
    xi: np.ndarray | None = None  # pair-separation function (L − 1,) when spacing="arbitrary"


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


def lsq_cost_terms(moments: Moments1D, L: int, sigma: float | None, spacing: str = "separated"):
    """(cost function over (x, γ[, ξ]) with ``autograd.numpy``, masks, weights) for ``moments``;
    ``spacing="arbitrary"``: cost(x, γ, ξ) with the pair-separation model."""
    import autograd.numpy as anp  # reference implementation only (tests); the optimiser is analytic

    if moments.L < L:
        raise InputError(f"moments have window {moments.L}, smaller than the signal length L={L}")
    d1, d2, d3, m2, m3, (w1, w2, w3) = _data_masks_weights(moments, L, sigma)
    s = 0.0 if sigma is None else float(sigma)
    i2 = np.flatnonzero(m2)
    i3 = np.flatnonzero(m3.ravel())
    d2s, d3s = d2[i2], d3.ravel()[i3]

    def cost(x, g, xi=None):
        gamma = anp.sum(g)
        a1, a2, a3 = model_moments(x, gamma, s, xp=anp, xi=xi if spacing == "arbitrary" else None)
        r1 = a1 - d1
        r2 = a2[i2] - d2s
        r3 = anp.reshape(a3, (-1,))[i3] - d3s
        return w1 * r1**2 + w2 * anp.sum(r2**2) + w3 * anp.sum(r3**2)

    return cost, (m2, m3), (w1, w2, w3)


class _Residuals:
    """Weighted residuals r(x, γ[, ξ]) of the kept moment entries and their Jacobian (analytic).

    r = [√w1 (A1 − d1), √w2 (A2[E2] − d2), √w3 (A3[E3] − d3)], f = ‖r‖². With xp the
    signal padded by zeros on both sides:
    ∂c2[ℓ]/∂x_j = x[j+ℓ] + x[j−ℓ];
    ∂c3[p,q]/∂x_j = x[j+p]x[j+q] + x[j−p]x[j−p+q] + x[j−q]x[j−q+p].

    ``dense``: the model of :func:`cryomtd.mtd1d.moments.model_moments` with the pair-separation
    function ξ (D = L − 1 values); its cross terms are sums of T2(u) = Σ_p x[p]x[p+u] and
    T3(u, v) = Σ_p x[p]x[p+u]x[p+v] at negative offsets, differentiated by the same rule.
    """

    def __init__(self, moments, L, sigma, dense: bool = False):
        d1, d2, d3, m2, m3, self.w = _data_masks_weights(moments, L, sigma)
        self.L, self.s2 = L, (0.0 if sigma is None else float(sigma)) ** 2
        self.D = L - 1 if dense else 0
        self.i2 = np.flatnonzero(m2)
        p, q = np.nonzero(m3)
        self.p, self.q = p, q
        self.d = np.concatenate(([d1], d2[self.i2], d3[p, q]))
        self.sw = np.sqrt(np.concatenate(([self.w[0]], np.full(self.i2.size, self.w[1]), np.full(p.size, self.w[2]))))
        self.b2 = (self.i2 == 0).astype(float)  # σ² δ[ℓ]
        self.b3 = (p == 0).astype(float) + (q == 0) + (p == q)  # times σ² A1
        self.pad = 3 * L  # xp[pad + j] = x[j]; offsets of the dense terms reach −(3L−3) … 4L−4
        j = np.arange(L)
        self.j = j
        l, o = self.i2, self.pad
        self.c2_plus, self.c2_minus = o + j[None, :] + l[:, None], o + j[None, :] - l[:, None]
        P, Q, J = p[:, None], q[:, None], j[None, :]
        self.c3_idx = [(o + J + P, o + J + Q), (o + J - P, o + J - P + Q), (o + J - Q, o + J - Q + P)]
        if dense:
            dd = np.arange(self.D)[None, :, None]
            jj = j[None, None, :]
            u2 = l[:, None, None] - L - dd  # (K2, D, 1): the second copy starts L + d after the first
            self.t2_idx = (o + jj + u2, o + jj - u2)
            pp, qq = p[:, None, None], q[:, None, None]
            # a3 cross terms: (first two samples in copy 1, third in copy 2) and (first in copy 1, two in copy 2)
            self.t3_terms = [(pp + 0 * dd, qq - L - dd), (pp - L - dd, qq - L - dd)]
            self.t3_idx = [
                [(o + jj + U, o + jj + V), (o + jj - U, o + jj - U + V), (o + jj - V, o + jj - V + U)]
                for U, V in self.t3_terms
            ]

    @property
    def size(self) -> int:
        """Number of unknowns: x (L), γ, ξ (D)."""
        return self.L + 1 + self.D

    def residual_and_jacobian_batch(
        self, X: np.ndarray, g: np.ndarray, Xi: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """r (B, K) and J = ∂r/∂(x, γ, ξ) (B, K, L+1+D) for B points at once (rows of ``X``, ``g``, ``Xi``)."""
        L, B = self.L, X.shape[0]
        xp = np.concatenate((np.zeros((B, self.pad)), X, np.zeros((B, 4 * L))), axis=1)
        S = X.sum(axis=1)
        p2 = xp[:, self.c2_plus]  # (B, K2, L): x[j+ℓ]
        c2 = np.einsum("bkj,bj->bk", p2, X)
        (a, b) = self.c3_idx[0]
        c3 = np.einsum("bkj,bj->bk", xp[:, a] * xp[:, b], X)
        gl = (g / L)[:, None]
        A1 = g * S / L
        A2 = gl * c2 + self.s2 * self.b2
        A3 = gl * c3 + self.s2 * A1[:, None] * self.b3
        dc2 = p2 + xp[:, self.c2_minus]
        dc3 = sum(xp[:, a] * xp[:, b] for a, b in self.c3_idx)
        g3 = gl[:, :, None]
        Jx2, Jx3 = g3 * dc2, g3 * (dc3 + self.s2 * self.b3[None, :, None])
        extra = []
        if self.D:
            Xi = np.zeros((B, self.D)) if Xi is None else np.asarray(Xi, float)
            t2p = xp[:, self.t2_idx[0]]  # (B, K2, D, L): x[j+u]
            T2 = np.einsum("bkdj,bj->bkd", t2p, X)
            dT2 = t2p + xp[:, self.t2_idx[1]]
            T3 = np.zeros((B, self.p.size, self.D))
            dT3 = np.zeros((B, self.p.size, self.D, L))
            for idx in self.t3_idx:  # the two kinds of cross term (not a loop over shifts)
                (a, b) = idx[0]
                T3 += np.einsum("bkdj,bj->bkd", xp[:, a] * xp[:, b], X)
                dT3 += sum(xp[:, a] * xp[:, b] for a, b in idx)
            A2 = A2 + np.einsum("bkd,bd->bk", T2, Xi)
            A3 = A3 + np.einsum("bkd,bd->bk", T3, Xi)
            Jx2 = Jx2 + np.einsum("bkdj,bd->bkj", dT2, Xi)
            Jx3 = Jx3 + np.einsum("bkdj,bd->bkj", dT3, Xi)
            extra = [np.concatenate((np.zeros((B, 1, self.D)), T2, T3), axis=1)]
        r = (np.concatenate((A1[:, None], A2, A3), axis=1) - self.d) * self.sw
        Jx = np.concatenate((np.broadcast_to(g3, (B, 1, L)), Jx2, Jx3), axis=1)
        Jg = np.concatenate(((S / L)[:, None], c2 / L, c3 / L + self.s2 * (S / L)[:, None] * self.b3), axis=1)
        J = np.concatenate([Jx, Jg[:, :, None], *extra], axis=2) * self.sw[None, :, None]
        return r, J

    def residual_and_jacobian(
        self, x: np.ndarray, g: float, xi: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """r (K,) and J = ∂r/∂(x, γ[, ξ]) (K, L+1+D)."""
        Xi = None if xi is None else np.asarray(xi, float)[None, :]
        r, J = self.residual_and_jacobian_batch(np.asarray(x, float)[None, :], np.array([float(g)]), Xi)
        return r[0], J[0]

    def theta_rj(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For θ = (x, log γ, ξ) (B, L+1+D): r, J = ∂r/∂θ, cost (B,)."""
        L = self.L
        g = np.exp(theta[:, L])
        r, J = self.residual_and_jacobian_batch(theta[:, :L], g, theta[:, L + 1 :] if self.D else None)
        J[:, :, L] *= g[:, None]  # ∂r/∂log γ
        return r, J, np.einsum("bk,bk->b", r, r)


def _levenberg_marquardt(
    res_: _Residuals, theta: np.ndarray, iterations: int, tol: float = 0.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """At most ``iterations`` Levenberg–Marquardt steps on B starts θ = (x, log γ, ξ) (B, L+1+D)
    at once (log γ so γ stays positive).

    Each start keeps its own damping λ (divided by 3 after a step that lowers its cost,
    multiplied by 4 and the step rejected otherwise); the step solves
    (JᵀJ + λ diag(JᵀJ)) δ = −Jᵀr for all starts as one batched solve. With ``tol`` > 0 it
    stops once no start's cost fell by more than ``tol`` (relative) over the last 5 steps.
    Returns (θ, cost (B,), steps taken).
    """
    theta = np.array(theta, float)
    B, n = theta.shape
    L = res_.L
    r, J, f = res_.theta_rj(theta)
    lam = np.full(B, 1e-3)
    eye = np.eye(n)
    history = [f.copy()]
    steps = 0
    while steps < iterations:
        steps += 1
        H = np.einsum("bki,bkj->bij", J, J)
        grad = np.einsum("bki,bk->bi", J, r)
        D = np.einsum("bii->bi", H)
        A = H + lam[:, None, None] * (D[:, :, None] + 1e-12 * D.max(axis=1)[:, None, None]) * eye
        step = -np.linalg.solve(A, grad[..., None])[..., 0]
        step[:, L] = np.clip(step[:, L], -2.0, 2.0)
        tn = theta + step
        rn, Jn, fn = res_.theta_rj(tn)
        ok = fn < f
        theta[ok], r[ok], J[ok], f[ok] = tn[ok], rn[ok], Jn[ok], fn[ok]
        lam = np.clip(np.where(ok, lam / 3.0, lam * 4.0), 1e-12, 1e12)
        history.append(f.copy())
        if tol > 0 and len(history) > 5 and np.all(history[-6] - f <= tol * np.maximum(f, 1e-300)):
            break
    return theta, f, steps


def initial_points(
    moments: Moments1D, L: int, *, sigma: float | None, seed: int, restart: int, starts: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The ``starts`` random initial points of ``restart``: (X0 (starts, L), γ0 (starts,)).

    From ``rng(seed, "mtd1d-lsq", restart)``: γ0 log-uniform in [0.01, 0.5] (all starts),
    then x0 ~ N(0, 1) (starts × L), each row rescaled so γ0‖x0‖²/L matches the (debiased
    when σ is known) a2[0]. ``starts=1`` is the single start of the unscreened fit.
    """
    gen = rng(seed, "mtd1d-lsq", restart)
    g0 = np.exp(gen.uniform(np.log(0.01), np.log(0.5), size=starts))
    X0 = gen.standard_normal((starts, L))
    energy = moments.a2[0] - (sigma**2 if sigma is not None else 0.0)
    if sigma is None or energy <= 0:
        energy = max(abs(moments.a2[0]), 1e-12) * 0.5
    X0 *= (np.sqrt(energy * L / g0) / np.linalg.norm(X0, axis=1))[:, None]
    return X0, g0


def _trust_regions(res_: _Residuals, max_iterations: int, x0: np.ndarray, gamma0: float, xi0: np.ndarray | None):
    """pymanopt trust regions on Euclidean(L) × Positive(1) [× Euclidean(D)] from (x0, γ0[, ξ0]):
    (x, γ, ξ or None, cost, iterations)."""
    import pymanopt  # deferred: pymanopt imports torch (seconds), only LS jobs need it
    from pymanopt.manifolds import Euclidean, Positive, Product

    L, D = res_.L, res_.D
    manifold = Product([Euclidean(L), Positive(1, 1)] + ([Euclidean(D)] if D else []))
    cache: dict = {}

    def rj(x, g, *xi):
        key = (x.tobytes(), float(np.asarray(g).ravel()[0])) + tuple(v.tobytes() for v in xi)
        if cache.get("key") != key:
            cache["key"], cache["rj"] = key, res_.residual_and_jacobian(x, key[1], *xi)
        return cache["rj"]

    def split(v):
        return (v[:L], v[L : L + 1].reshape(1, 1)) + ((v[L + 1 :],) if D else ())

    @pymanopt.function.numpy(manifold)
    def cost(*point):
        r, _ = rj(*point)
        return float(r @ r)

    @pymanopt.function.numpy(manifold)
    def egrad(*point):
        r, J = rj(*point)
        return split(2.0 * (J.T @ r))

    @pymanopt.function.numpy(manifold)
    def ehess(*args):  # Gauss–Newton: 2 Jᵀ J v (exact at zero residual)
        n = len(args) // 2
        _, J = rj(*args[:n])
        v = np.concatenate([np.asarray(t, float).ravel() for t in args[n:]])
        return split(2.0 * (J.T @ (J @ v)))

    problem = pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    optimizer = pymanopt.optimizers.TrustRegions(max_iterations=max_iterations, min_gradient_norm=1e-14, verbosity=0)
    start = [np.asarray(x0, float), np.array([[float(gamma0)]])] + ([np.asarray(xi0, float)] if D else [])
    res = optimizer.run(problem, initial_point=start)
    x, g = res.point[0], res.point[1]
    xi = np.asarray(res.point[2], float) if D else None
    return np.asarray(x, float), float(np.asarray(g).ravel()[0]), xi, float(res.cost), int(res.iterations)


SPACINGS = ("separated", "arbitrary")
_CONTINUE_TOL = 1e-13  # stop the continuation when no kept start gained more than this (relative) in 5 steps
_POLISH_ITERATIONS = 10  # trust-region steps from the converged point (second-order check of the minimum)


def fit_lsq_restart(
    moments: Moments1D,
    L: int,
    *,
    sigma: float | None = None,
    seed: int = 0,
    restart: int = 0,
    max_iterations: int = _DEFAULT.max_iterations,
    starts: int = _DEFAULT.starts,
    screen_iterations: int = _DEFAULT.screen_iterations,
    keep: int = _DEFAULT.keep,
    spacing: str = SPACING,
    x0: np.ndarray | None = None,
    gamma0: float | None = None,
    xi0: np.ndarray | None = None,
) -> LSQResult:
    """One restart: ``starts`` random initial points (:func:`initial_points`) screened by
    ``screen_iterations`` batched Levenberg–Marquardt steps; the ``keep`` lowest-cost ones
    continued together by LM to convergence (at most ``max_iterations`` steps; stops when
    no kept start gains more than 1e-13 relative in 5 steps); the best polished by 10
    pymanopt trust-region steps. With ``x0`` (and optionally ``gamma0``, ``xi0``), the
    continuation and polish from there alone.

    ``spacing="separated"`` (default) fits (x, γ) with the well-separated model;
    ``"arbitrary"`` also fits the pair-separation function ξ (L − 1 values, started at 0,
    i.e. at the separated model; see :func:`cryomtd.mtd1d.moments.model_moments`).

    Screening is what makes the default find the global minimum: at L = 15, σ = 1,
    γ = 0.2 between 1 in 9 and 1 in 3 random starts reach it, and after a few LM steps the
    cost already ranks such a start first (docs/mtd1d.md, benchmarks/mtd1d_success.py).
    """
    t0 = time.perf_counter()
    if moments.L < L:
        raise InputError(f"moments have window {moments.L}, smaller than the signal length L={L}")
    for name, v in (("starts", starts), ("keep", keep)):
        if v < 1:
            raise InputError(f"lsq.{name}: expected >= 1, got {v}")
    if screen_iterations < 0:
        raise InputError(f"lsq.screen_iterations: expected >= 0, got {screen_iterations}")
    if spacing not in SPACINGS:
        raise InputError(f"spacing: expected one of {', '.join(SPACINGS)}, got {spacing!r}")
    res_ = _Residuals(moments, L, sigma, dense=spacing == "arbitrary")
    if x0 is not None:
        if gamma0 is None:
            gamma0 = float(initial_points(moments, L, sigma=sigma, seed=seed, restart=restart)[1][0])
        X0, g0 = np.asarray(x0, float)[None, :], np.array([float(gamma0)])
        Xi0 = np.zeros((1, res_.D)) if xi0 is None else np.asarray(xi0, float).reshape(1, res_.D)
    else:
        X0, g0 = initial_points(moments, L, sigma=sigma, seed=seed, restart=restart, starts=starts)
        if gamma0 is not None:
            g0 = np.full(starts, float(gamma0))
        Xi0 = np.zeros((starts, res_.D))
    theta = np.column_stack((X0, np.log(g0), Xi0))
    if theta.shape[0] > keep and screen_iterations > 0:
        theta, f, _ = _levenberg_marquardt(res_, theta, screen_iterations)
        theta = theta[np.argsort(f, kind="stable")[:keep]]
    # continue the kept starts together to convergence, then polish the best by trust regions
    theta, f, its = _levenberg_marquardt(res_, theta, max_iterations, tol=_CONTINUE_TOL)
    b = int(np.argmin(f))
    xi_b = theta[b, L + 1 :] if res_.D else None
    x, g, xi, cost, tr_its = _trust_regions(res_, _POLISH_ITERATIONS, theta[b, :L], np.exp(theta[b, L]), xi_b)
    its += tr_its
    return LSQResult(
        x=x,
        gamma=g,
        cost=cost,
        restart=restart,
        iterations=its,
        wall_time_s=time.perf_counter() - t0,
        costs=[cost],
        xi=xi,
    )


def fit_lsq(
    moments: Moments1D,
    L: int,
    *,
    sigma: float | None = None,
    restarts: int = _DEFAULT.restarts,
    seed: int = 0,
    max_iterations: int = _DEFAULT.max_iterations,
    starts: int = _DEFAULT.starts,
    screen_iterations: int = _DEFAULT.screen_iterations,
    keep: int = _DEFAULT.keep,
    spacing: str = SPACING,
) -> LSQResult:
    """Best of ``restarts`` runs of :func:`fit_lsq_restart` (lowest cost): the workflow's
    ``mtd1d_lsq`` jobs and ``mtd1d_pick`` in one call, with the defaults of ``lsq``."""
    if restarts < 1:
        raise InputError(f"lsq.restarts: expected >= 1, got {restarts}")
    runs = [
        fit_lsq_restart(
            moments,
            L,
            sigma=sigma,
            seed=seed,
            restart=r,
            max_iterations=max_iterations,
            starts=starts,
            screen_iterations=screen_iterations,
            keep=keep,
            spacing=spacing,
        )
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
