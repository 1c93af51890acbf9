"""The settings of a 1-D experiment (config block ``experiments.<name>``, kind ``mtd1d``).

One frozen dataclass per block of ``workflow/schemas/mtd1d.schema.yaml``; every default
here equals the schema's (``tests/test_settings.py`` checks it), so a stage called with
``Mtd1dSettings(seed=...)`` behaves like the workflow with that experiment's defaults::

    Mtd1dSettings
    ├── kind, seed, L, sigma, N, segments, spacing
    ├── signal:    SignalSettings     (type, path)
    ├── placement: PlacementSettings  (gamma, min_gap)
    ├── lsq:       Lsq1dSettings      (restarts, sigma_known, max_iterations, starts, screen_iterations, keep)
    ├── em:        Em1dSettings       (iterations, tol, segments)
    └── advanced:  Mtd1dAdvanced      (chunk, moments_dtype: memory and speed, not results)

:meth:`Mtd1dSettings.from_config` builds it from a config block (unknown keys are an
:class:`~cryomtd.io.InputError` naming the key); :meth:`Mtd1dSettings.stage_block` gives
the part of the settings one stage's output depends on (what a rule declares as its
``params``, so a changed setting reruns exactly the jobs it affects, and what the stage's
result file records).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryomtd.io import InputError
from cryomtd.settings import from_block, to_block

__all__ = [
    "SPACING",
    "STAGES",
    "Em1dSettings",
    "Lsq1dSettings",
    "Mtd1dAdvanced",
    "Mtd1dSettings",
    "PlacementSettings",
    "SignalSettings",
    "check_keys_in_place",
]


@dataclass(frozen=True)
class SignalSettings:
    """The true signal: ``gaussian``, ``step`` or ``file`` (a ``.npy`` array of length L at ``path``)."""

    type: str = "gaussian"
    path: str | None = None


@dataclass(frozen=True)
class PlacementSettings:
    """Target density ``gamma`` (copies · L / N) and minimum zeros ``min_gap`` between copies
    (``None``: L − 1, well separated)."""

    gamma: float = 0.05
    min_gap: int | None = None


#: Default model of both estimators (``spacing``): ``separated`` (copies at least L − 1
#: apart) or ``arbitrary`` (densely packed copies; pair-separation function / pair patches).
SPACING = "separated"


@dataclass(frozen=True)
class Lsq1dSettings:
    """Least squares: ``restarts`` independent restarts (one job each), noise bias modelled
    with the true σ (``sigma_known``) or left out. Each restart screens ``starts`` random
    initial points by ``screen_iterations`` batched Levenberg–Marquardt steps and continues
    the ``keep`` lowest-cost ones to convergence (at most ``max_iterations`` LM steps)."""

    restarts: int = 4
    sigma_known: bool = True
    max_iterations: int = 200
    starts: int = 16
    screen_iterations: int = 20
    keep: int = 2


@dataclass(frozen=True)
class Em1dSettings:
    """Approximate EM: at most ``iterations`` iterations, stop at relative log-likelihood
    change ``tol``, on the first ``segments`` segments (``None``: all)."""

    iterations: int = 200
    tol: float = 1e-6
    segments: int | None = None


@dataclass(frozen=True)
class Mtd1dAdvanced:
    """Engine knobs (memory, speed) that do not change the results beyond rounding.

    ``chunk``: samples simulated and accumulated at once (the samples do not depend on it);
    ``moments_dtype``: precision of the products inside each block of the moment
    computation (``float32``: relative error about 1e-7; sums across blocks are float64).
    """

    chunk: int = 1048576
    moments_dtype: str = "float64"


#: Keys a config block may no longer hold at this place, and where the setting is.
_ELSEWHERE = {
    ("em", "max_iterations"): "the maximum number of EM iterations is em.iterations",
    ("chunk",): "it is advanced.chunk",
    ("moments_dtype",): "it is advanced.moments_dtype",
}

_SIMULATION = ("seed", "L", "signal", "sigma", "N", "segments", "placement", "advanced")

#: What each stage's output depends on: top-level keys, or ``block.key`` for one entry of a
#: block. ``merge`` and ``pick`` depend on their input files only. A least-squares restart
#: does not depend on how many restarts there are (``lsq.restarts``).
STAGES: dict[str, tuple[str, ...]] = {
    "segment": _SIMULATION,
    "merge": (),
    "lsq": (
        "seed",
        "L",
        "sigma",
        "lsq.sigma_known",
        "lsq.max_iterations",
        "lsq.starts",
        "lsq.screen_iterations",
        "lsq.keep",
        "spacing",
    ),
    "pick": (),
    "em": _SIMULATION + ("spacing", "lsq.sigma_known", "em"),
    "evaluate": ("seed", "L", "signal", "sigma", "N", "placement"),
}


@dataclass(frozen=True, kw_only=True)
class Mtd1dSettings:
    """One 1-D experiment: signal of length ``L``, noise ``sigma``, ``N`` samples in
    ``segments`` independent segments, the estimators' model ``spacing`` (``separated`` or
    ``arbitrary``), and the settings of each stage (see the module docstring)."""

    kind: str = "mtd1d"
    seed: int
    L: int = 21
    signal: SignalSettings = field(default_factory=SignalSettings)
    sigma: float = 1.0
    N: int = 1000000
    segments: int = 4
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    spacing: str = SPACING
    lsq: Lsq1dSettings = field(default_factory=Lsq1dSettings)
    em: Em1dSettings = field(default_factory=Em1dSettings)
    advanced: Mtd1dAdvanced = field(default_factory=Mtd1dAdvanced)

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | Mtd1dSettings, where: str = "experiments.<name>") -> Mtd1dSettings:
        """The settings of a config block (validated against the schema; missing keys take
        their defaults). An unknown key raises :class:`~cryomtd.io.InputError` naming it."""
        if isinstance(block, cls):
            return block
        if not isinstance(block, Mapping):
            raise InputError(f"{where}: expected a mapping of settings, got {type(block).__name__} {block!r}")
        check_keys_in_place(block, where)
        if "seed" not in block:
            raise InputError(f"{where}.seed: required (an integer >= 0)")
        return from_block(cls, block, where)

    @property
    def em_segments_used(self) -> int:
        """How many segments EM uses: ``em.segments`` (at most ``segments``), all when null."""
        used = self.segments if self.em.segments is None else self.em.segments
        return min(int(used), int(self.segments))

    def stage_block(self, stage: str) -> dict[str, Any]:
        """The plain config block of the settings ``stage``'s output depends on (:data:`STAGES`)."""
        if stage not in STAGES:
            raise KeyError(f"unknown 1-D stage {stage!r} (one of {', '.join(STAGES)})")
        full = to_block(self)
        out: dict[str, Any] = {}
        for key in STAGES[stage]:
            top, _, sub = key.partition(".")
            if sub:
                out.setdefault(top, {})[sub] = copy.deepcopy(full[top][sub])
            else:
                out[top] = copy.deepcopy(full[top])
        return out

    def for_stage(self, stage: str) -> Mtd1dSettings:
        """These settings with everything ``stage`` does not depend on at its default."""
        return from_block(type(self), self.stage_block(stage) or {"seed": self.seed}, "stage settings")


def check_keys_in_place(block: Mapping[str, Any], where: str) -> None:
    """Raise :class:`~cryomtd.io.InputError` for a key that belongs elsewhere in the block
    (``em.max_iterations``: the setting is ``em.iterations``), naming the key."""
    for path, hint in _ELSEWHERE.items():
        node: Any = block
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and path[-1] in node:
            inside = ".".join((where,) + path[:-1])
            raise InputError(f"{inside}: unknown key {path[-1]} ({hint})")
