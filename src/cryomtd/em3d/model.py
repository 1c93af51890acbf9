"""The linear projection model of approximate EM: coefficients → rotated → projected.

A projection at rotation ω is p_ω = Ψ D_ω c (docs/design.md §5): ``Ψ`` (L², size) maps basis
coefficients to the L×L image (row-major ``[y, x]``) at the identity rotation, and D_ω
is block-diagonal: for every degree ℓ and radial index s the 2ℓ+1 coefficients
``c[ℓ, s, :]`` are multiplied by the real Wigner matrix D^ℓ(ω). The coefficient layout
is the one of ``cryomtd.basis.SphericalBessel``: ascending ℓ, then s, then m, so the
coefficients of one ℓ are a contiguous block of S(ℓ)·(2ℓ+1) numbers.

The model is kept on plain arrays (``ProjectionModel`` + a list of Wigner blocks), so
the EM core can be tested with a random Ψ and random orthogonal blocks; use
:meth:`ProjectionModel.from_basis` for the real basis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryomtd.io import InputError

__all__ = ["ProjectionModel", "WignerBlocks"]

WignerBlocks = list  # list over ℓ = 0..ell_max of (n_rot, 2ℓ+1, 2ℓ+1) real arrays


@dataclass(frozen=True)
class ProjectionModel:
    """Ψ (L², size) plus the degree ``ell`` and radial index ``radial`` of every coefficient."""

    psi: np.ndarray
    ell: np.ndarray
    radial: np.ndarray
    L: int
    blocks: list = field(init=False, repr=False)  # (ℓ, start, S(ℓ)) per degree present

    def __post_init__(self) -> None:
        psi = np.asarray(self.psi, dtype=np.float64)
        ell = np.asarray(self.ell, dtype=np.int64)
        if psi.ndim != 2 or psi.shape[0] != self.L * self.L or psi.shape[1] != ell.size:
            raise InputError(f"projection matrix: expected shape ({self.L * self.L}, {ell.size}), got {psi.shape}")
        object.__setattr__(self, "psi", psi)
        object.__setattr__(self, "ell", ell)
        object.__setattr__(self, "radial", np.asarray(self.radial, dtype=np.int64))
        blocks = []
        start = 0
        for l in np.unique(ell):
            count = int(np.sum(ell == l))
            d = 2 * int(l) + 1
            if count % d or not np.all(ell[start : start + count] == l):
                raise InputError(
                    f"coefficient layout: degree {l} is not one contiguous block of (S, 2ℓ+1) coefficients"
                )
            blocks.append((int(l), start, count // d))
            start += count
        object.__setattr__(self, "blocks", blocks)

    @property
    def size(self) -> int:
        return int(self.ell.size)

    @classmethod
    def from_basis(cls, basis: Any) -> ProjectionModel:
        """From a ``cryomtd.basis.SphericalBessel`` (uses ``projection_matrix``, ``ell``, ``s``, ``L``)."""
        return cls(np.asarray(basis.projection_matrix), np.asarray(basis.ell), np.asarray(basis.s), int(basis.L))

    # ------------------------------------------------------------------ operators
    def rotate(self, coef: np.ndarray, wigner: WignerBlocks) -> np.ndarray:
        """D_ω c for every rotation: (n_rot, size)."""
        n = wigner[self.blocks[0][0]].shape[0]
        out = np.empty((n, self.size))
        for l, start, S in self.blocks:  # loop over degrees (≤ ell_max + 1), vectorised over rotations
            d = 2 * l + 1
            c = coef[start : start + S * d].reshape(S, d)
            out[:, start : start + S * d] = np.einsum("nmk,sk->nsm", wigner[l], c).reshape(n, S * d)
        return out

    def project(self, coef: np.ndarray, wigner: WignerBlocks) -> np.ndarray:
        """Projections p_ω = Ψ D_ω c: (n_rot, L, L), image rows = y."""
        return (self.rotate(coef, wigner) @ self.psi.T).reshape(-1, self.L, self.L)

    def operators(self, wigner: WignerBlocks, rot: slice = slice(None)) -> np.ndarray:
        """G_ω = Ψ D_ω for the rotations ``rot``: (n, L², size)."""
        n = wigner[self.blocks[0][0]][rot].shape[0]
        G = np.empty((n, self.L * self.L, self.size))
        for l, start, S in self.blocks:
            d = 2 * l + 1
            P = self.psi[:, start : start + S * d].reshape(-1, d)  # (L²·S, d)
            G[:, :, start : start + S * d] = np.matmul(P[None], wigner[l][rot]).reshape(n, -1, S * d)  # batched GEMM
        return G

    def lowpass_random(self, rng: np.random.Generator, power: float) -> np.ndarray:
        """Random coefficients with a Gaussian fall-off in ℓ + 2s, scaled so that the mean
        projection energy per pixel (over rotations, ‖Ψ D c‖²/L² with D orthogonal averaged as
        ‖Ψ‖-weighted) equals ``power``. A heuristic smooth start for EM."""
        order = self.ell + 2 * self.radial
        scale = max(1.0, 0.3 * float(order.max()))
        c = rng.standard_normal(self.size) * np.exp(-0.5 * (order / scale) ** 2)
        # E_ω ‖Ψ D_ω c‖² ≈ ‖Ψ c‖² for a rotation-averaged c; use the identity projection as the estimate
        energy = float(np.sum((self.psi @ c) ** 2)) / (self.L * self.L)
        return c * np.sqrt(max(power, 1e-30) / max(energy, 1e-300))
