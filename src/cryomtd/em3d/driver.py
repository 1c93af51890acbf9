"""The EM loop: batch EM and stochastic approximate EM, with checkpoint/resume.

Batch EM runs the E-step over all patches every iteration. Stochastic approximate EM
(SAEM) draws a random fraction of the patches per iteration and smooths the per-patch
sufficient statistics, S_k = S_{k−1} + η_k (Ŝ_k − S_{k−1}), with step size η_k = 1 for
the first ``burn_in`` iterations and η_k = (k − burn_in + 1)^(−decay) afterwards; the
M-step solves with N·S_k (N = all patches). Every iteration ends with an atomic
checkpoint (parameters, smoothed statistics, history, the state of the subset RNG), so a
killed run restarted with the same arguments continues from the last finished iteration
and produces the same numbers as an uninterrupted run.

``loglik[k]`` is the mean log-likelihood per patch, log p(y | θ_k) / N, at the parameters
entering iteration k (for SAEM: over that iteration's subset). Batch EM never decreases it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryomtd.io import InputError, save_npz
from cryomtd.progress import progress
from cryomtd.seeding import rng

from .backend import get_backend
from .estep import Statistics, batch_sizes, estep_batch, projection_spectra
from .model import ProjectionModel, WignerBlocks
from .mstep import mstep
from .patches import PatchSource

__all__ = ["EMResult", "em", "run", "step_size"]

log = logging.getLogger("cryomtd.em3d")


@dataclass
class EMResult:
    """Outcome of :func:`em`.

    ``coef`` (size,) final coefficients; ``rho`` (2L, 2L) shift prior (index = shift s);
    ``pi`` (R,) rotation prior; ``loglik`` mean log-likelihood per patch per iteration;
    ``objective`` loglik + log prior / N (MAP-EM); ``estep_s``/``mstep_s`` seconds per
    iteration; ``step`` SAEM step sizes; ``iterations`` done; ``converged`` (relative
    loglik change < tol); ``n_patches``; ``wall_time_s`` (sum over iterations, all runs).
    """

    coef: np.ndarray
    rho: np.ndarray
    pi: np.ndarray
    loglik: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    estep_s: list[float] = field(default_factory=list)
    mstep_s: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    n_patches: int = 0
    resumed_from: int = 0

    @property
    def wall_time_s(self) -> float:
        return float(sum(self.estep_s) + sum(self.mstep_s))

    @property
    def empty_probability(self) -> float:
        """Probability of the empty patch under ρ: Σ ρ_s over shifts with s_y = L or s_x = L."""
        L = self.rho.shape[0] // 2
        return float(self.rho[L, :].sum() + self.rho[:, L].sum() - self.rho[L, L])

    def trace(self) -> dict[str, Any]:
        """The JSON-ready per-iteration record (``em_trace.json``)."""
        return {"empty_probability": self.empty_probability, "loglik": self.loglik, "objective": self.objective, "estep_s": self.estep_s,
                "mstep_s": self.mstep_s, "step": self.step, "iterations": self.iterations,
                "converged": self.converged, "n_patches": self.n_patches,
                "resumed_from": self.resumed_from, "wall_time_s": self.wall_time_s}


def step_size(k: int, burn_in: int, decay: float) -> float:
    """SAEM step η_k for iteration k (1-based): 1 for k ≤ burn_in, then (k − burn_in + 1)^(−decay)."""
    return 1.0 if k <= burn_in else float((k - burn_in + 1) ** (-decay))


def _fingerprint(**parts: Any) -> str:
    h = hashlib.sha256()
    for key in sorted(parts):
        v = parts[key]
        h.update(key.encode())
        if isinstance(v, np.ndarray):
            h.update(np.ascontiguousarray(v).tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def _save_checkpoint(path: Path, res: EMResult, stats: Statistics | None,
                     gen: np.random.Generator, fingerprint: str) -> None:
    arrays: dict[str, Any] = {
        "coef": res.coef, "rho": res.rho, "pi": res.pi,
        "history": np.array(json.dumps({k: v for k, v in res.trace().items() if k != "wall_time_s"})),
        "rng_state": np.array(json.dumps(gen.bit_generator.state)),
        "fingerprint": np.array(fingerprint),
    }
    if stats is not None:
        arrays.update(stat_count=stats.count, stat_loglik=stats.loglik, stat_n=stats.n, stat_b=stats.b)
    save_npz(path, **arrays)


def _load_checkpoint(path: Path, fingerprint: str) -> tuple[EMResult, Statistics | None, dict] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if str(z["fingerprint"]) != fingerprint:
                log.warning("checkpoint %s belongs to other inputs or settings; starting afresh", path)
                return None
            hist = json.loads(str(z["history"]))
            res = EMResult(coef=z["coef"].copy(), rho=z["rho"].copy(), pi=z["pi"].copy())
            for key in ("loglik", "objective", "estep_s", "mstep_s", "step"):
                setattr(res, key, list(hist[key]))
            res.iterations, res.converged, res.n_patches = hist["iterations"], hist["converged"], hist["n_patches"]
            stats = None
            if "stat_n" in z.files:
                stats = Statistics(float(z["stat_count"]), float(z["stat_loglik"]), z["stat_n"].copy(), z["stat_b"].copy())
            rng_state = json.loads(str(z["rng_state"]))
    except (OSError, KeyError, ValueError) as exc:
        log.warning("checkpoint %s unreadable (%s); starting afresh", path, exc)
        return None
    return res, stats, rng_state


def em(source: PatchSource, model: ProjectionModel, wigner: WignerBlocks, *, sigma: float,
       x0: np.ndarray | None = None, iterations: int = 20, tol: float = 1e-6, fraction: float = 1.0,
       burn_in: int = 3, decay: float = 0.6, prior_weight: float = 0.0, learn_rotation_prior: bool = False,
       seed: int = 0, checkpoint: str | os.PathLike | None = None, backend: str = "auto",
       dtype: str = "float64", method: str = "auto", memory_mb: float = 1024.0, threads: int = 1,
       callback: Callable[[int, EMResult], None] | None = None, show_progress: bool | None = None) -> EMResult:
    """Approximate EM over rotations (the ``wigner`` blocks) × shifts for the patches of ``source``.

    Parameters: ``sigma`` noise standard deviation; ``x0`` initial coefficients (default: a
    low-pass random volume from ``rng(seed, "em3d", 0)`` matched to the data power);
    ``fraction`` of patches per iteration (1 = batch EM, < 1 = SAEM with ``burn_in``/``decay``);
    ``method`` of the E-step cross terms: ``fft``, ``matmul`` or ``auto`` (matmul for L ≤ 8 or on
    CUDA, else fft); ``tol`` stop when |Δloglik| ≤ tol·|loglik| (0 disables); ``prior_weight`` λ of the
    Gaussian prior N(0, λ⁻¹ I) on the coefficients; ``checkpoint`` npz path written after
    every iteration and resumed from when it matches these inputs; ``backend``
    numpy/torch/cuda/auto; ``memory_mb`` budget that sizes the patch and rotation batches;
    ``callback(k, result)`` after each checkpoint.
    """
    if sigma <= 0:
        raise InputError(f"em.sigma: expected a positive noise level, got {sigma}")
    if not 0 < fraction <= 1:
        raise InputError(f"em.fraction: expected 0 < fraction <= 1, got {fraction}")
    if iterations < 1:
        raise InputError(f"em.iterations: expected >= 1, got {iterations}")
    xp = get_backend(backend, dtype, workers=threads)
    L, N = model.L, source.n
    if method == "auto":  # measured on 2 CPU cores: matmul wins at L = 7, fft at L = 11 (docs/em3d.md)
        method = "matmul" if (L <= 8 or xp.device == "cuda") else "fft"
    if method not in ("fft", "matmul"):
        raise InputError(f"em.method: expected auto, fft or matmul, got {method!r}")
    R = wigner[model.blocks[0][0]].shape[0]
    P_batch, rot_chunk = batch_sizes(R, L, memory_mb)
    if x0 is None:
        power = max(source.mean_power() - sigma**2, 1e-3 * sigma**2)
        x0 = model.lowpass_random(rng(seed, "em3d", 0), 2.0 * power)
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.shape != (model.size,):
        raise InputError(f"em.x0: expected {model.size} coefficients, got shape {x0.shape}")
    stochastic = fraction < 1.0
    fp = _fingerprint(x0=x0, psi_shape=model.psi.shape, psi_sum=float(model.psi.sum()), R=R,
                      wsum=float(sum(float(np.abs(w).sum()) for w in wigner)), n=N, sigma=float(sigma),
                      fraction=float(fraction), burn_in=int(burn_in), decay=float(decay),
                      prior=float(prior_weight), learn_pi=bool(learn_rotation_prior), seed=int(seed),
                      data=float(source.get(np.arange(min(N, 8))).sum()))
    gen = rng(seed, "em3d", 1)  # patch subsets of SAEM
    res = EMResult(coef=x0.copy(), rho=np.full((2 * L, 2 * L), 1.0 / (4 * L * L)), pi=np.full(R, 1.0 / R), n_patches=N)
    smoothed: Statistics | None = None
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None:
        loaded = _load_checkpoint(ck, fp)
        if loaded is not None:
            res, smoothed, state = loaded
            gen.bit_generator.state = state
            res.resumed_from = res.iterations
            log.info("resuming from %s at iteration %d", ck, res.iterations)
    n_sub = N if not stochastic else max(1, int(round(fraction * N)))
    bar = progress(total=iterations, desc="em", enable=show_progress, initial=min(res.iterations, iterations))
    while res.iterations < iterations and not res.converged:
        k = res.iterations + 1
        t0 = time.perf_counter()
        idx = np.arange(N) if not stochastic else np.sort(gen.choice(N, size=n_sub, replace=False))
        with np.errstate(divide="ignore"):
            spectra = projection_spectra(model.project(res.coef, wigner), np.log(res.rho), np.log(res.pi), xp,
                                         method, stack_mb=memory_mb / 4)
        stats = Statistics.zeros(R, L)
        for _, patches in source.batches(idx, P_batch):
            stats.add(estep_batch(patches, spectra, sigma, xp, rot_chunk))
        xp.sync()
        t1 = time.perf_counter()
        eta = step_size(k, burn_in, decay) if stochastic else 1.0
        per_patch = stats.scaled(1.0 / stats.count)
        if smoothed is None or eta >= 1.0:
            smoothed = per_patch
        else:
            smoothed = Statistics(1.0, smoothed.loglik + eta * (per_patch.loglik - smoothed.loglik),
                                  smoothed.n + eta * (per_patch.n - smoothed.n),
                                  smoothed.b + eta * (per_patch.b - smoothed.b))
        new = mstep(smoothed.scaled(N), model, wigner, sigma, prior_weight=prior_weight,
                    learn_rotation_prior=learn_rotation_prior, xp=xp)
        t2 = time.perf_counter()
        ll = per_patch.loglik
        prior_term = -0.5 * prior_weight * float(res.coef @ res.coef) / N
        res.loglik.append(ll)
        res.objective.append(ll + prior_term)
        res.estep_s.append(t1 - t0)
        res.mstep_s.append(t2 - t1)
        res.step.append(eta)
        res.coef, res.rho = new["coef"], new["rho"]
        if new["pi"] is not None:
            res.pi = new["pi"]
        res.iterations = k
        if tol > 0 and len(res.objective) >= 2:
            prev, cur = res.objective[-2], res.objective[-1]
            res.converged = abs(cur - prev) <= tol * max(abs(prev), 1e-300)
        if ck is not None:
            _save_checkpoint(ck, res, smoothed if stochastic else None, gen, fp)
        log.info("em iteration %d: loglik/patch %.6f, E %.2fs, M %.2fs, step %.3f", k, ll, t1 - t0, t2 - t1, eta)
        bar.update(1)
        bar.set_postfix(loglik=f"{ll:.4g}")
        if callback is not None:
            callback(k, res)
    bar.close()
    return res


def run(micrographs: Sequence[np.ndarray | str | os.PathLike], basis: Any, *, sigma: float,
        grid_step: float = 30.0, x0: np.ndarray | None = None, iterations: int = 20,
        fraction: float = 1.0, seed: int = 0, rotations: np.ndarray | None = None, **kwargs: Any) -> EMResult:
    """Approximate EM from micrographs (2-D arrays ``[y, x]`` or MRC paths) in ``basis``
    (a ``cryomtd.basis.SphericalBessel``; patch size = ``basis.L``).

    The rotation grid is ``cryomtd.rotations.grid(grid_step)`` unless ``rotations``
    (n, 3, 3) is given. Other keyword arguments go to :func:`em` (tol, burn_in, decay,
    prior_weight, learn_rotation_prior, checkpoint, backend, dtype, method, memory_mb, threads,
    callback, show_progress). Returns an :class:`EMResult` (``.coef``, ``.rho``, ``.loglik``).
    """
    if rotations is None:
        from cryomtd import rotations as rot

        rotations = rot.grid(grid_step)
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise InputError(f"rotations: expected (n, 3, 3) matrices, got shape {rotations.shape}")
    model = ProjectionModel.from_basis(basis)
    wigner = [np.asarray(w, dtype=np.float64) for w in basis.wigner(rotations)]
    source = PatchSource(micrographs, model.L)
    return em(source, model, wigner, sigma=sigma, x0=x0, iterations=iterations, fraction=fraction, seed=seed, **kwargs)
