"""``cryomtd simulate``: the ``simulate_micrograph`` rule without Snakemake (docs/simulation.md).

Defaults are read from ``workflow/schemas/micrographs.schema.yaml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryomtd.config import schema_defaults


def _spacing(text: str) -> str | int:
    return int(text) if text.isdigit() else text


def _run(args: argparse.Namespace) -> int:
    from cryomtd.progress import progress
    from cryomtd.simulate import save_micrograph, simulate_from_truth

    ctf = None
    if args.defocus:
        ctf = {
            "defocus": args.defocus[0] if len(args.defocus) == 1 else list(args.defocus[:2]),
            "voltage": args.voltage,
            "cs": args.cs,
            "amplitude_contrast": args.amplitude_contrast,
            "b_factor": args.b_factor,
        }
    out = Path(args.out)
    first = args.index
    for k in progress(range(first, first + args.n_micrographs), desc="micrographs"):
        mrc = out / "micrographs" / f"{k}.mrc"
        m = simulate_from_truth(
            args.truth,
            k,
            seed=args.seed,
            size=args.size,
            gamma=args.gamma,
            snr=None if args.snr <= 0 else args.snr,
            spacing=args.spacing,
            ctf=ctf,
            micrograph_name=str(mrc),
        )
        save_micrograph(m, mrc, out / "particles" / f"{k}.star", out / "micrographs" / f"{k}.json")
        print(f"simulate: micrograph {k}: {len(m.particles)} particles, γ = {m.gamma:.4f}, σ = {m.sigma:.4g} → {mrc}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd simulate``."""
    d = schema_defaults("micrographs")
    p = sub.add_parser(
        "simulate",
        help="simulate micrographs from truth.npz (rule simulate_micrograph)",
        description="Simulate micrographs k = INDEX … INDEX+N−1 of truth.npz (from prepare-volume): "
        "Haar-random rotations through the basis, placement at density γ with a minimum centre "
        "distance, optional CTF, white noise at the given SNR. Micrograph k uses "
        "rng(seed, 'micrograph', k), exactly as the workflow.",
    )
    p.add_argument("truth", help="truth.npz written by prepare-volume")
    p.add_argument("--out", default=".", help="folder receiving micrographs/ and particles/ (default: .)")
    p.add_argument("--seed", type=int, default=0, help="experiment seed (default 0)")
    p.add_argument("--index", type=int, default=0, help="index k of the first micrograph (default 0)")
    p.add_argument("--n-micrographs", type=int, default=1, help="how many (default 1)")
    p.add_argument("--size", type=int, default=d.get("size"), help="pixels per side (default %(default)s)")
    p.add_argument("--gamma", type=float, default=d.get("gamma"), help="density (default %(default)s)")
    p.add_argument("--snr", type=float, default=d.get("snr"), help="SNR; ≤ 0 for no noise (default %(default)s)")
    p.add_argument(
        "--spacing",
        type=_spacing,
        default=d.get("spacing"),
        help="separated | nonoverlapping | integer minimum centre distance (default %(default)s)",
    )
    p.add_argument("--defocus", type=float, nargs="+", help="CTF: defocus Å, or LO HI to draw per micrograph")
    p.add_argument("--voltage", type=float, default=300.0, help="CTF: kV (default 300)")
    p.add_argument("--cs", type=float, default=2.7, help="CTF: mm (default 2.7)")
    p.add_argument("--amplitude-contrast", type=float, default=0.1, help="CTF (default 0.1)")
    p.add_argument("--b-factor", type=float, default=0.0, help="CTF envelope Å² (default 0)")
    p.set_defaults(func=_run)
