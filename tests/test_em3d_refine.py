"""Local rotation refinement (``em.refine``): the coarse pass's rotation masses, the fine keep
sets, and EM on the fine grid, against independent definitions (the direct log-likelihood
sum of tests/test_em3d.py, an explicit loop over patches, a plain EM run on the fine grid)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from test_em3d import direct_loglik, random_wigner, setup, synthetic_patches, tiny_model

from cryomtd import rotations
from cryomtd.em3d import PatchSource, em, get_backend, projection_spectra
from cryomtd.em3d.estep import local_rotations, rotation_masses
from cryomtd.io import InputError


def test_rotation_masses_are_the_posterior_over_rotations():
    model, wig, coef, patches, rho, pi, sigma = setup(R=4, P=6)
    xp = get_backend("numpy")
    proj = model.project(coef, wig)
    spectra = projection_spectra(proj, np.log(rho), np.log(pi), xp, "fft")
    mass = rotation_masses(patches, spectra, sigma, xp, rot_chunk=2)
    L = model.L
    ll = direct_loglik(patches, proj, sigma, np.log(rho), np.log(pi))  # (P, R, 2L, 2L)
    post = np.exp(ll - scipy.special.logsumexp(ll, axis=(1, 2, 3), keepdims=True))
    nonempty = np.ones((2 * L, 2 * L), dtype=bool)
    nonempty[L, :] = nonempty[:, L] = False  # the empty crops are not a rotation's mass
    np.testing.assert_allclose(mass, (post * nonempty).sum(axis=(2, 3)), rtol=1e-9, atol=1e-12)


def test_local_rotations_keep_the_children_of_the_top_coarse_rotations():
    rng = np.random.default_rng(0)
    mass = rng.random((5, 7))
    parent = rng.integers(0, 7, 30)
    keep = local_rotations(mass, parent, top=3)
    for i in range(5):  # the plain definition, patch by patch
        top = set(np.argsort(mass[i])[::-1][:3])
        np.testing.assert_array_equal(keep[i], [p in top for p in parent])
    assert local_rotations(mass, parent, top=99).all()


def test_nearest_rotation_is_the_smallest_geodesic_angle():
    grid = rotations.grid(60)
    rots = rotations.random(40, 1)
    idx = rotations.nearest(rots, grid)
    # geodesic angle from the trace of Rᵀ G, over every grid rotation
    cos = (np.einsum("nij,mij->nm", rots, grid) - 1) / 2
    np.testing.assert_array_equal(idx, np.argmax(cos, axis=1))
    np.testing.assert_array_equal(rotations.nearest(grid, grid), np.arange(len(grid)))


def refine_case(R_coarse=3, R_fine=9, L=4, sigma=0.4):
    model = tiny_model(L)
    coarse = random_wigner(R_coarse, 2, seed=1)
    fine = random_wigner(R_fine, 2, seed=5)
    truth = np.random.default_rng(7).standard_normal(model.size)
    mic = synthetic_patches(model, fine, truth, 60, sigma=sigma).reshape(-1, L)
    parent = np.arange(R_fine) % R_coarse
    return model, coarse, fine, parent, mic, sigma


def test_refinement_keeping_everything_is_em_on_the_fine_grid():
    model, coarse, fine, parent, mic, sigma = refine_case()
    x0 = np.random.default_rng(2).standard_normal(model.size)
    kw = dict(sigma=sigma, iterations=4, tol=0, backend="numpy", method="fft", x0=x0)
    plain = em(PatchSource([mic], model.L), model, fine, **kw)
    refined = em(PatchSource([mic], model.L), model, coarse, fine=(fine, parent), after=0, top=3, **kw)
    np.testing.assert_allclose(refined.coef, plain.coef, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(refined.loglik, plain.loglik, rtol=1e-12)
    assert refined.pi.shape == (9,)


def test_refinement_with_a_small_top_differs_and_starts_after_the_global_iterations():
    model, coarse, fine, parent, mic, sigma = refine_case()
    x0 = np.random.default_rng(2).standard_normal(model.size)
    kw = dict(sigma=sigma, iterations=4, tol=0, backend="numpy", method="fft", x0=x0)
    glob = em(
        PatchSource([mic], model.L), model, coarse, iterations=2, **{k: v for k, v in kw.items() if k != "iterations"}
    )
    local = em(PatchSource([mic], model.L), model, coarse, fine=(fine, parent), after=2, top=1, **kw)
    np.testing.assert_array_equal(local.loglik[:2], glob.loglik)  # the first `after` iterations: global grid
    wide = em(PatchSource([mic], model.L), model, coarse, fine=(fine, parent), after=2, top=3, **kw)
    assert not np.allclose(local.coef, wide.coef)  # top = 1 leaves out states: other numbers


def test_refined_stochastic_resume_equals_uninterrupted(tmp_path):
    from test_em3d import killed_and_resumed

    model, coarse, fine, parent, mic, sigma = refine_case()
    kw = dict(sigma=sigma, iterations=6, tol=0, fraction=0.5, burn_in=1, backend="numpy", seed=4)
    run = lambda **k: em(PatchSource([mic], model.L), model, coarse, fine=(fine, parent), after=2, top=2, **kw, **k)  # noqa: E731
    full = run(checkpoint=tmp_path / "a.npz")
    resumed = killed_and_resumed(run, tmp_path / "b.npz", at=3)
    assert resumed.resumed_from == 3
    np.testing.assert_array_equal(resumed.coef, full.coef)
    np.testing.assert_array_equal(resumed.loglik, full.loglik)


def test_refinement_bad_inputs():
    model, coarse, fine, parent, mic, sigma = refine_case()
    src = PatchSource([mic], model.L)
    with pytest.raises(InputError, match="em.refine"):
        em(src, model, coarse, sigma=sigma, fine=(fine, parent + 5), iterations=1)
    with pytest.raises(InputError, match="em.refine"):
        em(src, model, coarse, sigma=sigma, fine=(fine, parent), method="matmul", iterations=1)
    with pytest.raises(InputError, match="em.refine"):
        em(src, model, coarse, sigma=sigma, fine=(fine, parent), learn_rotation_prior=True, iterations=1)
