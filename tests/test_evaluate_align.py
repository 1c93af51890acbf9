"""Alignment over O(3): hidden rotations and reflections are recovered; conventions pinned."""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd import rotations
from cryomtd.basis import SphericalBessel
from cryomtd.evaluate import align, transform_volume
from cryomtd.evaluate.align import coefficient_correlations, reflect_coefficients
from cryomtd.seeding import rng


def smooth_volume(L: int, seed: int, n_blobs: int = 6) -> np.ndarray:
    """A chiral sum of Gaussian blobs (σ = 1.6 voxels) inside radius L/3: smooth, no symmetry."""
    g = rng(seed, "test-align")
    c = np.arange(L) - L // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((L, L, L))
    for _ in range(n_blobs):
        d = g.standard_normal(3)
        px, py, pz = d / np.linalg.norm(d) * g.uniform(0.2, 1.0) * L / 3
        vol += g.uniform(0.5, 1.5) * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * 1.6**2))
    return vol


def angle_deg(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(A @ B.T) - 1) / 2, -1, 1))))


def test_transform_volume_convention():
    # docs/conventions.md: v_R(p) = v(Rᵀp); a blob at x = 4 rotated 90° about z lands at y = 4.
    L = 15
    vol = np.zeros((L, L, L))
    vol[7, 7, 7 + 4] = 1.0
    Rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about z: x̂ → ŷ
    out = transform_volume(vol, Rz, order=1)
    assert np.unravel_index(np.argmax(out), out.shape) == (7, 7 + 4, 7)
    # point reflection: x = 4 → x = −4; shift t = (0, 2, 0) moves it to y = +2
    out = transform_volume(vol, np.eye(3), reflected=True, shift=np.array([0.0, 2.0, 0.0]), order=1)
    assert np.unravel_index(np.argmax(out), out.shape) == (7, 7 + 2, 7 - 4)


def test_coefficient_correlations_match_rotated_inner_products():
    # Independent path: rotate the coefficients with basis.rotate, take the plain inner product.
    b = SphericalBessel(9, 4)
    g = rng(3, "test-align")
    est, ref = g.standard_normal(b.size), g.standard_normal(b.size)
    Rs = rotations.random(5, 4)
    want = np.array([b.rotate(est, R) @ ref for R in Rs])
    np.testing.assert_allclose(coefficient_correlations(est, ref, b, Rs), want, rtol=1e-10, atol=1e-10)
    # reflection = the point reflection of the evaluated volume (odd box: np.flip is p → −p)
    np.testing.assert_allclose(b.evaluate(reflect_coefficients(est, b)), np.flip(b.evaluate(est)), atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("seed,reflected", [(1, False), (2, False), (3, True)])
def test_align_recovers_hidden_rotation_and_reflection(seed, reflected):
    L = 21
    truth = smooth_volume(L, seed)
    R = rotations.random(1, seed + 10)[0]
    hidden = transform_volume(truth, R, reflected)  # hidden(p) = truth(±Rᵀp)
    al = align(hidden, truth)
    # tolerance 0.15: interpolation (cubic spline, applied twice) limits the error,
    # a wrong rotation gives ~1.
    rel = np.linalg.norm(al.volume - truth) / np.linalg.norm(truth)
    assert rel < 0.15
    assert al.reflected == reflected
    # the alignment undoes the hidden map: Q = Rᵀ (to well under a degree)
    assert angle_deg(al.rotation, R.T) < 1.0
    assert al.correlation > 0.98


@pytest.mark.slow
def test_align_coefficients_and_shift():
    # basis output (exact rotation of coefficients), then a sub-voxel translation on top
    L = 17
    b = SphericalBessel(L, 8)
    truth = b.evaluate(b.expand(smooth_volume(L, 5)))
    R = rotations.random(1, 21)[0]
    est_coef = b.rotate(b.expand(truth), R)
    al = align(b.evaluate(est_coef), truth, basis=b, est_coef=est_coef, output="basis")
    assert angle_deg(al.rotation, R.T) < 0.1
    assert np.linalg.norm(al.volume - truth) / np.linalg.norm(truth) < 1e-3  # exact up to BFGS tolerance
    t = np.array([1.3, -0.6, 0.4])
    moved = transform_volume(truth, np.eye(3), shift=t)
    al = align(moved, truth, basis=b, shift=True, reflections=False, grid_step=30.0)
    np.testing.assert_allclose(al.shift, -t, atol=0.05)  # spline-shifted input: sub-voxel, not exact
    assert np.linalg.norm(al.volume - truth) / np.linalg.norm(truth) < 0.05
    # all at once: hidden rotation, reflection and translation (centroid pre-centring)
    hidden = transform_volume(truth, R, reflected=True, shift=t)
    al = align(hidden, truth, basis=b, shift=True, grid_step=15.0)
    assert al.reflected and angle_deg(al.rotation, R.T) < 0.5
    assert np.linalg.norm(al.volume - truth) / np.linalg.norm(truth) < 0.05
