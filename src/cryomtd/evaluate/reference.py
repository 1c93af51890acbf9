"""A user's reference map brought onto an estimate's grid and basis.

A reference (``reference:`` of a cryo3d experiment) is any cubic MRC map: its own box N and
voxel size (Å, from the header). :func:`match_reference` resamples it onto the estimates'
grid (box L, voxel size ``voxel_size``) and expands it in their basis
SphericalBessel(L, ell_max), so that it plays the part the truth plays in a simulated
experiment (the alignment is then exact on coefficients and the FSC compares two volumes of
one basis).

Resampling (:func:`resample_volume`), centre voxel N//2 onto centre voxel L//2
(docs/conventions.md): first a Fourier crop (:func:`cryomtd.volume.downsample`) or zero-pad
(:func:`fourier_resize`) to the box n = round(N · vs_ref / vs) whose voxel size is closest to
the target's (band limiting before any down-sampling, so nothing aliases), then a centred crop
or zero-pad to L voxels in real space; when N · vs_ref / vs is not an integer the residual
scale (≤ half a voxel over the box) is taken up by cubic-spline interpolation.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from cryomtd.io import InputError
from cryomtd.volume import downsample, read_mrc

if TYPE_CHECKING:
    from cryomtd.basis import SphericalBessel

__all__ = ["MatchedReference", "fourier_resize", "match_reference", "resample_volume"]

log = logging.getLogger("cryomtd.evaluate")


def fourier_resize(vol: np.ndarray, n: int) -> np.ndarray:
    """Cubic volume (N, N, N) → (n, n, n) by cropping (n < N) or zero-padding (n > N) its centred
    Fourier transform; values are preserved (a constant stays that constant), the voxel size
    becomes ``vs · N / n``, centre voxel N//2 → n//2. For even N the unpaired Nyquist plane is
    kept on the negative side only and the real part returned."""
    vol = np.asarray(vol, dtype=np.float64)
    N = vol.shape[0]
    if n <= N:
        return downsample(vol, n)
    axes = (0, 1, 2)
    f = np.fft.fftshift(np.fft.fftn(np.roll(vol, [-(N // 2)] * 3, axis=axes)))
    out = np.zeros((n, n, n), dtype=complex)
    lo = n // 2 - N // 2
    out[lo : lo + N, lo : lo + N, lo : lo + N] = f
    res = np.fft.ifftn(np.fft.ifftshift(out)).real * (n / N) ** 3
    return np.roll(res, [n // 2] * 3, axis=axes)


def resample_volume(vol: np.ndarray, voxel_size: float, L: int, target_voxel_size: float) -> np.ndarray:
    """``vol`` (N, N, N) at ``voxel_size`` Å on the grid of L³ voxels of ``target_voxel_size`` Å
    (module docstring); zero where the target box reaches beyond the map."""
    vol = np.asarray(vol, dtype=np.float64)
    N = vol.shape[0]
    ratio = float(voxel_size) / float(target_voxel_size)  # target voxels per map voxel
    n = max(1, int(round(N * ratio)))
    mid = fourier_resize(vol, n) if n != N else vol
    step = float(target_voxel_size) / (float(voxel_size) * N / n)  # mid voxels per target voxel
    pos = n // 2 + (np.arange(L) - L // 2) * step
    if np.allclose(pos, np.round(pos), atol=1e-9):  # an exact crop / pad
        idx = np.round(pos).astype(np.int64)
        ok = (idx >= 0) & (idx < n)
        out = np.zeros((L, L, L))
        sel = np.ix_(ok, ok, ok)
        out[sel] = mid[np.ix_(idx[ok], idx[ok], idx[ok])]
        return out
    coords = np.meshgrid(pos, pos, pos, indexing="ij")
    return ndimage.map_coordinates(mid, coords, order=3, mode="constant", cval=0.0, prefilter=True)


@dataclass(frozen=True)
class MatchedReference:
    """A reference map on the estimates' grid: ``volume`` = basis.evaluate(``coef``) (L, L, L)
    ``[z, y, x]``; ``path``; ``box`` and ``voxel_size`` of the file; ``expansion_error`` =
    ‖volume − resampled‖/‖resampled‖ (what the basis cannot represent)."""

    path: str
    volume: np.ndarray
    coef: np.ndarray
    box: int
    voxel_size: float
    expansion_error: float


def match_reference(path: str | os.PathLike, basis: SphericalBessel, voxel_size: float) -> MatchedReference:
    """Read the reference MRC ``path`` and bring it to the grid (basis.L, ``voxel_size`` Å) and
    the basis of the estimates.

    The voxel size is the header's; a header without one is accepted only when the box equals
    the estimates' (then the estimates' voxel size is assumed, with a warning), else
    :class:`~cryomtd.io.InputError` naming the file. A map that leaves nothing in the
    estimates' box is an error too; one that loses more than 10 % of its energy to the crop is
    a warning (check the voxel sizes).
    """
    L = basis.L
    vol, vs_ref = read_mrc(path)
    N = vol.shape[0]
    if not vs_ref > 0:
        if N != L:
            raise InputError(
                f"{path}: the MRC header records no voxel size and the box ({N} voxels) differs from the "
                f"estimates' ({L} voxels of {voxel_size:g} Å), so the reference cannot be matched; write the "
                "voxel size into the header (e.g. mrcfile: m.voxel_size = ...)"
            )
        log.warning("%s: the header records no voxel size; assuming the estimates' %g Å", path, voxel_size)
        vs_ref = float(voxel_size)
    matched = resample_volume(vol, vs_ref, L, voxel_size)
    e_in = float(np.sum(vol**2)) * vs_ref**3
    e_out = float(np.sum(matched**2)) * float(voxel_size) ** 3
    if not e_out > 0:
        raise InputError(
            f"{path}: nothing of the reference ({N} voxels of {vs_ref:g} Å) falls in the estimates' box "
            f"({L} voxels of {voxel_size:g} Å); check the voxel sizes"
        )
    if e_in > 0 and e_out < 0.9 * e_in:
        log.warning(
            "%s: %.0f %% of the reference's energy lies outside the estimates' box of %g Å (check the voxel sizes)",
            path,
            100 * (1 - e_out / e_in),
            L * voxel_size,
        )
    coef = basis.expand(matched, rtol=1e-8)
    volume = np.asarray(basis.evaluate(coef), dtype=np.float64)
    err = float(np.linalg.norm(volume - matched) / np.linalg.norm(matched))
    log.info(
        "reference %s: %d³ at %g Å → %d³ at %g Å, basis ℓ ≤ %d (expansion error %.3g)",
        path,
        N,
        vs_ref,
        L,
        voxel_size,
        basis.ell_max,
        err,
    )
    return MatchedReference(
        path=os.fspath(path),
        volume=volume,
        coef=coef,
        box=int(N),
        voxel_size=float(vs_ref),
        expansion_error=err if math.isfinite(err) else float("nan"),
    )
