"""Fourier shell correlation and the resolution where it crosses a threshold.

Shell convention (one place for it): the 3-D DFT of an (L, L, L) volume is taken with
``np.fft.fftn`` (the centring ``fftshift`` only permutes voxels and does not change shell
sums); a frequency voxel with integer frequencies (kx, ky, kz) from ``np.fft.fftfreq(L) * L``
belongs to shell ``k = round(sqrt(kx² + ky² + kz²))``, i.e. round(|f|·L) with |f| in
cycles/voxel. Shells ``0 … L//2`` are kept (the corners beyond Nyquist are dropped).
Shell k sits at spatial frequency k / (L · voxel_size) (1/Å), i.e. resolution
L · voxel_size / k Å.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fsc", "resolution", "shell_frequencies", "shell_index"]


def shell_index(L: int) -> np.ndarray:
    """(L, L, L) int array: the shell of every voxel of ``np.fft.fftn`` of an L³ volume."""
    k = np.fft.fftfreq(L) * L
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    return np.rint(np.sqrt(r2)).astype(np.int64)


def shell_frequencies(L: int, voxel_size: float = 1.0) -> np.ndarray:
    """Spatial frequency of each FSC shell, length L//2+1, in 1/Å (1/voxel when ``voxel_size`` = 1)."""
    return np.arange(L // 2 + 1) / (L * float(voxel_size))


def fsc(vol_a: np.ndarray, vol_b: np.ndarray) -> np.ndarray:
    """Fourier shell correlation of two (L, L, L) volumes, float64 array of length L//2+1.

    FSC_k = Re Σ_{shell k} A·conj(B) / sqrt(Σ |A|² · Σ |B|²), A, B the 3-D DFTs.
    A shell where either volume has zero energy gives 0.
    """
    a = np.asarray(vol_a, dtype=np.float64)
    b = np.asarray(vol_b, dtype=np.float64)
    if a.ndim != 3 or a.shape != b.shape or len(set(a.shape)) != 1:
        raise ValueError(f"fsc needs two cubic volumes of the same shape, got {a.shape} and {b.shape}")
    L = a.shape[0]
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    shells = shell_index(L).ravel()
    n = L // 2 + 1
    keep = shells < n
    idx = shells[keep]
    cross = np.bincount(idx, weights=(fa * np.conj(fb)).real.ravel()[keep], minlength=n)
    ea = np.bincount(idx, weights=(np.abs(fa) ** 2).ravel()[keep], minlength=n)
    eb = np.bincount(idx, weights=(np.abs(fb) ** 2).ravel()[keep], minlength=n)
    denom = np.sqrt(ea * eb)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, cross / np.where(denom > 0, denom, 1.0), 0.0)
    return out


def resolution(curve: np.ndarray, threshold: float, voxel_size: float = 1.0, L: int | None = None) -> float:
    """Resolution (Å; voxels when ``voxel_size`` = 1) where ``curve`` first falls below ``threshold``.

    ``curve[k]`` is the FSC of shell k (length L//2+1, as returned by :func:`fsc`); shell k is
    the spatial frequency k / (L · voxel_size). With k0 the first shell where
    ``curve[k0] < threshold``, the crossing k* is interpolated linearly between shells k0−1
    and k0, and the resolution is L · voxel_size / k*.

    Edge cases (stated, not guessed):
    * ``curve[0] < threshold``: nothing is resolved → ``inf``.
    * the curve never falls below the threshold: the estimate agrees at every measured
      frequency, the resolution is at least that of the last shell → L · voxel_size / (L//2)
      (the Nyquist limit 2·voxel_size for even L), a bound rather than a crossing; see
      :func:`crossing_shell` to tell the cases apart.

    ``L`` (box size) defaults to ``2 * (len(curve) - 1)`` (even boxes); pass it for odd boxes.
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"resolution needs an FSC curve with at least 2 shells, got shape {c.shape}")
    if L is None:
        L = 2 * (c.size - 1)
    k = crossing_shell(c, threshold)
    if k is None:
        k = float(c.size - 1)
    if k == 0:
        return math.inf
    return float(L) * float(voxel_size) / k


def crossing_shell(curve: np.ndarray, threshold: float) -> float | None:
    """Fractional shell index where ``curve`` first falls below ``threshold`` (None if never; 0 if at once)."""
    c = np.asarray(curve, dtype=np.float64)
    below = np.flatnonzero(c < threshold)
    if below.size == 0:
        return None
    k0 = int(below[0])
    if k0 == 0:
        return 0.0
    hi, lo = c[k0 - 1], c[k0]
    t = (hi - threshold) / (hi - lo) if hi != lo else 0.0
    return (k0 - 1) + float(t)
