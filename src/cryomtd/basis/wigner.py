"""Real Wigner-D matrices for the real spherical harmonics of :mod:`.harmonics`.

Definition: D^ℓ_{mm'}(R) = ∫_{S²} Y_{ℓm}(u) Y_{ℓm'}(Rᵀu) du, so that a function
f(u) = Σ_m c_m Y_{ℓm}(u) rotated as f_R(u) = f(Rᵀu) has coefficients c' = D^ℓ(R) c;
equivalently Y_ℓ(Rᵀu) = D^ℓ(R)ᵀ Y_ℓ(u) at every point u. D^ℓ is orthogonal and
D^ℓ(R₁R₂) = D^ℓ(R₁) D^ℓ(R₂).

Computed by the Ivanic–Ruedenberg recursion (J. Phys. Chem. 100, 6342 (1996); errata
102, 9099 (1998)), in the form of Google's ``spherical-harmonics`` library: ℓ = 1 is R
with rows and columns reordered to (y, z, x) (the order of Y_{1,−1}, Y_{1,0}, Y_{1,1}),
and D^ℓ follows from D^1 and D^{ℓ−1} by fixed coefficients u, v, w. Each degree is a
handful of gathers and products on (n, 2ℓ+1, 2ℓ+1) arrays: O(n ℓ_max³) work, vectorised
over rotations (in chunks that stay in cache), with no per-rotation Python work. It is
checked against the definition above in tests/test_basis.py.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["real_wigner"]

_CHUNK = 128  # rotations per chunk: keeps the (chunk, 2ℓ+1, 2ℓ+1) work arrays in cache


@functools.lru_cache(maxsize=None)
def _recursion_tables(l: int) -> tuple[np.ndarray, ...]:
    """Coefficients u, v, w (2ℓ+1, 2ℓ+1) and the row gathers of the U, V, W terms for degree ℓ ≥ 2."""
    m = np.arange(-l, l + 1)
    M, N = m[:, None], m[None, :]
    d = (M == 0).astype(float)
    denom = np.where(np.abs(N) == l, 2.0 * l * (2 * l - 1), ((l + N) * (l - N)).astype(float))
    u = np.sqrt((l + M) * (l - M) / denom)
    v = 0.5 * np.sqrt((1 + d) * (l + np.abs(M) - 1) * (l + np.abs(M)) / denom) * (1 - 2 * d)
    w = -0.5 * np.sqrt(np.maximum((l - np.abs(M) - 1) * (l - np.abs(M)), 0) / denom) * (1 - d)
    one, minus_one, zero = (m == 1).astype(float), (m == -1).astype(float), m == 0

    def rows(i):  # row a of D^{ℓ−1} (a ∈ [−ℓ+1, ℓ−1]) → array index; clipped where the weight is 0
        return np.clip(i, -(l - 1), l - 1) + (l - 1)

    # V(m, n) = aV·P(+1, iAV, n) + bV·P(−1, iBV, n);  W(m, n) = aW·P(+1, iAW, n) + bW·P(−1, iBW, n)
    aV = np.where(zero, 1.0, np.where(m > 0, np.sqrt(1 + one), 1 - minus_one))
    iAV = np.where(zero, 1, np.where(m > 0, m - 1, m + 1))
    bV = np.where(zero, 1.0, np.where(m > 0, -(1 - one), np.sqrt(1 + minus_one)))
    iBV = np.where(zero, -1, np.where(m > 0, -m + 1, -m - 1))
    aW = np.where(zero, 0.0, 1.0)
    iAW = np.where(m > 0, m + 1, m - 1)
    bW = np.where(zero, 0.0, np.where(m > 0, 1.0, -1.0))
    iBW = np.where(m > 0, -m - 1, -m + 1)
    return (u, v * aV[:, None], v * bV[:, None], w * aW[:, None], w * bW[:, None],
            rows(m), rows(iAV), rows(iBV), rows(iAW), rows(iBW))


def _step(D1: np.ndarray, Dp: np.ndarray, l: int) -> np.ndarray:
    """D^ℓ (n, 2ℓ+1, 2ℓ+1) from D^1 (n, 3, 3) and D^{ℓ−1} (n, 2ℓ−1, 2ℓ−1)."""
    n = D1.shape[0]
    P = []
    for i in range(3):  # i = −1, 0, +1: P(i, a, b) for all a, b
        Pi = np.empty((n, 2 * l - 1, 2 * l + 1))
        Pi[:, :, 1:-1] = D1[:, i, 1, None, None] * Dp
        Pi[:, :, -1] = D1[:, i, 2, None] * Dp[:, :, -1] - D1[:, i, 0, None] * Dp[:, :, 0]
        Pi[:, :, 0] = D1[:, i, 2, None] * Dp[:, :, 0] + D1[:, i, 0, None] * Dp[:, :, -1]
        P.append(Pi)
    Pm, P0, Pp = P
    u, vA, vB, wA, wB, iU, iAV, iBV, iAW, iBW = _recursion_tables(l)
    return u * P0[:, iU] + vA * Pp[:, iAV] + vB * Pm[:, iBV] + wA * Pp[:, iAW] + wB * Pm[:, iBW]


def real_wigner(ell_max: int, R: np.ndarray) -> list[np.ndarray]:
    """List over ℓ = 0 … ell_max of real Wigner matrices (n, 2ℓ+1, 2ℓ+1) for R (n, 3, 3) or (3, 3)."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    n = R.shape[0]
    out = [np.ones((n, 1, 1))]
    if ell_max >= 1:
        out += [np.empty((n, 2 * l + 1, 2 * l + 1)) for l in range(1, ell_max + 1)]
    perm = [1, 2, 0]  # (x, y, z) → (y, z, x) = order of m = −1, 0, 1
    for a in range(0, n, _CHUNK):
        D1 = R[a:a + _CHUNK][:, perm][:, :, perm]
        Dp = D1
        if ell_max >= 1:
            out[1][a:a + _CHUNK] = D1
        for l in range(2, ell_max + 1):
            Dp = _step(D1, Dp, l)
            out[l][a:a + _CHUNK] = Dp
    return out
