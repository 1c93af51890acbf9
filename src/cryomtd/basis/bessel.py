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


def _bracketed_zeros(ell: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Zeros of j_ℓ, one in each bracket (lo, hi) where j_ℓ changes sign; vectorised.

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

    Uses the interlacing of the zeros of j_ℓ and j_{ℓ+1} (each zero of j_{ℓ+1} lies
    between consecutive zeros of j_ℓ), starting from the zeros kπ of j_0. The zero
    j_ℓ's k-th zero is below j_0's (k+ℓ)-th, so starting with ⌈z_max/π⌉ + ℓ_max + 1
    zeros of j_0 leaves at least one zero ≥ z_max at every degree.
    """
    zeros = np.arange(1, int(math.ceil(z_max / math.pi)) + ell_max + 2) * math.pi
    out = [zeros[zeros < z_max]]
    for ell in range(1, ell_max + 1):
        zeros = _bracketed_zeros(ell, zeros[:-1].copy(), zeros[1:].copy())
        out.append(zeros[zeros < z_max])
    return out


def radial_functions(ell: int, zeros: np.ndarray, r: np.ndarray, R: float) -> np.ndarray:
    """f_{ℓs}(r) for every zero in ``zeros`` (module docstring): shape r.shape + (len(zeros),)."""
    r = np.asarray(r, dtype=np.float64)
    zeros = np.asarray(zeros, dtype=np.float64)
    norm = np.sqrt(2.0 / R**3) / np.abs(spherical_jn(ell + 1, zeros))
    vals = spherical_jn(ell, r[..., None] * (zeros / R)) * norm
    return np.where((r < R)[..., None], vals, 0.0)
