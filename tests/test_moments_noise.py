"""Noise-variance estimator and the noise-bias correction of the 2-D moments."""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.moments import autocorrelations_2d, estimate_noise_variance
from cryomtd.seeding import rng


def band_limited_field(shape, kmax, seed):
    """A smooth random field whose spectrum is exactly zero beyond |k| = kmax cycles/pixel."""
    g = rng(seed, "test-noise", 0).standard_normal(shape)
    F = np.fft.fft2(g)
    k = np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :])
    F[k > kmax] = 0
    return np.real(np.fft.ifft2(F))


@pytest.mark.parametrize("shape", [(256, 256), (200, 301)])
def test_sigma2_on_pure_noise(shape):
    """Pure white noise: the estimate is within 4 standard errors (periodogram ordinates are
    exponential with mean σ², so the relative SE is 1/√(independent frequencies used))."""
    sigma2 = 2.3
    img = np.sqrt(sigma2) * rng(1, "test-noise", shape[1]).standard_normal(shape) + 5.0  # mean does not matter
    est = estimate_noise_variance(img, cutoff=0.8)
    n_freq = img.size * (1 - np.pi * 0.4**2) / 2  # rfft half-plane beyond 0.4 cycles/pixel
    assert abs(est / sigma2 - 1) < 4 / np.sqrt(n_freq)


def test_sigma2_ignores_band_limited_signal():
    """A strong signal band-limited below the cutoff leaves the estimate at σ², while the
    pixel variance is far off (so the test would catch an estimator that ignored the cutoff)."""
    shape, sigma2 = (256, 256), 0.25
    signal = 10 * band_limited_field(shape, kmax=0.3, seed=2)
    img = signal + np.sqrt(sigma2) * rng(3, "test-noise", 0).standard_normal(shape)
    est = estimate_noise_variance(img, cutoff=0.8)
    n_freq = img.size * (1 - np.pi * 0.4**2) / 2
    assert abs(est / sigma2 - 1) < 4 / np.sqrt(n_freq)
    assert img.var() > 10 * sigma2
    with pytest.raises(ValueError):
        estimate_noise_variance(img, cutoff=1.5)


def sparse_particles(shape, L, positions, seed):
    """Zero micrograph with L×L random blobs (Gaussian-windowed) at the given top-left corners."""
    g = rng(seed, "test-noise", 1)
    yy, xx = np.mgrid[:L, :L] - (L - 1) / 2
    env = np.exp(-(yy**2 + xx**2) / (L / 3) ** 2)
    img = np.zeros(shape)
    for y, x in positions:
        img[y : y + L, x : x + L] += env * (1 + g.standard_normal((L, L)) * 0.3)
    return img


@pytest.mark.slow
def test_debiased_moments_monte_carlo():
    """E[debiased moments of s + ε] = moments of s, by Monte Carlo over noise realisations.

    Particles touch the border so the exact overlap sums t matter. Every non-redundant
    a2/a3 entry must agree within 5 Monte-Carlo standard errors; the raw moments must
    not (their σ² and σ²·a1 terms are many standard errors away)."""
    W, sigma, n_rep = 3, 0.7, 400
    clean = sparse_particles((20, 22), 5, [(0, 0), (8, 9), (15, 17)], seed=4)
    ref = autocorrelations_2d(clean, W, backend="numpy")
    g = rng(5, "test-noise", 2)
    a2s, a3s, raw3 = [], [], []
    for _ in range(n_rep):
        m = autocorrelations_2d(clean + sigma * g.standard_normal(clean.shape), W, backend="numpy")
        d = m.debiased(sigma**2)
        a2s.append(d.a2_unique())
        a3s.append(d.a3_unique())
        raw3.append(m.a3_unique())
    for samples, truth in ((np.array(a2s), ref.a2_unique()), (np.array(a3s), ref.a3_unique())):
        se = samples.std(axis=0, ddof=1) / np.sqrt(n_rep)
        z = np.abs(samples.mean(axis=0) - truth) / se
        assert z.max() < 5, z.max()
    raw = np.array(raw3)
    z_raw = np.abs(raw.mean(axis=0) - ref.a3_unique()) / (raw.std(axis=0, ddof=1) / np.sqrt(n_rep))
    assert z_raw.max() > 10


def test_debias_uses_stored_sigma2_and_is_linear():
    """debiased() with the stored σ² equals debiased(σ²); merging then debiasing = debiasing then merging."""
    from cryomtd.moments import merge

    imgs = [rng(6, "test-noise", i).standard_normal((12, 9)) for i in range(2)]
    parts = [autocorrelations_2d(im, 2, backend="numpy", sigma2=0.3) for im in imgs]
    a = merge([p.debiased() for p in parts])
    b = merge(parts).debiased(0.3)
    np.testing.assert_allclose(a.s3, b.s3, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.s2, b.s2, rtol=0, atol=1e-12)
    assert a.meta["debiased_sigma2"] == pytest.approx(0.3)
    # the a2 bias sits only at ℓ = 0
    diff = parts[0].a2 - parts[0].debiased().a2
    assert diff[1, 1] == pytest.approx(0.3) and np.count_nonzero(diff) == 1
