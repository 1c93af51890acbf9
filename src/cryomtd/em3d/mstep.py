"""M-step of approximate EM: weighted normal equations in the basis coefficients (docs/design.md §10).

Maximising Σ_i Σ_{ω,s} w_{iωs} log N(y_i; C R_s Z Ψ D_ω c, σ²I) − (λ/2)‖c‖² over c gives

    (Σ_ω G_ωᵀ diag(m_ω) G_ω / σ² + λ I) c = Σ_ω G_ωᵀ b_ω / σ²,     G_ω = Ψ D_ω,

with, on the B×B projection-box domain (pixels v ∈ [0, B)²; B = L without a CTF),

* m_ω[v] = Σ_s n_{ωs} M[v + s]             = irfft2(M̂ · conj(n̂_ω))[v]  (how often pixel v of
  the projection was seen inside the patch), M = Z 1 the crop mask;
* b_ω[v] = Σ_i Σ_s w_{iωs} Y_i[v + s]  (back-shifted data, accumulated by the E-step).

Both come from :class:`~cryomtd.em3d.estep.Statistics`. With a CTF, G_ω is replaced per
defocus group g by G_gω = T_g Ψ D_ω (T_g the (B², L²) filter-and-enlarge operator of
:mod:`cryomtd.em3d.ctfmodel`) and the sums run over (g, ω) with each group's own statistics:

    (Σ_g Σ_ω G_gωᵀ diag(m_gω) G_gω / σ² + λ I) c = Σ_g Σ_ω G_gωᵀ b_gω / σ².

The system is assembled with
batched matrix products over chunks of rotations and solved by Cholesky (least squares
if it is singular). λ = ``prior_weight`` is the precision of a Gaussian prior on the
coefficients (MAP-EM; 0 = maximum likelihood). The shift prior is ρ_s = Σ_{i,ω} w_{iωs}/N
and, when learned, the rotation prior π_ω = Σ_{i,s} w_{iωs}/N.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.fft
import scipy.linalg

from .backend import Backend
from .estep import Statistics
from .model import ProjectionModel, WignerBlocks

__all__ = ["weight_images", "normal_equations", "normal_equations_ctf", "solve", "mstep"]

log = logging.getLogger("cryomtd.em3d")


def weight_images(stats: Statistics, L: int) -> tuple[np.ndarray, np.ndarray]:
    """(m_ω, b_ω) for patches of side ``L``: per-rotation weight and back-shifted data images,
    each (R, B, B) with B = N − L the projection box (``stats.n`` is (R, N, N); B = L without a CTF)."""
    N = stats.n.shape[-1]
    B = N - L
    mask = np.zeros((N, N))
    mask[:L, :L] = 1.0
    m = scipy.fft.irfft2(
        scipy.fft.rfft2(mask)[None] * np.conj(scipy.fft.rfft2(stats.n, axes=(-2, -1))), s=(N, N), axes=(-2, -1)
    )[:, :B, :B]
    return m, stats.b


def normal_equations(
    model: ProjectionModel, wigner: WignerBlocks, m: np.ndarray, b: np.ndarray, xp: Backend, rot_chunk: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """A = Σ_ω G_ωᵀ diag(m_ω) G_ω (size, size) and r = Σ_ω G_ωᵀ b_ω (size,), float64."""
    R = m.shape[0]
    K = model.size
    A = xp.zeros((K, K), dtype="float64")
    r = xp.zeros((K,), dtype="float64")
    for r0 in range(0, R, rot_chunk):  # chunks of rotations; each chunk is one stacked matmul
        r1 = min(R, r0 + rot_chunk)
        G = xp.asarray(model.operators(wigner, slice(r0, r1)).reshape(-1, K), "float64")  # (n·L², K)
        # m ≥ 0 (a sum of responsibilities; clip FFT round-off): A += Hᵀ H with H = √m·G, a
        # symmetric rank-k update (numpy dispatches a.T @ a to BLAS syrk: half the flops)
        H = G * xp.asarray(np.sqrt(np.clip(m[r0:r1].reshape(-1), 0.0, None)), "float64")[:, None]
        A = A + H.T @ H
        r = r + G.T @ xp.asarray(b[r0:r1].reshape(-1), "float64")
    return xp.to_numpy(A), xp.to_numpy(r)


def normal_equations_ctf(
    model: ProjectionModel,
    wigner: WignerBlocks,
    operators: Sequence[np.ndarray],
    m: np.ndarray,
    b: np.ndarray,
    xp: Backend,
    rot_chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """The CTF normal equations through the unfiltered operators G_ω = Ψ D_ω (L², size):

        A = Σ_ω G_ωᵀ W_ω G_ω,  W_ω = Σ_g T_gᵀ diag(m_gω) T_g (L², L²);   r = Σ_ω G_ωᵀ Σ_g T_gᵀ b_gω,

    equal to Σ_g :func:`normal_equations` of the filtered models (T_g Ψ) but with the groups
    summed on the L×L projection domain first: G·B²·L⁴ + L²·size² + L⁴·size flops per rotation
    instead of G·B²·size². ``operators`` the G filters T_g (B², L²); ``m``, ``b`` (G·R, B, B),
    group by group."""
    G = len(operators)
    R = m.shape[0] // G
    K = model.size
    T = xp.asarray(np.stack(operators), "float64")  # (G, B², L²)
    A = xp.zeros((K, K), dtype="float64")
    r = xp.zeros((K,), dtype="float64")
    mg = np.clip(m, 0.0, None).reshape(G, R, -1)
    bg = b.reshape(G, R, -1)
    for r0 in range(0, R, rot_chunk):
        r1 = min(R, r0 + rot_chunk)
        n = r1 - r0
        Gw = xp.asarray(model.operators(wigner, slice(r0, r1)), "float64")  # (n, L², K)
        L2 = Gw.shape[1]
        W = xp.zeros((n, L2, L2), dtype="float64")
        v = xp.zeros((n, L2), dtype="float64")
        for g in range(G):  # loop over CTF groups only
            mt = xp.asarray(mg[g, r0:r1], "float64")  # (n, B²)
            Tm = T[g][None] * mt[:, :, None]  # (n, B², L²)
            W = W + xp.einsum("pa,npb->nab", T[g], Tm)  # (n, L², L²), one GEMM
            v = v + xp.asarray(bg[g, r0:r1], "float64") @ T[g]
        WG = W @ Gw  # (n, L², K)
        A = A + Gw.reshape(-1, K).T @ WG.reshape(-1, K)
        r = r + Gw.reshape(-1, K).T @ v.reshape(-1)
    A = xp.to_numpy(A)
    return 0.5 * (A + A.T), xp.to_numpy(r)


def ctf_path_is_cheaper(L: int, box: int, size: int, groups: int) -> bool:
    """Whether :func:`normal_equations_ctf` needs fewer flops than the per-group filtered
    normal equations (G·B²·L⁴ + L²·K² + L⁴·K against G·B²·K²)."""
    L2 = L * L
    return groups * box * box * L2 * L2 + L2 * size * size + L2 * L2 * size < groups * box * box * size * size


def solve(A: np.ndarray, r: np.ndarray, sigma: float, prior_weight: float) -> np.ndarray:
    """Solve (A/σ² + λ I) c = r/σ² by Cholesky; least squares when not positive definite."""
    H = A / sigma**2 + prior_weight * np.eye(A.shape[0])
    H = 0.5 * (H + H.T)
    if H.shape[0] <= 4096:
        ev = np.linalg.eigvalsh(H)
        if ev[-1] > 0 and ev[0] < 1e-6 * ev[-1]:
            log.warning(
                "M-step normal equations nearly singular (eigenvalue ratio %.1e): some coefficient "
                "directions are barely seen by the rotation grid; use a finer em.grid_step, a smaller "
                "basis.ell_max or em.prior_weight > 0",
                ev[0] / ev[-1],
            )
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), r / sigma**2)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(H, r / sigma**2, rcond=None)[0]


def mstep(
    stats: Statistics,
    model: ProjectionModel | Sequence[ProjectionModel],
    wigner: WignerBlocks,
    sigma: float,
    *,
    prior_weight: float = 0.0,
    learn_rotation_prior: bool = False,
    xp: Backend | None = None,
    rot_chunk: int = 64,
    ctf_operators: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """New parameters from statistics: ``coef`` (size,), ``rho`` (N, N), ``pi`` (R,) or None.

    ``model`` is the projection model, or with a CTF one filtered model per defocus group
    (:func:`cryomtd.em3d.ctfmodel.filtered_model`, box side B); then ``stats`` holds G·R rows,
    group by group (rows g·R … (g+1)·R − 1 are group g's rotations). Alternatively, with a
    CTF, ``model`` the unfiltered model and ``ctf_operators`` the groups' filters T_g
    (:func:`normal_equations_ctf`, the same equations summed on the L×L domain)."""
    xp = xp or Backend("numpy")
    if ctf_operators is not None:  # model = the unfiltered model; groups summed on the L×L domain
        G = len(ctf_operators)
        R = stats.n.shape[0] // G
        B = math.isqrt(ctf_operators[0].shape[0])
        m, b = weight_images(stats, stats.n.shape[-1] - B)
        A, r = normal_equations_ctf(model, wigner, ctf_operators, m, b, xp, rot_chunk)
    else:
        models = [model] if isinstance(model, ProjectionModel) else list(model)
        G = len(models)
        R = stats.n.shape[0] // G
        L = stats.n.shape[-1] - models[0].L  # patch side: N − B
        m, b = weight_images(stats, L)
        A, r = normal_equations(models[0], wigner, m[:R], b[:R], xp, rot_chunk)
        for g in range(1, G):  # loop over CTF groups only
            sl = slice(g * R, (g + 1) * R)
            Ag, rg = normal_equations(models[g], wigner, m[sl], b[sl], xp, rot_chunk)
            A, r = A + Ag, r + rg
    coef = solve(A, r, sigma, prior_weight)
    rho = stats.n.sum(axis=0) / stats.count
    pi = None
    if learn_rotation_prior:
        pi = stats.n.sum(axis=(1, 2)) if G == 1 else stats.n.reshape(G, R, -1).sum(axis=(0, 2))
        pi = pi / stats.count
    return {"coef": coef, "rho": rho, "pi": pi}
