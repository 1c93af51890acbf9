"""Point-group detection from the moments alone (``lsq.symmetry: auto``) and the relaxation to C1.

The moments are rotation invariant, so a G-symmetric molecule in any orientation has the
moments of a G-symmetric volume in the module axes of :mod:`cryomtd.basis.symmetry` (n-fold
axis along z, 2-fold along x): fitting the G-symmetric volumes (``SymmetricModel``) needs
no axis search. Detection fits each candidate group and keeps the most symmetric one whose
cost the data do not reject:

1. **Candidates** (``lsq.advanced.candidates``, default C1–C8, D2–D6, T, O): their symmetric
   subspaces of the fitted basis, sorted by the number k of free coefficients (the most
   symmetric first; ties: the larger group first). Groups with the same subspace at this
   ℓmax (e.g. C4…C8 at ℓmax ≤ 3, all axially symmetric there) cannot be told apart by any
   data: they are merged into the smallest group (the weakest claim), the others listed
   in ``equivalent``.
2. **Screened restarts per group**: ``detect_restarts`` Gauss–Newton restarts of
   ``detect_iterations`` cost evaluations (the start of ``lsq.advanced.init``), the lowest
   continued by ``detect_refine`` more (as ``refine_top`` does for the fit).
3. **Rule**: with f_G the best cost of group G, f* = min_G f_G and the noise floor φ,
   choose the group of smallest k with

       f_G ≤ τ = max(φ, detect_factor · f*),

   i.e. the most symmetric group whose cost is at the noise floor or within a factor of the
   best (lower-symmetry) cost. φ = ``detect_floor`` for exact moments, else the larger of
   that and :func:`moment_noise_floor` (the expected cost at the truth from the sampling
   noise of the moments). The groups are fitted in order of increasing k, and fitting
   stops at the first group with f_G ≤ φ: later groups can only lower f*, hence τ, so they
   cannot change the choice.

After the fit in the chosen group, :func:`relax_to_c1` continues the best symmetric fit
without the constraint. At an exactly symmetric point the Jacobian vanishes on every
asymmetric direction (docs/mom3d.md, "Symmetric molecules"), so a Gauss–Newton step never
leaves the subspace: the relaxation starts from the fit plus a small random asymmetric
part (``relax_perturbation`` × ‖c‖) and keeps whichever of the start and the relaxed fit
costs less. For a symmetric truth the moments pull the asymmetric part back (cost ∝ δ⁴
along it: Gauss–Newton halves δ per step), so the truth stays in place.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cryomtd.basis.symmetry import parse_symmetry, point_group, symmetric_subspace
from cryomtd.io import InputError
from cryomtd.mom3d.settings import LsqAdvanced, LsqSettings
from cryomtd.settings import override

__all__ = [
    "AUTO",
    "DEFAULT_CANDIDATES",
    "SymmetryDetection",
    "candidate_groups",
    "choose_group",
    "moment_noise_floor",
    "detect_symmetry",
    "relax_to_c1",
    "after_relaxation",
    "is_auto",
]

log = logging.getLogger("cryomtd.mom3d")

AUTO = "auto"
#: The candidate groups of ``lsq.advanced.candidates`` (default written once, in the settings).
DEFAULT_CANDIDATES = LsqAdvanced().candidates


def is_auto(symbol: Any) -> bool:
    """Whether ``lsq.symmetry`` asks for detection ('auto', any case)."""
    return str(symbol).strip().lower() == AUTO


def _order(symbol: str) -> int:
    return int(point_group(symbol).shape[0])


def candidate_groups(basis: Any, candidates: Any = DEFAULT_CANDIDATES) -> list[tuple[str, int, list[str]]]:
    """(group, k, equivalent groups) for the distinct symmetric subspaces of ``basis`` among
    ``candidates``, the most symmetric (smallest k) first; groups without a nonzero symmetric
    volume at this ℓmax are dropped. C1 is always a candidate (the last)."""
    names: list[str] = []
    for c in candidates:
        g = parse_symmetry(c, "lsq.advanced.candidates")
        if g not in names:
            names.append(g)
    if "C1" not in names:
        names.append("C1")
    spaces = {g: symmetric_subspace(basis, g) for g in names}
    distinct: list[tuple[str, int, list[str]]] = []
    for g in sorted(names, key=_order):  # the smallest group of an equivalence class is kept
        Q = spaces[g]
        k = int(Q.shape[1])
        if k == 0:
            continue
        for rep, kr, eq in distinct:
            Qr = spaces[rep]
            if kr == k and np.linalg.norm(Qr.T @ Q) ** 2 > k - 1e-8:  # the same subspace
                eq.append(g)
                break
        else:
            distinct.append((g, k, []))
    return sorted(distinct, key=lambda t: (t[1], -_order(t[0])))


def choose_group(costs: dict[str, float], sizes: dict[str, int], floor: float, factor: float) -> tuple[str, float]:
    """(group, τ) of the rule in the module docstring: the group of smallest k (ties: the order
    of ``costs``) with cost ≤ τ = max(floor, factor · min cost)."""
    finite = {g: c for g, c in costs.items() if np.isfinite(c)}
    if not finite:
        raise ValueError("symmetry detection: no candidate group gave a finite cost")
    tau = max(float(floor), float(factor) * min(finite.values()))
    ok = [g for g in finite if finite[g] <= tau]
    order = {g: i for i, g in enumerate(costs)}
    return min(ok, key=lambda g: (sizes[g], order[g])), tau


def moment_noise_floor(moments: Any, W: int, *, sigma: float | None = 0.0) -> float:
    """Expected cost of the truth against these moments from their sampling noise alone.

    A crude, stated estimate: pixels taken as independent with variance v = a2(0) − a1²
    (noise and signal), so an a2 entry averaged over P pixels has variance ≈ a2(0)²/P and an
    a3 entry ≈ a2(0)³/P; the relative cost terms then add up to
    Σ_{S2} a2(0)²/P / Σ_{S2} d2² + Σ_{S3} a2(0)³/P / Σ_{S3} d3² (S2, S3 the fitted lags).
    0 for moments without a pixel count (exact model moments)."""
    from cryomtd.mom3d.fit import _masks, crop_moments

    P = getattr(moments, "count", None)
    if P is None or P <= 1:
        return 0.0
    _, d2, d3 = crop_moments(moments, W)
    m2, m3 = _masks(W, sigma is None)
    d2f, d3f = d2.reshape(-1)[m2.numpy()], d3.reshape(-1)[m3.numpy()]
    v = float(d2[W - 1, W - 1])
    return float(
        d2f.size * v**2 / P / max(float(d2f @ d2f), 1e-300) + d3f.size * abs(v) ** 3 / P / max(float(d3f @ d3f), 1e-300)
    )


@dataclass
class SymmetryDetection:
    """Result of :func:`detect_symmetry`.

    ``group``: the chosen point group; ``costs``: best cost per fitted group (in fitting
    order, most symmetric first); ``sizes``: free coefficients k per candidate group; ``equivalent``:
    groups with the same subspace as the listed one (merged); ``skipped``: candidates not
    fitted (after the early stop); ``floor``, ``factor``, ``threshold``: φ, the factor and τ
    of the rule; ``fits``: the best :class:`~cryomtd.mom3d.fit.FitResult` per group."""

    group: str
    costs: dict[str, float]
    sizes: dict[str, int]
    equivalent: dict[str, list[str]]
    skipped: list[str]
    floor: float
    factor: float
    threshold: float
    wall_time_s: float
    fits: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no fits): what ``lsq/symmetry.json`` and ``metrics.json`` record."""
        return {
            "group": self.group,
            "costs": {g: float(c) for g, c in self.costs.items()},
            "sizes": dict(self.sizes),
            "equivalent": {g: list(e) for g, e in self.equivalent.items() if e},
            "skipped": list(self.skipped),
            "floor": float(self.floor),
            "factor": float(self.factor),
            "threshold": float(self.threshold),
            "wall_time_s": float(self.wall_time_s),
            "rule": "most symmetric group with cost <= max(floor, factor * best cost)",
        }


def after_relaxation(summary: dict[str, Any], relaxed_cost: float) -> dict[str, Any]:
    """The detection ``summary`` (:meth:`SymmetryDetection.to_dict`) decided again with the C1 cost
    of the relaxed fit: the rule of the module docstring over the group costs with
    f_C1 = min(f_C1, ``relaxed_cost``). The relaxation can only show that the data need less
    symmetry (a C1 cost far below the chosen group's rejects it). Adds ``detected`` (the group
    before the relaxation) and ``relaxed_cost``; ``group``, ``threshold`` and ``costs`` (C1's the
    lower of the two) are the new ones."""
    costs = {g: float(c) for g, c in summary["costs"].items()}
    costs["C1"] = min(costs.get("C1", np.inf), float(relaxed_cost))
    group, tau = choose_group(costs, summary["sizes"], float(summary["floor"]), float(summary["factor"]))
    return {
        **summary,
        "detected": summary.get("detected", summary["group"]),
        "group": group,
        "threshold": tau,
        "costs": costs,
        "relaxed_cost": float(relaxed_cost),
    }


def _check(adv: Any) -> None:
    for key in ("detect_restarts", "detect_iterations"):
        if int(getattr(adv, key)) < 1:
            raise InputError(f"lsq.advanced.{key}: must be >= 1, got {getattr(adv, key)!r}")
    if int(adv.detect_refine) < 0:
        raise InputError(f"lsq.advanced.detect_refine: must be >= 0, got {adv.detect_refine!r}")
    if not float(adv.detect_factor) >= 1:
        raise InputError(f"lsq.advanced.detect_factor: must be >= 1, got {adv.detect_factor!r}")
    if not float(adv.detect_floor) >= 0:
        raise InputError(f"lsq.advanced.detect_floor: must be >= 0, got {adv.detect_floor!r}")


def detect_symmetry(
    moments: Any,
    basis: Any,
    settings: LsqSettings | None = None,
    *,
    sigma: float | None = 0.0,
    seed: int = 0,
    window: int | None = None,
    exact: bool | None = None,
    model: Any = None,
    ctf: Any = None,
    pixel_size: float | None = None,
    **overrides: Any,
) -> SymmetryDetection:
    """Choose the point group of the molecule behind ``moments`` (module docstring).

    ``settings``: the ``lsq`` block (its ``advanced`` detection keys, the start and the noise
    handling are used; its ``symmetry`` is ignored); ``exact``: the moments are noise-free
    model moments (floor ``detect_floor``); None = moments without a pixel count. Group G's
    restart r starts from ``rng(seed, "lsq3d-detect-G", r)``. ``ctf``, ``pixel_size``: as in
    :func:`cryomtd.mom3d.fit.fit_restart`."""
    from cryomtd.mom3d.fit import _mixture, fit_restart, make_model, rank_by_cost, refine_restart
    from cryomtd.seeding import rng

    t0 = time.perf_counter()
    s = override(settings or LsqSettings(), "lsq", **overrides)
    adv = s.advanced
    _check(adv)
    W = int(window or getattr(moments, "window", basis.L))
    mix = _mixture(ctf, pixel_size)
    if model is None or model.W != W or model.ctf != mix:
        model = make_model(basis, W, adv.model, adv.cache_dir, mix)
    if exact is None:
        exact = getattr(moments, "count", None) is None or int(moments.count) <= 1
    floor = (
        float(adv.detect_floor) if exact else max(float(adv.detect_floor), moment_noise_floor(moments, W, sigma=sigma))
    )
    groups = candidate_groups(basis, adv.candidates)
    screen = override(s, "lsq", optimizer="gauss-newton", max_iterations=int(adv.detect_iterations), polish=0)
    costs: dict[str, float] = {}
    sizes = {g: k for g, k, _ in groups}
    fits: dict[str, Any] = {}
    for g, k, eq in groups:
        tg = time.perf_counter()
        sg = override(screen, "lsq", symmetry=g, refine_iterations=max(int(adv.detect_refine), 1))
        runs = [
            fit_restart(
                moments, basis, sg, rng=rng(seed, f"lsq3d-detect-{g}", r), sigma=sigma, window=W, model=model, ctf=mix
            )
            for r in range(int(adv.detect_restarts))
        ]
        best = runs[int(rank_by_cost([r.cost for r in runs])[0])]
        if adv.detect_refine and best.cost > floor:
            more = refine_restart(
                moments, basis, best.coef, best.gamma, sg, sigma=sigma, window=W, model=model, ctf=mix
            )
            if more.cost < best.cost:
                best = more
        costs[g], fits[g] = float(best.cost), best
        log.info(
            "symmetry detection: %s (k=%d%s) cost %.3e (%d restarts, %.1f s)",
            g,
            k,
            f", same subspace as {', '.join(eq)}" if eq else "",
            best.cost,
            len(runs),
            time.perf_counter() - tg,
        )
        if best.cost <= floor:  # later groups cannot change the choice (module docstring)
            break
    group, tau = choose_group(costs, sizes, floor, float(adv.detect_factor))
    skipped = [g for g, _, _ in groups[len(costs) :]]
    det = SymmetryDetection(
        group=group,
        costs=costs,
        sizes=sizes,
        equivalent={g: eq for g, _, eq in groups},
        skipped=skipped,
        floor=floor,
        factor=float(adv.detect_factor),
        threshold=tau,
        wall_time_s=time.perf_counter() - t0,
        fits=fits,
    )
    log.info(
        "symmetry detection: %s (threshold %.3e = max(floor %.1e, %g x best %.3e)) in %.1f s",
        group,
        tau,
        floor,
        det.factor,
        min(costs.values()),
        det.wall_time_s,
    )
    return det


def relax_to_c1(
    moments: Any,
    basis: Any,
    coef: np.ndarray,
    gamma: float,
    group: str,
    settings: LsqSettings | None = None,
    *,
    rng: np.random.Generator,
    sigma: float | None = 0.0,
    window: int | None = None,
    model: Any = None,
    ctf: Any = None,
    pixel_size: float | None = None,
    **overrides: Any,
) -> Any:
    """The ``group``-symmetric fit (``coef`` (basis.size,), ``gamma``) continued without symmetry.

    Start: ``coef`` plus a random perturbation orthogonal to the ``group``-symmetric volumes
    of norm ``relax_perturbation`` · ‖coef‖ (drawn from ``rng``); then at most ``relax``
    Gauss–Newton cost evaluations in C1 (:func:`~cryomtd.mom3d.fit.refine_restart`). Returns
    the :class:`~cryomtd.mom3d.fit.FitResult` of lower cost among the relaxed fit and the
    unperturbed start (its cost in C1 is the symmetric fit's)."""
    from cryomtd.mom3d.fit import FitResult, _Cost, _mixture, crop_moments, make_model, refine_restart

    t0 = time.perf_counter()
    s = override(settings or LsqSettings(), "lsq", **overrides)
    adv = s.advanced
    W = int(window or getattr(moments, "window", basis.L))
    mix = _mixture(ctf, pixel_size)
    if model is None or model.W != W or model.ctf != mix:
        model = make_model(basis, W, adv.model, adv.cache_dir, mix)
    coef = np.asarray(coef, dtype=np.float64)
    cost = _Cost(model, crop_moments(moments, W), sigma=sigma, weights=adv.weights, prior_weight=s.prior_weight)
    with torch.no_grad():
        f0 = float(cost(torch.as_tensor(coef), torch.tensor(float(gamma), dtype=torch.float64)))
    start = FitResult(
        coef=coef.copy(), gamma=float(gamma), cost=f0, cost_trace=np.array([f0]), iterations=0, wall_time_s=0.0
    )
    if parse_symmetry(group) == "C1" or int(adv.relax) < 1:
        return start
    Q = symmetric_subspace(basis, group)
    delta = rng.standard_normal(basis.size)
    delta -= Q @ (Q.T @ delta)
    n = float(np.linalg.norm(delta))
    c0 = coef + (float(adv.relax_perturbation) * float(np.linalg.norm(coef)) / n * delta if n > 0 else 0.0)
    res = refine_restart(
        moments,
        basis,
        c0,
        float(gamma),
        s,
        sigma=sigma,
        window=W,
        model=model,
        ctf=mix,
        symmetry="C1",
        refine_iterations=int(adv.relax),
    )
    res.wall_time_s = time.perf_counter() - t0
    log.info("relax %s → C1: cost %.3e → %.3e (%.1f s)", group, f0, res.cost, res.wall_time_s)
    return res if res.cost < f0 else start
