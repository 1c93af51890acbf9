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

With a CTF (``ctfs``: one group CTF per micrograph), each micrograph's patches are compared
with the filtered projections of its group on the enlarged box (:mod:`.ctfmodel`): per
iteration the projection spectra are computed once per group, the E-step runs group by
group, and the M-step sums the groups' normal equations. Without one the run is the
CTF-free model, unchanged.
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

from cryomtd.ctf import CTF
from cryomtd.io import InputError, save_npz
from cryomtd.progress import progress
from cryomtd.seeding import rng
from cryomtd.settings import override

from .backend import get_backend
from .ctfmodel import ENERGY, CtfModel, plan_ctf
from .estep import (
    PruneState,
    Statistics,
    auto_method,
    batch_sizes,
    estep_batch,
    estep_masses,
    local_rotations,
    projection_spectra,
    release_buffers,
    rotation_masses,
)
from .model import ProjectionModel, WignerBlocks
from .mstep import ctf_path_is_cheaper, mstep
from .patches import PatchSource
from .settings import EmSettings
from .start import ball_start, random_start

__all__ = ["EMResult", "em", "gamma_from_shift_prior", "run", "step_size"]

log = logging.getLogger("cryomtd.em3d")


@dataclass
class EMResult:
    """Outcome of :func:`em`.

    ``coef`` (size,) final coefficients; ``rho`` (N, N) shift prior (index = shift s;
    N = L + B, B the projection box: L without a CTF, L + 2t with one);
    ``pi`` (R,) rotation prior; ``loglik`` mean log-likelihood per patch per iteration;
    ``objective`` loglik + log prior / N (MAP-EM); ``estep_s``/``mstep_s`` seconds per
    iteration; ``step`` SAEM step sizes; ``iterations`` done; ``converged`` (relative
    loglik change < tol); ``n_patches``; ``wall_time_s`` (sum over iterations, all runs);
    ``L`` the patch side (0: rho's side / 2); ``ctf`` the CTF model's summary
    (:meth:`CtfModel.summary`; None without a CTF).
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
    L: int = 0
    ctf: dict | None = None

    @property
    def wall_time_s(self) -> float:
        return float(sum(self.estep_s) + sum(self.mstep_s))

    @property
    def patch_side(self) -> int:
        return self.L or self.rho.shape[0] // 2

    @property
    def empty_probability(self) -> float:
        """Probability of the empty patch under ρ: Σ ρ_s over shifts with s_y = L or s_x = L."""
        L = self.patch_side
        return float(self.rho[L, :].sum() + self.rho[:, L].sum() - self.rho[L, L])

    @property
    def gamma(self) -> float:
        """Density γ implied by the shift prior (:func:`gamma_from_shift_prior`)."""
        return gamma_from_shift_prior(self.rho, self.patch_side)

    def trace(self) -> dict[str, Any]:
        """The JSON-ready per-iteration record (``em_trace.json``)."""
        return {
            "empty_probability": self.empty_probability,
            "loglik": self.loglik,
            "objective": self.objective,
            "estep_s": self.estep_s,
            "mstep_s": self.mstep_s,
            "step": self.step,
            "iterations": self.iterations,
            "converged": self.converged,
            "n_patches": self.n_patches,
            "resumed_from": self.resumed_from,
            "wall_time_s": self.wall_time_s,
            "ctf": self.ctf,
        }


def gamma_from_shift_prior(rho: np.ndarray, L: int) -> float:
    """Density γ implied by the shift prior ρ (N, N) of patches of side L, N = L + B with B ≥ L
    the modelled projection box (B = L, N = 2L without a CTF; B = L + 2t with one).

    γ = Σ_{s ∈ C} ρ_s, C the L² shifts that put the particle's **centre** pixel inside the
    crop: (t + L//2 + s) mod N < L on both axes, t = (B − L)/2 (box pixel u lands at crop
    pixel (u + s) mod N). Each particle's centre lies in exactly one patch of the L×L tiling
    and, for boxes that do not overlap, no patch holds two centres, so the fraction of
    patches holding a centre is n·L²/area = γ. Counting the centre states, rather than all
    non-empty ones, keeps out the states whose crop holds only a sliver of a box (nearly
    indistinguishable from an empty patch, and several per particle at high density): the
    non-empty mass implied γ 0.23–0.26 for true 0.1, 0.2 and 0.4; the centre mass is within
    2 % of each (docs/em3d.md, "γ").
    """
    rho = np.asarray(rho, dtype=np.float64)
    if rho.ndim != 2 or rho.shape[0] != rho.shape[1] or rho.shape[0] < 2 * L:
        raise InputError(f"em.npz: rho must have shape (N, N) with N >= {2 * L} for L={L}, got {rho.shape}")
    N = rho.shape[0]
    t = (N - 2 * L) // 2
    centre = (t + L // 2 + np.arange(N)) % N < L
    return float(rho[np.ix_(centre, centre)].sum() / rho.sum())


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


def _save_checkpoint(
    path: Path,
    res: EMResult,
    stats: Statistics | None,
    gen: np.random.Generator,
    fingerprint: str,
    prune: PruneState | None = None,
) -> None:
    arrays: dict[str, Any] = {
        "coef": res.coef,
        "rho": res.rho,
        "pi": res.pi,
        "history": np.array(json.dumps({k: v for k, v in res.trace().items() if k != "wall_time_s"})),
        "rng_state": np.array(json.dumps(gen.bit_generator.state)),
        "fingerprint": np.array(fingerprint),
    }
    if stats is not None:
        arrays.update(stat_count=stats.count, stat_loglik=stats.loglik, stat_n=stats.n, stat_b=stats.b)
    if prune is not None:  # the keep sets decide the next E-step: a resumed run needs them
        arrays.update(prune_bits=prune.bits, prune_visited=prune.visited)
    save_npz(path, **arrays)


def _load_checkpoint(
    path: Path, fingerprint: str, prune: PruneState | None = None
) -> tuple[EMResult, Statistics | None, dict] | None:
    """(result so far, smoothed statistics, RNG state) from ``path``, restoring the pruning
    keep sets into ``prune``; None when there is no checkpoint or it belongs to other
    inputs/settings (then EM starts afresh). A file that cannot be read (truncated, not an
    npz, fields missing) raises :class:`InputError` naming it."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
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
                stats = Statistics(
                    float(z["stat_count"]), float(z["stat_loglik"]), z["stat_n"].copy(), z["stat_b"].copy()
                )
            rng_state = json.loads(str(z["rng_state"]))
            if prune is not None:
                prune.bits[...] = z["prune_bits"]
                prune.visited[...] = z["prune_visited"]
    except Exception as exc:  # zipfile, format, JSON and missing-field errors, with varied types
        raise InputError(
            f"{path}: unreadable EM checkpoint ({type(exc).__name__}: {exc}); delete it to start afresh"
        ) from None
    return res, stats, rng_state


@dataclass
class _Plan:
    """What one EM run needs besides the model: backend, E-step method, batch sizes, patch count;
    with a CTF the group model (``ctf``), the group of every patch and the filtered models."""

    xp: Any
    method: str
    R: int
    P_batch: int
    rot_chunk: int
    n_sub: int
    stochastic: bool
    ctf: CtfModel | None = None
    patch_group: np.ndarray | None = None  # (n_patches,) group of each patch
    models: list | None = None  # filtered ProjectionModel per group
    prune: PruneState | None = None  # rotation pruning (em.advanced.prune > 0)
    fine: WignerBlocks | None = None  # local refinement: the fine grid's Wigner blocks
    parent: np.ndarray | None = None  # (R_fine,) nearest global-grid rotation of each fine one

    def refined(self, k: int, settings: EmSettings) -> bool:
        """Whether iteration k runs the local refinement on the fine grid."""
        return self.fine is not None and k > settings.refine.after

    @property
    def box(self) -> int | None:
        """Projection box side B (None: the patch side, no CTF)."""
        return None if self.ctf is None else self.ctf.box


def _plan(
    source: PatchSource,
    model: ProjectionModel,
    wigner: WignerBlocks,
    sigma: float,
    settings: EmSettings,
    ctf: CtfModel | None = None,
    fine: tuple[WignerBlocks, np.ndarray] | None = None,
) -> _Plan:
    """Check the settings against the data; choose the backend, the E-step method and the batches.
    ``fine`` = (Wigner blocks of the fine grid, parent index per fine rotation) for local refinement."""
    adv = settings.advanced
    if not sigma > 0:
        raise InputError(f"em.sigma: expected a positive noise level, got {sigma}")
    if not 0 < settings.fraction <= 1:
        raise InputError(f"em.fraction: expected 0 < fraction <= 1, got {settings.fraction}")
    if settings.iterations < 1:
        raise InputError(f"em.iterations: expected >= 1, got {settings.iterations}")
    xp = get_backend(adv.backend, adv.dtype, workers=adv.threads)
    method = adv.method
    if method == "auto":  # the fused fft E-step on CPUs at every L, matmul on CUDA (docs/em3d.md)
        method = auto_method(xp)
    if method not in ("fft", "matmul"):
        raise InputError(f"em.advanced.method: expected auto, fft or matmul, got {method!r}")
    R = wigner_rows(wigner)
    P_batch, rot_chunk = batch_sizes(R, model.L, adv.memory_mb, None if ctf is None else ctf.box)
    stochastic = settings.fraction < 1.0
    n_sub = source.n if not stochastic else max(1, int(round(settings.fraction * source.n)))
    plan = _Plan(xp, method, R, P_batch, rot_chunk, n_sub, stochastic)
    if adv.prune > 0:
        if method != "fft" or xp.name != "numpy":
            raise InputError(f"em.advanced.prune needs the numpy fft E-step, got {xp.label} {method}")
        plan.prune = PruneState(source.n, R, adv.prune)
    if fine is not None:
        if method != "fft" or xp.name != "numpy":
            raise InputError(f"em.refine needs the numpy fft E-step, got {xp.label} {method}")
        if adv.prune > 0 or settings.learn_rotation_prior:
            raise InputError("em.refine: not combined with em.advanced.prune or em.learn_rotation_prior")
        plan.fine, plan.parent = fine
        if plan.parent.shape != (wigner_rows(plan.fine),) or plan.parent.min() < 0 or plan.parent.max() >= R:
            raise InputError(f"em.refine: parent indices must map the fine grid into the {R} global rotations")
    if ctf is not None:
        counts = np.diff(source.offsets)
        plan.ctf = ctf
        plan.patch_group = np.repeat(ctf.group_of, counts)
        plan.models = ctf.models(model)
    return plan


def wigner_rows(wigner: WignerBlocks) -> int:
    """Number of rotations of a list of Wigner blocks."""
    return int(wigner[0].shape[0])


def _wigner_sum(wigner: WignerBlocks) -> float:
    """Σ |entries| of a grid's Wigner blocks (a cheap fingerprint of the grid)."""
    return float(sum(float(np.abs(w).sum()) for w in wigner))


def _start(
    source: PatchSource,
    model: ProjectionModel,
    wigner: WignerBlocks,
    sigma: float,
    x0: np.ndarray | None,
    seed: int,
    settings: EmSettings,
    plan: _Plan,
) -> np.ndarray:
    """The initial coefficients: ``x0``, else by ``settings.init`` from rng(seed, "em3d", 0):
    ``random`` a low-pass random volume, any other kind (``ball``; ``auto``/``lsq`` when no
    estimate was passed) the ball start fitted to the patches' power spectrum (:mod:`.start`)."""
    if x0 is None:
        g = rng(seed, "em3d", 0)
        if settings.init == "random":
            x0 = random_start(source, model, sigma, g)
        else:
            filtered = None
            if plan.ctf is not None:
                frac = np.bincount(plan.patch_group, minlength=len(plan.models)) / source.n
                filtered = list(zip(plan.models, frac))
            x0 = ball_start(
                source,
                model,
                sigma,
                g,
                radius=settings.init_radius,
                spread=settings.init_spread,
                filtered=filtered,
                wigner=wigner,
            )
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.shape != (model.size,):
        raise InputError(f"em.x0: expected {model.size} coefficients, got shape {x0.shape}")
    return x0


def _iterate(
    res: EMResult,
    smoothed: Statistics | None,
    idx: np.ndarray,
    source: PatchSource,
    model: ProjectionModel,
    wigner: WignerBlocks,
    sigma: float,
    settings: EmSettings,
    plan: _Plan,
) -> Statistics:
    """One E-step over the patches ``idx`` and one M-step; updates ``res`` in place, returns the smoothed statistics."""
    k = res.iterations + 1
    N, L, xp = source.n, model.L, plan.xp
    t0 = time.perf_counter()
    if plan.ctf is None:
        groups = [(model, idx)]
    else:  # one E-step per CTF group over its own patches
        groups = [(m, idx[plan.patch_group[idx] == g]) for g, m in enumerate(plan.models)]
    refined = plan.refined(k, settings)
    grid = plan.fine if refined else wigner  # the M-step's rotations
    R = wigner_rows(grid)
    if res.pi.size != R:  # entering the refinement: the uniform prior over the fine grid
        res.pi = np.full(R, 1.0 / R)

    def spectra_of(gmodel: ProjectionModel, w: WignerBlocks, log_pi: np.ndarray) -> Any:
        with np.errstate(divide="ignore"):
            return projection_spectra(
                gmodel.project(res.coef, w),
                np.log(res.rho),
                log_pi,
                xp,
                plan.method,
                stack_mb=settings.advanced.memory_mb / 4,
                L=L,
            )

    parts = []
    done = possible = 0  # refined (patch, rotation) pairs evaluated / possible
    for gmodel, gidx in groups:
        spectra = spectra_of(gmodel, grid, np.log(res.pi))
        coarse = spectra_of(gmodel, wigner, np.full(plan.R, -np.log(plan.R))) if refined else None
        part = Statistics.zeros(R, L, plan.box)
        for ids, patches in source.batches(gidx, plan.P_batch):
            if refined:  # global grid: rotation posteriors only; fine grid: near the top ones
                mass = rotation_masses(patches, coarse, sigma, xp, plan.rot_chunk)
                keep = local_rotations(mass, plan.parent, settings.refine.top)
                part.add(estep_masses(patches, spectra, sigma, xp, plan.rot_chunk, keep)[0])
                done += int(keep.sum())
                possible += keep.size
            elif plan.prune is None:
                part.add(estep_batch(patches, spectra, sigma, xp, plan.rot_chunk))
            else:
                active = k > settings.advanced.prune_after
                part.add(plan.prune.estep(ids, patches, spectra, sigma, xp, plan.rot_chunk, active))
        parts.append(part)
        del spectra, coarse
    stats = parts[0] if len(parts) == 1 else _stack_groups(parts)
    release_buffers()  # the E-step's weight buffer (reused across batches) is not held through the M-step
    xp.sync()
    t1 = time.perf_counter()
    # SAEM's average restarts with the refinement (its statistics live on the fine grid)
    k_step = k - settings.refine.after if refined else k
    eta = step_size(k_step, settings.step.burn_in, settings.step.decay) if plan.stochastic else 1.0
    per_patch = stats.scaled(1.0 / stats.count)
    if smoothed is None or eta >= 1.0 or smoothed.n.shape != per_patch.n.shape:
        smoothed = per_patch
    else:
        smoothed = Statistics(
            1.0,
            smoothed.loglik + eta * (per_patch.loglik - smoothed.loglik),
            smoothed.n + eta * (per_patch.n - smoothed.n),
            smoothed.b + eta * (per_patch.b - smoothed.b),
        )
    fast = plan.ctf is not None and ctf_path_is_cheaper(L, plan.ctf.box, model.size, plan.ctf.n_groups)
    new = mstep(
        smoothed.scaled(N),
        model if plan.ctf is None or fast else plan.models,
        grid,
        sigma,
        prior_weight=settings.prior_weight,
        learn_rotation_prior=settings.learn_rotation_prior,
        xp=xp,
        **({"ctf_operators": plan.ctf.operators} if fast else {}),
    )
    t2 = time.perf_counter()
    ll = per_patch.loglik
    res.loglik.append(ll)
    res.objective.append(ll - 0.5 * settings.prior_weight * float(res.coef @ res.coef) / N)
    res.estep_s.append(t1 - t0)
    res.mstep_s.append(t2 - t1)
    res.step.append(eta)
    res.coef, res.rho = new["coef"], new["rho"]
    if new["pi"] is not None:
        res.pi = new["pi"]
    res.iterations = k
    if settings.tol > 0 and len(res.objective) >= 2:
        prev, cur = res.objective[-2], res.objective[-1]
        res.converged = abs(cur - prev) <= settings.tol * max(abs(prev), 1e-300)
    log.info("em iteration %d: loglik/patch %.6f, E %.2fs, M %.2fs, step %.3f", k, ll, t1 - t0, t2 - t1, eta)
    if plan.prune is not None:
        log.info("em iteration %d: pruning, %.4f of the (patch, rotation) pairs evaluated", k, plan.prune.fraction())
    if refined:
        log.info(
            "em iteration %d: local refinement on %d rotations, %.4f of the pairs evaluated", k, R, done / possible
        )
    return smoothed


def _stack_groups(parts: list[Statistics]) -> Statistics:
    """The statistics of G groups as one object with G·R rows (group by group)."""
    return Statistics(
        float(sum(p.count for p in parts)),
        float(sum(p.loglik for p in parts)),
        np.concatenate([p.n for p in parts]),
        np.concatenate([p.b for p in parts]),
    )


def em(
    source: PatchSource,
    model: ProjectionModel,
    wigner: WignerBlocks,
    *,
    sigma: float,
    settings: EmSettings | None = None,
    x0: np.ndarray | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    callback: Callable[[int, EMResult], None] | None = None,
    show_progress: bool | None = None,
    ctfs: Sequence[CTF | None] | None = None,
    pixel_size: float | None = None,
    ctf_truncation: int | None = None,
    ctf_energy: float = ENERGY,
    fine: tuple[WignerBlocks, np.ndarray] | None = None,
    **overrides: Any,
) -> EMResult:
    """Approximate EM over rotations (the ``wigner`` blocks) × shifts for the patches of ``source``.

    ``sigma`` noise standard deviation; ``settings`` the ``em`` block (:class:`EmSettings`;
    default = the workflow default), with ``overrides`` changing single fields by name
    (``iterations=5``, ``backend="numpy"``: :func:`cryomtd.settings.override`); ``x0`` initial
    coefficients (default: by ``settings.init``, the soft ball fitted to the patches' power
    spectrum plus random detail from ``rng(seed, "em3d", 0)``: :mod:`cryomtd.em3d.start`);
    ``checkpoint`` npz path written after every iteration and resumed from when it matches
    these inputs; ``callback(k, result)`` after each checkpoint.

    CTF: ``ctfs`` one :class:`~cryomtd.ctf.CTF` per micrograph of ``source`` (the group CTF,
    e.g. ``CtfGroupTable.ctf_of(name)``; equal CTFs form one defocus group) or None (no CTF
    modelled; all None likewise), with ``pixel_size`` Å; ``ctf_truncation`` fixes the
    enlargement t of the projection box (pixels) instead of the rule (the smallest t holding
    ``ctf_energy`` of a filtered ball's energy, capped by the delocalisation:
    :func:`cryomtd.em3d.ctfmodel.truncation_radius`).

    Local rotation refinement: ``fine`` = (Wigner blocks of the fine grid, (R_fine,) index of
    each fine rotation's nearest rotation of ``wigner``'s grid); iterations after
    ``settings.refine.after`` evaluate each patch on the fine grid near its
    ``settings.refine.top`` most probable global rotations (:func:`run` builds ``fine`` from
    ``settings.refine.fine_step``).
    """
    settings = override(settings or EmSettings(), "em", **overrides)
    ctf = plan_ctf(ctfs, source.shapes, model.L, pixel_size, truncation=ctf_truncation, energy=ctf_energy)
    plan = _plan(source, model, wigner, sigma, settings, ctf, fine)
    x0 = _start(source, model, wigner, sigma, x0, seed, settings, plan)
    L, N = model.L, source.n
    Nbox = L + (L if ctf is None else ctf.box)
    extra_fp: dict[str, Any] = {}
    if ctf is not None:
        extra_fp["ctf"] = json.dumps(ctf.summary(), sort_keys=True)
    if plan.prune is not None:  # pruning changes the numbers (ε > 0) and the checkpoint's fields
        extra_fp["prune"] = (float(settings.advanced.prune), int(settings.advanced.prune_after))
    if plan.fine is not None:  # the refinement's grid and schedule change the numbers
        extra_fp["refine"] = (
            wigner_rows(plan.fine),
            _wigner_sum(plan.fine),
            int(settings.refine.after),
            int(settings.refine.top),
        )
    fp = _fingerprint(
        x0=x0,
        psi_shape=model.psi.shape,
        psi_sum=float(model.psi.sum()),
        R=plan.R,
        wsum=_wigner_sum(wigner),
        n=N,
        sigma=float(sigma),
        fraction=float(settings.fraction),
        burn_in=int(settings.step.burn_in),
        decay=float(settings.step.decay),
        prior=float(settings.prior_weight),
        learn_pi=bool(settings.learn_rotation_prior),
        seed=int(seed),
        data=float(source.get(np.arange(min(N, 8))).sum()),
        **extra_fp,
    )
    gen = rng(seed, "em3d", 1)  # patch subsets of SAEM
    rho0 = np.full((2 * L, 2 * L), 1.0 / (4 * L * L)) if ctf is None else np.full((Nbox, Nbox), 1.0 / Nbox**2)
    res = EMResult(coef=x0.copy(), rho=rho0, pi=np.full(plan.R, 1.0 / plan.R), n_patches=N)
    smoothed: Statistics | None = None
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None:
        loaded = _load_checkpoint(ck, fp, plan.prune)
        if loaded is not None:
            res, smoothed, state = loaded
            gen.bit_generator.state = state
            res.resumed_from = res.iterations
            log.info("resuming from %s at iteration %d", ck, res.iterations)
    res.L = L
    res.ctf = None if ctf is None else ctf.summary()
    if ctf is not None:
        log.info(
            "CTF modelled: %d group(s), box %d = L + 2·%d (rule radius %s, energy kept %s, delocalisation %s px)",
            ctf.n_groups,
            ctf.box,
            ctf.truncation,
            list(ctf.radius),
            [f"{k:.4f}" for k in ctf.kept],
            [f"{d:.1f}" for d in ctf.delocalisation],
        )
    iterations = settings.iterations
    bar = progress(total=iterations, desc="em", enable=show_progress, initial=min(res.iterations, iterations))
    while res.iterations < iterations and not res.converged:
        idx = np.arange(N) if not plan.stochastic else np.sort(gen.choice(N, size=plan.n_sub, replace=False))
        smoothed = _iterate(res, smoothed, idx, source, model, wigner, sigma, settings, plan)
        if ck is not None:
            _save_checkpoint(ck, res, smoothed if plan.stochastic else None, gen, fp, plan.prune)
        bar.update(1)
        bar.set_postfix(loglik=f"{res.loglik[-1]:.4g}")
        if callback is not None:
            callback(res.iterations, res)
    bar.close()
    return res


def run(
    micrographs: Sequence[np.ndarray | str | os.PathLike],
    basis: Any,
    *,
    sigma: float,
    settings: EmSettings | None = None,
    x0: np.ndarray | None = None,
    seed: int = 0,
    rotations: np.ndarray | None = None,
    **kwargs: Any,
) -> EMResult:
    """Approximate EM from micrographs (2-D arrays ``[y, x]`` or MRC paths) in ``basis``
    (a ``cryomtd.basis.SphericalBessel``; patch size = ``basis.L``).

    The rotation grid is ``cryomtd.rotations.grid(settings.grid_step)`` unless ``rotations``
    (n, 3, 3) is given; with ``settings.refine.fine_step`` the local refinement's fine grid is
    ``grid(refine.fine_step)``. Other keyword arguments go to :func:`em` (checkpoint, callback,
    show_progress, the CTF: ``ctfs`` one group CTF per micrograph with ``pixel_size``,
    ``ctf_truncation``, ``ctf_energy``; and single settings by name such as ``iterations=5``). Returns an
    :class:`EMResult` (``.coef``, ``.rho``, ``.loglik``).
    """
    names = {"checkpoint", "callback", "show_progress", "ctfs", "pixel_size", "ctf_truncation", "ctf_energy"}
    settings = override(settings or EmSettings(), "em", **{k: v for k, v in kwargs.items() if k not in names})
    if rotations is None:
        from cryomtd import rotations as rot

        rotations = rot.grid(settings.grid_step)
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise InputError(f"rotations: expected (n, 3, 3) matrices, got shape {rotations.shape}")
    model = ProjectionModel.from_basis(basis)
    wigner = [np.asarray(w, dtype=np.float64) for w in basis.wigner(rotations)]
    fine = None
    if settings.refine.fine_step is not None:
        from cryomtd import rotations as rot

        fine_rotations = rot.grid(settings.refine.fine_step)
        if len(fine_rotations) <= len(rotations):
            raise InputError(
                f"em.refine.fine_step: {settings.refine.fine_step}° gives {len(fine_rotations)} rotations, "
                f"not more than the global grid's {len(rotations)}; choose a finer step"
            )
        fine = (
            [np.asarray(w, dtype=np.float64) for w in basis.wigner(fine_rotations)],
            rot.nearest(fine_rotations, rotations),
        )
    source = PatchSource(micrographs, model.L)
    return em(
        source,
        model,
        wigner,
        sigma=sigma,
        settings=settings,
        x0=x0,
        seed=seed,
        fine=fine,
        **{k: v for k, v in kwargs.items() if k in names},
    )
