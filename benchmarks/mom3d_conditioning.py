"""Conditioning of the 3-D moment fit at a known volume (docs/mom3d.md).

For a truth (``truth.npz`` of the workflow: ``coef``, ``L``) truncated to ℓ ≤ ell_max and
each window W: the singular values σ of the weighted residual Jacobian of the fit cost at
the truth (exact noise-free moments, so the residual is 0 there), reported as the cost of a
1 % relative coefficient error along each singular direction, (0.01·σ·‖c‖)². Optionally
(``--basin EPS ...``) Gauss–Newton (:func:`cryomtd.mom3d.fit.gauss_newton_polish`) is
started at truth + EPS·‖c‖·(unit Gaussian direction) and the final cost and errors
(rotation/reflection aligned; and with a shift) are printed. ``--symmetry G`` measures the
fit over the G-symmetric volumes (``lsq.symmetry``): the truth is projected onto them and
the Jacobian is taken in the reduced coefficients. The directions dropped as exact
symmetries are the infinitesimal rotations that stay in the fitted space (3 for a generic
C1 truth, 2 for an axially symmetric one, 1 for Cn about z, 0 for Dn, T, O, I).

    python benchmarks/mom3d_conditioning.py results/trpv1_clean/truth.npz --ell-max 3 --windows 6 8 10
    python benchmarks/mom3d_conditioning.py results/trpv1_clean/truth.npz --ell-max 2 --windows 10 --basin 0.05 0.2
    python benchmarks/mom3d_conditioning.py results/trpv1_clean/truth.npz --ell-max 5 --windows 10 --symmetry C4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from cryomtd.basis import SphericalBessel
from cryomtd.basis.symmetry import symmetric_subspace
from cryomtd.evaluate.align import align, align_coefficients, reflect_coefficients
from cryomtd.mom3d.fit import _Cost, crop_moments, gauss_newton_polish
from cryomtd.mom3d.invariants import InvariantMomentModel
from cryomtd.mom3d.symmetric import SymmetricModel


def rotation_gauge(basis: SphericalBessel, coef: np.ndarray, Q: np.ndarray) -> int:
    """dim(span(rotation tangents of ``coef``) ∩ span(Q)): the exact symmetries of the fit over span(Q).

    Tangents by central differences of ``basis.rotate`` about x, y, z; the intersection's
    dimension is rank(T) − rank((I − QQᵀ)T)."""
    from scipy.spatial.transform import Rotation

    h = 1e-5
    T = np.stack(
        [
            (
                basis.rotate(coef, Rotation.from_rotvec(h * u).as_matrix())
                - basis.rotate(coef, Rotation.from_rotvec(-h * u).as_matrix())
            )
            / (2 * h)
            for u in np.eye(3)
        ],
        axis=1,
    )
    tol = 1e-6 * float(np.linalg.norm(coef))
    rank = lambda A: int((np.linalg.svd(A, compute_uv=False) > tol).sum())  # noqa: E731
    return rank(T) - rank(T - Q @ (Q.T @ T))


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
    ap.add_argument("--symmetry", default="C1", help="fit over the volumes of this point group (lsq.symmetry)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = np.load(args.truth)
    b = SphericalBessel(int(d["L"]), args.ell_max)
    t = np.asarray(d["coef"], dtype=np.float64)[: b.size]
    Q = symmetric_subspace(b, args.symmetry)
    asym = float(np.linalg.norm(t - Q @ (Q.T @ t)) / np.linalg.norm(t))
    t = Q @ (Q.T @ t)  # the symmetric part (the truth itself for C1)
    gauge = rotation_gauge(b, t, Q)
    norm = float(np.linalg.norm(t))
    for W in args.windows:
        t0 = time.perf_counter()
        full = InvariantMomentModel(b, W, cache_dir=args.cache_dir)
        model = full if args.symmetry.upper() == "C1" else SymmetricModel(full, args.symmetry)
        z = Q.T @ t  # the truth in the fitted coefficients
        cost = _Cost(model, crop_moments(full.numpy(t, args.gamma), W), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
        sw, _ = cost.residual_scales()
        J = cost.box_jacobian(torch.as_tensor(z)).numpy() * sw.numpy()[:, None] * args.gamma / b.L**2
        c = (0.01 * np.linalg.svd(J, compute_uv=False) * norm) ** 2
        inner = c[: c.size - gauge]  # the smallest `gauge` are the rotations (exact symmetries)
        print(
            json.dumps(
                {
                    "L": b.L,
                    "ell_max": args.ell_max,
                    "W": W,
                    "symmetry": args.symmetry,
                    "truth_asymmetry": asym,
                    "fitted": int(Q.shape[1]),
                    "rotation_gauge": gauge,
                    "rows": J.shape[0],
                    "directions": inner.size,
                    "cost_1pct_strongest": float(c[0]),
                    "cost_1pct_weakest": float(inner[-1]),
                    "cost_1pct_10th_weakest": float(inner[-10]),
                    "n_below_1e-12": int((inner < 1e-12).sum()),
                    "n_below_1e-10": int((inner < 1e-10).sum()),
                    "n_below_1e-8": int((inner < 1e-8).sum()),
                    "seconds": time.perf_counter() - t0,
                }
            ),
            flush=True,
        )
        rng = np.random.default_rng(0)
        for eps in args.basin:
            start = z + eps * norm * rng.standard_normal(z.size) / np.sqrt(z.size)
            t1 = time.perf_counter()
            zf, gamma, f, _, njev = gauss_newton_polish(cost, start, args.gamma, max_iterations=args.evaluations)
            coef = Q @ zf
            R, refl, _ = align_coefficients(coef, t, b)
            e = b.rotate(reflect_coefficients(coef, b) if refl else coef, R)
            vt = b.evaluate(t)
            a = align(b.evaluate(coef), vt, basis=b, est_coef=coef, ref_coef=t, shift=True, output="basis")
            print(
                json.dumps(
                    {
                        "W": W,
                        "start_error": eps,
                        "cost": f,
                        "jacobians": njev,
                        "coef_error_aligned": float(np.linalg.norm(e - t) / norm),
                        "volume_error_shift": float(np.linalg.norm(a.volume - vt) / np.linalg.norm(vt)),
                        "seconds": time.perf_counter() - t1,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
