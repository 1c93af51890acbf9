"""The lag index maps of the 2-D autocorrelations: one place for the symmetry bookkeeping.

Layout (DESIGN §4, issue 3). For a window ``W`` the lags are ℓ = (ℓy, ℓx) with
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
  triples are. The stored representative of a class is its member with the
  smallest dense flat index among those with f(ℓ1) ≤ f(ℓ2) (one exists by the
  swap symmetry). Classes are listed in increasing representative index.
  K3 ≈ D⁴/6 for large W (W=6: 2 806 of 14 641; W=11: 33 211 of 194 481).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "lag_size",
    "a2_nonredundant_lags",
    "a3_nonredundant_lags",
    "a2_index_map",
    "a3_index_map",
    "a3_representatives",
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


@lru_cache(maxsize=16)
def _a3_maps(W: int) -> tuple[np.ndarray, np.ndarray]:
    """(representative dense flat indices (K3,), dense→unique index map (D⁴,) int32)."""
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
    valid = np.flatnonzero(f1 <= f2)
    ukeys, first = np.unique(key[valid], return_index=True)
    reps_by_key = valid[first]  # min dense index with f1 ≤ f2 in each class (np.unique: first occurrence)
    order = np.argsort(reps_by_key, kind="stable")
    reps = reps_by_key[order]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    dense_to_unique = rank[np.searchsorted(ukeys, key)].astype(np.int32)
    reps.setflags(write=False)
    dense_to_unique.setflags(write=False)
    return reps, dense_to_unique


def a3_representatives(W: int) -> np.ndarray:
    """(K3,) dense flat indices f(ℓ1)·D² + f(ℓ2) of the stored a3 entries (all with f(ℓ1) ≤ f(ℓ2))."""
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
