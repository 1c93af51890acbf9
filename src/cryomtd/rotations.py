"""Rotations of 3-D space: Haar sampling, RELION Euler angles, grids and exact SO(3) quadrature.

Convention (the one place it is written; see docs/conventions.md and docs/basis.md)
-----------------------------------------------------------------------------------
A rotation is a 3×3 matrix ``R`` acting on column vectors p = (x, y, z) measured in
voxels from the centre voxel. It rotates a volume as v_R(p) = v(Rᵀ p); the image at
``R`` is Σ_z v_R[z, y, x].

Euler angles are RELION's ZYZ triple (rot, tilt, psi):

    R = Rz(psi) · Ry(tilt) · Rz(rot),
    Rz(a) = [[cos a, sin a, 0], [-sin a, cos a, 0], [0, 0, 1]],
    Ry(b) = [[cos b, 0, -sin b], [0, 1, 0], [sin b, 0, cos b]],

which is exactly the matrix of RELION's ``Euler_angles2matrix`` (and of the
``rlnAngleRot/Tilt/Psi`` columns of a STAR file). RELION forms a projection by reading
the volume at Aᵀ·(x, y, 0), i.e. image(q) = v(Aᵀ q), so RELION's ``A`` is our ``R``: a
particle simulated with ``R`` and written with ``matrix_to_euler(R)`` is reconstructed
by RELION in the orientation of the truth.

All functions are vectorised over a leading axis and return float64 arrays.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["random", "euler_to_matrix", "matrix_to_euler", "grid", "grid_size", "nearest", "so3_quadrature"]


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(int(seed))


def random(n: int, seed: int | np.random.Generator) -> np.ndarray:
    """``n`` rotations drawn from the Haar (uniform) measure on SO(3), shape (n, 3, 3).

    ``seed`` is an integer or a ``numpy.random.Generator`` (pass
    ``cryomtd.seeding.rng(seed, stage, index)`` inside the workflow). Uses normalised
    4-D Gaussian vectors (uniform unit quaternions, a double cover of the Haar measure).
    """
    q = _generator(seed).standard_normal((int(n), 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return _quaternion_to_matrix(q)


def _quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z), shape (n, 4), → active rotation matrices (n, 3, 3)."""
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def euler_to_matrix(rot: npt.ArrayLike, tilt: npt.ArrayLike, psi: npt.ArrayLike, degrees: bool = True) -> np.ndarray:
    """RELION ZYZ Euler angles → rotation matrices R = Rz(psi)·Ry(tilt)·Rz(rot) (module docstring).

    Angles broadcast against each other; the result has shape ``broadcast_shape + (3, 3)``
    (so (3, 3) for scalars, (n, 3, 3) for length-n arrays).
    """
    a, b, g = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (rot, tilt, psi)))
    if degrees:
        a, b, g = np.deg2rad(a), np.deg2rad(b), np.deg2rad(g)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.stack(
        [
            np.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], -1),
            np.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], -1),
            np.stack([sc, ss, cb], -1),
        ],
        -2,
    )


def matrix_to_euler(R: npt.ArrayLike, degrees: bool = True) -> np.ndarray:
    """Rotation matrices (3, 3) or (n, 3, 3) → RELION (rot, tilt, psi), shape (n, 3).

    tilt ∈ [0, 180°], rot and psi ∈ (−180°, 180°]. At the poles (sin tilt ≈ 0) only
    rot ± psi is defined; rot is set to 0 there (RELION does the same).
    """
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    cb = np.clip(R[:, 2, 2], -1.0, 1.0)
    sb = np.hypot(R[:, 2, 0], R[:, 2, 1])
    tilt = np.arctan2(sb, cb)
    regular = sb > 16 * np.finfo(np.float64).eps
    rot = np.where(regular, np.arctan2(R[:, 2, 1], R[:, 2, 0]), 0.0)
    psi_regular = np.arctan2(R[:, 1, 2], -R[:, 0, 2])
    # tilt = 0: R = Rz(psi + rot); tilt = pi: R = Rz(psi) diag(-1, 1, -1) Rz(rot).
    psi_pole = np.where(cb > 0, np.arctan2(R[:, 0, 1], R[:, 0, 0]), np.arctan2(R[:, 0, 1], -R[:, 0, 0]))
    psi = np.where(regular, psi_regular, psi_pole)
    out = np.stack([rot, tilt, psi], -1)
    return np.rad2deg(out) if degrees else out


def _healpix_nside(step_degrees: float) -> int:
    if not step_degrees > 0:
        raise ValueError(f"step_degrees must be positive, got {step_degrees}")
    return max(1, math.ceil(60.0 / float(step_degrees) - 1e-9))


def grid_size(step_degrees: float) -> int:
    """Number of rotations of ``grid(step_degrees)``: 72·nside³ with nside = ⌈60°/step⌉."""
    return 72 * _healpix_nside(step_degrees) ** 3


def grid(step_degrees: float) -> np.ndarray:
    """Quasi-uniform rotation grid: HEALPix viewing directions × uniform in-plane angles.

    nside = ⌈60°/step⌉ (HEALPix RING scheme, any positive integer); the 12·nside²
    pixel centres give (tilt, rot) = (θ, φ), and psi takes 6·nside values
    k·60°/nside. The achieved step is 60°/nside ≤ ``step_degrees`` — for
    step = 60°/2^k (15°, 7.5°, 3.75°, …) exactly RELION's healpix_order k sampling.
    Size: 72·nside³ (15° → 4 608, 10° → 15 552, 7.5° → 36 864). Returns (n, 3, 3),
    ordered direction-major, psi fastest.
    """
    import healpy

    nside = _healpix_nside(step_degrees)
    theta, phi = healpy.pix2ang(nside, np.arange(12 * nside * nside))
    psi = np.arange(6 * nside) * (2 * np.pi / (6 * nside))
    rot = np.repeat(phi, psi.size)
    tilt = np.repeat(theta, psi.size)
    return euler_to_matrix(rot, tilt, np.tile(psi, phi.size), degrees=False)


def nearest(rotations: npt.ArrayLike, grid_rotations: npt.ArrayLike, chunk: int = 4096) -> np.ndarray:
    """(n,) int: for each of ``rotations`` (n, 3, 3) the index of the closest of ``grid_rotations``
    (m, 3, 3) in geodesic angle (largest |⟨q, g⟩| of unit quaternions; ties to the lower index).
    Memory O(chunk·m): chunks of ``chunk`` rotations."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(np.asarray(rotations, dtype=np.float64)).as_quat()
    g = Rotation.from_matrix(np.asarray(grid_rotations, dtype=np.float64)).as_quat()
    out = np.zeros(len(q), dtype=np.int64)
    for i in range(0, len(q), chunk):  # chunks bound the (chunk, m) product, not a per-rotation loop
        out[i : i + chunk] = np.abs(q[i : i + chunk] @ g.T).argmax(axis=1)
    return out


def so3_quadrature(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact quadrature on SO(3) (normalised Haar measure) for band-limit ``degree``.

    Integrates exactly every polynomial of degree ≤ ``degree`` in the entries of R —
    equivalently every Wigner-D entry D^ℓ_{mn}(R) with ℓ ≤ degree (docs/design.md §5). Nodes:
    rot and psi uniform with n_a = degree + 1 points each, cos(tilt) at
    n_b = ⌈(degree + 1)/2⌉ Gauss–Legendre nodes. Returns (R (n, 3, 3), weights (n,))
    with n = n_a²·n_b, weights positive and summing to 1; order rot-major, then tilt,
    then psi.

    Why exact: averaging over rot and psi keeps only D^ℓ_{00}(R) = P_ℓ(cos tilt) (the
    uniform rule integrates e^{imα} exactly for |m| ≤ degree), a polynomial of degree
    ℓ ≤ 2n_b − 1 in cos(tilt), which Gauss–Legendre integrates exactly.
    """
    degree = int(degree)
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    n_a = degree + 1
    n_b = (degree + 2) // 2
    alpha = np.arange(n_a) * (2 * np.pi / n_a)
    x, w = np.polynomial.legendre.leggauss(n_b)
    beta = np.arccos(x)
    A, B, G = np.meshgrid(alpha, beta, alpha, indexing="ij")
    W = np.broadcast_to((w / 2.0)[None, :, None] / (n_a * n_a), A.shape)
    return euler_to_matrix(A.ravel(), B.ravel(), G.ravel(), degrees=False), W.ravel().copy()
