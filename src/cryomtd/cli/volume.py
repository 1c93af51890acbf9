"""``cryomtd prepare-volume``: the ``prepare_volume`` rule without Snakemake (docs/simulation.md).

Defaults are read from ``workflow/schemas/volume.schema.yaml`` (the one place they are written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryomtd.config import schema_defaults


def _run(args: argparse.Namespace) -> int:
    from cryomtd.volume import prepare_volume

    out = Path(args.out)
    p = prepare_volume(
        args.source,
        args.L,
        voxel_size=args.voxel_size,
        resolution=args.resolution,
        n_blobs=args.n_blobs,
        variant=args.variant,
        normalize=args.normalize,
        ell_max=args.ell_max,
        seed=args.seed,
    )
    p.save(out / "truth_raw.mrc", out / "truth.mrc", out / "truth.npz")
    print(
        f"prepare-volume: {args.source} → L={p.L}, voxel {p.voxel_size:.3f} Å, ell_max={p.ell_max}, "
        f"{p.coef.size} coefficients, expansion error {p.expansion_error:.4f} → {out}/truth{{_raw.mrc,.mrc,.npz}}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd prepare-volume``."""
    d = schema_defaults("volume")
    p = sub.add_parser(
        "prepare-volume",
        help="ground-truth volume in the basis (rule prepare_volume)",
        description="Build the ground-truth volume from a phantom, a PDB/mmCIF model or an MRC map, "
        "expand it in the spherical-Bessel basis and write truth_raw.mrc, truth.mrc and truth.npz.",
    )
    p.add_argument(
        "source",
        nargs="?",
        default=d.get("source"),
        help="shepp_logan | gaussian_blobs | model.pdb/.cif | map.mrc (default %(default)s)",
    )
    p.add_argument("--L", type=int, default=d.get("L"), help="box side in voxels (default %(default)s)")
    p.add_argument("--voxel-size", type=float, default=d.get("voxel_size"), help="Å (default: automatic)")
    p.add_argument(
        "--resolution",
        type=float,
        default=d.get("resolution"),
        help="models: low-pass resolution in Å (default 2·voxel size)",
    )
    p.add_argument("--n-blobs", type=int, default=d.get("n_blobs"), help="gaussian_blobs (default %(default)s)")
    p.add_argument("--variant", default=d.get("variant"), choices=["modified", "original"], help="shepp_logan")
    p.add_argument("--normalize", default=d.get("normalize"), choices=["l2", "max", "none"])
    p.add_argument("--ell-max", type=int, default=None, help="basis ell_max (default: the basis' choice for L)")
    p.add_argument("--seed", type=int, default=0, help="gaussian_blobs seed (default 0)")
    p.add_argument("--out", default=".", help="output folder (default: .)")
    p.set_defaults(func=_run)
