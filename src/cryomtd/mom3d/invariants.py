"""The third moment through bispectrum invariants: a precomputed linear map (docs/design.md §9).

Averaged over SO(3), the third moment of the rotated coefficients c′ = D(ω) c is

    E_ω[c′_{ℓ1 s1 m1} c′_{ℓ2 s2 m2} c′_{ℓ3 s3 m3}] = T_{ℓ1ℓ2ℓ3}(m1, m2, m3) · b_{ℓ1ℓ2ℓ3}(s1, s2, s3),

    b_{ℓ1ℓ2ℓ3}(s1, s2, s3) = Σ_{m} T_{ℓ1ℓ2ℓ3}(m1, m2, m3) c_{ℓ1 s1 m1} c_{ℓ2 s2 m2} c_{ℓ3 s3 m3},

because E_ω[D^{ℓ1} ⊗ D^{ℓ2} ⊗ D^{ℓ3}] is the orthogonal projector onto the SO(3)-invariant
vectors of ℓ1 ⊗ ℓ2 ⊗ ℓ3, which form a line spanned by the unit tensor T (the real form of
the Wigner 3j symbol) when the triangle inequality |ℓ1 − ℓ2| ≤ ℓ3 ≤ ℓ1 + ℓ2 holds, and
are 0 otherwise. T is computed here in the basis' own real convention, as the normalised
image of a random tensor under that projector (exact quadrature of degree ℓ1 + ℓ2 + ℓ3),
so no 3j sign conventions enter. The box sums of the third moment are then linear in the
invariants b (cubic in c):

    m3[ℓ1, ℓ2] = Σ_{(ℓ1ℓ2ℓ3) sorted} Σ_{s} M3[(ℓ1, ℓ2) lag pair, (ℓ1ℓ2ℓ3, s)] · b(s),

    M3 = Σ_{orderings of the triple} Σ_r Σ_m T(m) Ψ_{pos 0}[r] Ψ_{pos 1}[r + lag1] Ψ_{pos 2}[r + lag2]

(Ψ = the cropped projection matrix of the basis). M3 is precomputed once per (basis, W)
only for one lag pair per orbit of D4 × S3 (the 2-D symmetry of the rotationally averaged
moments — 90° rotations and mirror, see :mod:`cryomtd.mom3d.model` — times the 6-fold
symmetry of any a3, see :mod:`cryomtd.moments.lags`): ≈ K3/8 rows. A model evaluation is
then the invariants (a few einsums) and one matrix–vector product, with no rotations:
at TRPV1 size (L = 20, ℓmax = 5, W = 10) 19 009 invariants × 5 171 rows, against 256
projected rotations and a 361 × 92 416 × 361 Gram product per evaluation for the
quadrature model. Tests check it against that model to round-off.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryomtd.io import save_npy
from cryomtd.mom3d.model import MomentModel, _patches
from cryomtd.mom3d.quadrature import euler_quadrature

__all__ = ["InvariantMomentModel", "invariant_tensor", "d4_orbits", "ell_triples", "D4_ALL"]

log = logging.getLogger("cryomtd.mom3d")


def ell_triples(ell_max: int) -> list[tuple[int, int, int]]:
    """Sorted degree triples ℓ1 ≤ ℓ2 ≤ ℓ3 ≤ ell_max with ℓ3 ≤ ℓ1 + ℓ2 (those with an invariant)."""
    return [
        (a, b, c) for a in range(ell_max + 1) for b in range(a, ell_max + 1) for c in range(b, min(ell_max, a + b) + 1)
    ]


def invariant_tensor(basis: Any, triple: tuple[int, int, int]) -> np.ndarray:
    """The unit SO(3)-invariant tensor T (2ℓ1+1, 2ℓ2+1, 2ℓ3+1) in the real convention of
    ``basis.wigner``: E_ω[D^{ℓ1} ⊗ D^{ℓ2} ⊗ D^{ℓ3}] = T Tᵀ (checked: rank one, to 1e-10).

    The sign of T is arbitrary (it enters M3 and b together)."""
    l1, l2, l3 = triple
    q = euler_quadrature(l1 + l2 + l3)
    D = basis.wigner(q.matrices())
    D1, D2, D3 = D[l1], D[l2], D[l3]
    w = q.weights

    def project(v: np.ndarray) -> np.ndarray:
        t = np.einsum("qck,ijk->qijc", D3, v)
        t = np.einsum("qbj,qijc->qibc", D2, t)
        return np.einsum("q,qai,qibc->abc", w, D1, t)

    rng = np.random.default_rng(sum(triple) * 1000 + l1 * 100 + l2 * 10 + l3)
    shape = (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
    v = project(rng.standard_normal(shape))
    norm = float(np.linalg.norm(v))
    if norm < 1e-8:
        raise ValueError(f"no invariant for degrees {triple} (triangle inequality fails)")
    T = v / norm
    u = rng.standard_normal(shape)  # rank one: the projection of any tensor is ⟨T, u⟩ T
    if np.abs(project(u) - np.sum(T * u) * T).max() > 1e-10 * max(1.0, float(np.abs(u).max())):
        raise AssertionError(f"invariants of degrees {triple} are not one-dimensional")
    return T


def _d4_lag_maps() -> list[tuple[np.ndarray, np.ndarray]]:
    """The 8 elements of D4 as integer matrices acting on lags (y, x)."""
    r = np.array([[0, 1], [-1, 0]])
    m = np.array([[1, 0], [0, -1]])
    rots = [np.linalg.matrix_power(r, k) for k in range(4)]
    return [g for R in rots for g in (R, m @ R)]


#: All eight elements of D4 (indices into :func:`_d4_lag_maps`): the lag symmetry of the clean model.
D4_ALL = tuple(range(8))


@lru_cache(maxsize=16)
def d4_orbits(W: int, elements: tuple[int, ...] = D4_ALL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orbits of the non-redundant a3 classes (:func:`cryomtd.moments.a3_nonredundant_lags`)
    under D4 (or its subgroup ``elements``, indices into :func:`_d4_lag_maps`; e.g. (0, 4) =
    identity and 180° rotation, the symmetry left by an astigmatic CTF) acting on both lags:
    (orbit_lags (n_orb, 4) one representative lag pair per orbit, class_to_orbit (K3,) int64,
    orbit_size (n_orb,) number of classes in each orbit)."""
    from cryomtd.moments.lags import a3_index_map, a3_nonredundant_lags

    lags = a3_nonredundant_lags(W)
    cls = a3_index_map(W).astype(np.int64)
    o = W - 1
    images = []
    maps = _d4_lag_maps()
    for g in (maps[i] for i in elements):
        l1 = lags[:, :2] @ g.T
        l2 = lags[:, 2:] @ g.T
        images.append(cls[l1[:, 0] + o, l1[:, 1] + o, l2[:, 0] + o, l2[:, 1] + o])
    images = np.stack(images)  # (8, K3) class of each image
    root = images.min(axis=0)  # orbit named by its smallest class index
    reps, class_to_orbit = np.unique(root, return_inverse=True)
    size = np.bincount(class_to_orbit)
    return lags[reps], class_to_orbit.astype(np.int64), size


class InvariantMomentModel(MomentModel):
    """:class:`MomentModel` whose third moment is the precomputed invariant map (module docstring).

    Same interface and the same numbers (to round-off) as the quadrature model; a1 and a2
    are inherited (they already use the power-spectrum invariants). ``max_chunk_elements``
    bounds one intermediate array of the precomputation. ``cache_dir`` (default: the
    environment variable ``CRYOMTD_CACHE_DIR``, unset = no cache): keep the map there as
    ``invariant_map_L{L}_l{ell_max}_W{W}_{hash}.npy`` (hash of Ψ, W and the invariant
    tensors), written atomically and loaded bit for bit by later runs (TRPV1 size:
    5 266 × 19 009 float64 = 0.8 GB, ≈ 1.5 min to compute on 2 cores). A map larger than
    ``max_map_bytes`` (8 GiB) is refused with a message naming ``lsq.model``.

    Storage: ``map3t`` (n_invariants, n_orb), C-contiguous, so that the block of one degree
    triple is one contiguous (S1, S2, S3, n_orb) array; the Jacobian contracts it block by
    block with no copies, reading the map once per position of the triple (memory-bound:
    ≈ 0.2 s at TRPV1 size instead of 1.1 s for einsum on column slices of the (n_orb,
    n_invariants) layout). ``map3`` is its transposed view, M3 of the module docstring.
    """

    kind = "invariants"

    def __init__(
        self,
        basis: Any,
        window: int,
        *,
        cache_dir: str | os.PathLike | None = None,
        max_chunk_elements: int = 2**24,
        max_map_bytes: float = 8 * 2**30,
        **kwargs: Any,
    ) -> None:
        super().__init__(basis, window, **kwargs)
        t0 = time.perf_counter()
        if cache_dir is None:
            cache_dir = os.environ.get("CRYOMTD_CACHE_DIR") or None
        self.triples = ell_triples(self.ell_max)
        self.tensors = [torch.from_numpy(invariant_tensor(basis, t)) for t in self.triples]
        S = {l: s for l, _, s in self.blocks}
        self.invariant_sizes = [S[a] * S[b] * S[c] for a, b, c in self.triples]
        self.n_invariants = int(sum(self.invariant_sizes))
        orbit_lags, class_to_orbit, _ = d4_orbits(self.W)
        nbytes = 8.0 * orbit_lags.shape[0] * self.n_invariants
        if nbytes > max_map_bytes:
            raise ValueError(
                f"lsq.model: invariants needs a {orbit_lags.shape[0]} x {self.n_invariants} map "
                f"({nbytes / 2**30:.1f} GiB > {max_map_bytes / 2**30:.1f} GiB) for L={self.L}, "
                f"ell_max={self.ell_max}, W={self.W}; use lsq.model: quadrature or a smaller window"
            )
        from cryomtd.moments.lags import a3_index_map

        self.dense_to_orbit = torch.as_tensor(class_to_orbit[a3_index_map(self.W).astype(np.int64).ravel()])
        path = None
        if cache_dir is not None:
            h = hashlib.sha256(f"v2 W={self.W} rows={self.rows.numel()}".encode())  # v2: stored as map3t
            for a in [self.psi, *self.tensors]:
                h.update(a.numpy().tobytes())
            path = Path(cache_dir) / f"invariant_map_L{self.L}_l{self.ell_max}_W{self.W}_{h.hexdigest()[:16]}.npy"
        if path is not None and path.exists():
            self.map3t = torch.from_numpy(np.load(path))
            if self.map3t.shape != (self.n_invariants, orbit_lags.shape[0]) or not self.map3t.is_contiguous():
                raise ValueError(
                    f"{path}: cached invariant map has shape {tuple(self.map3t.shape)}, expected "
                    f"{(self.n_invariants, orbit_lags.shape[0])}; delete the file"
                )
            log.info("invariant map: %d orbits x %d invariants, loaded from %s", *self.map3.shape, path)
            return
        self.map3t = self._third_moment_map(orbit_lags, max_chunk_elements)  # (n_invariants, n_orb)
        log.info("invariant map: %d orbits x %d invariants, %.1f s", *self.map3.shape, time.perf_counter() - t0)
        if path is not None:  # atomic (concurrent restarts may write the same file), umask permissions
            save_npy(path, self.map3t.numpy())

    @property
    def map3(self) -> torch.Tensor:
        """M3 (n_orb, n_invariants): m3 on the orbit representatives = M3 · b(c) (a view of ``map3t``)."""
        return self.map3t.T

    # ---------------------------------------------------------------- precomputation
    def _block_images(self, l: int) -> torch.Tensor:
        """Ψ of the ℓ block as images (S, 2ℓ+1, n, n)."""
        start, S = next((st, s) for ll, st, s in self.blocks if ll == l)
        m = 2 * l + 1
        return self.psi[:, start : start + S * m].T.reshape(S, m, self.n, self.n)

    def _third_moment_map(self, orbit_lags: np.ndarray, max_chunk: int) -> torch.Tensor:
        """M3ᵀ (n_invariants, n_orb), contiguous: m3 on the orbit representatives = M3 · b(c)."""
        W, K = self.W, 2 * self.W - 1
        rows = self.rows  # base pixels r with some Ψ[r] ≠ 0
        R = int(rows.numel())
        f1 = (orbit_lags[:, 0] + W - 1) * K + orbit_lags[:, 1] + W - 1
        f2 = (orbit_lags[:, 2] + W - 1) * K + orbit_lags[:, 3] + W - 1
        u1, inv1 = np.unique(f1, return_inverse=True)  # distinct first lags
        groups = [torch.as_tensor(np.flatnonzero(inv1 == i)) for i in range(u1.size)]
        f2 = torch.as_tensor(f2)
        # per first lag: the base pixels r (indices into rows) with r + lag1 also in rows
        in_rows = np.zeros(self.n * self.n, dtype=bool)
        in_rows[rows.numpy()] = True
        ry, rx = np.divmod(rows.numpy(), self.n)
        overlap = []
        for f in u1:
            dy, dx = divmod(int(f), K)
            y, x = ry + dy - (W - 1), rx + dx - (W - 1)
            ok = (y >= 0) & (y < self.n) & (x >= 0) & (x < self.n)
            ok[ok] = in_rows[y[ok] * self.n + x[ok]]
            overlap.append(torch.as_tensor(np.flatnonzero(ok)))
        n_orb = orbit_lags.shape[0]
        images = {l: self._block_images(l) for l, _, _ in self.blocks}
        # windows of every block image at base pixels r: [s, m, r, lag] = Ψ_{s,m}[r + lag]
        windows = {
            l: _patches(im.reshape(-1, self.n, self.n), W)[:, rows].reshape(im.shape[0], im.shape[1], R, K * K)
            for l, im in images.items()
        }
        base = {l: im.reshape(im.shape[0], im.shape[1], -1)[:, :, rows] for l, im in images.items()}  # (S, m, R)
        out = torch.zeros(self.n_invariants, n_orb, dtype=self.dtype)
        col = 0
        for triple, T, size in zip(self.triples, self.tensors, self.invariant_sizes):
            S3 = tuple(windows[l].shape[0] for l in triple)
            block = out[col : col + size].view(*S3, n_orb)
            seen = set()
            for perm in itertools.permutations(range(3)):  # position p holds sorted index perm[p]
                ordered = tuple(triple[p] for p in perm)
                if ordered in seen:
                    continue
                seen.add(ordered)
                inv = [perm.index(q) for q in range(3)]  # sorted axis q ← position inv[q]
                Q = self._ordered_block(
                    T.permute(*perm), ordered, base, windows, u1, groups, overlap, f2, n_orb, max_chunk
                )
                block += Q.permute(*inv, 3)
            col += size
        return out

    def _ordered_block(
        self,
        T: torch.Tensor,
        ordered: tuple[int, int, int],
        base: dict,
        windows: dict,
        u1: np.ndarray,
        groups: list[torch.Tensor],
        overlap: list[torch.Tensor],
        f2: torch.Tensor,
        n_orb: int,
        max_chunk: int,
    ) -> torch.Tensor:
        """Q (Sa, Sb, Sc, n_orb) = Σ_r Σ_m T(ma, mb, mc) Ψa[r] Ψb[r + lag1] Ψc[r + lag2] per orbit row."""
        la, lb, lc = ordered
        Pa, Xb, Xc = base[la], windows[lb], windows[lc]
        Sa, Sb, Sc = Pa.shape[0], Xb.shape[0], Xc.shape[0]
        Mb, Mc = Xb.shape[1], Xc.shape[1]
        R = Pa.shape[2]
        A = torch.einsum("abc,iar->ribc", T, Pa).reshape(R, Sa, Mb, Mc)  # (R, Sa, Mb, Mc)
        A = A.permute(0, 3, 1, 2).reshape(R, Mc * Sa, Mb)  # (R, Mc·Sa, Mb)
        Xc_lag = Xc.permute(3, 0, 2, 1).contiguous()  # (K², Sc, r, mc)
        Q = torch.empty(n_orb, Sc, Sa * Sb, dtype=self.dtype)
        per_l1 = R * Sa * Mc * Sb
        step = max(1, max_chunk // per_l1)
        for c0 in range(0, u1.size, step):
            lags1 = torch.as_tensor(u1[c0 : c0 + step])
            n1 = lags1.numel()
            B = Xb[:, :, :, lags1].permute(2, 1, 3, 0).reshape(R, Mb, n1 * Sb)  # (R, Mb, n1·Sb)
            Y = torch.bmm(A, B).reshape(R, Mc, Sa, n1, Sb)  # Σ_mb, per base r
            for i in range(n1):
                g, keep = groups[c0 + i], overlap[c0 + i]  # rows with this lag1; r with Ψ[r], Ψ[r+lag1] ≠ 0
                X = Xc_lag.index_select(0, f2[g]).index_select(2, keep)  # (rows, Sc, r, mc)
                Yk = Y[:, :, :, i].index_select(0, keep).reshape(-1, Sa * Sb)  # ((r, mc), Sa·Sb)
                Q[g] = (X.reshape(g.numel() * Sc, -1) @ Yk).reshape(g.numel(), Sc, Sa * Sb)
        return Q.reshape(n_orb, Sc, Sa, Sb).permute(2, 3, 1, 0)

    # ---------------------------------------------------------------- evaluation
    def invariants(self, coef: torch.Tensor) -> torch.Tensor:
        """b(c) (n_invariants,): the bispectrum invariants of each sorted triple, (s1, s2, s3) row-major."""
        C = self.coef_blocks(coef)
        parts = []
        for (l1, l2, l3), T in zip(self.triples, self.tensors):
            t = torch.einsum("abc,kc->abk", T, C[l3])
            t = torch.einsum("abk,jb->ajk", t, C[l2])
            parts.append(torch.einsum("ajk,ia->ijk", t, C[l1]).reshape(-1))
        return torch.cat(parts)

    def third_box(self, coef: torch.Tensor) -> torch.Tensor:
        """E_ω Σ_r p[r] p[r+ℓ1] p[r+ℓ2], dense (K,)*4, from the invariant map."""
        K = 2 * self.W - 1
        m = self.invariants(coef) @ self.map3t
        return m[self.dense_to_orbit].reshape((K,) * 4)

    def active_triples(self, angular: Sequence[torch.Tensor]) -> list[bool]:
        """Per degree triple: whether its invariants can be nonzero for coefficients C_ℓ = Z_ℓ V_ℓᵀ,
        i.e. whether T contracted with V_ℓ1, V_ℓ2, V_ℓ3 is nonzero (e.g. for C4 the triples of
        degrees ≤ 3 with an odd sum vanish: only m = 0 is left there and T(0, 0, 0) = 0;
        22 % of the TRPV1 map). Their invariants and Jacobian blocks are identically 0; pass the
        result as ``active`` to :meth:`box_jacobian` (:class:`SymmetricModel` computes it once)."""
        out = []
        for (l1, l2, l3), T in zip(self.triples, self.tensors):
            Tr = torch.einsum("abc,ap,bq,cr->pqr", T, angular[l1], angular[l2], angular[l3])
            out.append(bool(Tr.numel()) and float(Tr.abs().max()) > 1e-12)
        return out

    def box_jacobian(
        self,
        coef: torch.Tensor,
        angular: Sequence[torch.Tensor] | None = None,
        *,
        active: Sequence[bool] | None = None,
        single: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact Jacobians of the box sums: ∂m1/∂c (size,), ∂m2/∂c (K², size) and the third
        moment's ∂m3/∂c on the orbit representatives (n_orb, size).

        Per triple, ∂b(i,j,k)/∂C1[i,a] = Σ_{b,c} T[a,b,c] C2[j,b] C3[k,c] (likewise for C2, C3), so
        ∂m3/∂C1[i,a] = Σ_{j,k} M3[:, (i,j,k)] U1[a,j,k]: ≈ n_orb · n_invariants · Σ(2ℓ+1) multiply-adds,
        a fraction of the dense product M3 · ∂b/∂c.

        ``angular``: optional per-ℓ matrices V_ℓ (2ℓ+1, k_ℓ); then the columns are the
        derivatives along C_ℓ = Z_ℓ V_ℓᵀ, i.e. ∂m/∂Z_ℓ = (∂m/∂C_ℓ) V_ℓ, laid out per ℓ as
        (S(ℓ), k_ℓ) row-major (the reduced coefficients of :class:`~cryomtd.mom3d.symmetric.SymmetricModel`).
        V is applied before the contraction with the map, so the cost drops by (2ℓ+1)/k_ℓ.

        ``active``: per degree triple, False to skip it (:meth:`active_triples` of ``angular``:
        its blocks are identically 0 there).

        ``single``: contract a float32 copy of the map (made once, half the size) with float32
        factors; J3 is returned in float64 with ≈ 1e-7 relative error. The contraction is
        memory-bound, so this halves it (TRPV1 C4: 0.29 → 0.16 s); Gauss–Newton with this
        Jacobian and a float64 residual follows the same path (see :func:`gauss_newton_polish`)."""
        coef = coef.detach()
        K2 = (2 * self.W - 1) ** 2
        C = self.coef_blocks(coef)
        V = {l: None if angular is None else angular[l] for l, _, _ in self.blocks}
        width = {l: S * (2 * l + 1 if V[l] is None else V[l].shape[1]) for l, _, S in self.blocks}
        start, n_cols = {}, 0
        for l, _, _ in self.blocks:
            start[l], n_cols = n_cols, n_cols + width[l]

        def reduce(l: int, X: torch.Tensor) -> torch.Tensor:
            """(..., S, 2ℓ+1) → (..., S·k) through V_ℓ (or unchanged)."""
            X = X if V[l] is None else X @ V[l]
            return X.reshape(X.shape[:-2] + (-1,))

        J1 = torch.zeros(n_cols, dtype=self.dtype)
        J2 = torch.zeros(K2, n_cols, dtype=self.dtype)
        for (l, st, S), M in zip(self.blocks, self._m2):
            J1[start[l] : start[l] + width[l]] = reduce(l, self.a1_row[st : st + S * (2 * l + 1)].reshape(S, 2 * l + 1))
            J2[:, start[l] : start[l] + width[l]] = reduce(l, torch.einsum("kst,tm->ksm", M + M.transpose(1, 2), C[l]))
        n_orb = self.map3t.shape[1]
        jd = torch.float32 if single else self.dtype
        mapj = self.map3t
        if single:  # a float32 copy of the map, made once (half the memory traffic of each contraction)
            if getattr(self, "_map3t_single", None) is None:
                self._map3t_single = self.map3t.to(torch.float32)
            mapj = self._map3t_single
        J3t = torch.zeros(n_cols, n_orb, dtype=jd)  # transposed: each column block is contiguous
        col = 0
        for t, ((l1, l2, l3), T, size) in enumerate(zip(self.triples, self.tensors, self.invariant_sizes)):
            S1, S2, S3 = C[l1].shape[0], C[l2].shape[0], C[l3].shape[0]
            M = mapj[col : col + size].view(S1, S2, S3, n_orb)  # contiguous block, no copy
            col += size
            if active is not None and not active[t]:
                continue
            U1 = torch.einsum("abc,jb,kc->ajk", T, C[l2], C[l3])
            U2 = torch.einsum("abc,ia,kc->bik", T, C[l1], C[l3])
            U3 = torch.einsum("abc,ia,jb->cij", T, C[l1], C[l2])
            if V[l1] is not None:  # contract the angular index with V_ℓ first (fewer columns)
                U1 = torch.einsum("ajk,ap->pjk", U1, V[l1])
            if V[l2] is not None:
                U2 = torch.einsum("bik,bp->pik", U2, V[l2])
            if V[l3] is not None:
                U3 = torch.einsum("cij,cp->pij", U3, V[l3])
            U1, U2, U3 = U1.to(jd), U2.to(jd), U3.to(jd)
            k1, k3 = U1.shape[0], U3.shape[0]
            # ∂m3/∂Z_ℓ1[i, a] = Σ_jk U1[a, j, k] M[i, j, k]: one batched product over i
            D1 = torch.matmul(U1.reshape(k1, S2 * S3), M.view(S1, S2 * S3, n_orb))  # (S1, k1, n_orb)
            # ∂m3/∂Z_ℓ3[k, c] = Σ_ij U3[c, i, j] M[i, j, k]: one product over the leading (i, j)
            D3 = (U3.reshape(k3, S1 * S2) @ M.view(S1 * S2, S3 * n_orb)).view(k3, S3, n_orb).transpose(0, 1)
            # ∂m3/∂Z_ℓ2[j, b] = Σ_ik U2[b, i, k] M[i, j, k]: per i, a product broadcast over j
            D2 = torch.matmul(U2[:, 0, :], M[0])  # (S2, k2, n_orb)
            for i in range(1, S1):
                D2 += torch.matmul(U2[:, i, :], M[i])
            for l, D in ((l1, D1), (l2, D2), (l3, D3)):
                J3t[start[l] : start[l] + width[l]] += D.reshape(width[l], n_orb)
        J3 = J3t.T.to(self.dtype)
        return J1, J2, J3
