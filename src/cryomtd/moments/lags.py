"""The lag index maps of the 2-D autocorrelations: one place for the symmetry bookkeeping.

Layout (docs/design.md §8). For a window ``W`` the lags are ℓ = (ℓy, ℓx) with
|ℓy|, |ℓx| ≤ W−1; ``D = 2W−1`` values per axis, dense index ``ℓ + W − 1``. The flat
lag index is ``f(ℓ) = (ℓy + W − 1)·D + (ℓx + W − 1)`` (row-major over (ℓy, ℓx)), so
the dense ``a2`` is ``(D, D)`` and the dense ``a3`` is ``(D, D, D, D)`` indexed
``[ℓ1y, ℓ1x, ℓ2y, ℓ2x]`` (each shifted by W−1); its flat index is ``f(ℓ1)·D² + f(ℓ2)``.

Symmetries (exact, because the image is zero outside its support, so every sum
runs over all r ∈ ℤ²):

* a² — ``a2[ℓ] = a2[−ℓ]`` (2-fold). Non-redundant set: the closed half-plane
  H = {ℓy > 0} ∪ {ℓy = 0, ℓx ≥ 0}, i.e. flat indices ``f ≥ (D² − 1)/2``;
  K2 = (D² + 1)/2 entries, listed in increasing ``f``.
* a³ — the entry (ℓ1, ℓ2) is a sum over translates of the point triple
  {0, ℓ1, ℓ2}; it depends only on that triple up to translation, so the 3! = 6
  ways to choose which point is the base r and which is "ℓ1" give equal entries:
  (ℓ1, ℓ2), (ℓ2, ℓ1), (−ℓ1, ℓ2−ℓ1), (ℓ2−ℓ1, −ℓ1), (−ℓ2, ℓ1−ℓ2), (ℓ1−ℓ2, −ℓ2)
  (those of them that lie inside the window). The class of an entry is named by
  its canonical triple: sort the three points lexicographically by (y, x) and
  subtract the smallest; two dense entries are equal iff their canonical
  triples are. K3 ≈ 0.31·D⁴ (W=6: 4 621 of 14 641; W=11: 60 941 of 194 481).

Computed set of the engine's ``gather`` method (docs/design.md §8 Gram G[ℓ1, ℓ2] =
Σ_r I[r] I[r+ℓ1] I[r+ℓ2]; the ``rows`` method, the CPU default, forms a smaller set
described and checked in ``cryomtd.moments.autocorr2d._row_plan``; the stored
representatives below are the same for both, only the Gram entry a value is read from differs).
Split the lags into H (above), L = {ℓy ≤ 0, ℓx < 0}, R = {ℓy < 0, ℓx > 0} and
Z = {ℓy < 0, ℓx = 0} (a partition) and order the window vector as H, L, R, Z
(``gram_layout``). The engine forms only G[p1, p2] with p1 ∈ H and p2 at or after
p1 in this order (H×H upper triangle and H×(L∪R∪Z): base point = lexicographically
smallest or middle point of the triple), plus the L×R block. Every class has a member
there: if no orbit member has a lag in H, the triple's largest point is the only
valid base and the other two differ by ≥ W in x, i.e. one lies in L and one in R.
This costs ≈ 3/8 + 1/16 of the D⁴ full Gram (vs 1/2 for a symmetric Gram).
The stored representative of a class is its computed member with the smallest
Gram position; classes are listed by increasing dense flat index of the
representative (``a3_nonredundant_lags``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

__all__ = [
    "lag_size",
    "a2_nonredundant_lags",
    "a3_nonredundant_lags",
    "a2_index_map",
    "a3_index_map",
    "a3_representatives",
    "gram_layout",
    "GramLayout",
]


def lag_size(W: int) -> int:
    """D = 2W − 1, the number of lags per axis; raises ValueError for W < 1."""
    if int(W) != W or W < 1:
        raise ValueError(f"window W must be a positive integer, got {W!r}")
    return 2 * int(W) - 1


def _lag_grid(W: int) -> tuple[np.ndarray, np.ndarray]:
    """(ly, lx) of every flat lag index, each of shape (D²,)."""
    D = lag_size(W)
    ly, lx = np.divmod(np.arange(D * D), D)
    return ly - (W - 1), lx - (W - 1)


@lru_cache(maxsize=32)
def _a2_maps(W: int) -> tuple[np.ndarray, np.ndarray]:
    D = lag_size(W)
    half = (D * D - 1) // 2
    f = np.arange(D * D)
    dense_to_unique = np.maximum(f, D * D - 1 - f) - half
    reps = np.arange(half, D * D)
    dense_to_unique.setflags(write=False)
    reps.setflags(write=False)
    return reps, dense_to_unique


def a2_index_map(W: int) -> np.ndarray:
    """(D, D) int array: the index into the non-redundant a2 values of each dense entry."""
    D = lag_size(W)
    return _a2_maps(W)[1].reshape(D, D)


def a2_nonredundant_lags(W: int) -> np.ndarray:
    """(K2, 2) int lags (ℓy, ℓx) of the stored non-redundant a2 entries (half-plane H)."""
    ly, lx = _lag_grid(W)
    reps = _a2_maps(W)[0]
    return np.stack([ly[reps], lx[reps]], axis=1)


class GramLayout(NamedTuple):
    """Which Gram entries the engine forms (see the module docstring, "computed set").

    ``perm`` (D²,): the flat lag f at each position p of the permuted window vector
    (H in increasing f, then L, R, Z); ``n_h`` = |H|; ``l_range``/``r_range``: the
    position ranges of L and R.
    """

    perm: np.ndarray
    n_h: int
    l_range: tuple[int, int]
    r_range: tuple[int, int]


@lru_cache(maxsize=32)
def gram_layout(W: int) -> GramLayout:
    """The permuted window-vector order and block ranges used by the engine for window W."""
    D = lag_size(W)
    c = (D * D - 1) // 2
    ly, lx = _lag_grid(W)
    f = np.arange(D * D)
    H = f[f >= c]
    L = f[(ly <= 0) & (lx < 0)]
    R = f[(ly < 0) & (lx > 0)]
    Z = f[(ly < 0) & (lx == 0)]
    perm = np.concatenate([H, L, R, Z])
    perm.setflags(write=False)
    nH, nL, nR = H.size, L.size, R.size
    return GramLayout(perm, nH, (nH, nH + nL), (nH + nL, nH + nL + nR))


def in_computed_set(W: int, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """True where the Gram entry at permuted positions (p1, p2) is formed by the engine."""
    g = gram_layout(W)
    return ((p1 < g.n_h) & (p2 >= p1)) | (
        (p1 >= g.l_range[0]) & (p1 < g.l_range[1]) & (p2 >= g.r_range[0]) & (p2 < g.r_range[1])
    )


@lru_cache(maxsize=16)
def _a3_maps(W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(representative dense flat indices (K3,), dense→unique map (D⁴,) int32, representative
    Gram positions p1·D² + p2 (K3,))."""
    D = lag_size(W)
    D2 = D * D
    ly, lx = _lag_grid(W)
    B = 4 * W  # point (y, x) -> y*B + x keeps lexicographic order and is decodable: |x| ≤ 2(W−1) < B/2
    code = ly * B + lx  # (D²,)
    f1, f2 = np.divmod(np.arange(D2 * D2, dtype=np.int64), D2)
    pts = np.stack([np.zeros_like(f1), code[f1], code[f2]], axis=1)
    pts.sort(axis=1)
    d1 = pts[:, 1] - pts[:, 0]
    d2 = pts[:, 2] - pts[:, 0]
    key = d1 * (4 * B * W) + d2  # d2 < (2W−1)·B + B/2 < 4·B·W
    del pts, d1, d2
    pos = np.empty(D2, dtype=np.int64)
    pos[gram_layout(W).perm] = np.arange(D2)
    gpos = pos[f1] * D2 + pos[f2]  # Gram position of every dense entry
    valid = np.flatnonzero(in_computed_set(W, pos[f1], pos[f2]))
    order_v = valid[np.argsort(gpos[valid], kind="stable")]  # computed entries by Gram position
    ukeys, first = np.unique(key[order_v], return_index=True)  # first = smallest Gram position per class
    if ukeys.size != np.unique(key).size:  # every class must have a computed member
        raise AssertionError(f"a3 computed set misses classes for W={W}")
    rep_dense = order_v[first]
    order = np.argsort(rep_dense, kind="stable")
    reps = rep_dense[order]
    rep_gram = gpos[reps]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    dense_to_unique = rank[np.searchsorted(ukeys, key)].astype(np.int32)
    for a in (reps, dense_to_unique, rep_gram):
        a.setflags(write=False)
    return reps, dense_to_unique, rep_gram


def a3_representatives(W: int) -> np.ndarray:
    """(K3,) dense flat indices f(ℓ1)·D² + f(ℓ2) of the stored a3 entries, increasing."""
    return _a3_maps(W)[0]


def a3_index_map(W: int) -> np.ndarray:
    """(D, D, D, D) int32 array: index into the non-redundant a3 values of each dense entry."""
    D = lag_size(W)
    return _a3_maps(W)[1].reshape(D, D, D, D)


def a3_nonredundant_lags(W: int) -> np.ndarray:
    """(K3, 4) int lags (ℓ1y, ℓ1x, ℓ2y, ℓ2x) of the stored non-redundant a3 entries."""
    D2 = lag_size(W) ** 2
    ly, lx = _lag_grid(W)
    f1, f2 = np.divmod(a3_representatives(W), D2)
    return np.stack([ly[f1], lx[f1], ly[f2], lx[f2]], axis=1)
