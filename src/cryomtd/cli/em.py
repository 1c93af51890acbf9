"""``cryomtd em``: approximate EM from micrographs (the ``approx_em`` rule without Snakemake).

Defaults are read from ``workflow/schemas/em3d.schema.yaml`` (the one place they are written).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from cryomtd.em3d.stage import reconstruct, write_outputs

    mics = [Path(m) for m in args.micrographs]
    infos = [Path(p) for p in args.infos] if args.infos else [m.with_suffix(".json") for m in mics]
    em = {"grid_step": args.grid_step, "iterations": args.iterations, "tol": args.tol, "fraction": args.fraction,
          "step": {"burn_in": args.burn_in, "decay": args.decay}, "prior_weight": args.prior_weight,
          "learn_rotation_prior": args.learn_rotation_prior, "backend": args.backend, "dtype": args.dtype, "method": args.method,
          "memory_mb": args.memory_mb, "threads": args.threads}
    out = Path(args.out)
    checkpoint = args.checkpoint if args.checkpoint else out / "em_checkpoint" / "state.npz"
    res, basis, pixel = reconstruct(mics, infos, em=em, basis={"ell_max": args.ell_max}, seed=args.seed,
                                    lsq_npz=args.init, checkpoint=checkpoint, show_progress=True)
    write_outputs(res, basis, pixel, npz=out / "em.npz", mrc=out / "em.mrc", trace=out / "em_trace.json")
    print(f"em: {res.iterations} iterations, loglik/patch {res.loglik[-1]:.6g}, "
          f"{res.wall_time_s:.1f} s → {out}/em.{{npz,mrc}}, em_trace.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd em``."""
    from cryomtd.config import schema_defaults

    d = schema_defaults("em3d")
    step = schema_defaults("em3d", "step") if d else {}
    p = sub.add_parser("em", help="approximate EM from micrographs (rule approx_em)",
                       description="Approximate expectation-maximisation over rotations × in-patch shifts × "
                       "the empty patch, directly from micrographs (docs/em3d.md). Reads each micrograph's "
                       "JSON (sigma, L, pixel_size) as written by simulate_micrograph; resumes from the "
                       "checkpoint when rerun.")
    p.add_argument("micrographs", nargs="+", help="micrograph MRC files")
    p.add_argument("--infos", nargs="*", help="their JSON files (default: same name with .json)")
    p.add_argument("--out", default=".", help="output folder for em.npz, em.mrc, em_trace.json (default: .)")
    p.add_argument("--ell-max", type=int, default=None, help="basis ell_max (default: the basis' own choice for L)")
    p.add_argument("--init", default=None, help="lsq.npz to start from (default: low-pass random volume)")
    p.add_argument("--grid-step", type=float, default=d.get("grid_step"),
                   help="rotation grid step in degrees (default %(default)s)")
    p.add_argument("--iterations", type=int, default=d.get("iterations"), help="(default %(default)s)")
    p.add_argument("--tol", type=float, default=d.get("tol"),
                   help="relative loglik change to stop at (0 = never; default %(default)s)")
    p.add_argument("--fraction", type=float, default=d.get("fraction"),
                   help="patches per iteration; < 1 = stochastic EM (default %(default)s)")
    p.add_argument("--burn-in", type=int, default=step.get("burn_in"),
                   help="stochastic EM: iterations with step 1 (default %(default)s)")
    p.add_argument("--decay", type=float, default=step.get("decay"),
                   help="stochastic EM: step (k − burn_in + 1)^−decay (default %(default)s)")
    p.add_argument("--prior-weight", type=float, default=d.get("prior_weight"),
                   help="Gaussian prior precision on coefficients (default %(default)s)")
    p.add_argument("--learn-rotation-prior", action="store_true", default=bool(d.get("learn_rotation_prior", False)))
    p.add_argument("--backend", default=d.get("backend"), choices=["auto", "numpy", "torch", "torch-cpu", "cuda"])
    p.add_argument("--method", default=d.get("method"), choices=["auto", "fft", "matmul"],
                   help="E-step cross terms by FFT or by one matrix product (auto: matmul for L ≤ 8 or CUDA)")
    p.add_argument("--dtype", default=d.get("dtype"), choices=["float64", "float32"])
    p.add_argument("--memory-mb", type=float, default=d.get("memory_mb"), help="(default %(default)s)")
    p.add_argument("--threads", type=int, default=d.get("threads"), help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default: OUT/em_checkpoint/state.npz)")
    p.set_defaults(func=_run)
