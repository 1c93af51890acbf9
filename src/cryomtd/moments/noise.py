"""Noise variance of a micrograph from its power spectrum beyond the particle band limit.

For I = s + ε with ε white (i.i.d., variance σ²) and s band-limited to spatial
frequencies |k| ≤ k_s (cycles/pixel), the periodogram |Î(k)|² / P of the image
(P pixels, unnormalised DFT Î) has expectation σ² at every frequency where s has
no power. So σ² is estimated as the mean periodogram over the frequencies with
|k| > ``cutoff`` · 0.5 (``cutoff`` a fraction of Nyquist, chosen above the particles'
band limit). Particles that are not exactly band-limited (a finite box has
spectral leakage) add a small positive bias, which grows as ``cutoff`` decreases.
The relative standard error on pure noise is ≈ 1/√(number of frequencies used)
(≈ 1e-3 for a 1024² micrograph at cutoff 0.8).
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_noise_variance"]


def estimate_noise_variance(image: np.ndarray, cutoff: float = 0.8) -> float:
    """σ² estimate: mean of |FFT(I)|²/P over radial frequencies |k| > cutoff·Nyquist.

    ``image`` (M1, M2) real; ``cutoff`` in (0, 1) (fraction of the Nyquist frequency
    0.5 cycles/pixel; the corners beyond Nyquist along the diagonal are included).
    The mean of the image does not enter (k = 0 is never used).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"estimate_noise_variance: image must be 2-D, got shape {image.shape}")
    if not 0.0 < cutoff < 1.0:
        raise ValueError(f"estimate_noise_variance: cutoff must be in (0, 1), got {cutoff}")
    M1, M2 = image.shape
    power = np.abs(np.fft.rfft2(image)) ** 2 / image.size
    ky = np.fft.fftfreq(M1)[:, None]
    kx = np.fft.rfftfreq(M2)[None, :]
    mask = np.hypot(ky, kx) > 0.5 * cutoff
    # rfft2 stores half the spectrum: columns 1 … (M2−1)//2 stand for two frequencies each
    weight = np.full(kx.shape, 2.0)
    weight[0, 0] = 1.0
    if M2 % 2 == 0:
        weight[0, -1] = 1.0
    w = np.broadcast_to(weight, power.shape) * mask
    if w.sum() == 0:
        raise ValueError("estimate_noise_variance: no frequencies above the cutoff (image too small)")
    return float((power * w).sum() / w.sum())
