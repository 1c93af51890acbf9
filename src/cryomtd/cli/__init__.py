"""The ``cryomtd`` command line: one subcommand per workflow stage.

Each module in ``SUBCOMMAND_MODULES`` defines ``register(subparsers)``, which adds
its subcommands and sets ``func`` (called with the parsed namespace, returning an
exit code) on each.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cryomtd import __version__
from cryomtd.io import InputError

SUBCOMMAND_MODULES = [
    "cryomtd.cli.mtd1d",
    "cryomtd.cli.moments",
    "cryomtd.cli.volume",
    "cryomtd.cli.simulate",
    "cryomtd.cli.prepare",
    "cryomtd.cli.lsq3d",
    "cryomtd.cli.em",
    "cryomtd.cli.evaluate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryomtd",
        description="Detection-free reconstruction from cryo-EM micrographs (1-D MTD and 3-D). "
        "Every stage of the Snakemake workflow is also a subcommand here.",
    )
    parser.add_argument("--version", action="version", version=f"cryomtd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"cryomtd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
