"""The real spherical-Bessel basis of volumes supported in the ball of radius L/2.

Basis functions (real, orthonormal in continuous L² over the ball, unit voxel spacing):

    φ_{ℓ,s,m}(p) = f_{ℓs}(|p|) · Y_{ℓ,m}(p / |p|),   |p| < R = L/2,

with f_{ℓs} the normalised radial function of :mod:`cryomtd.basis.bessel` (frequency
z_{ℓs}/R, z_{ℓs} the (s+1)-th positive zero of j_ℓ) and Y_{ℓ,m} the real spherical
harmonics of :mod:`cryomtd.basis.harmonics`. p = (x, y, z) is measured in voxels from
the centre voxel L//2 of an array indexed [z, y, x].

Sampling criterion: keep z_{ℓs} < π·L/2, i.e. radial frequency below the Nyquist
frequency π rad/voxel; ``ell_max`` defaults to the largest ℓ with at least one such
zero. The number of functions is then ≈ 0.5 × the number of voxels in the ball
(Weyl's law: 0.52 asymptotically, the ball of radius π inside the Nyquist cube).

Coefficient layout: ascending ℓ, then radial index s = 0 … S(ℓ)−1, then m = −ℓ … ℓ, so
each (ℓ, s) is a contiguous block of 2ℓ+1 real numbers and each ℓ is a contiguous
(S(ℓ), 2ℓ+1) row-major block (``b.ell_slices[ℓ]``).

Rotation: v_R(p) = v(Rᵀ p) has coefficients c'_{ℓ,s,·} = D^ℓ(R) c_{ℓ,s,·} with the
real Wigner matrix D^ℓ_{mm'}(R) = ∫ Y_{ℓm}(u) Y_{ℓm'}(Rᵀu) du (see :mod:`.wigner`).

Projection: ``projection_matrix`` Ψ[(y, x), k] = ∫ φ_k(x, y, z) dz (Gauss–Legendre
quadrature over the chord of the ball through each pixel centre), so the image of the
rotated volume is Ψ D(R) c, and Ψ c ≈ Σ_z v[z, y, x].
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from cryomtd import rotations
from cryomtd.basis.bessel import radial_functions, spherical_jn_zeros
from cryomtd.basis.harmonics import real_sph_harm, real_sph_harm_blocks
from cryomtd.basis.wigner import real_wigner
from cryomtd.io import InputError

__all__ = ["SphericalBessel", "default_ell_max"]

# A fixed rotation with Ry(t) = Q·Rz(t)·Qᵀ for RELION's elementary matrices (rotations module).
_Q_Y_FROM_Z = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@functools.lru_cache(maxsize=64)
def _zeros_for(L: int, ell_max: int | None = None) -> list[np.ndarray]:
    """Zeros below π L/2 of j_ℓ for ℓ = 0 … ell_max (None: every ℓ that has one)."""
    z_max = math.pi * L / 2
    # the first zero of j_ℓ exceeds ℓ + 1/2, so ℓ < z_max bounds the search
    top = int(z_max) + 1
    zeros = spherical_jn_zeros(top if ell_max is None else min(int(ell_max), top), z_max)
    while zeros and zeros[-1].size == 0:
        zeros.pop()
    for z in zeros:
        z.setflags(write=False)
    return zeros


@functools.lru_cache(maxsize=32)
def default_ell_max(L: int) -> int:
    """The largest ℓ with a zero of j_ℓ below π·L/2 (the sampling criterion)."""
    return len(_zeros_for(int(L))) - 1


def _centred_grid(L: int, ndim: int) -> np.ndarray:
    """Coordinates (x, y[, z]) from the centre voxel L//2, array axes reversed ([z, y, x])."""
    ax = np.arange(L, dtype=np.float64) - L // 2
    mesh = np.meshgrid(*([ax] * ndim), indexing="ij")  # [z, y, x] or [y, x]
    return np.stack(mesh[::-1], axis=-1)  # (..., ndim) in (x, y, z) order


@dataclasses.dataclass(frozen=True)
class _VoxelTables:
    """Separable samples of the basis on the voxels inside the ball.

    φ_{ℓsm}(p_v) = radial[ℓ][which[v], s] · angular[v, ℓ² + ℓ + m]: radii take only
    U ≈ L²/4 distinct values on the grid, so the radial part is stored per distinct
    radius; ``summer`` (U, n_ball) sparse 0/1 sums voxel values by radius.
    """

    inside: np.ndarray  # (n_ball,) flat indices into the L³ volume
    which: np.ndarray  # (n_ball,) index of each voxel's radius among the distinct radii
    radial: tuple[np.ndarray, ...]  # per ℓ: (U, S(ℓ))
    angular: np.ndarray  # (n_ball, (ℓmax+1)²)
    summer: scipy.sparse.csr_matrix  # (U, n_ball)


@functools.lru_cache(maxsize=8)
def _voxel_tables(L: int, ell_max: int) -> _VoxelTables:
    zeros = _zeros_for(L, ell_max)
    R = L / 2
    p = _centred_grid(L, 3).reshape(-1, 3)
    r = np.linalg.norm(p, axis=1)
    inside = np.flatnonzero(r < R)
    p, r = p[inside], r[inside]
    # r² is an integer (or quarter-integer) on the voxel grid: one Bessel evaluation per distinct radius.
    r_unique, which = np.unique(r, return_inverse=True)
    radial = tuple(radial_functions(ell, zeros[ell], r_unique, R) for ell in range(ell_max + 1))
    angular = real_sph_harm(ell_max, p)
    summer = scipy.sparse.csr_matrix(
        (np.ones(inside.size), (which, np.arange(inside.size))), shape=(r_unique.size, inside.size)
    )
    for a in radial + (angular, which, inside):
        a.setflags(write=False)
    return _VoxelTables(inside, which, radial, angular, summer)


def _n_chord_nodes(L: int) -> int:
    # Integrand frequency ≤ π rad/voxel over a chord ≤ L voxels: Gauss–Legendre with Q nodes
    # is exact to degree 2Q−1; Q ≈ πL/4 + 16 leaves a margin measured in tests (Q vs 2Q).
    return int(math.ceil(math.pi * L / 4)) + 16


@functools.lru_cache(maxsize=8)
def _projection_matrix(L: int, ell_max: int, n_nodes: int) -> np.ndarray:
    """Ψ (L², size): line integrals along z of every basis function through every pixel centre."""
    zeros = _zeros_for(L, ell_max)
    R = L / 2
    xy = _centred_grid(L, 2).reshape(-1, 2)
    rho2 = (xy**2).sum(axis=1)
    pix = np.flatnonzero(rho2 < R * R)
    t, w = np.polynomial.legendre.leggauss(n_nodes)
    # Only functions even in z (ℓ+|m| even) survive; for them the symmetric rule equals twice
    # its half on z ≥ 0 — evaluate there only (odd columns are zeroed below).
    w = np.where(t > 0, 2 * w, w)[t >= 0]
    t = t[t >= 0]
    # Radii along the chord depend on the pixel only through ρ²: tabulate per distinct ρ².
    rho2_unique, which = np.unique(rho2[pix], return_inverse=True)
    half = np.sqrt(R * R - rho2_unique)  # half chord length
    zq = half[:, None] * t[None, :]  # (U, Q)
    wq = half[:, None] * w[None, :]
    r = np.sqrt(rho2_unique[:, None] + zq**2)
    pts = np.concatenate(
        [np.broadcast_to(xy[pix][:, None, :], (pix.size, t.size, 2)), zq[which][..., None]], axis=-1
    )  # (P, Q, 3)
    blocks = []
    for ell, ang in enumerate(real_sph_harm_blocks(ell_max, pts)):
        rad = (radial_functions(ell, zeros[ell], r, R) * wq[..., None])[which]  # (P, Q, S)
        blocks.append(np.matmul(rad.transpose(0, 2, 1), ang).reshape(pix.size, -1))  # (P, S, 2ℓ+1)
    psi = np.zeros((L * L, sum(b.shape[1] for b in blocks)))
    psi[pix] = np.concatenate(blocks, axis=1)
    # Functions odd in z (ℓ+|m| odd) integrate to exactly 0 along z; drop the round-off.
    odd = np.concatenate([np.tile((l + np.abs(np.arange(-l, l + 1))) % 2 == 1, z.size) for l, z in enumerate(zeros)])
    psi[:, odd] = 0.0
    psi.setflags(write=False)
    return psi


class SphericalBessel:
    """Real spherical-Bessel basis for L×L×L volumes supported in the ball of radius L/2.

    ``SphericalBessel(L, ell_max=None)``; ``ell_max=None`` → :func:`default_ell_max` (L).
    Attributes: ``L``, ``ell_max``, ``size`` (number of real coefficients), ``ell``,
    ``s``, ``m`` (int arrays of length ``size``: the layout of the module docstring),
    ``n_radial`` (S(ℓ) for ℓ = 0 … ell_max), ``zeros`` (list of z_{ℓs}),
    ``ell_slices`` (slice of each ℓ block in a coefficient vector).

    Construction is cheap; voxel tables and Ψ are built on first use and cached per
    (L, ell_max) for the process (docs/basis.md lists the costs).
    """

    def __init__(self, L: int, ell_max: int | None = None):
        if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 2:
            raise InputError(f"basis: L must be an integer >= 2, got {L!r}")
        self.L = int(L)
        if ell_max is None:
            ell_max = default_ell_max(self.L)
        if isinstance(ell_max, bool) or not isinstance(ell_max, (int, np.integer)) or ell_max < 0:
            raise InputError(f"basis.ell_max must be a non-negative integer or null, got {ell_max!r}")
        zeros = _zeros_for(self.L, int(ell_max))
        if len(zeros) <= ell_max:
            top = default_ell_max(self.L)
            raise InputError(
                f"basis.ell_max = {ell_max} exceeds the sampling limit {top} for L = {self.L} "
                f"(j_ℓ has no zero below πL/2 for ℓ > {top}); use ell_max <= {top} or null"
            )
        self.ell_max = int(ell_max)
        self.zeros = [z.copy() for z in zeros[: self.ell_max + 1]]
        self.n_radial = np.array([z.size for z in self.zeros], dtype=np.int64)
        ell, s, m, slices, start = [], [], [], [], 0
        for l, S in enumerate(self.n_radial):
            n = int(S) * (2 * l + 1)
            ell.append(np.full(n, l))
            s.append(np.repeat(np.arange(S), 2 * l + 1))
            m.append(np.tile(np.arange(-l, l + 1), S))
            slices.append(slice(start, start + n))
            start += n
        self.ell = np.concatenate(ell).astype(np.int64)
        self.s = np.concatenate(s).astype(np.int64)
        self.m = np.concatenate(m).astype(np.int64)
        self.ell_slices = slices
        self.size = int(start)

    def __repr__(self) -> str:
        return f"SphericalBessel(L={self.L}, ell_max={self.ell_max}, size={self.size})"

    # ------------------------------------------------------------------ helpers
    def _check_coef(self, coef: np.ndarray) -> np.ndarray:
        coef = np.asarray(coef, dtype=np.float64)
        if coef.shape[-1:] != (self.size,):
            raise ValueError(f"coefficients must have last axis {self.size} for {self!r}, got shape {coef.shape}")
        return coef

    @staticmethod
    def _check_rotations(R: np.ndarray) -> tuple[np.ndarray, bool]:
        """R (3, 3) or (n, 3, 3) → (n, 3, 3) float64 and whether a single matrix was given."""
        R = np.asarray(R, dtype=np.float64)
        if R.shape[-2:] != (3, 3) or R.ndim not in (2, 3):
            raise ValueError(f"rotations must have shape (3, 3) or (n, 3, 3), got {R.shape}")
        return R.reshape(-1, 3, 3), R.ndim == 2

    def _blocks(self, coef: np.ndarray) -> list[np.ndarray]:
        """Per-ℓ views (..., S, 2ℓ+1) of coefficient arrays (..., size)."""
        return [
            coef[..., sl].reshape(coef.shape[:-1] + (int(S), 2 * l + 1))
            for l, (sl, S) in enumerate(zip(self.ell_slices, self.n_radial))
        ]

    # ------------------------------------------------------------- real space
    def functions_at(self, points: np.ndarray) -> np.ndarray:
        """All basis functions at arbitrary points (..., 3) = (x, y, z) from the centre → (..., size).

        Zero outside the ball. Memory grows as #points × size: for checks and small sets.
        """
        p = np.asarray(points, dtype=np.float64)
        r = np.linalg.norm(p, axis=-1)
        R = self.L / 2
        cols = [
            (radial_functions(l, self.zeros[l], r, R)[..., :, None] * Y[..., None, :]).reshape(r.shape + (-1,))
            for l, Y in enumerate(real_sph_harm_blocks(self.ell_max, p))
        ]
        return np.concatenate(cols, axis=-1)

    def evaluate(self, coef: np.ndarray) -> np.ndarray:
        """Coefficients (size,) or (n, size) → volume(s) (L, L, L) or (n, L, L, L), [z, y, x]."""
        coef = self._check_coef(coef)
        batch = coef.shape[:-1]
        c = coef.reshape(-1, self.size)
        t = _voxel_tables(self.L, self.ell_max)
        # per distinct radius u: A[n, u, (ℓ, m)] = Σ_s f_ℓs(r_u) c_ℓsm; then Σ_(ℓ,m) Y_ℓm(v) A[n, u(v), (ℓ, m)]
        A = np.concatenate([np.matmul(f, C) for C, f in zip(self._blocks(c), t.radial)], axis=-1)
        vals = np.einsum("nvk,vk->nv", A[:, t.which], t.angular)
        out = np.zeros((c.shape[0], self.L**3))
        out[:, t.inside] = vals
        return out.reshape(batch + (self.L,) * 3)

    def _adjoint(self, vals: np.ndarray) -> np.ndarray:
        """Φᵀ applied to in-ball voxel values (n_ball,) → (size,)."""
        t = _voxel_tables(self.L, self.ell_max)
        B = t.summer @ (t.angular * vals[:, None])  # (U, (ℓmax+1)²): Σ over voxels of each radius
        return np.concatenate([(f.T @ B[:, l * l : (l + 1) ** 2]).ravel() for l, f in enumerate(t.radial)])

    def expand(self, vol: np.ndarray, *, rtol: float = 1e-10, maxiter: int = 500) -> np.ndarray:
        """Least-squares coefficients (size,) of a volume (L, L, L) on its voxels inside the ball.

        Solves the normal equations ΦᵀΦ c = Φᵀ v by conjugate gradients (ΦᵀΦ ≈ I
        because the functions are orthonormal in continuous L², so few iterations),
        matrix-free with the separable per-ℓ tables. Voxels outside the ball are ignored.
        """
        vol = np.asarray(vol, dtype=np.float64)
        if vol.shape != (self.L,) * 3:
            raise ValueError(f"volume must have shape {(self.L,) * 3}, got {vol.shape}")
        inside = _voxel_tables(self.L, self.ell_max).inside
        inside_shape = (self.L**3,)
        rhs = self._adjoint(vol.reshape(inside_shape)[inside])

        def gram(c):
            return self._adjoint(self.evaluate(c).reshape(inside_shape)[inside])

        op = scipy.sparse.linalg.LinearOperator((self.size, self.size), matvec=gram, dtype=np.float64)
        coef, info = scipy.sparse.linalg.cg(op, rhs, x0=rhs.copy(), rtol=rtol, atol=0.0, maxiter=maxiter)
        if info > 0:
            raise RuntimeError(f"expand: conjugate gradients did not reach rtol={rtol} in {maxiter} iterations")
        return coef

    # --------------------------------------------------------------- rotations
    def wigner(self, R: np.ndarray) -> list[np.ndarray]:
        """Real Wigner matrices: list over ℓ = 0 … ell_max of (n, 2ℓ+1, 2ℓ+1) for R (n, 3, 3) or (3, 3)."""
        return real_wigner(self.ell_max, self._check_rotations(R)[0])

    def rotate(self, coef: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Coefficients of v_R(p) = v(Rᵀp): (size,) for R (3, 3), (n, size) for R (n, 3, 3).

        Uses the Euler factorisation (module :func:`_rotate_blocks`), equal to
        ``D^ℓ(R) c_{ℓ,s,·}`` with ``wigner(R)`` to round-off (tested).
        """
        coef = self._check_coef(coef)
        if coef.ndim != 1:
            raise ValueError(f"rotate takes one coefficient vector (size,), got shape {coef.shape}")
        R, single = self._check_rotations(R)
        out = np.concatenate([X.reshape(R.shape[0], -1) for X in self._rotate_blocks(coef, R)], axis=1)
        return out[0] if single else out

    @functools.cached_property
    def _wigner_q(self) -> list[np.ndarray]:
        return [d[0] for d in real_wigner(self.ell_max, _Q_Y_FROM_Z[None])]

    @staticmethod
    def _z_rotate(X: np.ndarray, c: np.ndarray, s: np.ndarray) -> None:
        """In place: X (n, S, 2ℓ+1) in [0 | +k | −k] order, c, s = cos, sin(k·angle) (n, ℓ)."""
        l = c.shape[1]
        c, s = c[:, None, :], s[:, None, :]
        p, q = X[..., 1 : l + 1], X[..., l + 1 :]
        new_p = c * p + s * q
        q *= c
        q -= s * p
        p[...] = new_p

    def _rotate_blocks(self, coef: np.ndarray, R: np.ndarray) -> list[np.ndarray]:
        """Per-ℓ rotated coefficients (n, S, 2ℓ+1) of one vector for rotations R (n, 3, 3).

        With RELION angles R = Rz(psi)·Ry(tilt)·Rz(rot) and Ry(t) = Q·Rz(t)·Qᵀ for a fixed
        rotation Q, D^ℓ(R) = Z(psi)·D^ℓ(Q)·Z(tilt)·D^ℓ(Q)ᵀ·Z(rot): a z-rotation mixes only
        the pair (m, −m) (cos/sin of |m|·angle, element-wise), and D^ℓ(Q) is one constant
        matrix applied to all rotations at once (one BLAS product per ℓ). Cost per rotation
        ≈ 4·Σ_ℓ S(ℓ)(2ℓ+1)² flops, no Wigner matrices per rotation. Rotations whose Euler
        angles do not reproduce R to 1e-12 + 10·|RRᵀ − I| (tilt within ~1e-4 of a pole,
        where the split of rot and psi is ill-conditioned) go through ``wigner`` instead.
        """
        n = R.shape[0]
        ang = rotations.matrix_to_euler(R, degrees=False)
        # inputs that are orthogonal only to some precision (float32 files) may differ by that much
        defect = np.abs(np.einsum("nij,nkj->nik", R, R) - np.eye(3)).max(axis=(1, 2))
        error = np.abs(rotations.euler_to_matrix(*ang.T, degrees=False) - R).max(axis=(1, 2))
        bad = np.flatnonzero(error > 1e-12 + 10 * defect)
        k = np.arange(1, self.ell_max + 1)
        cos = np.cos(ang[:, :, None] * k)  # (n, 3, ℓmax): cos(k·angle), k = 1 … ℓmax
        sin = np.sin(ang[:, :, None] * k)
        out = []
        for l, (C, DQ) in enumerate(zip(self._blocks(coef), self._wigner_q)):
            # Work in the order [m = 0 | m = 1 … ℓ | m = −1 … −ℓ] so that a z-rotation acts on two
            # contiguous halves: (c_k, c_−k) → (cos·c_k + sin·c_−k, cos·c_−k − sin·c_k).
            perm = np.concatenate([[l], l + np.arange(1, l + 1), l - np.arange(1, l + 1)])
            inv = np.argsort(perm)
            Dp = DQ[np.ix_(perm, perm)]
            Cp = C[:, perm]
            S, M = Cp.shape
            if l == 0:
                out.append(np.broadcast_to(C, (n, S, 1)).copy())
                continue
            # Z(rot) then D(Q)ᵀ, folded: X = Σ_t trig_t(rot) · (E_t Cp) Dp with fixed E_t, one GEMM.
            pos, neg = Cp[:, 1 : l + 1], Cp[:, l + 1 :]
            G = np.zeros((M, S, M))
            G[0, :, 0] = Cp[:, 0]
            idx = np.arange(l)
            G[1 + idx, :, 1 + idx] = pos.T  # cos(k·rot) terms
            G[1 + idx, :, l + 1 + idx] = neg.T
            G[l + 1 + idx, :, 1 + idx] = neg.T  # sin(k·rot) terms
            G[l + 1 + idx, :, l + 1 + idx] = -pos.T
            G = (G.reshape(M * S, M) @ Dp).reshape(M, S * M)
            trig = np.concatenate([np.ones((n, 1)), cos[:, 0, :l], sin[:, 0, :l]], axis=1)
            X = (trig @ G).reshape(n, S, M)
            self._z_rotate(X, cos[:, 1, :l], sin[:, 1, :l])
            X = (X.reshape(-1, M) @ Dp.T).reshape(n, S, M)  # one GEMM for all rotations
            self._z_rotate(X, cos[:, 2, :l], sin[:, 2, :l])
            out.append(X[..., inv])
        if bad.size:
            D = real_wigner(self.ell_max, R[bad])
            for l, (C, X) in enumerate(zip(self._blocks(coef), out)):
                X[bad] = np.einsum("nij,sj->nsi", D[l], C)
        return out

    # -------------------------------------------------------------- projection
    @property
    def projection_matrix(self) -> np.ndarray:
        """Ψ (L·L, size), read-only float64: ``image.ravel()`` (row-major [y, x]) = Ψ @ coef at R = I."""
        return _projection_matrix(self.L, self.ell_max, _n_chord_nodes(self.L))

    @functools.cached_property
    def _even_layout(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Rows m with ℓ+|m| even per ℓ, and their global coefficient indices in (ℓ, s, m) order.

        Y_{ℓ,±m} has parity (−1)^{ℓ+|m|} under z → −z, so its line integrals along z vanish
        for ℓ+|m| odd: those columns of Ψ are exactly zero and ``project`` skips them
        (about half of the work).
        """
        rows, index = [], []
        for l, (sl, S) in enumerate(zip(self.ell_slices, self.n_radial)):
            r = np.flatnonzero((l + np.abs(np.arange(-l, l + 1))) % 2 == 0)
            rows.append(r)
            index.append((sl.start + np.arange(int(S))[:, None] * (2 * l + 1) + r[None, :]).ravel())
        return rows, np.concatenate(index)

    def project(self, coef: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Projections Ψ D(R) c: (L, L) for R (3, 3), (n, L, L) for R (n, 3, 3); image[y, x] ≈ Σ_z v_R[z, y, x].

        ``rotate`` (Euler factorisation), then one (n, size/2) × (size/2, L²) matrix product
        with the columns of Ψ that are not identically zero; no per-rotation Python work.
        """
        coef = self._check_coef(coef)
        if coef.ndim != 1:
            raise ValueError(f"project takes one coefficient vector (size,), got shape {coef.shape}")
        R, single = self._check_rotations(R)
        rows, index = self._even_layout
        n = R.shape[0]
        rotated = np.concatenate([X[..., r].reshape(n, -1) for X, r in zip(self._rotate_blocks(coef, R), rows)], axis=1)
        images = (rotated @ self._projection_even.T).reshape(n, self.L, self.L)
        return images[0] if single else images

    @functools.cached_property
    def _projection_even(self) -> np.ndarray:
        return np.ascontiguousarray(self.projection_matrix[:, self._even_layout[1]])
