"""Conditioning of the 3-D moment fit at a known volume (issue 6, docs/mom3d.md).

For a truth (``truth.npz`` of the workflow: ``coef``, ``L``) truncated to ℓ ≤ ell_max and
each window W: the singular values σ of the weighted residual Jacobian of the fit cost at
the truth (exact noise-free moments, so the residual is 0 there), reported as the cost of a
1 % relative coefficient error along each singular direction, (0.01·σ·‖c‖)². Optionally
(``--basin EPS ...``) Gauss–Newton (:func:`cryomtd.mom3d.fit.gauss_newton_polish`) is
started at truth + EPS·‖c‖·(unit Gaussian direction) and the final cost and errors
(rotation/reflection aligned; and with a shift) are printed.

    python benchmarks/mom3d_conditioning.py results/trpv1_clean/truth.npz --ell-max 3 --windows 6 8 10
    python benchmarks/mom3d_conditioning.py results/trpv1_clean/truth.npz --ell-max 2 --windows 10 --basin 0.05 0.2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from cryomtd.basis import SphericalBessel
from cryomtd.evaluate.align import align, align_coefficients, reflect_coefficients
from cryomtd.mom3d.fit import _Cost, crop_moments, gauss_newton_polish
from cryomtd.mom3d.invariants import InvariantMomentModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("truth", help="truth.npz with coef and L")
    ap.add_argument("--ell-max", type=int, default=3)
    ap.add_argument("--windows", type=int, nargs="+", default=[10])
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--basin", type=float, nargs="*", default=[], help="Gauss-Newton starts EPS off the truth")
    ap.add_argument("--evaluations", type=int, default=40, help="Gauss-Newton cost evaluations per start")
    ap.add_argument("--cache-dir", default=None, help="invariant-map cache")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = np.load(args.truth)
    b = SphericalBessel(int(d["L"]), args.ell_max)
    t = np.asarray(d["coef"], dtype=np.float64)[:b.size]
    norm = float(np.linalg.norm(t))
    for W in args.windows:
        t0 = time.perf_counter()
        model = InvariantMomentModel(b, W, cache_dir=args.cache_dir)
        cost = _Cost(model, crop_moments(model.numpy(t, args.gamma), W), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
        sw, _ = cost.residual_scales()
        J = cost.box_jacobian(torch.as_tensor(t)).numpy() * sw.numpy()[:, None] * args.gamma / b.L**2
        c = (0.01 * np.linalg.svd(J, compute_uv=False) * norm) ** 2
        inner = c[:-3]  # the 3 smallest are the rotations (exact symmetries)
        print(json.dumps({"L": b.L, "ell_max": args.ell_max, "W": W, "rows": J.shape[0], "directions": inner.size,
                          "cost_1pct_strongest": float(c[0]), "cost_1pct_weakest": float(inner[-1]),
                          "cost_1pct_10th_weakest": float(inner[-10]),
                          "n_below_1e-12": int((inner < 1e-12).sum()), "n_below_1e-10": int((inner < 1e-10).sum()),
                          "n_below_1e-8": int((inner < 1e-8).sum()), "seconds": time.perf_counter() - t0}), flush=True)
        rng = np.random.default_rng(0)
        for eps in args.basin:
            start = t + eps * norm * rng.standard_normal(b.size) / np.sqrt(b.size)
            t1 = time.perf_counter()
            coef, gamma, f, _, njev = gauss_newton_polish(cost, start, args.gamma, max_iterations=args.evaluations)
            R, refl, _ = align_coefficients(coef, t, b)
            e = b.rotate(reflect_coefficients(coef, b) if refl else coef, R)
            vt = b.evaluate(t)
            a = align(b.evaluate(coef), vt, basis=b, est_coef=coef, ref_coef=t, shift=True, output="basis")
            print(json.dumps({"W": W, "start_error": eps, "cost": f, "jacobians": njev,
                              "coef_error_aligned": float(np.linalg.norm(e - t) / norm),
                              "volume_error_shift": float(np.linalg.norm(a.volume - vt) / np.linalg.norm(vt)),
                              "seconds": time.perf_counter() - t1}), flush=True)


if __name__ == "__main__":
    main()
