"""``cryomtd recover-lsq`` and ``cryomtd exact-moments``: the 3-D method of moments without Snakemake.

Same stage functions as the rules recover_lsq / pick_best_restart / exact_moments
(:mod:`cryomtd.mom3d.stage`); defaults are those of workflow/schemas/lsq3d.schema.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _recover(args: argparse.Namespace) -> int:
    from cryomtd.mom3d.stage import pick_best_file, recover_restart_file, refine_restart_file

    out = Path(args.out)
    lsq = {"ell_max": args.fit_ell_max, "window": args.window, "optimizer": args.optimizer,
           "max_iterations": args.max_iterations, "max_inner": args.max_inner, "weights": args.weights, "prior_weight": args.prior_weight,
           "marching": args.marching, "a2_first": args.a2_first, "noise": args.noise, "gamma_init": args.gamma_init, "threads": args.threads,
           "polish": args.polish, "model": args.model, "cache_dir": args.cache_dir,
           "symmetry": args.symmetry, "init": args.init, "init_radius": args.init_radius,
           "init_spread": args.init_spread, "refine_top": args.refine_top,
           "refine_iterations": args.refine_iterations}
    files = []
    for r in range(args.restarts):
        f = out / "lsq" / f"restart_{r}.npz"
        if not f.exists():  # reruns resume
            recover_restart_file(args.moments, f, L=args.L, ell_max=args.ell_max, lsq=lsq, seed=args.seed,
                                 restart=r, exact=args.exact)
        files.append(f)
    refined = []
    for k in range(args.refine_top):
        f = out / "lsq" / f"refine_{k}.npz"
        if not f.exists():
            refine_restart_file(args.moments, files, f, rank=k, L=args.L, ell_max=args.ell_max, lsq=lsq,
                                exact=args.exact)
        refined.append(f)
    files += refined
    best = pick_best_file(files, out / "lsq.npz", out / "lsq.mrc", voxel_size=args.voxel_size)
    print(f"recover-lsq: best restart {best} of {args.restarts} → {out}/lsq.npz, {out}/lsq.mrc")
    return 0


def _exact(args: argparse.Namespace) -> int:
    from cryomtd.mom3d.stage import exact_moments_file

    exact_moments_file(args.truth, args.out, gamma=args.gamma, window=args.window, fit_ell_max=args.fit_ell_max,
                       threads=args.threads)
    print(f"exact-moments: → {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd recover-lsq`` and ``cryomtd exact-moments``."""
    p = sub.add_parser("recover-lsq", help="3-D volume from moments by least squares (rules recover_lsq + pick_best_restart)",
                       description="Fit spherical-Bessel coefficients and the density γ to merged micrograph "
                       "moments (docs/mom3d.md). Writes OUT/lsq/restart_{r}.npz (and refine_{k}.npz), OUT/lsq.npz "
                       "and OUT/lsq.mrc; existing restart files are reused.")
    p.add_argument("moments", help="moments.npz (cryomtd.moments.Moments2D)")
    p.add_argument("--L", type=int, required=True, help="volume box size L")
    p.add_argument("--ell-max", type=int, default=None, help="experiment basis ell_max (default: sampling criterion)")
    p.add_argument("--fit-ell-max", type=int, default=None, help="fitted degree (default: --ell-max)")
    p.add_argument("--window", type=int, default=None, help="fit window W (default (L-1)//2+1)")
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", default="conjugate-gradient", choices=["trust-regions", "conjugate-gradient", "gauss-newton"])
    p.add_argument("--max-inner", type=int, default=10, help="trust regions: inner steps per iteration")
    p.add_argument("--max-iterations", type=int, default=100)
    p.add_argument("--weights", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("W1", "W2", "W3"))
    p.add_argument("--prior-weight", type=float, default=0.0)
    p.add_argument("--marching", action=argparse.BooleanOptionalAction, default=True, help="fit ell <= 1 first")
    p.add_argument("--a2-first", action=argparse.BooleanOptionalAction, default=True,
                   help="start each stage with a fit of a1, a2 only (cheap), then add a3")
    p.add_argument("--polish", type=int, default=0,
                   help="finish with at most N evaluations of exact-Jacobian Gauss-Newton (0: off; small problems)")
    p.add_argument("--model", default="invariants", choices=["invariants", "quadrature"],
                   help="third-moment model: precomputed invariant map (default) or rotation quadrature")
    p.add_argument("--cache-dir", default=None,
                   help="keep the invariant map here between runs (default: $CRYOMTD_CACHE_DIR, unset = no cache)")
    p.add_argument("--symmetry", default="C1",
                   help="point group the volume is known to have (C<n>, D<n>, T, O, I; RELION axes): fit only "
                   "symmetric volumes (default C1: none)")
    p.add_argument("--init", default="ball", choices=["random", "ball"],
                   help="start of each restart: random coefficients, or a soft ball (radius fitted to a2) "
                   "plus random detail")
    p.add_argument("--init-radius", type=float, default=None, help="ball radius in pixels (default: fitted to a2)")
    p.add_argument("--init-spread", type=float, default=0.3,
                   help="norm of the random ell >= 1 detail relative to the ball's norm")
    p.add_argument("--refine-top", type=int, default=0,
                   help="continue the K lowest-cost restarts by --refine-iterations Gauss-Newton evaluations "
                   "(OUT/lsq/refine_{k}.npz; 0: off)")
    p.add_argument("--refine-iterations", type=int, default=200, help="Gauss-Newton evaluations per refined restart")
    p.add_argument("--noise", default="auto", choices=["auto", "exclude"])
    p.add_argument("--exact", action="store_true", help="the moments are noise-free (exact model moments)")
    p.add_argument("--gamma-init", type=float, default=0.1)
    p.add_argument("--voxel-size", type=float, default=1.0, help="voxel size (Å) written to lsq.mrc")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=".", help="output folder (default: .)")
    p.set_defaults(func=_recover)

    e = sub.add_parser("exact-moments", help="exact model moments of a truth.npz (rule exact_moments)",
                       description="The exact expected micrograph moments (Moments2D .npz) of the volume in "
                       "truth.npz at density γ, noise-free (docs/mom3d.md).")
    e.add_argument("truth", help="truth.npz (coef, L, ell_max)")
    e.add_argument("--gamma", type=float, default=0.1)
    e.add_argument("--window", type=int, default=None, help="window W (default (L-1)//2+1)")
    e.add_argument("--fit-ell-max", type=int, default=None, help="truncate the truth to ell <= this first")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--out", required=True, help="output moments .npz")
    e.set_defaults(func=_exact)
