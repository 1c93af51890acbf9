"""Real Wigner-D matrices for the real spherical harmonics of :mod:`.harmonics`.

D^ℓ_{mm'}(R) = ∫_{S²} Y_{ℓm}(u) Y_{ℓm'}(Rᵀu) du, so that a function
f(u) = Σ_m c_m Y_{ℓm}(u) rotated as f_R(u) = f(Rᵀu) has coefficients c' = D^ℓ(R) c.
D^ℓ is orthogonal and D^ℓ(R₁R₂) = D^ℓ(R₁) D^ℓ(R₂).

Computed exactly by a product quadrature on the sphere (Gauss–Legendre in cos θ with
ℓmax+1 nodes × 2ℓmax+1 uniform azimuths, exact for the degree-2ℓmax integrand),
vectorised over rotations (chunked to bound memory).
"""

from __future__ import annotations

import functools

import numpy as np

from cryomtd.basis.harmonics import real_sph_harm_blocks

__all__ = ["real_wigner"]


@functools.lru_cache(maxsize=16)
def _sphere_rule(ell_max: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    x, w = np.polynomial.legendre.leggauss(ell_max + 1)
    n_phi = 2 * ell_max + 1
    phi = np.arange(n_phi) * (2 * np.pi / n_phi)
    st = np.sqrt(1 - x * x)
    pts = np.stack([np.outer(st, np.cos(phi)), np.outer(st, np.sin(phi)), np.repeat(x[:, None], n_phi, 1)], -1)
    weights = np.repeat(w[:, None] * (2 * np.pi / n_phi), n_phi, 1).ravel()
    pts = pts.reshape(-1, 3)
    weighted = tuple(Y * weights[:, None] for Y in real_sph_harm_blocks(ell_max, pts))
    return pts, weighted


def real_wigner(ell_max: int, R: np.ndarray, chunk_points: int = 400_000) -> list[np.ndarray]:
    """List over ℓ = 0 … ell_max of real Wigner matrices (n, 2ℓ+1, 2ℓ+1) for R (n, 3, 3)."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    pts, wY = _sphere_rule(ell_max)
    n = R.shape[0]
    out = [np.empty((n, 2 * l + 1, 2 * l + 1)) for l in range(ell_max + 1)]
    step = max(1, chunk_points // pts.shape[0])
    for a in range(0, n, step):
        rot_pts = np.einsum("nji,pj->npi", R[a:a + step], pts)  # Rᵀ u for each node u
        for l, Y_rot in enumerate(real_sph_harm_blocks(ell_max, rot_pts)):
            out[l][a:a + step] = np.einsum("pm,npk->nmk", wY[l], Y_rot)
    return out
