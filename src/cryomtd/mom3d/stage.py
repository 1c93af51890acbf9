"""File-level stages of the 3-D method of moments (rules exact_moments, recover_lsq, pick_best_restart).

Each function reads files, calls the library and writes its outputs atomically; the
rule scripts only forward ``snakemake`` inputs and params here, and the CLI
(``cryomtd recover-lsq``) calls the same functions.

Config block ``lsq`` (schema ``workflow/schemas/lsq3d.schema.yaml``, defaults there):
restarts, ell_max (fit degree; null = the experiment basis), window (null =
(L−1)//2+1), model, optimizer, max_iterations, weights, prior_weight, marching, a2_first,
polish, noise, gamma_init, threads, cache_dir, symmetry, init, init_radius, init_spread,
refine_top, refine_iterations (rule refine_lsq).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

from cryomtd.io import InputError, read_npz, save_npz

__all__ = ["default_window", "fit_basis", "exact_moments_file", "recover_restart_file", "refine_restart_file",
           "pick_best_file",
           "noise_sigma", "load_npz"]

log = logging.getLogger("cryomtd.mom3d")


def default_window(L: int) -> int:
    """The window the talk uses: lags up to (L−1)/2 around the centre, W = (L−1)//2 + 1."""
    return (int(L) - 1) // 2 + 1


def load_npz(path: str | os.PathLike, keys: Sequence[str], what: str = ".npz file") -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` via :func:`cryomtd.io.read_npz` (errors name the file and the missing keys)."""
    return read_npz(path, keys, what=what)


def fit_basis(L: int, ell_max: int | None, fit_ell_max: int | None) -> tuple[Any, Any]:
    """(experiment basis, fit basis): the fit basis is the ℓ ≤ fit_ell_max prefix of the experiment basis."""
    from cryomtd.basis import SphericalBessel

    full = SphericalBessel(int(L), None if ell_max is None else int(ell_max))
    if fit_ell_max is None or int(fit_ell_max) >= full.ell_max:
        return full, full
    small = SphericalBessel(int(L), int(fit_ell_max))
    if not np.array_equal(np.asarray(full.ell)[:small.size], np.asarray(small.ell)):
        raise InputError(f"lsq.ell_max={fit_ell_max}: basis layouts differ between ell_max {fit_ell_max} and {full.ell_max}")
    return full, small


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def exact_moments_file(truth_npz: str | os.PathLike, out: str | os.PathLike, *, gamma: float, window: int | None,
                       fit_ell_max: int | None = None, count: int = 1, threads: int | None = None) -> None:
    """truth.npz (coef, L, ell_max) → moments.npz: exact noise-free model moments at density ``gamma``.

    ``window`` None → :func:`default_window`. The truth is truncated to ℓ ≤ ``fit_ell_max``
    when given (the model degree, hence the quadrature, follows the truncated basis).
    """
    from cryomtd.mom3d.model import MomentModel

    t = load_npz(truth_npz, ["coef", "L", "ell_max"], what="truth file (written by prepare_volume)")
    L = int(t["L"])
    full, basis = fit_basis(L, int(t["ell_max"]), fit_ell_max)
    coef = np.asarray(t["coef"], dtype=np.float64)
    if coef.shape != (full.size,):
        raise InputError(f"{truth_npz}: coef has shape {coef.shape}, expected ({full.size},) for L={L}")
    W = int(window or default_window(L))
    _threads(threads)
    t0 = time.perf_counter()
    model = MomentModel(basis, W)
    model.numpy(coef[:basis.size], float(gamma)).to_moments2d(count, noise_sum=0.0).save(out)
    log.info("exact moments: L=%d ell_max=%d W=%d gamma=%g (%d quadrature rotations) in %.2f s → %s",
             L, basis.ell_max, W, gamma, model.quadrature.size, time.perf_counter() - t0, out)


def noise_sigma(moments: Any, mode: str) -> float | None:
    """σ for the fit: 'exclude' → None (biased entries left out); 'auto' → 0 when the moments
    are debiased or noise-free, √σ² when the moments record σ², else None."""
    if mode == "exclude":
        return None
    if mode != "auto":
        raise InputError(f"lsq.noise: expected 'auto' or 'exclude', got {mode!r}")
    meta = getattr(moments, "meta", {}) or {}
    if np.isfinite(meta.get("debiased_sigma2", np.nan)):
        return 0.0
    s2 = float(getattr(moments, "sigma2", np.nan))
    if np.isfinite(s2):
        return float(np.sqrt(max(s2, 0.0)))
    return None


def _fit_setup(moments_npz: str | os.PathLike, *, L: int, ell_max: int | None, lsq: Mapping[str, Any],
               exact: bool) -> tuple[Any, Any, Any, int, float | None, str]:
    """(moments, experiment basis, fit basis, W, σ, symmetry) of one fit job, checked against the config."""
    from cryomtd.basis.symmetry import parse_symmetry
    from cryomtd.moments import Moments2D

    try:
        moments = Moments2D.load(moments_npz)
    except FileNotFoundError:
        raise InputError(f"{moments_npz}: file not found") from None
    symmetry = parse_symmetry(lsq.get("symmetry") or "C1", "lsq.symmetry")
    full, basis = fit_basis(L, ell_max, lsq.get("ell_max"))
    W = int(lsq.get("window") or default_window(L))
    W = min(W, int(moments.window))
    sigma = 0.0 if exact else noise_sigma(moments, lsq.get("noise", "auto"))
    _threads(lsq.get("threads"))
    return moments, full, basis, W, sigma, symmetry


def _save_fit(out: str | os.PathLike, res: Any, full: Any, basis: Any, *, W: int, sigma: float | None, L: int,
              restart: int, **extra: Any) -> None:
    coef = np.zeros(full.size)
    coef[:basis.size] = res.coef
    save_npz(out, coef=coef, gamma=np.float64(res.gamma), cost=np.float64(res.cost), cost_trace=res.cost_trace,
             iterations=np.int64(res.iterations), wall_time_s=np.float64(res.wall_time_s),
             restart=np.int64(restart), ell_max_fit=np.int64(basis.ell_max), window=np.int64(W),
             sigma=np.float64(np.nan if sigma is None else sigma), L=np.int64(L), ell_max=np.int64(full.ell_max),
             **extra)


def recover_restart_file(moments_npz: str | os.PathLike, out: str | os.PathLike, *, L: int, ell_max: int | None,
                         lsq: Mapping[str, Any], seed: int, restart: int, exact: bool = False) -> None:
    """moments.npz → lsq/restart_{r}.npz (coef in the experiment basis, gamma, cost, cost_trace,
    iterations, wall_time_s, ell_max_fit, window, sigma). ``exact``: the moments are noise-free."""
    from cryomtd.mom3d.fit import fit_restart
    from cryomtd.mom3d.start import INIT_KINDS
    from cryomtd.seeding import rng

    init = str(lsq.get("init") or "random")
    if init not in INIT_KINDS:
        raise InputError(f"lsq.init: expected one of {', '.join(INIT_KINDS)}, got {init!r}")
    moments, full, basis, W, sigma, symmetry = _fit_setup(moments_npz, L=L, ell_max=ell_max, lsq=lsq, exact=exact)
    log.info("restart %d: L=%d fit ell_max=%d (size %d) W=%d sigma=%s optimizer=%s symmetry=%s init=%s",
             restart, L, basis.ell_max, basis.size, W, sigma, lsq.get("optimizer"), symmetry, init)
    res = fit_restart(moments, basis, rng=rng(int(seed), "lsq3d", int(restart)), sigma=sigma, window=W,
                      optimizer=lsq.get("optimizer", "trust-regions"),
                      max_iterations=int(lsq.get("max_iterations", 100)), max_inner=lsq.get("max_inner"),
                      weights=tuple(lsq.get("weights", (1.0, 1.0, 1.0))),
                      prior_weight=float(lsq.get("prior_weight", 0.0)), marching=bool(lsq.get("marching", False)),
                      gamma0=float(lsq.get("gamma_init", 0.1)), a2_first=bool(lsq.get("a2_first", False)),
                      restart=int(restart), polish=int(lsq.get("polish") or 0),
                      model_kind=str(lsq.get("model", "invariants")), cache_dir=lsq.get("cache_dir"),
                      symmetry=symmetry, init=init, init_radius=lsq.get("init_radius"),
                      init_spread=float(lsq.get("init_spread", 0.3)))
    _save_fit(out, res, full, basis, W=W, sigma=sigma, L=L, restart=int(restart))
    log.info("restart %d: cost %.4e, gamma %.4g, %d iterations, %.1f s", restart, res.cost, res.gamma,
             res.iterations, res.wall_time_s)


def refine_restart_file(moments_npz: str | os.PathLike, restarts: Sequence[str | os.PathLike],
                        out: str | os.PathLike, *, rank: int, L: int, ell_max: int | None, lsq: Mapping[str, Any],
                        exact: bool = False) -> int:
    """lsq/restart_*.npz → lsq/refine_{rank}.npz: the restart of the ``rank``-th lowest cost (0 =
    best; ties by file order) continued by at most ``lsq.refine_iterations`` Gauss–Newton cost
    evaluations (:func:`cryomtd.mom3d.fit.refine_restart`) on the same cost. Same keys as a
    restart file (cost_trace, iterations and wall_time_s include the restart's own) plus
    ``refined_from`` (that restart's index). Returns it."""
    from cryomtd.mom3d.fit import refine_restart

    if not 0 <= int(rank) < len(restarts):
        raise InputError(f"lsq.refine_top: refine rank {rank} needs at least {int(rank) + 1} restarts, "
                         f"got {len(restarts)} (lsq.restarts)")
    runs = [load_npz(p, ["coef", "gamma", "cost", "cost_trace", "iterations", "wall_time_s", "restart", "L", "ell_max"],
                     what="lsq restart file") for p in restarts]
    costs = np.array([float(r["cost"]) for r in runs])
    costs = np.where(np.isfinite(costs), costs, np.inf)
    pick = int(np.argsort(costs, kind="stable")[int(rank)])
    src = runs[pick]
    moments, full, basis, W, sigma, symmetry = _fit_setup(moments_npz, L=L, ell_max=ell_max, lsq=lsq, exact=exact)
    if int(src["L"]) != int(L) or int(src["ell_max"]) != full.ell_max:
        raise InputError(f"{restarts[pick]}: restart of L={int(src['L'])}, ell_max={int(src['ell_max'])}; this "
                         f"experiment has L={L}, ell_max={full.ell_max} (rerun recover_lsq)")
    r = int(src["restart"])
    log.info("refine rank %d: restart %d (cost %.4e), at most %d Gauss-Newton evaluations", rank, r, float(src["cost"]),
             int(lsq.get("refine_iterations", 200)))
    res = refine_restart(moments, basis, np.asarray(src["coef"], dtype=np.float64)[:basis.size], float(src["gamma"]),
                         sigma=sigma, window=W, max_iterations=int(lsq.get("refine_iterations", 200)),
                         weights=tuple(lsq.get("weights", (1.0, 1.0, 1.0))),
                         prior_weight=float(lsq.get("prior_weight", 0.0)), symmetry=symmetry,
                         model_kind=str(lsq.get("model", "invariants")), cache_dir=lsq.get("cache_dir"), restart=r)
    res.cost_trace = np.r_[np.asarray(src["cost_trace"], dtype=np.float64), res.cost_trace]
    res.iterations += int(src["iterations"])
    res.wall_time_s += float(src["wall_time_s"])
    _save_fit(out, res, full, basis, W=W, sigma=sigma, L=L, restart=r, refined_from=np.int64(r))
    log.info("refine rank %d (restart %d): cost %.4e → %.4e, gamma %.4g", rank, r, float(src["cost"]), res.cost,
             res.gamma)
    return r


def pick_best_file(restarts: Sequence[str | os.PathLike], out_npz: str | os.PathLike, out_mrc: str | os.PathLike, *,
                   voxel_size: float = 1.0) -> int:
    """lsq/restart_*.npz → lsq.npz (the lowest cost, plus restart_costs) and lsq.mrc (basis.evaluate). Returns the restart."""
    from cryomtd.basis import SphericalBessel
    from cryomtd.volume import write_mrc

    if not restarts:
        raise InputError("pick_best_restart: no restart files")
    runs = [load_npz(p, ["coef", "gamma", "cost", "L", "ell_max"], what="lsq restart file") for p in restarts]
    costs = np.array([float(r["cost"]) for r in runs])
    best = int(np.nanargmin(costs))
    r = runs[best]
    basis = SphericalBessel(int(r["L"]), int(r["ell_max"]))
    save_npz(out_npz, **{k: v for k, v in r.items()}, restart_costs=costs,
             restart_files=np.array([os.fspath(p) for p in restarts]))
    write_mrc(out_mrc, basis.evaluate(np.asarray(r["coef"], dtype=np.float64)), voxel_size)
    log.info("best restart %d of %d: cost %.4e (costs %s)", int(r["restart"]), len(runs), costs[best], costs)
    return best
