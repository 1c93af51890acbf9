"""Which 3-D runs an (validated, defaults-filled) config asks for, and on which micrographs.

A ``cryo3d`` experiment either simulates its micrographs from a ``volume`` or prepares a
user's files (``data``). A data experiment has no truth, so the estimators also run on the
two halves of its micrographs (even and odd index k), as the runs ``<exp>/half1`` and
``<exp>/half2`` (results under ``results/<exp>/half1/`` …), with the experiment's own
settings and seeds; evaluation compares the half maps. :func:`plan_3d` lists every run,
the experiment whose micrographs it reads and their indices. Pure bookkeeping: no
Snakemake import (the rules call it once at start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryomtd.io import InputError

__all__ = ["HALVES", "Plan3D", "box_size", "plan_3d"]

#: The names of the half-data runs of a data experiment, in order (even k, odd k).
HALVES = ("half1", "half2")


def box_size(cfg: Mapping[str, Any]) -> int:
    """The particle box L of a cryo3d experiment: ``data.L`` or ``volume.L``."""
    return int(cfg["data"]["L"] if "data" in cfg else cfg["volume"]["L"])


@dataclass(frozen=True)
class Plan3D:
    """The 3-D runs of a config.

    ``configs``: run name → config block (a half run shares its experiment's block);
    ``owner``: run → the experiment whose micrographs it reads; ``indices``: run → the
    micrograph indices k it uses; ``files``: data experiment → its input files (sorted glob),
    file k being micrograph k; ``ctfs``: data experiment → the CTF (a :meth:`CTF.to_dict`) of
    each file from ``data.ctf``, or None per file without a table.
    """

    configs: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    indices: dict[str, list[int]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    ctfs: dict[str, list[dict | None]] = field(default_factory=dict)

    @property
    def experiments(self) -> list[str]:
        """The configured experiments (no half runs)."""
        return [n for n in self.configs if self.owner[n] == n]

    def is_data(self, name: str) -> bool:
        return "data" in self.configs[name]

    def halves(self, name: str) -> list[str]:
        """``[<name>/half1, <name>/half2]`` for a data experiment, else ``[]``."""
        return [f"{name}/{h}" for h in HALVES] if self.is_data(name) and self.owner[name] == name else []

    def runs(self, names: list[str]) -> list[str]:
        """``names`` followed by their half runs."""
        return list(names) + [h for n in names for h in self.halves(n)]


def plan_3d(experiments: Mapping[str, Mapping[str, Any]]) -> Plan3D:
    """The plan of the ``cryo3d`` entries of ``experiments`` (the config's ``experiments`` block).

    Data experiments: the glob ``data.micrographs`` is expanded (relative to the working
    directory; no match is an error naming the key), the headers' pixel sizes are checked
    (:func:`cryomtd.micrographs.check_pixel_sizes`), the CTF table ``data.ctf`` (when set) is
    read and must have a row for every file, and a data experiment needs its moments
    from micrographs (``moments.source: micrographs``) and at least two files (for the halves).
    """
    plan = Plan3D()
    for name, cfg in experiments.items():
        if cfg.get("kind") != "cryo3d":
            continue
        plan.configs[name] = cfg
        plan.owner[name] = name
        if "data" not in cfg:
            n = int(cfg.get("micrographs", {}).get("n_micrographs", 0))
            plan.indices[name] = list(range(n)) if cfg.get("moments", {}).get("source") != "exact" else []
            continue
        from cryomtd.micrographs import DataSettings, check_pixel_sizes, micrograph_files

        where = f"experiments.{name}.data"
        if cfg.get("moments", {}).get("source", "micrographs") != "micrographs":
            raise InputError(
                f"experiments.{name}.moments.source: a data experiment has no truth for exact "
                "moments; expected micrographs"
            )
        settings = DataSettings.from_config(cfg["data"], where)
        files = micrograph_files(settings.micrographs, f"{where}.micrographs")
        if len(files) < 2:
            raise InputError(
                f"{where}.micrographs: {settings.micrographs!r} matches {len(files)} file; the half-map "
                "evaluation needs at least 2 micrographs"
            )
        check_pixel_sizes(files, settings)
        plan.files[name] = files
        if settings.ctf is None:
            plan.ctfs[name] = [None] * len(files)
        else:
            from cryomtd.ctf import read_ctf_star

            plan.ctfs[name] = [c.to_dict() for c in read_ctf_star(settings.ctf).for_files(files)]
        plan.indices[name] = list(range(len(files)))
        for h, half in enumerate(HALVES):
            run = f"{name}/{half}"
            plan.configs[run] = cfg
            plan.owner[run] = name
            plan.indices[run] = list(range(h, len(files), 2))
    return plan
