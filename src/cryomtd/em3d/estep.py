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
Two interchangeable ways compute the cross terms: ``method="fft"`` and ``method="matmul"``
(one matrix product of the patches (P, L²) with the stack of all shifted-and-cropped
projections (R·N², L²), the faster one on GPUs). The M-step statistics are accumulated on
the fly: n_{ω,s} = Σ_i w_{iωs} and the back-shifted data image
b_ω[v] = Σ_i Σ_s w_{iωs} Y_i[v + s] (v in the B×B projection-box domain).

On numpy, ``fft`` is the **fused E-step** (:func:`_fused_estep`; docs/em3d.md "E-step
throughput"): the cross terms of the N − 1 linear lags per axis d = u − v ∈ (−B, L) — the
non-empty shifts, s = d mod N — by real FFTs on an M×M lag grid (M = :func:`fft_size`
(N − 1), 7-smooth; :func:`lag_grid` maps lags to shifts), the empty crops in closed form,
and per rotation chunk one inverse FFT, the bias, max, exp and sum in cache, the
responsibilities' normalisation folded into n and b (one forward FFT per pair for b); all
float64. With ``keep`` (:func:`estep_masses`, :class:`PruneState`) only the chosen (patch,
rotation) pairs are evaluated (rotation pruning). On torch, ``fft`` is the plain batched
N×N FFT cross-correlation with an in-place float64 log-sum-exp.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import scipy.sparse
import scipy.special

from .backend import Backend, irfft2, rfft2

__all__ = [
    "Spectra",
    "Statistics",
    "projection_spectra",
    "log_likelihoods",
    "responsibilities",
    "estep_batch",
    "batch_sizes",
    "shift_index",
    "estep_masses",
    "rotation_masses",
    "local_rotations",
    "PruneState",
    "prune_rotations",
    "fft_size",
    "lag_grid",
]

METHODS = ("fft", "matmul")

#: Lag-grid states per rotation chunk of the fused FFT E-step: (P, r, M, M) float64 of about
#: 2 MB, so that one chunk's passes (transform, bias, max, exp, sum) run in the core's cache.
CHUNK_ELEMENTS = 1 << 18


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
    (``fft`` on torch; on numpy the conjugate spectra on the M×M lag grid, (R, M, M//2+1));
    ``norms`` (R, N, N) float64 ‖C R_s Z p_ω‖²; ``log_prior`` (R, N, N) float64 log π_ω + log ρ_s;
    ``index`` = :func:`shift_index` (``matmul``). ``L`` is the patch side, ``box`` the projection
    box side B (= L without a CTF), N = L + B.
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
    M: int = 0  # fused fft: side of the linear-lag correlation grid (≥ N − 1, prime factors ≤ 7)
    lags: Any = None  # fused fft: (M,) model shift of each lag index, −1 where no lag exists
    log_empty: float = 0.0  # fused fft: log Σ_{ω, s empty} π_ω ρ_s
    _bias: Any = None  # fused fft: (σ, (R, M, M) log prior − norm/(2σ²) on the lag grid)

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
    fused = method == "fft" and xp.name == "numpy"
    z_hat = xp.rfft2(z) if method == "fft" and not fused else None
    spectra = Spectra(z.reshape(R, -1), z_hat, norms, log_prior, L, method)
    spectra.box = B
    if fused:  # linear-lag grid: the M² non-empty shifts (and M² − (N − 1)² impossible lags)
        M = fft_size(N - 1)
        spectra.M, spectra.lags = M, lag_grid(L, B, M)
        spectra.proj_hat = np.conj(xp.rfft2(pad(xp.asarray(proj), xp, size=M)))  # conj(ẑ)
        lp = np.asarray(log_prior)
        empty = np.concatenate([lp[:, L, :].ravel(), np.delete(lp[:, :, L], L, axis=1).ravel()])
        spectra.log_empty = float(scipy.special.logsumexp(empty)) if np.isfinite(empty).any() else -np.inf
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


def auto_method(xp: Backend) -> str:
    """The E-step method of ``em.advanced.method: auto``: the fused FFT path on CPUs (faster than
    matmul at every L measured, 5–11), the shifted-projection matmul on CUDA."""
    return "matmul" if xp.device == "cuda" else "fft"


def fft_size(n: int) -> int:
    """The smallest m ≥ n whose prime factors are all ≤ 7 (a fast FFT length)."""
    m = max(1, int(n))
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def lag_grid(L: int, B: int, M: int) -> np.ndarray:
    """(M,) int: the model shift s ∈ [0, N) (N = L + B) of index m of the M-point lag grid, −1
    where no lag exists.

    Crop pixel u ∈ [0, L) meets projection pixel v ∈ [0, B) at the linear lag d = u − v ∈
    (−B, L); the model's circular shift is s = d mod N and its correlation index m = d mod M
    (M ≥ N − 1 = the number of lags, so no two lags alias). The one shift with no lag, s = L
    on an axis, is the empty crop; m ∈ [L, M − B] (only when M > N − 1) holds no lag."""
    N = L + B
    if M < N - 1:
        raise ValueError(f"lag grid {M} < N − 1 = {N - 1}")
    m = np.arange(M)
    lags = np.full(M, -1)
    lags[:L] = m[:L]
    neg = m >= M - B + 1
    lags[neg] = m[neg] - M + N
    return lags


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


def _lag_bias(spectra: Spectra, sigma: float) -> np.ndarray:
    """(R, M, M) float64 log π_ω + log ρ_s − ‖C R_s Z p_ω‖²/(2σ²) on the lag grid (−inf where no lag)."""
    if spectra._bias is not None and spectra._bias[0] == sigma:
        return spectra._bias[1]
    lags = spectra.lags
    ok = lags >= 0
    li = np.where(ok, lags, 0)
    norms = np.asarray(spectra.norms)[:, li][:, :, li]
    bias = np.asarray(spectra.log_prior)[:, li][:, :, li] - (0.5 / sigma**2) * norms
    bias[:, ~ok, :] = -np.inf
    bias[:, :, ~ok] = -np.inf
    spectra._bias = (sigma, bias)
    return bias


_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCAL = threading.local()


def _map(f, items: list, workers: int) -> list:
    """``[f(x) for x in items]`` on ``workers`` threads (numpy and the FFTs release the GIL);
    the pools persist, so each thread keeps its scratch buffers (:func:`_scratch`)."""
    if workers <= 1 or len(items) <= 1:
        return [f(x) for x in items]
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cryomtd-estep")
    return list(_POOLS[workers].map(f, items))


def _scratch(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A per-thread reusable buffer (fresh pages cost a page fault per 4 kB, about as much as the
    arithmetic on them): the first ``prod(shape)`` entries of a cached flat array, as ``shape``."""
    cache = _LOCAL.__dict__
    size = int(np.prod(shape))
    buf = cache.get(name)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = cache[name] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def release_buffers() -> None:
    """Free the calling thread's E-step scratch buffers (the worker threads keep theirs)."""
    _LOCAL.__dict__.clear()


def _chunks(R: int, rot_chunk: int) -> list[tuple[int, int]]:
    return [(r0, min(R, r0 + rot_chunk)) for r0 in range(0, R, max(1, rot_chunk))]


def _cross_plus_bias(
    y_hat: np.ndarray, spectra: Spectra, bias: np.ndarray, r0: int, r1: int, out: np.ndarray | None = None
) -> np.ndarray:
    """(P, r, M, M) float64 a = ⟨y, C R_s Z p_ω⟩/σ² + bias on the lag grid (``y_hat`` carries 1/σ²)."""
    M = spectra.M
    P = y_hat.shape[0]
    prod = _scratch("prod", (P, r1 - r0, M, M // 2 + 1), np.result_type(y_hat, spectra.proj_hat))
    np.multiply(y_hat[:, None], spectra.proj_hat[None, r0:r1], out=prod)  # proj_hat holds conj(ẑ)
    if prod.dtype == np.complex128:
        a = irfft2(prod, (M, M), out=out, overwrite=True)
    else:  # float32 cross terms, added to the float64 bias
        a = irfft2(prod, (M, M), overwrite=True).astype(np.float64)
        if out is not None:
            out[...] = a
            a = out
    a += bias[None, r0:r1]
    return a


def _fused_prepare(patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend) -> tuple[np.ndarray, Any]:
    """Per-patch constant −(L²/2) log 2πσ² − ‖y‖²/(2σ²) (P,) and Ŷ/σ² on the lag grid."""
    L = spectra.L
    y64 = np.asarray(patches, dtype=np.float64)
    const = -0.5 * L * L * np.log(2 * np.pi * sigma**2) - (0.5 / sigma**2) * np.einsum("ijk,ijk->i", y64, y64)
    y_hat = xp.rfft2(pad(xp.asarray(patches), xp, size=spectra.M))
    y_hat *= 1.0 / sigma**2
    return const, y_hat


def _fused_loglik(patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, rot_chunk: int) -> np.ndarray:
    """(P, R, N, N) float64 log p(y_i, ω, s) from the lag grid (the empty crops: cross = norm = 0)."""
    R = spectra.norms.shape[0]
    const, y_hat = _fused_prepare(patches, spectra, sigma, xp)
    bias = _lag_bias(spectra, sigma)
    out = np.asarray(spectra.log_prior)[None] + const[:, None, None, None]
    m = np.flatnonzero(spectra.lags >= 0)
    s = spectra.lags[m]
    for r0, r1 in _chunks(R, rot_chunk):
        a = _cross_plus_bias(y_hat, spectra, bias, r0, r1)[:, :, m[:, None], m[None, :]]
        out[:, r0:r1, s[:, None], s[None, :]] = a + const[:, None, None, None]
    return out


def _fused_estep(
    patches: np.ndarray,
    spectra: Spectra,
    sigma: float,
    xp: Backend,
    rot_chunk: int,
    masses: bool = False,
    statistics: bool = True,
) -> Statistics | tuple[Statistics, np.ndarray] | np.ndarray:
    """The whole E-step of a batch on the lag grid, two passes over rotation chunks.

    Pass 1 per chunk: a = cross/σ² + bias (one inverse FFT per pair), the chunk maximum c_ic per
    patch, e = exp(a − c_ic) and its sum t_ic. Then per patch the float64
    log-sum-exp over all chunks and the empty-crop states, log p(y_i) = const_i + m_i + log T_i,
    T_i = Σ_c t_ic e^{c_ic − m_i} + e^{log E − m_i}, and the factors g_ic = e^{c_ic − m_i}/T_i
    that turn e into responsibilities (``statistics=False``: stop here and return the (P, R)
    posterior masses of the rotations, :func:`rotation_masses`). Pass 2 per chunk: n = Σ_i g_ic e_i (one matrix-vector
    product) and b̂_ω = Σ_i g_ic Ŷ_i conj(ê_iω) (one forward FFT per pair). The empty-crop
    states add n_ωs = π_ω ρ_s Σ_i e^{const_i − log p(y_i)} and nothing to b.
    """
    B, N, M = spectra.B, spectra.N, spectra.M
    P = patches.shape[0]
    R = spectra.norms.shape[0]
    const, y_hat = _fused_prepare(patches, spectra, sigma, xp)
    bias = _lag_bias(spectra, sigma)
    chunks = _chunks(R, max(1, min(rot_chunk, CHUNK_ELEMENTS // (P * M * M))))

    E = _scratch("weights", (P * R * M * M,), np.float64)  # e = exp(a − c_ic), chunk after chunk

    def block(c: tuple[int, int]) -> np.ndarray:  # chunk c's (P, r, M, M), contiguous (2× faster passes)
        return E[P * c[0] * M * M : P * c[1] * M * M].reshape(P, c[1] - c[0], M, M)

    def first(c: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        e = _cross_plus_bias(y_hat, spectra, bias, *c, out=block(c))
        cmax = e.reshape(P, -1).max(axis=1)
        cmax[~np.isfinite(cmax)] = 0.0  # a chunk of impossible states only (π = 0): e = 0
        e -= cmax[:, None, None, None]
        with np.errstate(under="ignore"):
            np.exp(e, out=e)
        return cmax, e.reshape(P, c[1] - c[0], -1).sum(axis=2)

    parts = _map(first, chunks, xp.workers)
    cmax = np.stack([p[0] for p in parts])  # (chunks, P)
    tot = np.stack([p[1].sum(axis=1) for p in parts])
    mx = np.maximum(cmax.max(axis=0), spectra.log_empty)
    with np.errstate(under="ignore"):
        scale = np.exp(cmax - mx)  # (chunks, P)
        T = (tot * scale).sum(axis=0) + np.exp(spectra.log_empty - mx)
    lse = const + mx + np.log(T)
    g = scale / T
    mass = np.concatenate([p[1] * gk[:, None] for p, gk in zip(parts, g)], axis=1) if masses or not statistics else None
    if not statistics:
        return mass
    y_w = np.conj(np.asarray(y_hat * sigma**2, dtype=np.complex128))  # conj(Ŷ)

    n_lag = np.empty((R, M * M), dtype=np.float64)
    b_hat = np.empty((R, M, M // 2 + 1), dtype=np.complex128)

    def second(k: int) -> None:
        r0, r1 = chunks[k]
        e = block(chunks[k])
        n_lag[r0:r1] = (g[k] @ e.reshape(P, -1)).reshape(r1 - r0, -1)
        e_hat = rfft2(e, out=_scratch("prod", (P, r1 - r0, M, M // 2 + 1), np.complex128))
        b_hat[r0:r1] = np.conj(np.einsum("ipq,irpq->rpq", y_w * g[k][:, None, None], e_hat, optimize=True))

    _map(second, list(range(len(chunks))), xp.workers)
    b = irfft2(b_hat, (M, M))[:, :B, :B]
    n = np.empty((R, N, N))
    G = float(scipy.special.logsumexp(const - lse))
    with np.errstate(under="ignore"):
        n[:] = np.exp(np.asarray(spectra.log_prior) + G)  # right on the empty crops, overwritten elsewhere
    m = np.flatnonzero(spectra.lags >= 0)
    s = spectra.lags[m]
    n[:, s[:, None], s[None, :]] = n_lag.reshape(R, M, M)[:, m[:, None], m[None, :]]
    stats = Statistics(float(P), float(lse.sum()), n, np.ascontiguousarray(b))
    return (stats, mass) if masses else stats


def _pruned_estep(
    patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, keep: np.ndarray
) -> tuple[Statistics, np.ndarray]:
    """:func:`_fused_estep` over the (patch, rotation) pairs of ``keep`` (P, R) only: the
    non-empty states of the other pairs are left out (probability 0), the empty crops are kept
    for every rotation. The pairs run rotation-major in blocks of about :data:`CHUNK_ELEMENTS`
    states; per-patch reductions by ``bincount``/``maximum.at``, per-rotation sums by one sparse
    (rotations × pairs) product per block."""
    B, N, M = spectra.B, spectra.N, spectra.M
    Mh = M // 2 + 1
    P = patches.shape[0]
    R = spectra.norms.shape[0]
    const, y_hat = _fused_prepare(patches, spectra, sigma, xp)
    bias = _lag_bias(spectra, sigma)
    rr, ii = np.nonzero(np.asarray(keep, dtype=bool).T)  # rotation-major pairs
    K = rr.size
    step = max(1, CHUNK_ELEMENTS // (M * M))
    blocks = [(k0, min(K, k0 + step)) for k0 in range(0, K, step)]
    E = _scratch("weights", (K, M, M), np.float64)

    def first(blk: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        k0, k1 = blk
        prod = _scratch("prod", (k1 - k0, M, Mh), np.result_type(y_hat, spectra.proj_hat))
        np.multiply(y_hat[ii[k0:k1]], spectra.proj_hat[rr[k0:k1]], out=prod)
        if prod.dtype == np.complex128:
            e = irfft2(prod, (M, M), out=E[k0:k1], overwrite=True)
        else:
            e = E[k0:k1]
            e[...] = irfft2(prod, (M, M), overwrite=True)
        e += bias[rr[k0:k1]]
        pm = e.reshape(k1 - k0, -1).max(axis=1)
        pm[~np.isfinite(pm)] = 0.0
        e -= pm[:, None, None]
        with np.errstate(under="ignore"):
            np.exp(e, out=e)
        return pm, e.reshape(k1 - k0, -1).sum(axis=1)

    parts = _map(first, blocks, xp.workers)
    pm = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    t = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    mx = np.full(P, spectra.log_empty)
    np.maximum.at(mx, ii, pm)
    with np.errstate(under="ignore"):
        scale = np.exp(pm - mx[ii])
        T = np.bincount(ii, weights=t * scale, minlength=P) + np.exp(spectra.log_empty - mx)
    lse = const + mx + np.log(T)
    g = scale / T[ii]
    y_w = np.conj(np.asarray(y_hat * sigma**2, dtype=np.complex128))

    def second(blk: tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray]:
        k0, k1 = blk
        lo, hi = int(rr[k0]), int(rr[k1 - 1]) + 1
        S = scipy.sparse.csr_matrix((g[k0:k1], (rr[k0:k1] - lo, np.arange(k1 - k0))), shape=(hi - lo, k1 - k0))
        e = E[k0:k1]
        e_hat = rfft2(e, out=_scratch("prod", (k1 - k0, M, Mh), np.complex128))
        e_hat *= y_w[ii[k0:k1]]
        return lo, S @ e.reshape(k1 - k0, -1), S @ e_hat.reshape(k1 - k0, -1)

    n_lag = np.zeros((R, M * M))
    b_hat = np.zeros((R, M * Mh), dtype=np.complex128)
    for lo, n_part, b_part in _map(second, blocks, xp.workers):
        n_lag[lo : lo + n_part.shape[0]] += n_part
        b_hat[lo : lo + b_part.shape[0]] += b_part
    b = irfft2(np.conj(b_hat).reshape(R, M, Mh), (M, M))[:, :B, :B]
    n = np.empty((R, N, N))
    G = float(scipy.special.logsumexp(const - lse))
    with np.errstate(under="ignore"):
        n[:] = np.exp(np.asarray(spectra.log_prior) + G)
    m = np.flatnonzero(spectra.lags >= 0)
    s = spectra.lags[m]
    n[:, s[:, None], s[None, :]] = n_lag.reshape(R, M, M)[:, m[:, None], m[None, :]]
    mass = np.zeros((P, R))
    mass[ii, rr] = t * g
    return Statistics(float(P), float(lse.sum()), n, np.ascontiguousarray(b)), mass


def estep_masses(
    patches: np.ndarray,
    spectra: Spectra,
    sigma: float,
    xp: Backend,
    rot_chunk: int,
    keep: np.ndarray | None = None,
) -> tuple[Statistics, np.ndarray]:
    """:func:`estep_batch` that also returns each patch's posterior mass per rotation (P, R)
    (its non-empty states; Σ_ω mass + the empty-crop mass = 1), evaluating only the (patch,
    rotation) pairs of ``keep`` (P, R) bool when given (see :func:`prune_rotations`). The fused
    FFT path (``method="fft"`` on numpy) only."""
    if not spectra.M:
        raise ValueError("rotation masses and pruning need the fused fft E-step (method='fft', numpy)")
    if keep is None or np.all(keep):
        return _fused_estep(patches, spectra, sigma, xp, rot_chunk, masses=True)
    return _pruned_estep(patches, spectra, sigma, xp, keep)


def rotation_masses(patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, rot_chunk: int) -> np.ndarray:
    """(P, R) posterior mass of each rotation for each patch (its non-empty states), from the
    first pass of the fused E-step only (no M-step statistics): the coarse pass of local
    rotation refinement. Numpy ``method="fft"`` only."""
    if not spectra.M:
        raise ValueError("rotation masses need the fused fft E-step (method='fft', numpy)")
    return _fused_estep(patches, spectra, sigma, xp, rot_chunk, statistics=False)


def local_rotations(coarse_mass: np.ndarray, parent: np.ndarray, top: int) -> np.ndarray:
    """(P, R_fine) bool: per patch the fine-grid rotations whose nearest coarse rotation
    (``parent`` (R_fine,) int, :func:`cryomtd.rotations.nearest`) is one of the patch's ``top``
    most probable coarse rotations (``coarse_mass`` (P, R_coarse))."""
    coarse_mass = np.asarray(coarse_mass, dtype=np.float64)
    P, Rc = coarse_mass.shape
    k = int(min(max(1, top), Rc))
    best = np.argpartition(-coarse_mass, k - 1, axis=1)[:, :k]
    chosen = np.zeros((P, Rc), dtype=bool)
    np.put_along_axis(chosen, best, True, axis=1)
    return chosen[:, np.asarray(parent, dtype=np.int64)]


def prune_rotations(mass: np.ndarray, epsilon: float) -> np.ndarray:
    """(P, R) bool: per patch the rotations to keep, dropping the least probable ones whose
    masses add up to less than ``epsilon`` (ε = 0 keeps every rotation)."""
    mass = np.asarray(mass, dtype=np.float64)
    order = np.argsort(mass, axis=1)
    tail = np.cumsum(np.take_along_axis(mass, order, axis=1), axis=1)
    keep = np.ones(mass.shape, dtype=bool)
    np.put_along_axis(keep, order, tail >= epsilon, axis=1)
    return keep


class PruneState:
    """Rotation pruning across EM iterations: per patch, the rotations kept at its last visit.

    ``n`` patches, ``R`` rotations, ``epsilon`` ε. The keep sets are stored as packed bits
    (n·⌈R/8⌉ bytes). A patch not yet visited is evaluated at every rotation; after each
    visit its keep set becomes :func:`prune_rotations` of its posterior masses, so with
    ``active`` it is evaluated only there. ``evaluated``/``total`` count (patch, rotation)
    pairs evaluated/possible (the achieved pruning)."""

    def __init__(self, n: int, R: int, epsilon: float) -> None:
        self.R, self.epsilon = int(R), float(epsilon)
        self.bits = np.zeros((int(n), (self.R + 7) // 8), dtype=np.uint8)
        self.visited = np.zeros(int(n), dtype=bool)
        self.evaluated = 0
        self.total = 0

    def fraction(self, reset: bool = True) -> float:
        """Evaluated / possible (patch, rotation) pairs since the last reset."""
        f = self.evaluated / max(1, self.total)
        if reset:
            self.evaluated = self.total = 0
        return f

    def keep(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), R) bool keep sets (all True for patches not yet visited)."""
        keep = np.unpackbits(self.bits[ids], axis=1, count=self.R).astype(bool)
        keep[~self.visited[ids]] = True
        return keep

    def estep(
        self,
        ids: np.ndarray,
        patches: np.ndarray,
        spectra: Spectra,
        sigma: float,
        xp: Backend,
        rot_chunk: int,
        active: bool = True,
    ) -> Statistics:
        """:func:`estep_masses` of the batch (patch numbers ``ids``), pruned when ``active``; updates the keep sets."""
        keep = self.keep(ids) if active else None
        stats, mass = estep_masses(patches, spectra, sigma, xp, rot_chunk, keep)
        self.evaluated += int(keep.sum()) if keep is not None else mass.size
        self.total += mass.size
        self.bits[ids] = np.packbits(prune_rotations(mass, self.epsilon), axis=1)
        self.visited[ids] = True
        return stats


def log_likelihoods(
    patches: np.ndarray, spectra: Spectra, sigma: float, xp: Backend, rot_chunk: int
) -> tuple[Any, Any]:
    """log p(y_i, ω, s) for a batch of patches (P, L, L) → ((P, R, N, N) float64, Ŷ or None)."""
    if spectra.M:
        return _fused_loglik(patches, spectra, sigma, xp, rot_chunk), None
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
    if spectra.M:
        return _fused_estep(patches, spectra, sigma, xp, rot_chunk)
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
