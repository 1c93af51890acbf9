"""Real spherical harmonics, evaluated from Cartesian points by a stable recursion.

Definition (the real parameterisation used by every basis in cryomtd): with θ the polar
angle from +z, φ the azimuth from +x towards +y, and Q_ℓ^m(cos θ) the orthonormalised
associated Legendre function *without* the Condon–Shortley phase,

    Y_{ℓ,0}  = Q_ℓ^0(cos θ)
    Y_{ℓ,m}  = √2 Q_ℓ^m(cos θ) cos(m φ)      (m > 0)
    Y_{ℓ,−m} = √2 Q_ℓ^m(cos θ) sin(m φ)      (m > 0)

orthonormal on the unit sphere: ∫ Y_{ℓm} Y_{ℓ'm'} dΩ = δ_{ℓℓ'} δ_{mm'}. In terms of the
complex harmonics with Condon–Shortley phase (scipy's ``sph_harm_y``),
Y_{ℓ,m} = √2 (−1)^m Re Y_ℓ^m and Y_{ℓ,−m} = √2 (−1)^m Im Y_ℓ^m for m > 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["real_sph_harm", "real_sph_harm_blocks"]


def real_sph_harm_blocks(ell_max: int, points: np.ndarray) -> Iterator[np.ndarray]:
    """Yield, for ℓ = 0 … ``ell_max``, the real harmonics at the directions of ``points``.

    ``points``: (..., 3) Cartesian (x, y, z), any non-zero length (the origin is
    treated as +z). Each yielded block has shape (..., 2ℓ+1), columns m = −ℓ … ℓ.
    Memory: O(#points · ℓ) at a time; a Python loop over ℓ only.
    """
    p = np.asarray(points, dtype=np.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    rho = np.hypot(x, y)
    r = np.hypot(rho, z)
    safe_r = np.where(r > 0, r, 1.0)
    c = np.where(r > 0, z / safe_r, 1.0)
    s = rho / safe_r
    safe_rho = np.where(rho > 0, rho, 1.0)
    e1 = np.where(rho > 0, (x + 1j * y) / safe_rho, 1.0)  # e^{iφ}
    # e^{imφ} for m = 0..ell_max, stacked on the last axis.
    eim = np.cumprod(np.concatenate([np.ones(p.shape[:-1] + (1,), complex),
                                     np.repeat(e1[..., None], ell_max, axis=-1)], axis=-1), axis=-1)
    cos_m, sin_m = eim.real, eim.imag
    sqrt2 = np.sqrt(2.0)
    q_prev2 = np.zeros(p.shape[:-1] + (0,))
    q_prev = np.zeros(p.shape[:-1] + (0,))
    diag = np.full(p.shape[:-1], 1.0 / np.sqrt(4 * np.pi))  # Q_ℓ^ℓ
    for ell in range(ell_max + 1):
        if ell > 0:
            diag = np.sqrt((2 * ell + 1) / (2 * ell)) * s * diag
        m = np.arange(ell)  # orders recursed in ℓ: Q_ℓ^m, m < ℓ
        if ell > 0:
            a = np.sqrt((4.0 * ell * ell - 1) / (ell * ell - m * m))
            b = np.sqrt(np.maximum((ell - 1.0) ** 2 - m * m, 0) / max(4.0 * (ell - 1) ** 2 - 1, 1.0))
            prev2 = np.concatenate([q_prev2, np.zeros(p.shape[:-1] + (ell - q_prev2.shape[-1],))], axis=-1)
            q_low = a * (c[..., None] * q_prev - b * prev2)
            q = np.concatenate([q_low, diag[..., None]], axis=-1)
        else:
            q = diag[..., None]
        # q[..., m] = Q_ℓ^m, m = 0..ℓ
        block = np.empty(p.shape[:-1] + (2 * ell + 1,))
        block[..., ell] = q[..., 0]
        if ell > 0:
            block[..., ell + 1:] = sqrt2 * q[..., 1:] * cos_m[..., 1:ell + 1]
            block[..., :ell] = (sqrt2 * q[..., 1:] * sin_m[..., 1:ell + 1])[..., ::-1]
        yield block
        q_prev2, q_prev = q_prev, q


def real_sph_harm(ell_max: int, points: np.ndarray) -> np.ndarray:
    """All real harmonics up to ``ell_max`` at ``points`` (..., 3) → (..., (ell_max+1)²).

    Column index ℓ² + ℓ + m for (ℓ, m), i.e. ascending ℓ then m = −ℓ … ℓ.
    """
    return np.concatenate(list(real_sph_harm_blocks(ell_max, points)), axis=-1)
