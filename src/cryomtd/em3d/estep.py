"""E-step of approximate EM: log-likelihoods of patches × rotations × shifts (docs/design.md §10).

Model of patch y (L×L): y = C R_s Z p_ω + ε, ε ~ N(0, σ² I), with Z the zero-padding of
the B×B projection box to N×N, N = L + B (box in the top-left corner), R_s the circular
shift by s = (s_y, s_x) ∈ {0,…,N−1}² (``np.roll`` by s), C the crop of the first L×L.
Without a CTF the box is the particle's, B = L (N = 2L); with one it is the CTF-filtered
projection's enlarged support, B = L + 2t (:mod:`cryomtd.em3d.ctfmodel`). s = 0 is the
whole box at the patch's corner; shifts with s_y = L or s_x = L leave the crop empty (the
empty-patch states). With Y = Z y and z = Z p_ω, for every shift at once

* cross term  ⟨y, C R_s Z p⟩ = Σ_u Y[u] z[u − s]   = irfft2(Ŷ · conj(ẑ))[s]
* norm term   ‖C R_s Z p‖²  = Σ_u M[u] z²[u − s]   = irfft2(M̂ · conj(ẑ²))[s]  (M = Z 1)

so log p(y, ω, s) = log π_ω + log ρ_s − (‖y‖² − 2·cross + norm)/(2σ²) − (L²/2) log 2πσ².
Two interchangeable ways compute the cross terms: ``method="fft"`` (batched 2L×2L real
FFTs over patches × rotations) and ``method="matmul"`` (one matrix product of the
patches (P, L²) with the stack of all shifted-and-cropped projections (R·4L², L²),
faster for small L on CPUs with a fast BLAS and on GPUs). Responsibilities come from a
float64 log-sum-exp over (ω, s), computed in place. The M-step statistics are
accumulated on the fly: n_{ω,s} = Σ_i w_{iωs} and the back-shifted data image
b_ω[v] = Σ_i Σ_s w_{iωs} Y_i[v + s] (v in the B×B projection-box domain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse

from .backend import Backend

__all__ = [
    "Spectra",
    "Statistics",
    "projection_spectra",
    "log_likelihoods",
    "responsibilities",
    "estep_batch",
    "batch_sizes",
    "shift_index",
]

METHODS = ("fft", "matmul")


def shift_index(L: int, box: int | None = None) -> np.ndarray:
    """(N², L²) int, N = L + ``box`` (default box = L, N = 2L): flat index into the N×N padded
    grid of pixel u of the crop under shift s, i.e. (C R_s z)[u] = z.ravel()[shift_index[s, u]]
    with s = s_y·N + s_x, u = u_y·L + u_x."""
    n = L + (L if box is None else int(box))
    s = np.arange(n)
    u = np.arange(L)
    iy = (u[None, :] - s[:, None]) % n  # (2L, L): row of z seen at crop row u under shift s_y
    flat = iy[:, None, :, None] * n + iy[None, :, None, :]  # (s_y, s_x, u_y, u_x)
    return flat.reshape(n * n, L * L)


@dataclass
class Spectra:
    """Per-iteration quantities of the current projections (backend arrays).

    ``z`` (R, N²) padded projection boxes (flat); ``proj_hat`` (R, N, N//2+1) their spectra
    (``fft``); ``norms`` (R, N, N) float64 ‖C R_s Z p_ω‖²; ``log_prior`` (R, N, N)
    float64 log π_ω + log ρ_s; ``index`` = :func:`shift_index` (``matmul``). ``L`` is the
    patch side, ``box`` the projection box side B (= L without a CTF), N = L + B.
    """

    z: Any
    proj_hat: Any
    norms: Any
    log_prior: Any
    L: int
    method: str = "fft"
    index: Any = None
    scatter: Any = None  # numpy: sparse (4L²·L², 4L²) map (s, u) → padded pixel
    stack: Any = None  # matmul: (R·N², L²) shifted projections, when it fits the budget
    box: int = 0  # projection box side B (0: = L)

    @property
    def B(self) -> int:
        return self.box or self.L

    @property
    def N(self) -> int:
        return self.L + self.B


@dataclass
class Statistics:
    """Sufficient statistics of one E-step (numpy, float64).

    ``count`` patches, ``loglik`` Σ_i log p(y_i), ``n`` (R, N, N) Σ_i w_{iωs},
    ``b`` (R, B, B) back-shifted data images Σ_i Σ_s w_{iωs} Y_i[v + s] (B = box side,
    N = L + B; B = L without a CTF). With CTF groups the rows are (group, rotation) pairs.
    """

    count: float
    loglik: float
    n: np.ndarray
    b: np.ndarray

    @classmethod
    def zeros(cls, R: int, L: int, box: int | None = None) -> Statistics:
        B = L if box is None else int(box)
        return cls(0.0, 0.0, np.zeros((R, L + B, L + B)), np.zeros((R, B, B)))

    def add(self, other: Statistics) -> None:
        self.count += other.count
        self.loglik += other.loglik
        self.n += other.n
        self.b += other.b

    def scaled(self, factor: float) -> Statistics:
        return Statistics(self.count * factor, self.loglik * factor, self.n * factor, self.b * factor)


def pad(images: Any, xp: Backend, dtype: str | None = None, size: int | None = None) -> Any:
    """Z: (..., L, L) → (..., N, N) (``size``; default N = 2L) with the image in the top-left corner."""
    L = images.shape[-1]
    n = 2 * L if size is None else int(size)
    out = xp.zeros(tuple(images.shape[:-2]) + (n, n), dtype=dtype)
    out[..., :L, :L] = images
    return out


def projection_spectra(
    proj: np.ndarray,
    log_rho: np.ndarray,
    log_pi: np.ndarray,
    xp: Backend,
    method: str = "fft",
    stack_mb: float = 256.0,
    L: int | None = None,
) -> Spectra:
    """Per-iteration terms of projection boxes ``proj`` (R, B, B) for patches of side ``L``
    (default B: no CTF), the shift prior ``log_rho`` (N, N), N = L + B, and rotation prior
    ``log_pi`` (R,). With ``method="matmul"`` the (R·N², L²) stack of shifted projections is
    kept when it fits in ``stack_mb``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    R, B, _ = proj.shape
    L = B if L is None else int(L)
    if B < L:
        raise ValueError(f"projection box {B} is smaller than the patch {L}")
    N = L + B
    size = None if B == L else N
    z = pad(xp.asarray(proj), xp, size=size)
    z64 = pad(xp.asarray(proj, "float64"), xp, "float64", size=size)
    mask = np.zeros((N, N))
    mask[:L, :L] = 1.0
    mask_hat = xp.rfft2(xp.asarray(mask, "float64"))
    norms = xp.irfft2(mask_hat[None] * xp.conj(xp.rfft2(z64 * z64)), (N, N))
    if np.shape(log_rho) != (N, N):
        raise ValueError(f"shift prior: expected shape {(N, N)}, got {np.shape(log_rho)}")
    log_prior = xp.asarray(np.asarray(log_pi)[:, None, None] + np.asarray(log_rho)[None], "float64")
    spectra = Spectra(z.reshape(R, -1), xp.rfft2(z) if method == "fft" else None, norms, log_prior, L, method)
    spectra.box = B
    if method == "matmul":
        idx = shift_index(L, B)
        spectra.index = xp.asarray(idx, "int64") if xp.name == "torch" else idx
        if xp.name == "numpy":
            k = idx.size
            spectra.scatter = scipy.sparse.csr_matrix((np.ones(k), (np.arange(k), idx.ravel())), shape=(k, N * N))
        itemsize = 8 if xp.dtype == "float64" else 4
        if R * idx.size * itemsize <= stack_mb * 2**20:  # build the shifted-projection stack once per iteration
            spectra.stack = _stack(spectra, 0, R, xp)
    return spectra


def batch_sizes(R: int, L: int, memory_mb: float, box: int | None = None) -> tuple[int, int]:
    """(patches per batch, rotations per chunk): the float64 (P, R, N, N) log-likelihood
    tensor (N = L + box, default 2L) takes about half the budget, a rotation chunk's
    temporaries (FFT products or the (r·N², L²) stack of shifted projections) the rest."""
    budget = max(memory_mb, 1.0) * 2**20
    N = L + (L if box is None else int(box))
    per_patch = R * N * N * 8 * 1.5  # log-likelihoods/responsibilities (in place) + slack
    P = int(max(1, min(65536, budget * 0.5 // per_patch)))
    per_pr = N * (N // 2 + 1) * 16 * 2 + N * N * 8 * 2  # complex products + real correlations
    per_r = N * N * L * L * 8 * 2  # shifted projection stack (matmul)
    Rb = int(max(1, min(R, budget * 0.5 // (P * per_pr + per_r))))
    return P, Rb


def _stack(spectra: Spectra, r0: int, r1: int, xp: Backend) -> Any:
    """(r·N², L²) all shifted-and-cropped projections C R_s Z p_ω of rotations r0:r1."""
    S = spectra.N * spectra.N
    if spectra.stack is not None:
        return spectra.stack[r0 * S : r1 * S]
    z = spectra.z[r0:r1]
    if xp.name == "numpy":
        q = z[:, spectra.index]
    else:
        q = z[:, spectra.index.reshape(-1)].reshape(r1 - r0, *spectra.index.shape)
    return q.reshape(-1, spectra.L * spectra.L)


def log_likelihoods(
    patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, rot_chunk: int
) -> tuple[Any, Any]:
    """log p(y_i, ω, s) for a batch of patches (P, L, L) → ((P, R, N, N) float64, Ŷ or None)."""
    L, N = spectra.L, spectra.N
    size = None if N == 2 * L else N
    P = patches.shape[0]
    R = spectra.norms.shape[0]
    y64 = xp.asarray(patches, "float64")
    ysq = xp.sum(y64 * y64, (1, 2))
    const = -0.5 * L * L * np.log(2 * np.pi * sigma**2)
    out = xp.zeros((P, R, N, N), dtype="float64")
    y_hat = None
    if spectra.method == "fft":
        y_hat = xp.rfft2(pad(xp.asarray(patches), xp, size=size))
    else:
        y_flat = xp.asarray(patches).reshape(P, L * L)
    for r0 in range(0, R, rot_chunk):  # loop over rotation chunks only; patches × shifts vectorised
        r1 = min(R, r0 + rot_chunk)
        if spectra.method == "fft":
            cross = xp.irfft2(y_hat[:, None] * xp.conj(spectra.proj_hat[None, r0:r1]), (N, N))
        else:
            cross = (y_flat @ _stack(spectra, r0, r1, xp).T).reshape(P, r1 - r0, N, N)
        out[:, r0:r1] = xp.float64(cross) * (1.0 / sigma**2)
        out[:, r0:r1] += spectra.log_prior[None, r0:r1] - (0.5 / sigma**2) * spectra.norms[None, r0:r1]
    out += (const - 0.5 * ysq / sigma**2)[:, None, None, None]
    return out, y_hat


def responsibilities(ll: Any, xp: Backend) -> Any:
    """Turn log-likelihoods (P, R, N, N) into responsibilities IN PLACE; return log p(y_i) (P,).

    Float64 log-sum-exp: shift by the per-patch maximum, exponentiate, normalise."""
    P = ll.shape[0]
    flat = ll.reshape(P, -1)
    mx = flat.max(axis=1) if xp.name == "numpy" else flat.max(dim=1).values
    flat -= mx[:, None]
    if xp.name == "numpy":
        np.exp(flat, out=flat)
        tot = flat.sum(axis=1)
        flat /= tot[:, None]
        return mx + np.log(tot)
    flat.exp_()
    tot = flat.sum(dim=1)
    flat /= tot[:, None]
    return mx + tot.log()


def estep_batch(patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, rot_chunk: int) -> Statistics:
    """Statistics of one batch of patches (P, L, L) at the current model."""
    L, N, B = spectra.L, spectra.N, spectra.B
    size = None if N == 2 * L else N
    P = patches.shape[0]
    R = spectra.norms.shape[0]
    w, y_hat = log_likelihoods(patches, spectra, sigma, xp, rot_chunk)
    lse = responsibilities(w, xp)
    n = xp.sum(w, 0)
    b = []
    if spectra.method == "fft":
        if xp.dtype != "float64":
            y_hat = xp.rfft2(pad(xp.asarray(patches, "float64"), xp, "float64", size=size))
    else:
        y_flat = xp.asarray(patches, "float64").reshape(P, L * L)
    for r0 in range(0, R, rot_chunk):
        r1 = min(R, r0 + rot_chunk)
        if spectra.method == "fft":
            bhat = xp.einsum("ipq,irpq->rpq", y_hat, xp.conj(xp.rfft2(w[:, r0:r1])))
            b.append(xp.to_numpy(xp.irfft2(bhat, (N, N))[:, :B, :B]))
        else:
            # V[ω, s, u] = Σ_i w_iωs y_i[u]; b_ω = Σ_s C R_s Zᵀ-adjoint of V[ω, s] (scatter to the padded grid)
            V = (w[:, r0:r1].reshape(P, -1).T @ y_flat).reshape(r1 - r0, -1)  # (r, N²·L²)
            if xp.name == "numpy":
                bp = np.asarray(V @ spectra.scatter)
            else:
                bp = xp.zeros((r1 - r0, N * N), dtype="float64")
                bp.index_add_(1, spectra.index.reshape(-1), V)
            b.append(xp.to_numpy(bp.reshape(r1 - r0, N, N)[:, :B, :B]))
    return Statistics(
        float(P),
        float(xp.to_numpy(xp.sum(lse, 0))),
        np.asarray(xp.to_numpy(n), dtype=np.float64),
        np.concatenate(b, axis=0).astype(np.float64),
    )
