"""The 1-D workflow stages as functions of (experiment config, input paths, output paths).

Rule scripts and the ``cryomtd mtd1d`` CLI both call these, so a stage runs the same with
or without Snakemake. ``cfg`` is one experiment's block of ``config.yaml`` with the schema
defaults filled in (``workflow/schemas/mtd1d.schema.yaml``). Files (``results/<exp>/``):

* ``segments/{k}.npz``: moment sums of segment k (:class:`Moments1D` fields) + ``copies``;
* ``moments.npz``: merged sums + ``copies``, ``gamma_true``;
* ``lsq/restart_{r}.npz``, ``lsq.npz``: x, gamma, cost, iterations, wall_time_s (+ costs);
* ``em.npz`` (x, rho, gamma, sigma) and ``em_trace.json`` (loglik per iteration, timings);
* ``metrics.json``, ``figures/overlay.png``, ``figures/loglik.png``.

Data for EM: segments are *not* stored; the EM stage regenerates the first
``em.segments`` segments from (seed, segment index), bit-identical to what the segment
stage saw, so no N-sized file is ever written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np

from cryomtd.io import InputError, read_json, save_npz, write_json
from cryomtd.mtd1d.em import fit_em, rho_from_gamma
from cryomtd.mtd1d.lsq import LSQResult, fit_lsq_restart, pick_best
from cryomtd.mtd1d.metrics import align_shift, plot_loglik, plot_overlay, relative_error
from cryomtd.mtd1d.moments import MomentAccumulator, Moments1D, merge
from cryomtd.mtd1d.signals import make_signal
from cryomtd.mtd1d.simulate import Placement, segment_lengths, simulate_chunks, simulate_segment
from cryomtd.progress import progress

__all__ = ["run_all", "signal_of", "placement_of", "run_segment", "run_merge", "run_lsq_restart", "run_pick",
           "run_em", "run_evaluate", "estimate_sigma"]

log = logging.getLogger("cryomtd.mtd1d")
Path = str | os.PathLike


def signal_of(cfg: dict) -> np.ndarray:
    """The true signal of an experiment (deterministic from its seed)."""
    s = cfg["signal"]
    return make_signal(s["type"], int(cfg["L"]), int(cfg["seed"]), s.get("path"))


def placement_of(cfg: dict) -> Placement:
    p = cfg["placement"]
    gap = p.get("min_gap")
    return Placement(float(p["gamma"]), int(cfg["L"]) - 1 if gap is None else int(gap))


def _segment_length(cfg: dict, index: int) -> int:
    lengths = segment_lengths(int(cfg["N"]), int(cfg["segments"]))
    if not 0 <= index < lengths.size:
        raise InputError(f"segment index {index} out of range 0..{lengths.size - 1}")
    return int(lengths[index])


def run_segment(cfg: dict, index: int, out: Path, progress_bar: bool | None = None) -> Moments1D:
    """Simulate segment ``index`` in chunks and write its moment sums and copy count."""
    t0 = time.perf_counter()
    x, L = signal_of(cfg), int(cfg["L"])
    n = _segment_length(cfg, index)
    acc = MomentAccumulator(L, dtype=cfg.get("moments_dtype", "float64"))
    copies = 0
    chunk = int(cfg["chunk"])
    gen = simulate_chunks(x, n, placement_of(cfg), float(cfg["sigma"]), int(cfg["seed"]), index, chunk)
    for y, c in progress(gen, total=-(-n // chunk), desc=f"segment {index}", enable=progress_bar):
        acc.update(y)
        copies += c
    m = acc.result()
    m.save(out, copies=copies, index=index)
    dt = time.perf_counter() - t0
    log.info("segment %d: n=%d copies=%d gamma=%.5f %.2f s (%.3g samples/s)", index, n, copies,
             copies * L / n, dt, n / dt)
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


def _save_lsq(out: Path, r: LSQResult) -> None:
    save_npz(out, x=r.x, gamma=r.gamma, cost=r.cost, restart=r.restart, iterations=r.iterations,
             wall_time_s=r.wall_time_s, costs=np.asarray(r.costs))


def _load_lsq(path: Path) -> LSQResult:
    try:
        with np.load(path) as f:
            return LSQResult(x=f["x"].copy(), gamma=float(f["gamma"]), cost=float(f["cost"]),
                             restart=int(f["restart"]), iterations=int(f["iterations"]),
                             wall_time_s=float(f["wall_time_s"]), costs=[float(c) for c in f["costs"]])
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a 1-D least-squares result: {exc}") from None


def run_lsq_restart(cfg: dict, moments: Path, restart: int, out: Path) -> LSQResult:
    """One least-squares restart from the merged moments."""
    m = Moments1D.load(moments)
    lsq = cfg["lsq"]
    sigma = float(cfg["sigma"]) if lsq["sigma_known"] else None
    r = fit_lsq_restart(m, int(cfg["L"]), sigma=sigma, seed=int(cfg["seed"]), restart=restart,
                        max_iterations=int(lsq["max_iterations"]))
    _save_lsq(out, r)
    log.info("lsq restart %d: cost=%.3e gamma=%.5f iterations=%d %.1f s", restart, r.cost, r.gamma,
             r.iterations, r.wall_time_s)
    return r


def run_pick(paths: Sequence[Path], out: Path) -> LSQResult:
    """Keep the restart with the lowest cost."""
    best = pick_best([_load_lsq(p) for p in paths])
    _save_lsq(out, best)
    log.info("best restart %d of %d: cost=%.3e", best.restart, len(paths), best.cost)
    return best


def estimate_sigma(m: Moments1D, x: np.ndarray, gamma: float) -> float:
    """σ from a2[0] = γ‖x‖²/L + σ² with the fitted (x, γ) (used when σ is not known)."""
    s2 = m.a2[0] - gamma * float(x @ x) / x.size
    if s2 <= 0:
        raise InputError(f"cannot estimate sigma: a2[0] - gamma|x|^2/L = {s2:.3g} <= 0")
    return float(np.sqrt(s2))


def run_em(cfg: dict, lsq_path: Path, moments: Path, out: Path, trace: Path,
           progress_bar: bool | None = None) -> dict:
    """Approximate EM started from the LS estimate, on the first ``em.segments`` segments
    (regenerated from their seeds)."""
    em = cfg["em"]
    L = int(cfg["L"])
    r = _load_lsq(lsq_path)
    m = Moments1D.load(moments)
    sigma = float(cfg["sigma"]) if cfg["lsq"]["sigma_known"] else estimate_sigma(m, r.x, r.gamma)
    nseg = int(cfg["segments"]) if em["segments"] is None else min(int(em["segments"]), int(cfg["segments"]))
    x_true, placement = signal_of(cfg), placement_of(cfg)
    t0 = time.perf_counter()
    data = [simulate_segment(x_true, _segment_length(cfg, k), placement, float(cfg["sigma"]), int(cfg["seed"]), k,
                             int(cfg["chunk"]))[0].astype(np.float32) for k in range(nseg)]
    t_data = time.perf_counter() - t0
    res = fit_em(data, L, sigma=sigma, x0=r.x, rho0=rho_from_gamma(L, r.gamma), seed=int(cfg["seed"]),
                 max_iterations=int(em["max_iterations"]), tol=float(em["tol"]), progress_bar=progress_bar)
    save_npz(out, x=res.x, rho=res.rho, gamma=res.gamma, sigma=sigma)
    info = {"loglik": res.loglik, "iterations": res.iterations, "converged": res.converged,
            "sigma_used": sigma, "samples": int(sum(d.size for d in data)), "segments_used": nseg,
            "wall_time_s": res.wall_time_s, "data_time_s": t_data}
    write_json(trace, info)
    log.info("EM: %d iterations, converged=%s, loglik %.6f, %.1f s", res.iterations, res.converged,
             res.loglik[-1], res.wall_time_s)
    return info


def run_evaluate(cfg: dict, moments: Path, lsq_path: Path, em_path: Path, trace: Path, metrics: Path,
                 overlay: Path, loglik_png: Path, name: str = "") -> dict:
    """metrics.json (gamma_true, lsq and em errors) and the two figures."""
    x = signal_of(cfg)
    with np.load(moments) as f:
        gamma_true = float(f["gamma_true"])
    r = _load_lsq(lsq_path)
    with np.load(em_path) as f:
        x_em, g_em = f["x"].copy(), float(f["gamma"])
    tr = read_json(trace)
    out = {
        "experiment": name,
        "N": int(cfg["N"]), "L": int(cfg["L"]), "sigma": float(cfg["sigma"]),
        "gamma_target": float(cfg["placement"]["gamma"]),
        "gamma_true": gamma_true,
        "lsq": {"rel_error": relative_error(r.x, x), "rel_error_no_shift": relative_error(r.x, x, align=False),
                "gamma": r.gamma,
                "gamma_rel_error": abs(r.gamma - gamma_true) / gamma_true, "cost": r.cost,
                "restart": r.restart, "restart_costs": r.costs},
        "em": {"rel_error": relative_error(x_em, x), "rel_error_no_shift": relative_error(x_em, x, align=False),
               "gamma": g_em,
               "gamma_rel_error": abs(g_em - gamma_true) / gamma_true, "iterations": tr["iterations"],
               "converged": tr["converged"], "loglik": tr["loglik"][-1], "samples": tr["samples"]},
    }
    write_json(metrics, out)
    # estimates drawn at their best zero-filled shift (the one rel_error uses)
    plot_overlay(overlay, x, {"least squares": align_shift(r.x, x), "EM": align_shift(x_em, x)},
                 title=f"{name}: LS err {out['lsq']['rel_error']:.3f}, EM err {out['em']['rel_error']:.3f}")
    plot_loglik(loglik_png, tr["loglik"], title=f"{name}: approximate EM")
    return out


def run_all(cfg: dict, outdir: Path, name: str = "", progress_bar: bool | None = None) -> dict:
    """Every stage in this process, writing the workflow's file layout under ``outdir``."""
    from pathlib import Path as P

    d = P(outdir)
    segs = [d / "segments" / f"{k}.npz" for k in range(int(cfg["segments"]))]
    for k, p in enumerate(segs):
        if not p.exists():  # resume: a finished segment is not redone
            run_segment(cfg, k, p, progress_bar=progress_bar)
    run_merge(segs, d / "moments.npz")
    rs = [d / "lsq" / f"restart_{r}.npz" for r in range(int(cfg["lsq"]["restarts"]))]
    for r, p in enumerate(progress(rs, desc="LS restarts", enable=progress_bar)):
        if not p.exists():
            run_lsq_restart(cfg, d / "moments.npz", r, p)
    run_pick(rs, d / "lsq.npz")
    run_em(cfg, d / "lsq.npz", d / "moments.npz", d / "em.npz", d / "em_trace.json", progress_bar=progress_bar)
    return run_evaluate(cfg, d / "moments.npz", d / "lsq.npz", d / "em.npz", d / "em_trace.json",
                        d / "metrics.json", d / "figures" / "overlay.png", d / "figures" / "loglik.png", name=name)
