"""``cryomtd simulate``: the ``simulate_micrograph`` rule without Snakemake (docs/simulation.md).

Options and defaults come from :class:`cryomtd.simulate.MicrographSettings` (the ``micrographs`` block).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _spacing(text: str) -> str | int:
    return int(text) if text.isdigit() else text


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from cryomtd.cli.options import settings_from_options
    from cryomtd.layout import Layout
    from cryomtd.progress import progress
    from cryomtd.simulate import CtfSettings, MicrographSettings, save_micrograph

    settings = settings_from_options(MicrographSettings, args, "cryomtd simulate")
    if settings.snr is not None and settings.snr <= 0:
        settings = dataclasses.replace(settings, snr=None)
    if args.defocus:
        defocus = args.defocus[0] if len(args.defocus) == 1 else tuple(args.defocus[:2])
        ctf = CtfSettings(
            defocus=defocus,
            voltage=args.voltage,
            cs=args.cs,
            amplitude_contrast=args.amplitude_contrast,
            b_factor=args.b_factor,
            astigmatism=args.astigmatism[0] if len(args.astigmatism) == 1 else tuple(args.astigmatism[:2]),
        )
        settings = dataclasses.replace(settings, ctf=ctf)
    out = Path(args.out)
    paths = Layout(str(out.parent), out.name)
    first = args.index
    for k in progress(range(first, first + settings.n_micrographs), desc="micrographs"):
        m = settings.simulate(args.truth, k, seed=args.seed, micrograph_name=paths.micrograph(k))
        save_micrograph(m, paths.micrograph(k), paths.particles(k), paths.micrograph_info(k))
        print(
            f"simulate: micrograph {k}: {len(m.particles)} particles, γ = {m.gamma:.4f}, σ = {m.sigma:.4g} → "
            f"{paths.micrograph(k)}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd simulate``."""
    from cryomtd.cli.options import add_settings_options
    from cryomtd.simulate import CtfSettings, MicrographSettings

    ctf = CtfSettings(defocus=1.0)
    p = sub.add_parser(
        "simulate",
        help="simulate micrographs from truth.npz (rule simulate_micrograph)",
        description="Simulate micrographs k = INDEX … INDEX+N−1 of truth.npz (from prepare-volume): "
        "Haar-random rotations through the basis, placement at density γ with a minimum centre "
        "distance, optional CTF, white noise at the given SNR (≤ 0: none). Micrograph k uses "
        "rng(seed, 'micrograph', k), exactly as the workflow.",
    )
    p.add_argument("truth", help="truth.npz written by prepare-volume")
    p.add_argument("--out", default=".", help="folder receiving micrographs/ and particles/ (default: .)")
    p.add_argument("--seed", type=int, default=0, help="experiment seed (default 0)")
    p.add_argument("--index", type=int, default=0, help="index k of the first micrograph (default 0)")
    add_settings_options(p, MicrographSettings, schema="micrographs", skip=("ctf", "spacing"))
    p.add_argument(
        "--spacing",
        type=_spacing,
        default=MicrographSettings().spacing,
        help="separated | nonoverlapping | integer minimum centre distance (default %(default)s)",
    )
    p.add_argument("--defocus", type=float, nargs="+", help="CTF: defocus Å, or LO HI to draw per micrograph")
    p.add_argument("--voltage", type=float, default=ctf.voltage, help="CTF: kV (default %(default)s)")
    p.add_argument("--cs", type=float, default=ctf.cs, help="CTF: mm (default %(default)s)")
    p.add_argument("--amplitude-contrast", type=float, default=ctf.amplitude_contrast, help="CTF (default %(default)s)")
    p.add_argument("--b-factor", type=float, default=ctf.b_factor, help="CTF envelope Å² (default %(default)s)")
    p.add_argument(
        "--astigmatism", type=float, nargs="+", default=[ctf.astigmatism], help="CTF: defocus U − V Å, or LO HI to draw"
    )
    p.set_defaults(func=_run)
