"""Zeros of spherical Bessel functions and the normalised radial functions of the ball.

Radial function of the spherical-Bessel basis on the ball of radius R:

    f_{ℓs}(r) = N_{ℓs} j_ℓ(z_{ℓs} r / R),  r < R;  0 outside,
    N_{ℓs} = √(2 / R³) / |j_{ℓ+1}(z_{ℓs})|,

z_{ℓs} the s-th positive zero of j_ℓ (s = 0, 1, … counts from the first zero), so that
∫_0^R f_{ℓs} f_{ℓs'} r² dr = δ_{ss'} (the closed form
∫_0^R j_ℓ(z r/R)² r² dr = R³ j_{ℓ+1}(z)² / 2 at a zero z of j_ℓ).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import spherical_jn

__all__ = ["spherical_jn_zeros", "radial_functions"]


def _bracketed_zeros(ell, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Zeros of j_ℓ, one in each bracket (lo, hi) where j_ℓ changes sign; vectorised
    (``ell`` an int or an array of orders matching ``lo``).

    8 bisection steps (bracket width ≤ π/256), then safeguarded Newton steps until
    the step is below 4 ulp (quadratic convergence: 3–5 steps).
    """
    f_lo = spherical_jn(ell, lo)
    for _ in range(8):
        mid = 0.5 * (lo + hi)
        f_mid = spherical_jn(ell, mid)
        left = np.sign(f_mid) == np.sign(f_lo)
        lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
        f_lo = np.where(left, f_mid, f_lo)
    x = 0.5 * (lo + hi)
    for _ in range(20):
        step = spherical_jn(ell, x) / spherical_jn(ell, x, derivative=True)
        x = np.clip(x - step, lo, hi)
        if np.all(np.abs(step) <= 4 * np.finfo(np.float64).eps * x):
            break
    return x


def spherical_jn_zeros(ell_max: int, z_max: float) -> list[np.ndarray]:
    """Positive zeros of j_ℓ below ``z_max``, for ℓ = 0 … ``ell_max`` (a list of 1-D arrays).

    Consecutive positive zeros of J_ν are more than π apart for ν > 1/2 (exactly π for
    j_0 = J_{1/2}·√(π/2x)), so on a grid of step 1/2 each sign change of j_ℓ brackets
    exactly one zero. All orders are tabulated on the grid in one call, and all brackets
    are refined together (bisection, then Newton) — about 20 vectorised evaluations in all.
    """
    h = 0.5
    x = np.arange(1, int(math.ceil(z_max / h)) + 2) * h  # covers (0, z_max + h]
    ells = np.arange(ell_max + 1)
    f = spherical_jn(ells[:, None], x[None, :])
    change = np.signbit(f[:, :-1]) != np.signbit(f[:, 1:])
    change &= (f[:, :-1] != 0) & (f[:, 1:] != 0)  # underflow to 0 near the origin is not a zero
    li, xi = np.nonzero(change)
    zeros = _bracketed_zeros(ells[li], x[xi], x[xi + 1]) if li.size else np.zeros(0)
    keep = zeros < z_max
    li, zeros = li[keep], zeros[keep]
    return [np.sort(zeros[li == ell]) for ell in ells]


def radial_functions(ell: int, zeros: np.ndarray, r: np.ndarray, R: float) -> np.ndarray:
    """f_{ℓs}(r) for every zero in ``zeros`` (module docstring): shape r.shape + (len(zeros),)."""
    r = np.asarray(r, dtype=np.float64)
    zeros = np.asarray(zeros, dtype=np.float64)
    norm = np.sqrt(2.0 / R**3) / np.abs(spherical_jn(ell + 1, zeros))
    vals = spherical_jn(ell, r[..., None] * (zeros / R)) * norm
    return np.where((r < R)[..., None], vals, 0.0)
