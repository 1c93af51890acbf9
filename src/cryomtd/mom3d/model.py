"""Expected micrograph autocorrelations of a volume in the spherical-Bessel basis (DESIGN §6).

Model (same layout and normalisation as :func:`cryomtd.moments.autocorrelations_2d`).
For a well-separated micrograph of density γ (particle boxes L×L), noise variance σ²,
and the projection p_ω = Ψ D(ω) c of the coefficient vector c at rotation ω:

    a1            = γ/L² · E_ω Σ_r p_ω[r]
    a2[ℓ]         = γ/L² · E_ω Σ_r p_ω[r] p_ω[r+ℓ]                  + σ² δ(ℓ)
    a3[ℓ1, ℓ2]    = γ/L² · E_ω Σ_r p_ω[r] p_ω[r+ℓ1] p_ω[r+ℓ2]
                    + σ² a1 (δ(ℓ1) + δ(ℓ2) + δ(ℓ1−ℓ2))

with lags |ℓ|∞ ≤ W−1, dense arrays a2 (2W−1, 2W−1) indexed [ℓy+W−1, ℓx+W−1] and a3
(2W−1,)*4 indexed [ℓ1y+W−1, ℓ1x+W−1, ℓ2y+W−1, ℓ2x+W−1].

The SO(3) average is **exact**: the integrand is a polynomial of degree ≤ 3·ell_max in
the Wigner-D entries, integrated by :func:`cryomtd.mom3d.quadrature.euler_quadrature`.
Fast path (all torch, differentiable, float64):

* rotations act per ℓ block as one batched matmul, projections are one matmul Ψ·c′;
* the in-plane angles come in quadruples ψ+k·90°, whose projections are exact 90° pixel
  rotations of each other (checked numerically on construction), so only a quarter of
  the projections is formed and the moments are symmetrised over the four 90° lag
  rotations afterwards (4× fewer projections and Gram products);
* the second moment uses the rotational invariants: E_ω[c′c′ᵀ] is block-diagonal,
  B_ℓ(s,s′)/(2ℓ+1) ⊗ I, with the power spectrum B_ℓ(s,s′) = Σ_m c_{ℓ,s,m} c_{ℓ,s′,m},
  so a2 = M2 · vec(B) with a map M2 precomputed once (no rotations per evaluation);
* the third moment of each projection is a Gram product over window vectors,
  Σ_r p[r] v_r v_rᵀ with v_r = (p[r+ℓ])_ℓ (DESIGN §4), batched over rotations: one
  matrix product of size (2W−1)² × (#rot·L²) × (2W−1)² per evaluation.

The gradient is exact by torch autograd through all of the above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint

from cryomtd.mom3d.quadrature import EulerQuadrature, euler_quadrature

__all__ = ["ModelMoments", "MomentModel", "expected_moments", "ell_blocks"]


@dataclass(frozen=True)
class ModelMoments:
    """Expected micrograph moments: ``a1`` float, ``a2`` (2W−1, 2W−1), ``a3`` (2W−1,)*4 (float64).

    Layout and normalisation of :func:`cryomtd.moments.autocorrelations_2d`.
    """

    window: int
    a1: float
    a2: np.ndarray
    a3: np.ndarray

    def to_moments2d(self, count: int = 1, **kwargs: Any) -> Any:
        """The same numbers as a :class:`cryomtd.moments.Moments2D` (for ``moments.npz``);
        ``kwargs`` go to ``Moments2D.from_dense`` (e.g. ``noise_sum=0.0`` for noise-free moments)."""
        from cryomtd.moments import Moments2D

        return Moments2D.from_dense(self.a1, self.a2, self.a3, count, self.window, **kwargs)


def ell_blocks(basis: Any) -> list[tuple[int, int, int]]:
    """(ell, start, n_radial) of each contiguous ℓ block of the coefficient layout.

    Layout (E3 contract): ascending ℓ, then radial index s, then m = −ℓ…ℓ; the ℓ block
    reshapes to (n_radial, 2ℓ+1) row-major.
    """
    ell = np.asarray(basis.ell)
    blocks = []
    for l in np.unique(ell):
        idx = np.flatnonzero(ell == l)
        if idx.size == 0 or np.any(np.diff(idx) != 1) or idx.size % (2 * l + 1):
            raise ValueError(f"basis coefficient layout: ell={l} block is not contiguous (n, 2l+1)")
        blocks.append((int(l), int(idx[0]), int(idx.size // (2 * l + 1))))
    return blocks


def _patches(images: torch.Tensor, W: int) -> torch.Tensor:
    """Window vectors (n, L*L, (2W−1)²): out[q, r, ℓ] = images[q][r + ℓ] (zero outside)."""
    n, L, _ = images.shape
    K = 2 * W - 1
    padded = torch.nn.functional.pad(images, (W - 1, W - 1, W - 1, W - 1))
    return padded.unfold(1, K, 1).unfold(2, K, 1).reshape(n, L * L, K * K)


class MomentModel:
    """Precomputed exact moment model for one basis and window ``W``.

    ``MomentModel(basis, W)``; then ``moments(coef, gamma, sigma)`` → (a1, a2, a3) torch
    tensors (differentiable in coef and gamma), or :meth:`numpy` for arrays.

    ``symmetry``: "auto" uses the quarter in-plane grid when the 90° check passes,
    True requires it, False always uses the full grid. ``max_batch_elements`` bounds
    the size of one batch of window vectors (rotations × L² × (2W−1)²).
    """

    def __init__(self, basis: Any, window: int, *, symmetry: bool | str = "auto",
                 max_batch_elements: int = 2**24) -> None:
        L = int(basis.L)
        if not 1 <= window <= L:
            raise ValueError(f"window must be in 1..L={L}, got {window}")
        self.basis = basis
        self.L, self.W, self.size = L, int(window), int(basis.size)
        self.ell_max = int(np.max(basis.ell)) if basis.size else 0
        self.blocks = ell_blocks(basis)
        self.dtype = torch.float64
        psi = np.array(basis.projection_matrix, dtype=np.float64)  # (L², size), own writable copy
        self.psi = torch.from_numpy(psi)
        self.quarter = self._check_quarter(basis, psi) if symmetry == "auto" else bool(symmetry)
        if symmetry is True and not self._check_quarter(basis, psi):
            raise ValueError("projections are not exactly 90°-rotation symmetric for this basis")
        self.quadrature: EulerQuadrature = euler_quadrature(3 * self.ell_max, quarter=self.quarter)
        R = self.quadrature.matrices()
        self.wigner = [torch.from_numpy(np.array(d, dtype=np.float64)) for d in basis.wigner(R)]
        self.weights = torch.from_numpy(self.quadrature.weights)
        K = (2 * self.W - 1) ** 2
        per_rot = L * L * K
        self.batch = max(1, int(max_batch_elements // per_rot))
        # a1: only ℓ = 0 survives the rotation average; E_ω Σ_r p = (Σ_r Ψ)·c restricted to ℓ=0.
        ell = np.asarray(basis.ell)
        self.a1_row = torch.from_numpy(np.where(ell == 0, psi.sum(axis=0), 0.0))
        self._m2 = self._second_moment_map()

    # ---------------------------------------------------------------- precomputation
    def _check_quarter(self, basis: Any, psi: np.ndarray) -> bool:
        """True when Ψ D(Rz(90°)) c is an exact 90° pixel rotation of Ψ c (random c)."""
        from cryomtd.rotations import euler_to_matrix

        c = np.random.default_rng(12345).standard_normal(basis.size)
        R = np.asarray(euler_to_matrix(0.0, 0.0, 90.0, degrees=True), dtype=np.float64).reshape(3, 3)
        img = (psi @ c).reshape(self.L, self.L)
        rot = (psi @ self._rotate_np(basis, c, R)).reshape(self.L, self.L)
        tol = 1e-9 * max(1.0, np.abs(img).max())
        return any(np.abs(np.rot90(img, k) - rot).max() < tol for k in (1, -1))

    def _rotate_np(self, basis: Any, c: np.ndarray, R: np.ndarray) -> np.ndarray:
        D = basis.wigner(R[None])
        out = np.empty_like(c)
        for (l, start, S), d in zip(self.blocks, [D[l] for l, _, _ in self.blocks]):
            n = S * (2 * l + 1)
            out[start:start + n] = (c[start:start + n].reshape(S, 2 * l + 1) @ d[0].T).ravel()
        return out

    def _second_moment_map(self) -> list[torch.Tensor]:
        """Per ℓ: M2_ℓ (K2, S, S) with a2 = γ/L² Σ_ℓ Σ_{s,s′} M2_ℓ[:, s, s′] B_ℓ(s, s′).

        M2_ℓ[ℓag, s, s′] = 1/(2ℓ+1) Σ_m Σ_r Ψ_{ℓ,s,m}[r] Ψ_{ℓ,s′,m}[r+lag].
        """
        L, W = self.L, self.W
        maps = []
        for l, start, S in self.blocks:
            n = S * (2 * l + 1)
            imgs = self.psi[:, start:start + n].T.reshape(S, 2 * l + 1, L, L).reshape(-1, L, L)
            V = _patches(imgs, W).reshape(S, 2 * l + 1, L * L, -1)        # [s', m, r, lag]
            img = imgs.reshape(S, 2 * l + 1, L * L)                        # [s, m, r]
            maps.append(torch.einsum("smr,tmrk->kst", img, V) / (2 * l + 1))
        return maps

    # ---------------------------------------------------------------- evaluation
    def rotated(self, coef: torch.Tensor, sl: slice) -> torch.Tensor:
        """Coefficients of the volume at the quadrature rotations ``sl``: (n_rot, size)."""
        parts = []
        for l, start, S in self.blocks:
            n = S * (2 * l + 1)
            c = coef[start:start + n].reshape(S, 2 * l + 1)
            parts.append(torch.einsum("qmk,sk->qsm", self.wigner[l][sl], c).reshape(-1, n))
        return torch.cat(parts, dim=1)

    def projections(self, coef: torch.Tensor, sl: slice = slice(None)) -> torch.Tensor:
        """Projections at the quadrature rotations ``sl``: (n_rot, L, L)."""
        return (self.rotated(coef, sl) @ self.psi.T).reshape(-1, self.L, self.L)

    def _symmetrise(self, a: torch.Tensor, order: int) -> torch.Tensor:
        if not self.quarter:
            return a
        K = 2 * self.W - 1
        if order == 2:
            return sum(torch.rot90(a, k, (0, 1)) for k in range(4))
        a = a.reshape(K, K, K, K)
        return sum(torch.rot90(torch.rot90(a, k, (0, 1)), k, (2, 3)) for k in range(4))

    def _third_batch(self, coef: torch.Tensor, sl: slice) -> torch.Tensor:
        """Σ_{q∈sl} w_q Σ_r p_q[r] v_r v_rᵀ, (K2, K2): one Gram product over window vectors."""
        K = 2 * self.W - 1
        P = self.projections(coef, sl)                                      # (b, L, L)
        V = _patches(P, self.W).reshape(-1, K * K)                           # (b·L², K2)
        wp = (self.weights[sl, None] * P.reshape(P.shape[0], -1)).reshape(-1, 1)
        return (V * wp).T @ V

    def box_moments(self, coef: torch.Tensor, *, third: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """E_ω of the box sums (Σ p, Σ p p, Σ p p p) — the model without γ/L² and noise."""
        K = 2 * self.W - 1
        m1 = self.a1_row @ coef
        m2 = torch.zeros(K * K, dtype=self.dtype)
        for (l, start, S), M in zip(self.blocks, self._m2):
            c = coef[start:start + S * (2 * l + 1)].reshape(S, 2 * l + 1)
            m2 = m2 + torch.einsum("kst,st->k", M, c @ c.T)
        m2 = m2.reshape(K, K)
        if not third:
            return m1, m2, None
        n = self.quadrature.size
        m3 = torch.zeros(K * K, K * K, dtype=self.dtype)
        batches = [slice(s, min(n, s + self.batch)) for s in range(0, n, self.batch)]
        for sl in batches:
            if len(batches) > 1 and coef.requires_grad:  # bound memory: recompute in backward
                m3 = m3 + torch.utils.checkpoint.checkpoint(self._third_batch, coef, sl, use_reentrant=False)
            else:
                m3 = m3 + self._third_batch(coef, sl)
        m3 = self._symmetrise(m3, 3).reshape((K,) * 4)
        return m1, m2, m3

    def moments(self, coef: torch.Tensor, gamma: torch.Tensor | float, sigma: float = 0.0,
                *, third: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(a1, a2, a3) torch tensors of the micrograph model (see module docstring)."""
        K = 2 * self.W - 1
        m1, m2, m3 = self.box_moments(coef, third=third)
        scale = gamma / self.L**2
        a1 = scale * m1
        a2 = scale * m2
        if sigma:
            a2 = a2 + sigma**2 * _delta2(K, self.dtype)
        a3 = None
        if third:
            a3 = scale * m3
            if sigma:
                a3 = a3 + sigma**2 * a1 * _delta3(K, self.dtype)
        return a1, a2, a3

    def numpy(self, coef: np.ndarray, gamma: float, sigma: float = 0.0) -> ModelMoments:
        """:meth:`moments` as a :class:`ModelMoments` of numpy arrays."""
        c = torch.as_tensor(np.asarray(coef, dtype=np.float64))
        with torch.no_grad():
            a1, a2, a3 = self.moments(c, float(gamma), float(sigma))
        return ModelMoments(self.W, float(a1), a2.numpy().copy(), a3.numpy().copy())


def _delta2(K: int, dtype: torch.dtype) -> torch.Tensor:
    d = torch.zeros(K, K, dtype=dtype)
    d[K // 2, K // 2] = 1.0
    return d


def _delta3(K: int, dtype: torch.dtype) -> torch.Tensor:
    """δ(ℓ1) + δ(ℓ2) + δ(ℓ1−ℓ2) on the dense (K,)*4 lag grid (K = 2W−1, zero lag at K//2)."""
    c = K // 2
    d = torch.zeros(K, K, K, K, dtype=dtype)
    d[c, c, :, :] += 1.0
    d[:, :, c, c] += 1.0
    idx = torch.arange(K)
    d[idx[:, None], idx[None, :], idx[:, None], idx[None, :]] += 1.0
    return d


def expected_moments(basis: Any, coef: np.ndarray, gamma: float, W: int, *, sigma: float = 0.0) -> ModelMoments:
    """Exact expected micrograph moments of the volume ``coef`` at density ``gamma``.

    ``basis``: a :class:`cryomtd.basis.SphericalBessel`; ``coef`` (basis.size,) real
    coefficients; ``W`` window (lags |ℓ|∞ ≤ W−1); ``sigma`` noise standard deviation
    (adds the noise-bias terms). Returns :class:`ModelMoments` with ``.a1``, ``.a2``,
    ``.a3`` in the layout of :func:`cryomtd.moments.autocorrelations_2d`.
    """
    coef = np.asarray(coef, dtype=np.float64)
    if coef.shape != (basis.size,):
        raise ValueError(f"coef must have shape ({basis.size},), got {coef.shape}")
    return MomentModel(basis, W).numpy(coef, gamma, sigma)
