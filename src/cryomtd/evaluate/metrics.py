"""Per-experiment metrics (``metrics.json``) and the cross-experiment ``summary.csv``.

``metrics.json`` of a cryo3d experiment (all lengths in voxels, resolutions in Å when the
voxel size is known, else voxels)::

    {"experiment": str, "kind": "cryo3d", "L": int, "ell_max": int, "voxel_size": float,
     "gamma_true": float | null, "thresholds": [0.5, 0.143],
     "frequencies": [...],                # shell k → k / (L·voxel_size), 1/Å
     "estimators": {
        "lsq": {"fsc": [...], "resolution_0.5": float, "resolution_0.143": float,
                "resolution_0.5_bound": bool, ...   # true: never crossed, value = last shell
                "relative_error": float,             # ‖aligned − truth‖ / ‖truth‖ over voxels
                "relative_error_coef": float | null, # same over basis coefficients
                "correlation": float, "reflected": bool, "rotation": 3×3, "shift": [x, y, z],
                "gamma": float | null, "gamma_relative_error": float | null,
                "wall_time_s": float | null, "iterations": int | null},
        "em": {...}}}

``summary.csv`` has one row per (experiment, estimator): ``experiment, kind, estimator``
followed by every scalar field of the experiment and of the estimator (lists dropped,
nested dicts flattened with dots). The 1-D metrics.json (``cryomtd.mtd1d``) keeps its
estimators as top-level ``lsq``/``em`` dicts and says ``rel_error``/``gamma_rel_error``;
both layouts are read, and those two names land in the ``relative_error`` and
``gamma_relative_error`` columns. A file with no estimator gives one row of its scalars.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryomtd.evaluate.align import align, relative_error
from cryomtd.evaluate.fsc import crossing_shell, fsc, resolution, shell_frequencies
from cryomtd.io import InputError, atomic_path, read_json, read_npz
from cryomtd.volume import read_mrc

if TYPE_CHECKING:
    from cryomtd.basis import SphericalBessel

__all__ = ["EvaluationSettings", "estimator_metrics", "gamma_from_micrographs", "gamma_from_shift_prior", "evaluate_experiment",
           "summary_rows", "write_summary", "ESTIMATORS"]

log = logging.getLogger("cryomtd.evaluate")
ESTIMATORS = ("lsq", "em")


@dataclass(frozen=True)
class EvaluationSettings:
    """The ``evaluate`` config block (defaults are written in workflow/schemas/evaluate.schema.yaml)."""

    grid_step: float = 15.0
    ell_search: int = 6
    ell_refine: int | None = 12
    n_candidates: int = 4
    refine: bool = True
    reflections: bool = True
    shift: bool = True
    output: str = "basis"
    thresholds: Sequence[float] = field(default=(0.5, 0.143))

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> "EvaluationSettings":
        block = dict(block or {})
        unknown = set(block) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"config evaluate: unknown keys {sorted(unknown)}")
        if "thresholds" in block:
            block["thresholds"] = tuple(float(t) for t in block["thresholds"])
        return cls(**block)


def _num(x: Any) -> float | None:
    """A scalar (or the first entry of a 1-element array) as float; None stays None."""
    if x is None:
        return None
    return float(np.asarray(x).reshape(-1)[0]) if np.ndim(x) else float(x)


def gamma_from_micrographs(infos: Iterable[Mapping[str, Any]]) -> float:
    """True density γ = Σ n_particles · L² / Σ pixels over micrographs ``{k}.json``.

    Each info needs ``n_particles``, ``size`` (side length, or [height, width]) and ``L`` (the
    particle box; :func:`evaluate_experiment` fills it from truth.npz when a file lacks it).
    """
    num = den = 0.0
    for info in infos:
        size = info["size"]
        pixels = float(np.prod(size)) if np.ndim(size) else float(size) ** 2
        num += float(info["n_particles"]) * float(info["L"]) ** 2
        den += pixels
    if den <= 0:
        raise InputError("micrographs: total size is zero, cannot compute γ")
    return num / den


def gamma_from_shift_prior(rho: np.ndarray, L: int) -> float:
    """Density γ implied by the approximate-EM shift prior ρ (2L, 2L) (``em.npz``, docs/design.md §11).

    Shifts with s_y = L or s_x = L leave the L×L crop empty (cryomtd.em3d). A particle at a
    uniform position overlaps on average ((2L−1)/L)² patches of the L×L tiling, so with at most
    one particle per patch P(non-empty patch) = γ (2L−1)²/L², i.e.
    γ = (1 − Σ_{empty s} ρ_s) · L² / (2L−1)².
    """
    rho = np.asarray(rho, dtype=np.float64)
    if rho.shape != (2 * L, 2 * L):
        raise InputError(f"em.npz: rho must have shape {(2 * L, 2 * L)} for L={L}, got {rho.shape}")
    rho = rho / rho.sum()
    empty = np.zeros(rho.shape, dtype=bool)
    empty[L, :] = True
    empty[:, L] = True
    return float((1.0 - rho[empty].sum()) * L**2 / (2 * L - 1) ** 2)


def estimator_metrics(truth: np.ndarray, estimate: np.ndarray, *, basis: SphericalBessel | None = None,
                      truth_coef: np.ndarray | None = None, est_coef: np.ndarray | None = None,
                      voxel_size: float = 1.0, settings: EvaluationSettings = EvaluationSettings(),
                      ) -> tuple[dict[str, Any], np.ndarray]:
    """Align ``estimate`` (L, L, L) to ``truth`` and measure it. Returns (metrics dict, aligned volume)."""
    L = truth.shape[0]
    coef_ok = basis is not None and est_coef is not None and np.size(est_coef) == basis.size
    al = align(estimate, truth, reflections=settings.reflections, basis=basis, grid_step=settings.grid_step,
               ell_search=settings.ell_search, ell_refine=settings.ell_refine, refine=settings.refine, n_candidates=settings.n_candidates, shift=settings.shift,
               output=settings.output if coef_ok else "interpolate",
               est_coef=est_coef if coef_ok else None,
               ref_coef=truth_coef if (truth_coef is not None and basis is not None
                                       and np.size(truth_coef) == basis.size) else None)
    curve = fsc(al.volume, truth)
    out: dict[str, Any] = {"fsc": curve}
    for t in settings.thresholds:
        out[f"resolution_{t:g}"] = resolution(curve, t, voxel_size, L=L)
        out[f"resolution_{t:g}_bound"] = crossing_shell(curve, t) is None
    out["relative_error"] = relative_error(al.volume, truth)
    rel_coef = None
    if truth_coef is not None and al.coef is not None and np.size(al.coef) == np.size(truth_coef):
        # al.coef holds rotation/reflection only; a translation is applied on voxels, so then
        # the aligned volume is expanded again.
        coef = al.coef if not np.any(al.shift) else basis.expand(al.volume, rtol=1e-8)
        rel_coef = float(np.linalg.norm(coef - truth_coef) / np.linalg.norm(truth_coef))
    out.update(relative_error_coef=rel_coef, correlation=al.correlation, reflected=al.reflected,
               rotation=al.rotation, shift=al.shift)
    return out, al.volume


def embed_coefficients(coef: np.ndarray, basis: SphericalBessel) -> np.ndarray | None:
    """Coefficients of a lower-degree basis of the same L placed in ``basis`` (zeros above).

    The layout is ℓ-ascending and S(ℓ) does not depend on ell_max, so the coefficients of
    ``SphericalBessel(L, k)`` are the prefix ℓ ≤ k of ``basis``. Returns None when the length
    is not such a prefix (then the estimate is handled as a voxel volume).
    """
    coef = np.asarray(coef, dtype=np.float64).ravel()
    if coef.size == basis.size:
        return coef
    counts = np.cumsum(np.bincount(np.asarray(basis.ell), minlength=basis.ell_max + 1))
    if coef.size not in counts:
        return None
    out = np.zeros(basis.size)
    out[: coef.size] = coef
    return out


def evaluate_experiment(name: str, *, truth_npz: str | os.PathLike, truth_mrc: str | os.PathLike,
                        estimates: Mapping[str, Mapping[str, str | os.PathLike]],
                        micrograph_infos: Sequence[str | os.PathLike] = (), gamma_true: float | None = None,
                        settings: EvaluationSettings = EvaluationSettings(),
                        ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Evaluate every estimator of one cryo3d experiment.

    ``estimates`` maps an estimator name (``lsq``, ``em``) to its files: ``npz`` (with ``coef``;
    ``gamma``, ``cost_trace``, ``wall_time_s`` when present), ``mrc`` and optionally ``trace``
    (em_trace.json: ``loglik`` list, ``wall_time_s``). γ truth comes from ``micrograph_infos``
    (micrographs/{k}.json) or ``gamma_true``.

    Returns (metrics dict for metrics.json, aligned volumes by estimator, truth volume,
    convergence traces by estimator).
    """
    t = read_npz(truth_npz)
    if "coef" not in t:
        raise InputError(f"{truth_npz}: expected array 'coef' (truth coefficients)")
    truth = read_mrc(truth_mrc)[0]
    L = int(t["L"]) if "L" in t else truth.shape[0]
    if truth.shape[0] != L:
        raise InputError(f"{truth_mrc}: box {truth.shape[0]} differs from L={L} in {truth_npz}")
    ell_max = int(t["ell_max"]) if "ell_max" in t else None
    voxel_size = float(t["voxel_size"]) if "voxel_size" in t else 1.0
    from cryomtd.basis import SphericalBessel

    basis = SphericalBessel(L, ell_max)
    truth_coef = np.asarray(t["coef"], dtype=np.float64)
    if micrograph_infos:
        infos = []
        for p in micrograph_infos:
            info = dict(read_json(p))
            info.setdefault("L", L)
            for key in ("n_particles", "size"):
                if key not in info:
                    raise InputError(f"{p}: expected field '{key}'")
            infos.append(info)
        gamma_true = gamma_from_micrographs(infos)
    metrics: dict[str, Any] = {
        "experiment": name, "kind": "cryo3d", "L": L, "ell_max": basis.ell_max, "voxel_size": voxel_size,
        "gamma_true": gamma_true, "thresholds": list(settings.thresholds),
        "frequencies": shell_frequencies(L, voxel_size), "estimators": {},
    }
    aligned: dict[str, np.ndarray] = {}
    traces: dict[str, Any] = {}
    for est_name, files in estimates.items():
        z = read_npz(files["npz"])
        if "coef" not in z:
            raise InputError(f"{files['npz']}: expected array 'coef'")
        vol = read_mrc(files["mrc"])[0]
        if vol.shape != truth.shape:
            raise InputError(f"{files['mrc']}: shape {vol.shape} differs from the truth {truth.shape}")
        log.info("aligning %s of %s (L=%d, ell_max=%d)", est_name, name, L, basis.ell_max)
        m, vol_al = estimator_metrics(truth, vol, basis=basis, truth_coef=truth_coef,
                                      est_coef=embed_coefficients(z["coef"], basis),
                                      voxel_size=voxel_size, settings=settings)
        gamma = _num(z.get("gamma"))
        if gamma is None and "rho" in z and np.shape(z["rho"]) == (2 * L, 2 * L):
            gamma = gamma_from_shift_prior(z["rho"], L)
        m["gamma"] = gamma
        m["gamma_relative_error"] = (abs(gamma - gamma_true) / gamma_true
                                     if gamma is not None and gamma_true else None)
        m["wall_time_s"] = _num(z.get("wall_time_s"))
        trace = None
        if "cost_trace" in z:
            trace = {"label": "least-squares cost", "values": np.asarray(z["cost_trace"], float).ravel()}
            m["final_cost"] = _num(z.get("cost", trace["values"][-1] if trace["values"].size else None))
        if files.get("trace"):
            tj = read_json(files["trace"])
            if "loglik" in tj:
                trace = {"label": "log-likelihood", "values": np.asarray(tj["loglik"], float).ravel()}
            if tj.get("wall_time_s") is not None:
                m["wall_time_s"] = float(tj["wall_time_s"])
        m["iterations"] = int(trace["values"].size) if trace is not None else None
        if trace is not None:
            traces[est_name] = trace
        metrics["estimators"][est_name] = m
        aligned[est_name] = vol_al
        log.info("%s: relative error %.4f, FSC-0.5 %.3g, FSC-0.143 %.3g", est_name, m["relative_error"],
                 m.get("resolution_0.5", math.nan), m.get("resolution_0.143", math.nan))
    return metrics, aligned, truth, traces


def _scalars(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif v is None or isinstance(v, (bool, int, float, str, np.generic)):
            out[f"{prefix}{k}"] = v.item() if isinstance(v, np.generic) else v
    return out


# Column names of the 1-D metrics.json (cryomtd.mtd1d) mapped onto the 3-D ones, so one
# column holds one quantity across experiments.
COLUMN_ALIASES = {"rel_error": "relative_error", "gamma_rel_error": "gamma_relative_error"}


def _estimator_blocks(m: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Per-estimator dicts: ``m["estimators"]`` (3-D layout) or top-level ``lsq``/``em`` dicts (1-D layout)."""
    ests = m.get("estimators")
    if isinstance(ests, Mapping):
        return dict(ests)
    return {k: m[k] for k in ESTIMATORS if isinstance(m.get(k), Mapping)}


def summary_rows(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (experiment, estimator) from parsed metrics.json dicts (see module docstring)."""
    rows = []
    for m in metrics:
        ests = _estimator_blocks(m)
        top = _scalars({k: v for k, v in m.items() if k != "estimators" and k not in ests})
        base = {"experiment": top.pop("experiment", ""), "kind": top.pop("kind", ""), "estimator": ""}
        for est, vals in (ests or {"": {}}).items():
            row = {**base, "estimator": est, **top}
            for k, v in _scalars(vals).items():
                row[COLUMN_ALIASES.get(k, k)] = v
            rows.append(row)
    return rows


def write_summary(metrics_paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                  kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Read every metrics.json, write ``summary.csv`` atomically (columns: union, first-seen order).

    ``kinds`` (same length as ``metrics_paths``) fills the ``kind`` column where a metrics
    file does not state it; the experiment name defaults to the file's folder name.
    """
    if kinds is not None and len(kinds) != len(metrics_paths):
        raise ValueError("kinds must have one entry per metrics file")
    metrics = []
    for i, p in enumerate(metrics_paths):
        m = dict(read_json(p))
        if not m.get("experiment"):
            m["experiment"] = Path(p).parent.name
        if kinds is not None and not m.get("kind"):
            m["kind"] = kinds[i]
        metrics.append(m)
    rows = summary_rows(metrics)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(rows)
    return rows
