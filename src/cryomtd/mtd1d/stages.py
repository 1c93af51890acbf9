"""The 1-D workflow stages: functions of (settings, data) and the file wrappers the rules call.

Every stage takes the experiment's :class:`~cryomtd.mtd1d.settings.Mtd1dSettings` whole;
``Mtd1dSettings(seed=s)`` is the workflow's default experiment. Rule scripts and the
``cryomtd mtd1d`` CLI call the same ``run_*`` wrappers, so a stage runs the same with or
without Snakemake. Files (``results/<exp>/``, paths from :class:`cryomtd.layout.Layout`):

* ``segments/{k}.npz``: moment sums of segment k (:class:`Moments1D` fields) + ``copies``, ``index``;
* ``moments.npz``: merged sums + ``copies``, ``gamma_true``;
* ``lsq/restart_{r}.npz``, ``lsq.npz``, ``em.npz``: estimates in the common format of
  :mod:`cryomtd.estimate` (``coef`` = the signal x, shape (L,); see :func:`lsq_restart`
  and :func:`em_estimate` for ``trace`` and ``extra``);
* ``em_trace.json``: the EM log-likelihood per iteration and timings, readable as text;
* ``metrics.json``, ``figures/overlay.png``, ``figures/loglik.png``.

Data for EM: segments are *not* stored; the EM stage simulates the first
``em.segments`` segments again from (seed, segment index), bit-identical to what the
segment stage saw, so no N-sized file is ever written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np

from cryomtd.estimate import Estimate
from cryomtd.io import InputError, write_json
from cryomtd.layout import Layout
from cryomtd.mtd1d.em import fit_em, rho_from_gamma
from cryomtd.mtd1d.lsq import LSQResult, fit_lsq_restart, pick_best
from cryomtd.mtd1d.metrics import align_shift, plot_loglik, plot_overlay, relative_error
from cryomtd.mtd1d.moments import MomentAccumulator, Moments1D, merge
from cryomtd.mtd1d.settings import Mtd1dSettings
from cryomtd.mtd1d.signals import make_signal
from cryomtd.mtd1d.simulate import Placement, segment_lengths, simulate_chunks, simulate_segment
from cryomtd.progress import progress

__all__ = [
    "EM_TRACE_LABEL",
    "LSQ_TRACE_LABEL",
    "best_restart",
    "em_estimate",
    "estimate_sigma",
    "evaluation",
    "lsq_restart",
    "placement_of",
    "run_all",
    "run_em",
    "run_evaluate",
    "run_lsq_restart",
    "run_merge",
    "run_pick",
    "run_segment",
    "segment_moments",
    "signal_of",
]

log = logging.getLogger("cryomtd.mtd1d")
Path = str | os.PathLike

#: ``trace_label`` of the 1-D estimates.
LSQ_TRACE_LABEL = "least-squares cost (final value of the restart)"
EM_TRACE_LABEL = "log-likelihood per patch (nats)"


def signal_of(s: Mtd1dSettings) -> np.ndarray:
    """The true signal of an experiment (deterministic from its seed)."""
    return make_signal(s.signal.type, int(s.L), int(s.seed), s.signal.path)


def placement_of(s: Mtd1dSettings) -> Placement:
    """The placement model (``placement.min_gap`` null: L − 1 zeros, well separated)."""
    gap = s.placement.min_gap
    return Placement(float(s.placement.gamma), int(s.L) - 1 if gap is None else int(gap))


def _segment_length(s: Mtd1dSettings, index: int) -> int:
    lengths = segment_lengths(int(s.N), int(s.segments))
    if not 0 <= index < lengths.size:
        raise InputError(f"segment index {index} out of range 0..{lengths.size - 1}")
    return int(lengths[index])


def _segment_data(s: Mtd1dSettings, index: int) -> np.ndarray:
    """Segment ``index`` simulated whole (what :func:`segment_moments` streams), float32."""
    y, _ = simulate_segment(
        signal_of(s),
        _segment_length(s, index),
        placement_of(s),
        float(s.sigma),
        int(s.seed),
        index,
        int(s.advanced.chunk),
    )
    return y.astype(np.float32)


# --- stages over data -------------------------------------------------------------------


def segment_moments(s: Mtd1dSettings, index: int, progress_bar: bool | None = None) -> tuple[Moments1D, int]:
    """Simulate segment ``index`` in chunks of ``advanced.chunk`` samples; its moment sums and copy count."""
    t0 = time.perf_counter()
    x, L = signal_of(s), int(s.L)
    n = _segment_length(s, index)
    acc = MomentAccumulator(L, dtype=s.advanced.moments_dtype)
    copies = 0
    chunk = int(s.advanced.chunk)
    gen = simulate_chunks(x, n, placement_of(s), float(s.sigma), int(s.seed), index, chunk)
    for y, c in progress(gen, total=-(-n // chunk), desc=f"segment {index}", enable=progress_bar):
        acc.update(y)
        copies += c
    dt = time.perf_counter() - t0
    log.info(
        "segment %d: n=%d copies=%d gamma=%.5f %.2f s (%.3g samples/s)", index, n, copies, copies * L / n, dt, n / dt
    )
    return acc.result(), copies


def _lsq_estimate(r: LSQResult, settings: dict) -> Estimate:
    return Estimate(
        estimator="lsq",
        coef=r.x,
        gamma=r.gamma,
        trace=np.array([r.cost]),
        trace_label=LSQ_TRACE_LABEL,
        wall_time_s=r.wall_time_s,
        settings=settings,
        extra={
            "restart": r.restart,
            "iterations": r.iterations,
            "restart_costs": np.asarray(r.costs, dtype=np.float64),
            **({} if r.xi is None else {"xi": np.asarray(r.xi, dtype=np.float64)}),
        },
    )


def _lsq_result(e: Estimate) -> LSQResult:
    return LSQResult(
        x=e.coef,
        gamma=e.gamma,
        cost=float(e.trace[-1]),
        restart=int(e.extra["restart"]),
        iterations=int(e.extra["iterations"]),
        wall_time_s=e.wall_time_s,
        costs=[float(c) for c in np.atleast_1d(e.extra["restart_costs"])],
        xi=e.extra.get("xi"),
    )


def lsq_restart(s: Mtd1dSettings, moments: Moments1D, restart: int = 0) -> Estimate:
    """One least-squares restart from the merged moments, as an estimate.

    ``trace``: the final cost (one value); ``extra``: ``restart``, ``iterations`` (trust-region
    steps), ``restart_costs`` (this restart's cost); ``settings``: ``s.stage_block("lsq")``.
    """
    sigma = float(s.sigma) if s.lsq.sigma_known else None
    r = fit_lsq_restart(
        moments,
        int(s.L),
        sigma=sigma,
        seed=int(s.seed),
        restart=restart,
        max_iterations=int(s.lsq.max_iterations),
        starts=int(s.lsq.starts),
        screen_iterations=int(s.lsq.screen_iterations),
        keep=int(s.lsq.keep),
        spacing=str(s.spacing),
    )
    log.info(
        "lsq restart %d: cost=%.3e gamma=%.5f iterations=%d %.1f s",
        restart,
        r.cost,
        r.gamma,
        r.iterations,
        r.wall_time_s,
    )
    return _lsq_estimate(r, s.stage_block("lsq"))


def best_restart(restarts: Sequence[Estimate]) -> Estimate:
    """The restart with the lowest cost; its ``restart_costs`` lists every restart's cost."""
    if not restarts:
        raise InputError("no least-squares restarts to pick from")
    runs = [_lsq_result(e) for e in restarts]
    costs = [r.cost for r in runs]
    best = pick_best(runs)
    log.info("best restart %d of %d: cost=%.3e", best.restart, len(runs), best.cost)
    return _lsq_estimate(best, restarts[int(np.argmin(costs))].settings)


def estimate_sigma(m: Moments1D, x: np.ndarray, gamma: float) -> float:
    """σ from a2[0] = γ‖x‖²/L + σ² with the fitted (x, γ) (used when σ is not known)."""
    s2 = m.a2[0] - gamma * float(x @ x) / x.size
    if s2 <= 0:
        raise InputError(f"cannot estimate sigma: a2[0] - gamma|x|^2/L = {s2:.3g} <= 0")
    return float(np.sqrt(s2))


def em_estimate(s: Mtd1dSettings, lsq: Estimate, moments: Moments1D, progress_bar: bool | None = None) -> Estimate:
    """Approximate EM started from the least-squares estimate, on the first ``em.segments``
    segments (simulated again from their seeds), as an estimate.

    ``trace``: the log-likelihood per patch at each iteration; ``extra``: ``rho`` (shift
    prior, (2L,)), ``sigma`` (σ used: the true one when ``lsq.sigma_known``, else estimated
    from the moments), ``iterations``, ``converged``, ``samples``, ``segments_used``,
    ``data_time_s`` (simulation time, not in ``wall_time_s``); ``settings``: ``s.stage_block("em")``.
    """
    L = int(s.L)
    sigma = float(s.sigma) if s.lsq.sigma_known else estimate_sigma(moments, lsq.coef, lsq.gamma)
    nseg = s.em_segments_used
    t0 = time.perf_counter()
    data = [_segment_data(s, k) for k in range(nseg)]
    t_data = time.perf_counter() - t0
    res = fit_em(
        data,
        L,
        sigma=sigma,
        x0=lsq.coef,
        rho0=rho_from_gamma(L, lsq.gamma, str(s.spacing)),
        seed=int(s.seed),
        iterations=int(s.em.iterations),
        tol=float(s.em.tol),
        progress_bar=progress_bar,
        spacing=str(s.spacing),
    )
    log.info(
        "EM: %d iterations, converged=%s, loglik %.6f, %.1f s",
        res.iterations,
        res.converged,
        res.loglik[-1],
        res.wall_time_s,
    )
    return Estimate(
        estimator="em",
        coef=res.x,
        gamma=res.gamma,
        trace=np.asarray(res.loglik),
        trace_label=EM_TRACE_LABEL,
        wall_time_s=res.wall_time_s,
        settings=s.stage_block("em"),
        extra={
            "rho": res.rho,
            "sigma": sigma,
            "iterations": res.iterations,
            "converged": bool(res.converged),
            "samples": int(sum(d.size for d in data)),
            "segments_used": nseg,
            "data_time_s": t_data,
        },
    )


def evaluation(s: Mtd1dSettings, gamma_true: float, lsq: Estimate, em: Estimate, name: str = "") -> dict:
    """The content of metrics.json: errors of both estimates against the true signal."""
    x = signal_of(s)

    def errors(e: Estimate) -> dict:
        return {
            "rel_error": relative_error(e.coef, x),
            "rel_error_no_shift": relative_error(e.coef, x, align=False),
            "gamma": e.gamma,
            "gamma_rel_error": abs(e.gamma - gamma_true) / gamma_true,
        }

    return {
        "experiment": name,
        "N": int(s.N),
        "L": int(s.L),
        "sigma": float(s.sigma),
        "gamma_target": float(s.placement.gamma),
        "gamma_true": gamma_true,
        "lsq": {
            **errors(lsq),
            "cost": float(lsq.trace[-1]),
            "restart": int(lsq.extra["restart"]),
            "restart_costs": [float(c) for c in np.atleast_1d(lsq.extra["restart_costs"])],
        },
        "em": {
            **errors(em),
            "iterations": int(em.extra["iterations"]),
            "converged": bool(em.extra["converged"]),
            "loglik": float(em.trace[-1]),
            "samples": int(em.extra["samples"]),
        },
    }


# --- file wrappers (rule scripts, CLI) ---------------------------------------------------


def run_segment(s: Mtd1dSettings, index: int, out: Path, progress_bar: bool | None = None) -> Moments1D:
    """Write segment ``index``'s moment sums, copy count and index to ``out``."""
    m, copies = segment_moments(s, index, progress_bar=progress_bar)
    m.save(out, copies=copies, index=index)
    return m


def _copies(paths: Sequence[Path]) -> int:
    total = 0
    for p in paths:
        with np.load(p) as f:
            total += int(f["copies"])
    return total


def run_merge(paths: Sequence[Path], out: Path) -> Moments1D:
    """Merge the segment sums (exact) and record the realised density ``gamma_true``."""
    m = merge([Moments1D.load(p) for p in paths])
    copies = _copies(paths)
    m.save(out, copies=copies, gamma_true=copies * m.L / m.n)
    log.info("merged %d segments: n=%d gamma_true=%.6f", len(paths), m.n, copies * m.L / m.n)
    return m


def _load(path: Path, estimator: str, keys: tuple[str, ...], what: str) -> Estimate:
    """A 1-D estimate file of ``estimator`` with the extra arrays ``keys`` (else an error naming the file)."""
    e = Estimate.load(path, what=what)
    missing = [k for k in keys if k not in e.extra]
    if e.estimator != estimator or missing:
        raise InputError(f"{path}: not a {what} (estimator {e.estimator!r}, missing {missing})")
    return e


def _load_lsq(path: Path) -> Estimate:
    return _load(path, "lsq", ("restart", "iterations", "restart_costs"), "1-D least-squares result")


def _load_em(path: Path) -> Estimate:
    return _load(path, "em", ("iterations", "converged", "samples"), "1-D EM result")


def run_lsq_restart(s: Mtd1dSettings, moments: Path, restart: int, out: Path) -> Estimate:
    """One least-squares restart from the merged moments file, written to ``out``."""
    e = lsq_restart(s, Moments1D.load(moments), restart)
    e.save(out)
    return e


def run_pick(paths: Sequence[Path], out: Path) -> Estimate:
    """Keep the restart with the lowest cost."""
    e = best_restart([_load_lsq(p) for p in paths])
    e.save(out)
    return e


def run_em(
    s: Mtd1dSettings, lsq_path: Path, moments: Path, out: Path, trace: Path, progress_bar: bool | None = None
) -> Estimate:
    """EM from the least-squares estimate file: ``em.npz`` (estimate) and ``em_trace.json``."""
    e = em_estimate(s, _load_lsq(lsq_path), Moments1D.load(moments), progress_bar=progress_bar)
    e.save(out)
    x = e.extra
    write_json(
        trace,
        {
            "loglik": e.trace,
            "iterations": x["iterations"],
            "converged": x["converged"],
            "sigma_used": x["sigma"],
            "samples": x["samples"],
            "segments_used": x["segments_used"],
            "wall_time_s": e.wall_time_s,
            "data_time_s": x["data_time_s"],
        },
    )
    return e


def run_evaluate(
    s: Mtd1dSettings,
    moments: Path,
    lsq_path: Path,
    em_path: Path,
    metrics: Path,
    overlay: Path,
    loglik_png: Path,
    name: str = "",
) -> dict:
    """metrics.json (:func:`evaluation`) and the two figures."""
    with np.load(moments) as f:
        gamma_true = float(f["gamma_true"])
    lsq, em = _load_lsq(lsq_path), _load_em(em_path)
    out = evaluation(s, gamma_true, lsq, em, name=name)
    write_json(metrics, out)
    x = signal_of(s)
    # estimates drawn at their best zero-filled shift (the one rel_error uses)
    plot_overlay(
        overlay,
        x,
        {"least squares": align_shift(lsq.coef, x), "EM": align_shift(em.coef, x)},
        title=f"{name}: LS err {out['lsq']['rel_error']:.3f}, EM err {out['em']['rel_error']:.3f}",
    )
    plot_loglik(loglik_png, [float(v) for v in em.trace], title=f"{name}: approximate EM")
    return out


def run_all(s: Mtd1dSettings, layout: Layout, progress_bar: bool | None = None) -> dict:
    """Every stage in this process, writing the workflow's files (``layout``); a finished
    segment or restart file is kept (resume). The experiment's name is ``layout.exp``."""
    segs = [layout.segment(k) for k in range(int(s.segments))]
    for k, p in enumerate(segs):
        if not os.path.exists(p):
            run_segment(s, k, p, progress_bar=progress_bar)
    run_merge(segs, layout.moments)
    rs = [layout.lsq_restart(r) for r in range(int(s.lsq.restarts))]
    for r, p in enumerate(progress(rs, desc="LS restarts", enable=progress_bar)):
        if not os.path.exists(p):
            run_lsq_restart(s, layout.moments, r, p)
    run_pick(rs, layout.estimate("lsq"))
    run_em(s, layout.estimate("lsq"), layout.moments, layout.estimate("em"), layout.em_trace, progress_bar=progress_bar)
    return run_evaluate(
        s,
        layout.moments,
        layout.estimate("lsq"),
        layout.estimate("em"),
        layout.metrics,
        layout.figure("overlay"),
        layout.figure("loglik"),
        name=str(layout.exp),
    )
