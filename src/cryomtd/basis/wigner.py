"""Real Wigner-D matrices for the real spherical harmonics of :mod:`.harmonics`.

Definition: D^ℓ_{mm'}(R) = ∫_{S²} Y_{ℓm}(u) Y_{ℓm'}(Rᵀu) du, so that a function
f(u) = Σ_m c_m Y_{ℓm}(u) rotated as f_R(u) = f(Rᵀu) has coefficients c' = D^ℓ(R) c;
equivalently Y_ℓ(Rᵀu) = D^ℓ(R)ᵀ Y_ℓ(u) at every point u. D^ℓ is orthogonal and
D^ℓ(R₁R₂) = D^ℓ(R₁) D^ℓ(R₂).

Computed by the Ivanic–Ruedenberg recursion (J. Phys. Chem. 100, 6342 (1996); errata
102, 9099 (1998)), in the form of Google's ``spherical-harmonics`` library: ℓ = 1 is R
with rows and columns reordered to (y, z, x) (the order of Y_{1,−1}, Y_{1,0}, Y_{1,1}),
and D^ℓ follows from D^1 and D^{ℓ−1} by fixed coefficients u, v, w. Each degree is a
few products on (n, 2ℓ+1, 2ℓ+1) arrays and one constant matrix product, vectorised
over rotations (in chunks that stay in cache), with no per-rotation Python work. It is
checked against the definition above in tests/test_basis.py.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["real_wigner"]

_CHUNK = 128  # rotations per chunk: keeps the work arrays of one degree in cache


@functools.cache
def _recursion_matrix(l: int) -> tuple[np.ndarray, np.ndarray]:
    """Constant M_ℓ (2ℓ+1, 3(2ℓ−1)) and column scale c_ℓ (2ℓ+1,) with D^ℓ = (M_ℓ · P) ⊙ c_ℓ.

    P stacks P(i, a, b) for i = −1, 0, +1 (blocks of 2ℓ−1 rows a). The Ivanic–Ruedenberg
    coefficients u, v, w factor as (function of the row m) / √denom(n), so the whole
    recursion step is one constant matrix product per degree (BLAS) and a column scale.
    """
    m = np.arange(-l, l + 1)
    am = np.abs(m)
    d = (m == 0).astype(float)
    n = np.arange(-l, l + 1)
    scale = 1.0 / np.sqrt(np.where(np.abs(n) == l, 2.0 * l * (2 * l - 1), ((l + n) * (l - n)).astype(float)))
    u = np.sqrt(((l + m) * (l - m)).astype(float))
    v = 0.5 * np.sqrt((1 + d) * (l + am - 1) * (l + am)) * (1 - 2 * d)
    w = -0.5 * np.sqrt(np.maximum((l - am - 1) * (l - am), 0).astype(float)) * (1 - d)
    one, minus_one, zero = (m == 1).astype(float), (m == -1).astype(float), m == 0
    # V(m, n) = aV·P(+1, iAV, n) + bV·P(−1, iBV, n);  W(m, n) = aW·P(+1, iAW, n) + bW·P(−1, iBW, n);  U = P(0, m, n)
    aV = np.where(zero, 1.0, np.where(m > 0, np.sqrt(1 + one), 1 - minus_one))
    iAV = np.where(zero, 1, np.where(m > 0, m - 1, m + 1))
    bV = np.where(zero, 1.0, np.where(m > 0, -(1 - one), np.sqrt(1 + minus_one)))
    iBV = np.where(zero, -1, np.where(m > 0, -m + 1, -m - 1))
    aW = np.where(zero, 0.0, 1.0)
    iAW = np.where(m > 0, m + 1, m - 1)
    bW = np.where(zero, 0.0, np.where(m > 0, 1.0, -1.0))
    iBW = np.where(m > 0, -m - 1, -m + 1)
    k = 2 * l - 1
    M = np.zeros((2 * l + 1, 3 * k))
    rows = np.arange(2 * l + 1)
    for block, idx, coef in ((1, m, u), (2, iAV, v * aV), (0, iBV, v * bV), (2, iAW, w * aW), (0, iBW, w * bW)):
        ok = (np.abs(idx) <= l - 1) & (coef != 0)
        np.add.at(M, (rows[ok], block * k + idx[ok] + (l - 1)), coef[ok])
    return M, scale


def _step(D1: np.ndarray, Dp: np.ndarray, l: int) -> np.ndarray:
    """D^ℓ from D^1 and D^{ℓ−1}, both stored rows-first: D1 (3, n, 3), Dp (2ℓ−1, n, 2ℓ−1) → (2ℓ+1, n, 2ℓ+1).

    Rows-first storage makes the recursion one (2ℓ+1) × 3(2ℓ−1) by 3(2ℓ−1) × n(2ℓ+1)
    matrix product for all rotations of the chunk.
    """
    k, n = 2 * l - 1, D1.shape[1]
    P = np.empty((3, k, n, 2 * l + 1))  # P(i, a, ·, b), i = −1, 0, +1
    c0, c1, c2 = (D1[:, None, :, j, None] for j in range(3))  # D1[i, ·, j] as (3, 1, n, 1)
    P[..., 1:-1] = c1 * Dp[None]
    P[..., -1:] = c2 * Dp[None, :, :, -1:] - c0 * Dp[None, :, :, :1]
    P[..., :1] = c2 * Dp[None, :, :, :1] + c0 * Dp[None, :, :, -1:]
    M, scale = _recursion_matrix(l)
    return (M @ P.reshape(3 * k, n * (2 * l + 1))).reshape(2 * l + 1, n, 2 * l + 1) * scale


def real_wigner(ell_max: int, R: np.ndarray) -> list[np.ndarray]:
    """List over ℓ = 0 … ell_max of real Wigner matrices (n, 2ℓ+1, 2ℓ+1) for R (n, 3, 3) or (3, 3)."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    n = R.shape[0]
    out = [np.ones((n, 1, 1))] + [np.empty((n, 2 * l + 1, 2 * l + 1)) for l in range(1, ell_max + 1)]
    perm = [1, 2, 0]  # (x, y, z) → (y, z, x) = order of m = −1, 0, 1
    for a in range(0, n, _CHUNK):
        D1 = R[a : a + _CHUNK][:, perm][:, :, perm]
        if ell_max >= 1:
            out[1][a : a + _CHUNK] = D1
        D1 = np.ascontiguousarray(D1.transpose(1, 0, 2))  # rows first
        Dp = D1
        for l in range(2, ell_max + 1):
            Dp = _step(D1, Dp, l)
            out[l][a : a + _CHUNK] = Dp.transpose(1, 0, 2)
    return out
