"""Per-experiment metrics (``metrics.json``) and the cross-experiment ``summary.csv``.

One experiment is evaluated in four steps, one function each: :func:`load_truth`
(truth.npz + truth.mrc; for data experiments a reference map,
:func:`cryomtd.evaluate.reference.match_reference`), :func:`true_gamma` (γ from
micrographs/{k}.json), per estimator :func:`read_estimate` (``<estimator>.npz`` in the
common format of :mod:`cryomtd.estimate`, and ``<estimator>.mrc``) and
:func:`measure_estimate` (align to the truth, FSC, errors) and, with half-data estimates,
:func:`half_map_metrics` (half-map FSC); :func:`evaluate_experiment` runs them for the files of a
:class:`~cryomtd.layout.Layout`, and :func:`cryomtd.evaluate.write_evaluation` writes the
figures, the aligned volumes and metrics.json.

``metrics.json`` of a cryo3d experiment (all lengths in voxels, resolutions in Å when the
voxel size is known, else voxels)::

    {"experiment": str, "kind": "cryo3d",
     "truth": "simulated" | "reference" | null,  # what the estimates are compared with
     "half_maps": bool,                   # half-data estimates evaluated (half-map FSC)
     "L": int, "ell_max": int, "voxel_size": float,
     "gamma_true": float | null,          # simulated always; data only when given
     "thresholds": [0.5, 0.143],          # with a truth or a reference
     "reference": str, "reference_box": int, "reference_voxel_size": float,
     "reference_expansion_error": float,  # with a reference only
     "half_map_threshold": 0.143,         # with half maps only
     "n_micrographs": int,                # data experiments, when the side files are given
     "frequencies": [...],                # shell k → k / (L·voxel_size), 1/Å
     "estimators": {
        "lsq": {# against the truth or the reference:
                "fsc": [...], "resolution_0.5": float, "resolution_0.143": float,
                "resolution_0.5_bound": bool, ...   # true: never crossed, value = last shell
                "relative_error": float,             # ‖aligned − truth‖ / ‖truth‖ over voxels
                "relative_error_coef": float | null, # same over basis coefficients
                "correlation": float, "reflected": bool, "rotation": 3×3, "shift": [x, y, z],
                "scale_to_reference": float,         # reference only: errors after this LS scale
                # with half maps (half 2 aligned to half 1):
                "half_fsc": [...], "resolution_half_0.143": float,
                "resolution_half_0.143_bound": bool,
                "fsc_full_estimate": [...],          # sqrt(2·FSC_half / (1 + FSC_half))
                "half_correlation": float, "half_reflected": bool,
                "half_rotation": 3×3, "half_shift": [x, y, z],
                # always:
                "gamma": float | null,
                "gamma_relative_error": float | null,  # when γ truth is known
                "wall_time_s": float | null, "iterations": int | null,
                "final_cost": float,                 # least-squares estimates only
                "symmetry": str, "symmetry_detection": {...}},  # lsq.symmetry auto: group, cost per group
        "em": {...}}}

0.5 is the resolution criterion for an FSC against a known truth (or a reference map); 0.143
is the half-map criterion (two independent half reconstructions compared with each other):
sqrt(2·0.143/1.143) = 0.5, so the half-map resolution estimates where the full-data estimate
would cross 0.5 against the true map. ``resolution_0.143`` against a truth is reported for
comparison only.

``summary.csv`` has one row per (experiment, estimator): ``experiment, kind, estimator``
followed by every scalar field of the experiment and of the estimator (lists dropped,
nested dicts flattened with dots). The 1-D metrics.json (``cryomtd.mtd1d``) keeps its
estimators as top-level ``lsq``/``em`` dicts and says ``rel_error``/``gamma_rel_error``;
both layouts are read, and those two names land in the ``relative_error`` and
``gamma_relative_error`` columns. A file with no estimator gives one row of its scalars.
Every 3-D row has the ``resolution_half_0.143`` column (empty without half maps).
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

from cryomtd.em3d.driver import gamma_from_shift_prior
from cryomtd.estimate import Estimate
from cryomtd.evaluate.align import align, relative_error
from cryomtd.evaluate.figures import HALF_MAP, ConvergenceTrace
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
    "HALF_MAP_COLUMN",
    "embed_coefficients",
    "estimate_gamma",
    "estimate_geometry",
    "estimate_info",
    "estimate_trace",
    "estimator_metrics",
    "evaluate_experiment",
    "fsc_full_from_half",
    "gamma_from_micrographs",
    "gamma_from_shift_prior",
    "half_map_metrics",
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
    """One evaluated experiment.

    ``metrics``: the metrics.json dict; ``target``: what the estimates were compared with —
    the simulated truth, or the reference map brought onto the estimates' grid and basis
    (``metrics["truth"]`` says which), None when there is neither; ``aligned``: estimate
    name → the estimate aligned to the target; ``half_maps``: name → (half-1 estimate,
    half-2 estimate aligned to half 1), (L, L, L) each; ``traces``: convergence traces by
    estimator (those that record one); ``voxel_size`` (Å) of every volume.
    """

    metrics: dict[str, Any]
    target: Truth | None = None
    aligned: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, ConvergenceTrace] = field(default_factory=dict)
    half_maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    voxel_size: float = 1.0

    @property
    def name(self) -> str:
        return str(self.metrics.get("experiment", ""))

    @property
    def truth(self) -> Truth | None:
        """The comparison volume (same as ``target``; the name of earlier versions)."""
        return self.target

    @property
    def flavour(self) -> str | None:
        """``"simulated"`` (a truth), ``"reference"`` (a user's map) or None (half maps only)."""
        return self.metrics.get("truth")

    @property
    def target_label(self) -> str | None:
        """How figures name the target: ``"truth"``, ``"reference"`` or None."""
        return {"simulated": "truth", "reference": "reference"}.get(self.flavour or "")


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


def _read_estimate_files(
    npz: str | os.PathLike, mrc: str | os.PathLike, name: str
) -> tuple[Estimate, np.ndarray, float]:
    est = Estimate.load(npz, what=f"{name} estimate file")
    volume, vs = read_mrc(mrc)
    return est, volume, vs


def read_estimate(
    npz: str | os.PathLike, mrc: str | os.PathLike, truth: Truth | None = None, name: str = "estimate"
) -> tuple[Estimate, np.ndarray]:
    """An estimator's result: ``<name>.npz`` (:meth:`cryomtd.estimate.Estimate.load`) and its
    volume ``<name>.mrc`` (same box as the truth, when one is given)."""
    est, volume, _ = _read_estimate_files(npz, mrc, name)
    if truth is not None and volume.shape != truth.volume.shape:
        raise InputError(f"{mrc}: shape {volume.shape} differs from the truth {truth.volume.shape}")
    return est, volume


def estimate_geometry(
    est: Estimate, volume: np.ndarray, mrc_voxel_size: float = 0.0, where: str = "estimate"
) -> tuple[int, int, float]:
    """(L, ell_max, voxel_size Å) of an estimate: ``extra`` L, ell_max, voxel_size (both
    estimators record them), else the box of its MRC, the degree whose SphericalBessel(L, ·)
    has as many functions as ``coef``, the MRC header's voxel size (1.0 when none)."""
    from cryomtd.basis import SphericalBessel, default_ell_max

    L = int(np.asarray(est.extra["L"]).reshape(-1)[0]) if "L" in est.extra else int(volume.shape[0])
    if volume.shape != (L, L, L):
        raise InputError(f"{where}: volume of shape {volume.shape} differs from L={L} of its estimate file")
    if "ell_max" in est.extra:
        ell_max = int(np.asarray(est.extra["ell_max"]).reshape(-1)[0])
    else:
        sizes = {SphericalBessel(L, k).size: k for k in range(default_ell_max(L) + 1)}
        if np.size(est.coef) not in sizes:
            raise InputError(
                f"{where}: 'coef' has {np.size(est.coef)} entries, no SphericalBessel(L={L}, ell_max) has as many; "
                "record ell_max in the estimate file"
            )
        ell_max = sizes[int(np.size(est.coef))]
    vs = _finite_or_none(est.extra.get("voxel_size"))
    if vs is None or vs <= 0:
        vs = float(mrc_voxel_size) if mrc_voxel_size and mrc_voxel_size > 0 else 1.0
    return L, ell_max, float(vs)


def estimate_gamma(est: Estimate, L: int) -> float | None:
    """The estimate's γ; when it gives none (NaN) but records the EM shift prior ``rho``
    (N, N), N ≥ 2L, the γ that prior implies (:func:`gamma_from_shift_prior`); else None."""
    gamma = _finite_or_none(est.gamma)
    rho = est.extra.get("rho")
    shape = np.shape(rho) if rho is not None else ()
    if gamma is None and len(shape) == 2 and shape[0] == shape[1] >= 2 * L:
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


def _align(
    estimate: np.ndarray,
    target: np.ndarray,
    basis: SphericalBessel | None,
    est_coef: np.ndarray | None,
    target_coef: np.ndarray | None,
    settings: EvaluationSettings,
):
    """:func:`~cryomtd.evaluate.align.align` with the evaluation settings (on coefficients when
    both are in ``basis``)."""
    adv = settings.advanced
    coef_ok = basis is not None and est_coef is not None and np.size(est_coef) == basis.size
    return align(
        estimate,
        target,
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
        ref_coef=target_coef
        if (target_coef is not None and basis is not None and np.size(target_coef) == basis.size)
        else None,
    )


def estimator_metrics(
    truth: np.ndarray,
    estimate: np.ndarray,
    *,
    basis: SphericalBessel | None = None,
    truth_coef: np.ndarray | None = None,
    est_coef: np.ndarray | None = None,
    voxel_size: float = 1.0,
    settings: EvaluationSettings | None = None,
    fit_scale: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """Align ``estimate`` (L, L, L) to ``truth`` and measure it. Returns (metrics dict, aligned volume).

    ``fit_scale`` (a reference map, whose units are not the estimate's): the errors are those
    of the aligned estimate scaled by b = ⟨aligned, ref⟩/‖aligned‖² (least squares), i.e.
    min_b ‖b·aligned − ref‖/‖ref‖, and ``scale_to_reference`` = b is reported.
    ``settings`` None: the defaults (:class:`EvaluationSettings`)."""
    settings = settings or EvaluationSettings()
    L = truth.shape[0]
    al = _align(estimate, truth, basis, est_coef, truth_coef, settings)
    curve = fsc(al.volume, truth)
    out: dict[str, Any] = {"fsc": curve}
    for t in settings.thresholds:
        out[f"resolution_{t:g}"] = resolution(curve, t, voxel_size, L=L)
        out[f"resolution_{t:g}_bound"] = crossing_shell(curve, t) is None
    scale = 1.0
    if fit_scale:
        nv = float(np.vdot(al.volume, al.volume))
        scale = float(np.vdot(al.volume, truth)) / nv if nv > 0 else 1.0
    out["relative_error"] = relative_error(scale * al.volume, truth)
    rel_coef = None
    if truth_coef is not None and al.coef is not None and np.size(al.coef) == np.size(truth_coef):
        # al.coef holds rotation/reflection only; a translation is applied on voxels, so then
        # the aligned volume is expanded again.
        coef = al.coef if not np.any(al.shift) else basis.expand(al.volume, rtol=1e-8)
        rel_coef = float(np.linalg.norm(scale * coef - truth_coef) / np.linalg.norm(truth_coef))
    out.update(
        relative_error_coef=rel_coef,
        correlation=al.correlation,
        reflected=al.reflected,
        rotation=al.rotation,
        shift=al.shift,
    )
    if fit_scale:
        out["scale_to_reference"] = scale
    return out, al.volume


def fsc_full_from_half(half_fsc: np.ndarray) -> np.ndarray:
    """The FSC of the full-data estimate with the (unknown) true map implied by the half-map
    FSC: C = sqrt(2·F / (1 + F)) (Rosenthal & Henderson 2003), F clipped to [0, 1]. The half-map
    criterion F = 0.143 is C = 0.5, the criterion against a known truth."""
    F = np.clip(np.asarray(half_fsc, dtype=np.float64), 0.0, 1.0)
    return np.sqrt(2.0 * F / (1.0 + F))


def half_map_metrics(
    half1: np.ndarray,
    half2: np.ndarray,
    basis: SphericalBessel,
    *,
    voxel_size: float = 1.0,
    settings: EvaluationSettings | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Half-map FSC of two half-data estimates, coefficients ``half1``, ``half2`` in ``basis``.

    Half 2 is aligned to half 1 (O(3) and, with ``settings.shift``, a translation: each half is
    determined only up to those), then FSC_half = FSC(half 1, aligned half 2). Returns
    (metrics, half-1 volume, aligned half-2 volume); the metrics are ``half_fsc`` (curve),
    ``resolution_half_0.143`` (Å where it falls below 0.143, the half-map criterion) and its
    ``_bound`` flag, ``fsc_full_estimate`` (:func:`fsc_full_from_half`), ``half_correlation``,
    ``half_reflected``, ``half_rotation``, ``half_shift`` (the alignment of half 2 onto half 1).
    """
    settings = settings or EvaluationSettings()
    v1 = np.asarray(basis.evaluate(half1), dtype=np.float64)
    v2 = np.asarray(basis.evaluate(half2), dtype=np.float64)
    al = _align(v2, v1, basis, half2, half1, settings)
    curve = fsc(al.volume, v1)
    key = f"resolution_half_{HALF_MAP:g}"
    out: dict[str, Any] = {
        "half_fsc": curve,
        key: resolution(curve, HALF_MAP, voxel_size, L=basis.L),
        f"{key}_bound": crossing_shell(curve, HALF_MAP) is None,
        "fsc_full_estimate": fsc_full_from_half(curve),
        "half_correlation": al.correlation,
        "half_reflected": al.reflected,
        "half_rotation": al.rotation,
        "half_shift": al.shift,
    }
    return out, v1, al.volume


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


def estimate_info(
    est: Estimate, L: int, gamma_true: float | None = None, *, gamma_error: bool = True
) -> dict[str, Any]:
    """What an estimate says of itself: ``gamma`` (:func:`estimate_gamma`),
    ``gamma_relative_error`` (against ``gamma_true``; the key only with ``gamma_error``),
    ``wall_time_s``, ``iterations`` and, for a cost trace, ``final_cost``."""
    m: dict[str, Any] = {}
    gamma = estimate_gamma(est, L)
    m["gamma"] = gamma
    if gamma_error:
        m["gamma_relative_error"] = abs(gamma - gamma_true) / gamma_true if gamma is not None and gamma_true else None
    m["wall_time_s"] = _finite_or_none(est.wall_time_s)
    trace = np.asarray(est.trace, dtype=np.float64).ravel()
    iterations = est.extra.get("iterations")
    m["iterations"] = (
        int(np.asarray(iterations).reshape(-1)[0])
        if iterations is not None
        else (int(trace.size) if trace.size else None)
    )
    if "symmetry_detection" in est.extra:  # lsq.symmetry: auto (cryomtd.mom3d.detect)
        import json

        m["symmetry"] = str(np.asarray(est.extra["symmetry"]).reshape(-1)[0])
        m["symmetry_detection"] = json.loads(str(np.asarray(est.extra["symmetry_detection"]).reshape(-1)[0]))
    if "cost" in est.extra:
        m["final_cost"] = _finite_or_none(est.extra["cost"])
    elif "cost" in est.trace_label and trace.size:
        m["final_cost"] = float(trace[-1])
    return m


def measure_estimate(
    truth: Truth,
    est: Estimate,
    volume: np.ndarray,
    *,
    gamma_true: float | None = None,
    settings: EvaluationSettings | None = None,
    fit_scale: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of one estimate against the truth (its ``estimators.<name>`` entry of
    metrics.json) and the aligned volume: alignment, FSC and resolutions, errors, γ, wall time,
    iterations and, for a cost trace, the final cost. ``fit_scale``: see :func:`estimator_metrics`
    (a reference map rather than a truth)."""
    settings = settings or EvaluationSettings()
    m, aligned = estimator_metrics(
        truth.volume,
        volume,
        basis=truth.basis,
        truth_coef=truth.coef,
        est_coef=embed_coefficients(est.coef, truth.basis),
        voxel_size=truth.voxel_size,
        settings=settings,
        fit_scale=fit_scale,
    )
    m.update(estimate_info(est, truth.L, gamma_true))
    return m, aligned


def _half_coef(est: Estimate, basis: SphericalBessel, where: str) -> np.ndarray:
    c = embed_coefficients(est.coef, basis)
    if c is None:
        raise InputError(
            f"{where}: 'coef' has {np.size(est.coef)} entries, not the coefficients of SphericalBessel(L={basis.L}, "
            f"ell_max ≤ {basis.ell_max}) of the full-data estimates"
        )
    return c


def _common_geometry(geoms: Mapping[str, tuple[int, int, float]]) -> tuple[int, int, float]:
    """One (L, ell_max, voxel size) for the estimates of a data experiment: L and the voxel size
    must agree (an error naming the files otherwise); ell_max is the largest (the others embed)."""
    if not geoms:
        raise InputError("no estimate files to evaluate (lsq.npz, em.npz)")
    Ls = {g[0] for g in geoms.values()}
    vss = [g[2] for g in geoms.values()]
    if len(Ls) > 1 or max(vss) - min(vss) > 1e-6 * max(vss):
        listing = ", ".join(f"{p}: L={g[0]}, voxel size {g[2]:g} Å" for p, g in geoms.items())
        raise InputError(f"the estimates of one experiment must share their box and voxel size; got {listing}")
    return Ls.pop(), max(g[1] for g in geoms.values()), vss[0]


def evaluate_experiment(
    layout: Layout,
    estimators: Sequence[str] | None = None,
    *,
    micrograph_infos: Sequence[str | os.PathLike] = (),
    gamma_true: float | None = None,
    settings: EvaluationSettings | None = None,
    truth: bool | None = None,
    reference: str | os.PathLike | None = None,
    halves: tuple[Layout, Layout] | bool | None = None,
) -> Evaluation:
    """Evaluate the estimators of one cryo3d experiment, files named by ``layout``.

    Three flavours (``metrics["truth"]``):

    * ``"simulated"`` — ``truth`` True (None: when ``layout.truth_npz`` exists): reads
      truth.npz/truth.mrc; each estimate is aligned to the truth (FSC, resolutions at
      ``settings.thresholds``, relative errors); γ truth from ``micrograph_infos``
      (micrographs/{k}.json) or ``gamma_true``.
    * ``"reference"`` — no truth, ``reference`` an MRC path: the map is brought to the
      estimates' box, voxel size and basis (:func:`cryomtd.evaluate.reference.match_reference`)
      and takes the truth's place (same keys; the relative errors are after a least-squares
      scale of the estimate, ``scale_to_reference``).
    * None — no truth, no reference: the half-map FSC only.

    The basis of a data experiment comes from the estimate files (``extra`` L, ell_max,
    voxel_size; :func:`estimate_geometry`); γ is each estimate's own, ``gamma_true`` (and
    ``gamma_relative_error``) only when given. ``halves`` (two layouts, e.g.
    ``(layout.half(1), layout.half(2))``; None: those when every half estimate file exists;
    True: those, required; False: none) adds, per estimator, the half-map FSC of the two
    half-data estimates (:func:`half_map_metrics`). ``estimators`` default: those of
    :data:`~cryomtd.layout.ESTIMATORS` whose ``layout.estimate(name)`` exists. Nothing is
    written (:func:`cryomtd.evaluate.write_evaluation` does that). ``settings`` None: the defaults.
    """
    from cryomtd.basis import SphericalBessel
    from cryomtd.evaluate.reference import match_reference

    settings = settings or EvaluationSettings()
    if truth is None:
        truth = os.path.exists(layout.truth_npz)
    target = load_truth(layout.truth_npz, layout.truth_mrc) if truth else None
    if estimators is None:
        estimators = [n for n in ESTIMATORS if os.path.exists(layout.estimate(n))]
    estimators = list(estimators)
    if halves is None or halves is True:
        pair = (layout.half(1), layout.half(2))
        found = bool(estimators) and all(os.path.exists(h.estimate(n)) for h in pair for n in estimators)
        halves = pair if (halves is True or found) else None
    elif halves is False:
        halves = None
    if target is not None and reference is not None:
        log.warning("%s: a truth and a reference; the estimates are compared with the truth", layout.exp)
        reference = None

    full = {n: _read_estimate_files(layout.estimate(n), layout.estimate_mrc(n), n) for n in estimators}
    half_files = {
        n: tuple(
            _read_estimate_files(h.estimate(n), h.estimate_mrc(n), f"{n} (half {i})")
            for i, h in ((1, halves[0]), (2, halves[1]))
        )
        for n in (estimators if halves else ())
    }
    if target is not None:
        basis, L, vs = target.basis, target.L, target.voxel_size
        for n, (_, vol, _) in full.items():
            if vol.shape != target.volume.shape:
                raise InputError(
                    f"{layout.estimate_mrc(n)}: shape {vol.shape} differs from the truth {target.volume.shape}"
                )
        flavour: str | None = "simulated"
        gamma = true_gamma(micrograph_infos, L, gamma_true)
    else:
        geoms = {
            layout.estimate(n): estimate_geometry(e, v, mvs, layout.estimate_mrc(n)) for n, (e, v, mvs) in full.items()
        }
        for n, pair in half_files.items():
            for h, (e, v, mvs) in zip(halves, pair):
                geoms[h.estimate(n)] = estimate_geometry(e, v, mvs, h.estimate_mrc(n))
        L, ell_max, vs = _common_geometry(geoms)
        basis = SphericalBessel(L, ell_max)
        gamma = gamma_true
        flavour = None
        if reference is not None:
            ref = match_reference(reference, basis, vs)
            target = Truth(volume=ref.volume, coef=ref.coef, basis=basis, voxel_size=vs)
            flavour = "reference"
        elif not halves:
            raise InputError(
                f"{layout.exp}: nothing to compare the estimates with: no {layout.truth_npz}, no reference map, "
                f"no half-data estimates ({layout.half(1).root}, {layout.half(2).root})"
            )
    metrics: dict[str, Any] = {
        "experiment": str(layout.exp),
        "kind": "cryo3d",
        "truth": flavour,
        "half_maps": bool(halves),
        "L": L,
        "ell_max": basis.ell_max,
        "voxel_size": vs,
    }
    if flavour == "simulated" or gamma is not None:
        metrics["gamma_true"] = gamma
    if flavour is not None:
        metrics["thresholds"] = list(settings.thresholds)
    if flavour == "reference":
        metrics.update(
            reference=ref.path,
            reference_box=ref.box,
            reference_voxel_size=ref.voxel_size,
            reference_expansion_error=ref.expansion_error,
        )
    if halves:
        metrics["half_map_threshold"] = HALF_MAP
    if flavour != "simulated" and micrograph_infos:
        metrics["n_micrographs"] = len(micrograph_infos)
    metrics["frequencies"] = shell_frequencies(L, vs)
    metrics["estimators"] = {}
    out = Evaluation(metrics=metrics, target=target, voxel_size=vs)
    for name in estimators:
        est, volume, _ = full[name]
        m: dict[str, Any] = {}
        if target is not None:
            log.info(
                "aligning %s of %s to the %s (L=%d, ell_max=%d)", name, layout.exp, out.target_label, L, basis.ell_max
            )
            m, out.aligned[name] = estimator_metrics(
                target.volume,
                volume,
                basis=basis,
                truth_coef=target.coef,
                est_coef=embed_coefficients(est.coef, basis),
                voxel_size=vs,
                settings=settings,
                fit_scale=flavour == "reference",
            )
        if halves:
            (e1, _, _), (e2, _, _) = half_files[name]
            log.info("aligning half 2 of %s to half 1", name)
            hm, v1, v2 = half_map_metrics(
                _half_coef(e1, basis, halves[0].estimate(name)),
                _half_coef(e2, basis, halves[1].estimate(name)),
                basis,
                voxel_size=vs,
                settings=settings,
            )
            m.update(hm)
            out.half_maps[name] = (v1, v2)
        m.update(estimate_info(est, L, gamma, gamma_error=flavour == "simulated" or gamma is not None))
        metrics["estimators"][name] = m
        trace = estimate_trace(est)
        if trace is not None:
            out.traces[name] = trace
        log.info(
            "%s: relative error %.4g, resolution at FSC 0.5 %.3g (FSC 0.143: %.3g), half-map resolution %.3g",
            name,
            m.get("relative_error", math.nan),
            m.get("resolution_0.5", math.nan),
            m.get("resolution_0.143", math.nan),
            m.get(f"resolution_half_{HALF_MAP:g}", math.nan),
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


#: The summary column of the half-map resolution (Å at FSC 0.143 between the half-data estimates).
HALF_MAP_COLUMN = f"resolution_half_{HALF_MAP:g}"


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
            if base["kind"] == "cryo3d" and est:  # the half-map column of every 3-D row (empty without halves)
                row.setdefault(HALF_MAP_COLUMN, None)
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
