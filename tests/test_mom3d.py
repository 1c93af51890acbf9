"""Tests of the exact 3-D moment model and the least-squares fit (cryomtd.mom3d).

Independent references: the brute-force quadrature (``rotations.so3_quadrature`` + a
per-lag-pair product-sum autocorrelation of every projection, written in
``mom3d.reference`` without symmetries, invariants or Gram products), Monte-Carlo
averages over Haar rotations, cryomtd.moments on simulated micrographs, central finite
differences, and recovery of a known volume.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryomtd.basis import SphericalBessel
from cryomtd.mom3d import MomentModel, expected_moments, fit
from cryomtd.mom3d.fit import _Cost, crop_moments
from cryomtd.mom3d.quadrature import euler_quadrature
from cryomtd.mom3d.reference import box_autocorrelations, expected_moments_reference
from cryomtd.rotations import random as random_rotations

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def basis7():
    return SphericalBessel(7, 2)


def _per_image_moments(images, W):
    """Per-image box sums (n,), (n, K, K), (n, K, K, K, K) by sliding windows (numpy only)."""
    n, L, _ = images.shape
    K = 2 * W - 1
    pad = np.pad(images, ((0, 0), (W - 1, W - 1), (W - 1, W - 1)))
    V = np.lib.stride_tricks.sliding_window_view(pad, (K, K), axis=(1, 2)).reshape(n, L * L, K * K)
    p = images.reshape(n, L * L)
    s2 = np.einsum("qr,qrk->qk", p, V).reshape(n, K, K)
    s3 = np.einsum("qr,qrk,qrj->qkj", p, V, V).reshape(n, K, K, K, K)
    return p.sum(1), s2, s3


def _coef(basis, seed=0):
    return np.random.default_rng(seed).standard_normal(basis.size)


def test_quadrature_weights_and_exactness():
    # weights sum to one; the rule integrates cos(3*ell_max*psi), Legendre P_deg(cos tilt) exactly
    q = euler_quadrature(6)
    assert np.isclose(q.weights.sum(), 1.0, atol=1e-14)
    a = q.angles
    assert abs(np.sum(q.weights * np.cos(6 * a[:, 2]))) < 1e-14
    assert abs(np.sum(q.weights * np.cos(6 * a[:, 0]))) < 1e-14
    p6 = np.polynomial.legendre.Legendre.basis(6)(np.cos(a[:, 1]))
    assert abs(np.sum(q.weights * p6)) < 1e-14
    assert np.isclose(euler_quadrature(6, quarter=True).weights.sum(), 0.25)
    assert np.isclose(euler_quadrature(6, quarter=True, mirror=True).weights.sum(), 0.125)
    q = euler_quadrature(5, mirror=True)  # odd number of tilts: the cos(tilt) = 0 node at half weight
    assert np.isclose(q.weights.sum(), 0.5) and np.any(np.isclose(q.angles[:, 1], np.pi / 2))


@pytest.mark.parametrize("L,ell_max,W,sigma", [(7, 2, 3, 0.0), (7, 2, 4, 0.3), (8, 1, 3, 0.5)])
def test_model_equals_bruteforce_quadrature(L, ell_max, W, sigma):
    # Fast path (quarter in-plane grid for odd L, invariant a2 map, Gram a3) vs brute force over
    # rotations.so3_quadrature(3*ell_max): both exact, so they agree to rounding (1e-12 relative).
    b = SphericalBessel(L, ell_max)
    c = _coef(b, 1)
    fast = expected_moments(b, c, 0.13, W, sigma=sigma)
    ref = expected_moments_reference(b, c, 0.13, W, sigma=sigma)
    assert fast.a2.shape == (2 * W - 1,) * 2 and fast.a3.shape == (2 * W - 1,) * 4
    scale3 = np.abs(ref.a3).max()
    assert abs(fast.a1 - ref.a1) <= 1e-12 * abs(ref.a1)
    np.testing.assert_allclose(fast.a2, ref.a2, rtol=0, atol=1e-12 * np.abs(ref.a2).max())
    np.testing.assert_allclose(fast.a3, ref.a3, rtol=0, atol=1e-12 * scale3)


@pytest.mark.parametrize("L,ell_max,W", [(7, 2, 4), (8, 2, 3)])
def test_symmetry_reduced_grid_equals_full(L, ell_max, W):
    # projections at psi+90° are exact pixel rotations and the node (rot+180°, 180°−tilt,
    # 180°−psi) an exact mirror (even L after cropping the zero first row/column), so the
    # model projects only an eighth of the rule (up to the even rot grid) and must equal
    # the full-grid model to rounding.
    b = SphericalBessel(L, ell_max)
    c = torch.as_tensor(_coef(b, 2))
    reduced = MomentModel(b, W)
    full = MomentModel(b, W, symmetry=False)
    assert reduced.quarter and reduced.mirror and reduced.n == L - (L % 2 == 0)
    assert full.n == L and not (full.quarter or full.mirror)
    assert reduced.quadrature.size * 8 <= full.quadrature.size * (1 + 1 / (3 * ell_max + 1))
    a3r = reduced.moments(c, 0.2)[2]
    a3f = full.moments(c, 0.2)[2]
    assert torch.allclose(a3r, a3f, rtol=0, atol=1e-13 * float(a3f.abs().max()))


@pytest.mark.parametrize("restrict", [False, True])
def test_weighted_gram_backward_matches_autograd(restrict):
    # the analytic backward (and its derivative, used for Hessian-vector products) against
    # torch autograd through the plain forward Σ_q w_q Σ_r P[r] v_r v_rᵀ; with ``rows`` the
    # images vanish outside those pixels and the gradient is compared there (elsewhere the
    # model's projections are identically zero, so that part of the gradient is never used)
    from cryomtd.mom3d.model import _weighted_gram, _WeightedGram

    g = torch.Generator().manual_seed(0)
    mask = torch.ones(3, 5, 5, dtype=torch.float64)
    rows = None
    if restrict:
        mask[:, 0, :] = 0.0
        mask[:, :, 4] = 0.0
        rows = torch.nonzero(mask[0].reshape(-1)).ravel()
    P0 = torch.randn(3, 5, 5, dtype=torch.float64, generator=g) * mask
    P = P0.clone().requires_grad_(True)
    w = torch.rand(3, dtype=torch.float64, generator=g)
    G = torch.randn(25, 25, dtype=torch.float64, generator=g)
    d = torch.randn(3, 5, 5, dtype=torch.float64, generator=g) * mask
    grads = []
    for fn in (lambda P: _WeightedGram.apply(P, w, 3, rows), lambda P: _weighted_gram(P, w, 3)):
        f = (fn(P) * G).sum()
        (gP,) = torch.autograd.grad(f, P, create_graph=True)
        (hP,) = torch.autograd.grad((gP * d).sum(), P)
        grads.append((gP.detach() * mask, hP * mask))
    torch.testing.assert_close(_WeightedGram.apply(P0, w, 3, rows), _weighted_gram(P0, w, 3), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)


def test_model_vs_monte_carlo(basis7):
    # Haar-random rotations, brute-force box autocorrelations per projection: the mean
    # converges to the model within its Monte-Carlo standard error (~1/sqrt(n)).
    W = 3
    c = _coef(basis7, 3)
    model = expected_moments(basis7, c, 1.0, W)
    R = random_rotations(1600, 7)
    imgs = basis7.project(c, R)
    _, s2, s3 = _per_image_moments(imgs, W)
    s2, s3 = s2 / basis7.L**2, s3 / basis7.L**2
    # the sliding-window sums agree with the per-lag-pair reference on a few images
    ref = box_autocorrelations(imgs[:3], W)
    np.testing.assert_allclose(s3[:3].sum(0) * basis7.L**2, ref[2], atol=1e-12 * np.abs(ref[2]).max())
    errs = []
    for n in (100, 1600):
        for samples, target in ((s2[:n], model.a2), (s3[:n], model.a3)):
            err = np.linalg.norm(samples.mean(0) - target)
            se = np.sqrt(samples.var(0).sum() / n)  # expected norm of the MC error
            assert err < 3 * se, (n, err, se)
            errs.append(err)
    # the error shrinks with n (16x the samples: ~4x smaller; allow a wide margin)
    assert errs[2] < errs[0] / 1.5 and errs[3] < errs[1] / 1.5


@pytest.mark.slow
def test_model_vs_simulated_micrograph(basis7):
    # cryomtd.simulate (noise-free, well separated, projections b.project(coef, R)) and the
    # moments engine: the micrograph moments converge to the model at the density reached.
    from cryomtd.moments import autocorrelations_2d
    from cryomtd.simulate import micrograph

    W = 3
    c = _coef(basis7, 4)
    mic = micrograph(c, 900, gamma=0.12, snr=None, seed=5, basis=basis7)
    emp = autocorrelations_2d(mic.clean, W, backend="numpy")
    model = expected_moments(basis7, c, mic.gamma, W)
    # MC reference for the spread of the moments of n_particles random projections
    n = len(mic.particles)
    assert n > 1000
    R = random_rotations(400, 11)
    per = _per_image_moments(basis7.project(c, R), W)
    scale = mic.gamma / basis7.L**2
    for order, target, got in ((1, model.a2, emp.a2), (2, model.a3, emp.a3)):
        samples = scale * per[order]
        se = np.sqrt(samples.var(0).sum() / n)
        assert np.linalg.norm(got - target) < 4 * se
    assert abs(emp.a1 - model.a1) < 4 * scale * per[0].std() / np.sqrt(n)


def test_gradient_matches_finite_differences(basis7):
    # autograd gradient of the fit cost vs central differences (h = 1e-5, error O(h^2) ~ 1e-9)
    model = MomentModel(basis7, 3)
    data = model.numpy(_coef(basis7, 5), 0.1, 0.2)
    cost = _Cost(model, crop_moments(data, 3), sigma=0.2, weights=(1, 1, 1), prior_weight=1e-3)
    c = torch.tensor(_coef(basis7, 6), requires_grad=True)
    g = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    f = cost(c, g)
    gc, gg = torch.autograd.grad(f, (c, g))
    d = torch.as_tensor(np.random.default_rng(7).standard_normal(basis7.size))
    h = 1e-5
    with torch.no_grad():
        fd = (cost(c + h * d, g) - cost(c - h * d, g)) / (2 * h)
        fdg = (cost(c, g + h) - cost(c, g - h)) / (2 * h)
    assert abs(float(gc @ d) - float(fd)) < 1e-6 * abs(float(fd)) + 1e-12
    assert abs(float(gg) - float(fdg)) < 1e-6 * abs(float(fdg)) + 1e-12


def test_noise_bias_terms(basis7):
    # the model with sigma = model without + sigma^2 at zero lag (a2) and sigma^2*a1 on the
    # three planes l1 = 0, l2 = 0, l1 = l2 of a3 (3 sigma^2 a1 at the origin)
    c = _coef(basis7, 8)
    m0 = expected_moments(basis7, c, 0.1, 3)
    m1 = expected_moments(basis7, c, 0.1, 3, sigma=0.5)
    d2 = m1.a2 - m0.a2
    assert np.isclose(d2[2, 2], 0.25) and np.count_nonzero(np.abs(d2) > 1e-15) == 1
    d3 = (m1.a3 - m0.a3) / (0.25 * m0.a1)
    assert np.isclose(d3[2, 2, 2, 2], 3.0)
    assert np.isclose(d3[2, 2, 0, 1], 1.0) and np.isclose(d3[0, 1, 2, 2], 1.0) and np.isclose(d3[0, 1, 0, 1], 1.0)
    assert np.isclose(np.abs(d3).sum(), 3 * 25 - 3 + 3)  # three planes of 25, overlapping only at the origin


def _align_error(basis, est, truth):
    """Relative coefficient error after the best rotation/reflection (evaluate.align_coefficients)."""
    from cryomtd.evaluate.align import align_coefficients, reflect_coefficients

    R, reflected, _ = align_coefficients(est, truth, basis)
    e = reflect_coefficients(est, basis) if reflected else est
    return np.linalg.norm(basis.rotate(e, R) - truth) / np.linalg.norm(truth)


@pytest.mark.slow
def test_exact_recovery_from_exact_moments():
    # a random ell_max = 1 volume from its exact moments, few restarts: relative coefficient
    # error after alignment < 1e-3 and gamma recovered (the cost reaches ~0 at the truth orbit).
    # The default conjugate gradients stop at cost ~1e-3 after 100 iterations here; a short
    # Gauss-Newton polish (the workflow's lsq.advanced.polish) reaches round-off.
    b = SphericalBessel(7, 1)
    truth = _coef(b, 9)
    data = expected_moments(b, truth, 0.1, 4)
    res = fit(data, b, sigma=0.0, restarts=3, seed=1, max_iterations=100, polish=30)
    assert res.cost < 1e-12
    assert abs(res.gamma - 0.1) < 1e-4
    assert _align_error(b, res.coef, truth) < 1e-3


def test_fit_is_reproducible_and_checks_window(basis7):
    data = expected_moments(basis7, _coef(basis7, 10), 0.1, 3)
    r1 = fit(data, basis7, restarts=1, seed=3, max_iterations=3)
    r2 = fit(data, basis7, restarts=1, seed=3, max_iterations=3)
    np.testing.assert_array_equal(r1.coef, r2.coef)
    # the default fit marches over ℓ ≤ 1, ℓ ≤ 2 and warm-starts each stage on a1 + a2:
    # 2 stages × 2 optimiser runs × at most 3 iterations
    assert r1.cost_trace.size >= 1 and r1.iterations <= 12 and len(r1.stage_ends) == 2
    assert r1.stage_ends[-1] == r1.cost_trace.size
    one = fit(data, basis7, restarts=1, seed=3, max_iterations=3, marching=False, a2_first=False)
    assert one.iterations <= 3 and len(one.stage_ends) == 1
    with pytest.raises(ValueError, match="window"):
        fit(data, basis7, restarts=1, window=5)


@pytest.mark.parametrize("kind", ["quadrature", "invariants"])
def test_gauss_newton_jacobian_matches_autograd(basis7, kind):
    # the polish's Jacobian (quadrature model: polarisation identity of the cubic box sums;
    # invariant model: analytic, from the invariant map) against torch reverse-mode autograd of the
    # residual vector written here from the model on every non-redundant lag, with noise terms and
    # prior. The polish keeps one a3 row per D4 orbit (weighted by √size, against the orbit mean),
    # so its residual is compared through what Gauss–Newton uses: ‖r‖² (= the cost, with the
    # within-orbit spread of the data as a constant), Jᵀr and JᵀJ. The data are perturbed so
    # that they are not D4-symmetric (as moments of real micrographs are not).
    import scipy.optimize

    from cryomtd.mom3d.fit import _noise_terms, gauss_newton_polish, make_model

    model = make_model(basis7, 3, kind)
    c0 = _coef(basis7, 11)
    sigma = 0.3
    a1, a2, a3 = crop_moments(model.numpy(c0, 0.1, sigma), 3)
    a3 = a3 * (1 + 0.01 * np.random.default_rng(13).standard_normal(a3.shape))
    cost = _Cost(model, (a1, a2, a3), sigma=sigma, weights=(1, 2, 3), prior_weight=1e-3)
    assert cost.d3_spread > 0 and cost.o3_dense.numel() < cost.m3.numel() / 4
    sw, d = cost.residual_scales()
    n0, u3 = (torch.as_tensor(v) for v in _noise_terms(cost))

    def residual(x):
        m = cost.box_vector(x[:-1])
        r = sw * (x[-1] / basis7.L**2 * (m + m[0] * u3) + n0 - d)
        return torch.cat([r, (1e-3 / basis7.size) ** 0.5 * x[:-1]])

    x = torch.tensor(np.r_[c0 + 0.3 * _coef(basis7, 12), 0.12])
    r = residual(x)
    assert torch.isclose(r @ r, cost(x[:-1], x[-1]), rtol=1e-13)
    J_ref = torch.autograd.functional.jacobian(residual, x).numpy()
    captured = {}

    def capture(fun, x0, jac, **kw):  # stop least_squares after capturing its first Jacobian
        captured["J"], captured["r"] = jac(x0), fun(x0)
        raise StopIteration

    real = scipy.optimize.least_squares
    scipy.optimize.least_squares = capture
    try:
        with pytest.raises(StopIteration):
            gauss_newton_polish(cost, x[:-1].numpy(), 0.12)
    finally:
        scipy.optimize.least_squares = real
    r, Jr, J = r.numpy(), captured["r"], captured["J"]
    offset = 3 * cost.d3_spread / cost.n3
    assert np.isclose(Jr @ Jr + offset, r @ r, rtol=1e-12)
    g_ref = J_ref.T @ r
    np.testing.assert_allclose(J.T @ Jr, g_ref, rtol=0, atol=1e-11 * np.abs(g_ref).max())
    H_ref = J_ref.T @ J_ref
    np.testing.assert_allclose(J.T @ J, H_ref, rtol=0, atol=1e-11 * np.abs(H_ref).max())


@pytest.mark.slow
def test_gauss_newton_polish_converges_near_the_truth():
    # from 2 % off the truth of a random ell_max = 2 volume, exact moments: the cost drops
    # to rounding level (quadratic convergence), γ recovered
    from cryomtd.mom3d.fit import gauss_newton_polish

    b = SphericalBessel(7, 2)
    truth = _coef(b, 13)
    model = MomentModel(b, 4)
    cost = _Cost(model, crop_moments(model.numpy(truth, 0.1), 4), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
    start = truth + 0.02 * np.linalg.norm(truth) * _coef(b, 14) / np.sqrt(b.size)
    f0 = float(cost(torch.as_tensor(start), torch.tensor(0.1)))
    coef, gamma, f, trace, _ = gauss_newton_polish(cost, start, 0.1, max_iterations=30)
    assert f0 > 1e-6 and f < 1e-16
    assert abs(gamma - 0.1) < 1e-8
    assert _align_error(b, coef, truth) < 1e-6


def test_invariant_tensor_is_rotation_invariant():
    # T of each degree triple: unit norm, T = (D1 ⊗ D2 ⊗ D3)(R) T at random rotations (the basis'
    # own real Wigner matrices), and no invariant when the triangle inequality fails
    from cryomtd.mom3d.invariants import ell_triples, invariant_tensor

    b = SphericalBessel(9, 3)
    D = b.wigner(random_rotations(3, np.random.default_rng(5)))
    assert (0, 1, 3) not in ell_triples(3) and (1, 2, 3) in ell_triples(3)
    for t in [(0, 0, 0), (1, 1, 2), (1, 2, 3), (2, 2, 3), (3, 3, 3)]:
        T = invariant_tensor(b, t)
        assert np.isclose(np.linalg.norm(T), 1.0)
        for q in range(3):
            RT = np.einsum("ai,bj,ck,ijk->abc", D[t[0]][q], D[t[1]][q], D[t[2]][q], T)
            np.testing.assert_allclose(RT, T, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="triangle"):
        invariant_tensor(b, (0, 1, 3))


@pytest.mark.parametrize("L,ell_max,W,sigma", [(7, 2, 3, 0.0), (8, 2, 4, 0.3), (9, 3, 4, 0.0)])
def test_invariant_model_equals_bruteforce_quadrature(L, ell_max, W, sigma):
    # the bispectrum-invariant map (no rotations per evaluation) against the plain reference:
    # every projection of rotations.so3_quadrature and a product-sum per lag pair; odd and even L
    from cryomtd.mom3d.invariants import InvariantMomentModel, d4_orbits
    from cryomtd.moments import a3_nonredundant_lags

    b = SphericalBessel(L, ell_max)
    c = _coef(b, 3)
    model = InvariantMomentModel(b, W)
    fast = model.numpy(c, 0.13, sigma)
    ref = expected_moments_reference(b, c, 0.13, W, sigma=sigma)
    assert abs(fast.a1 - ref.a1) <= 1e-12 * abs(ref.a1)
    np.testing.assert_allclose(fast.a2, ref.a2, rtol=0, atol=1e-12 * np.abs(ref.a2).max())
    np.testing.assert_allclose(fast.a3, ref.a3, rtol=0, atol=1e-12 * np.abs(ref.a3).max())
    lags, class_to_orbit, size = d4_orbits(W)  # orbits partition the non-redundant classes, ≤ 8 each
    assert size.sum() == len(a3_nonredundant_lags(W)) == class_to_orbit.size and size.max() <= 8
    assert model.map3.shape == (len(lags), model.n_invariants)


def test_invariant_model_gradient_equals_quadrature_model(basis7):
    # same cost, same gradient (autograd through the invariants vs the Gram backward)
    from cryomtd.mom3d.invariants import InvariantMomentModel

    data = crop_moments(expected_moments(basis7, _coef(basis7, 4), 0.1, 3), 3)
    grads = []
    for model in (MomentModel(basis7, 3), InvariantMomentModel(basis7, 3)):
        c = torch.tensor(_coef(basis7, 5), requires_grad=True)
        g = torch.tensor(0.12, dtype=torch.float64, requires_grad=True)
        f = _Cost(model, data, sigma=None, weights=(1, 1, 1), prior_weight=0.0)(c, g)
        f.backward()
        grads.append((float(f.detach()), c.grad.numpy().copy(), float(g.grad)))
    (f1, gc1, gg1), (f2, gc2, gg2) = grads
    assert np.isclose(f1, f2, rtol=1e-12) and np.isclose(gg1, gg2, rtol=1e-10)
    np.testing.assert_allclose(gc2, gc1, rtol=0, atol=1e-11 * np.abs(gc1).max())


def test_invariant_map_cache_roundtrip(tmp_path, basis7):
    # the map is written once (atomically, no temp file left) and loaded bit for bit; a file
    # of the wrong shape under the expected name is refused with its path in the message
    from cryomtd.mom3d.invariants import InvariantMomentModel

    m1 = InvariantMomentModel(basis7, 3, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy" and "L7_l2_W3" in files[0].name
    from cryomtd.io import current_umask  # shared like any output: the umask's permissions, not mkstemp's 0600

    assert files[0].stat().st_mode & 0o777 == 0o666 & ~current_umask()
    m2 = InvariantMomentModel(basis7, 3, cache_dir=tmp_path)
    assert torch.equal(m1.map3, m2.map3)
    np.save(files[0], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=files[0].name):
        InvariantMomentModel(basis7, 3, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="lsq.model"):  # too large a map: a clear error, nothing allocated
        InvariantMomentModel(basis7, 3, max_map_bytes=1000)


def test_line_search_recovers_after_a_rejected_step():
    # f(x) = |x|²: a search along an ascent direction is rejected; the next search along
    # -grad must decrease f (pymanopt 2.2's AdaptiveLineSearcher keeps trying step 0 after
    # a rejection — the stall seen in marching stages)
    from pymanopt.manifolds import Euclidean

    from cryomtd.mom3d.fit import ArmijoLineSearcher

    M = Euclidean(3)
    x = np.array([1.0, -2.0, 0.5])
    f = lambda y: float(y @ y)  # noqa: E731
    g = 2 * x
    searcher = ArmijoLineSearcher()
    step, y = searcher.search(f, M, x, g, f(x), float(g @ g))  # ascent: rejected
    assert step == 0 and np.array_equal(y, x)
    for _ in range(3):  # descent, repeatedly
        step, y = searcher.search(f, M, x, -g, f(x), -float(g @ g))
        assert step > 0 and f(y) <= f(x) - 0.5 * (step / np.linalg.norm(g)) * float(g @ g)


def test_moments_are_blind_to_asymmetric_perturbations_of_a_symmetric_volume(basis7):
    # at a C2-symmetric volume the Jacobian of the box sums (torch autograd of the model,
    # not the analytic Jacobian) vanishes on every perturbation orthogonal to the symmetric
    # subspace (docs/mom3d.md), and only there: at an asymmetric volume it does not
    from cryomtd.basis.symmetry import symmetric_subspace
    from cryomtd.mom3d.fit import make_model

    model = make_model(basis7, 3, "invariants")
    cost = _Cost(
        model, crop_moments(model.numpy(_coef(basis7, 20), 0.1), 3), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0
    )
    Q = symmetric_subspace(basis7, "C2")
    assert 0 < Q.shape[1] < basis7.size
    off = np.eye(basis7.size) - Q @ Q.T

    def jac(c):
        return torch.autograd.functional.jacobian(cost.box_vector, torch.as_tensor(c)).numpy()

    J = jac(Q @ Q.T @ _coef(basis7, 21))
    assert np.abs(J @ off).max() < 1e-12 * np.abs(J).max()
    assert np.linalg.matrix_rank(J @ Q, tol=1e-8 * np.abs(J).max()) >= Q.shape[1] - 1  # all but the z-rotation
    J_asym = jac(_coef(basis7, 22))
    assert np.abs(J_asym @ off).max() > 1e-3 * np.abs(J_asym).max()


def test_symmetric_fit_recovers_a_symmetric_volume():
    # a random C2-symmetric ell_max = 2 volume from its exact moments, fitted over the C2
    # subspace (lsq.symmetry): coefficients symmetric, error after alignment < 1e-3
    from cryomtd.basis.symmetry import symmetrize

    b = SphericalBessel(7, 2)
    truth = symmetrize(_coef(b, 23), b, "C2")
    data = expected_moments(b, truth, 0.1, 4)
    res = fit(data, b, sigma=0.0, restarts=3, seed=2, optimizer="gauss-newton", max_iterations=60, symmetry="C2")
    np.testing.assert_allclose(symmetrize(res.coef, b, "C2"), res.coef, atol=1e-12)
    assert res.cost < 1e-16
    assert abs(res.gamma - 0.1) < 1e-6
    assert _align_error(b, res.coef, truth) < 1e-3


def test_symmetric_model_jacobian_is_the_full_jacobian_times_q(basis7):
    # the reduced analytic Jacobian (angular factors inside the contraction) equals the full
    # model's Jacobian times the subspace basis, and torch autograd through c = Q z
    from cryomtd.basis.symmetry import symmetric_subspace
    from cryomtd.mom3d.fit import make_model
    from cryomtd.mom3d.symmetric import SymmetricModel

    full = make_model(basis7, 3, "invariants")
    sym = SymmetricModel(full, "D2")
    Q = torch.as_tensor(symmetric_subspace(basis7, "D2"))
    z = torch.as_tensor(np.random.default_rng(24).standard_normal(sym.size))
    for got, ref in zip(sym.box_jacobian(z), full.box_jacobian(Q @ z)):
        np.testing.assert_allclose(got.numpy(), (ref @ Q).numpy(), rtol=0, atol=1e-13 * float(ref.abs().max()))
    m1, m2, m3 = (torch.autograd.functional.jacobian(lambda v, k=k: full.box_moments(Q @ v)[k], z) for k in range(3))
    j1, j2, j3 = sym.box_jacobian(z)
    np.testing.assert_allclose(j2.numpy(), m2.reshape(j2.shape).numpy(), atol=1e-12 * float(m2.abs().max()))
    K = 2 * 3 - 1
    np.testing.assert_allclose(
        j3[full.dense_to_orbit].numpy(), m3.reshape(K**4, -1).numpy(), atol=1e-12 * float(m3.abs().max())
    )


def test_single_precision_jacobian_gives_the_same_gauss_newton_fit():
    # the float32 contraction of the map (used by the polish for large maps) is the float64
    # Jacobian to ~1e-7 relative, and Gauss-Newton forced to use it at this small size still
    # converges to the truth of a random C2-symmetric volume (the residual stays float64)
    from cryomtd.basis.symmetry import symmetrize
    from cryomtd.mom3d.fit import gauss_newton_polish, make_model
    from cryomtd.mom3d.symmetric import SymmetricModel

    b = SphericalBessel(7, 2)
    truth = symmetrize(_coef(b, 23), b, "C2")
    model = SymmetricModel(make_model(b, 4), "C2")
    cost = _Cost(
        model, crop_moments(expected_moments(b, truth, 0.1, 4), 4), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0
    )
    z_true = model.Q.numpy().T @ truth
    z = torch.as_tensor(z_true * 1.05)
    J64 = cost.box_jacobian(z, orbits=True).numpy()
    J32 = cost.box_jacobian(z, orbits=True, single=True).numpy()
    assert 1e-12 < np.abs(J32 - J64).max() / np.abs(J64).max() < 1e-5
    noise = np.random.default_rng(5).standard_normal(z_true.size) / z_true.size**0.5
    start = z_true + 0.02 * np.linalg.norm(z_true) * noise
    runs = [
        gauss_newton_polish(cost, start, 0.12, max_iterations=40, single_jacobian_above=above) for above in (None, 0)
    ]
    for zf, g, f, _, _ in runs:
        assert f < 1e-20 and abs(g - 0.1) < 1e-8
        assert _align_error(b, model.Q.numpy() @ zf, truth) < 1e-6


def _central(raw, wide):
    """Central moments of a zero-background model, written out lag by lag (independent of fit.py):
    c2(ℓ) = a2(ℓ) − a1², c3(ℓ1, ℓ2) = a3 − a1 (a2(ℓ1) + a2(ℓ2) + a2(ℓ1 − ℓ2)) + 2 a1³, with a2 at
    lags up to 2W − 2 from the model of window 2W − 1 (``wide``)."""
    W, a1 = raw.window, float(raw.a1)
    K, c = 2 * W - 1, W - 1
    a2w = np.asarray(wide.a2)  # (4W − 3)², zero lag at 2W − 2
    cw = 2 * W - 2
    c3 = np.empty_like(np.asarray(raw.a3))
    for i in range(K):
        for j in range(K):
            for k in range(K):
                for m in range(K):
                    s = a2w[i - c + cw, j - c + cw] + a2w[k - c + cw, m - c + cw] + a2w[i - k + cw, j - m + cw]
                    c3[i, j, k, m] = raw.a3[i, j, k, m] - a1 * s + 2 * a1**3
    return 0.0, np.asarray(raw.a2) - a1**2, c3


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_central_moment_cost_vanishes_at_the_truth_and_the_fit_recovers_it(sigma):
    """Zero-mean micrographs (a user's, after preparation): the fit models central moments. At the
    truth the central cost is 0 (to round-off) against central moments built lag by lag here, with
    noise (its σ² a1 terms in a3 cancel); the fit then recovers the truth without a1."""
    from types import SimpleNamespace

    from cryomtd.mom3d.fit import zero_mean

    b = SphericalBessel(7, 1)
    truth = _coef(b, 9)
    W = 3
    raw = expected_moments(b, truth, 0.1, W, sigma=sigma)
    wide = expected_moments(b, truth, 0.1, 2 * W - 1, sigma=sigma)
    a1, a2, a3 = _central(raw, wide)
    data = SimpleNamespace(window=W, a1=a1, a2=a2, a3=a3)
    assert zero_mean(data) and not zero_mean(raw)
    cost = _Cost(MomentModel(b, W), crop_moments(data, W), sigma=sigma, weights=(1, 1, 1), prior_weight=0.0,
                 central=True)  # fmt: skip
    t = cost.terms(torch.as_tensor(truth), torch.tensor(0.1, dtype=torch.float64))
    assert float(sum(t)) < 1e-24
    # trust regions (exact Hessian-vector products through the central model) converge to round-off
    res = fit(data, b, sigma=sigma, restarts=3, seed=1, max_iterations=100, optimizer="trust-regions")
    assert res.cost < 1e-10 and abs(res.gamma - 0.1) < 1e-3
    assert _align_error(b, res.coef, truth) < 1e-2
