"""cryomtd.rotations: Haar sampling, RELION Euler angles, HEALPix grid, exact SO(3) quadrature."""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd import rotations


def _rz_active(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _ry_active(b):
    c, s = np.cos(b), np.sin(b)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _is_rotation(R, tol=1e-12):
    eye = np.einsum("nij,nkj->nik", R, R)
    return np.abs(eye - np.eye(3)).max() < tol and np.abs(np.linalg.det(R) - 1).max() < tol


def test_euler_matches_relion_formula():
    # RELION's Euler_angles2matrix written out entry by entry (src/euler.cpp).
    rng = np.random.default_rng(1)
    rot, tilt, psi = rng.uniform(-180, 180, 3)
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    A = np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )
    assert np.allclose(rotations.euler_to_matrix(rot, tilt, psi), A, atol=1e-14)
    # ... which is the product of the transposed (passive) elementary rotations.
    ref = _rz_active(g).T @ _ry_active(b).T @ _rz_active(a).T
    assert np.allclose(A, ref, atol=1e-14)


def test_euler_shapes_and_rot_only():
    assert rotations.euler_to_matrix(0, 0, 0).shape == (3, 3)
    assert rotations.euler_to_matrix([0, 1], 0, 0).shape == (2, 3, 3)
    # rot = 90°: x̂ goes to −ŷ (RELION's matrices rotate clockwise about z).
    R = rotations.euler_to_matrix(90, 0, 0)
    assert np.allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-15)


def test_euler_round_trip_including_poles():
    R = rotations.random(500, 3)
    ang = rotations.matrix_to_euler(R)
    assert ang.shape == (500, 3)
    assert np.allclose(rotations.euler_to_matrix(*ang.T), R, atol=1e-12)
    assert np.all((ang[:, 1] >= 0) & (ang[:, 1] <= 180))
    poles = rotations.euler_to_matrix([10.0, -30.0, 25.0], [0.0, 180.0, 180.0], [40.0, 70.0, -100.0])
    back = rotations.euler_to_matrix(*rotations.matrix_to_euler(poles).T)
    assert np.allclose(back, poles, atol=1e-12)


def test_random_is_haar():
    # For Haar R: E[R] = 0 and tr R is the character of the irreducible ℓ = 1
    # representation, so E[tr R] = 0, E[(tr R)²] = 1, E[(tr R)³] = 1. n = 40 000 gives a
    # standard error ≤ 0.012 on each (Var(tr³) ≈ 5); 5 standard errors = 0.06.
    R = rotations.random(40_000, np.random.default_rng(7))
    assert _is_rotation(R)
    assert np.abs(R.mean(axis=0)).max() < 0.02
    tr = np.trace(R, axis1=1, axis2=2)
    assert abs(tr.mean()) < 0.03
    assert abs((tr**2).mean() - 1) < 0.04
    assert abs((tr**3).mean() - 1) < 0.06
    # rotation angle θ of a Haar rotation has density (1 − cos θ)/π on [0, π]: CDF (θ − sin θ)/π
    from scipy.stats import kstest

    theta = np.arccos(np.clip((tr - 1) / 2, -1, 1))
    assert kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue > 1e-3
    # ... and the Gaussian-quaternion construction is not fooled by e.g. uniform Euler angles
    naive = rotations.euler_to_matrix(
        *np.random.default_rng(8).uniform([-180, 0, -180], [180, 180, 180], (40_000, 3)).T
    )
    theta_naive = np.arccos(np.clip((np.trace(naive, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert kstest(theta_naive, lambda t: (t - np.sin(t)) / np.pi).pvalue < 1e-6
    # same seed, same rotations
    assert np.array_equal(rotations.random(4, 11), rotations.random(4, 11))


# E[(tr R)^k] over Haar = multiplicity of the trivial representation in (ℓ=1)^{⊗k}
# = Riordan numbers 1, 0, 1, 1, 3, 6, 15, 36, 91.
RIORDAN = [1, 0, 1, 1, 3, 6, 15, 36, 91]


@pytest.mark.parametrize("degree", [1, 2, 3, 4, 6, 8])
def test_so3_quadrature_is_exact_up_to_degree(degree):
    R, w = rotations.so3_quadrature(degree)
    assert R.shape == (w.size, 3, 3) and _is_rotation(R)
    assert w.size == (degree + 1) ** 2 * ((degree + 2) // 2)  # e.g. degree 15 (3·ℓmax, ℓmax = 5): 2048
    assert np.all(w > 0) and abs(w.sum() - 1) < 1e-14
    tr = np.trace(R, axis1=1, axis2=2)
    for k in range(degree + 1):
        assert abs(w @ tr**k - RIORDAN[k]) < 1e-11, k
    # every degree-≤d monomial: E[R_ij R_kl] = δ_ik δ_jl / 3 (d ≥ 2)
    if degree >= 2:
        second = np.einsum("n,nij,nkl->ijkl", w, R, R)
        assert np.allclose(second, np.einsum("ik,jl->ijkl", np.eye(3), np.eye(3)) / 3, atol=1e-13)


def _degree_d_probes(R, d):
    """Two degree-d polynomials in R with known Haar means: (R20 + iR21)^d = sin^d(tilt) e^{i d rot}
    (mean 0) and R22^d = cos^d(tilt) (mean 1/(d+1) for even d, 0 for odd d)."""
    return (R[:, 2, 0] + 1j * R[:, 2, 1]) ** d, R[:, 2, 2] ** d


@pytest.mark.parametrize("degree", [1, 2, 3, 5, 8])
def test_so3_quadrature_exact_at_and_fails_above_degree(degree):
    exact_z = (1.0 / (degree + 1)) if degree % 2 == 0 else 0.0
    R, w = rotations.so3_quadrature(degree)
    a, b = _degree_d_probes(R, degree)
    assert abs(w @ a) < 1e-12 and abs(w @ b - exact_z) < 1e-12
    # One degree lower, the uniform rot rule (degree points) aliases e^{i d rot} to 1.
    R, w = rotations.so3_quadrature(degree - 1)
    a, b = _degree_d_probes(R, degree)
    assert abs(w @ a) > 1e-3
    if degree % 2 == 0:  # Gauss–Legendre with degree/2 nodes misses x^degree
        assert abs(w @ b - exact_z) > 1e-3


def test_grid_size_and_uniformity():
    for step, nside in [(60, 1), (30, 2), (15, 4), (20, 3)]:
        G = rotations.grid(step)
        assert G.shape == (72 * nside**3, 3, 3) == (rotations.grid_size(step), 3, 3)
        assert _is_rotation(G)
    G = rotations.grid(15)
    # quasi-uniform: averages of degree-1 and degree-2 functions close to the Haar values
    assert np.abs(G.mean(axis=0)).max() < 1e-10  # psi uniform → exact
    tr = np.trace(G, axis1=1, axis2=2)
    assert abs((tr**2).mean() - 1) < 0.02
    # covering: every Haar-random rotation is within ~ the step of a grid point
    probe = rotations.random(200, 5)
    cosang = (np.einsum("nij,mij->nm", probe, G) - 1) / 2  # cos of the relative angle
    worst = np.rad2deg(np.arccos(np.clip(cosang.max(axis=1), -1, 1))).max()
    assert worst < 15
