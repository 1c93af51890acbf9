"""Expected micrograph autocorrelations of a volume in the spherical-Bessel basis (docs/design.md §9).

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
* projections are formed on the smallest centred square holding the basis' support
  (for even L the first row and column of Ψ are zero: 19² instead of 20² pixels at
  L = 20), which makes them symmetric about the centre pixel;
* the in-plane angles come in quadruples ψ+k·90°, whose projections are exact 90° pixel
  rotations of each other, and the node (rot+180°, 180°−tilt, 180°−ψ) projects to the
  mirror image (x → −x) of the node (rot, tilt, ψ) (both checked numerically on
  construction for every node), so only an eighth of the rule is projected and a3 is
  symmetrised over the eight lag transforms of the square's symmetry group D4
  afterwards (8× fewer projections and Gram products);
* the second moment uses the rotational invariants: E_ω[c′c′ᵀ] is block-diagonal,
  B_ℓ(s,s′)/(2ℓ+1) ⊗ I, with the power spectrum B_ℓ(s,s′) = Σ_m c_{ℓ,s,m} c_{ℓ,s′,m},
  so a2 = M2 · vec(B) with a map M2 precomputed once (no rotations per evaluation);
* the third moment of each projection is a Gram product over window vectors,
  Σ_r p[r] v_r v_rᵀ with v_r = (p[r+ℓ])_ℓ (docs/design.md §8), batched over rotations: one
  matrix product of size (2W−1)² × (#rot·L²) × (2W−1)² per evaluation, with an analytic
  backward (:class:`_WeightedGram`: one more product of the same size and a col2im
  fold; no window vectors are kept between forward and backward).

The gradient is exact by torch autograd through all of the above; the Gram backward is
written in differentiable torch operations, so Hessian-vector products (double
backward, used by trust regions) are exact too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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


def _base_windows(P: torch.Tensor, W: int, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, p): window vectors (b, r, K2) and values (b, r) of the base pixels ``rows`` (all if None)."""
    V, p = _patches(P, W), P.reshape(P.shape[0], -1)
    return (V, p) if rows is None else (V[:, rows], p[:, rows])


def _weighted_gram(P: torch.Tensor, w: torch.Tensor, W: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_q w_q Σ_r P_q[r] v_{q,r} v_{q,r}ᵀ, (K2, K2), v_{q,r}[ℓ] = P_q[r+ℓ]; P (b, n, n), w (b,).

    ``rows``: flat pixel indices r to sum over (the others must have P_q[r] = 0 for all q)."""
    V, p = _base_windows(P, W, rows)
    V = V.reshape(-1, V.shape[-1])
    return (V * (w[:, None] * p).reshape(-1, 1)).T @ V


def _weighted_gram_backward(
    P: torch.Tensor, w: torch.Tensor, W: int, G: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """∂⟨G, Σ_q w_q Σ_r P_q[r] v_r v_rᵀ⟩/∂P, (b, n, n), in differentiable torch operations.

    With S = G + Gᵀ and U = V S (rows v_rᵀ S): the weight P[t] contributes w ½ v_tᵀ S v_t,
    the window entries v_r[ℓ] = P[r+ℓ] contribute Σ_{r+ℓ=t} w P[r] U[r, ℓ] (a col2im fold).
    Only base pixels in ``rows`` carry weight (see :func:`_weighted_gram`).
    """
    b, n, _ = P.shape
    K = 2 * W - 1
    V, p = _base_windows(P, W, rows)  # (b, rows, K2), (b, rows)
    U = V @ (G + G.T)  # (b, rows, K2)
    direct = 0.5 * (V * U).sum(-1)  # (b, rows)
    X = p[..., None] * U  # (b, rows, K2): block r, kernel offset ℓ
    if rows is not None:
        direct = torch.zeros(b, n * n, dtype=P.dtype).index_copy(1, rows, direct)
        X = torch.zeros(b, n * n, K * K, dtype=P.dtype).index_copy(1, rows, X)
    folded = torch.nn.functional.fold(X.transpose(1, 2), (n + K - 1, n + K - 1), K)[
        :, 0, W - 1 : W - 1 + n, W - 1 : W - 1 + n
    ]
    return w[:, None, None] * (direct.reshape(b, n, n) + folded)


class _WeightedGram(torch.autograd.Function):
    """:func:`_weighted_gram` with the analytic backward (exact, twice differentiable)."""

    @staticmethod
    def forward(ctx: Any, P: torch.Tensor, w: torch.Tensor, W: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        ctx.save_for_backward(P, w)
        ctx.W, ctx.rows = W, rows
        return _weighted_gram(P, w, W, rows)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        P, w = ctx.saved_tensors
        return _weighted_gram_backward(P, w, ctx.W, G, ctx.rows), None, None, None


def _support_crop(psi: np.ndarray, L: int) -> np.ndarray | None:
    """Pixel indices (n²,) of the smallest square centred on pixel L//2 that holds every
    nonzero row of Ψ (L², size), or None when it does not fit in the L×L grid."""
    c = L // 2
    nz = np.flatnonzero(np.any(psi != 0.0, axis=1))
    if nz.size == 0:
        return None
    y, x = np.divmod(nz, L)
    h = int(max(np.abs(y - c).max(), np.abs(x - c).max()))
    if c - h < 0 or c + h > L - 1:
        return None
    r = np.arange(c - h, c + h + 1)
    return (r[:, None] * L + r[None, :]).ravel()


class MomentModel:
    """Precomputed exact moment model for one basis and window ``W``.

    ``MomentModel(basis, W)``; then ``moments(coef, gamma, sigma)`` → (a1, a2, a3) torch
    tensors (differentiable in coef and gamma), or :meth:`numpy` for arrays.

    ``symmetry``: "auto" uses the quarter in-plane grid and the mirror half of the tilts
    when their checks pass, True requires both, False always uses the full grid.
    ``max_batch_elements`` bounds the size of one batch of window vectors
    (rotations × n² × (2W−1)²).
    """

    kind = "quadrature"  # the third moment's route (see :func:`cryomtd.mom3d.fit.make_model`)
    ctf = None  # no CTF (:class:`cryomtd.mom3d.ctfmodel.CtfMixture` in the CTF models)
    lag_group = tuple(range(8))  # D4 elements the averaged moments are invariant under (all: no CTF)

    def __init__(
        self, basis: Any, window: int, *, symmetry: bool | str = "auto", max_batch_elements: int = 2**23
    ) -> None:
        L = int(basis.L)
        if not 1 <= window <= L:
            raise ValueError(f"window must be in 1..L={L}, got {window}")
        self.basis = basis
        self.L, self.W, self.size = L, int(window), int(basis.size)
        self.ell_max = int(np.max(basis.ell)) if basis.size else 0
        self.blocks = ell_blocks(basis)
        self.dtype = torch.float64
        psi = np.array(basis.projection_matrix, dtype=np.float64)  # (L², size), own writable copy
        crop = _support_crop(psi, L)
        if crop is None or symmetry is False:
            crop = np.arange(L * L)
        self.n = int(round(np.sqrt(crop.size)))  # side of the (cropped) projection images
        psi = psi[crop]
        self.psi = torch.from_numpy(np.ascontiguousarray(psi))
        # base pixels where some basis function projects to nonzero (elsewhere p ≡ 0 for every c)
        self.rows = torch.as_tensor(np.flatnonzero(np.any(psi != 0.0, axis=1)))
        self.quarter = self.mirror = False
        if symmetry is not False:
            self.quarter, self.mirror = self._check_symmetry(basis, psi)
            if symmetry is True and not (self.quarter and self.mirror):
                raise ValueError("projections are not exactly 90°-rotation and mirror symmetric for this basis")
        self.quadrature: EulerQuadrature = euler_quadrature(3 * self.ell_max, quarter=self.quarter, mirror=self.mirror)
        R = self.quadrature.matrices()
        self.wigner = [torch.from_numpy(np.array(d, dtype=np.float64)) for d in basis.wigner(R)]
        self.weights = torch.from_numpy(self.quadrature.weights)
        K = (2 * self.W - 1) ** 2
        per_rot = self.n * self.n * K
        self.batch = max(1, int(max_batch_elements // per_rot))
        # a1: only ℓ = 0 survives the rotation average; E_ω Σ_r p = (Σ_r Ψ)·c restricted to ℓ=0.
        ell = np.asarray(basis.ell)
        self.a1_row = torch.from_numpy(np.where(ell == 0, psi.sum(axis=0), 0.0))
        self._m2 = self._second_moment_map()

    # ---------------------------------------------------------------- precomputation
    def _check_symmetry(self, basis: Any, psi: np.ndarray) -> tuple[bool, bool]:
        """(quarter, mirror): whether, for a random c and *every* node of the reduced rules,
        the projections at psi + k·90° equal rot90(p, ±k) and those at the mirror node equal
        p[:, ::-1] of the representative p (to 1e-9 relative). a3 is summed over the whole
        group afterwards, so the rotation sense does not matter."""
        from cryomtd.mom3d.quadrature import orbit_angles
        from cryomtd.rotations import euler_to_matrix

        n = self.n
        c = np.random.default_rng(12345).standard_normal(basis.size)

        def project(angles: np.ndarray) -> np.ndarray:
            R = np.asarray(euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2], degrees=False), dtype=np.float64)
            return (self._rotate_np(basis, c, R) @ psi.T).reshape(-1, n, n)

        q = euler_quadrature(3 * self.ell_max, quarter=True, mirror=True)
        base = project(q.angles)
        tol = 1e-9 * max(1.0, float(np.abs(base).max()))
        quarter, sign = False, 1
        for s in (1, -1):
            if all(
                np.abs(np.rot90(base, s * k, axes=(1, 2)) - project(orbit_angles(q.angles, k, False))).max() < tol
                for k in (1, 2, 3)
            ):
                quarter, sign = True, s
                break
        ks = range(4) if quarter else range(1)
        q = q if quarter else euler_quadrature(3 * self.ell_max, quarter=False, mirror=True)
        base = base if quarter else project(q.angles)
        mirror = all(
            np.abs(np.rot90(base, sign * k, axes=(1, 2))[:, :, ::-1] - project(orbit_angles(q.angles, k, True))).max()
            < tol
            for k in ks
        )
        return quarter, mirror

    def _rotate_np(self, basis: Any, c: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Coefficients of c rotated by each of R (n, 3, 3): (n, size)."""
        D = basis.wigner(R)
        out = np.empty((len(R), c.size))
        for l, start, S in self.blocks:
            m = S * (2 * l + 1)
            out[:, start : start + m] = np.einsum(
                "qmk,sk->qsm", D[l], c[start : start + m].reshape(S, 2 * l + 1)
            ).reshape(len(R), m)
        return out

    def _second_moment_map(self) -> list[torch.Tensor]:
        """Per ℓ: M2_ℓ (K2, S, S) with a2 = γ/L² Σ_ℓ Σ_{s,s′} M2_ℓ[:, s, s′] B_ℓ(s, s′).

        M2_ℓ[ℓag, s, s′] = 1/(2ℓ+1) Σ_m Σ_r Ψ_{ℓ,s,m}[r] Ψ_{ℓ,s′,m}[r+lag].
        """
        n, W = self.n, self.W
        maps = []
        for l, start, S in self.blocks:
            m = S * (2 * l + 1)
            imgs = self.psi[:, start : start + m].T.reshape(S, 2 * l + 1, n, n).reshape(-1, n, n)
            V = _patches(imgs, W).reshape(S, 2 * l + 1, n * n, -1)  # [s', m, r, lag]
            img = imgs.reshape(S, 2 * l + 1, n * n)  # [s, m, r]
            maps.append(torch.einsum("smr,tmrk->kst", img, V) / (2 * l + 1))
        return maps

    # ---------------------------------------------------------------- evaluation
    def coef_blocks(self, coef: torch.Tensor) -> dict[int, torch.Tensor]:
        """ℓ → the ℓ block of ``coef`` as a (n_radial, 2ℓ+1) view (layout of :func:`ell_blocks`)."""
        return {l: coef[start : start + S * (2 * l + 1)].reshape(S, 2 * l + 1) for l, start, S in self.blocks}

    def rotated(self, coef: torch.Tensor, sl: slice) -> torch.Tensor:
        """Coefficients of the volume at the quadrature rotations ``sl``: (n_rot, size)."""
        parts = []
        for l, start, S in self.blocks:
            n = S * (2 * l + 1)
            c = coef[start : start + n].reshape(S, 2 * l + 1)
            parts.append(torch.einsum("qmk,sk->qsm", self.wigner[l][sl], c).reshape(-1, n))
        return torch.cat(parts, dim=1)

    def projections(self, coef: torch.Tensor, sl: slice = slice(None)) -> torch.Tensor:
        """Projections at the quadrature rotations ``sl``: (n_rot, n, n) on the cropped square."""
        return (self.rotated(coef, sl) @ self.psi.T).reshape(-1, self.n, self.n)

    def _symmetrise(self, a: torch.Tensor) -> torch.Tensor:
        """Sum of the dense a3 (K,)*4 over the lag transforms of the reduced rule's images."""
        if not (self.quarter or self.mirror):
            return a
        ks = range(4) if self.quarter else range(1)
        out = sum(torch.rot90(torch.rot90(a, k, (0, 1)), k, (2, 3)) for k in ks)
        if self.mirror:
            out = out + torch.flip(out, (1, 3))
        return out

    def box_moments(
        self, coef: torch.Tensor, *, third: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """E_ω of the box sums (Σ p, Σ p p, Σ p p p) — the model without γ/L² and noise."""
        K = 2 * self.W - 1
        m1 = self.a1_row @ coef
        m2 = torch.zeros(K * K, dtype=self.dtype)
        C = self.coef_blocks(coef)
        for (l, _, _), M in zip(self.blocks, self._m2):
            m2 = m2 + torch.einsum("kst,st->k", M, C[l] @ C[l].T)
        m2 = m2.reshape(K, K)
        if not third:
            return m1, m2, None
        return m1, m2, self.third_box(coef)

    def third_box(self, coef: torch.Tensor) -> torch.Tensor:
        """E_ω Σ_r p[r] p[r+ℓ1] p[r+ℓ2], dense (K,)*4: Gram products over the quadrature rotations."""
        K = 2 * self.W - 1
        n = self.quadrature.size
        m3 = torch.zeros(K * K, K * K, dtype=self.dtype)
        for s0 in range(0, n, self.batch):
            sl = slice(s0, min(n, s0 + self.batch))
            m3 = m3 + _WeightedGram.apply(self.projections(coef, sl), self.weights[sl], self.W, self.rows)
        return self._symmetrise(m3.reshape((K,) * 4))

    def moments(
        self, coef: torch.Tensor, gamma: torch.Tensor | float, sigma: float = 0.0, *, third: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
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


def expected_moments(
    basis: Any,
    coef: np.ndarray,
    gamma: float,
    W: int,
    *,
    sigma: float = 0.0,
    ctf: Any = None,
    pixel_size: float | None = None,
) -> ModelMoments:
    """Exact expected micrograph moments of the volume ``coef`` at density ``gamma``.

    ``basis``: a :class:`cryomtd.basis.SphericalBessel`; ``coef`` (basis.size,) real
    coefficients; ``W`` window (lags |ℓ|∞ ≤ W−1); ``sigma`` noise standard deviation
    (adds the noise-bias terms). Returns :class:`ModelMoments` with ``.a1``, ``.a2``,
    ``.a3`` in the layout of :func:`cryomtd.moments.autocorrelations_2d`.

    ``ctf``: the microscope (None: none): a :class:`cryomtd.ctf.CTF`, a list of (CTF, weight)
    groups, a :class:`cryomtd.ctf.CtfGroupTable` or its path; ``pixel_size`` Å (required with
    a CTF or a list). The moments are then those of the CTF-filtered projections, exact for
    isolated filtered particles, mixed over the groups by their weights
    (:mod:`cryomtd.mom3d.ctfmodel`).
    """
    coef = np.asarray(coef, dtype=np.float64)
    if coef.shape != (basis.size,):
        raise ValueError(f"coef must have shape ({basis.size},), got {coef.shape}")
    if ctf is None:
        return MomentModel(basis, W).numpy(coef, gamma, sigma)
    from cryomtd.mom3d.ctfmodel import CtfMixture, CtfQuadratureModel

    mix = CtfMixture.of(ctf, pixel_size)
    model = MomentModel(basis, W) if mix is None else CtfQuadratureModel(basis, W, mix)
    return model.numpy(coef, gamma, sigma)
