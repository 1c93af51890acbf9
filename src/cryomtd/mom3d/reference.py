"""Plain reference implementation of the moment model (for tests and benchmarks only).

Projects the volume at every rotation of a quadrature rule (``basis.project``) and forms
each projection's autocorrelations by a direct product-sum per lag pair — no symmetry,
no invariants, no Gram products. Slow by design: it is what the fast path in
:mod:`cryomtd.mom3d.model` must reproduce to machine precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryomtd.mom3d.model import ModelMoments

__all__ = ["box_autocorrelations", "expected_moments_reference"]


def box_autocorrelations(
    images: np.ndarray, W: int, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted sums over images (n, L, L) of Σ_r p[r], Σ_r p[r]p[r+ℓ], Σ_r p[r]p[r+ℓ1]p[r+ℓ2].

    Zero outside each image; lags |ℓ|∞ ≤ W−1; dense layout of ``autocorrelations_2d``.
    A Python loop over lag pairs, each a vectorised product-sum over images and pixels.
    """
    images = np.asarray(images, dtype=np.float64)
    n, L, _ = images.shape
    w = np.full(n, 1.0) if weights is None else np.asarray(weights, dtype=np.float64)
    K = 2 * W - 1
    pad = np.zeros((n, L + 2 * (W - 1), L + 2 * (W - 1)))
    pad[:, W - 1 : W - 1 + L, W - 1 : W - 1 + L] = images

    def shifted(ly: int, lx: int) -> np.ndarray:  # p[r + ℓ] for r over the image support
        return pad[:, W - 1 + ly : W - 1 + ly + L, W - 1 + lx : W - 1 + lx + L]

    lags = [(ly, lx) for ly in range(-(W - 1), W) for lx in range(-(W - 1), W)]
    a1 = float(np.einsum("q,qyx->", w, images))
    a2 = np.zeros((K, K))
    for ly, lx in lags:
        a2[ly + W - 1, lx + W - 1] = np.einsum("q,qyx,qyx->", w, images, shifted(ly, lx))
    a3 = np.zeros((K, K, K, K))
    for l1y, l1x in lags:
        prod = w[:, None, None] * images * shifted(l1y, l1x)
        for l2y, l2x in lags:
            a3[l1y + W - 1, l1x + W - 1, l2y + W - 1, l2x + W - 1] = np.sum(prod * shifted(l2y, l2x))
    return a1, a2, a3


def expected_moments_reference(
    basis: Any,
    coef: np.ndarray,
    gamma: float,
    W: int,
    *,
    sigma: float = 0.0,
    rotations: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> ModelMoments:
    """The model by brute force over a rotation rule (default ``so3_quadrature(3·ell_max)``).

    With explicit ``rotations`` (n, 3, 3) and ``weights`` (n,) summing to 1 (e.g. Haar
    samples with weights 1/n) it is a Monte-Carlo estimate instead.
    """
    if rotations is None:
        from cryomtd.rotations import so3_quadrature

        rotations, weights = so3_quadrature(3 * int(np.max(basis.ell)))
    rotations = np.asarray(rotations, dtype=np.float64)
    weights = np.full(len(rotations), 1.0 / len(rotations)) if weights is None else np.asarray(weights)
    images = np.asarray(basis.project(np.asarray(coef, dtype=np.float64), rotations)).reshape(
        len(rotations), basis.L, basis.L
    )
    m1, m2, m3 = box_autocorrelations(images, W, weights)
    scale = gamma / basis.L**2
    a1 = scale * m1
    a2 = scale * m2
    a3 = scale * m3
    c = W - 1
    a2[c, c] += sigma**2
    a3[c, c, :, :] += sigma**2 * a1
    a3[:, :, c, c] += sigma**2 * a1
    K = 2 * W - 1
    i = np.arange(K)
    a3[i[:, None], i[None, :], i[:, None], i[None, :]] += sigma**2 * a1
    return ModelMoments(W, a1, a2, a3)
