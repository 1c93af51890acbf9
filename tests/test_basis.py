"""cryomtd.basis.SphericalBessel: checked against independent definitions.

References used: scipy's complex spherical harmonics; sign changes of scipy's
spherical_jn; analytic Gaussians (rotation = moving the centres, projection along z
= a 2-D Gaussian of amplitude a·√(2π)σ); scipy.ndimage.map_coordinates real-space
rotation; a spherical product quadrature for continuous L² inner products.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from scipy.special import sph_harm_y, spherical_jn

from cryomtd import rotations
from cryomtd.basis import SphericalBessel, default_ell_max, real_sph_harm
from cryomtd.basis.bessel import spherical_jn_zeros
from cryomtd.io import InputError


def gaussian_blobs(L, n=5, radius=2.0, sigma=(1.2, 1.6), seed=0):
    """Smooth test volume well inside the ball, with its analytic description."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, 3))
    centres = u / np.linalg.norm(u, axis=1, keepdims=True) * rng.uniform(0, radius, (n, 1))
    sig = rng.uniform(*sigma, n)
    amp = rng.uniform(0.5, 1.5, n)
    return centres, sig, amp


def grid_xyz(L):
    ax = np.arange(L) - L // 2
    Z, Y, X = np.meshgrid(ax, ax, ax, indexing="ij")
    return np.stack([X, Y, Z], -1).astype(float)  # [z, y, x, (x, y, z)]


def blobs_volume(L, centres, sig, amp, R=None):
    """v_R(p) = v(Rᵀp) for a sum of Gaussians: the centres move to R·c (R defaults to the identity)."""
    R = np.eye(3) if R is None else R
    p = grid_xyz(L)
    return sum(a * np.exp(-((p - R @ c) ** 2).sum(-1) / (2 * s * s)) for c, s, a in zip(centres, sig, amp))


def blobs_projection(L, centres, sig, amp, R=None):
    """∫ v_R dz analytically: 2-D Gaussians of amplitude a·√(2π)σ at (R c)_xy; indexed [y, x]."""
    R = np.eye(3) if R is None else R
    ax = np.arange(L) - L // 2
    Y, X = np.meshgrid(ax, ax, indexing="ij")
    out = 0
    for c, s, a in zip(centres, sig, amp):
        cx, cy, _ = R @ c
        out = out + a * np.sqrt(2 * np.pi) * s * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * s * s))
    return out


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ----------------------------------------------------------------- building blocks
def test_real_harmonics_match_scipy_complex():
    pts = np.random.default_rng(0).standard_normal((40, 3))
    ell_max = 9
    Y = real_sph_harm(ell_max, pts)
    r = np.linalg.norm(pts, axis=1)
    theta, phi = np.arccos(pts[:, 2] / r), np.arctan2(pts[:, 1], pts[:, 0])
    cols = []
    for l in range(ell_max + 1):
        for m in range(-l, l + 1):
            Yc = sph_harm_y(l, abs(m), theta, phi)
            cols.append(Yc.real if m == 0 else np.sqrt(2) * (-1) ** m * (Yc.real if m > 0 else Yc.imag))
    assert np.abs(Y - np.stack(cols, -1)).max() < 1e-13  # float64 round-off of the recursion


def test_bessel_zeros_are_all_the_zeros():
    z_max = 30.0
    zeros = spherical_jn_zeros(8, z_max)
    x = np.linspace(1e-3, z_max, 300_001)
    for l, z in enumerate(zeros):
        assert np.abs(spherical_jn(l, z)).max() < 1e-14
        sign_changes = np.count_nonzero(np.diff(np.sign(spherical_jn(l, x))) != 0)
        assert sign_changes == z.size


def test_layout_and_sizes():
    b = SphericalBessel(12, 4)
    assert b.L == 12 and b.ell_max == 4
    assert b.ell.shape == b.s.shape == b.m.shape == (b.size,)
    assert b.size == sum(S * (2 * l + 1) for l, S in enumerate(b.n_radial))
    # ascending ℓ, then s, then m = −ℓ … ℓ
    key = b.ell * 10**6 + b.s * 10**3 + (b.m + b.ell)
    assert np.all(np.diff(key) > 0)
    for l, sl in enumerate(b.ell_slices):
        assert np.all(b.ell[sl] == l)
    # criterion: all zeros below πL/2 kept, none above
    assert all(z.max() < np.pi * 6 for z in b.zeros)
    assert default_ell_max(12) == SphericalBessel(12).ell_max
    first_next = spherical_jn_zeros(default_ell_max(12) + 1, 1e3)[-1][0]
    assert first_next >= np.pi * 6


def test_bad_input():
    with pytest.raises(InputError, match="ell_max"):
        SphericalBessel(8, 100)
    with pytest.raises(InputError, match="ell_max"):
        SphericalBessel(8, -1)
    with pytest.raises(InputError, match="L"):
        SphericalBessel(1.5)


def test_orthonormal_in_continuous_l2():
    # Gram matrix by a product quadrature in the ball (Gauss–Legendre in r, 40 nodes;
    # sphere rule exact to degree 2·ell_max), which is exact up to ~1e-12 for these
    # smooth functions: the basis must be orthonormal to that precision.
    L, ell_max = 8, 4
    b = SphericalBessel(L, ell_max)
    R = L / 2
    t, wr = np.polynomial.legendre.leggauss(40)
    r, wr = R * (t + 1) / 2, wr * R / 2
    x, wt = np.polynomial.legendre.leggauss(ell_max + 1)
    nphi = 2 * ell_max + 1
    phi = np.arange(nphi) * 2 * np.pi / nphi
    st = np.sqrt(1 - x**2)
    u = np.stack([np.outer(st, np.cos(phi)), np.outer(st, np.sin(phi)), np.repeat(x[:, None], nphi, 1)], -1).reshape(
        -1, 3
    )
    wu = np.repeat(wt * 2 * np.pi / nphi, nphi)
    pts = (r[:, None, None] * u[None]).reshape(-1, 3)
    w = (wr[:, None] * r[:, None] ** 2 * wu[None]).ravel()
    Phi = b.functions_at(pts)
    gram = Phi.T @ (Phi * w[:, None])
    assert np.abs(gram - np.eye(b.size)).max() < 1e-10


def test_voxel_gram_close_to_identity():
    # Sampled on the unit voxel grid the functions are only approximately orthonormal
    # (boundary of the ball, aliasing near Nyquist): a loose check that sizes agree.
    b = SphericalBessel(10)
    vols = b.evaluate(np.eye(b.size)).reshape(b.size, -1)
    gram = vols @ vols.T
    assert np.abs(np.diag(gram) - 1).max() < 0.35
    eig = np.linalg.eigvalsh(gram)  # measured [0.77, 1.46]: well conditioned → CG in expand converges fast
    assert eig.min() > 0.5 and eig.max() < 2.0


# ----------------------------------------------------------------------- expand
def test_expand_inverts_evaluate():
    b = SphericalBessel(12, 6)
    c = np.random.default_rng(3).standard_normal(b.size)
    assert np.abs(b.expand(b.evaluate(c)) - c).max() < 1e-7  # CG to rtol 1e-10


def test_expansion_error_falls_with_ell_max_and_norm_is_kept():
    L = 16
    blobs = gaussian_blobs(L)
    vol = blobs_volume(L, *blobs)
    errors = []
    for ell_max in (1, 2, 4, 6, 8):
        b = SphericalBessel(L, ell_max)
        c = b.expand(vol)
        errors.append(rel(b.evaluate(c), vol))
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:])), errors
    assert errors[0] > 0.05 and errors[-1] < 1e-3
    # ‖coef‖₂ ≈ ‖vol‖₂ for a volume the basis represents (orthonormal in continuous L²,
    # voxel sum = Riemann sum of a smooth function).
    assert abs(np.linalg.norm(c) / np.linalg.norm(vol) - 1) < 1e-4


# -------------------------------------------------------------------- rotations
def test_wigner_orthogonal_group_law_identity():
    b = SphericalBessel(12, 7)
    R = rotations.random(6, 2)
    D = b.wigner(R)
    D12 = b.wigner(R[:3] @ R[3:])
    DI = b.wigner(np.eye(3))
    for l in range(b.ell_max + 1):
        eye = np.eye(2 * l + 1)
        assert D[l].shape == (6, 2 * l + 1, 2 * l + 1)
        assert np.abs(np.einsum("nij,nkj->nik", D[l], D[l]) - eye).max() < 1e-12
        assert np.abs(D12[l] - D[l][:3] @ D[l][3:]).max() < 1e-12
        assert np.abs(DI[l][0] - eye).max() < 1e-13


@pytest.mark.parametrize("L, ell_max", [(12, 6), (20, 25)])
def test_wigner_definition_on_harmonics(L, ell_max):
    # Definition: Σ_m c'_m Y_m(u) = Σ_m c_m Y_m(Rᵀu)  ⇔  Y(Rᵀu) = D(R)ᵀ Y(u) at every point u.
    # ℓ up to 25 checks that the recursion stays accurate at high degree.
    b = SphericalBessel(L, ell_max)
    R = rotations.random(3, 4)
    u = np.random.default_rng(5).standard_normal((25, 3))
    D = b.wigner(R)
    for n in range(3):
        Yrot = real_sph_harm(ell_max, u @ R[n])  # rows: Y(Rᵀu)
        Y = real_sph_harm(ell_max, u)
        for l in range(ell_max + 1):
            sl = slice(l * l, (l + 1) ** 2)
            assert np.abs(Yrot[:, sl] - Y[:, sl] @ D[l][n]).max() < 1e-11


def test_blob_at_x4_rotated_90_about_z_lands_at_y4():
    L = 16
    c0 = L // 2
    b = SphericalBessel(L)
    vol = blobs_volume(L, np.array([[4.0, 0, 0]]), [1.3], [1.0])
    coef = b.expand(vol)
    Rz90 = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])  # active: x̂ → ŷ
    rotated = b.evaluate(b.rotate(coef, Rz90))
    assert np.unravel_index(rotated.argmax(), rotated.shape) == (c0, c0 + 4, c0)
    image = b.project(coef, Rz90)
    assert image.shape == (L, L)
    assert np.unravel_index(image.argmax(), image.shape) == (c0 + 4, c0)
    # Euler angles: RELION rot = −90° is this rotation.
    assert np.allclose(rotations.euler_to_matrix(-90, 0, 0), Rz90, atol=1e-15)


def test_coefficient_rotation_matches_real_space_rotation():
    L = 16
    blobs = gaussian_blobs(L, seed=1)
    b = SphericalBessel(L)
    coef = b.expand(blobs_volume(L, *blobs))
    R = rotations.random(3, 6)
    rotated = b.evaluate(b.rotate(coef, R))
    assert rotated.shape == (3, L, L, L)
    vol = b.evaluate(coef)
    p = grid_xyz(L).reshape(-1, 3)
    for n in range(3):
        # analytic: the blobs move to R c. Tolerance: expansion error (~3e-4 here) ×3.
        assert rel(rotated[n], blobs_volume(L, *blobs, R=R[n])) < 1e-3
        # real-space rotation of the sampled volume by cubic splines (its own ~1–2 % error)
        coords = (p @ R[n])[:, ::-1].T + L // 2  # Rᵀp in (z, y, x) array coordinates
        ref = map_coordinates(vol, coords, order=3, mode="constant").reshape(vol.shape)
        assert rel(rotated[n], ref) < 0.05


# ------------------------------------------------------------------- projection
@pytest.mark.parametrize("L", [14, 17])
def test_projection_matches_analytic_and_voxel_sums(L):
    blobs = gaussian_blobs(L, radius=L / 8, seed=L)
    b = SphericalBessel(L)
    coef = b.expand(blobs_volume(L, *blobs))
    R = rotations.random(4, 8)
    images = b.project(coef, R)
    assert images.shape == (4, L, L)
    for n in range(4):
        # tolerance 1e-3: expansion error of these blobs is ~3e-4
        assert rel(images[n], blobs_projection(L, *blobs, R=R[n])) < 1e-3
    # real-space reference: rotate the voxel volume by cubic splines, sum along z
    # (tolerance 5e-3: spline interpolation error of σ ≥ 1.2-voxel blobs, measured ~5e-4)
    vol = b.evaluate(coef)
    p = grid_xyz(L).reshape(-1, 3)
    for n in range(2):
        coords = (p @ R[n])[:, ::-1].T + L // 2
        ref = map_coordinates(vol, coords, order=3, mode="constant").reshape(vol.shape).sum(axis=0)
        assert rel(images[n], ref) < 5e-3
    # at R = I: Ψ c ≈ Σ_z evaluate(c) (line integral vs voxel sum of a smooth volume)
    assert rel(b.project(coef, np.eye(3)), b.evaluate(coef).sum(axis=0)) < 1e-3
    # projection_matrix contract
    Psi = b.projection_matrix
    assert Psi.shape == (L * L, b.size) and Psi.dtype == np.float64
    assert np.allclose(Psi @ coef, b.project(coef, np.eye(3)).ravel())


def test_projection_quadrature_converged():
    from cryomtd.basis.spherical_bessel import _n_chord_nodes, _projection_matrix

    L = 12
    b = SphericalBessel(L)
    Psi2 = _projection_matrix(L, b.ell_max, 2 * _n_chord_nodes(L))
    assert np.abs(b.projection_matrix - Psi2).max() < 1e-12 * np.abs(Psi2).max() * 100


def test_project_batch_equals_dense_definition():
    # project skips the zero columns of Ψ (ℓ+|m| odd); compare with the plain Ψ·rotate(c, R)
    b = SphericalBessel(12, 7)
    coef = np.random.default_rng(9).standard_normal(b.size)
    R = rotations.random(5, 10)
    dense = b.rotate(coef, R) @ b.projection_matrix.T
    assert np.abs(b.project(coef, R).reshape(5, -1) - dense).max() < 1e-12
    assert np.abs(b.project(coef, R[2]) - dense[2].reshape(12, 12)).max() < 1e-12
    odd = (b.ell + np.abs(b.m)) % 2 == 1
    assert np.abs(b.projection_matrix[:, odd]).max() == 0.0


@pytest.mark.parametrize("ell", [1, 2, 3])
def test_so3_quadrature_integrates_wigner_products(ell):
    # Schur orthogonality: ∫ D^ℓ_{ab} D^ℓ'_{cd} dR = δ_ℓℓ' δ_ac δ_bd / (2ℓ+1); the integrand has
    # degree ℓ+ℓ', so the rule of degree 2ℓ is exact and the rule of degree ℓ is not.
    b = SphericalBessel(12, ell)
    R, w = rotations.so3_quadrature(2 * ell)
    D = b.wigner(R)
    k = 2 * ell + 1
    gram = np.einsum("n,nab,ncd->abcd", w, D[ell], D[ell])
    assert np.abs(gram - np.einsum("ac,bd->abcd", np.eye(k), np.eye(k)) / k).max() < 1e-13
    assert np.abs(np.einsum("n,nab->ab", w, D[ell])).max() < 1e-13
    R, w = rotations.so3_quadrature(ell)
    D = b.wigner(R)
    gram = np.einsum("n,nab,ncd->abcd", w, D[ell], D[ell])
    assert np.abs(gram - np.einsum("ac,bd->abcd", np.eye(k), np.eye(k)) / k).max() > 1e-3


def test_rotate_equals_wigner_blocks_including_poles():
    # rotate() uses the Euler factorisation Z(psi) D(Q) Z(tilt) D(Q)ᵀ Z(rot); the reference is
    # the Wigner matrices of the recursion applied block by block. Poles and near-poles
    # (tilt 0, 180°, 1e-9°, 1e-5°) exercise the fallback for ill-conditioned Euler angles.
    b = SphericalBessel(14)
    coef = np.random.default_rng(12).standard_normal(b.size)
    R = np.concatenate(
        [
            rotations.random(20, 13),
            rotations.euler_to_matrix([10, 20, 30, 40, 50], [0, 180, 1e-9, 1e-5, 180 - 1e-6], [5, 6, 7, 8, 9]),
            np.eye(3)[None],
        ]
    )
    D = b.wigner(R)
    ref = np.concatenate(
        [
            np.einsum("nij,sj->nsi", D[l], coef[sl].reshape(-1, 2 * l + 1)).reshape(len(R), -1)
            for l, sl in enumerate(b.ell_slices)
        ],
        axis=1,
    )
    assert np.abs(b.rotate(coef, R) - ref).max() < 1e-12
    assert np.abs(b.rotate(coef, R[3]) - ref[3]).max() < 1e-12
