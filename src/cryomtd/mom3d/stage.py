"""File-level stages of the 3-D method of moments (rules exact_moments, recover_lsq, refine_lsq, pick_best_restart).

Each function reads files, calls the library and writes its outputs atomically; the
rule scripts and the CLI (``cryomtd recover-lsq``) call the same functions with the
same :class:`~cryomtd.mom3d.settings.LsqSettings`. The fit window is the window the
moments were computed at (``moments.window``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cryomtd.io import InputError, read_npz, save_npz
from cryomtd.mom3d.settings import LsqSettings
from cryomtd.moments.settings import default_window

__all__ = [
    "default_window",
    "fit_basis",
    "exact_moments_file",
    "recover_restart_file",
    "refine_restart_file",
    "pick_best_file",
    "noise_sigma",
    "load_npz",
    "ctf_mixture",
    "detect_symmetry_file",
    "resolve_symmetry",
]

log = logging.getLogger("cryomtd.mom3d")


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
    if not np.array_equal(np.asarray(full.ell)[: small.size], np.asarray(small.ell)):
        raise InputError(
            f"lsq.ell_max={fit_ell_max}: basis layouts differ between ell_max {fit_ell_max} and {full.ell_max}"
        )
    return full, small


def ctf_mixture(ctf_groups: str | os.PathLike | None) -> Any:
    """The :class:`~cryomtd.mom3d.ctfmodel.CtfMixture` of an experiment's ``ctf_groups.json``
    (:class:`cryomtd.ctf.CtfGroupTable`); None when no path is given or the table models no CTF
    (data without one, or ``ctf: ignore``)."""
    if ctf_groups is None:
        return None
    from cryomtd.mom3d.ctfmodel import CtfMixture

    mix = CtfMixture.of(os.fspath(ctf_groups))
    if mix is None:
        log.info("%s: no CTF modelled", ctf_groups)
    else:
        log.info(
            "%s: CTF modelled, %d group(s) (mean defocus %s Å, weights %s), pixel %.4g Å",
            ctf_groups,
            len(mix.ctfs),
            ", ".join(f"{c.mean_defocus:.0f}" for c in mix.ctfs),
            ", ".join(f"{w:.3f}" for w in mix.weights),
            mix.pixel_size,
        )
    return mix


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def exact_moments_file(
    truth_npz: str | os.PathLike,
    out: str | os.PathLike,
    *,
    gamma: float,
    window: int | None,
    fit_ell_max: int | None = None,
    count: int = 1,
    threads: int | None = None,
    ctf_groups: str | os.PathLike | None = None,
) -> None:
    """truth.npz (coef, L, ell_max) → moments.npz: exact noise-free model moments at density ``gamma``.

    ``window`` None → :func:`default_window`. The truth is truncated to ℓ ≤ ``fit_ell_max``
    when given (the model degree, hence the quadrature, follows the truncated basis).
    ``ctf_groups``: the experiment's CTF group table (None or a table without groups: no
    CTF); with one, the moments of the CTF-filtered projections mixed over its groups
    (:mod:`cryomtd.mom3d.ctfmodel`).
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
    mix = ctf_mixture(ctf_groups)
    if mix is None:
        model = MomentModel(basis, W)
    else:
        from cryomtd.mom3d.ctfmodel import CtfQuadratureModel

        model = CtfQuadratureModel(basis, W, mix)
    model.numpy(coef[: basis.size], float(gamma)).to_moments2d(count, noise_sum=0.0).save(out)
    log.info(
        "exact moments%s: L=%d ell_max=%d W=%d gamma=%g (%d quadrature rotations) in %.2f s → %s",
        "" if mix is None else f" with the CTF ({len(mix.ctfs)} group(s))",
        L,
        basis.ell_max,
        W,
        gamma,
        model.quadrature.size,
        time.perf_counter() - t0,
        out,
    )


def noise_sigma(moments: Any, mode: str) -> float | None:
    """σ for the fit: 'exclude' → None (biased entries left out); 'auto' → 0 when the moments
    are debiased or noise-free, √σ² when the moments record σ², else None."""
    if mode == "exclude":
        return None
    if mode != "auto":
        raise InputError(f"lsq.advanced.noise: expected 'auto' or 'exclude', got {mode!r}")
    meta = getattr(moments, "meta", {}) or {}
    if np.isfinite(meta.get("debiased_sigma2", np.nan)):
        return 0.0
    s2 = float(getattr(moments, "sigma2", np.nan))
    if np.isfinite(s2):
        return float(np.sqrt(max(s2, 0.0)))
    return None


def _fit_setup(
    moments_npz: str | os.PathLike,
    *,
    L: int,
    ell_max: int | None,
    settings: LsqSettings,
    exact: bool,
    sigma: float | None = None,
) -> tuple[Any, Any, Any, int, float | None]:
    """(moments, experiment basis, fit basis, W, σ) of one fit job, checked against the config.
    σ: ``sigma`` when given, else 0 for exact moments, else :func:`noise_sigma`."""
    from cryomtd.basis.symmetry import parse_symmetry
    from cryomtd.moments import Moments2D

    try:
        moments = Moments2D.load(moments_npz)
    except FileNotFoundError:
        raise InputError(f"{moments_npz}: file not found") from None
    from cryomtd.mom3d.detect import is_auto
    from cryomtd.mom3d.start import INIT_KINDS

    if not is_auto(settings.symmetry):
        parse_symmetry(settings.symmetry, "lsq.symmetry")
    if settings.advanced.init not in INIT_KINDS:
        raise InputError(f"lsq.advanced.init: expected one of {', '.join(INIT_KINDS)}, got {settings.advanced.init!r}")
    full, basis = fit_basis(L, ell_max, settings.ell_max)
    if sigma is None:
        sigma = 0.0 if exact else noise_sigma(moments, settings.advanced.noise)
    from cryomtd.mom3d.fit import zero_mean

    if not exact and zero_mean(moments):
        log.info("%s: the micrographs have zero mean (prepared): fitting central moments, without a1", moments_npz)
    _threads(settings.advanced.threads)
    return moments, full, basis, int(moments.window), sigma


def _save_fit(
    out: str | os.PathLike,
    res: Any,
    full: Any,
    basis: Any,
    *,
    W: int,
    sigma: float | None,
    L: int,
    restart: int,
    **extra: Any,
) -> None:
    coef = np.zeros(full.size)
    coef[: basis.size] = res.coef
    save_npz(
        out,
        coef=coef,
        gamma=np.float64(res.gamma),
        cost=np.float64(res.cost),
        cost_trace=res.cost_trace,
        stage_ends=np.asarray(res.stage_ends, dtype=np.int64),
        iterations=np.int64(res.iterations),
        wall_time_s=np.float64(res.wall_time_s),
        restart=np.int64(restart),
        ell_max_fit=np.int64(basis.ell_max),
        window=np.int64(W),
        sigma=np.float64(np.nan if sigma is None else sigma),
        L=np.int64(L),
        ell_max=np.int64(full.ell_max),
        **extra,
    )


def recover_restart_file(
    moments_npz: str | os.PathLike,
    out: str | os.PathLike,
    *,
    L: int,
    ell_max: int | None,
    settings: LsqSettings | None = None,
    seed: int,
    restart: int,
    exact: bool = False,
    sigma: float | None = None,
    ctf_groups: str | os.PathLike | None = None,
    symmetry_json: str | os.PathLike | None = None,
) -> None:
    """moments.npz → lsq/restart_{r}.npz (coef in the experiment basis, gamma, cost, cost_trace,
    stage_ends, iterations, wall_time_s, ell_max_fit, window, sigma, ctf_groups = number of CTF
    groups modelled). ``exact``: the moments are noise-free; ``sigma``: the noise σ of the
    micrographs, instead of the σ² the moments record; ``ctf_groups``: the experiment's CTF
    group table (``ctf_groups.json``; None or no groups: no CTF in the model).
    ``symmetry: auto``: the group detected in ``symmetry_json`` (:func:`detect_symmetry_file`);
    with ``refine_top: 0`` the restart is then relaxed to C1 (:func:`cryomtd.mom3d.detect.relax_to_c1`).
    Extra keys: ``symmetry`` (the group fitted), ``relaxed``."""
    from cryomtd.mom3d.fit import fit_restart
    from cryomtd.seeding import rng

    settings = settings or LsqSettings()
    auto = _is_auto(settings)
    settings = resolve_symmetry(settings, symmetry_json)
    moments, full, basis, W, sigma = _fit_setup(
        moments_npz, L=L, ell_max=ell_max, settings=settings, exact=exact, sigma=sigma
    )
    log.info(
        "restart %d: L=%d fit ell_max=%d (size %d) W=%d sigma=%s optimizer=%s symmetry=%s init=%s",
        restart,
        L,
        basis.ell_max,
        basis.size,
        W,
        sigma,
        settings.advanced.optimizer,
        settings.symmetry,
        settings.advanced.init,
    )
    mix = ctf_mixture(ctf_groups)
    res = fit_restart(
        moments,
        basis,
        settings,
        rng=rng(int(seed), "lsq3d", int(restart)),
        sigma=sigma,
        window=W,
        restart=int(restart),
        ctf=mix,
    )
    relaxed = False
    if auto and settings.refine_top == 0:  # no refinement follows: this restart is final, relax it
        res, relaxed = _relax(moments, basis, res, settings, sigma=sigma, W=W, mix=mix, seed=seed, index=int(restart))
    n_groups = np.int64(0 if mix is None else len(mix.ctfs))
    _save_fit(
        out,
        res,
        full,
        basis,
        W=W,
        sigma=sigma,
        L=L,
        restart=int(restart),
        ctf_groups=n_groups,
        symmetry=np.str_(settings.symmetry),
        relaxed=np.bool_(relaxed),
    )
    log.info(
        "restart %d: cost %.4e, gamma %.4g, %d iterations, %.1f s",
        restart,
        res.cost,
        res.gamma,
        res.iterations,
        res.wall_time_s,
    )


def refine_restart_file(
    moments_npz: str | os.PathLike,
    restarts: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    rank: int,
    L: int,
    ell_max: int | None,
    settings: LsqSettings | None = None,
    exact: bool = False,
    sigma: float | None = None,
    ctf_groups: str | os.PathLike | None = None,
    symmetry_json: str | os.PathLike | None = None,
) -> int:
    """lsq/restart_*.npz → lsq/refine_{rank}.npz: the restart of the ``rank``-th lowest cost (0 =
    best; ties by file order) continued by at most ``refine_iterations`` Gauss–Newton cost
    evaluations (:func:`cryomtd.mom3d.fit.refine_restart`) on the same cost (``ctf_groups``: as
    in :func:`recover_restart_file`). Same keys as a restart file (cost_trace, stage_ends,
    iterations and wall_time_s include the restart's own) plus ``refined_from`` (that restart's
    index). Returns it. ``symmetry: auto``: the group of ``symmetry_json``, and the refined fit
    is then relaxed to C1 (:func:`cryomtd.mom3d.detect.relax_to_c1`; key ``relaxed``)."""
    from cryomtd.mom3d.fit import rank_by_cost, refine_restart

    settings = settings or LsqSettings()
    auto = _is_auto(settings)
    settings = resolve_symmetry(settings, symmetry_json)
    if not 0 <= int(rank) < len(restarts):
        raise InputError(
            f"lsq.refine_top: refine rank {rank} needs at least {int(rank) + 1} restarts, "
            f"got {len(restarts)} (lsq.restarts)"
        )
    runs = [
        load_npz(
            p,
            ["coef", "gamma", "cost", "cost_trace", "iterations", "wall_time_s", "restart", "L", "ell_max"],
            what="lsq restart file",
        )
        for p in restarts
    ]
    pick = int(rank_by_cost([float(r["cost"]) for r in runs])[int(rank)])
    src = runs[pick]
    moments, full, basis, W, sigma = _fit_setup(
        moments_npz, L=L, ell_max=ell_max, settings=settings, exact=exact, sigma=sigma
    )
    if int(src["L"]) != int(L) or int(src["ell_max"]) != full.ell_max:
        raise InputError(
            f"{restarts[pick]}: restart of L={int(src['L'])}, ell_max={int(src['ell_max'])}; this "
            f"experiment has L={L}, ell_max={full.ell_max} (rerun recover_lsq)"
        )
    r = int(src["restart"])
    mix = ctf_mixture(ctf_groups)
    log.info(
        "refine rank %d: restart %d (cost %.4e), at most %d Gauss-Newton evaluations",
        rank,
        r,
        float(src["cost"]),
        settings.refine_iterations,
    )
    res = refine_restart(
        moments,
        basis,
        np.asarray(src["coef"], dtype=np.float64)[: basis.size],
        float(src["gamma"]),
        settings,
        sigma=sigma,
        window=W,
        restart=r,
        ctf=mix,
    )
    relaxed = False
    if auto:
        res, relaxed = _relax(moments, basis, res, settings, sigma=sigma, W=W, mix=mix, seed=0, index=1000 + int(rank))
    ends = [int(e) for e in src.get("stage_ends", [])]
    res.cost_trace = np.r_[np.asarray(src["cost_trace"], dtype=np.float64), res.cost_trace]
    res.stage_ends = ends + [len(res.cost_trace)]
    res.iterations += int(src["iterations"])
    res.wall_time_s += float(src["wall_time_s"])
    _save_fit(
        out,
        res,
        full,
        basis,
        W=W,
        sigma=sigma,
        L=L,
        restart=r,
        refined_from=np.int64(r),
        ctf_groups=np.int64(0 if mix is None else len(mix.ctfs)),
        symmetry=np.str_(settings.symmetry),
        relaxed=np.bool_(relaxed),
    )
    log.info(
        "refine rank %d (restart %d): cost %.4e → %.4e, gamma %.4g", rank, r, float(src["cost"]), res.cost, res.gamma
    )
    return r


def pick_best_file(
    restarts: Sequence[str | os.PathLike],
    out_npz: str | os.PathLike,
    out_mrc: str | os.PathLike,
    *,
    voxel_size: float = 1.0,
    settings: LsqSettings | None = None,
    symmetry_json: str | os.PathLike | None = None,
) -> int:
    """lsq/restart_*.npz (and refine_*.npz) → lsq.npz, the lowest cost in the common
    :class:`~cryomtd.estimate.Estimate` format (extra: cost, restart, restart_costs,
    restart_files, stage_ends, iterations, L, ell_max, ell_max_fit, window, sigma, voxel_size),
    and lsq.mrc (basis.evaluate). With ``symmetry_json`` (``symmetry: auto``) also
    ``symmetry`` (the group) and ``symmetry_detection`` (that file's JSON: cost per group,
    floor, threshold; when the chosen fit is a C1 relaxation, decided again with its cost,
    :func:`cryomtd.mom3d.detect.after_relaxation`, ``detected`` = the group before), which
    ``evaluate`` copies into metrics.json. Returns the index
    of the chosen file."""
    from cryomtd.basis import SphericalBessel
    from cryomtd.estimate import Estimate
    from cryomtd.mom3d.fit import rank_by_cost
    from cryomtd.settings import to_block
    from cryomtd.volume import write_mrc

    if not restarts:
        raise InputError("pick_best_restart: no restart files")
    runs = [
        load_npz(p, ["coef", "gamma", "cost", "cost_trace", "wall_time_s", "L", "ell_max"], what="lsq restart file")
        for p in restarts
    ]
    costs = np.array([float(r["cost"]) for r in runs])
    best = int(rank_by_cost(costs)[0])
    r = runs[best]
    basis = SphericalBessel(int(r["L"]), int(r["ell_max"]))
    extra = {k: v for k, v in r.items() if k not in ("coef", "gamma", "cost_trace", "wall_time_s")}
    if symmetry_json is not None:
        import json

        from cryomtd.io import read_json
        from cryomtd.mom3d.detect import after_relaxation

        det = read_json(symmetry_json)
        relaxed = bool(np.asarray(r.get("relaxed", False)))
        if relaxed:  # the relaxed C1 cost may reject the detected group
            det = after_relaxation(det, float(r["cost"]))
        det["relaxed"] = relaxed
        extra["symmetry"] = np.str_(det["group"])
        extra["symmetry_detection"] = np.str_(json.dumps(det))
    Estimate(
        "lsq",
        coef=np.asarray(r["coef"], dtype=np.float64),
        gamma=float(r["gamma"]),
        trace=r["cost_trace"],
        trace_label="least-squares cost",
        wall_time_s=float(r["wall_time_s"]),
        settings=to_block(settings or LsqSettings()),
        extra={
            **extra,
            "restart_costs": costs,
            "restart_files": np.array([os.fspath(p) for p in restarts]),
            "voxel_size": np.float64(voxel_size),
        },
    ).save(out_npz)
    write_mrc(out_mrc, basis.evaluate(np.asarray(r["coef"], dtype=np.float64)), voxel_size)
    log.info("best of %d: %s, cost %.4e (costs %s)", len(runs), os.fspath(restarts[best]), costs[best], costs)
    return best


def _is_auto(settings: LsqSettings) -> bool:
    from cryomtd.mom3d.detect import is_auto

    return is_auto(settings.symmetry)


def resolve_symmetry(settings: LsqSettings, symmetry_json: str | os.PathLike | None) -> LsqSettings:
    """``settings`` with ``symmetry: auto`` replaced by the group detected in ``symmetry_json``
    (lsq/symmetry.json of :func:`detect_symmetry_file`); explicit groups are returned unchanged."""
    if not _is_auto(settings):
        return settings
    if symmetry_json is None:
        raise InputError("lsq.symmetry: auto needs the detected group (lsq/symmetry.json of rule detect_symmetry)")
    from cryomtd.basis.symmetry import parse_symmetry
    from cryomtd.io import read_json

    group = parse_symmetry(read_json(symmetry_json)["group"], f"{symmetry_json}: group")
    return dataclasses.replace(settings, symmetry=group)


def _relax(
    moments: Any,
    basis: Any,
    res: Any,
    settings: LsqSettings,
    *,
    sigma: float | None,
    W: int,
    mix: Any,
    seed: int,
    index: int,
) -> tuple[Any, bool]:
    """(fit, relaxed): ``res`` relaxed to C1 when that lowers the cost (its traces continued)."""
    from cryomtd.mom3d.detect import relax_to_c1
    from cryomtd.seeding import rng

    if settings.symmetry == "C1" or settings.advanced.relax < 1:
        return res, False
    more = relax_to_c1(
        moments,
        basis,
        res.coef,
        res.gamma,
        settings.symmetry,
        settings,
        rng=rng(int(seed), "lsq3d-relax", index),
        sigma=sigma,
        window=W,
        ctf=mix,
    )
    if not more.cost < res.cost:
        return res, False
    more.cost_trace = np.r_[res.cost_trace, more.cost_trace]
    more.stage_ends = list(res.stage_ends) + [len(more.cost_trace)]
    more.iterations += res.iterations
    more.wall_time_s += res.wall_time_s
    more.restart = res.restart
    return more, True


def detect_symmetry_file(
    moments_npz: str | os.PathLike,
    out_json: str | os.PathLike,
    out_npz: str | os.PathLike | None = None,
    *,
    L: int,
    ell_max: int | None,
    settings: LsqSettings | None = None,
    seed: int,
    exact: bool = False,
    sigma: float | None = None,
    ctf_groups: str | os.PathLike | None = None,
) -> str:
    """moments.npz → lsq/symmetry.json (:func:`cryomtd.mom3d.detect.detect_symmetry`: the chosen
    group, the best cost and free coefficients per fitted group, the merged equivalent groups,
    the rule's floor, factor and threshold, wall time) and, with ``out_npz``, the detection's
    best fit of the chosen group as one more fit file (restart file keys, ``restart`` = −1).
    Returns the group."""
    from cryomtd.io import write_json
    from cryomtd.mom3d.detect import detect_symmetry

    settings = settings or LsqSettings()
    moments, full, basis, W, sigma = _fit_setup(
        moments_npz, L=L, ell_max=ell_max, settings=settings, exact=exact, sigma=sigma
    )
    mix = ctf_mixture(ctf_groups)
    det = detect_symmetry(moments, basis, settings, sigma=sigma, seed=int(seed), window=W, exact=exact, ctf=mix)
    write_json(out_json, det.to_dict())
    if out_npz is not None:
        best = det.fits[det.group]
        _save_fit(
            out_npz,
            best,
            full,
            basis,
            W=W,
            sigma=sigma,
            L=L,
            restart=-1,
            ctf_groups=np.int64(0 if mix is None else len(mix.ctfs)),
            symmetry=np.str_(det.group),
            relaxed=np.bool_(False),
        )
    return det.group
