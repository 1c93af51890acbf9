"""The file layout of an experiment's results: every path is spelled here, once.

``Layout(results_dir, exp)`` names the files of ``<results_dir>/<exp>/``. The rules pass
wildcard placeholders (``Layout(RESULTS, "{exp}").micrograph("{k}")`` gives the pattern
``results/{exp}/micrographs/{k}.mrc``); the stage functions and the CLI pass real names
and indices. All methods return ``str`` (Snakemake patterns are strings).

Estimators (``lsq``, ``em``) each write one result file ``<name>.npz`` in the common
estimate format of :mod:`cryomtd.estimate` plus ``<name>.mrc``; evaluation reads those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ESTIMATORS", "Layout", "summary_csv"]

#: The estimators whose results an experiment can hold, in report order.
ESTIMATORS = ("lsq", "em")


@dataclass(frozen=True)
class Layout:
    """Paths of one experiment: ``results_dir/exp/...`` (placeholders allowed for rules)."""

    results_dir: str
    exp: str

    def path(self, *parts: object) -> str:
        """``results_dir/exp/part0/part1/...``."""
        return os.path.join(str(self.results_dir), str(self.exp), *map(str, parts))

    @property
    def root(self) -> str:
        return self.path()

    # --- logs and benchmarks of every rule: logs/<rule>/<job>.log, benchmarks/<rule>/<job>.tsv
    def log(self, rule: str, job: object | None = None) -> str:
        return self.path("logs", rule, f"{rule if job is None else job}.log")

    def benchmark(self, rule: str, job: object | None = None) -> str:
        return self.path("benchmarks", rule, f"{rule if job is None else job}.tsv")

    # --- 3-D truth and micrographs
    @property
    def truth_npz(self) -> str:
        return self.path("truth.npz")

    @property
    def truth_mrc(self) -> str:
        return self.path("truth.mrc")

    @property
    def truth_raw_mrc(self) -> str:
        return self.path("truth_raw.mrc")

    def micrograph(self, k: object) -> str:
        return self.path("micrographs", f"{k}.mrc")

    def micrograph_info(self, k: object) -> str:
        """The side file of micrograph k (σ, L, pixel size, provenance)."""
        return self.path("micrographs", f"{k}.json")

    def particles(self, k: object) -> str:
        return self.path("particles", f"{k}.star")

    @property
    def ctf_groups(self) -> str:
        """The CTF group table of the experiment's micrographs (:class:`cryomtd.ctf.CtfGroupTable`)."""
        return self.path("ctf_groups.json")

    # --- moments (3-D per micrograph, 1-D per segment) and the merged moments
    def micrograph_moments(self, k: object) -> str:
        return self.path("moments", f"{k}.npz")

    def segment(self, k: object) -> str:
        return self.path("segments", f"{k}.npz")

    @property
    def moments(self) -> str:
        return self.path("moments.npz")

    # --- estimators
    def lsq_restart(self, r: object) -> str:
        return self.path("lsq", f"restart_{r}.npz")

    def lsq_refine(self, k: object) -> str:
        return self.path("lsq", f"refine_{k}.npz")

    def estimate(self, estimator: str) -> str:
        """``<estimator>.npz``: the estimate in the common format (:mod:`cryomtd.estimate`)."""
        return self.path(f"{estimator}.npz")

    def estimate_mrc(self, estimator: str) -> str:
        return self.path(f"{estimator}.mrc")

    def aligned_mrc(self, estimator: str) -> str:
        return self.path("aligned", f"{estimator}.mrc")

    def aligned_half_mrc(self, estimator: str) -> str:
        """``aligned/<estimator>_half2.mrc``: the half-2 estimate aligned to the half-1 estimate."""
        return self.path("aligned", f"{estimator}_half2.mrc")

    def half(self, i: int) -> Layout:
        """The layout of half ``i`` (1 or 2) of the micrographs (even / odd index): ``<exp>/half<i>/``,
        holding the same estimate files (``<name>.npz``, ``<name>.mrc``) as the full experiment."""
        if int(i) not in (1, 2):
            raise ValueError(f"half must be 1 or 2, got {i!r}")
        return Layout(self.results_dir, f"{self.exp}/half{int(i)}")

    @property
    def aligned_dir(self) -> str:
        return self.path("aligned")

    @property
    def em_trace(self) -> str:
        return self.path("em_trace.json")

    @property
    def em_checkpoint(self) -> str:
        return self.path("em_checkpoint", "state.npz")

    # --- evaluation
    @property
    def metrics(self) -> str:
        return self.path("metrics.json")

    def figure(self, name: str) -> str:
        return self.path("figures", f"{name}.png")

    @property
    def figures_dir(self) -> str:
        return self.path("figures")


def summary_csv(results_dir: str) -> str:
    """The table of every experiment and estimator (rule summary)."""
    return os.path.join(str(results_dir), "summary.csv")
