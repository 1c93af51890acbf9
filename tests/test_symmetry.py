"""Tests of point groups and symmetric subspaces (cryomtd.basis.symmetry).

Independent references: group orders and closure from the definition; invariance checked
by evaluating the basis functions at rotated points (``functions_at``, no Wigner
matrices) and on the voxel grid by an exact 90° permutation (``np.rot90``); subspace
dimensions against counting (Cn) and the Molien series of O and I.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.basis import SphericalBessel
from cryomtd.basis.symmetry import parse_symmetry, point_group, symmetric_subspace, symmetrize
from cryomtd.io import InputError


@pytest.mark.parametrize(
    "symbol,order", [("C1", 1), ("C4", 4), ("c7", 7), ("D2", 4), ("D5", 10), ("T", 12), ("O", 24), ("I", 60)]
)
def test_point_groups_are_closed_groups_of_rotations(symbol, order):
    G = point_group(symbol)
    assert G.shape == (order, 3, 3)
    np.testing.assert_allclose(G[0], np.eye(3))
    np.testing.assert_allclose(G @ G.transpose(0, 2, 1), np.broadcast_to(np.eye(3), G.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(G), 1.0, atol=1e-12)
    prods = (G[:, None] @ G[None]).reshape(-1, 1, 9)
    dist = np.abs(prods - G.reshape(1, -1, 9)).max(axis=2)  # every product is an element
    assert np.all(dist.min(axis=1) < 1e-9)
    assert np.all(
        np.abs(G.reshape(order, 1, 9) - G.reshape(1, order, 9)).max(axis=2) + np.eye(order) > 1e-6
    )  # distinct


def test_group_axes_follow_the_documented_conventions():
    # Cn about z: the z axis is fixed by all elements; Dn: a 2-fold about x maps z to -z
    z = np.array([0.0, 0, 1])
    np.testing.assert_allclose(point_group("C6") @ z, np.tile(z, (6, 1)), atol=1e-12)
    D = point_group("D3")
    flips = D[np.isclose((D @ z)[:, 2], -1)]
    assert len(flips) == 3 and any(np.allclose(f @ [1.0, 0, 0], [1, 0, 0]) for f in flips)
    # I: a 5-fold about (0, 1, phi) is in the group
    phi = (1 + 5**0.5) / 2
    u = np.array([0, 1, phi]) / np.linalg.norm([0, 1, phi])
    I = point_group("I")
    fixes_u = I[np.all(np.isclose(I @ u, u), axis=1)]
    assert len(fixes_u) == 5


@pytest.mark.parametrize("bad", ["D1", "C0", "X", "C", "I2", "", "C-3"])
def test_bad_symbols_are_refused_with_the_accepted_forms(bad):
    with pytest.raises(InputError, match=r"symmetry: expected C<n>"):
        parse_symmetry(bad)


@pytest.mark.parametrize("symbol", ["C3", "D2", "T", "O"])
def test_symmetric_volumes_are_invariant_at_rotated_points(symbol):
    # v(gᵀp) = v(p) for every g, evaluating the basis functions directly at rotated points
    b = SphericalBessel(9, 4)
    Q = symmetric_subspace(b, symbol)
    np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-12)
    c = Q @ np.random.default_rng(0).standard_normal(Q.shape[1])
    p = np.random.default_rng(1).uniform(-3, 3, size=(200, 3))
    v = b.functions_at(p) @ c
    for g in point_group(symbol):
        np.testing.assert_allclose(b.functions_at(p @ g) @ c, v, atol=1e-10 * np.abs(v).max())


@pytest.mark.parametrize("symbol", ["C2", "D3", "T"])
def test_symmetrize_is_the_group_average_of_the_volume(symbol):
    # projection onto the subspace = mean over g of the volume read at gᵀp (completeness:
    # every symmetric volume is in the span, not only some)
    b = SphericalBessel(9, 4)
    c = np.random.default_rng(2).standard_normal(b.size)
    p = np.random.default_rng(3).uniform(-3, 3, size=(150, 3))
    avg = np.mean([b.functions_at(p @ g) @ c for g in point_group(symbol)], axis=0)
    np.testing.assert_allclose(b.functions_at(p) @ symmetrize(c, b, symbol), avg, atol=1e-10 * np.abs(avg).max())


def test_c4_volume_is_invariant_under_the_voxel_rotation():
    # on the voxel grid [z, y, x] (odd L: the centre voxel is the array centre) a 90° turn
    # about z is an exact permutation of voxels
    b = SphericalBessel(11, 5)
    Q = symmetric_subspace(b, "C4")
    vol = b.evaluate(Q @ np.random.default_rng(4).standard_normal(Q.shape[1]))
    np.testing.assert_allclose(np.rot90(vol, 1, axes=(1, 2)), vol, atol=1e-12 * np.abs(vol).max())
    asym = b.evaluate(np.random.default_rng(5).standard_normal(b.size))
    assert np.abs(np.rot90(asym, 1, axes=(1, 2)) - asym).max() > 0.1 * np.abs(asym).max()


def test_subspace_dimensions_match_counting_and_molien_series():
    b = SphericalBessel(40, 12)
    per_ell = {
        s: [
            int(np.any(symmetric_subspace(b, s)[sl] != 0, axis=0).sum()) // int(S)
            for sl, S in zip(b.ell_slices, b.n_radial)
        ]
        for s in ("C3", "O", "I")
    }
    # Cn about z: the real harmonics with |m| a multiple of n (m = 0 once, ±m twice)
    assert per_ell["C3"] == [sum(1 for m in range(-l, l + 1) if m % 3 == 0) for l in range(13)]
    # Molien series: O has invariants in degrees 0, 4, 6, 8, 9, 10, 12 (twice); I in 0, 6, 10, 12
    assert per_ell["O"] == [1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 2]
    assert per_ell["I"] == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1]
    np.testing.assert_array_equal(symmetric_subspace(b, "C1"), np.eye(b.size))


def test_subspace_of_a_prefix_basis_is_the_leading_block():
    # frequency marching keeps the reduced coefficients of the lower stage as a prefix
    full, low = SphericalBessel(12, 5), SphericalBessel(12, 3)
    Qf, Ql = symmetric_subspace(full, "D2"), symmetric_subspace(low, "D2")
    np.testing.assert_array_equal(Qf[: low.size, : Ql.shape[1]], Ql)
    assert not Qf[low.size :, : Ql.shape[1]].any()
