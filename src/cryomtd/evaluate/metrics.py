"""Per-experiment metrics (``metrics.json``) and the cross-experiment ``summary.csv``.

One experiment is evaluated in four steps, one function each: :func:`load_truth`
(truth.npz + truth.mrc), :func:`true_gamma` (γ from micrographs/{k}.json), per
estimator :func:`read_estimate` (``<estimator>.npz`` in the common format of
:mod:`cryomtd.estimate`, and ``<estimator>.mrc``) and :func:`measure_estimate` (align
to the truth, FSC, errors); :func:`evaluate_experiment` runs them for the files of a
:class:`~cryomtd.layout.Layout`, and :func:`cryomtd.evaluate.write_evaluation` writes the
figures, the aligned volumes and metrics.json.

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
                "wall_time_s": float | null, "iterations": int | null,
                "final_cost": float},                # least-squares estimates only
        "em": {...}}}

0.5 is the resolution criterion for an FSC against a known truth; 0.143 is the half-map
criterion (two independent half reconstructions), reported for comparison.

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

from cryomtd.estimate import Estimate
from cryomtd.evaluate.align import align, relative_error
from cryomtd.evaluate.figures import ConvergenceTrace
from cryomtd.evaluate.fsc import crossing_shell, fsc, resolution, shell_frequencies
from cryomtd.evaluate.settings import EvaluationAdvanced, EvaluationSettings
from cryomtd.io import InputError, atomic_path, read_json, read_npz
from cryomtd.layout import ESTIMATORS, Layout
from cryomtd.volume import read_mrc

if TYPE_CHECKING:
    from cryomtd.basis import SphericalBessel

__all__ = [
    "ESTIMATORS",
    "Evaluation",
    "EvaluationAdvanced",
    "EvaluationSettings",
    "Truth",
    "embed_coefficients",
    "estimate_gamma",
    "estimate_trace",
    "estimator_metrics",
    "evaluate_experiment",
    "gamma_from_micrographs",
    "gamma_from_shift_prior",
    "load_truth",
    "measure_estimate",
    "read_estimate",
    "summary_rows",
    "true_gamma",
    "write_summary",
]

log = logging.getLogger("cryomtd.evaluate")


@dataclass(frozen=True)
class Truth:
    """The ground truth of a cryo3d experiment: ``volume`` (L, L, L) ``[z, y, x]``, its
    coefficients ``coef`` (basis.size,) in ``basis`` = SphericalBessel(L, ell_max), and the
    ``voxel_size`` in Å (1.0 when truth.npz does not record one)."""

    volume: np.ndarray
    coef: np.ndarray
    basis: SphericalBessel
    voxel_size: float

    @property
    def L(self) -> int:
        return int(self.volume.shape[0])


@dataclass
class Evaluation:
    """One evaluated experiment: ``metrics`` (the metrics.json dict), ``truth``, the aligned
    volumes and the convergence traces by estimator (those that record one)."""

    metrics: dict[str, Any]
    truth: Truth
    aligned: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, ConvergenceTrace] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.metrics.get("experiment", ""))


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    v = float(np.asarray(x, dtype=np.float64).reshape(-1)[0])
    return v if math.isfinite(v) else None


def load_truth(truth_npz: str | os.PathLike, truth_mrc: str | os.PathLike) -> Truth:
    """truth.npz (``coef``; ``L``, ``ell_max``, ``voxel_size`` when present) and truth.mrc."""
    from cryomtd.basis import SphericalBessel

    t = read_npz(truth_npz, ("coef",), what="truth file")
    volume = read_mrc(truth_mrc)[0]
    L = int(t["L"]) if "L" in t else volume.shape[0]
    if volume.shape != (L, L, L):
        raise InputError(f"{truth_mrc}: shape {volume.shape} differs from L={L} in {truth_npz}")
    basis = SphericalBessel(L, int(t["ell_max"]) if "ell_max" in t else None)
    coef = np.asarray(t["coef"], dtype=np.float64).ravel()
    if coef.size != basis.size:
        raise InputError(
            f"{truth_npz}: 'coef' has {coef.size} entries, SphericalBessel(L={L}, "
            f"ell_max={basis.ell_max}) has {basis.size}"
        )
    voxel_size = float(t["voxel_size"]) if "voxel_size" in t else 1.0
    return Truth(volume=volume, coef=coef, basis=basis, voxel_size=voxel_size)


def gamma_from_micrographs(infos: Iterable[Mapping[str, Any]]) -> float:
    """True density γ = Σ n_particles · L² / Σ pixels over micrographs ``{k}.json``.

    Each info needs ``n_particles``, ``size`` (side length, or [height, width]) and ``L`` (the
    particle box; :func:`true_gamma` fills it from the truth when a file lacks it).
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


def true_gamma(micrograph_infos: Sequence[str | os.PathLike], L: int, gamma_true: float | None = None) -> float | None:
    """γ truth from the micrographs' JSON files (:func:`gamma_from_micrographs`), else ``gamma_true``."""
    if not micrograph_infos:
        return gamma_true
    from cryomtd.io import number_field

    infos = []
    for p in micrograph_infos:
        raw = read_json(p)
        n = number_field(raw, "n_particles", p, integer=True, minimum=0, written_by="simulate_micrograph")
        box = number_field(raw, "L", p, integer=True, positive=True, default=L)
        size = raw.get("size")
        if isinstance(size, list) and len(size) == 2:  # [height, width]
            size = [number_field({"size": s}, "size", p, integer=True, positive=True) for s in size]
        elif not isinstance(size, list):
            size = number_field(raw, "size", p, integer=True, positive=True, written_by="simulate_micrograph")
        else:
            raise InputError(f"{p}: field 'size': expected a positive integer or [height, width], got {size!r}")
        infos.append({**raw, "n_particles": n, "L": box, "size": size})
    return gamma_from_micrographs(infos)


def gamma_from_shift_prior(rho: np.ndarray, L: int) -> float:
    """Density γ implied by the approximate-EM shift prior ρ (2L, 2L).

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


def read_estimate(
    npz: str | os.PathLike, mrc: str | os.PathLike, truth: Truth, name: str = "estimate"
) -> tuple[Estimate, np.ndarray]:
    """An estimator's result: ``<name>.npz`` (:meth:`cryomtd.estimate.Estimate.load`) and its
    volume ``<name>.mrc`` (same box as the truth)."""
    est = Estimate.load(npz, what=f"{name} estimate file")
    volume = read_mrc(mrc)[0]
    if volume.shape != truth.volume.shape:
        raise InputError(f"{mrc}: shape {volume.shape} differs from the truth {truth.volume.shape}")
    return est, volume


def estimate_gamma(est: Estimate, L: int) -> float | None:
    """The estimate's γ; when it gives none (NaN) but records the EM shift prior ``rho``
    (2L, 2L), the γ that prior implies (:func:`gamma_from_shift_prior`); else None."""
    gamma = _finite_or_none(est.gamma)
    rho = est.extra.get("rho")
    if gamma is None and rho is not None and np.shape(rho) == (2 * L, 2 * L):
        gamma = gamma_from_shift_prior(rho, L)
    return gamma


def estimate_trace(est: Estimate) -> ConvergenceTrace | None:
    """The estimate's per-iteration trace for the convergence figure (None when it records none).

    Stage boundaries come from ``extra["stage_ends"]`` (number of trace entries at the end of
    each stage) and ``extra["stage_labels"]`` when the estimator records them. When the
    settings say ``fraction`` < 1 (stochastic EM) the note says each value is evaluated on
    that iteration's random subset of patches.
    """
    values = np.asarray(est.trace, dtype=np.float64).ravel()
    if values.size == 0:
        return None
    ends = tuple(int(e) for e in np.asarray(est.extra.get("stage_ends", []), dtype=np.int64).ravel())
    labels = tuple(str(s) for s in np.asarray(est.extra.get("stage_labels", []), dtype=str).ravel())
    note = ""
    fraction = est.settings.get("fraction") if isinstance(est.settings, Mapping) else None
    if fraction is not None and float(fraction) < 1.0:
        note = (
            f"stochastic EM: each value is evaluated over that iteration's random subset "
            f"of patches ({100 * float(fraction):g} %), so it fluctuates"
        )
    return ConvergenceTrace(label=est.trace_label, values=values, stage_ends=ends, stage_labels=labels, note=note)


def estimator_metrics(
    truth: np.ndarray,
    estimate: np.ndarray,
    *,
    basis: SphericalBessel | None = None,
    truth_coef: np.ndarray | None = None,
    est_coef: np.ndarray | None = None,
    voxel_size: float = 1.0,
    settings: EvaluationSettings | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Align ``estimate`` (L, L, L) to ``truth`` and measure it. Returns (metrics dict, aligned volume).

    ``settings`` None: the defaults (:class:`EvaluationSettings`)."""
    settings = settings or EvaluationSettings()
    L = truth.shape[0]
    adv = settings.advanced
    coef_ok = basis is not None and est_coef is not None and np.size(est_coef) == basis.size
    al = align(
        estimate,
        truth,
        reflections=settings.reflections,
        basis=basis,
        grid_step=adv.grid_step,
        ell_search=adv.ell_search,
        ell_refine=adv.ell_refine,
        refine=adv.refine,
        n_candidates=adv.n_candidates,
        shift=settings.shift,
        output=adv.output if coef_ok else "interpolate",
        est_coef=est_coef if coef_ok else None,
        ref_coef=truth_coef
        if (truth_coef is not None and basis is not None and np.size(truth_coef) == basis.size)
        else None,
    )
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
    out.update(
        relative_error_coef=rel_coef,
        correlation=al.correlation,
        reflected=al.reflected,
        rotation=al.rotation,
        shift=al.shift,
    )
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


def measure_estimate(
    truth: Truth,
    est: Estimate,
    volume: np.ndarray,
    *,
    gamma_true: float | None = None,
    settings: EvaluationSettings | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of one estimate against the truth (its ``estimators.<name>`` entry of
    metrics.json) and the aligned volume: alignment, FSC and resolutions, errors, γ, wall time,
    iterations and, for a cost trace, the final cost."""
    settings = settings or EvaluationSettings()
    m, aligned = estimator_metrics(
        truth.volume,
        volume,
        basis=truth.basis,
        truth_coef=truth.coef,
        est_coef=embed_coefficients(est.coef, truth.basis),
        voxel_size=truth.voxel_size,
        settings=settings,
    )
    gamma = estimate_gamma(est, truth.L)
    m["gamma"] = gamma
    m["gamma_relative_error"] = abs(gamma - gamma_true) / gamma_true if gamma is not None and gamma_true else None
    m["wall_time_s"] = _finite_or_none(est.wall_time_s)
    trace = np.asarray(est.trace, dtype=np.float64).ravel()
    iterations = est.extra.get("iterations")
    m["iterations"] = (
        int(np.asarray(iterations).reshape(-1)[0])
        if iterations is not None
        else (int(trace.size) if trace.size else None)
    )
    if "cost" in est.extra:
        m["final_cost"] = _finite_or_none(est.extra["cost"])
    elif "cost" in est.trace_label and trace.size:
        m["final_cost"] = float(trace[-1])
    return m, aligned


def evaluate_experiment(
    layout: Layout,
    estimators: Sequence[str] | None = None,
    *,
    micrograph_infos: Sequence[str | os.PathLike] = (),
    gamma_true: float | None = None,
    settings: EvaluationSettings | None = None,
) -> Evaluation:
    """Evaluate the estimators of one cryo3d experiment, files named by ``layout``.

    Reads ``layout.truth_npz``/``truth_mrc`` and, for each name in ``estimators`` (default:
    those of :data:`~cryomtd.layout.ESTIMATORS` whose ``<name>.npz`` exists),
    ``layout.estimate(name)`` and ``layout.estimate_mrc(name)``. γ truth comes from
    ``micrograph_infos`` (micrographs/{k}.json) or ``gamma_true``. Nothing is written
    (:func:`cryomtd.evaluate.write_evaluation` does that). ``settings`` None: the defaults.
    """
    settings = settings or EvaluationSettings()
    truth = load_truth(layout.truth_npz, layout.truth_mrc)
    if estimators is None:
        estimators = [n for n in ESTIMATORS if os.path.exists(layout.estimate(n))]
    gamma = true_gamma(micrograph_infos, truth.L, gamma_true)
    metrics: dict[str, Any] = {
        "experiment": str(layout.exp),
        "kind": "cryo3d",
        "L": truth.L,
        "ell_max": truth.basis.ell_max,
        "voxel_size": truth.voxel_size,
        "gamma_true": gamma,
        "thresholds": list(settings.thresholds),
        "frequencies": shell_frequencies(truth.L, truth.voxel_size),
        "estimators": {},
    }
    out = Evaluation(metrics=metrics, truth=truth)
    for name in estimators:
        est, volume = read_estimate(layout.estimate(name), layout.estimate_mrc(name), truth, name)
        log.info("aligning %s of %s (L=%d, ell_max=%d)", name, layout.exp, truth.L, truth.basis.ell_max)
        m, out.aligned[name] = measure_estimate(truth, est, volume, gamma_true=gamma, settings=settings)
        metrics["estimators"][name] = m
        trace = estimate_trace(est)
        if trace is not None:
            out.traces[name] = trace
        log.info(
            "%s: relative error %.4f, resolution at FSC 0.5 %.3g (FSC 0.143: %.3g)",
            name,
            m["relative_error"],
            m.get("resolution_0.5", math.nan),
            m.get("resolution_0.143", math.nan),
        )
    return out


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


def write_summary(
    metrics_paths: Sequence[str | os.PathLike], out: str | os.PathLike, kinds: Sequence[str] | None = None
) -> list[dict[str, Any]]:
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
