"""``cryomtd recover-lsq`` and ``cryomtd exact-moments``: the 3-D method of moments without Snakemake.

Same stage functions as the rules recover_lsq / refine_lsq / pick_best_restart / exact_moments
(:mod:`cryomtd.mom3d.stage`); options and defaults come from
:class:`cryomtd.mom3d.settings.LsqSettings` (the ``lsq`` block).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _recover(args: argparse.Namespace) -> int:
    from cryomtd.cli.options import settings_from_options
    from cryomtd.layout import Layout
    from cryomtd.mom3d.detect import is_auto
    from cryomtd.mom3d.settings import LsqSettings
    from cryomtd.mom3d.stage import detect_symmetry_file, pick_best_file, recover_restart_file, refine_restart_file

    settings = settings_from_options(LsqSettings, args, "cryomtd recover-lsq")
    out = Path(args.out)
    paths = Layout(str(out.parent), out.name)
    files = []
    symmetry_json = None
    if is_auto(settings.symmetry):  # rule detect_symmetry first
        symmetry_json, detected = paths.path("lsq", "symmetry.json"), paths.path("lsq", "detected.npz")
        if not (Path(symmetry_json).exists() and Path(detected).exists()):
            detect_symmetry_file(
                args.moments,
                symmetry_json,
                detected,
                L=args.L,
                ell_max=args.ell_max,
                settings=settings,
                seed=args.seed,
                exact=args.exact,
                sigma=args.sigma,
                ctf_groups=args.ctf_groups,
            )
    for r in range(settings.restarts):
        f = paths.lsq_restart(r)
        if not Path(f).exists():  # reruns resume
            recover_restart_file(
                args.moments,
                f,
                L=args.L,
                ell_max=args.ell_max,
                settings=settings,
                seed=args.seed,
                restart=r,
                exact=args.exact,
                sigma=args.sigma,
                ctf_groups=args.ctf_groups,
                symmetry_json=symmetry_json,
            )
        files.append(f)
    if symmetry_json is not None:
        files.append(paths.path("lsq", "detected.npz"))
    refined = []
    for k in range(settings.refine_top):
        f = paths.lsq_refine(k)
        if not Path(f).exists():
            refine_restart_file(
                args.moments,
                files,
                f,
                rank=k,
                L=args.L,
                ell_max=args.ell_max,
                settings=settings,
                exact=args.exact,
                sigma=args.sigma,
                ctf_groups=args.ctf_groups,
                symmetry_json=symmetry_json,
            )
        refined.append(f)
    best = pick_best_file(
        files + refined,
        paths.estimate("lsq"),
        paths.estimate_mrc("lsq"),
        voxel_size=args.voxel_size,
        settings=settings,
        symmetry_json=symmetry_json,
    )
    print(
        f"recover-lsq: best of {len(files + refined)} fits: {(files + refined)[best]} → "
        f"{paths.estimate('lsq')}, {paths.estimate_mrc('lsq')}"
    )
    return 0


def _exact(args: argparse.Namespace) -> int:
    from cryomtd.mom3d.stage import exact_moments_file

    exact_moments_file(
        args.truth,
        args.out,
        gamma=args.gamma,
        window=args.window,
        fit_ell_max=args.fit_ell_max,
        threads=args.threads,
        ctf_groups=args.ctf_groups,
    )
    print(f"exact-moments: → {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd recover-lsq`` and ``cryomtd exact-moments``."""
    from cryomtd.cli.options import add_settings_options
    from cryomtd.mom3d.settings import LsqSettings

    p = sub.add_parser(
        "recover-lsq",
        help="3-D volume from moments by least squares (rules recover_lsq + pick_best_restart)",
        description="Fit spherical-Bessel coefficients and the density γ to merged micrograph "
        "moments at their window (docs/mom3d.md). Writes OUT/lsq/restart_{r}.npz (and "
        "refine_{k}.npz), OUT/lsq.npz and OUT/lsq.mrc; existing restart files are reused.",
    )
    p.add_argument("moments", help="moments.npz (cryomtd.moments.Moments2D)")
    p.add_argument("--L", type=int, required=True, help="volume box size L")
    p.add_argument("--ell-max", type=int, default=None, help="experiment basis ell_max (default: sampling criterion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exact", action="store_true", help="the moments are noise-free (exact model moments)")
    p.add_argument(
        "--pixel-size",
        "--voxel-size",
        dest="voxel_size",
        type=float,
        default=1.0,
        help="Å per pixel of the micrographs: the voxel size written to lsq.mrc (default 1)",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="noise σ of the micrographs (default: the σ² the moments record; 0 for exact moments)",
    )
    p.add_argument(
        "--ctf-groups",
        default=None,
        metavar="FILE",
        help="CTF group table of the micrographs (ctf_groups.json, cryomtd.ctf.CtfGroupTable): "
        "fit the moments of CTF-filtered projections mixed over its groups (default: no CTF)",
    )
    p.add_argument("--out", default=".", help="output folder (default: .)")
    add_settings_options(p, LsqSettings, schema="lsq3d", skip=("enabled",), rename={"ell_max": "fit-ell-max"})
    p.set_defaults(func=_recover)

    e = sub.add_parser(
        "exact-moments",
        help="exact model moments of a truth.npz (rule exact_moments)",
        description="The exact expected micrograph moments (Moments2D .npz) of the volume in "
        "truth.npz at density γ, noise-free (docs/mom3d.md).",
    )
    e.add_argument("truth", help="truth.npz (coef, L, ell_max)")
    e.add_argument("--gamma", type=float, default=0.1)
    e.add_argument("--window", type=int, default=None, help="window W (default (L-1)//2+1)")
    e.add_argument("--fit-ell-max", type=int, default=None, help="truncate the truth to ell <= this first")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument(
        "--ctf-groups",
        default=None,
        metavar="FILE",
        help="CTF group table (ctf_groups.json): moments of the CTF-filtered projections (default: no CTF)",
    )
    e.add_argument("--out", required=True, help="output moments .npz")
    e.set_defaults(func=_exact)
