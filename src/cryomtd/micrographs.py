"""Your own micrographs → the micrograph contract every later stage reads (``data`` block).

A user's MRC micrograph becomes exactly what a simulated one is (docs/design.md §6): a
float32 image ``micrographs/{k}.mrc`` whose noise is white with standard deviation σ, and
a side file ``micrographs/{k}.json`` with σ, L, the pixel size and provenance. The
moments, least-squares and EM stages then run unchanged. :func:`prepare_micrograph`
does, in order:

1. read (any real MRC mode; a one-image stack is that image; NaN/Inf refused);
2. pixel size: ``data.pixel_size``, else the header (neither: an error);
3. invert (``data.invert``: multiply by −1);
4. crop ``advanced.edge`` pixels from every border, before anything that mixes pixels
   (the schema: detector edges and ice rims never enter a Fourier transform);
5. Fourier-downsample to ``data.pixel_size_out`` (:func:`fourier_downsample`);
6. remove the mean;
7. noise power spectrum (:func:`noise_spectrum`: tapered tiles, median over tiles,
   radial shells) and whitening (:func:`whiten`, ``advanced.whiten``: ``auto`` whitens when
   the noise is coloured above half Nyquist, :func:`band_colour` > :data:`COLOUR_THRESHOLD`,
   and leaves white noise untouched);
8. σ from the whitened spectrum (:func:`band_level` over :data:`REFERENCE_BAND`);
9. the prepared image must hold at least ``MIN_BOXES`` boxes of L pixels per side.

Units: frequencies are cycles/pixel inside this module's functions (|f| ≤ 1/2 along an
axis, up to 1/√2 in the corners) and cycles/Å in the side file. A power spectrum is
normalised so that white noise of variance σ² has psd ≡ σ² (periodogram
|DFT(w·x)|² / Σw²). Images are ``[y, x]`` float64; non-square and odd sizes are fine.

**What σ means after whitening.** Whitening multiplies the image's Fourier transform by
√(ref / psd(f)), where ref is the mean noise psd over the reference band
:data:`REFERENCE_BAND` (|f| from 1/4 to 1/2 cycles/pixel, half Nyquist to Nyquist,
where small particles have little power). The whitened noise is white with psd ≡ ref,
so σ = √ref: the noise standard deviation the micrograph would have if its noise were
white at the level it has in the upper half of the band. For white input noise the
filter is 1 and σ is the noise's own standard deviation; for coloured noise it is the
high-frequency noise level, not the total noise variance (which low-frequency power
dominates and particles contaminate).

**Limits.** The median over tiles rejects particles only where they occupy a minority
of the tiles; at typical densities every 256-pixel tile holds many small particles, so
below the reference band the estimated psd includes the particles' own power and
whitening also flattens part of the signal there (at SNR 1 and γ = 0.15 enough to raise
EM's error by a third). That is why ``whiten: auto`` leaves noise that is white above half
Nyquist as it is. The reference band (hence σ) is
unaffected as long as the particles have little power above half Nyquist.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryomtd.io import InputError

__all__ = [
    "DataAdvanced",
    "DataSettings",
    "PreparedMicrograph",
    "REFERENCE_BAND",
    "MIN_BOXES",
    "read_micrograph_file",
    "fourier_downsample",
    "crop_edges",
    "noise_spectrum",
    "band_level",
    "band_colour",
    "COLOUR_THRESHOLD",
    "whiten",
    "whitening_gain",
    "prepare_micrograph",
    "micrograph_files",
    "header_pixel_size",
    "check_pixel_sizes",
]

log = logging.getLogger("cryomtd.micrographs")

#: Radial frequency band (cycles/pixel) whose mean noise psd is the white reference: whitening
#: keeps the noise level of this band, and σ² is the whitened psd's mean over it.
REFERENCE_BAND = (0.25, 0.5)

#: The prepared micrograph must be at least this many boxes of L pixels on each side.
MIN_BOXES = 4


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class DataAdvanced:
    """``data.advanced``: border crop (pixels of the input), PSD tile side and shell count
    (None = tile // 2), whether to whiten."""

    edge: int = 16
    psd_tile: int = 256
    psd_shells: int | None = None
    whiten: bool | str = "auto"


@dataclass(frozen=True)
class DataSettings:
    """The ``data`` block of a cryo3d experiment (schema ``workflow/schemas/data.schema.yaml``):
    a glob of MRC files, the box L (pixels after preparation), the input pixel size (None =
    header), the output pixel size (None = keep), contrast inversion, a CTF STAR file."""

    micrographs: str
    L: int
    pixel_size: float | None = None
    pixel_size_out: float | None = None
    invert: bool = False
    ctf: str | None = None
    advanced: DataAdvanced = field(default_factory=DataAdvanced)

    @classmethod
    def from_config(cls, block: Any, where: str = "data") -> DataSettings:
        from cryomtd.settings import from_block

        return from_block(cls, block, where)


# --------------------------------------------------------------------------- reading
def read_micrograph_file(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """``(image [y, x] float64, header pixel size Å or None)`` of a 2-D MRC micrograph.

    Any real MRC mode (int8, int16, uint16, float16, float32); a stack of one image
    (nz = 1) is that image. Raises :class:`~cryomtd.io.InputError` naming the file when it
    is missing, unreadable or not MRC, complex, 3-D, anisotropic, or holds NaN/Inf (with
    their count). A header pixel size of 0 (no unit cell) is returned as None.
    """
    from cryomtd.volume import read_image_mrc

    image, pixel = read_image_mrc(path)
    return image, (float(pixel) if pixel > 0 else None)


def header_pixel_size(path: str | os.PathLike) -> float | None:
    """The pixel size (Å) in an MRC header, read without the data; None when it records none."""
    import mrcfile

    if not os.path.isfile(path):
        raise InputError(f"{path}: MRC file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", header_only=True, permissive=False) as mrc:
                pixel = float(mrc.voxel_size.x)
    except Exception as exc:  # mrcfile raises ValueError/OSError with varied messages
        raise InputError(f"{path}: not a readable MRC file ({exc})") from None
    return pixel if pixel > 0 else None


# --------------------------------------------------------------------------- pure array functions
def _fourier_crop_axis(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Real ``a`` band-limited to ``n_out`` samples along ``axis`` (mean preserved).

    Keeps the frequencies −⌊n_out/2⌋ … ⌈n_out/2⌉−1. For even ``n_out`` the output's Nyquist
    coefficient is the real part of the input's coefficient at +n_out/2 (= the average of
    the ±n_out/2 pair, the only real-valued choice): irfft ignores its imaginary part.
    """
    n_in = a.shape[axis]
    if n_out == n_in:
        return a.copy()
    spec = np.fft.rfft(a, axis=axis)
    spec = np.take(spec, np.arange(n_out // 2 + 1), axis=axis)
    return np.fft.irfft(spec, n=n_out, axis=axis) * (n_out / n_in)


def fourier_downsample(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` at a pixel ``factor`` (≥ 1) times coarser: the centred 2-D DFT cropped to
    round(n / factor) frequencies per axis.

    Separable (one real Fourier crop per axis), so the result is real for any even or odd
    sizes; frequencies below the new Nyquist are kept exactly, those above removed (no
    aliasing); at an even output size the new Nyquist row/column holds the average of the
    input's ± pair. The mean is preserved (a constant stays the same constant), so white
    noise of variance σ² becomes white noise of variance σ²·(n_out/n_in) per axis, as by
    binning. The pixel of axis i becomes ``n_in_i / n_out_i`` input pixels (≈ ``factor``).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"fourier_downsample: expected a 2-D image, got shape {image.shape}")
    if not factor >= 1.0 - 1e-9:
        raise ValueError(f"fourier_downsample: factor must be ≥ 1, got {factor}")
    shape = tuple(max(1, int(round(n / factor))) for n in image.shape)
    out = _fourier_crop_axis(image, shape[0], 0)
    return _fourier_crop_axis(out, shape[1], 1)


def crop_edges(image: np.ndarray, edge: int) -> np.ndarray:
    """``image`` without ``edge`` pixels on every border (a view; ``edge`` = 0: the image)."""
    if edge < 0:
        raise ValueError(f"crop_edges: edge must be ≥ 0, got {edge}")
    ny, nx = image.shape
    if 2 * edge >= min(ny, nx):
        raise ValueError(f"crop_edges: an edge of {edge} pixels leaves nothing of a {ny}×{nx} image")
    return image[edge : ny - edge, edge : nx - edge] if edge else image


def _rfft_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Radial frequency |f| (cycles/pixel) of the rfft2 bins of an image of ``shape`` and the
    weight of each bin in a mean over the full DFT grid (interior columns stand for two)."""
    ny, nx = shape
    r = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.rfftfreq(nx)[None, :])
    w = np.full(nx // 2 + 1, 2.0)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return r, np.broadcast_to(w, r.shape)


def _median_to_mean(n: int) -> float:
    """E[median of n i.i.d. Exp(1)]: the sample median (numpy's, the mean of the middle pair for
    even n) of n exponential (χ²₂/2) periodogram values is this times their mean; → ln 2 as n → ∞.

    Order statistics of the exponential: E[X_(i)] = Σ_{j<i} 1/(n − j).
    """
    h = np.cumsum(1.0 / (n - np.arange(n)))  # h[i-1] = E[X_(i)]
    return float(h[n // 2]) if n % 2 else float(0.5 * (h[n // 2 - 1] + h[n // 2]))


def _taper(t: int) -> np.ndarray:
    """Separable sine² (Hann, half-sample shifted: no zero rows) window of side t."""
    w = np.sin(np.pi * (np.arange(t) + 0.5) / t) ** 2
    return w[:, None] * w[None, :]


def noise_spectrum(image: np.ndarray, tile: int = 256, shells: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged noise power spectrum, robust to particles: ``(frequencies, psd)``.

    The image is cut into non-overlapping ``tile`` × ``tile`` tiles (as many as fit,
    centred; ``tile`` is reduced to the image's shorter side if larger). Each tile, minus
    its window-weighted mean, is multiplied by a separable Hann (sine²) taper and its
    periodogram |DFT(w·x)|² / Σw² taken: the taper's sidelobes fall as 1/k³, so the
    step at the tile's periodic boundary and the strong low-frequency power of real
    micrographs do not leak into the high frequencies (an untapered tile leaks a 1/k²
    cross along the axes); its 2-bin main lobe is no loss for a spectrum averaged over
    shells 1/tile wide. Per frequency the MEDIAN over tiles is taken (tiles holding
    particles are outliers as long as they are a minority) and divided by E[median]/mean
    of exponentially distributed values (ln 2 for many tiles; the exact finite-count
    factor is used, so one tile gives its plain periodogram). The medians are then
    averaged over radial shells of width 1/(2·shells) cycles/pixel (``shells`` None =
    tile // 2, one frequency bin wide); shells beyond 1/2 cover the corners up to 1/√2.

    Returns ``frequencies`` (cycles/pixel, the mean |f| of each non-empty shell,
    increasing) and ``psd`` (white noise of variance σ² gives psd ≡ σ²). The DC bin is not
    used (zero after the per-tile mean removal); the mean removal's deficit on the 8 bins
    around it is divided out exactly for white noise (approximately for a smooth psd). The
    other real-valued bins (Nyquist (½, 0), (0, ½), (½, ½) of an even tile) are χ²₁
    distributed, not exponential, and are left out. The lowest shell and the outermost
    corner shell still read ≈ 5 % low: the taper makes the real and imaginary parts of a
    few bins there unequal in variance, so the exponential median factor is slightly off.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"noise_spectrum: expected a 2-D image, got shape {image.shape}")
    ny, nx = image.shape
    t = int(min(tile, ny, nx))
    if t < 8:
        raise ValueError(f"noise_spectrum: image {ny}×{nx} is too small for a spectrum (tile {t} < 8)")
    nty, ntx = ny // t, nx // t
    oy, ox = (ny - nty * t) // 2, (nx - ntx * t) // 2
    tiles = image[oy : oy + nty * t, ox : ox + ntx * t].reshape(nty, t, ntx, t).swapaxes(1, 2).reshape(-1, t, t)
    w = _taper(t)
    tiles = tiles - ((tiles * w).sum(axis=(1, 2)) / w.sum())[:, None, None]
    power = np.abs(np.fft.rfft2(tiles * w)) ** 2 / (w**2).sum()
    med = np.median(power, axis=0) / _median_to_mean(len(tiles))
    # Removing the weighted mean takes one degree of freedom that overlaps the bins next to DC:
    # for white noise E|DFT(w·(x − x̄_w))(k)|² = σ²·Σw²·b(k) with (W = DFT w, W2 = DFT w², S = Σw)
    # b(k) = 1 − 2·Re(W2(k)·conj W(k)) / (S·Σw²) + |W(k)|² / S²  (0 at DC, ≈ 0.58–0.79 on the
    # 8 bins around it, 1 elsewhere); dividing by it makes those bins unbiased too.
    W, W2, S = np.fft.rfft2(w), np.fft.rfft2(w**2), w.sum()
    b = 1.0 - 2.0 * np.real(W2 * np.conj(W)) / (S * (w**2).sum()) + np.abs(W) ** 2 / S**2
    r, weight = _rfft_grid((t, t))
    weight = weight.copy()
    weight[0, 0] = 0.0  # DC: zero after mean removal
    if t % 2 == 0:  # real-valued DFT bins: χ²₁, not exponential (the median factor would be wrong)
        weight[t // 2, 0] = weight[0, t // 2] = weight[t // 2, t // 2] = 0.0
    b[0, 0] = 1.0
    med = med / b
    n_shells = int(shells) if shells else t // 2
    idx = np.floor(r / (0.5 / n_shells)).astype(np.intp).ravel()
    wt = weight.ravel()
    count = np.bincount(idx, wt)
    keep = count > 0
    freqs = np.bincount(idx, wt * r.ravel())[keep] / count[keep]
    psd = np.bincount(idx, wt * med.ravel())[keep] / count[keep]
    return freqs, psd


def _psd_on_grid(shape: tuple[int, int], freqs: np.ndarray, psd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, weight = _rfft_grid(shape)
    freqs, psd = np.asarray(freqs, dtype=np.float64), np.asarray(psd, dtype=np.float64)
    if freqs.ndim != 1 or freqs.shape != psd.shape or freqs.size == 0:
        raise ValueError(f"noise spectrum: frequencies {freqs.shape} and psd {psd.shape} must be equal 1-D arrays")
    if not (np.all(np.isfinite(psd)) and np.all(psd > 0)):
        raise ValueError("noise spectrum: psd must be finite and positive at every shell")
    return np.interp(r, freqs, psd), (r, weight)


def band_level(
    shape: tuple[int, int], freqs: np.ndarray, psd: np.ndarray, band: tuple[float, float] = REFERENCE_BAND
) -> float:
    """Mean of the psd (linearly interpolated in |f|) over the DFT frequencies of an image of
    ``shape`` with ``band[0] ≤ |f| ≤ band[1]`` cycles/pixel: the white reference level."""
    grid, (r, weight) = _psd_on_grid(shape, freqs, psd)
    w = weight * ((r >= band[0]) & (r <= band[1]))
    if w.sum() == 0:
        raise ValueError(f"band_level: no frequency of a {shape} image in the band {band}")
    return float((grid * w).sum() / w.sum())


#: ``whiten: auto`` whitens when the noise psd changes by more than this fraction across the reference band.
COLOUR_THRESHOLD = 0.1


def band_colour(freqs: np.ndarray, psd: np.ndarray, band: tuple[float, float] = REFERENCE_BAND) -> float:
    """How much the psd changes across ``band``: the straight line fitted to the shells inside it
    (least squares in |f|), its change from ``band[0]`` to ``band[1]`` relative to its mean.

    About 0 for white noise (the shells' scatter averages out in the fit), large for noise
    coloured by a detector's MTF or any filter that acts above half Nyquist. Particles have
    little power there, so they hardly move it; noise coloured only at low frequencies is not
    seen (set ``whiten: true`` for that).
    """
    freqs, psd = np.asarray(freqs, dtype=np.float64), np.asarray(psd, dtype=np.float64)
    inside = (freqs >= band[0]) & (freqs <= band[1])
    if inside.sum() < 3:
        return 0.0
    slope, mean = np.polyfit(freqs[inside] - freqs[inside].mean(), psd[inside], 1)
    return float(abs(slope) * (band[1] - band[0]) / mean)


def whiten(
    image: np.ndarray, freqs: np.ndarray, psd: np.ndarray, band: tuple[float, float] = REFERENCE_BAND
) -> np.ndarray:
    """``image`` with its noise made white: DFT × √(ref / psd(|f|)), psd linearly interpolated
    in |f| (constant beyond the first and last shells), ref = :func:`band_level` of the psd.

    Noise with that psd becomes white with psd ≡ ref, i.e. standard deviation √ref; a flat
    psd (white noise) gives a filter of 1, so the output equals the input. The filter is
    real and even, so the output is real; the image is treated as periodic.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"whiten: expected a 2-D image, got shape {image.shape}")
    grid, _ = _psd_on_grid(image.shape, freqs, psd)
    ref = band_level(image.shape, freqs, psd, band)
    return np.fft.irfft2(np.fft.rfft2(image) * np.sqrt(ref / grid), s=image.shape)


def whitening_gain(
    shape: tuple[int, int], freqs: np.ndarray, psd: np.ndarray, pixel_size: float, refine: int = 8
) -> list[list[float]]:
    """The radial filter √(ref / psd(|f|)) of :func:`whiten` as ``[frequencies 1/Å, gains]``: at
    the spectrum's shell frequencies and ``refine`` − 1 points between each pair (the filter is
    √ of 1 / a piecewise-linear psd, so its linear interpolation between these points is off by
    < (relative psd change per shell)² / (8·refine²)), constant beyond the first and last shell."""
    freqs, psd = np.asarray(freqs, dtype=np.float64), np.asarray(psd, dtype=np.float64)
    ref = band_level(shape, freqs, psd)
    t = np.arange(refine) / refine
    f = np.append((freqs[:-1, None] + np.diff(freqs)[:, None] * t[None, :]).ravel(), freqs[-1])
    gain = np.sqrt(ref / np.interp(f, freqs, psd))
    return [(f / pixel_size).tolist(), gain.tolist()]


# --------------------------------------------------------------------------- the stage
@dataclass(frozen=True)
class PreparedMicrograph:
    """A prepared micrograph: ``image`` [y, x] float64 (mean 0, noise white with std σ when
    whitened) and ``info``, the side file (module docstring; keys sigma, L, pixel_size Å,
    size [ny, nx], source, index, ctf, noise_spectrum and white_spectrum {frequency
    cycles/Å, psd}, preparation = the data settings, resampling)."""

    image: np.ndarray
    info: dict

    @property
    def sigma(self) -> float:
        return float(self.info["sigma"])

    @property
    def pixel_size(self) -> float:
        return float(self.info["pixel_size"])

    def save(self, mrc_path: str | os.PathLike, json_path: str | os.PathLike) -> None:
        """Write the image (float32 MRC, pixel size in the header) and the side file, atomically."""
        from cryomtd.io import write_json
        from cryomtd.volume import write_image_mrc

        write_image_mrc(mrc_path, self.image, self.pixel_size)
        write_json(json_path, self.info)


def _check_settings(settings: DataSettings, where: str = "data") -> None:
    if not (isinstance(settings.L, int) and settings.L >= 3):
        raise InputError(f"{where}.L: expected an integer ≥ 3 (box in pixels), got {settings.L!r}")
    for key in ("pixel_size", "pixel_size_out"):
        v = getattr(settings, key)
        if v is not None and not v > 0:
            raise InputError(f"{where}.{key}: expected a pixel size > 0 Å (or null), got {v!r}")
    if settings.advanced.edge < 0:
        raise InputError(f"{where}.advanced.edge: expected ≥ 0, got {settings.advanced.edge}")
    if settings.advanced.psd_tile < 16:
        raise InputError(f"{where}.advanced.psd_tile: expected ≥ 16, got {settings.advanced.psd_tile}")


def _factor(path: object, pixel: float, settings: DataSettings) -> float:
    """Downsampling factor pixel_size_out / pixel (1 when not set); finer output → InputError."""
    if settings.pixel_size_out is None:
        return 1.0
    factor = settings.pixel_size_out / pixel
    if factor < 1.0 - 1e-6:
        raise InputError(
            f"{path}: data.pixel_size_out = {settings.pixel_size_out:g} Å is finer than the file's pixel size "
            f"{pixel:g} Å; only downsampling is supported (expected pixel_size_out ≥ {pixel:g})"
        )
    return max(factor, 1.0)


def _spectrum_block(freqs: np.ndarray, psd: np.ndarray, pixel: float) -> dict:
    return {"frequency": (np.asarray(freqs) / pixel).tolist(), "psd": np.asarray(psd).tolist()}


def prepare_micrograph(
    path: str | os.PathLike, settings: DataSettings, *, index: int = 0, ctf: dict | None = None
) -> PreparedMicrograph:
    """Micrograph file ``path`` → the micrograph contract (module docstring for the steps).

    ``index`` is k of ``micrographs/{k}``; ``ctf`` this micrograph's CTF parameters (a
    :meth:`cryomtd.ctf.CTF.to_dict`), recorded in the side file as the transfer from the
    molecule to the prepared image: as given (the CTF is in Å, so Fourier downsampling does
    not change it), times the whitening filter (:func:`whitening_gain`, key ``gain``) when
    the image is whitened. Raises :class:`~cryomtd.io.InputError` naming the file for an unreadable or
    bad file, a missing pixel size (key ``data.pixel_size``), ``pixel_size_out`` finer than
    the file, or a prepared image smaller than ``MIN_BOXES``·L per side.
    """
    from cryomtd.settings import to_block

    _check_settings(settings)
    image, header = read_micrograph_file(path)
    pixel = settings.pixel_size if settings.pixel_size is not None else header
    if pixel is None:
        raise InputError(f"{path}: the MRC header records no pixel size; set data.pixel_size (Å per pixel)")
    factor = _factor(path, pixel, settings)
    if settings.invert:
        image = -image
    edge = settings.advanced.edge
    if 2 * edge >= min(image.shape):
        raise InputError(
            f"{path}: data.advanced.edge = {edge} crops the whole {image.shape[0]}×{image.shape[1]} micrograph"
        )
    image = crop_edges(image, edge)
    shape_in = image.shape
    image = fourier_downsample(image, factor)
    pixel_out = settings.pixel_size_out if settings.pixel_size_out is not None else pixel
    ny, nx = image.shape
    L = settings.L
    if min(ny, nx) < MIN_BOXES * L:
        raise InputError(
            f"{path}: the prepared micrograph is {ny}×{nx} pixels, smaller than {MIN_BOXES}·L = {MIN_BOXES * L} "
            f"per side (L = {L}); expected a larger micrograph, a smaller L or a coarser data.pixel_size_out"
        )
    image = image - image.mean()
    tile, shells = settings.advanced.psd_tile, settings.advanced.psd_shells
    freqs, psd = noise_spectrum(image, tile, shells)
    if not psd.max() > 0:
        raise InputError(f"{path}: the micrograph is constant (no noise to measure)")
    if np.any(psd <= 0):
        log.warning("%s: %d noise-spectrum shell(s) have no power; floored", path, int(np.sum(psd <= 0)))
        psd = np.maximum(psd, 1e-12 * psd.max())
    colour = band_colour(freqs, psd)
    mode = settings.advanced.whiten
    whitened = bool(mode) if mode != "auto" else colour > COLOUR_THRESHOLD
    log.info(
        "%s: noise psd changes by %.1f %% across the reference band; %s",
        path,
        100 * colour,
        "whitened" if whitened else "left as it is (white noise)",
    )
    if whitened:
        if ctf is not None:  # the molecule reaches the prepared image through CTF × whitening filter
            ctf = {**ctf, "gain": whitening_gain(image.shape, freqs, psd, pixel_out)}
        image = whiten(image, freqs, psd)
        white_freqs, white_psd = noise_spectrum(image, tile, shells)
    else:
        white_freqs, white_psd = freqs, psd
    sigma = math.sqrt(band_level(image.shape, white_freqs, white_psd))
    info = {
        "sigma": sigma,
        "L": int(L),
        "pixel_size": float(pixel_out),
        "size": [int(ny), int(nx)],
        "source": str(path),
        "index": int(index),
        "ctf": ctf,
        "noise_spectrum": _spectrum_block(freqs, psd, pixel_out),
        "whitened": whitened,
        "noise_colour": colour,
        "white_spectrum": _spectrum_block(white_freqs, white_psd, pixel_out),
        "preparation": to_block(settings),
        "resampling": {
            "pixel_size_in": float(pixel),
            "shape_in": [int(shape_in[0]), int(shape_in[1])],
            # the exact pixel of each axis after the Fourier crop (≈ pixel_size_out; they differ
            # by < 1/(2·n) relative when n_in / factor is not a whole number)
            "pixel_size_yx": [float(pixel * shape_in[0] / ny), float(pixel * shape_in[1] / nx)],
        },
        "reference_band": [REFERENCE_BAND[0] / pixel_out, REFERENCE_BAND[1] / pixel_out],
    }
    return PreparedMicrograph(image=image, info=info)


# --------------------------------------------------------------------------- the file set
def micrograph_files(pattern: str, where: str = "data.micrographs") -> list[str]:
    """The files matching the glob ``pattern`` (relative to the working directory; ``**``
    recursive), sorted; no match → :class:`~cryomtd.io.InputError` naming ``where``."""
    files = sorted(p for p in glob.glob(os.fspath(pattern), recursive=True) if os.path.isfile(p))
    if not files:
        raise InputError(
            f"{where}: no file matches {pattern!r} (relative to the working directory {os.getcwd()}); "
            "expected a glob of MRC micrographs, e.g. 'raw/*.mrc'"
        )
    return files


def _listing(paths: Sequence[str], most: int = 3) -> str:
    names = ", ".join(paths[:most])
    return names + (f" and {len(paths) - most} more" if len(paths) > most else "")


def check_pixel_sizes(files: Sequence[str | os.PathLike], settings: DataSettings) -> list[float]:
    """The input pixel size (Å) of each file, reading only the MRC headers; for the workflow's start-up.

    With ``data.pixel_size`` set it applies to every file. Otherwise each header must record
    one (else an error naming the file and ``data.pixel_size``), and without
    ``data.pixel_size_out`` they must all agree (relative 1e-4): micrographs at different
    pixel sizes cannot share one L, so the error lists them by size. A ``pixel_size_out``
    finer than any input is an error too.
    """
    _check_settings(settings)
    files = [os.fspath(f) for f in files]
    if settings.pixel_size is not None:
        sizes = [float(settings.pixel_size)] * len(files)
    else:
        sizes = []
        for f in files:
            p = header_pixel_size(f)
            if p is None:
                raise InputError(f"{f}: the MRC header records no pixel size; set data.pixel_size (Å per pixel)")
            sizes.append(p)
    if settings.pixel_size_out is None and sizes:
        groups: dict[float, list[str]] = {}
        for f, p in zip(files, sizes, strict=True):
            key = next((g for g in groups if abs(g - p) <= 1e-4 * g), p)
            groups.setdefault(key, []).append(f)
        if len(groups) > 1:
            listing = "; ".join(f"{p:g} Å: {_listing(fs)}" for p, fs in sorted(groups.items()))
            raise InputError(
                f"data.micrographs: the files have different pixel sizes ({listing}) — "
                "set data.pixel_size_out to resample them to one"
            )
    for f, p in zip(files, sizes, strict=True):
        _factor(f, p, settings)
    return sizes
