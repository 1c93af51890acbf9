"""Starting points of the 3-D least-squares fit (cryomtd.mom3d.start, ``lsq.init``).

References: the soft ball's defining formula evaluated directly, the radius of a ball
whose moments are the data, and the block structure of the start (ℓ = 0 from the ball,
ℓ ≥ 1 random with the requested relative norm).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryomtd.basis import SphericalBessel
from cryomtd.mom3d import expected_moments
from cryomtd.mom3d.fit import _Cost, crop_moments, make_model
from cryomtd.mom3d.start import ball_radius, ball_start, random_start, start_point
from cryomtd.mom3d.symmetric import SymmetricModel
from cryomtd.volume import soft_ball

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def basis():
    return SphericalBessel(11, 3)


@pytest.fixture(scope="module")
def model(basis):
    return make_model(basis, 5, "invariants")


def test_soft_ball_is_the_logistic_of_the_distance():
    L, R, edge = 9, 2.5, 0.7
    v = soft_ball(L, R, edge)
    z, y, x = np.meshgrid(*(np.arange(L) - L // 2,) * 3, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    np.testing.assert_allclose(v, 1 / (1 + np.exp((r - R) / edge)), rtol=1e-12, atol=1e-15)
    assert v[L // 2, L // 2, L // 2] > 0.97 and v[0, 0, 0] < 0.01
    with pytest.raises(ValueError, match="positive"):
        soft_ball(L, -1.0)


@pytest.mark.parametrize("sigma", [0.0, 0.3, None])
def test_ball_radius_recovers_the_radius_of_a_ball(basis, model, sigma):
    # data = exact moments of a soft ball of radius 3.3 px (with the noise bias σ²δ(ℓ) when
    # σ > 0, removed when σ is known; None: the biased lags are excluded): the fitted radius is 3.3
    truth = basis.expand(soft_ball(basis.L, 3.3))
    data = expected_moments(basis, truth, 0.05, 5, sigma=0.3 if sigma is None else sigma)
    cost = _Cost(model, crop_moments(data, 5), sigma=sigma, weights=(1, 1, 1), prior_weight=0.0)
    assert ball_radius(model, cost) == pytest.approx(3.3, abs=0.03)


def test_ball_start_blocks_and_scale(basis, model):
    # ℓ = 0 block ∝ the ball's; the ℓ ≥ 1 blocks random with norm spread·‖ball‖; scaled so the
    # model's Σ a2 equals the data's; reproducible from the generator's seed
    data = expected_moments(basis, np.random.default_rng(1).standard_normal(basis.size), 0.1, 5)
    cost = _Cost(model, crop_moments(data, 5), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
    x = ball_start(model, cost, np.random.default_rng(7), 0.1, radius=3.0, spread=0.4)
    ball = basis.expand(soft_ball(basis.L, 3.0))
    ell = np.asarray(basis.ell)
    lo, hi = ell == 0, ell > 0
    a = (x[lo] @ ball[lo]) / (ball[lo] @ ball[lo])
    np.testing.assert_allclose(x[lo], a * ball[lo], rtol=1e-10)
    # the grid's tiny ℓ = 4 part is beyond ell_max 3: the ℓ ≥ 1 part is the random detail alone
    assert np.linalg.norm(x[hi]) == pytest.approx(0.4 * np.linalg.norm(a * ball), rel=1e-3)
    with torch.no_grad():
        m2 = model.box_moments(torch.as_tensor(x), third=False)[1].reshape(-1)[cost.m2]
    assert float(0.1 / basis.L**2 * m2.sum()) == pytest.approx(float(cost.d2.sum()), rel=1e-10)
    np.testing.assert_array_equal(x, ball_start(model, cost, np.random.default_rng(7), 0.1, radius=3.0, spread=0.4))
    assert not np.array_equal(x, ball_start(model, cost, np.random.default_rng(8), 0.1, radius=3.0, spread=0.4))


def test_starts_of_a_symmetric_model_are_symmetric(basis, model):
    from cryomtd.basis.symmetry import symmetrize

    sym = SymmetricModel(model, "C4")
    data = expected_moments(
        basis, symmetrize(np.random.default_rng(2).standard_normal(basis.size), basis, "C4"), 0.1, 5
    )
    cost = _Cost(sym, crop_moments(data, 5), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
    for kind in ("ball", "random"):
        z = start_point(kind, sym, cost, np.random.default_rng(3), 0.1)
        assert z.shape == (sym.size,)
        c = sym.full(torch.as_tensor(z)).numpy()
        np.testing.assert_allclose(symmetrize(c, basis, "C4"), c, atol=1e-12)
        assert np.linalg.norm(c[np.asarray(basis.ell) > 0]) > 0
    with pytest.raises(ValueError, match="lsq.init"):
        start_point("sphere", sym, cost, np.random.default_rng(3), 0.1)


def test_random_start_is_the_scaled_standard_normal(basis, model):
    data = expected_moments(basis, np.random.default_rng(4).standard_normal(basis.size), 0.1, 5)
    cost = _Cost(model, crop_moments(data, 5), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
    x = random_start(model, cost, np.random.default_rng(5), 0.1)
    g = np.random.default_rng(5).standard_normal(basis.size)
    np.testing.assert_allclose(x / np.linalg.norm(x), g / np.linalg.norm(g), rtol=1e-12)
