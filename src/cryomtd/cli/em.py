"""``cryomtd em``: approximate EM from micrographs (the ``approx_em`` rule without Snakemake).

Options and defaults come from :class:`cryomtd.em3d.settings.EmSettings` (the ``em`` block).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from cryomtd.cli.options import settings_from_options
    from cryomtd.em3d.settings import EmSettings
    from cryomtd.em3d.stage import reconstruct, write_outputs
    from cryomtd.layout import Layout

    settings = settings_from_options(EmSettings, args, "cryomtd em")
    mics = [Path(m) for m in args.micrographs]
    infos = [Path(p) for p in args.infos] if args.infos else [m.with_suffix(".json") for m in mics]
    out = Path(args.out)
    paths = Layout(str(out.parent), out.name)
    checkpoint = args.checkpoint or paths.em_checkpoint
    res, basis, pixel = reconstruct(
        mics,
        infos,
        settings=settings,
        ell_max=args.ell_max,
        seed=args.seed,
        lsq_npz=args.start,
        checkpoint=checkpoint,
        show_progress=True,
        sigma=args.sigma,
        L=args.L,
        pixel_size=args.pixel_size,
        ctf_groups=args.ctf_groups,
    )
    write_outputs(
        res, basis, pixel, settings, npz=paths.estimate("em"), mrc=paths.estimate_mrc("em"), trace=paths.em_trace
    )
    print(
        f"em: {res.iterations} iterations, loglik/patch {res.loglik[-1]:.6g}, "
        f"{res.wall_time_s:.1f} s → {paths.estimate('em')}, {paths.estimate_mrc('em')}, {paths.em_trace}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd em``."""
    from cryomtd.cli.options import add_settings_options
    from cryomtd.em3d.settings import EmSettings

    p = sub.add_parser(
        "em",
        help="approximate EM from micrographs (rule approx_em)",
        description="Approximate expectation-maximisation over rotations × in-patch shifts × "
        "the empty patch, directly from micrographs (docs/em3d.md). Reads each micrograph's "
        "side file (sigma, L, pixel_size; written by `cryomtd prepare`), or takes --sigma, --L and "
        "--pixel-size; resumes from the checkpoint when rerun.",
    )
    p.add_argument("micrographs", nargs="+", help="micrograph MRC files")
    p.add_argument(
        "--infos", nargs="*", help="their side files (default: same name with .json; optional with --sigma, --L)"
    )
    p.add_argument(
        "--sigma", type=float, default=None, help="noise σ of the (whitened) micrographs (default: side files)"
    )
    p.add_argument("--L", type=int, default=None, help="particle box in pixels (default: side files)")
    p.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        help="Å per pixel (default: side files, else the MRC header); the voxel size of em.mrc",
    )
    p.add_argument("--out", default=".", help="output folder for em.npz, em.mrc, em_trace.json (default: .)")
    p.add_argument("--ell-max", type=int, default=None, help="basis ell_max (default: the basis' own choice for L)")
    p.add_argument("--start", default=None, help="lsq.npz to start from (default: low-pass random volume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default: OUT/em_checkpoint/state.npz)")
    p.add_argument(
        "--ctf-groups",
        default=None,
        metavar="FILE",
        help="CTF group table (ctf_groups.json; a micrograph's name is its file stem): model each "
        "micrograph's group CTF (default: no CTF)",
    )
    add_settings_options(p, EmSettings, schema="em3d", skip=("enabled", "init", "runtime"))
    p.set_defaults(func=_run)
