"""E-step of approximate EM: log-likelihoods of patches × rotations × shifts (DESIGN §7).

Model of patch y (L×L): y = C R_s Z p_ω + ε, ε ~ N(0, σ² I), with Z the zero-padding of
the L×L projection to 2L×2L (projection in the top-left corner), R_s the circular shift
by s = (s_y, s_x) ∈ {0,…,2L−1}² (``np.roll`` by s), C the crop of the first L×L. s = 0
is the whole particle in the patch; shifts with s_y = L or s_x = L leave the crop empty
(the empty-patch states). With Y = Z y and z = Z p_ω, for every shift at once

* cross term  ⟨y, C R_s Z p⟩ = Σ_u Y[u] z[u − s]   = irfft2(Ŷ · conj(ẑ))[s]
* norm term   ‖C R_s Z p‖²  = Σ_u M[u] z²[u − s]   = irfft2(M̂ · conj(ẑ²))[s]  (M = Z 1)

so log p(y, ω, s) = log π_ω + log ρ_s − (‖y‖² − 2·cross + norm)/(2σ²) − (L²/2) log 2πσ².
Responsibilities come from a float64 log-sum-exp over (ω, s). The statistics the M-step
needs are accumulated on the fly: n_{ω,s} = Σ_i w_{iωs} and B̂_ω = Σ_i Ŷ_i · conj(ŵ_iω),
the spectrum of the back-shifted data image b_ω[v] = Σ_i Σ_s w_{iωs} Y_i[v + s].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import Backend

__all__ = ["Spectra", "Statistics", "projection_spectra", "log_likelihoods", "estep_batch", "batch_sizes"]


@dataclass
class Spectra:
    """Per-iteration quantities of the current projections (backend arrays).

    ``proj_hat`` (R, 2L, L+1) spectra of Z p_ω; ``norms`` (R, 2L, 2L) float64 ‖C R_s Z p_ω‖²;
    ``log_prior`` (R, 2L, 2L) float64 log π_ω + log ρ_s.
    """

    proj_hat: Any
    norms: Any
    log_prior: Any
    L: int


@dataclass
class Statistics:
    """Sufficient statistics of one E-step (numpy, float64).

    ``count`` patches, ``loglik`` Σ_i log p(y_i), ``n`` (R, 2L, 2L) Σ_i w_{iωs},
    ``bhat`` (R, 2L, L+1) complex Σ_i Ŷ_i conj(ŵ_iω).
    """

    count: float
    loglik: float
    n: np.ndarray
    bhat: np.ndarray

    @classmethod
    def zeros(cls, R: int, L: int) -> "Statistics":
        return cls(0.0, 0.0, np.zeros((R, 2 * L, 2 * L)), np.zeros((R, 2 * L, L + 1), dtype=np.complex128))

    def add(self, other: "Statistics") -> None:
        self.count += other.count
        self.loglik += other.loglik
        self.n += other.n
        self.bhat += other.bhat

    def scaled(self, factor: float) -> "Statistics":
        return Statistics(self.count * factor, self.loglik * factor, self.n * factor, self.bhat * factor)


def pad(images: Any, xp: Backend) -> Any:
    """Z: (..., L, L) → (..., 2L, 2L) with the image in the top-left corner."""
    L = images.shape[-1]
    out = xp.zeros(tuple(images.shape[:-2]) + (2 * L, 2 * L), dtype=xp.dtype)
    out[..., :L, :L] = images
    return out


def projection_spectra(proj: np.ndarray, log_rho: np.ndarray, log_pi: np.ndarray, xp: Backend) -> Spectra:
    """Spectra and norm terms of projections ``proj`` (R, L, L) for the shift prior
    ``log_rho`` (2L, 2L) and rotation prior ``log_pi`` (R,). Done once per iteration."""
    R, L, _ = proj.shape
    z = pad(xp.asarray(proj), xp)
    proj_hat = xp.rfft2(z)
    z64 = pad(xp.asarray(proj, "float64"), Backend(xp.name, xp.device, "float64", xp.workers))
    mask = np.zeros((2 * L, 2 * L))
    mask[:L, :L] = 1.0
    mask_hat = xp.rfft2(xp.asarray(mask, "float64"))
    norms = xp.irfft2(mask_hat[None] * xp.conj(xp.rfft2(z64 * z64)), (2 * L, 2 * L))
    log_prior = xp.asarray(np.asarray(log_pi)[:, None, None] + np.asarray(log_rho)[None], "float64")
    return Spectra(proj_hat, norms, log_prior, L)


def batch_sizes(R: int, L: int, memory_mb: float) -> tuple[int, int]:
    """(patches per batch, rotations per chunk) so the float64 (P, R, 2L, 2L) log-likelihood
    tensor takes about half the budget and a rotation chunk's FFT temporaries the rest."""
    budget = max(memory_mb, 1.0) * 2**20
    per_patch = R * 4 * L * L * 8 * 2  # log-likelihoods + responsibilities
    P = int(max(1, budget * 0.5 // per_patch))
    per_pr = 2 * L * (L + 1) * 16 * 2 + 4 * L * L * 8 * 2  # complex products + real correlations
    Rb = int(max(1, min(R, budget * 0.5 // (P * per_pr))))
    return P, Rb


def log_likelihoods(patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, rot_chunk: int) -> tuple[Any, Any]:
    """log p(y_i, ω, s) for a batch of patches (P, L, L) → ((P, R, 2L, 2L) float64, Ŷ (P, 2L, L+1))."""
    L = spectra.L
    P = patches.shape[0]
    R = spectra.norms.shape[0]
    Y = pad(xp.asarray(patches), xp)
    y_hat = xp.rfft2(Y)
    y64 = xp.asarray(patches, "float64")
    ysq = xp.sum(y64 * y64, (1, 2))
    const = -0.5 * L * L * np.log(2 * np.pi * sigma**2)
    out = xp.zeros((P, R, 2 * L, 2 * L), dtype="float64")
    for r0 in range(0, R, rot_chunk):  # loop over rotation chunks only; patches × shifts vectorised
        r1 = min(R, r0 + rot_chunk)
        cross = xp.float64(xp.irfft2(y_hat[:, None] * xp.conj(spectra.proj_hat[None, r0:r1]), (2 * L, 2 * L)))
        out[:, r0:r1] = (cross - 0.5 * spectra.norms[None, r0:r1]) / sigma**2 + spectra.log_prior[None, r0:r1]
    out -= (0.5 * ysq / sigma**2)[:, None, None, None]
    return out + const, y_hat


def estep_batch(patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, rot_chunk: int) -> Statistics:
    """Statistics of one batch of patches (P, L, L) at the current model."""
    L = spectra.L
    R = spectra.norms.shape[0]
    ll, y_hat = log_likelihoods(patches, spectra, sigma, xp, rot_chunk)
    lse = xp.logsumexp(ll, (1, 2, 3))  # (P,)
    n = xp.zeros((R, 2 * L, 2 * L), dtype="float64")
    bhat = []
    if xp.dtype == "float64":
        y_hat64 = y_hat
    else:
        y_hat64 = xp.rfft2(pad(xp.asarray(patches, "float64"), Backend(xp.name, xp.device, "float64", xp.workers)))
    for r0 in range(0, R, rot_chunk):
        r1 = min(R, r0 + rot_chunk)
        w = xp.exp(ll[:, r0:r1] - lse[:, None, None, None])  # (P, r, 2L, 2L) responsibilities
        n[r0:r1] = xp.sum(w, 0)
        bhat.append(xp.to_numpy(xp.einsum("ipq,irpq->rpq", y_hat64, xp.conj(xp.rfft2(w)))))
    return Statistics(float(patches.shape[0]), float(xp.to_numpy(xp.sum(lse, 0))), xp.to_numpy(n).astype(np.float64),
                      np.concatenate(bhat, axis=0).astype(np.complex128))
