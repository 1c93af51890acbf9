"""Benchmark of the 3-D moment model: one model (+ gradient) evaluation, fast vs plain.

For each case (L, ell_max, W), in one process:

* fast path (:class:`cryomtd.mom3d.MomentModel`): precomputation time; one evaluation of
  (a1, a2, a3); one evaluation of the fit cost plus its exact gradient (torch autograd);
* the same with the in-plane 90° symmetry switched off (full quadrature grid);
* the invariant model (:class:`cryomtd.mom3d.invariants.InvariantMomentModel`, the fit's
  default): precomputation of the invariant map, model and cost + gradient, the ratio
  quadrature / invariant per cost + gradient, and its a3 difference from the fast path;
* the Gauss–Newton Jacobian of the invariant model (``--jacobian``; ``--symmetry C4`` for the
  reduced coefficients of :class:`~cryomtd.mom3d.symmetric.SymmetricModel`): the analytic
  :meth:`_Cost.box_jacobian` on the per-orbit rows against forward-mode autodiff
  (``torch.func.jacfwd``, one JVP per column) of the same box vector, with their ratio and
  maximum difference;
* the plain reference (:func:`cryomtd.mom3d.reference.expected_moments_reference`):
  project at every rotation of ``rotations.so3_quadrature(3·ell_max)`` and form each
  projection's autocorrelations by a product-sum per lag pair; its time, the ratio
  reference/fast and the maximum relative difference of a3 (must be ~1e-15).

    python benchmarks/mom3d.py --cases 7,2,4 11,2,6 11,3,6 --threads 1 --out /tmp/mom3d_bench.json
    python benchmarks/mom3d.py --cases 20,5,10 --repeat 1 --no-reference --no-full-grid --threads 2
    python benchmarks/mom3d.py --cases 20,5,10 --repeat 2 --no-reference --no-full-grid --jacobian \
        --symmetry C4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from cryomtd.basis import SphericalBessel
from cryomtd.mom3d import MomentModel
from cryomtd.mom3d.fit import _Cost, crop_moments
from cryomtd.mom3d.invariants import InvariantMomentModel
from cryomtd.mom3d.reference import expected_moments_reference


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def jacobian_case(model: InvariantMomentModel, c: np.ndarray, repeat: int, symmetry: str) -> dict:
    """Analytic Gauss–Newton Jacobian (per-orbit rows) vs forward-mode autodiff, same process."""
    from cryomtd.mom3d.symmetric import SymmetricModel

    m = model if symmetry == "C1" else SymmetricModel(model, symmetry)
    x = torch.as_tensor(np.random.default_rng(1).standard_normal(m.size))
    full = model.numpy(c, 0.1)
    cost = _Cost(m, crop_moments(full, model.W), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
    with torch.no_grad():
        J = cost.box_jacobian(x, orbits=True)
        t_an = _best(lambda: cost.box_jacobian(x, orbits=True), repeat)
        fwd = torch.func.jacfwd(lambda v: cost.box_vector(v, orbits=True))
        J_ref = fwd(x)
        t_ref = _best(lambda: fwd(x), max(1, repeat // 2))
    return {
        "jacobian_symmetry": symmetry,
        "jacobian_shape": list(J.shape),
        "jacobian_analytic_s": t_an,
        "jacobian_jacfwd_s": t_ref,
        "ratio_jacfwd_over_analytic": t_ref / t_an,
        "jacobian_max_rel_diff": float((J - J_ref).abs().max() / J_ref.abs().max()),
    }


def run_case(
    L: int,
    ell_max: int,
    W: int,
    repeat: int,
    reference: bool,
    full_grid: bool = True,
    jacobian: str | None = None,
    cache_dir: str | None = None,
) -> dict:
    b = SphericalBessel(L, ell_max)
    c = np.random.default_rng(0).standard_normal(b.size)
    out: dict = {"L": L, "ell_max": ell_max, "W": W, "size": b.size}
    for name, make in (
        ("fast", lambda: MomentModel(b, W)),
        ("fast_full_grid", lambda: MomentModel(b, W, symmetry=False)),
        ("invariants", lambda: InvariantMomentModel(b, W, cache_dir=cache_dir)),
    ):
        if name == "fast_full_grid" and not full_grid:
            continue
        t0 = time.perf_counter()
        model = make()
        out[f"{name}_setup_s"] = time.perf_counter() - t0
        out[f"{name}_rotations"] = model.quadrature.size if name != "invariants" else 0
        data = model.numpy(c, 0.1)
        cost = _Cost(model, crop_moments(data, W), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
        ct = torch.tensor(c * 1.1, requires_grad=True)
        g = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)

        def value_and_grad(cost=cost, ct=ct, g=g):
            f = cost(ct, g)
            torch.autograd.grad(f, (ct, g))

        out[f"{name}_model_s"] = _best(lambda model=model: model.numpy(c, 0.1), repeat)
        out[f"{name}_cost_grad_s"] = _best(value_and_grad, repeat)
        if name == "fast":
            fast = data
        if name == "invariants":
            out["invariants_orbits_x_invariants"] = list(model.map3.shape)
            out["ratio_fast_over_invariants_cost_grad"] = out["fast_cost_grad_s"] / out["invariants_cost_grad_s"]
            out["invariants_a3_max_rel_diff"] = float(np.abs(data.a3 - fast.a3).max() / np.abs(fast.a3).max())
            if jacobian:
                out.update(jacobian_case(model, c, repeat, jacobian))
    if reference:
        t0 = time.perf_counter()
        ref = expected_moments_reference(b, c, 0.1, W)
        out["reference_s"] = time.perf_counter() - t0
        out["ratio_reference_over_fast"] = out["reference_s"] / out["fast_model_s"]
        out["a3_max_rel_diff"] = float(np.abs(ref.a3 - fast.a3).max() / np.abs(ref.a3).max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["7,2,4", "11,2,6", "11,3,6"], help="L,ell_max,W triples")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-reference", action="store_true", help="skip the plain reference (large cases)")
    ap.add_argument("--no-full-grid", action="store_true", help="skip the full-grid quadrature model (large cases)")
    ap.add_argument("--jacobian", action="store_true", help="also time the Gauss-Newton Jacobian (invariant model)")
    ap.add_argument("--symmetry", default="C1", help="point group of the Jacobian case (reduced coefficients)")
    ap.add_argument("--cache-dir", default=None, help="keep/load the invariant map here (lsq.cache_dir)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for case in args.cases:
        L, lm, W = (int(v) for v in case.split(","))
        row = run_case(
            L,
            lm,
            W,
            args.repeat,
            not args.no_reference,
            not args.no_full_grid,
            args.symmetry if args.jacobian else None,
            args.cache_dir,
        )
        rows.append(row)
        print(json.dumps(row))
    result = {"machine": platform.processor() or platform.machine(), "torch_threads": args.threads, "cases": rows}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
