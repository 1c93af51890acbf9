"""First three autocorrelations of a 1-D measurement, streamed in chunks, and their model.

Estimators (docs/design.md §7), with y zero outside [0, n) and 0 ≤ ℓ, ℓ1, ℓ2 ≤ L−1::

    a1 = (1/n) Σ_i y[i]
    a2[ℓ] = (1/n) Σ_i y[i] y[i+ℓ]
    a3[ℓ1, ℓ2] = (1/n) Σ_i y[i] y[i+ℓ1] y[i+ℓ2]      (full, symmetric (L, L))

Hot path: with the windows v_i = y[i:i+L] stacked as rows of V (B, L) and W = v_i[0]·V,
``[s3 | s2] += Wᵀ [V | 1]`` (one GEMM per block of B windows), ``s1 += Σ y``. The
last L−1 samples of each chunk are carried into the next, so sums are exact across chunk
joins; at the end the carry is closed with L−1 zeros (y is zero outside).

:class:`Moments1D` stores the *sums* and the sample count, so merging segments is exact
(each segment zero outside itself): the merged moments equal the sample-weighted mean
of the segments' own moments.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from cryomtd.io import InputError, save_npz

__all__ = [
    "Moments1D",
    "MomentAccumulator",
    "autocorrelations",
    "merge",
    "model_moments",
    "noise_bias",
    "DEFAULT_BLOCK",
]

DEFAULT_BLOCK = 4096  # windows per GEMM block: (L+1, B) float64 ≈ 0.7 MB stays in L2 cache for L ~ 21


@dataclass(frozen=True)
class Moments1D:
    """Sums of products of a 1-D measurement and its sample count.

    ``s1`` float, ``s2`` (L,), ``s3`` (L, L) symmetric, all float64; ``n`` samples.
    The normalised moments are the properties ``a1``, ``a2``, ``a3`` (sums / n).
    """

    L: int
    n: int
    s1: float
    s2: np.ndarray
    s3: np.ndarray

    @property
    def a1(self) -> float:
        return float(self.s1 / self.n)

    @property
    def a2(self) -> np.ndarray:
        return self.s2 / self.n

    @property
    def a3(self) -> np.ndarray:
        return self.s3 / self.n

    def save(self, path: str | os.PathLike, **extra: np.ndarray | float | int) -> None:
        """Write the sums, count and any ``extra`` scalars/arrays to ``path`` (.npz, atomic)."""
        save_npz(path, L=self.L, n=self.n, s1=self.s1, s2=self.s2, s3=self.s3, **extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Moments1D:
        try:
            with np.load(path) as f:
                return cls(int(f["L"]), int(f["n"]), float(f["s1"]), f["s2"].copy(), f["s3"].copy())
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: not a 1-D moments file (L, n, s1, s2, s3): {exc}") from None

    @classmethod
    def from_moments(cls, a1: float, a2: np.ndarray, a3: np.ndarray, n: int = 1) -> Moments1D:
        """Wrap normalised moments (e.g. a model) as if they came from ``n`` samples."""
        a2, a3 = np.asarray(a2, float), np.asarray(a3, float)
        return cls(a2.size, int(n), float(a1) * n, a2 * n, a3 * n)


class MomentAccumulator:
    """Streaming accumulator: ``update(chunk)`` any number of times, then ``result()``."""

    def __init__(self, L: int, block: int = DEFAULT_BLOCK, dtype: str = "float64"):
        if L < 1:
            raise InputError(f"L: expected >= 1, got {L}")
        if dtype not in ("float64", "float32"):
            raise InputError(f"moments dtype: expected 'float64' or 'float32', got {dtype!r}")
        self.L, self.block, self.dtype = int(L), int(block), np.dtype(dtype)
        self.n = 0
        self.s1 = 0.0
        self._carry = np.zeros(0)
        self._closed = False
        self._acc = np.zeros((L, L + 1))  # [s3 | s2]
        self._UT: np.ndarray | None = None
        self._WT: np.ndarray | None = None

    def _windows(self, e: np.ndarray) -> None:
        """Add the products of all windows starting in e[: len(e) − L + 1].

        Windows are the columns of Uᵀ = [V | 1]ᵀ (L+1, B), filled by L contiguous slice
        copies (one per lag, not per sample); Wᵀ = v0·Vᵀ (L, B). One GEMM Wᵀ U (L, L+1) per
        block gives s3 in its first L columns and s2 in the last. Buffers are reused. With
        ``dtype="float32"`` the products and the per-block GEMM are single precision (≈ 2×
        faster); the sums across blocks stay float64.
        """
        L, B = self.L, self.block
        nwin = e.size - L + 1
        if self._UT is None:
            self._UT = np.ones((L + 1, B), dtype=self.dtype)
            self._WT = np.empty((L, B), dtype=self.dtype)
        for b in range(0, nwin, B):
            m = min(B, nwin - b)
            UT, WT = self._UT[:, :m], self._WT[:, :m]
            for lag in range(L):
                UT[lag] = e[b + lag : b + lag + m]
            np.multiply(UT[:L], UT[0], out=WT)
            self._acc += WT @ UT.T

    def update(self, y: np.ndarray) -> None:
        """Add the next ``len(y)`` samples of the measurement."""
        if self._closed:
            raise RuntimeError("accumulator already closed by result()")
        y = np.asarray(y, dtype=np.float64).ravel()
        self.n += y.size
        self.s1 += float(y.sum())
        e = np.concatenate((self._carry, y))
        if e.size >= self.L:
            self._windows(e)
            self._carry = e[e.size - self.L + 1 :].copy()
        else:
            self._carry = e

    def result(self) -> Moments1D:
        """Close the stream (y is zero after the last sample) and return the sums."""
        if not self._closed:
            if self._carry.size:
                self._windows(np.concatenate((self._carry, np.zeros(self.L - 1))))
            self._closed = True
            self._UT = self._WT = None
        s3 = self._acc[:, : self.L]
        s3 = 0.5 * (s3 + s3.T)  # exact symmetry (GEMM rounding)
        return Moments1D(self.L, self.n, self.s1, self._acc[:, self.L].copy(), s3)


def autocorrelations(
    y: np.ndarray | Iterable[np.ndarray],
    L: int,
    *,
    chunk: int = 1 << 20,
    block: int = DEFAULT_BLOCK,
    dtype: str = "float64",
) -> Moments1D:
    """Moments of a measurement given as one array (processed in chunks of ``chunk``) or an
    iterable of consecutive chunks. Returns :class:`Moments1D` (``.a1``, ``.a2`` (L,),
    ``.a3`` (L, L), ``.n``). ``dtype="float64"`` (default) is exact to rounding;
    ``"float32"`` computes each block's products in single precision (relative error
    ~1e-7·√block per block, far below the sampling error of any useful N) for ≈ 2× speed."""
    acc = MomentAccumulator(L, block, dtype)
    if isinstance(y, np.ndarray):
        y = y.ravel()
        for c0 in range(0, y.size, chunk):
            acc.update(y[c0 : c0 + chunk])
    else:
        for part in y:
            acc.update(part)
    return acc.result()


def merge(parts: Sequence[Moments1D]) -> Moments1D:
    """Exact merge of independent segments (sums and counts add)."""
    if not parts:
        raise InputError("merge: no moment files given")
    L = parts[0].L
    for p in parts:
        if p.L != L:
            raise InputError(f"merge: segments have different L ({p.L} != {L})")
    return Moments1D(
        L,
        sum(p.n for p in parts),
        float(sum(p.s1 for p in parts)),
        np.sum([p.s2 for p in parts], axis=0),
        np.sum([p.s3 for p in parts], axis=0),
    )


def _shift_matrix(x: np.ndarray, xp=np) -> np.ndarray:
    """X[ℓ, i] = x[i + ℓ] (zero past the end), shape (L, L); works with autograd.numpy."""
    L = x.shape[0]
    idx = np.arange(L)[:, None] + np.arange(L)[None, :]
    idx[idx >= L] = L  # points at the appended zero
    return xp.concatenate([x, xp.zeros(1)])[idx]


def noise_bias(L: int, sigma: float, mean: float) -> tuple[np.ndarray, np.ndarray]:
    """Noise bias of (a2, a3): σ² δ[ℓ] and σ² · mean · (δ[ℓ1] + δ[ℓ2] + δ[ℓ1−ℓ2]),
    with ``mean`` = E a1 = γ a1_x."""
    b2 = np.zeros(L)
    b2[0] = sigma**2
    I = np.eye(L)
    e0 = I[0]
    b3 = sigma**2 * mean * (e0[:, None] + e0[None, :] + I)
    return b2, b3


def model_moments(x: np.ndarray, gamma: float, sigma: float = 0.0, xp=np, xi=None):
    """Expected moments of the measurement: (a1, a2 (L,), a3 (L, L)).

    Well separated (``xi`` None)::

        a1 = γ/L Σ x, a2[ℓ] = γ/L Σ_i x[i]x[i+ℓ] + σ²δ[ℓ],
        a3[ℓ1,ℓ2] = γ/L Σ_i x[i]x[i+ℓ1]x[i+ℓ2] + σ² a1 (δ[ℓ1]+δ[ℓ2]+δ[ℓ1−ℓ2]).

    Arbitrary spacing (non-overlapping copies that may touch; Lan, Bendory, Boumal, Singer
    2020): ``xi`` (L − 1,) is the pair-separation function, ξ[d] = the number per sample of
    consecutive copy pairs whose second copy starts L + d after the first (d zeros between
    them); pairs with d ≥ L − 1 are out of reach of the lags. A window of length L holds
    pieces of at most two copies, so with C2[u] = Σ_p x[p]x[p+u] and
    C3[u, v] = Σ_p x[p]x[p+u]x[p+v] (x zero outside [0, L)), for ℓ1 ≤ ℓ2::

        a2[ℓ]     += Σ_d ξ[d] C2[ℓ − L − d]
        a3[ℓ1,ℓ2] += Σ_d ξ[d] (C3[ℓ1, ℓ2 − L − d] + C3[ℓ1 − L − d, ℓ2 − L − d])

    (first two samples in the first copy and the third in the second, or the first in the
    first and two in the second); a1 and the noise bias are unchanged. ξ = 0 is the
    separated model. ``xp`` = ``autograd.numpy`` makes it differentiable.
    """
    L = x.shape[0]
    X = _shift_matrix(x, xp)
    a1 = gamma * xp.sum(x) / L
    a2 = gamma * (X @ x) / L
    a3 = gamma * ((X * x) @ X.T) / L
    if xi is not None:
        D = L - 1
        d = np.arange(D)
        lag = np.arange(L)
        # C2 at lag L + d − ℓ ≥ 1 (symmetric), zero from lag L on
        c2 = xp.concatenate([X @ x, xp.zeros(1)])
        a2 = a2 + c2[np.minimum(L + d[None, :] - lag[:, None], L)] @ xi
        # C3[u, v] for u, v in (−L, L): S[u + L − 1, p] = x[p + u]; index 2L − 1 is a zero row/column
        idx = np.arange(-(L - 1), L)[:, None] + np.arange(L)[None, :]
        idx = np.where((idx >= 0) & (idx < L), idx, L)
        S = xp.concatenate([x, xp.zeros(1)])[idx]
        C3 = (S * x) @ S.T
        C3 = xp.concatenate([xp.concatenate([C3, xp.zeros((2 * L - 1, 1))], axis=1), xp.zeros((1, 2 * L))], axis=0)

        def at(u, v):  # C3[u, v] with zero outside (−L, L)
            ok = (u > -L) & (u < L) & (v > -L) & (v < L)
            return C3[np.where(ok, u + L - 1, 2 * L - 1), np.where(ok, v + L - 1, 2 * L - 1)]

        lo = np.minimum.outer(lag, lag)[:, :, None]
        hi = np.maximum.outer(lag, lag)[:, :, None]
        sep = L + d[None, None, :]
        a3 = a3 + (at(lo, hi - sep) + at(lo - sep, hi - sep)) @ xi
    if sigma:
        b2, b3 = noise_bias(L, 1.0, 1.0)
        a2 = a2 + sigma**2 * b2
        a3 = a3 + sigma**2 * a1 * b3
    return a1, a2, a3
