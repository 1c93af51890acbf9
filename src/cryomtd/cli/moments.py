"""``cryomtd moments`` and ``cryomtd merge-moments``: the autocorrelate / merge_moments rules
without Snakemake (docs/moments.md). Defaults are read from ``workflow/schemas/moments.schema.yaml``.
"""

from __future__ import annotations

import argparse


def _defaults() -> dict:
    from cryomtd.config import schema_defaults

    return {**schema_defaults("moments"), "noise": schema_defaults("moments", "noise")}


def _run(args: argparse.Namespace) -> int:
    from cryomtd.moments.stage import autocorrelate_file

    m = autocorrelate_file(args.micrograph, args.out, window=args.window, backend=args.backend, dtype=args.dtype,
                           band_pixels=args.band_pixels, tile_pixels=args.tile_pixels, sigma2=args.sigma2,
                           cutoff=args.cutoff, debias=args.debias, show_progress=None)
    print(f"moments: {args.micrograph}: W={m.window}, {m.count} pixels, a1={m.a1:.6g}, σ²={m.sigma2:.6g}, "
          f"{m.s3.size} non-redundant a3 entries ({m.backend}, {m.dtype}) → {args.out}")
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from cryomtd.moments.stage import merge_files

    m = merge_files(args.inputs, args.out)
    print(f"merge-moments: {len(args.inputs)} files, {m.n_images} micrographs, {m.count} pixels → {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd moments`` and ``cryomtd merge-moments``."""
    from cryomtd.backend import NAMES as BACKEND_NAMES

    d = _defaults()
    nd = d.get("noise", {})
    p = sub.add_parser("moments", help="autocorrelations a1, a2, a3 of one micrograph (rule autocorrelate)",
                       description="First three autocorrelations of a micrograph over the lags |ℓ|∞ ≤ W−1, "
                       "stored as sums + pixel count (Moments2D .npz) so files merge exactly.")
    p.add_argument("micrograph", help="2-D MRC micrograph")
    p.add_argument("--window", "-W", type=int, required=True, help="W (lags up to W−1; usually the particle box L)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--backend", default=d.get("backend", "auto"),
                   choices=list(BACKEND_NAMES), help="(default %(default)s)")
    p.add_argument("--dtype", default=d.get("dtype", "float64"), choices=["float64", "float32"],
                   help="(default %(default)s)")
    p.add_argument("--band-pixels", type=int, default=d.get("band_pixels"),
                   help="base pixels per matrix-product band (default: per backend)")
    p.add_argument("--tile-pixels", type=int, default=d.get("tile_pixels", 1 << 24),
                   help="memory budget in pixels per tile (default %(default)s)")
    p.add_argument("--sigma2", type=float, default=nd.get("sigma2"),
                   help="noise variance (default: estimated from the power spectrum)")
    p.add_argument("--cutoff", type=float, default=nd.get("cutoff", 0.8),
                   help="σ² estimate from frequencies above cutoff × Nyquist (default %(default)s)")
    p.add_argument("--debias", action="store_true", default=bool(nd.get("debias", False)),
                   help="store bias-corrected moments (σ² removed)")
    p.set_defaults(func=_run)

    q = sub.add_parser("merge-moments", help="merge per-micrograph moment files (rule merge_moments)",
                       description="Exact, order-independent pixel-weighted merge of Moments2D .npz files.")
    q.add_argument("inputs", nargs="+", help="moment .npz files")
    q.add_argument("--out", required=True, help="merged .npz")
    q.set_defaults(func=_run_merge)
