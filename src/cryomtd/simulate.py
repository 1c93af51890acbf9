"""Micrograph simulation: particles at Haar-random rotations, placed at a target density, plus noise.

Model (docs/design.md §6, docs/simulation.md). A micrograph of ``size × size`` pixels holds n
projections P_ω x (L × L boxes, pixel = voxel) whose top-left corners t = (t_y, t_x) lie
in [0, size − L]²; the particle centre is t + L//2. The density is

    γ = n · L² / size².

Placement keeps every pair of centres at ∞-norm distance ≥ d, with d = 2L − 1
(``"separated"``: boxes at least L − 1 apart, as the method of moments needs),
d = L (``"nonoverlapping"``: boxes may touch, as approximate EM assumes) or any integer
d ≥ 1 (boxes overlap and add when d < L). Noise is white Gaussian with variance σ² set by

    SNR = E_ω ‖P_ω x‖²_F / (L² σ²),

the mean energy per pixel of the projection box over the noise variance. E_ω is computed
exactly when the volume is given in the spherical-Bessel basis (Schur orthogonality of the
Wigner matrices, :func:`basis_signal_energy`), otherwise by the mean over a fixed set of
2000 Haar rotations (generator ``rng(0, "snr", 0)``, the same for every micrograph and
seed). The CTF, when given,
filters the clean micrograph (it does not enter σ).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryomtd import rotations
from cryomtd.ctf import CTF, apply_ctf
from cryomtd.io import InputError, atomic_path
from cryomtd.progress import progress
from cryomtd.seeding import rng as seeded_rng

__all__ = [
    "CtfSettings",
    "MicrographSettings",
    "Micrograph",
    "micrograph",
    "min_distance",
    "place_particles",
    "paste",
    "signal_energy",
    "basis_signal_energy",
    "real_space_projector",
    "EulerProjector",
    "write_particles",
    "read_particles",
    "STAR_COLUMNS",
    "ctf_for_micrograph",
    "simulated_side_infos",
    "simulate_from_truth",
    "save_micrograph",
]

log = logging.getLogger("cryomtd.simulate")

STAR_COLUMNS = ["rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnMicrographName"]
N_SNR_ROTATIONS = 2000
Projector = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- placement
def min_distance(spacing: str | int, L: int) -> int:
    """Minimum ∞-norm distance between particle centres for a ``spacing`` rule and box size L."""
    if spacing == "separated":
        return 2 * L - 1
    if spacing == "nonoverlapping":
        return L
    if isinstance(spacing, (int, np.integer)) and not isinstance(spacing, bool) and spacing >= 1:
        return int(spacing)
    raise InputError(f"micrographs.spacing: expected 'separated', 'nonoverlapping' or an integer ≥ 1, got {spacing!r}")


def place_particles(
    size: int, L: int, n: int, distance: int, g: np.random.Generator, max_rounds: int = 64
) -> np.ndarray:
    """Top-left corners (n, 2) int [t_y, t_x] of ``n`` L×L boxes in a size×size image,
    centres ≥ ``distance`` apart (∞-norm).

    Random sequential adsorption on a grid of ``distance × distance`` cells over the
    (size − L + 1)² admissible corners: a cell holds at most one particle (two points of
    one cell are closer than ``distance``), so only the 8 neighbouring cells can
    conflict. Each round proposes one uniform point in every empty cell and accepts, one
    2×2-parity class of cells at a time (cells of one class are two cells apart, so
    their proposals never conflict), those at distance ≥ ``distance`` from all accepted
    neighbours — every step is an array operation over all cells. Rounds repeat until
    at least ``n`` are accepted (or ``max_rounds``); then ``n`` of them are kept
    uniformly at random. Raises :class:`InputError` when ``n`` cannot be reached, naming
    the largest density reached.
    """
    M = size - L + 1
    if M < 1:
        raise InputError(f"micrographs.size: {size} is smaller than the particle box L = {L}")
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    d = int(distance)
    nc = -(-M // d)
    base = np.arange(nc) * d
    occupied = np.zeros((nc, nc), dtype=bool)
    pos = np.full((2, nc + 2, nc + 2), -(10 * (size + d)), dtype=np.int64)  # padded, far-away sentinel
    occ_pad = np.zeros((nc + 2, nc + 2), dtype=bool)
    ii, jj = np.meshgrid(np.arange(nc), np.arange(nc), indexing="ij")
    classes = [((ii % 2) == a) & ((jj % 2) == b) for a in (0, 1) for b in (0, 1)]
    neighbours = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]
    for _ in range(max_rounds):
        for cls in classes:
            cy = base[:, None] + g.integers(0, d, size=(nc, nc))
            cx = base[None, :] + g.integers(0, d, size=(nc, nc))
            ok = cls & ~occupied & (cy < M) & (cx < M)
            for di, dj in neighbours:
                sl = (slice(1 + di, 1 + di + nc), slice(1 + dj, 1 + dj + nc))
                clash = occ_pad[sl] & (np.abs(cy - pos[0][sl]) < d) & (np.abs(cx - pos[1][sl]) < d)
                ok &= ~clash
            occupied |= ok
            occ_pad[1:-1, 1:-1] = occupied
            inner = (slice(1, -1), slice(1, -1))
            pos[0][inner] = np.where(ok, cy, pos[0][inner])
            pos[1][inner] = np.where(ok, cx, pos[1][inner])
        if occupied.sum() >= n:
            break
    found = int(occupied.sum())
    if found < n:
        raise InputError(
            f"micrographs.gamma: cannot place {n} particles of box {L} at minimum centre distance {d} in a "
            f"{size}² micrograph (γ = {n * L * L / size**2:.4f}); random placement reached {found} "
            f"(γ = {found * L * L / size**2:.4f}). Lower gamma or the spacing."
        )
    corners = np.stack([pos[0][1:-1, 1:-1][occupied], pos[1][1:-1, 1:-1][occupied]], axis=1)
    keep = np.sort(g.choice(found, size=n, replace=False))
    return corners[keep]


def paste(size: int, corners: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Sum L×L ``boxes`` (n, L, L) into a size×size image at top-left ``corners`` (n, 2) [t_y, t_x]; overlaps add."""
    n, L, _ = boxes.shape
    ar = np.arange(L)
    flat = (corners[:, 0, None, None] + ar[None, :, None]) * size + corners[:, 1, None, None] + ar[None, None, :]
    return np.bincount(flat.ravel(), weights=boxes.ravel(), minlength=size * size).reshape(size, size)


# --------------------------------------------------------------------------- projections
def real_space_projector(volume: np.ndarray, order: int = 1) -> Projector:
    """Projector R (n,3,3) → (n, L, L) by rotating the voxel volume (spline interpolation) and summing along z.

    image[y, x] = Σ_z v(Rᵀ (x, y, z)) with p from the centre voxel; zero outside the box.
    A reference/fallback; the workflow projects through the spherical-Bessel basis.
    """
    from scipy.ndimage import map_coordinates

    volume = np.asarray(volume, dtype=np.float64)
    L = volume.shape[0]
    c = np.arange(L) - L // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    p = np.stack([x.ravel(), y.ravel(), z.ravel()])  # (3, L³)

    chunk = max(1, 2_000_000 // L**3)  # rotations per map_coordinates call (≈ 50 MB of coordinates)

    def project(R: np.ndarray) -> np.ndarray:
        R = np.asarray(R).reshape(-1, 3, 3)
        out = np.empty((len(R), L, L))
        for a in range(0, len(R), chunk):
            q = np.einsum("nji,jk->ink", R[a : a + chunk], p)  # Rᵀ p, (3, n, L³) as (x, y, z)
            idx = q[::-1] + L // 2  # (z, y, x) indices
            vals = map_coordinates(volume, idx.reshape(3, -1), order=order, mode="constant", cval=0.0)
            out[a : a + chunk] = vals.reshape(-1, L, L, L).sum(axis=1)
        return out

    return project


class EulerProjector:
    """Ψ D(R) c for many rotations: a few small products per batch, no per-rotation Wigner
    matrices (equals ``basis.project(coef, R)``).

    Uses the ZYZ factorisation of the representation: with R = Rz(psi)·Ry(tilt)·Rz(rot)
    (``rotations.matrix_to_euler``) and a fixed rotation Q with Ry(t) = Q·Rz(t)·Qᵀ,

        D(R) = Z(psi) · D(Q) · Z(tilt) · D(Q)ᵀ · Z(rot),

    where Z(α) = D(Rz(α)) only mixes each real harmonic m with its partner −m:
    (Z(α)c)_m = cos(mα)·c_m + σ_m·sin(|m|α)·c_−m. D(Q) (block-diagonal, size × size) and
    the signs σ_m are read once from ``basis.wigner`` (so the real-harmonic convention is
    the basis' own); each batch then costs two (n × size)·(size × size) products plus
    element-wise work, instead of n Wigner evaluations. Tested against ``basis.project``.
    D(Q) is applied per ℓ block (Σ_ℓ S_ℓ(2ℓ+1)² multiply-adds per rotation).
    """

    def __init__(self, basis, coef: np.ndarray):
        self.basis = basis
        self.coef = np.asarray(coef, dtype=np.float64)
        ell, s_idx, m = (np.asarray(a) for a in (basis.ell, basis.s, basis.m))
        index = {(int(a), int(b), int(c)): i for i, (a, b, c) in enumerate(zip(ell, s_idx, m, strict=True))}
        self.partner = np.array([index[(int(a), int(b), -int(c))] for a, b, c in zip(ell, s_idx, m, strict=True)])
        self.m = m.astype(np.float64)
        ell_max = int(basis.ell_max)
        alpha0 = 1.0 / (ell_max + 1)  # |m|·alpha0 < 1: sin never vanishes for m ≠ 0
        Dz = basis.wigner(rotations.euler_to_matrix(alpha0, 0.0, 0.0, degrees=False).reshape(1, 3, 3))
        sign = np.ones(len(m))
        for l in range(ell_max + 1):
            block = Dz[l][0]
            first = np.where((ell == l) & (s_idx == s_idx[ell == l].min()))[0]
            local = {int(m[i]): j for j, i in enumerate(first)}
            for j, i in enumerate(first):
                mm = int(m[i])
                if abs(block[j, j] - np.cos(mm * alpha0)) > 1e-8:
                    raise ValueError("EulerProjector: the basis' real harmonics do not rotate as cos(mα) about z")
                if mm != 0:
                    sign[(ell == l) & (m == mm)] = block[j, local[-mm]] / np.sin(abs(mm) * alpha0)
        if not np.allclose(np.abs(sign), 1.0, atol=1e-8):
            raise ValueError("EulerProjector: z-rotations of the basis do not pair m with −m")
        self.sign = sign
        t = 0.7
        Ry = rotations.euler_to_matrix(0.0, t, 0.0, degrees=False)
        Rz = rotations.euler_to_matrix(t, 0.0, 0.0, degrees=False)
        for Q in (
            rotations.euler_to_matrix(a, b, c, degrees=False)
            for a in (np.pi / 2, -np.pi / 2)
            for b in (np.pi / 2, -np.pi / 2)
            for c in (0.0, np.pi / 2, -np.pi / 2, np.pi)
        ):
            if np.allclose(Q @ Rz @ Q.T, Ry, atol=1e-12):
                break
        else:  # pragma: no cover - geometry guarantees a candidate
            raise ValueError("EulerProjector: no axis-swap rotation found")
        DQ = basis.wigner(Q.reshape(1, 3, 3))
        # per-ℓ blocks: the layout (ascending ℓ, then s, then m = −ℓ…ℓ) makes ℓ a contiguous
        # (S_ℓ, 2ℓ+1) slab, so D(Q) acts as one small matrix per ℓ (Σ S_ℓ(2ℓ+1)² work, not size²)
        self.blocks = []
        start = 0
        for l in range(ell_max + 1):
            width = 2 * l + 1
            count = int(np.count_nonzero(ell == l))
            sl = slice(start, start + count)
            expected_m = np.tile(np.arange(-l, l + 1), count // width)
            if count % width or not np.array_equal(m[sl], expected_m) or np.any(ell[sl] != l):
                raise ValueError("EulerProjector: coefficient layout is not (ℓ, s, m = −ℓ…ℓ) contiguous")
            self.blocks.append((sl, count // width, width, DQ[l][0]))
            start += count
        psi = np.asarray(basis.projection_matrix)
        self.nonzero = np.flatnonzero(np.any(psi != 0, axis=0))  # Y_ℓm(equator) = 0 columns drop out
        self.psi_t = np.ascontiguousarray(psi[:, self.nonzero].T)  # (nnz, L²)
        # cos/sin of |m|·α from e^{i|m|α}, |m| ≤ ell_max: 2·(ell_max+1) trig calls per angle, not 2·size
        self.abs_m = np.abs(m).astype(np.int64)

    def _z(self, c: np.ndarray, angle: np.ndarray) -> np.ndarray:
        e = np.exp(1j * angle[:, None] * np.arange(int(self.abs_m.max()) + 1)[None, :])[:, self.abs_m]
        return e.real * c + self.sign * e.imag * c[:, self.partner]

    def _apply_q(self, c: np.ndarray, transpose: bool) -> np.ndarray:
        out = np.empty_like(c)
        n = c.shape[0]
        for sl, S_l, width, D in self.blocks:
            # row form: D(Q)ᵀ c ↔ c_row @ D(Q); D(Q) c ↔ c_row @ D(Q)ᵀ
            out[:, sl] = (c[:, sl].reshape(n, S_l, width) @ (D if transpose else D.T)).reshape(n, -1)
        return out

    def rotate(self, R: np.ndarray) -> np.ndarray:
        """Rotated coefficients D(R) c, (n, size) for R (n, 3, 3)."""
        ang = rotations.matrix_to_euler(np.asarray(R).reshape(-1, 3, 3), degrees=False)
        c = np.broadcast_to(self.coef, (len(ang), self.coef.size))
        c = self._apply_q(self._z(c, ang[:, 0]), transpose=True)  # Z(rot), then D(Q)ᵀ
        c = self._apply_q(self._z(c, ang[:, 1]), transpose=False)  # Z(tilt), then D(Q)
        return self._z(c, ang[:, 2])

    def __call__(self, R: np.ndarray) -> np.ndarray:
        """Projections (n, L, L) for R (n, 3, 3)."""
        L = self.basis.L
        return (self.rotate(R)[:, self.nonzero] @ self.psi_t).reshape(-1, L, L)


def _basis_projector(basis, coef: np.ndarray) -> Projector:
    return EulerProjector(basis, coef)


def basis_signal_energy(basis, coef: np.ndarray) -> float:
    """E_ω ‖Ψ D(ω) c‖² exactly, from Ψ alone (no rotations), by Schur orthogonality.

    The real Wigner matrices D^ℓ are irreducible orthogonal representations, so
    E_ω[D^ℓ(ω)ᵀ A D^ℓ'(ω)] = δ_ℓℓ' tr(A)/(2ℓ+1) · I for any (2ℓ+1)×(2ℓ'+1) block A. With
    G = ΨᵀΨ this gives E_ω‖ΨD(ω)c‖² = Σ_ℓ Σ_{s,s'} T^ℓ_{ss'} ⟨c_ℓs, c_ℓs'⟩ with
    T^ℓ_{ss'} = Σ_m G[(ℓ,s,m), (ℓ,s',m)] / (2ℓ+1).
    """
    psi = np.asarray(basis.projection_matrix)
    ell, s_idx, m = np.asarray(basis.ell), np.asarray(basis.s), np.asarray(basis.m)
    total = 0.0
    for l in np.unique(ell):
        idx = np.where(ell == l)[0]
        idx = idx[np.lexsort((m[idx], s_idx[idx]))]  # (s, m) order
        S = len(idx) // (2 * l + 1)
        P = psi[:, idx]
        G = (P.T @ P).reshape(S, 2 * l + 1, S, 2 * l + 1)
        T = np.einsum("ambm->ab", G) / (2 * l + 1)
        C = coef[idx].reshape(S, 2 * l + 1)
        total += float(np.einsum("ab,am,bm->", T, C, C))
    return total


def signal_energy(project: Projector, L: int, basis=None, coef: np.ndarray | None = None, batch: int = 1024) -> float:
    """E_ω ‖P_ω x‖²_F: exact (:func:`basis_signal_energy`) with a basis and its coefficients,
    else the mean over a fixed Haar set."""
    if basis is not None and coef is not None:
        return basis_signal_energy(basis, coef)
    R = rotations.random(N_SNR_ROTATIONS, seeded_rng(0, "snr", 0))
    total = 0.0
    for start in range(0, len(R), batch):
        im = project(R[start : start + batch])
        total += float(np.sum(im**2))
    return total / len(R)


# --------------------------------------------------------------------------- micrograph
@dataclass(frozen=True)
class Micrograph:
    """A simulated micrograph.

    ``image`` (size, size) float64 = ``clean`` + σ·noise, ``[y, x]``; ``clean`` the
    noise-free sum of (CTF-filtered) projections; ``particles`` a table with one row per
    particle: ``x``, ``y`` centre pixel (0-based column/row), ``rlnCoordinateX/Y`` (the
    same, pixels), ``rlnAngleRot/Tilt/Psi`` (RELION ZYZ, degrees; R =
    ``rotations.euler_to_matrix``), ``rlnMicrographName``; ``sigma`` the noise standard
    deviation; ``gamma`` the density reached; ``signal_energy`` E_ω‖P_ω x‖²_F.
    """

    image: np.ndarray
    clean: np.ndarray
    particles: pd.DataFrame
    sigma: float
    snr: float
    gamma: float
    L: int
    signal_energy: float
    ctf: CTF | None = None
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def summary(self) -> dict:
        """The numbers of ``micrographs/{k}.json``: sigma, snr, gamma, n_particles, size, L, …"""
        return {
            "sigma": self.sigma,
            "snr": self.snr,
            "gamma": self.gamma,
            "n_particles": int(len(self.particles)),
            "size": self.size,
            "L": self.L,
            "signal_energy": self.signal_energy,
            "ctf": None if self.ctf is None else self.ctf.to_dict(),
            **self.info,
        }


def micrograph(
    volume_or_coef: np.ndarray,
    size: int,
    *,
    gamma: float,
    snr: float | None,
    seed: int | np.random.Generator,
    spacing: str | int = "separated",
    ctf: CTF | None = None,
    basis=None,
    pixel_size: float = 1.0,
    micrograph_name: str = "",
    batch: int = 4096,
    energy: float | None = None,
) -> Micrograph:
    """Simulate one micrograph.

    ``volume_or_coef``: basis coefficients (size,) with ``basis`` given (projections
    ``basis.project(coef, R)``), a volume (L, L, L) with ``basis`` (expanded first), or a
    volume without a basis (real-space projector, a reference path). ``size``: pixels per
    side; ``gamma``: target density (rounded to a whole number of particles);
    ``snr``: per-pixel SNR of the box (module docstring), ``None``/``inf`` for no noise;
    ``seed``: integer (uses ``rng(seed, "micrograph", 0)``) or a Generator — the workflow
    passes ``rng(seed, "micrograph", k)``; ``spacing``: see :func:`min_distance`;
    ``ctf``: optional :class:`cryomtd.ctf.CTF` with ``pixel_size`` (Å); ``energy``:
    E_ω‖P_ω x‖² if already known (skips its computation).
    """
    arr = np.asarray(volume_or_coef, dtype=np.float64)
    if basis is not None:
        coef = basis.expand(arr) if arr.ndim == 3 else arr
        if coef.shape != (basis.size,):
            raise InputError(f"micrograph: expected {basis.size} basis coefficients, got shape {coef.shape}")
        L = int(basis.L)
        project = _basis_projector(basis, coef)
    elif arr.ndim == 3:
        L = arr.shape[0]
        project = real_space_projector(arr)
    else:
        raise InputError("micrograph: coefficients need a basis; pass basis= or a (L, L, L) volume")
    if not gamma >= 0:
        raise InputError(f"micrographs.gamma: expected ≥ 0, got {gamma}")
    g = seed if isinstance(seed, np.random.Generator) else seeded_rng(int(seed), "micrograph", 0)
    d = min_distance(spacing, L)
    n = int(round(gamma * size * size / (L * L)))
    corners = place_particles(size, L, n, d, g)
    R = rotations.random(n, g)
    clean = np.zeros((size, size))
    for start in progress(range(0, n, batch), desc="project+paste", total=-(-n // batch) if n else 0):
        sl = slice(start, start + batch)
        clean += paste(size, corners[sl], project(R[sl]))
    if ctf is not None:
        clean = apply_ctf(clean, ctf, pixel_size)
    if energy is None:
        energy = signal_energy(project, L, basis, coef if basis is not None else None)
    if snr is None or math.isinf(snr):
        sigma, snr_value = 0.0, math.inf
    else:
        if not snr > 0:
            raise InputError(f"micrographs.snr: expected > 0 (or null for no noise), got {snr}")
        sigma, snr_value = math.sqrt(energy / (L * L * snr)), float(snr)
    image = clean + sigma * g.standard_normal((size, size)) if sigma > 0 else clean.copy()
    euler = rotations.matrix_to_euler(R) if n else np.zeros((0, 3))
    cy = corners[:, 0] + L // 2
    cx = corners[:, 1] + L // 2
    particles = pd.DataFrame(
        {
            "x": cx,
            "y": cy,
            "rlnCoordinateX": cx.astype(np.float64),
            "rlnCoordinateY": cy.astype(np.float64),
            "rlnAngleRot": euler[:, 0],
            "rlnAngleTilt": euler[:, 1],
            "rlnAnglePsi": euler[:, 2],
            "rlnMicrographName": [micrograph_name] * n,
        }
    )
    return Micrograph(
        image=image,
        clean=clean,
        particles=particles,
        sigma=sigma,
        snr=snr_value,
        gamma=n * L * L / size**2,
        L=L,
        signal_energy=float(energy),
        ctf=ctf,
        info={
            "spacing": spacing if isinstance(spacing, str) else int(spacing),
            "min_distance": d,
            "pixel_size": float(pixel_size),
        },
    )


# --------------------------------------------------------------------------- STAR files
def write_particles(path: str | os.PathLike, particles: pd.DataFrame) -> None:
    """Write a particle table as a STAR file (block ``particles``, RELION column names), atomically.

    Only RELION columns are written; ``x``/``y`` are recovered from ``rlnCoordinateX/Y``
    on reading.
    """
    import starfile

    table = particles[STAR_COLUMNS].copy()
    with atomic_path(path, suffix=".star") as tmp:
        starfile.write({"particles": table}, tmp)


def read_particles(path: str | os.PathLike) -> pd.DataFrame:
    """Read a particle STAR file written by :func:`write_particles`; adds integer ``x``, ``y`` columns."""
    import starfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: STAR file not found")
    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable STAR file ({exc})") from None
    table = data.get("particles", next(iter(data.values()), None)) if data else None
    if table is None:
        table = pd.DataFrame(columns=STAR_COLUMNS)
    missing = [c for c in STAR_COLUMNS if c not in table.columns]
    if missing and len(table):
        raise InputError(f"{path}: STAR table lacks column(s) {missing}")
    for c in missing:
        table[c] = pd.Series(dtype=object if c == "rlnMicrographName" else np.float64)
    table = table.copy()
    table.insert(0, "y", np.rint(table["rlnCoordinateY"].to_numpy(dtype=np.float64)).astype(np.int64))
    table.insert(0, "x", np.rint(table["rlnCoordinateX"].to_numpy(dtype=np.float64)).astype(np.int64))
    return table


# --------------------------------------------------------------------------- the simulate_micrograph stage
@dataclass(frozen=True)
class CtfSettings:
    """``micrographs.ctf``: defocus Å (under-focus positive; a (lo, hi) pair is drawn per micrograph),
    voltage kV, spherical aberration mm, amplitude contrast, B-factor Å², astigmatism Å
    (defocus U − V; a (lo, hi) pair is drawn per micrograph)."""

    defocus: float | tuple[float, float]
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    b_factor: float = 0.0
    astigmatism: float | tuple[float, float] = 0.0


@dataclass(frozen=True)
class MicrographSettings:
    """The ``micrographs`` block (schema ``workflow/schemas/micrographs.schema.yaml``): how many
    micrographs, their side (pixels), the density γ, the SNR (None = no noise), the particle
    spacing and an optional CTF."""

    n_micrographs: int = 4
    size: int = 512
    gamma: float = 0.1
    snr: float | None = 1.0
    spacing: str | int = "separated"
    ctf: CtfSettings | None = None

    @classmethod
    def from_config(cls, block: Any, where: str = "micrographs") -> MicrographSettings:
        from cryomtd.settings import from_block

        return from_block(cls, block, where)

    def simulate(
        self, truth_path: str | os.PathLike, index: int, *, seed: int, micrograph_name: str = ""
    ) -> Micrograph:
        """Micrograph ``index`` (:func:`simulate_from_truth`) with these settings."""
        from cryomtd.settings import to_block

        return simulate_from_truth(
            truth_path,
            index,
            seed=seed,
            size=self.size,
            gamma=self.gamma,
            snr=self.snr,
            spacing=self.spacing,
            ctf=None if self.ctf is None else to_block(self.ctf),
            micrograph_name=micrograph_name,
        )


def ctf_for_micrograph(ctf: dict | None, g: np.random.Generator) -> CTF | None:
    """A :class:`CTF` from the ``micrographs.ctf`` config block; a ``defocus`` [lo, hi] is
    drawn uniformly from ``g``, then (only when non-zero) the astigmatism a (a [lo, hi]
    drawn likewise) and its angle uniform in [0°, 180°): U = Δf + a/2, V = Δf − a/2."""
    if ctf is None:
        return None
    params = dict(ctf)
    if "defocus" not in params:
        raise InputError("micrographs.ctf.defocus: required when a CTF is given")

    def draw(value: Any) -> float:
        if isinstance(value, (list, tuple)):
            lo, hi = (float(v) for v in value)
            return float(g.uniform(min(lo, hi), max(lo, hi)))
        return float(value)

    defocus = draw(params.pop("defocus"))
    astig = params.pop("astigmatism", 0.0)
    if astig == 0 or (isinstance(astig, (list, tuple)) and max(astig) == 0):
        return CTF(defocus=defocus, **params)
    a = draw(astig)
    if not a < 2 * defocus:
        raise InputError(f"micrographs.ctf.astigmatism: {a:g} Å leaves defocus V ≤ 0 at defocus {defocus:g} Å")
    angle = float(g.uniform(0.0, 180.0))
    return CTF(defocus=defocus + a / 2, defocus_v=defocus - a / 2, defocus_angle=angle, **params)


def simulated_side_infos(micrographs: dict, seed: int, indices: Sequence[int], pixel_size: float) -> list[dict]:
    """What the CTF group table needs of the side files of simulated micrographs ``indices``
    (``ctf``, ``pixel_size``, ``size``) without simulating them: the CTF is drawn first from
    ``rng(seed, "micrograph", k)``, exactly as :func:`simulate_from_truth` draws it (for the
    clean-moment experiments, whose micrographs are never made). ``micrographs``: the
    defaults-filled ``micrographs`` config block."""
    ctf, size = micrographs.get("ctf"), int(micrographs["size"])
    return [
        {
            "ctf": None
            if ctf is None
            else ctf_for_micrograph(ctf, seeded_rng(int(seed), "micrograph", int(k))).to_dict(),
            "pixel_size": float(pixel_size),
            "size": [size, size],
        }
        for k in indices
    ]


def simulate_from_truth(
    truth_path: str | os.PathLike,
    index: int,
    *,
    seed: int,
    size: int,
    gamma: float,
    snr: float | None,
    spacing: str | int = "separated",
    ctf: dict | None = None,
    micrograph_name: str = "",
) -> Micrograph:
    """Micrograph ``index`` of an experiment: projections of ``truth.npz`` through its basis.

    The generator is ``rng(seed, "micrograph", index)``; it draws the defocus (when a
    range), the placement, the rotations and the noise, in that order, so micrograph k is
    the same whatever order or machine produces it. Pixel size = the truth's voxel size.
    """
    from cryomtd.basis import SphericalBessel
    from cryomtd.volume import load_truth

    truth = load_truth(truth_path)
    basis = SphericalBessel(truth["L"], truth["ell_max"])
    g = seeded_rng(int(seed), "micrograph", int(index))
    return micrograph(
        truth["coef"],
        size,
        gamma=gamma,
        snr=snr,
        seed=g,
        spacing=spacing,
        ctf=ctf_for_micrograph(ctf, g),
        basis=basis,
        pixel_size=truth["voxel_size"] or 1.0,
        micrograph_name=micrograph_name,
    )


def save_micrograph(
    m: Micrograph, mrc_path: str | os.PathLike, star_path: str | os.PathLike, json_path: str | os.PathLike
) -> None:
    """Write the image (float32 MRC, pixel size in the header), the particle STAR file and
    the JSON summary, atomically."""
    from cryomtd.io import write_json
    from cryomtd.volume import write_image_mrc

    write_image_mrc(mrc_path, m.image, m.info.get("pixel_size", 1.0))
    write_particles(star_path, m.particles)
    write_json(json_path, m.summary())
