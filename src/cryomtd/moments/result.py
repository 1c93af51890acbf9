"""``Moments2D``: the autocorrelation sums of one or more micrographs.

A result keeps what makes merging exact — sums over pixels and the pixel count —
never normalised numbers; the dense views divide by the count. Layouts and the
6-fold a³ index map are documented in :mod:`cryomtd.moments.lags`.

Stored fields (all sums in float64):

* ``s1`` — Σ_r I[r];
* ``s2`` (K2,) — Σ_r I[r] I[r+ℓ] at the non-redundant lags ``a2_nonredundant_lags(W)``;
* ``s3`` (K3,) — Σ_r I[r] I[r+ℓ1] I[r+ℓ2] at ``a3_nonredundant_lags(W)``;
* ``t`` (D, D) or ``None`` — overlap sums t[ℓ] = Σ over r with r and r+ℓ both in the
  image of I[r] (index ℓ + W − 1); they make the noise-bias correction exact at the
  image border (without them it uses t[ℓ] ≈ s1);
* ``count`` — number of pixels P; ``n_images``; ``noise_sum`` — Σ_k P_k σ²_k over
  the merged micrographs (NaN when a σ² is unknown), so ``sigma2`` is the
  pixel-weighted noise variance.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cryomtd.io import InputError, read_npz, save_npz
from cryomtd.moments.lags import (
    _a2_maps,
    _a3_maps,
    a2_nonredundant_lags,
    a3_nonredundant_lags,
    lag_size,
)

__all__ = ["Moments2D", "merge", "FORMAT_VERSION"]

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class Moments2D:
    """Autocorrelation sums up to third order over a window of lags |ℓ|∞ ≤ W−1.

    Dense views (``a1``, ``a2``, ``a3``): ``a2[ℓy+W−1, ℓx+W−1] =
    (1/P) Σ_r I[r] I[r+ℓ]`` and ``a3[ℓ1y+W−1, ℓ1x+W−1, ℓ2y+W−1, ℓ2x+W−1] =
    (1/P) Σ_r I[r] I[r+ℓ1] I[r+ℓ2]``, rows = y, columns = x, I zero outside the image.
    """

    window: int
    count: int
    s1: float
    s2: np.ndarray
    s3: np.ndarray
    t: np.ndarray | None = None
    n_images: int = 1
    noise_sum: float = float("nan")
    backend: str = "numpy"
    dtype: str = "float64"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        D = lag_size(self.window)
        K2, K3 = _a2_maps(self.window)[0].size, _a3_maps(self.window)[0].size
        if np.shape(self.s2) != (K2,) or np.shape(self.s3) != (K3,):
            raise ValueError(
                f"Moments2D(W={self.window}): s2/s3 must have shapes ({K2},)/({K3},), "
                f"got {np.shape(self.s2)}/{np.shape(self.s3)}"
            )
        if self.t is not None and np.shape(self.t) != (D, D):
            raise ValueError(f"Moments2D(W={self.window}): t must have shape ({D}, {D}), got {np.shape(self.t)}")
        if self.count <= 0:
            raise ValueError(f"Moments2D: count must be positive, got {self.count}")

    # ------------------------------------------------------------------ views
    @property
    def n(self) -> int:
        """Alias of ``count`` (number of pixels P)."""
        return self.count

    @property
    def sigma2(self) -> float:
        """Pixel-weighted noise variance of the merged micrographs (NaN if unknown)."""
        return self.noise_sum / self.count

    @property
    def a1(self) -> float:
        """(1/P) Σ_r I[r]."""
        return float(self.s1 / self.count)

    @property
    def a2(self) -> np.ndarray:
        """Dense (2W−1, 2W−1) second autocorrelation (a new array)."""
        D = lag_size(self.window)
        return (self.s2[_a2_maps(self.window)[1]] / self.count).reshape(D, D)

    @property
    def a3(self) -> np.ndarray:
        """Dense (2W−1,)*4 third autocorrelation (a new array, (2W−1)⁴ float64)."""
        D = lag_size(self.window)
        return (self.s3[_a3_maps(self.window)[1]] / self.count).reshape(D, D, D, D)

    def a2_unique(self) -> np.ndarray:
        """(K2,) non-redundant a2 values at ``a2_nonredundant_lags(W)``."""
        return self.s2 / self.count

    def a3_unique(self) -> np.ndarray:
        """(K3,) non-redundant a3 values at ``a3_nonredundant_lags(W)``."""
        return self.s3 / self.count

    def a2_lags(self) -> np.ndarray:
        return a2_nonredundant_lags(self.window)

    def a3_lags(self) -> np.ndarray:
        return a3_nonredundant_lags(self.window)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, a1: float, a2: np.ndarray, a3: np.ndarray, count: int, window: int, **kwargs) -> Moments2D:
        """Store dense (model or exact) moments in the same format.

        ``a2`` (D, D) and ``a3`` (D, D, D, D) with D = 2W−1 are read at the
        representative lags only (they are assumed to have the symmetries of
        ``cryomtd.moments.lags``); ``count`` is the pixel weight P used for merging.
        """
        D = lag_size(window)
        a2 = np.asarray(a2, dtype=np.float64)
        a3 = np.asarray(a3, dtype=np.float64)
        if a2.shape != (D, D) or a3.shape != (D, D, D, D):
            raise ValueError(
                f"from_dense(W={window}): expected a2 {(D, D)} and a3 {(D,) * 4}, got {a2.shape} and {a3.shape}"
            )
        return cls(
            window=int(window),
            count=int(count),
            s1=float(a1) * count,
            s2=a2.ravel()[_a2_maps(window)[0]] * count,
            s3=a3.ravel()[_a3_maps(window)[0]] * count,
            **kwargs,
        )

    def crop(self, window: int) -> Moments2D:
        """The same sums restricted to the smaller window ``window`` ≤ W (exact: entries are copied).

        The lags |ℓ|∞ ≤ window−1 are a subset of those of W, and so are the a2/a3 classes.
        """
        window = int(window)
        if not 1 <= window <= self.window:
            raise ValueError(f"crop: window must be in 1…{self.window}, got {window}")
        o = self.window - window
        l2 = a2_nonredundant_lags(window) + (self.window - 1)
        l3 = a3_nonredundant_lags(window) + (self.window - 1)
        D = lag_size(self.window)
        i2 = _a2_maps(self.window)[1].reshape(D, D)[l2[:, 0], l2[:, 1]]
        i3 = _a3_maps(self.window)[1].reshape(D, D, D, D)[l3[:, 0], l3[:, 1], l3[:, 2], l3[:, 3]]
        t = None if self.t is None else self.t[o : D - o, o : D - o].copy()
        return replace(self, window=window, s2=self.s2[i2], s3=self.s3[i3], t=t, meta=dict(self.meta))

    def debiased(self, sigma2: float | None = None) -> Moments2D:
        """A copy with the white-noise bias removed (docs/design.md §8), for zero-mean noise of variance σ².

        With I = s + ε, E[a2[ℓ]] = a2_s[ℓ] + σ² δ_ℓ0 and the a³ entries whose point
        triple {0, ℓ1, ℓ2} has a double point gain σ² times a first-order sum:
        (0, ℓ) and its class: σ² t[−ℓ]/P for ℓ ≠ 0, (0, 0): 3σ² t[0]/P (t = overlap
        sums; t[ℓ] ≈ s1 when ``t`` is None). ``sigma2=None`` uses ``self.sigma2``.
        Exact in expectation for one micrograph or several with the same σ².
        """
        if sigma2 is None:
            sigma2 = self.sigma2
        if not np.isfinite(sigma2):
            raise ValueError("debiased: sigma2 unknown (pass it, or estimate it when computing the moments)")
        W, D = self.window, lag_size(self.window)
        s2 = self.s2.copy()
        s2[_a2_maps(W)[1][(D * D - 1) // 2]] -= sigma2 * self.count
        t = np.full((D, D), self.s1) if self.t is None else self.t
        bias = sigma2 * t[::-1, ::-1].ravel()  # σ² t[−ℓ] at flat f(ℓ)
        f0 = (D * D - 1) // 2
        bias[f0] = 3.0 * sigma2 * t[W - 1, W - 1]
        dense_idx = f0 * D * D + np.arange(D * D)  # dense entries (0, ℓ): one per class with a double point
        s3 = self.s3.copy()
        s3[_a3_maps(W)[1][dense_idx]] -= bias
        return replace(self, s2=s2, s3=s3, meta={**self.meta, "debiased_sigma2": float(sigma2)})

    # --------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> None:
        """Write an uncompressed ``.npz`` atomically (format version ``FORMAT_VERSION``)."""
        save_npz(
            path,
            version=np.int64(FORMAT_VERSION),
            window=np.int64(self.window),
            count=np.int64(self.count),
            s1=np.float64(self.s1),
            s2=self.s2,
            s3=self.s3,
            t=np.zeros((0, 0)) if self.t is None else self.t,
            n_images=np.int64(self.n_images),
            noise_sum=np.float64(self.noise_sum),
            backend=np.str_(self.backend),
            dtype=np.str_(self.dtype),
            debiased_sigma2=np.float64(self.meta.get("debiased_sigma2", np.nan)),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Moments2D:
        """Read a file written by ``save``; errors name the file."""
        path = Path(path)
        d = read_npz(path, ("version", "window", "count", "s1", "s2", "s3"), what="Moments2D .npz moments file")
        if int(d["version"]) > FORMAT_VERSION:
            raise InputError(
                f"{path}: moments format version {int(d['version'])} is newer than this cryomtd ({FORMAT_VERSION})"
            )
        t = d.get("t")
        meta = {}
        if np.isfinite(d.get("debiased_sigma2", np.nan)):
            meta["debiased_sigma2"] = float(d["debiased_sigma2"])
        try:
            return cls(
                window=int(d["window"]),
                count=int(d["count"]),
                s1=float(d["s1"]),
                s2=np.asarray(d["s2"], np.float64),
                s3=np.asarray(d["s3"], np.float64),
                t=None if t is None or t.size == 0 else np.asarray(t, np.float64),
                n_images=int(d.get("n_images", 1)),
                noise_sum=float(d.get("noise_sum", np.nan)),
                backend=str(d.get("backend", "unknown")),
                dtype=str(d.get("dtype", "float64")),
                meta=meta,
            )
        except ValueError as exc:
            raise InputError(f"{path}: inconsistent moments file ({exc})") from None

    @classmethod
    def merge(cls, parts: Sequence[Moments2D]) -> Moments2D:
        """See :func:`merge`."""
        return merge(parts)


def _digest(m: Moments2D) -> bytes:
    h = hashlib.sha1()
    for a in (np.float64(m.s1), np.int64(m.count), m.s2, m.s3):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


def merge(parts: Sequence[Moments2D]) -> Moments2D:
    """The exact pixel-weighted combination of results (sums and counts add).

    Parts are summed in a canonical order (by content digest), so the result is
    bitwise independent of the order of ``parts``. All parts must share W and
    must all be raw or all debiased with the same σ².
    """
    parts = list(parts)
    if not parts:
        raise ValueError("merge: nothing to merge")
    W = parts[0].window
    if any(p.window != W for p in parts):
        raise ValueError(f"merge: windows differ ({sorted({p.window for p in parts})})")
    deb = {p.meta.get("debiased_sigma2") for p in parts}
    if len(deb) > 1 and None in deb:
        raise ValueError("merge: cannot mix raw and debiased moments")
    parts.sort(key=_digest)
    s2 = np.zeros_like(parts[0].s2)
    s3 = np.zeros_like(parts[0].s3)
    s1 = 0.0
    t = None if any(p.t is None for p in parts) else np.zeros_like(parts[0].t)
    for p in parts:
        s1 += p.s1
        s2 += p.s2
        s3 += p.s3
        if t is not None:
            t += p.t
    meta = {}
    if None not in deb:  # all debiased: record the pixel-weighted σ² that was removed
        meta["debiased_sigma2"] = sum(p.count * p.meta["debiased_sigma2"] for p in parts) / sum(p.count for p in parts)
    return Moments2D(
        window=W,
        count=sum(p.count for p in parts),
        s1=s1,
        s2=s2,
        s3=s3,
        t=t,
        n_images=sum(p.n_images for p in parts),
        noise_sum=sum(p.noise_sum for p in parts),
        backend="+".join(sorted({p.backend for p in parts})),
        dtype="float32" if any(p.dtype == "float32" for p in parts) else "float64",
        meta=meta,
    )
