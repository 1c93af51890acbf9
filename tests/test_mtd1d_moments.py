"""Streamed 1-D moments against brute-force sums; exact merging; the noise-bias formulas of docs/design.md §7."""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.mtd1d import Moments1D, Placement, autocorrelations, make_signal, merge, model_moments, simulate_segment
from cryomtd.mtd1d.moments import MomentAccumulator


def brute(y: np.ndarray, L: int):
    """Independent definition: explicit sums over i with y zero outside [0, n)."""
    n = y.size
    yp = np.concatenate([y, np.zeros(L)])
    a1 = y.sum() / n
    a2 = np.array([sum(yp[i] * yp[i + l] for i in range(n)) for l in range(L)]) / n
    a3 = np.array([[sum(yp[i] * yp[i + l1] * yp[i + l2] for i in range(n)) for l2 in range(L)] for l1 in range(L)]) / n
    return a1, a2, a3


@pytest.mark.parametrize("L", [1, 2, 5, 9])
@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("chunk", [1, 3, 10, 1000])
def test_moments_match_brute_force_for_any_chunking(L, n, chunk):
    y = np.random.default_rng(L * 1000 + n).standard_normal(n)
    m = autocorrelations(y, L, chunk=chunk, block=4)  # block 4: many GEMM blocks per chunk
    a1, a2, a3 = brute(y, L)
    # float64 sums of <= 64 O(1) terms: rounding ~1e-15, 1e-12 leaves margin and catches any lost term
    assert m.n == n
    assert m.a2.shape == (L,) and m.a3.shape == (L, L)
    np.testing.assert_allclose(m.a1, a1, atol=1e-12)
    np.testing.assert_allclose(m.a2, a2, atol=1e-12)
    np.testing.assert_allclose(m.a3, a3, atol=1e-12)
    np.testing.assert_array_equal(m.a3, m.a3.T)


def test_iterable_of_chunks_equals_array():
    y = np.random.default_rng(5).standard_normal(1000)
    parts = np.split(y, [3, 4, 200, 517])
    a = autocorrelations(y, 6)
    b = autocorrelations(iter(parts), 6)
    np.testing.assert_allclose(b.s3, a.s3, atol=1e-12)
    np.testing.assert_allclose(b.s2, a.s2, atol=1e-12)


def test_merge_is_sample_weighted_mean_of_segments(tmp_path):
    gen = np.random.default_rng(11)
    L = 5
    segs = [gen.standard_normal(n) for n in (30, 1, 47)]
    parts = [autocorrelations(s, L, chunk=8) for s in segs]
    for k, p in enumerate(parts):  # round trip through the file format used between jobs
        p.save(tmp_path / f"{k}.npz")
    merged = merge([Moments1D.load(tmp_path / f"{k}.npz") for k in range(3)])
    w = np.array([s.size for s in segs], float) / sum(s.size for s in segs)
    expect = [sum(wk * b[j] for wk, b in zip(w, map(lambda s: brute(s, L), segs))) for j in range(3)]
    np.testing.assert_allclose(merged.a1, expect[0], atol=1e-12)
    np.testing.assert_allclose(merged.a2, expect[1], atol=1e-12)
    np.testing.assert_allclose(merged.a3, expect[2], atol=1e-12)


def test_noise_free_moments_equal_model_exactly():
    """Well-separated copies: the empirical moments are exactly γ_realised · (moments of x)."""
    L = 7
    x = make_signal("gaussian", L, seed=4)
    y, copies = simulate_segment(x, 20000, Placement(0.2, L - 1), 0.0, seed=3, index=0, chunk=999)
    m = autocorrelations(y, L, chunk=4096)
    gamma = copies * L / y.size
    # independent definition of the signal's moments (explicit sums)
    xp = np.concatenate([x, np.zeros(L)])
    a2x = np.array([sum(xp[i] * xp[i + l] for i in range(L)) for l in range(L)]) / L
    a3x = np.array([[sum(xp[i] * xp[i + a] * xp[i + b] for i in range(L)) for b in range(L)] for a in range(L)]) / L
    np.testing.assert_allclose(m.a1, gamma * x.sum() / L, atol=1e-13)
    np.testing.assert_allclose(m.a2, gamma * a2x, atol=1e-13)
    np.testing.assert_allclose(m.a3, gamma * a3x, atol=1e-13)
    a1, a2, a3 = model_moments(x, gamma)
    np.testing.assert_allclose(a3, gamma * a3x, atol=1e-13)


def test_bias_on_pure_noise_monte_carlo():
    """E a2 = σ² δ[ℓ], E a3 = 0 on pure noise (the a3 bias is proportional to the mean, 0)."""
    sigma, L, n = 1.5, 6, 2_000_000
    y = sigma * np.random.default_rng(8).standard_normal(n)
    m = autocorrelations(y, L)
    # standard error of a2[ℓ>0] is σ²/√n ≈ 1.6e-3, of a2[0] σ²√2/√n ≈ 2.2e-3, of a3 ≲ √15 σ³/√n ≈ 9e-3;
    # tolerances ≈ 5 standard errors
    e2 = np.zeros(L)
    e2[0] = sigma**2
    np.testing.assert_allclose(m.a2, e2, atol=0.012)
    np.testing.assert_allclose(m.a3, 0.0, atol=0.05)


def test_bias_on_signal_plus_noise_monte_carlo():
    """a(y) − a(clean) → σ²δ[ℓ] and σ² a1 (δ[ℓ1] + δ[ℓ2] + δ[ℓ1−ℓ2]) (docs/design.md §7)."""
    L, sigma, n = 5, 1.0, 4_000_000
    x = make_signal("step", L)
    clean, copies = simulate_segment(x, n, Placement(0.25, L - 1), 0.0, seed=1, index=0)
    noise = sigma * np.random.default_rng(2).standard_normal(n)
    mc = autocorrelations(clean, L)
    mn = autocorrelations(clean + noise, L)
    d2 = mn.a2 - mc.a2
    d3 = mn.a3 - mc.a3
    a1 = mc.a1  # = γ a1_x
    assert a1 > 0.1  # the a3 bias is then large against the tolerance below
    l1, l2 = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    bias3 = sigma**2 * a1 * ((l1 == 0).astype(float) + (l2 == 0) + (l1 == l2))
    bias2 = sigma**2 * (np.arange(L) == 0)
    # noise-driven fluctuations: std ≲ 3σ³/√n + cross terms ≈ 2e-3; tolerance 0.015 ≈ 7 std, while a
    # missing δ term would be off by σ² a1 > 0.1
    np.testing.assert_allclose(d2, bias2, atol=0.015)
    np.testing.assert_allclose(d3, bias3, atol=0.015)


def test_accumulator_rejects_update_after_result():
    acc = MomentAccumulator(3)
    acc.update(np.ones(5))
    acc.result()
    with pytest.raises(RuntimeError):
        acc.update(np.ones(2))


def test_float32_block_products_stay_close_to_brute_force():
    y = np.random.default_rng(3).standard_normal(3000)
    L = 6
    m = autocorrelations(y, L, chunk=700, block=256, dtype="float32")
    ref = autocorrelations(y, L)  # float64 path, pinned to brute force above
    # single-precision products over blocks of 256: relative error ~1e-7·√256 per block; 1e-5 of the
    # largest entry is a safe bound that a wrong lag or a dropped join term would break by orders
    scale = np.abs(ref.a3).max()
    np.testing.assert_allclose(m.a3, ref.a3, atol=1e-5 * scale)
    np.testing.assert_allclose(m.a2, ref.a2, atol=1e-5 * np.abs(ref.a2).max())


def test_dense_model_with_zero_pair_separation_is_the_separated_model():
    x = make_signal("gaussian", 7, seed=4)
    sep = model_moments(x, 0.3, 0.8)
    dense = model_moments(x, 0.3, 0.8, xi=np.zeros(6))
    for a, b in zip(sep, dense):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("min_gap", "sigma"), [(0, 0.0), (2, 0.5)])
def test_dense_model_equals_monte_carlo_moments(min_gap, sigma):
    """Densely packed copies (γ = 0.5, copies may touch): the empirical moments of long simulated
    segments equal model_moments with the placement's pair-separation function within
    Monte-Carlo error, while the separated model is off by many standard errors."""
    L, gamma, n, K = 7, 0.5, 1_000_000, 8
    x = make_signal("gaussian", L, seed=3)
    pl = Placement(gamma, min_gap)
    parts = [simulate_segment(x, n, pl, sigma, seed=1, index=k) for k in range(K)]
    ms = [autocorrelations(y, L) for y, _ in parts]
    g = sum(c for _, c in parts) * L / (K * n)  # realised density; ξ scales with it
    xi = pl.pair_separation(L) * g / gamma
    emp = [np.array([m.a1 for m in ms]), np.array([m.a2 for m in ms]), np.array([m.a3 for m in ms])]
    dense = model_moments(x, g, sigma, xi=xi)
    sep = model_moments(x, g, sigma)
    worst_dense, worst_sep = 0.0, 0.0
    for e, md, msep in zip(emp, dense, sep):
        mean, se = e.mean(axis=0), e.std(axis=0, ddof=1) / np.sqrt(K) + 1e-12
        worst_dense = max(worst_dense, float(np.max(np.abs(mean - md) / se)))
        worst_sep = max(worst_sep, float(np.max(np.abs(mean - msep) / se)))
    # ~60 distinct entries, standard errors from 8 segments (t with 7 d.o.f.): 6 is a safe
    # bound for the largest deviation of the right model; the separated model's bias is ≫ 6
    assert worst_dense < 6.0
    assert worst_sep > 30.0
