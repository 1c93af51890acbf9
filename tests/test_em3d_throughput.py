"""Tests of the fast E-step paths (cryomtd.em3d.estep): the fused FFT on the linear-lag grid,
rotation masses and rotation pruning, against independent definitions written here.

The reference is a direct sum: every shifted-and-cropped projection C R_s Z p built by explicit
zero-padding, np.roll and cropping, the Gaussian log-density summed pixel by pixel, a
log-sum-exp by scipy, and the statistics n, b by loops over shifts and pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from cryomtd.em3d import PatchSource, ProjectionModel, em, estep_batch, get_backend, projection_spectra
from cryomtd.em3d.estep import estep_masses, fft_size, lag_grid, prune_rotations


# ----------------------------------------------------------------------------- references
def crop_shifted(p, s, L):
    """C R_s Z p: the B×B box p in the top-left corner of an (L + B)² grid, rolled by s, first L×L."""
    B = p.shape[0]
    z = np.zeros((L + B, L + B))
    z[:B, :B] = p
    return np.roll(z, s, axis=(0, 1))[:L, :L]


def direct(patches, boxes, sigma, log_rho, log_pi, drop=None):
    """log p(y_i, ω, s) (P, R, N, N) by explicit images; ``drop`` (P, R) bool removes the
    non-empty states of those (patch, rotation) pairs (probability 0)."""
    P, L = patches.shape[:2]
    R, B = boxes.shape[:2]
    N = L + B
    shifted = np.empty((R, N, N, L, L))
    for r in range(R):
        for sy in range(N):
            for sx in range(N):
                shifted[r, sy, sx] = crop_shifted(boxes[r], (sy, sx), L)
    resid = patches[:, None, None, None] - shifted[None]  # (P, R, N, N, L, L)
    ll = (
        -np.sum(resid**2, axis=(-2, -1)) / (2 * sigma**2)
        - 0.5 * L * L * np.log(2 * np.pi * sigma**2)
        + log_rho[None, None]
        + log_pi[None, :, None, None]
    )
    empty = ~shifted.any(axis=(-2, -1))[0]  # (N, N): the crops that see nothing of the box
    if drop is not None:
        for i, r in zip(*np.nonzero(drop)):
            ll[i, r][~empty] = -np.inf
    return ll, empty


def direct_statistics(patches, ll, B):
    """n_ωs = Σ_i w_iωs and b_ω[v] = Σ_i Σ_s w_iωs y_i[v + s] (pixel v visible under s)."""
    P, R, N, _ = ll.shape
    L = patches.shape[1]
    w = np.exp(ll - scipy.special.logsumexp(ll, axis=(1, 2, 3), keepdims=True))
    b = np.zeros((R, B, B))
    for sy in range(N):
        for sx in range(N):
            for vy in range(B):
                for vx in range(B):
                    uy, ux = (vy + sy) % N, (vx + sx) % N
                    if uy < L and ux < L:
                        b[:, vy, vx] += np.einsum("ir,i->r", w[:, :, sy, sx], patches[:, uy, ux])
    return w, w.sum(0), b


def problem(L=5, B=None, R=4, P=6, sigma=0.8, seed=0, snr_scale=1.0):
    rng = np.random.default_rng(seed)
    B = L if B is None else B
    boxes = snr_scale * rng.standard_normal((R, B, B))
    patches = np.empty((P, L, L))
    for i in range(P):
        patches[i] = crop_shifted(boxes[rng.integers(R)], tuple(rng.integers(0, L + B, 2)), L)
    patches += sigma * rng.standard_normal(patches.shape)
    rho = rng.random((L + B, L + B)) + 0.1
    rho /= rho.sum()
    pi = rng.random(R) + 0.5
    pi /= pi.sum()
    return patches, boxes, np.log(rho), np.log(pi), sigma


# ----------------------------------------------------------------------------- lag grid
def test_fft_size_is_the_smallest_7_smooth_length():
    def smooth(m):
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 200):
        m = fft_size(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m))
    assert fft_size(21) == 21 and fft_size(22) == 24 and fft_size(29) == 30


@pytest.mark.parametrize("L, B", [(11, 11), (4, 8), (5, 9), (7, 7)])
def test_lag_grid_maps_onto_the_non_empty_shifts(L, B):
    # independent: a shift s is non-empty iff some crop pixel u meets a box pixel v, u − v ≡ s (mod N)
    N = L + B
    nonempty = sorted({(u - v) % N for u in range(L) for v in range(B)})
    M = fft_size(N - 1)
    lags = lag_grid(L, B, M)
    assert sorted(lags[lags >= 0]) == nonempty and len(nonempty) == N - 1
    # index m holds linear lag d with d ≡ m (mod M), d = u − v ∈ (−B, L)
    for m, s in enumerate(lags):
        if s >= 0:
            d = s if s < L else s - N
            assert (d - m) % M == 0 and -B < d < L


# ----------------------------------------------------------------------------- fused E-step
@pytest.mark.parametrize("L, B", [(5, 5), (4, 8), (6, 6)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_estep_matches_the_direct_sum(L, B, dtype):
    patches, boxes, log_rho, log_pi, sigma = problem(L, B)
    xp = get_backend("numpy", dtype=dtype, workers=2)
    sp = projection_spectra(boxes, log_rho, log_pi, xp, "fft", L=L)
    assert sp.M == fft_size(L + B - 1)
    stats, mass = estep_masses(patches, sp, sigma, xp, rot_chunk=3)
    ll, empty = direct(patches, boxes, sigma, log_rho, log_pi)
    w, n, b = direct_statistics(patches, ll, B)
    lse = scipy.special.logsumexp(ll, axis=(1, 2, 3))
    if dtype == "float64":  # float64 FFTs of O(10) terms: 1e-12 relative
        tol = dict(rtol=1e-12, atol=1e-12)
    else:  # float32 cross terms (eps 6e-8 × |cross|/σ² ~ 50): ~1e-5 absolute on log p
        tol = dict(rtol=0, atol=2e-4)
    np.testing.assert_allclose(stats.loglik, lse.sum(), **tol)
    np.testing.assert_allclose(stats.n, n, atol=1e-12 if dtype == "float64" else 1e-4)
    np.testing.assert_allclose(stats.b, b, atol=1e-11 if dtype == "float64" else 1e-3)
    np.testing.assert_allclose(mass, (w * ~empty).sum(axis=(2, 3)), atol=1e-12 if dtype == "float64" else 1e-4)
    assert stats.count == len(patches)


def test_default_path_equals_float64_reference_at_L11():
    """The default E-step (numpy, method auto = fused fft) against the direct float64 sum at the
    published patch size: log p(y_i) within 1e-6 relative, responsibilities' sums within 1e-6."""
    L = 11
    patches, boxes, log_rho, log_pi, sigma = problem(L, R=3, P=4, sigma=1.0)
    xp = get_backend("numpy")
    sp = projection_spectra(boxes, log_rho, log_pi, xp, "fft")
    stats, mass = estep_masses(patches, sp, sigma, xp, rot_chunk=2)
    ll, empty = direct(patches, boxes, sigma, log_rho, log_pi)
    w, n, b = direct_statistics(patches, ll, L)
    lse = scipy.special.logsumexp(ll, axis=(1, 2, 3))
    assert abs(stats.loglik - lse.sum()) <= 1e-6 * abs(lse.sum())  # measured ~1e-15
    np.testing.assert_allclose(stats.n, n, rtol=0, atol=1e-6)
    np.testing.assert_allclose(stats.b, b, rtol=0, atol=1e-6 * np.abs(b).max())
    np.testing.assert_allclose(mass, (w * ~empty).sum(axis=(2, 3)), rtol=0, atol=1e-6)


def test_fused_high_snr_and_impossible_rotations():
    """A peaked posterior (σ small: terms ~1e3) and a rotation of prior 0 (log π = −inf)."""
    patches, boxes, log_rho, log_pi, _ = problem(5, R=3, P=5, snr_scale=3.0)
    sigma = 0.1
    log_pi = log_pi.copy()
    log_pi[1] = -np.inf
    xp = get_backend("numpy")
    sp = projection_spectra(boxes, log_rho, log_pi, xp, "fft")
    stats, mass = estep_masses(patches, sp, sigma, xp, rot_chunk=1)
    ll, _ = direct(patches, boxes, sigma, log_rho, log_pi)
    _, n, b = direct_statistics(patches, ll, 5)
    lse = scipy.special.logsumexp(ll, axis=(1, 2, 3)).sum()
    assert abs(stats.loglik - lse) <= 1e-12 * abs(lse)
    np.testing.assert_allclose(stats.n, n, atol=1e-10)
    np.testing.assert_allclose(stats.b, b, atol=1e-9)
    assert np.all(mass[:, 1] == 0) and np.all(stats.n[1] == 0)


# ----------------------------------------------------------------------------- pruning
def test_prune_rotations_drops_less_than_epsilon():
    rng = np.random.default_rng(1)
    mass = rng.dirichlet(np.full(30, 0.2), size=50) * rng.uniform(0.5, 1.0, (50, 1))  # rest = empty crops
    assert prune_rotations(mass, 0.0).all()  # ε = 0 keeps every rotation, zero masses included
    for eps in (1e-6, 1e-3, 0.1):
        keep = prune_rotations(mass, eps)
        dropped = np.where(keep, 0.0, mass).sum(axis=1)
        assert np.all(dropped < eps)
        # minimal: adding the largest dropped rotation's mass would reach ε
        largest = np.where(keep, 0.0, mass).max(axis=1)
        kept_min = np.where(keep, mass, np.inf).min(axis=1)
        assert np.all(dropped + kept_min >= eps) and np.all(largest <= kept_min)


@pytest.mark.parametrize("L, B", [(5, 5), (4, 8)])
def test_pruned_estep_is_the_estep_without_the_dropped_pairs(L, B):
    patches, boxes, log_rho, log_pi, sigma = problem(L, B, R=5, P=7)
    xp = get_backend("numpy", workers=2)
    sp = projection_spectra(boxes, log_rho, log_pi, xp, "fft", L=L)
    keep = np.random.default_rng(2).random((7, 5)) < 0.5
    keep[3] = False  # a patch left with the empty crops only
    stats, mass = estep_masses(patches, sp, sigma, xp, rot_chunk=2, keep=keep)
    ll, empty = direct(patches, boxes, sigma, log_rho, log_pi, drop=~keep)
    w, n, b = direct_statistics(patches, ll, B)
    np.testing.assert_allclose(stats.loglik, scipy.special.logsumexp(ll, axis=(1, 2, 3)).sum(), rtol=1e-13)
    np.testing.assert_allclose(stats.n, n, atol=1e-12)
    np.testing.assert_allclose(stats.b, b, atol=1e-11)
    np.testing.assert_allclose(mass, (w * ~empty).sum(axis=(2, 3)), atol=1e-12)
    assert np.all(mass[~keep] == 0)


def test_pruned_with_epsilon_zero_equals_the_full_estep():
    patches, boxes, log_rho, log_pi, sigma = problem(6, R=6, P=9)
    xp = get_backend("numpy")
    sp = projection_spectra(boxes, log_rho, log_pi, xp, "fft")
    full, mass = estep_masses(patches, sp, sigma, xp, rot_chunk=4)
    keep = prune_rotations(mass, 0.0)
    from cryomtd.em3d.estep import _pruned_estep

    pruned, mass2 = _pruned_estep(patches, sp, sigma, xp, keep)  # the pair path, every pair
    np.testing.assert_allclose(pruned.loglik, full.loglik, rtol=1e-14)
    np.testing.assert_allclose(pruned.n, full.n, atol=1e-14)
    np.testing.assert_allclose(pruned.b, full.b, atol=1e-12)
    np.testing.assert_allclose(mass2, mass, atol=1e-14)
    default = estep_batch(patches, sp, sigma, xp, 4)
    np.testing.assert_array_equal(default.n, full.n)


def _tiny_model(L, S=(2, 1, 1), seed=0):
    rng = np.random.default_rng(seed)
    ell = np.concatenate([np.full(s * (2 * l + 1), l) for l, s in enumerate(S)])
    radial = np.concatenate([np.repeat(np.arange(1, s + 1), 2 * l + 1) for l, s in enumerate(S)])
    return ProjectionModel(rng.standard_normal((L * L, ell.size)), ell, radial, L)


def _wigner(n, ell_max, seed=1):
    rng = np.random.default_rng(seed)
    out = [np.linalg.qr(rng.standard_normal((n, 2 * l + 1, 2 * l + 1)))[0] for l in range(ell_max + 1)]
    out[0] = np.ones((n, 1, 1))
    return out


def test_em_with_pruning():
    """EM with em.advanced.prune: ε = 0 gives the unpruned iterates; a small ε evaluates fewer
    pairs after prune_after iterations and stays within the dropped mass of the full run."""
    L, R = 5, 12
    model = _tiny_model(L)
    wig = _wigner(R, 2)
    rng = np.random.default_rng(4)
    coef = 3 * rng.standard_normal(model.size)
    proj = model.project(coef, wig)
    patches = np.stack([crop_shifted(proj[rng.integers(R)], tuple(rng.integers(0, 2 * L, 2)), L) for _ in range(60)])
    mic = (patches + 0.3 * rng.standard_normal(patches.shape)).reshape(-1, L)
    kw = dict(sigma=0.3, iterations=5, tol=0, seed=1, prior_weight=0.1, backend="numpy", method="fft", x0=coef * 0.9)
    full = em(PatchSource([mic], L), model, wig, **kw)
    zero = em(PatchSource([mic], L), model, wig, prune=0.0, **kw)
    np.testing.assert_array_equal(zero.coef, full.coef)
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("cryomtd.em3d").addHandler(handler)
    logging.getLogger("cryomtd.em3d").setLevel(logging.INFO)
    try:
        pruned = em(PatchSource([mic], L), model, wig, prune=1e-8, prune_after=1, **kw)
    finally:
        logging.getLogger("cryomtd.em3d").removeHandler(handler)
    fractions = [r.args[1] for r in records if "pruning" in r.getMessage()]
    assert fractions[0] == 1.0 and min(fractions[1:]) < 0.5  # high SNR: few rotations per patch
    np.testing.assert_allclose(pruned.loglik, full.loglik, rtol=1e-7)
    np.testing.assert_allclose(pruned.coef, full.coef, rtol=0, atol=1e-5 * np.abs(full.coef).max())
