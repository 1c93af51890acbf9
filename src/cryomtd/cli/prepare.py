"""``cryomtd prepare``: your own MRC micrographs → micrographs/{k}.mrc and {k}.json (the
``prepare_micrograph`` stage without Snakemake; library :mod:`cryomtd.micrographs`).

Options and defaults come from :class:`cryomtd.micrographs.DataSettings` (the ``data`` block);
k is the position of the file in the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from cryomtd.cli.options import settings_from_options
    from cryomtd.layout import Layout
    from cryomtd.micrographs import DataSettings, check_pixel_sizes, prepare_micrograph

    args.micrographs = " ".join(args.files)  # provenance: the files as given
    settings = settings_from_options(DataSettings, args, "cryomtd prepare")
    check_pixel_sizes(args.files, settings)
    ctfs: list = [None] * len(args.files)
    if args.ctf:
        from cryomtd.ctf import read_ctf_star

        ctfs = [c.to_dict() for c in read_ctf_star(args.ctf).for_files(args.files)]
    out = Path(args.out)
    paths = Layout(str(out.parent), out.name)
    for k, path in enumerate(args.files):
        m = prepare_micrograph(path, settings, index=k, ctf=ctfs[k])
        m.save(paths.micrograph(k), paths.micrograph_info(k))
        ny, nx = m.image.shape
        print(f"prepare: {path} → {paths.micrograph(k)}: σ = {m.sigma:.4g}, {ny}×{nx} px, {m.pixel_size:.4g} Å/px")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd prepare``."""
    from cryomtd.cli.options import add_settings_options
    from cryomtd.micrographs import DataSettings

    p = sub.add_parser(
        "prepare",
        help="your own MRC micrographs → micrographs/{k}.mrc + {k}.json (rule prepare_micrograph)",
        description="Prepare MRC micrographs for the estimators: crop the edges, optionally invert and "
        "Fourier-downsample, remove the mean, whiten the noise (median-over-tiles power spectrum) and "
        "estimate σ. Writes OUT/micrographs/{k}.mrc and {k}.json for the k-th file given.",
    )
    p.add_argument("files", nargs="+", metavar="MICROGRAPH.mrc", help="2-D MRC micrographs")
    p.add_argument("--out", default=".", help="folder receiving micrographs/ (default: .)")
    add_settings_options(p, DataSettings, schema="data", skip=("micrographs", "ctf"))
    p.add_argument(
        "--ctf",
        metavar="STAR",
        help="RELION 3.1+ micrograph STAR file with each file's CTF (data.ctf), recorded in the side files",
    )
    p.set_defaults(func=_run)
