"""``cryomtd prepare-volume``: the ``prepare_volume`` rule without Snakemake (docs/simulation.md).

Defaults are read from ``workflow/schemas/volume.schema.yaml`` (the one place they are written).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from cryomtd.cli.options import settings_from_options
    from cryomtd.layout import Layout
    from cryomtd.volume import VolumeSettings

    settings = dataclasses.replace(
        settings_from_options(VolumeSettings, args, "cryomtd prepare-volume"), source=args.source
    )
    out = Path(args.out)
    paths = Layout(str(out.parent), out.name)
    p = settings.prepare(ell_max=args.ell_max, seed=args.seed)
    p.save(paths.truth_raw_mrc, paths.truth_mrc, paths.truth_npz)
    print(
        f"prepare-volume: {args.source} → L={p.L}, voxel {p.voxel_size:.3f} Å, ell_max={p.ell_max}, "
        f"{p.coef.size} coefficients, expansion error {p.expansion_error:.4f} → {paths.truth_mrc}, {paths.truth_npz}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd prepare-volume``."""
    from cryomtd.cli.options import add_settings_options
    from cryomtd.volume import VolumeSettings

    p = sub.add_parser(
        "prepare-volume",
        help="ground-truth volume in the basis (rule prepare_volume)",
        description="Build the ground-truth volume from a phantom, a PDB/mmCIF model or an MRC map, "
        "expand it in the spherical-Bessel basis and write truth_raw.mrc, truth.mrc and truth.npz.",
    )
    p.add_argument(
        "source",
        nargs="?",
        default=VolumeSettings().source,
        help="shepp_logan | gaussian_blobs | model.pdb/.cif | map.mrc (default %(default)s)",
    )
    p.add_argument("--ell-max", type=int, default=None, help="basis ell_max (default: the basis' choice for L)")
    p.add_argument("--seed", type=int, default=0, help="gaussian_blobs seed (default 0)")
    p.add_argument("--out", default=".", help="output folder (default: .)")
    add_settings_options(p, VolumeSettings, schema="volume", skip=("source",))
    p.set_defaults(func=_run)
