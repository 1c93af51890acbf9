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
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.fft
import scipy.linalg

from .backend import Backend
from .estep import Statistics
from .model import ProjectionModel, WignerBlocks

__all__ = ["weight_images", "normal_equations", "solve", "mstep"]

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
) -> dict[str, Any]:
    """New parameters from statistics: ``coef`` (size,), ``rho`` (N, N), ``pi`` (R,) or None.

    ``model`` is the projection model, or with a CTF one filtered model per defocus group
    (:func:`cryomtd.em3d.ctfmodel.filtered_model`, box side B); then ``stats`` holds G·R rows,
    group by group (rows g·R … (g+1)·R − 1 are group g's rotations)."""
    xp = xp or Backend("numpy")
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
