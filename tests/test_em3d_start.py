"""Tests of EM's generic start (cryomtd.em3d.start): the ball fitted to the patches' spectrum.

The expected spectrum is checked against patches built by explicit zero-padding, np.roll
and cropping at uniformly drawn shifts (a Monte-Carlo average), and the ball start against
data generated from a known ball.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.basis import SphericalBessel
from cryomtd.em3d import PatchSource, ProjectionModel, em
from cryomtd.em3d.start import ball_coefficients, ball_start, expected_spectrum, patch_spectrum
from cryomtd.io import InputError


def explicit_crop(box: np.ndarray, L: int, s: tuple[int, int]) -> np.ndarray:
    B = box.shape[0]
    z = np.zeros((L + B, L + B))
    z[:B, :B] = box
    return np.roll(z, s, axis=(0, 1))[:L, :L]


def shifted_patches(box, L, n, sigma, seed):
    """n patches C R_s Z box + σ ε with s uniform on the (L + B)² shifts, tiled into one image."""
    g = np.random.default_rng(seed)
    N = L + box.shape[0]
    shifts = g.integers(0, N, size=(n, 2))
    patches = np.stack([explicit_crop(box, L, (int(a), int(b))) for a, b in shifts])
    return patches + sigma * g.standard_normal(patches.shape)


def as_source(patches):
    n, L, _ = patches.shape
    k = int(np.sqrt(n))
    img = patches[: k * k].reshape(k, k, L, L).transpose(0, 2, 1, 3).reshape(k * L, k * L)
    return PatchSource([img], L)


@pytest.mark.parametrize("B", [5, 9])
def test_expected_spectrum_is_the_mean_over_explicit_shifts(B):
    L = 5
    box = np.random.default_rng(0).standard_normal((B, B))
    N = L + B
    direct = np.mean(
        [np.abs(np.fft.fft2(explicit_crop(box, L, (a, b)))) ** 2 for a in range(N) for b in range(N)], axis=0
    )
    np.testing.assert_allclose(expected_spectrum(box, L), direct, rtol=1e-12, atol=1e-12)


def test_patch_spectrum_matches_the_monte_carlo_model():
    L, sigma = 7, 0.5
    box = np.random.default_rng(1).uniform(size=(L, L))
    src = as_source(shifted_patches(box, L, 40000, sigma, seed=2))
    D = patch_spectrum(src, sigma)
    E = expected_spectrum(box, L)
    # Monte-Carlo error of a mean of ~4·10⁴ periodograms: a few per cent of the largest bins
    assert np.max(np.abs(D - E)) / np.max(E) < 0.03
    # pure noise: the noise expectation is removed
    noise = as_source(np.random.default_rng(3).standard_normal((40000, L, L)) * sigma)
    assert np.max(np.abs(patch_spectrum(noise, sigma))) < 0.05 * L * L * sigma**2


def test_ball_start_recovers_radius_and_amplitude_of_a_ball():
    L = 11
    b = SphericalBessel(L, 4)
    model = ProjectionModel.from_basis(b)
    truth = 2.5 * ball_coefficients(model, 3.0)
    box = (model.psi @ truth).reshape(L, L)
    src = as_source(shifted_patches(box, L, 22500, 1.0, seed=4))
    got = ball_start(src, model, 1.0, np.random.default_rng(0), spread=0.0)
    assert np.linalg.norm(got - truth) / np.linalg.norm(truth) < 0.05
    wrong = ball_start(src, model, 1.0, np.random.default_rng(0), spread=0.0, radius=4.5)
    assert np.linalg.norm(wrong - truth) / np.linalg.norm(truth) > 0.2  # the radius matters: the test can fail
    # the detail: ℓ ≥ 1 only, of the stated relative norm
    detailed = ball_start(src, model, 1.0, np.random.default_rng(0), spread=0.1)
    d = detailed - got
    assert np.allclose(d[model.ell == 0], 0.0)
    assert np.linalg.norm(d) == pytest.approx(0.1 * np.linalg.norm(got), rel=1e-9)


def test_ball_start_refuses_data_without_signal():
    L = 7
    b = SphericalBessel(L, 2)
    model = ProjectionModel.from_basis(b)
    noise = as_source(np.random.default_rng(5).standard_normal((4096, L, L)))
    with pytest.raises(InputError, match="no signal"):
        ball_start(noise, model, 1.2, np.random.default_rng(0))  # σ overstated: nothing left over


def test_em_default_start_is_the_ball_and_random_stays_available():
    L = 7
    b = SphericalBessel(L, 2)
    model = ProjectionModel.from_basis(b)
    box = (model.psi @ (2.0 * ball_coefficients(model, 2.0))).reshape(L, L)
    src = as_source(shifted_patches(box, L, 900, 0.5, seed=6))
    wig = b.wigner(np.eye(3)[None])
    ball = em(src, model, wig, sigma=0.5, iterations=1, backend="numpy", seed=3)
    again = em(src, model, wig, sigma=0.5, iterations=1, backend="numpy", seed=3)
    rand = em(src, model, wig, sigma=0.5, iterations=1, backend="numpy", seed=3, init="random")
    np.testing.assert_array_equal(ball.coef, again.coef)  # same seed ⇒ same numbers
    assert rand.loglik[0] < ball.loglik[0]  # the fitted start explains the data better than a random one
