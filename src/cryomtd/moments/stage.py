"""File-level stage functions of the moments step (used by the rules and the CLI).

``autocorrelate_file``: one micrograph MRC → ``moments/{k}.npz``;
``merge_files``: many ``.npz`` → one merged ``moments.npz``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryomtd.io import InputError
from cryomtd.moments.autocorr2d import autocorrelations_2d
from cryomtd.moments.noise import estimate_noise_variance
from cryomtd.moments.result import Moments2D, merge
from cryomtd.moments.settings import MomentsSettings

__all__ = ["read_micrograph", "autocorrelate_file", "merge_files", "workflow_resources"]

log = logging.getLogger("cryomtd.moments")


def read_micrograph(path: str | os.PathLike):
    """(image (M1, M2) float64, pixel size Å) via ``cryomtd.volume.read_image_mrc``.

    Errors (:class:`InputError`) name the file: missing, not MRC, complex mode, not 2-D, NaN/Inf.
    """
    from cryomtd.volume import read_image_mrc

    return read_image_mrc(path)


def autocorrelate_file(
    micrograph: str | os.PathLike,
    out: str | os.PathLike,
    settings: MomentsSettings | None = None,
    *,
    L: int | None = None,
    sigma: float | None = None,
    show_progress: bool | None = None,
) -> Moments2D:
    """Autocorrelations of one micrograph MRC at the window ``settings.window_for(L)``, written
    atomically to ``out`` (``Moments2D.save``).

    The noise variance is ``noise.sigma2`` when set, else ``sigma``² (the micrograph's side
    file: the simulator's or the preparation's σ, the one EM uses too), else estimated with
    :func:`estimate_noise_variance` (``noise.cutoff``); it is stored with the sums, and
    removed from them when ``noise.debias``.
    """
    s = settings or MomentsSettings()
    window = s.window_for(L)
    image, _ = read_micrograph(micrograph)
    if min(image.shape) < 2:
        raise InputError(f"{micrograph}: micrograph of shape {image.shape} is too small")
    sigma2 = s.noise.sigma2
    if sigma2 is None and sigma is not None:
        sigma2 = float(sigma) ** 2
        log.info("%s: noise variance %.6g from the side file", micrograph, sigma2)
    if sigma2 is None:
        sigma2 = estimate_noise_variance(image, cutoff=s.noise.cutoff)
        log.info("%s: estimated noise variance %.6g (cutoff %.2f × Nyquist)", micrograph, sigma2, s.noise.cutoff)
    adv = s.advanced
    m = autocorrelations_2d(
        image,
        window,
        backend=adv.backend,
        dtype=adv.dtype,
        band_pixels=adv.band_pixels,
        tile_pixels=adv.tile_pixels,
        sigma2=sigma2,
        show_progress=show_progress,
    )
    if s.noise.debias:
        m = m.debiased(sigma2)
    m.save(out)
    log.info("%s: W=%d, %d pixels, backend %s/%s → %s", micrograph, m.window, m.count, m.backend, m.dtype, out)
    return m


def merge_files(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> Moments2D:
    """Merge per-micrograph moment files (exact, order-independent) and save to ``out``."""
    if not paths:
        raise InputError("merge: no moment files given")
    parts = [Moments2D.load(p) for p in paths]
    windows = {p.window for p in parts}
    if len(windows) > 1:
        bad = [f"{Path(q)}: W={p.window}" for q, p in zip(paths, parts)]
        raise InputError(f"merge: moment files have different windows ({', '.join(bad)})")
    try:
        m = merge(parts)
    except ValueError as exc:
        raise InputError(f"merge of {len(parts)} files: {exc}") from None
    m.save(out)
    log.info("merged %d files (%d micrographs, %d pixels) → %s", len(parts), m.n_images, m.count, out)
    return m


def workflow_resources(exp: Mapping[str, Any], size: int | None = None) -> dict:
    """Resources of one autocorrelate job: ``mem_mb``, ``runtime`` (minutes), ``gpu`` (1 for CUDA backends).

    ``size``: pixels per side of the micrograph (default: the simulated ``micrographs.size``).

    Memory: image and halo tile (float64), three band matrices of 4096 × D², the D²×D²
    accumulator and the index maps (~12 D⁴ int64 while built). Runtime: ≈ 0.47·D⁴
    multiply-adds per pixel at ≥ 1 GFLOP/s, plus 10 minutes.
    """
    from cryomtd.plan import box_size

    s = MomentsSettings.from_config(exp.get("moments"))
    size = int(size or exp.get("micrographs", {}).get("size", 512))
    D2 = (2 * s.window_for(box_size(exp)) - 1) ** 2
    mem = 1000 + (3 * size * size * 8 + 3 * 4096 * D2 * 8 + 13 * D2 * D2 * 8) // 2**20
    runtime = 10 + int(size * size * D2 * D2 / 1e9 / 60)
    gpu = 1 if s.advanced.backend in ("torch-cuda", "cupy") else 0
    return {"mem_mb": int(mem), "runtime": runtime, "gpu": gpu}
