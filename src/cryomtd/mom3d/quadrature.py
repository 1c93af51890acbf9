"""Exact SO(3) quadrature on a structured ZYZ Euler grid (docs/design.md §9).

The expected moments are SO(3) averages of polynomials of degree ≤ 3·ell_max in the
Wigner-D entries of the rotation. On RELION ZYZ angles R = Rz(psi)·Ry(tilt)·Rz(rot)
such a polynomial is a trigonometric polynomial of degree ≤ 3·ell_max in rot and psi
and, after the rot/psi averages, a polynomial of degree ≤ 3·ell_max in cos(tilt).
So the rule

* rot: ``n_rot ≥ 3·ell_max + 1`` uniform angles,
* tilt: ``ceil((3·ell_max + 1)/2)`` Gauss–Legendre nodes in cos(tilt),
* psi: ``n_psi`` uniform angles, ``n_psi ≥ 3·ell_max + 1`` and a multiple of 4,

is exact. ``n_psi`` is a multiple of 4 so that the in-plane angles come in quadruples
ψ, ψ+90°, ψ+180°, ψ+270°: projections at those angles are exact 90° pixel rotations of
each other, which :mod:`cryomtd.mom3d.model` uses to form only a quarter of the
projections (``quarter=True``).

``mirror=True`` halves the rule once more: the node (rot+180°, 180°−tilt, 180°−psi) is
the rotation Ry(180°)·R (x → −x, z → −z), whose projection along z is the mirror image
x → −x of the projection at R. The Gauss–Legendre nodes are symmetric under
cos(tilt) → −cos(tilt), the uniform rot grid (made even) under rot → rot+180° and the psi
grid under psi → 180°−psi, so the nodes with cos(tilt) > 0 (and those with cos(tilt) = 0
at half weight) represent all others; the model then symmetrises over mirrored lags.

Rotation matrices come from :func:`cryomtd.rotations.euler_to_matrix`
(the one place of the Euler convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["EulerQuadrature", "euler_quadrature", "orbit_angles"]


@dataclass(frozen=True)
class EulerQuadrature:
    """A product rule over (rot, tilt, psi); arrays are flattened with psi fastest.

    ``angles`` (n, 3) radians (rot, tilt, psi); ``weights`` (n,) summing to 1 over the
    *full* rule; ``n_psi`` in-plane angles in the full rule; ``quarter`` True when only
    psi ∈ [0°, 90°) is listed (weights then sum to 1/4: the other three quarters are
    exact 90° image rotations of these); ``mirror`` True when only cos(tilt) ≥ 0 is
    listed (weights halve again: the rest are mirror images of these).
    """

    angles: np.ndarray
    weights: np.ndarray
    n_psi: int
    quarter: bool
    mirror: bool = False

    @property
    def size(self) -> int:
        return int(self.weights.size)

    def matrices(self) -> np.ndarray:
        """Rotation matrices (n, 3, 3) of the rule, RELION ZYZ convention."""
        from cryomtd.rotations import euler_to_matrix

        a = self.angles
        return np.asarray(euler_to_matrix(a[:, 0], a[:, 1], a[:, 2], degrees=False), dtype=np.float64)


def euler_quadrature(degree: int, *, quarter: bool = False, mirror: bool = False) -> EulerQuadrature:
    """The exact rule for SO(3) polynomials of degree ≤ ``degree`` (use 3·ell_max for a³).

    With ``quarter=True`` only the in-plane angles in [0°, 90°) are returned; with
    ``mirror=True`` only the tilts with cos(tilt) ≥ 0 (cos(tilt) = 0 at half weight).
    """
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    n_rot = degree + 1
    if mirror:
        n_rot += n_rot % 2  # rot → rot + 180° must map the grid to itself
    n_tilt = max(1, math.ceil((degree + 1) / 2))
    n_psi = 4 * math.ceil((degree + 1) / 4)
    rot = 2 * np.pi * np.arange(n_rot) / n_rot
    x, wx = np.polynomial.legendre.leggauss(n_tilt)
    if mirror:
        keep = x >= 0  # Gauss–Legendre nodes are symmetric: x = 0 only at odd n_tilt, a self-mirror node
        x, wx = x[keep], np.where(x[keep] == 0, 0.5, 1.0) * wx[keep]
    tilt = np.arccos(x)
    psi = 2 * np.pi * np.arange(n_psi) / n_psi
    if quarter:
        psi = psi[: n_psi // 4]
    A, T, P = np.meshgrid(rot, tilt, psi, indexing="ij")
    W = np.broadcast_to((wx / 2)[None, :, None], A.shape) / (n_rot * n_psi)
    angles = np.stack([A.ravel(), T.ravel(), P.ravel()], axis=1)
    return EulerQuadrature(
        angles=angles, weights=np.ascontiguousarray(W.ravel()), n_psi=n_psi, quarter=quarter, mirror=mirror
    )


def orbit_angles(angles: np.ndarray, k: int, mirrored: bool) -> np.ndarray:
    """Euler angles (n, 3) of the nodes that ``angles`` (n, 3) stand for: psi + k·90°, then
    (with ``mirrored``) the map (rot, tilt, psi) → (rot+180°, 180°−tilt, 180°−psi)."""
    a = np.array(angles, dtype=np.float64)
    a[:, 2] += k * np.pi / 2
    if mirrored:
        a = np.stack([a[:, 0] + np.pi, np.pi - a[:, 1], np.pi - a[:, 2]], axis=1)
    return a
