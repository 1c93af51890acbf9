"""``cryomtd moments`` and ``cryomtd merge-moments``: the autocorrelate / merge_moments rules
without Snakemake (docs/moments.md). Options and defaults come from
:class:`cryomtd.moments.settings.MomentsSettings` (the ``moments`` block).
"""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from cryomtd.cli.options import settings_from_options
    from cryomtd.moments.settings import MomentsSettings
    from cryomtd.moments.stage import autocorrelate_file

    settings = settings_from_options(MomentsSettings, args, "cryomtd moments")
    m = autocorrelate_file(args.micrograph, args.out, settings, L=args.L, show_progress=None)
    print(
        f"moments: {args.micrograph}: W={m.window}, {m.count} pixels, a1={m.a1:.6g}, σ²={m.sigma2:.6g}, "
        f"{m.s3.size} non-redundant a3 entries ({m.backend}, {m.dtype}) → {args.out}"
    )
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from cryomtd.moments.stage import merge_files

    m = merge_files(args.inputs, args.out)
    print(f"merge-moments: {len(args.inputs)} files, {m.n_images} micrographs, {m.count} pixels → {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd moments`` and ``cryomtd merge-moments``."""
    from cryomtd.cli.options import add_settings_options
    from cryomtd.moments.settings import MomentsSettings

    p = sub.add_parser(
        "moments",
        help="autocorrelations a1, a2, a3 of one micrograph (rule autocorrelate)",
        description="First three autocorrelations of a micrograph over the lags |ℓ|∞ ≤ W−1, "
        "stored as sums + pixel count (Moments2D .npz) so files merge exactly. Give --window, "
        "or --L to use the default window (L−1)//2+1.",
    )
    p.add_argument("micrograph", help="2-D MRC micrograph")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--L", type=int, default=None, help="particle box L (sets the default window)")
    add_settings_options(p, MomentsSettings, schema="moments", skip=("source",))
    p.set_defaults(func=_run)

    q = sub.add_parser(
        "merge-moments",
        help="merge per-micrograph moment files (rule merge_moments)",
        description="Exact, order-independent pixel-weighted merge of Moments2D .npz files.",
    )
    q.add_argument("inputs", nargs="+", help="moment .npz files")
    q.add_argument("--out", required=True, help="merged .npz")
    q.set_defaults(func=_run_merge)
