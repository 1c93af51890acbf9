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


def real_sph_harm_blocks(ell_max: int, points: np.ndarray, out: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield, for ℓ = 0 … ``ell_max``, the real harmonics at the directions of ``points``.

    ``points``: (..., 3) Cartesian (x, y, z), any non-zero length (the origin is
    treated as +z). Each yielded block has shape (..., 2ℓ+1), columns m = −ℓ … ℓ; with
    ``out`` (..., (ell_max+1)²) given, the blocks are written into (and are views of)
    ``out[..., ℓ²:(ℓ+1)²]``. Memory: O(#points · ℓ) at a time; a Python loop over ℓ only.
    """
    p = np.asarray(points, dtype=np.float64)
    shape = p.shape[:-1]
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    rho = np.hypot(x, y)
    r = np.hypot(rho, z)
    safe_r = np.where(r > 0, r, 1.0)
    c = np.where(r > 0, z / safe_r, 1.0)[..., None]
    s = rho / safe_r
    safe_rho = np.where(rho > 0, rho, 1.0)
    e1 = np.where(rho > 0, (x + 1j * y) / safe_rho, 1.0)  # e^{iφ}
    # √2·cos(mφ), √2·sin(mφ) for m = 0..ell_max on the last axis
    eim = np.sqrt(2.0) * np.cumprod(
        np.concatenate([np.ones(shape + (1,), complex), np.repeat(e1[..., None], ell_max, axis=-1)], axis=-1), axis=-1
    )
    cos_m, sin_m = np.ascontiguousarray(eim.real), np.ascontiguousarray(eim.imag)
    q_prev2 = np.zeros(shape + (0,))
    q_prev = np.zeros(shape + (0,))
    diag = np.full(shape, 1.0 / np.sqrt(4 * np.pi))  # Q_ℓ^ℓ
    for ell in range(ell_max + 1):
        # q[..., m] = Q_ℓ^m, m = 0..ℓ
        q = np.empty(shape + (ell + 1,))
        if ell > 0:
            diag = np.sqrt((2 * ell + 1) / (2 * ell)) * s * diag
            m = np.arange(ell)  # orders recursed in ℓ: Q_ℓ^m = a (cos θ Q_{ℓ−1}^m − b Q_{ℓ−2}^m), m < ℓ
            a = np.sqrt((4.0 * ell * ell - 1) / (ell * ell - m * m))
            b = np.sqrt(np.maximum((ell - 1.0) ** 2 - m * m, 0) / max(4.0 * (ell - 1) ** 2 - 1, 1.0))
            np.multiply(c, q_prev, out=q[..., :ell])
            q[..., : ell - 1] -= b[: ell - 1] * q_prev2
            q[..., :ell] *= a
        q[..., ell] = diag
        block = np.empty(shape + (2 * ell + 1,)) if out is None else out[..., ell * ell : (ell + 1) ** 2]
        block[..., ell] = q[..., 0]
        if ell > 0:
            np.multiply(q[..., 1:], cos_m[..., 1 : ell + 1], out=block[..., ell + 1 :])
            np.multiply(q[..., :0:-1], sin_m[..., ell:0:-1], out=block[..., :ell])
        yield block
        q_prev2, q_prev = q_prev, q


def real_sph_harm(ell_max: int, points: np.ndarray) -> np.ndarray:
    """All real harmonics up to ``ell_max`` at ``points`` (..., 3) → (..., (ell_max+1)²).

    Column index ℓ² + ℓ + m for (ℓ, m), i.e. ascending ℓ then m = −ℓ … ℓ.
    """
    p = np.asarray(points, dtype=np.float64)
    out = np.empty(p.shape[:-1] + ((ell_max + 1) ** 2,))
    for _ in real_sph_harm_blocks(ell_max, p, out=out):
        pass
    return out
