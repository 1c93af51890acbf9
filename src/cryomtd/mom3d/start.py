"""Starting points of the least-squares fit (``lsq.init``): random, or a soft ball plus random detail.

The moment cost has many local minima; which basin a restart reaches is decided mostly by
the ℓ = 0 block (the spherically averaged density, the bulk of a compact molecule's
energy). The standard ab-initio start of the field, a featureless sphere, puts that block
close to the truth, and its radius can be read off the data (measurements: docs/mom3d.md,
benchmarks/RESULTS.md):

* :func:`ball_radius` — the radius R of the soft ball 1/(1 + exp((r − R)/edge)) whose
  model second moment a2 best matches the data's a2 (up to one scale factor, the unknown
  γ·amplitude², solved in closed form). a2 needs no rotations, so the scan is cheap.
* :func:`ball_start` — that ball's coefficients (its ℓ = 0 block; the grid adds a tiny
  ℓ = 4 part), plus random coefficients in every other ℓ block with norm
  ``spread`` × the ball's norm (the restart's randomness), scaled like the random start.
* :func:`random_start` — standard-normal coefficients, scaled so that the model's Σ a2
  matches the data's.

All work on the fit's model coordinates: the basis coefficients, or the reduced
coefficients z of a :class:`~cryomtd.mom3d.symmetric.SymmetricModel` (c = Q z).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cryomtd.volume import soft_ball

__all__ = ["INIT_KINDS", "random_start", "ball_radius", "ball_start", "start_point"]

log = logging.getLogger("cryomtd.mom3d")

INIT_KINDS = ("random", "ball")


def _to_model(model: Any, coef: np.ndarray) -> np.ndarray:
    """Basis coefficients → the model's coordinates (Qᵀ c for a symmetric model)."""
    Q = getattr(model, "Q", None)
    return coef if Q is None else Q.numpy().T @ coef


def _from_model(model: Any, x: np.ndarray) -> np.ndarray:
    Q = getattr(model, "Q", None)
    return x if Q is None else Q.numpy() @ x


def _a2_sum(model: Any, cost: Any, x: np.ndarray, gamma0: float) -> float:
    """γ0/L² Σ_{S2} m2(x): the model's a2 summed over the fitted lags (no noise term)."""
    with torch.no_grad():
        _, m2, _ = model.box_moments(torch.as_tensor(x), third=False)
    return float(gamma0 / model.L**2 * m2.reshape(-1)[cost.m2].sum())


def _match_a2(model: Any, cost: Any, x: np.ndarray, gamma0: float) -> np.ndarray:
    """``x`` scaled so that the model's Σ a2 over the fitted lags equals the data's (a2 is quadratic in x)."""
    model_sum, data_sum = _a2_sum(model, cost, x, gamma0), float(cost.d2.sum())
    if model_sum != 0 and data_sum != 0:
        x = x * np.sqrt(abs(data_sum / model_sum))
    return x


def random_start(model: Any, cost: Any, rng: np.random.Generator, gamma0: float) -> np.ndarray:
    """Standard-normal model coordinates (model.size,), scaled so Σ a2 matches the data."""
    return _match_a2(model, cost, rng.standard_normal(model.size), gamma0)


def _ball_coefficients(basis: Any, radius: float, edge: float) -> np.ndarray:
    return basis.expand(soft_ball(basis.L, radius, edge))


def ball_radius(model: Any, cost: Any, *, edge: float = 1.0, step: float = 0.5) -> float:
    """Radius (pixels) of the soft ball whose model a2 best fits the data's a2 up to a scale.

    Relative misfit ‖s·m2(ball_R) − d2‖²/‖d2‖² with the best scale s (closed form), on the
    fitted lags of ``cost`` (noise-biased lags excluded when σ is unknown; with σ known
    the data's σ²δ(ℓ) term is removed first). Scanned on a ``step`` grid over
    [1, L/2] and refined by a bounded scalar search around the best grid point.
    """
    from scipy.optimize import minimize_scalar

    basis = model.basis
    d = cost.d2.numpy() - cost.a2_noise()

    def misfit(R: float) -> float:
        x = _to_model(model, _ball_coefficients(basis, R, edge))
        with torch.no_grad():
            _, m2, _ = model.box_moments(torch.as_tensor(x), third=False)
        m = m2.reshape(-1)[cost.m2].numpy()
        mm = float(m @ m)
        if mm == 0:
            return np.inf
        s = float(m @ d) / mm
        return float(np.sum((s * m - d) ** 2) / max(float(d @ d), 1e-300))

    grid = np.arange(1.0, basis.L / 2 + 1e-9, step)
    values = np.array([misfit(R) for R in grid])
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(misfit, bounds=(lo, hi), method="bounded", options={"xatol": 1e-2})
    R = float(res.x) if res.fun <= values[i] else float(grid[i])
    log.info("ball start: radius %.2f px (a2 misfit %.3g)", R, min(float(res.fun), float(values[i])))
    return R


def ball_start(
    model: Any,
    cost: Any,
    rng: np.random.Generator,
    gamma0: float,
    *,
    radius: float,
    spread: float = 0.3,
    edge: float = 1.0,
) -> np.ndarray:
    """Soft ball of ``radius`` px plus random ℓ ≥ 1 coefficients of norm ``spread``·‖ball‖,
    in model coordinates (model.size,), scaled so Σ a2 matches the data."""
    basis = model.basis
    ball = _to_model(model, _ball_coefficients(basis, radius, edge))
    noise = _from_model(model, rng.standard_normal(model.size))
    noise[np.asarray(basis.ell) == 0] = 0.0  # the random part lives in the ℓ ≥ 1 blocks
    noise = _to_model(model, noise)
    n = float(np.linalg.norm(noise))
    x = ball + (spread * float(np.linalg.norm(ball)) / n * noise if n > 0 else 0.0)
    return _match_a2(model, cost, x, gamma0)


def start_point(
    kind: str,
    model: Any,
    cost: Any,
    rng: np.random.Generator,
    gamma0: float,
    *,
    radius: float | None = None,
    spread: float = 0.3,
) -> np.ndarray:
    """The start of one restart: ``kind`` "random" or "ball" (``radius`` None: :func:`ball_radius`)."""
    if kind == "random":
        return random_start(model, cost, rng, gamma0)
    if kind == "ball":
        R = ball_radius(model, cost) if radius is None else float(radius)
        return ball_start(model, cost, rng, gamma0, radius=R, spread=spread)
    raise ValueError(f"lsq.init must be one of {INIT_KINDS}, got {kind!r}")
