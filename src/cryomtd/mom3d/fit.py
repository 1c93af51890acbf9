"""Least-squares fit of (coefficients, γ) to micrograph moments (docs/design.md §9).

Cost (all orders relative, so the result does not depend on the units of the data):

    f(c, γ) = w1 (a1(c,γ) − d1)²/d1²
            + w2 Σ_{ℓ∈S2} (a2 − d2)²[ℓ] / Σ_{S2} d2²
            + w3 Σ_{(ℓ1,ℓ2)∈S3} (a3 − d3)²[ℓ1,ℓ2] / Σ_{S3} d3²
            + λ ‖c‖² / n        (n = number of fitted coefficients: size, or k with ``symmetry``)

S2 and S3 hold the non-redundant lags of :mod:`cryomtd.moments.lags` (the 2- and
6-fold symmetries of docs/design.md §8: each distinct entry counts once). Noise: with
``sigma`` given the model includes the bias terms (σ² δ(ℓ) in a2, σ² a1 on ℓ1=0, ℓ2=0,
ℓ1=ℓ2 in a3); with ``sigma=None`` the biased entries are excluded from S2 and S3.
Optimisation on the pymanopt manifold Euclidean(size) × Positive(1) (γ > 0) with
trust regions (exact Hessian-vector products by torch double backward; ``max_inner``
caps the inner truncated-CG steps, each one Hessian-vector product ≈ 2 gradients) or
conjugate gradients (gradients only: cheaper per iteration on larger problems); each
restart starts from a seeded random point (``init="random"``) or from a soft ball with
random detail (``init="ball"``, :mod:`cryomtd.mom3d.start`); the lowest cost wins.
Optional frequency marching fits the ℓ ≤ 1 coefficients first; optional ``a2_first``
starts each stage with a fit of a1 and a2 only (cheap: no rotations).
``symmetry`` (a point group, :mod:`cryomtd.basis.symmetry`) restricts the fit to the
symmetric volumes (:class:`~cryomtd.mom3d.symmetric.SymmetricModel`); there n in λ‖c‖²/n is
the number of fitted coefficients.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cryomtd.basis.symmetry import parse_symmetry
from cryomtd.io import InputError
from cryomtd.mom3d.model import MomentModel, _delta2
from cryomtd.mom3d.settings import LsqSettings
from cryomtd.mom3d.start import INIT_KINDS, random_start, start_point
from cryomtd.mom3d.symmetric import SymmetricModel
from cryomtd.settings import override

__all__ = [
    "FitResult",
    "fit",
    "fit_restart",
    "refine_restart",
    "rank_by_cost",
    "crop_moments",
    "cost_terms",
    "zero_mean",
    "gauss_newton_polish",
    "make_model",
]

log = logging.getLogger("cryomtd.mom3d")


@dataclass
class FitResult:
    """One fit: ``coef`` (size,), ``gamma``, final ``cost``, ``cost_trace`` per iteration,
    (best cost after each cost evaluation), ``iterations``, ``wall_time_s``;
    ``restart_costs`` lists every restart's cost (best kept);
    ``stage_ends``: the length of ``cost_trace`` at the end of each stage (marching degree, polish, refinement);
    ``symmetry``: the point group fitted; ``detection``: with ``symmetry: auto``, the detection's
    summary (:meth:`cryomtd.mom3d.detect.SymmetryDetection.to_dict`: chosen group, cost per group,
    the rule's floor and threshold) and ``relaxed`` (whether the C1 relaxation lowered the cost)."""

    coef: np.ndarray
    gamma: float
    cost: float
    cost_trace: np.ndarray
    iterations: int
    wall_time_s: float
    restart: int = 0
    restart_costs: list[float] = field(default_factory=list)
    stage_ends: list[int] = field(default_factory=list)
    symmetry: str = "C1"
    detection: dict[str, Any] | None = None


def zero_mean(moments: Any) -> bool:
    """Whether the moments come from micrographs of zero mean (|a1| < 1e-6 √max a2, float32 round-off):
    a user's micrographs after preparation, whose mean (an arbitrary offset) was removed."""
    a2 = np.asarray(moments.a2, dtype=np.float64)
    return bool(abs(float(moments.a1)) < 1e-6 * np.sqrt(max(float(np.max(a2)), 1e-300)))


def crop_moments(moments: Any, W: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(a1, a2, a3) of ``moments`` (any object with ``.window``, ``.a1``, ``.a2``, ``.a3``) cropped to window W."""
    Wd = int(getattr(moments, "window", (np.asarray(moments.a2).shape[0] + 1) // 2))
    if W > Wd:
        raise ValueError(f"fit window {W} exceeds the moments' window {Wd}")
    o = Wd - W
    K = 2 * W - 1
    a2 = np.asarray(moments.a2, dtype=np.float64)[o : o + K, o : o + K]
    a3 = np.asarray(moments.a3, dtype=np.float64)[o : o + K, o : o + K, o : o + K, o : o + K]
    return float(moments.a1), a2, a3


def _masks(W: int, exclude_biased: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into dense a2 (K²) and a3 (K⁴) of the non-redundant lags (:mod:`cryomtd.moments.lags`),
    without the noise-biased ones (ℓ = 0; ℓ1 = 0, ℓ2 = 0, ℓ1 = ℓ2) when ``exclude_biased``."""
    from cryomtd.moments import a2_nonredundant_lags, a3_nonredundant_lags

    K = 2 * W - 1
    l2 = np.asarray(a2_nonredundant_lags(W))
    l3 = np.asarray(a3_nonredundant_lags(W))
    if exclude_biased:
        l2 = l2[np.any(l2 != 0, axis=1)]
        l1_, l2_ = l3[:, :2], l3[:, 2:]
        keep = np.any(l1_ != 0, axis=1) & np.any(l2_ != 0, axis=1) & np.any(l1_ != l2_, axis=1)
        l3 = l3[keep]
    i2 = (l2[:, 0] + W - 1) * K + (l2[:, 1] + W - 1)
    i3 = (((l3[:, 0] + W - 1) * K + l3[:, 1] + W - 1) * K + l3[:, 2] + W - 1) * K + l3[:, 3] + W - 1
    return torch.as_tensor(i2), torch.as_tensor(i3)


class _Cost:
    """The cost f(c, γ) as a torch function of (coef, gamma) for one data set."""

    def __init__(
        self,
        model: MomentModel,
        data: tuple[float, np.ndarray, np.ndarray],
        *,
        sigma: float | None,
        weights: Sequence[float],
        prior_weight: float,
        central: bool = False,
    ) -> None:
        self.model = model
        self.central = bool(central)
        self.sigma = 0.0 if sigma is None else float(sigma)
        self.m2, self.m3 = _masks(model.W, sigma is None)
        d1, d2, d3 = data
        self.d1 = torch.tensor(d1, dtype=torch.float64)
        self.d2 = torch.as_tensor(d2).reshape(-1)[self.m2]
        self.d3 = torch.as_tensor(d3).reshape(-1)[self.m3]
        self.n1 = max(float(d1) ** 2, 1e-300)
        self.n2 = max(float((self.d2**2).sum()), 1e-300)
        self.n3 = max(float((self.d3**2).sum()), 1e-300)
        self.w = [float(w) for w in weights]
        if self.central:  # zero-mean data: no a1 to fit
            self.w[0] = 0.0
            self._central_indices()
        self.prior = float(prior_weight)
        self._orbit_rows()

    def _central_indices(self) -> None:
        """For central moments: the dense a2 indices of ℓ1 and ℓ2 of every fitted a3 entry, and of
        ℓ1 − ℓ2 in the a2 of window 2W − 1 (lags up to 2W − 2, computed by ``self.wide``)."""
        W = self.model.W
        K, Kw = 2 * W - 1, 4 * W - 3
        a, b, c, d = np.unravel_index(self.m3.numpy(), (K, K, K, K))
        self.c_l1 = torch.as_tensor(a * K + b)
        self.c_l2 = torch.as_tensor(c * K + d)
        self.c_d = torch.as_tensor((a - c + W - 1 + W - 1) * Kw + (b - d + W - 1 + W - 1))
        base = self.model.inner if isinstance(self.model, SymmetricModel) else self.model
        self.wide = _stage_model(int(base.L), int(base.ell_max), 2 * W - 1, "quadrature", None, base.ctf)
        self.wide_delta = _delta2(Kw, torch.float64).reshape(-1)

    def _orbit_rows(self) -> None:
        """The a3 residual per D4 orbit (for Gauss–Newton): the averaged model is the same on the
        ≤ 8 lag pairs of an orbit of the square's symmetry group (:func:`d4_orbits`), so

            Σ_{i ∈ orbit} (m_o − d_i)² = n_o (m_o − d̄_o)² + Σ_{i ∈ orbit} (d_i − d̄_o)²:

        one row per orbit, weighted by √n_o, against the orbit mean d̄_o gives the same cost up
        to a constant (``d3_spread``, 0 for exact moments), the same gradient and the same
        Gauss–Newton steps with ≈ 8× fewer rows. Sets ``o3_dense`` (dense index of one entry of
        each orbit in S3), ``o3_orbit`` (its orbit index), ``o3_count``, ``o3_mean``, ``d3_spread``."""
        from cryomtd.mom3d.invariants import d4_orbits
        from cryomtd.moments.lags import a3_index_map

        W = self.model.W
        _, class_to_orbit, _ = d4_orbits(W, getattr(self.model, "lag_group", tuple(range(8))))
        m3 = self.m3.numpy()
        orbit = class_to_orbit[a3_index_map(W).astype(np.int64).ravel()[m3]]  # orbit of each S3 entry
        uniq, first, inv = np.unique(orbit, return_index=True, return_inverse=True)
        count = np.bincount(inv).astype(np.float64)
        d3 = self.d3.numpy()
        mean = np.bincount(inv, weights=d3) / count
        self.o3_dense = torch.as_tensor(m3[first])
        self.o3_orbit = torch.as_tensor(uniq)
        self.o3_count = torch.as_tensor(count)
        self.o3_mean = torch.as_tensor(mean)
        self.d3_spread = float(((d3 - mean[inv]) ** 2).sum())

    def terms(self, coef: torch.Tensor, gamma: torch.Tensor) -> list[torch.Tensor]:
        a1, a2, a3 = self.model.moments(coef, gamma, self.sigma, third=self.w[2] != 0)
        if self.central:
            return self._central_terms(coef, gamma, a1, a2, a3)
        t = [(a1 - self.d1) ** 2 / self.n1, ((a2.reshape(-1)[self.m2] - self.d2) ** 2).sum() / self.n2]
        t.append(
            ((a3.reshape(-1)[self.m3] - self.d3) ** 2).sum() / self.n3
            if a3 is not None
            else torch.zeros((), dtype=torch.float64)
        )
        return t

    def _central_terms(
        self, coef: torch.Tensor, gamma: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """The a2 and a3 terms against central moments (data whose mean was removed):
        c2(ℓ) = a2(ℓ) − a1², c3(ℓ1, ℓ2) = a3 − a1 (a2(ℓ1) + a2(ℓ2) + a2(ℓ1 − ℓ2)) + 2 a1³
        with the raw model moments a (noise included: the noise terms of c3 cancel)."""
        flat2 = a2.reshape(-1)
        t = [torch.zeros((), dtype=torch.float64), ((flat2[self.m2] - a1**2 - self.d2) ** 2).sum() / self.n2]
        if a3 is None:
            t.append(torch.zeros((), dtype=torch.float64))
            return t
        full = self.model.full(coef) if hasattr(self.model, "full") else coef
        _, wide2, _ = self.wide.box_moments(full, third=False)
        wide2 = gamma / self.wide.L**2 * wide2.reshape(-1) + self.sigma**2 * self.wide_delta
        c3 = a3.reshape(-1)[self.m3] - a1 * (flat2[self.c_l1] + flat2[self.c_l2] + wide2[self.c_d]) + 2 * a1**3
        t.append(((c3 - self.d3) ** 2).sum() / self.n3)
        return t

    def box_vector(self, coef: torch.Tensor, *, third_only: bool = False, orbits: bool = False) -> torch.Tensor:
        """The model's box sums (m1, m2 on S2, m3 on S3) of ``coef`` as one vector (no γ/L², no noise).
        ``orbits``: m3 once per D4 orbit of S3 (``o3_dense``, see :meth:`_orbit_rows`)."""
        m1, m2, m3 = self.model.box_moments(coef, third=self.w[2] != 0)
        parts = [] if third_only else [m1.reshape(1), m2.reshape(-1)[self.m2]]
        if m3 is not None:
            parts.append(m3.reshape(-1)[self.o3_dense if orbits else self.m3])
        return torch.cat(parts)

    def box_jacobian(self, coef: torch.Tensor, *, orbits: bool = False, single: bool = False) -> torch.Tensor | None:
        """∂(:meth:`box_vector`)/∂c (n_box, size), exact, for the invariant model
        (:meth:`InvariantMomentModel.box_jacobian`; ``single``: its a3 part from a float32 copy
        of the map); None for the quadrature model (its polish Jacobian uses the polarisation
        identity instead)."""
        if self.model.kind != "invariants":
            return None
        j1, j2, j3 = self.model.box_jacobian(coef, single=single)
        parts = [j1[None, :], j2[self.m2]]
        if self.w[2] != 0:
            parts.append(j3[self.o3_orbit if orbits else self.model.dense_to_orbit[self.m3]])
        return torch.cat(parts)

    def residual_scales(self, *, orbits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt-weights per entry of :meth:`box_vector`, data vector):
        cost = ‖s ⊙ (γ/L² m + noise − d)‖² + prior (+ ``w3·d3_spread/‖d3‖²`` with ``orbits``:
        rows per orbit, see :meth:`_orbit_rows`)."""
        f64 = torch.float64
        if self.w[2] == 0:
            s3, d3 = torch.zeros(0, dtype=f64), torch.zeros(0, dtype=f64)
        elif orbits:
            s3, d3 = (self.w[2] / self.n3 * self.o3_count) ** 0.5, self.o3_mean
        else:
            s3, d3 = torch.full((self.d3.numel(),), (self.w[2] / self.n3) ** 0.5, dtype=f64), self.d3
        s = torch.cat(
            [
                torch.full((1,), (self.w[0] / self.n1) ** 0.5, dtype=f64),
                torch.full((self.d2.numel(),), (self.w[1] / self.n2) ** 0.5, dtype=f64),
                s3,
            ]
        )
        d = torch.cat([self.d1.reshape(1), self.d2, d3])
        return s, d

    def a2_noise(self) -> np.ndarray:
        """The noise term σ² δ(ℓ) of a2 on the fitted lags S2 (zeros when σ = 0 or unknown)."""
        from cryomtd.mom3d.model import _delta2

        K = 2 * self.model.W - 1
        return self.sigma**2 * _delta2(K, torch.float64).reshape(-1)[self.m2].numpy()

    def __call__(self, coef: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        t = self.terms(coef, gamma)
        f = self.w[0] * t[0] + self.w[1] * t[1] + self.w[2] * t[2]
        if self.prior:
            f = f + self.prior * (coef**2).sum() / coef.numel()
        return f


def cost_terms(
    model: MomentModel, moments: Any, coef: np.ndarray, gamma: float, *, sigma: float | None = 0.0
) -> list[float]:
    """The three unweighted relative residuals (order 1, 2, 3) of (coef, gamma) against ``moments``."""
    cf = _Cost(model, crop_moments(moments, model.W), sigma=sigma, weights=(1, 1, 1), prior_weight=0.0)
    with torch.no_grad():
        c = torch.as_tensor(np.asarray(coef, dtype=np.float64))
        return [float(t) for t in cf.terms(c, torch.tensor(float(gamma), dtype=torch.float64))]


class ArmijoLineSearcher:
    """Backtracking Armijo line search for pymanopt's conjugate gradients that cannot stall.

    pymanopt's default ``AdaptiveLineSearcher`` remembers 2·α of the last search as the next
    first trial; after a rejected step (α = 0, no decrease within its 10 halvings) that
    memory is 0, so every later search tries only the step 0 and CG never moves again.
    This is the same search (Armijo constant 0.5, halving, the
    same pace rule for the next first trial) except that after a rejection the next search
    starts afresh from 1/‖d‖, and up to ``max_iterations`` halvings are tried.
    """

    def __init__(
        self,
        contraction_factor: float = 0.5,
        sufficient_decrease: float = 0.5,
        max_iterations: int = 30,
        initial_step_size: float = 1.0,
    ) -> None:
        self.contraction_factor = contraction_factor
        self.sufficient_decrease = sufficient_decrease
        self.max_iterations = max_iterations
        self.initial_step_size = initial_step_size
        self._alpha: float | None = None

    def search(self, objective: Any, manifold: Any, x: Any, d: Any, f0: float, df0: float) -> tuple[float, Any]:
        norm_d = float(manifold.norm(x, d))
        if norm_d == 0:
            return 0.0, x
        alpha = self._alpha if self._alpha else self.initial_step_size / norm_d
        newx = manifold.retraction(x, alpha * d)
        newf = objective(newx)
        n = 1
        while newf > f0 + self.sufficient_decrease * alpha * df0 and n <= self.max_iterations:
            alpha *= self.contraction_factor
            newx = manifold.retraction(x, alpha * d)
            newf = objective(newx)
            n += 1
        if not newf <= f0:  # no decrease (or NaN): reject, and start afresh next time
            self._alpha = None
            return 0.0, x
        # pymanopt's pace rule: keep α after exactly one halving, otherwise try 2α next time
        self._alpha = alpha if n == 2 else 2 * alpha
        return alpha * norm_d, newx


def _optimise(
    cost: _Cost,
    model: MomentModel,
    c0: np.ndarray,
    gamma0: float,
    *,
    optimizer: str,
    max_iterations: int,
    min_gradient_norm: float,
    max_inner: int | None,
) -> tuple[np.ndarray, float, float, list[float], int]:
    if optimizer == "gauss-newton":  # exact-Jacobian least squares for the whole stage
        return gauss_newton_polish(cost, c0, gamma0, max_iterations=max_iterations)
    import pymanopt
    from pymanopt.manifolds import Euclidean, Positive, Product
    from pymanopt.optimizers import ConjugateGradient, TrustRegions

    manifold = Product([Euclidean(model.size), Positive(1, 1)])

    evaluated: list[float] = []

    @pymanopt.function.pytorch(manifold)
    def f(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        value = cost(x, g.reshape(()))
        evaluated.append(float(value.detach()))
        if len(evaluated) % 50 == 0:
            log.info("  %d cost evaluations, best cost %.4e", len(evaluated), min(evaluated))
        return value

    problem = pymanopt.Problem(manifold, f)
    # min_step_size 0: pymanopt's 1e-10 stopped CG after 2 iterations when the first line search
    # backtracked far (the a3 term switched on after the a2-first stage); iterations bound the run
    kw = dict(
        max_iterations=max_iterations, min_gradient_norm=min_gradient_norm, min_step_size=0.0, verbosity=0, max_time=1e9
    )
    if optimizer == "trust-regions":
        opt = TrustRegions(**kw)
    elif optimizer == "conjugate-gradient":
        # Polak-Ribière: pymanopt's default Hestenes-Stiefel rule divides by ⟨Δgrad, dir⟩, which hit
        # 0/0 (NaN → stop after 2 iterations) on a BPTI ℓmax = 3 fit
        opt = ConjugateGradient(beta_rule="PolakRibiere", line_searcher=ArmijoLineSearcher(), **kw)
    else:
        raise ValueError(
            f"optimizer must be 'trust-regions', 'conjugate-gradient' or 'gauss-newton', got {optimizer!r}"
        )
    x0 = [np.asarray(c0, dtype=np.float64), np.array([[gamma0]])]
    res = (
        opt.run(problem, initial_point=x0, maxinner=max_inner)
        if optimizer == "trust-regions"
        else opt.run(problem, initial_point=x0)
    )
    log.info("  %s: %s", optimizer, res.stopping_criterion)
    x, g = res.point
    coef = np.asarray(x, dtype=np.float64)
    # trace: best cost after each cost evaluation (trust regions keeps no per-iteration log)
    trace = np.minimum.accumulate(np.asarray(evaluated + [float(res.cost)])).tolist()
    return coef, float(np.asarray(g).ravel()[0]), float(res.cost), trace, int(res.iterations)


def _noise_terms(cost: _Cost, *, orbits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(n0, u3) over the entries of :meth:`_Cost.box_vector`: the model is
    a = γ/L² (m + m1·u3) + n0 with n0 = σ² δ(ℓ) on a2 and u3 = σ² (δ(ℓ1)+δ(ℓ2)+δ(ℓ1−ℓ2)) on a3
    (D4-invariant, so the same on every entry of an orbit)."""
    from cryomtd.mom3d.model import _delta3

    K = 2 * cost.model.W - 1
    idx3 = (cost.o3_dense if orbits else cost.m3) if cost.w[2] != 0 else cost.m3[:0]
    n2, n3 = cost.d2.numel(), idx3.numel()
    n0, u3 = np.zeros(1 + n2 + n3), np.zeros(1 + n2 + n3)
    if cost.sigma:
        n0[1 : 1 + n2] = cost.a2_noise()
        u3[1 + n2 :] = cost.sigma**2 * _delta3(K, torch.float64).reshape(-1)[idx3].numpy()
    return n0, u3


def gauss_newton_polish(
    cost: _Cost,
    coef: np.ndarray,
    gamma: float,
    *,
    max_iterations: int = 30,
    tol: float = 1e-15,
    single_jacobian_above: int | None = 2**24,
) -> tuple[np.ndarray, float, float, list[float], int]:
    """Polish (coef, γ) by Gauss–Newton trust-region least squares with the exact Jacobian.

    The moment cost is badly conditioned (Hessian eigenvalues spread over ~10 decades for
    BPTI at ℓmax = 2: cost 10⁻⁸ still allows a coefficient error of 0.3), which first-order
    methods cannot resolve. Here ``scipy.optimize.least_squares`` (method "trf",
    x_scale="jac", γ > 0 as a bound) solves each step with the full Jacobian.
    The Jacobian is exact. With the invariant model it is analytic
    (:meth:`_Cost.box_jacobian`: seconds at TRPV1 size). With the quadrature model it uses
    that the box sums are polynomials in c: m = m⁽¹⁾ + m⁽²⁾ + m⁽³⁾ of degrees 1, 2, 3, so for
    a unit vector e_j

        ∂m/∂c_j = [m(c + e_j) − m(c − e_j)]/2 − m⁽³⁾(e_j)

    exactly (no step-size error), with m⁽³⁾(e_j) (the third-order box sums of e_j alone)
    computed once: 2 model evaluations per coefficient per Jacobian, for small problems.

    Speed (TRPV1 size): the a3 residual has one row per D4 orbit (:meth:`_Cost._orbit_rows`,
    8× fewer rows, the same steps), and when the invariant map has more than
    ``single_jacobian_above`` entries (2²⁴, 128 MB; None: never) the Jacobian contracts its
    float32 copy. The residual, hence the cost and the converged point, stays float64; the
    Jacobian's ≈ 1e-7 relative error only perturbs the steps and halves the Jacobian's time.
    Returns (coef, γ, cost, cost trace, Jacobian evaluations).
    """
    from scipy.optimize import least_squares

    model = cost.model
    size = model.size
    sw, d = cost.residual_scales(orbits=True)  # a3 rows per D4 orbit: same cost up to `offset`
    sw, d = sw.numpy(), d.numpy()
    offset = cost.w[2] * cost.d3_spread / cost.n3 if cost.w[2] != 0 else 0.0
    L2 = float(model.L**2)
    prior = cost.prior
    n_third = cost.o3_dense.numel() if cost.w[2] != 0 else 0
    n0, u3 = _noise_terms(cost, orbits=True)
    eye = np.eye(size)

    def box(c: np.ndarray, third_only: bool = False) -> np.ndarray:
        with torch.no_grad():
            return cost.box_vector(torch.as_tensor(c), third_only=third_only, orbits=True).numpy()

    analytic = model.kind == "invariants"
    # large maps: the Jacobian's contraction is memory-bound, so use the map's float32 copy
    single = analytic and single_jacobian_above is not None and model.map3t.numel() > single_jacobian_above
    third_unit = np.stack([box(e, third_only=True) for e in eye], axis=1) if n_third and not analytic else None
    last: dict[bytes, np.ndarray] = {}  # box sums at the last x (fun and jac are called at the same x)

    def box_at(x: np.ndarray) -> np.ndarray:
        key = x.tobytes()
        if key not in last:
            last.clear()
            last[key] = box(x[:-1])
        return last[key]

    def resid(x: np.ndarray) -> np.ndarray:
        m = box_at(x)
        r = sw * (x[-1] / L2 * (m + m[0] * u3) + n0 - d)
        return np.concatenate([r, np.sqrt(prior / size) * x[:-1]]) if prior else r

    def jac(x: np.ndarray) -> np.ndarray:
        c, m = x[:-1], box_at(x)
        scale = x[-1] / L2
        J = np.zeros((d.size + (size if prior else 0), size + 1))
        if analytic:  # exact Jacobian of the box sums from the invariant map
            with torch.no_grad():
                Jm = cost.box_jacobian(torch.as_tensor(c), orbits=True, single=single).numpy()
            J[: d.size, :-1] = sw[:, None] * scale * (Jm + Jm[0][None, :] * u3[:, None])
        else:
            for j in range(size):  # a loop over coefficients, each column two model evaluations
                col = 0.5 * (box(c + eye[j]) - box(c - eye[j]))
                if n_third:
                    col[-n_third:] -= third_unit[:, j]
                J[: d.size, j] = sw * scale * (col + col[0] * u3)
        J[: d.size, -1] = sw * (m + m[0] * u3) / L2
        if prior:
            J[d.size :, :-1] = np.sqrt(prior / size) * eye
        return J

    trace: list[float] = []

    def fun(x: np.ndarray) -> np.ndarray:
        r = resid(x)
        trace.append(float(r @ r) + offset)
        return r

    x0 = np.r_[np.asarray(coef, dtype=np.float64), float(gamma)]
    lo = np.r_[np.full(size, -np.inf), 0.0]
    res = least_squares(
        fun,
        x0,
        jac=jac,
        bounds=(lo, np.inf),
        method="trf",
        x_scale="jac",
        ftol=tol,
        xtol=tol,
        gtol=tol,
        max_nfev=max_iterations,
    )
    c = res.x[:-1].copy()
    f = float(res.fun @ res.fun) + offset
    log.info("  gauss-newton polish: cost %.3e after %d Jacobians (%s)", f, res.njev, res.message)
    return c, float(res.x[-1]), f, np.minimum.accumulate(np.asarray(trace)).tolist(), int(res.njev)


MODEL_KINDS = ("invariants", "quadrature")


def make_model(
    basis: Any, W: int, kind: str = "invariants", cache_dir: str | None = None, ctf: Any = None
) -> MomentModel:
    """The moment model used by the fit: ``"invariants"`` (third moment through the precomputed
    bispectrum-invariant map, :class:`~cryomtd.mom3d.invariants.InvariantMomentModel`) or
    ``"quadrature"`` (Gram products over the exact rotation rule); the same numbers to round-off.
    ``cache_dir``: where the invariant map is kept between runs (see ``InvariantMomentModel``).
    ``ctf``: a :class:`~cryomtd.mom3d.ctfmodel.CtfMixture` (None: no CTF) → the CTF model of that
    kind (:func:`~cryomtd.mom3d.ctfmodel.make_ctf_model`)."""
    if ctf is not None:
        from cryomtd.mom3d.ctfmodel import make_ctf_model

        return make_ctf_model(basis, W, ctf, kind, cache_dir)
    if kind == "invariants":
        from cryomtd.mom3d.invariants import InvariantMomentModel

        return InvariantMomentModel(basis, W, cache_dir=cache_dir)
    if kind == "quadrature":
        return MomentModel(basis, W)
    raise ValueError(f"lsq.model must be one of {MODEL_KINDS}, got {kind!r}")


@functools.lru_cache(maxsize=8)
def _stage_model(
    L: int, ell_max: int, W: int, kind: str = "invariants", cache_dir: str | None = None, ctf: Any = None
) -> MomentModel:
    """The moment model of the ℓ ≤ ell_max prefix of SphericalBessel(L) (a marching stage; ``ctf``
    a :class:`~cryomtd.mom3d.ctfmodel.CtfMixture` or None)."""
    from cryomtd.basis import SphericalBessel

    return make_model(SphericalBessel(L, ell_max), W, kind, cache_dir, ctf)


def _mixture(ctf: Any, pixel_size: float | None) -> Any:
    """The :class:`~cryomtd.mom3d.ctfmodel.CtfMixture` of a fit's ``ctf`` argument (None: no CTF)."""
    if ctf is None:
        return None
    from cryomtd.mom3d.ctfmodel import CtfMixture

    return CtfMixture.of(ctf, pixel_size)


def _fit_stage(
    cost: _Cost,
    cost2: _Cost | None,
    sub: Any,
    c0: np.ndarray,
    gamma: float,
    settings: LsqSettings,
    min_gradient_norm: float,
) -> tuple[np.ndarray, float, float, list[float], int]:
    """One marching stage: the a1 + a2 warm start (``cost2``, when given), then the full cost."""
    adv = settings.advanced
    opt = dict(
        optimizer=adv.optimizer,
        max_iterations=settings.max_iterations,
        min_gradient_norm=min_gradient_norm,
        max_inner=adv.max_inner,
    )
    iters = 0
    if cost2 is not None:  # cheap warm start: a1 + a2 only (no rotations: the a2 map works on invariants)
        c0, gamma, _, _, it = _optimise(cost2, sub, c0, gamma, **opt)
        iters += it
    coef, gamma, f, trace, it = _optimise(cost, sub, c0, gamma, **opt)
    return coef, gamma, f, trace, iters + it


def fit_restart(
    moments: Any,
    basis: Any,
    settings: LsqSettings | None = None,
    *,
    rng: np.random.Generator,
    sigma: float | None = 0.0,
    window: int | None = None,
    model: MomentModel | None = None,
    restart: int = 0,
    min_gradient_norm: float = 1e-10,
    central: bool | None = None,
    ctf: Any = None,
    pixel_size: float | None = None,
    **overrides: Any,
) -> FitResult:
    """One restart of the fit with the ``lsq`` settings (default: the workflow's), its start drawn from ``rng``.

    ``ctf``: the micrographs' CTF groups (None: no CTF): a :class:`cryomtd.ctf.CtfGroupTable`
    (or its path), a list of (CTF, weight), one CTF, or a
    :class:`~cryomtd.mom3d.ctfmodel.CtfMixture`; ``pixel_size`` Å (required except for a table).
    The model is then that of CTF-filtered projections mixed over the groups, in every stage,
    start and the central-moment terms.

    ``central``: fit central moments, without a1 (:func:`zero_mean`: micrographs whose mean was
    removed, as preparation does); None = detect it from the moments.

    ``overrides`` change single settings by name (``max_iterations=50``, ``optimizer="trust-regions"``;
    :func:`cryomtd.settings.override`). ``window``: fit window W (default: the moments' own).
    Marching: fit ℓ ≤ 1, then ℓ ≤ 2, … up to the basis' ℓmax, each stage with the model of its
    own degree, started from the previous stage's coefficients plus small random new ones;
    ``a2_first`` starts each stage with a fit of a1 and a2 only. ``polish`` > 0 finishes with at
    most that many cost evaluations of :func:`gauss_newton_polish`. With ``symmetry`` (a point
    group, :mod:`cryomtd.basis.symmetry`) the fit runs over the symmetric volumes only
    (:class:`SymmetricModel`) and ``coef`` is returned in the full basis. ``init``: the start,
    "random" or "ball" (:mod:`cryomtd.mom3d.start`)."""
    t0 = time.perf_counter()
    s = override(settings or LsqSettings(), "lsq", **overrides)
    adv = s.advanced
    symmetry = _explicit_symmetry(s.symmetry)
    if adv.init not in INIT_KINDS:
        raise ValueError(f"lsq.advanced.init must be one of {INIT_KINDS}, got {adv.init!r}")
    W = int(window or getattr(moments, "window", basis.L))
    central = zero_mean(moments) if central is None else bool(central)
    if central and (adv.polish or adv.optimizer == "gauss-newton"):
        raise InputError(
            "lsq.advanced.polish / optimizer gauss-newton: not available for zero-mean micrographs (central "
            "moments); use the default conjugate gradients"
        )
    mix = _mixture(ctf, pixel_size)
    if model is None or model.W != W or model.ctf != mix:
        model = make_model(basis, W, adv.model, adv.cache_dir, mix)
    data = crop_moments(moments, W)
    stages = list(range(1, model.ell_max + 1)) if adv.marching and model.ell_max > 1 else [model.ell_max]
    coef: np.ndarray | None = None
    gamma = float(adv.gamma_init)
    trace: list[float] = []
    ends: list[int] = []
    iters = 0
    f = float("nan")
    for lmax in stages:
        sub = (
            model if lmax == model.ell_max else _stage_model(int(basis.L), int(lmax), W, model.kind, adv.cache_dir, mix)
        )
        if symmetry != "C1":
            sub = SymmetricModel(sub, symmetry)
        cost = _Cost(sub, data, sigma=sigma, weights=adv.weights, prior_weight=s.prior_weight, central=central)
        if coef is None:
            c0 = start_point(adv.init, sub, cost, rng, gamma, radius=adv.init_radius, spread=adv.init_spread)
        else:  # marching: keep the fitted low frequencies, small random high ones
            c0 = np.r_[coef, 1e-2 * random_start(sub, cost, rng, gamma)[coef.size :]]
        cost2 = (
            _Cost(
                sub,
                data,
                sigma=sigma,
                weights=(adv.weights[0], adv.weights[1], 0.0),
                prior_weight=s.prior_weight,
                central=central,
            )
            if adv.a2_first
            else None
        )
        coef, gamma, f, tr, it = _fit_stage(cost, cost2, sub, c0, gamma, s, min_gradient_norm)
        trace += tr
        iters += it
        ends.append(len(trace))
        log.info(
            "restart %d: ell<=%d cost %.3e after %d iterations (%.1f s)", restart, lmax, f, it, time.perf_counter() - t0
        )
    assert coef is not None
    if adv.polish:
        coef, gamma, f, tr, it = gauss_newton_polish(cost, coef, gamma, max_iterations=int(adv.polish))
        trace += tr
        iters += it
        ends.append(len(trace))
    if symmetry != "C1":
        coef = sub.full(torch.as_tensor(coef)).numpy()
    return FitResult(
        coef=coef,
        gamma=gamma,
        cost=f,
        cost_trace=np.asarray(trace),
        iterations=iters,
        wall_time_s=time.perf_counter() - t0,
        restart=restart,
        restart_costs=[f],
        stage_ends=ends,
        symmetry=symmetry,
    )


def refine_restart(
    moments: Any,
    basis: Any,
    coef: np.ndarray,
    gamma: float,
    settings: LsqSettings | None = None,
    *,
    sigma: float | None = 0.0,
    window: int | None = None,
    model: MomentModel | None = None,
    restart: int = 0,
    ctf: Any = None,
    pixel_size: float | None = None,
    **overrides: Any,
) -> FitResult:
    """Continue a fit from (``coef`` (basis.size,), ``gamma``) by at most ``refine_iterations`` cost
    evaluations of :func:`gauss_newton_polish` on the same cost as :func:`fit_restart` (same
    window, noise, weights, prior and ``symmetry``; a symmetric fit continues from the
    symmetric part Qᵀc, which is c itself for a restart of that fit). ``lsq.refine_top``
    gives the most promising restarts these extra iterations. ``ctf``, ``pixel_size``: as in
    :func:`fit_restart`."""
    t0 = time.perf_counter()
    s = override(settings or LsqSettings(), "lsq", **overrides)
    if zero_mean(moments):
        raise InputError("lsq.refine_top: Gauss-Newton refinement is not available for zero-mean micrographs")
    symmetry = _explicit_symmetry(s.symmetry)
    W = int(window or getattr(moments, "window", basis.L))
    mix = _mixture(ctf, pixel_size)
    if model is None or model.W != W or model.ctf != mix:
        model = make_model(basis, W, s.advanced.model, s.advanced.cache_dir, mix)
    coef = np.asarray(coef, dtype=np.float64)
    if coef.shape != (basis.size,):
        raise ValueError(f"coef has shape {coef.shape}, expected ({basis.size},)")
    sub: Any = model if symmetry == "C1" else SymmetricModel(model, symmetry)
    x0 = coef if symmetry == "C1" else sub.Q.numpy().T @ coef
    cost = _Cost(sub, crop_moments(moments, W), sigma=sigma, weights=s.advanced.weights, prior_weight=s.prior_weight)
    x, gamma, f, trace, it = gauss_newton_polish(cost, x0, float(gamma), max_iterations=int(s.refine_iterations))
    if symmetry != "C1":
        x = sub.full(torch.as_tensor(x)).numpy()
    log.info("refine restart %d: cost %.3e after %d Jacobians (%.1f s)", restart, f, it, time.perf_counter() - t0)
    return FitResult(
        coef=x,
        gamma=gamma,
        cost=f,
        cost_trace=np.asarray(trace),
        iterations=it,
        wall_time_s=time.perf_counter() - t0,
        restart=restart,
        restart_costs=[f],
        stage_ends=[len(trace)],
        symmetry=symmetry,
    )


def _explicit_symmetry(symbol: str) -> str:
    """The point group of one restart or refinement: ``auto`` must be resolved first (by
    :func:`fit`, or the workflow's ``detect_symmetry`` stage)."""
    from cryomtd.mom3d.detect import is_auto

    if is_auto(symbol):
        raise InputError(
            "lsq.symmetry: 'auto' is resolved by symmetry detection first (cryomtd.mom3d.fit or "
            "cryomtd.mom3d.detect.detect_symmetry); a single restart needs an explicit group"
        )
    return parse_symmetry(symbol, "lsq.symmetry")


def rank_by_cost(costs: Sequence[float]) -> np.ndarray:
    """Indices of ``costs`` from the lowest (non-finite costs last; ties in the given order)."""
    c = np.asarray(costs, dtype=np.float64)
    return np.argsort(np.where(np.isfinite(c), c, np.inf), kind="stable")


def fit(
    moments: Any,
    basis: Any,
    settings: LsqSettings | None = None,
    *,
    sigma: float | None = 0.0,
    seed: int = 0,
    window: int | None = None,
    ctf: Any = None,
    pixel_size: float | None = None,
    exact: bool | None = None,
    **overrides: Any,
) -> FitResult:
    """Fit (coefficients, γ) to ``moments`` by least squares: the workflow's lsq stage in one call.

    ``moments``: a :class:`cryomtd.moments.Moments2D` (or anything with ``.window``, ``.a1``,
    ``.a2``, ``.a3`` in its layout); ``basis``: :class:`cryomtd.basis.SphericalBessel`;
    ``settings``: the ``lsq`` block (default: the workflow's), ``overrides`` single settings by
    name (``restarts=3``, ``symmetry="C4"``); ``sigma``: noise standard deviation (0 for clean
    moments; None excludes the biased entries). Restart r starts from
    ``cryomtd.seeding.rng(seed, "lsq3d", r)``; the ``refine_top`` lowest-cost restarts are
    continued (:func:`refine_restart`); returns the lowest cost, with every restart's cost in
    ``restart_costs``. ``ctf``, ``pixel_size``: the micrographs' CTF groups (:func:`fit_restart`).

    ``symmetry: auto``: the point group is first detected from the moments
    (:func:`cryomtd.mom3d.detect.detect_symmetry`; ``exact``: the moments are noise-free, None =
    they have no pixel count), the restarts run in that group, and the best fit is relaxed to
    C1 (:func:`~cryomtd.mom3d.detect.relax_to_c1`, kept when it lowers the cost; the group is
    then decided again with the relaxed C1 cost, :func:`~cryomtd.mom3d.detect.after_relaxation`).
    The result's ``symmetry`` is that group, ``detection`` the detection's summary (``detected``:
    the group before the relaxation) plus ``relaxed`` (whether the returned coefficients are the
    C1 relaxation).
    """
    from cryomtd.mom3d.detect import after_relaxation, detect_symmetry, is_auto, relax_to_c1
    from cryomtd.progress import progress
    from cryomtd.seeding import rng

    s = override(settings or LsqSettings(), "lsq", **overrides)
    W = int(window or getattr(moments, "window", basis.L))
    mix = _mixture(ctf, pixel_size)
    model = make_model(basis, W, s.advanced.model, s.advanced.cache_dir, mix)
    det = None
    if is_auto(s.symmetry):
        det = detect_symmetry(moments, basis, s, sigma=sigma, seed=seed, window=W, exact=exact, model=model, ctf=mix)
        s = override(s, "lsq", symmetry=det.group)
    runs = [
        fit_restart(
            moments, basis, s, rng=rng(seed, "lsq3d", r), sigma=sigma, window=W, model=model, restart=r, ctf=mix
        )
        for r in progress(range(s.restarts), desc="restarts")
    ]
    costs = [r.cost for r in runs]
    for k in rank_by_cost(costs)[: s.refine_top]:
        src = runs[k]
        more = refine_restart(
            moments, basis, src.coef, src.gamma, s, sigma=sigma, window=W, model=model, restart=src.restart, ctf=mix
        )
        more.cost_trace = np.r_[src.cost_trace, more.cost_trace]
        more.stage_ends = src.stage_ends + [len(more.cost_trace)]
        more.iterations += src.iterations
        more.wall_time_s += src.wall_time_s
        runs.append(more)
    if det is not None:  # the detection's best fit of the chosen group competes too
        runs.append(det.fits[det.group])
    best = runs[int(rank_by_cost([r.cost for r in runs])[0])]
    relaxed = False
    if det is not None and det.group != "C1":
        more = relax_to_c1(
            moments,
            basis,
            best.coef,
            best.gamma,
            det.group,
            s,
            rng=rng(seed, "lsq3d-relax", 0),
            sigma=sigma,
            window=W,
            model=model,
            ctf=mix,
        )
        if more.cost < best.cost:
            more.cost_trace = np.r_[best.cost_trace, more.cost_trace]
            more.stage_ends = best.stage_ends + [len(more.cost_trace)]
            more.iterations += best.iterations
            more.wall_time_s += best.wall_time_s
            more.restart = best.restart
            best, relaxed = more, True
    best.restart_costs = costs
    if det is not None:
        summary = det.to_dict()
        if relaxed:  # a C1 cost far below the group's rejects the group (detect.after_relaxation)
            summary = after_relaxation(summary, best.cost)
        best.detection = {**summary, "relaxed": relaxed}
        best.symmetry = summary["group"]
    return best
