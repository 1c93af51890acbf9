"""The CTF in approximate EM: filtered projections on their enlarged support (docs/em3d.md#ctf).

A micrograph of defocus group g is h_g ∗ (Σ particles) + noise, with h_g the real-space
kernel of the group's CTF (:class:`cryomtd.ctf.CTF`). The filtered projection of a
particle whose L×L box has its corner at the origin is spread over about the
delocalisation radius (:meth:`CTF.delocalisation`, pixels) around the box, so EM models it
on the **enlarged box** of side B = L + 2t (pixels u ∈ [0, B)², micrograph offset u − t
from the particle's corner):

    q_gω = T_g p_ω = T_g Ψ D_ω c,     T_g[(u_y, u_x), (v_y, v_x)] = h_g[u_y − t − v_y, u_x − t − v_x]

(indices of h_g periodic on its grid). T_g is linear, so the filtered model of a group is
again a :class:`~cryomtd.em3d.model.ProjectionModel`, with Ψ_g = T_g Ψ (B², size) and box
side B (:func:`filtered_model`); the E-step pads the B×B box to N×N, N = L + B, and the
shift set is the N² shifts of that grid (s_y = L or s_x = L: the empty patch).

**Kernel grid.** h_g = ifft2(CTF on the DFT grid of ``grid`` pixels): with ``grid`` = the
micrographs' shape it is exactly the simulator's periodic filter (``cryomtd.ctf.apply_ctf``
filters the whole micrograph), so with t large enough the model is exact. A grid smaller
than 2(L + t) + 1 in either axis is enlarged to that.

**Truncation rule** (:func:`truncation_radius`): t_g is the smallest t ≥ 0 at which the
enlarged box holds at least ``energy`` (default 99 %) of the energy of the filtered
projection of a uniform ball of diameter L (a generic particle filling the box; one
projection suffices, the ball is rotation-invariant), capped by ⌈delocalisation⌉ at
Nyquist. One t = max_g t_g serves all groups (one shift grid, one shift prior ρ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from cryomtd.ctf import CTF
from cryomtd.io import InputError

from .model import ProjectionModel

__all__ = [
    "CtfModel",
    "ctf_kernel",
    "ctf_operator",
    "filtered_model",
    "ball_projection",
    "energy_profile",
    "truncation_radius",
    "plan_ctf",
    "ENERGY",
]

#: Default fraction of a generic particle's filtered energy the enlarged box must hold.
ENERGY = 0.99


def ctf_kernel(ctf: CTF, pixel_size: float, grid: tuple[int, int]) -> np.ndarray:
    """Real-space kernel h = ifft2(CTF) on a periodic grid of ``grid`` = (ny, nx) pixels
    (``pixel_size`` Å), index [d_y, d_x] = offset d mod grid; float64 (ny, nx)."""
    grid = (int(grid[0]), int(grid[1]))
    return scipy.fft.irfft2(ctf.on_grid(grid, pixel_size, real=True), s=grid)


def kernel_grid(shape: tuple[int, int], L: int, truncation: int) -> tuple[int, int]:
    """The kernel grid for micrographs of ``shape``: the shape itself, each axis at least
    2(L + t) + 1 so the kernel offsets the operator needs, |d| < L + t, do not wrap."""
    need = 2 * (int(L) + int(truncation)) + 1
    return (max(int(shape[0]), need), max(int(shape[1]), need))


def ctf_operator(kernel: np.ndarray, L: int, truncation: int) -> np.ndarray:
    """T (B², L²), B = L + 2t: the L×L projection (row-major [y, x]) → its filtered image on
    the enlarged B×B box, T[(u_y,u_x),(v_y,v_x)] = kernel[(u_y − t − v_y) mod ny, (u_x − t − v_x) mod nx]."""
    t = int(truncation)
    B = L + 2 * t
    ny, nx = kernel.shape
    if ny < 2 * (L + t) - 1 or nx < 2 * (L + t) - 1:
        raise InputError(f"CTF kernel grid {kernel.shape} too small for L = {L}, truncation {t}")
    u, v = np.arange(B), np.arange(L)
    dy = (u[:, None] - t - v[None, :]) % ny  # (B, L)
    dx = (u[:, None] - t - v[None, :]) % nx
    return kernel[dy[:, None, :, None], dx[None, :, None, :]].reshape(B * B, L * L)


def filtered_model(model: ProjectionModel, T: np.ndarray) -> ProjectionModel:
    """The CTF-filtered projection model: Ψ_g = T Ψ (B², size), box side B."""
    B = math.isqrt(T.shape[0])
    if B * B != T.shape[0] or T.shape[1] != model.L * model.L:
        raise InputError(f"CTF operator: expected shape (B², {model.L**2}), got {T.shape}")
    return ProjectionModel(T @ model.psi, model.ell, model.radial, B)


def ball_projection(L: int) -> np.ndarray:
    """(L, L) projection of a uniform ball of diameter L centred in the box: 2√(r² − |v − c|²)."""
    c = (L - 1) / 2.0
    v = np.arange(L) - c
    r2 = (L / 2.0) ** 2 - v[:, None] ** 2 - v[None, :] ** 2
    return 2.0 * np.sqrt(np.clip(r2, 0.0, None))


def energy_profile(kernel: np.ndarray, L: int, image: np.ndarray | None = None) -> np.ndarray:
    """Fraction of the energy of the filtered ``image`` (L×L at the grid's origin; default
    :func:`ball_projection`) inside the box enlarged by t, for t = 0 … (min(grid) − L)//2:
    (t_max + 1,) non-decreasing, ≤ 1."""
    img = ball_projection(L) if image is None else np.asarray(image, dtype=np.float64)
    ny, nx = kernel.shape
    padded = np.zeros((ny, nx))
    padded[:L, :L] = img
    q = scipy.fft.irfft2(scipy.fft.rfft2(padded) * scipy.fft.rfft2(kernel), s=(ny, nx))

    # ∞-norm distance of every pixel from the box [0, L)², with periodic offsets centred on the box
    def dist(n: int) -> np.ndarray:
        u = np.arange(n)
        off = (u - (L - 1) / 2.0 + n / 2.0) % n - n / 2.0  # centred coordinate
        return np.clip(np.abs(off) - (L - 1) / 2.0, 0.0, None)

    d = np.maximum(dist(ny)[:, None], dist(nx)[None, :])
    d = np.ceil(d - 1e-9).astype(np.int64)
    t_max = (min(ny, nx) - L) // 2
    e = np.bincount(np.minimum(d, t_max + 1).ravel(), weights=(q * q).ravel(), minlength=t_max + 2)
    return np.cumsum(e)[: t_max + 1] / max(float(e.sum()), 1e-300)


def truncation_radius(
    ctf: CTF, L: int, pixel_size: float, grid: tuple[int, int] | None = None, energy: float = ENERGY
) -> tuple[int, float, float]:
    """(t, fraction kept, delocalisation px): the smallest t whose enlarged box holds
    ≥ ``energy`` of a filtered ball projection (:func:`energy_profile`), capped by
    ⌈:meth:`CTF.delocalisation`⌉ at Nyquist; ``grid`` default 4·(L + ⌈deloc⌉) square."""
    if not 0 < energy <= 1:
        raise InputError(f"CTF truncation energy: expected 0 < energy <= 1, got {energy}")
    deloc = ctf.delocalisation(pixel_size)
    cap = int(math.ceil(deloc))
    grid = kernel_grid(grid or (4 * (L + cap), 4 * (L + cap)), L, cap)
    prof = energy_profile(ctf_kernel(ctf, pixel_size, grid), L)
    hit = np.nonzero(prof >= energy)[0]
    t = int(hit[0]) if hit.size else len(prof) - 1
    t = min(t, cap, len(prof) - 1)
    return t, float(prof[t]), float(deloc)


@dataclass(frozen=True)
class CtfModel:
    """The CTF groups of one EM run.

    ``ctfs`` the distinct group CTFs (order of first appearance); ``group_of`` (n_micrographs,)
    the group of each micrograph of the :class:`~cryomtd.em3d.patches.PatchSource`;
    ``truncation`` t (pixels) and ``box`` B = L + 2t; ``operators`` the (B², L²) filters T_g;
    ``pixel_size`` Å; ``grids`` the kernel grid of each group; per group ``radius`` (the
    rule's t_g), ``kept`` (fraction of the ball's filtered energy inside the box at the
    chosen t) and ``delocalisation`` (pixels).
    """

    ctfs: tuple[CTF, ...]
    group_of: np.ndarray
    truncation: int
    box: int
    operators: tuple[np.ndarray, ...]
    pixel_size: float
    grids: tuple[tuple[int, int], ...]
    radius: tuple[int, ...]
    kept: tuple[float, ...]
    delocalisation: tuple[float, ...]

    @property
    def n_groups(self) -> int:
        return len(self.ctfs)

    def models(self, model: ProjectionModel) -> list[ProjectionModel]:
        """One filtered projection model per group."""
        return [filtered_model(model, T) for T in self.operators]

    def summary(self) -> dict:
        """JSON-ready description (for the trace and the fingerprint)."""
        return {
            "groups": [c.to_dict() for c in self.ctfs],
            "group_of": [int(g) for g in self.group_of],
            "truncation": self.truncation,
            "box": self.box,
            "pixel_size": self.pixel_size,
            "grids": [list(g) for g in self.grids],
            "radius": list(self.radius),
            "kept": list(self.kept),
            "delocalisation": list(self.delocalisation),
        }


def plan_ctf(
    ctfs: Sequence[CTF | None] | None,
    shapes: Sequence[tuple[int, int]],
    L: int,
    pixel_size: float | None,
    *,
    truncation: int | None = None,
    energy: float = ENERGY,
) -> CtfModel | None:
    """The :class:`CtfModel` of micrographs of ``shapes`` with group CTFs ``ctfs`` (one per
    micrograph; equal CTFs form one group); None when ``ctfs`` is None or all None (no CTF
    modelled: EM is exactly the CTF-free model). ``truncation`` fixes t (pixels) instead of
    the rule (:func:`truncation_radius` with ``energy``). Each group's kernel grid is the
    largest shape of its micrographs (:func:`kernel_grid`)."""
    if ctfs is None or all(c is None for c in ctfs):
        return None
    ctfs = list(ctfs)
    if len(ctfs) != len(shapes):
        raise InputError(f"CTF: expected one CTF per micrograph ({len(shapes)}), got {len(ctfs)}")
    if any(c is None for c in ctfs):
        raise InputError(
            f"CTF: micrograph #{ctfs.index(None)} has no CTF while others have one; "
            "expected a CTF for every micrograph or for none"
        )
    if pixel_size is None or not pixel_size > 0:
        raise InputError(f"CTF: a positive pixel size (Å) is needed to model the CTF, got {pixel_size}")
    distinct: list[CTF] = []
    group_of = np.empty(len(ctfs), dtype=np.int64)
    for k, c in enumerate(ctfs):
        if c not in distinct:
            distinct.append(c)
        group_of[k] = distinct.index(c)
    shapes_g = []
    for g in range(len(distinct)):
        members = [shapes[k] for k in np.nonzero(group_of == g)[0]]
        shapes_g.append((max(s[0] for s in members), max(s[1] for s in members)))
    rule = [truncation_radius(c, L, pixel_size, None, energy) for c in distinct]
    if truncation is None:
        t = max(r[0] for r in rule)
    else:
        t = int(truncation)
        if t < 0:
            raise InputError(f"CTF truncation: expected ≥ 0 pixels, got {truncation}")
    grids = tuple(kernel_grid(s, L, t) for s in shapes_g)
    kernels = [ctf_kernel(c, pixel_size, gr) for c, gr in zip(distinct, grids, strict=True)]
    kept = []
    for c, r in zip(distinct, rule, strict=True):
        cap = int(math.ceil(r[2]))
        prof = energy_profile(ctf_kernel(c, pixel_size, kernel_grid((4 * (L + cap),) * 2, L, max(cap, t))), L)
        kept.append(float(prof[min(t, len(prof) - 1)]))
    return CtfModel(
        ctfs=tuple(distinct),
        group_of=group_of,
        truncation=t,
        box=L + 2 * t,
        operators=tuple(ctf_operator(h, L, t) for h in kernels),
        pixel_size=float(pixel_size),
        grids=grids,
        radius=tuple(r[0] for r in rule),
        kept=tuple(kept),
        delocalisation=tuple(r[2] for r in rule),
    )
