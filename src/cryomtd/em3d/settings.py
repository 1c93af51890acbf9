"""Settings of approximate EM: the ``em`` config block (schema ``workflow/schemas/em3d.schema.yaml``).

The defaults here equal the schema's (``tests/test_settings.py``); :func:`cryomtd.em3d.run`
called without settings behaves like the workflow default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryomtd.settings import from_block

__all__ = ["EmAdvanced", "EmSettings", "RefineSettings", "StepSettings"]


@dataclass(frozen=True)
class StepSettings:
    """Stochastic-EM step η_k = 1 for k ≤ burn_in, then (k − burn_in + 1)^(−decay)."""

    burn_in: int = 3
    decay: float = 0.6


@dataclass(frozen=True)
class RefineSettings:
    """Local rotation refinement: after ``after`` iterations on the global grid, each patch is
    evaluated on the finer grid of step ``fine_step`` (degrees; None = off) only at the fine
    rotations nearest to its ``top`` most probable global-grid rotations."""

    fine_step: float | None = None
    after: int = 5
    top: int = 8


@dataclass(frozen=True)
class EmAdvanced:
    """Engine knobs (speed and memory, not the estimate): backend, E-step method, dtype, batches, threads;
    ``prune`` = ε of rotation pruning (after ``prune_after`` iterations a patch is evaluated only at
    the rotations that held ≥ 1 − ε of its posterior mass at its previous visit; 0 = off)."""

    backend: str = "auto"
    method: str = "auto"
    dtype: str = "float64"
    memory_mb: int = 1024
    threads: int = 2
    runtime: int = 60
    prune: float = 0.0
    prune_after: int = 2


@dataclass(frozen=True)
class EmSettings:
    """The ``em`` block: rotation grid (degrees), iterations, stopping tolerance, patch fraction
    per iteration (< 1 = stochastic EM), Gaussian prior precision on the coefficients."""

    enabled: bool = True
    init: str = "auto"
    init_radius: float | None = None
    init_spread: float = 0.1
    grid_step: float = 30.0
    iterations: int = 20
    tol: float = 1e-6
    fraction: float = 1.0
    step: StepSettings = field(default_factory=StepSettings)
    prior_weight: float = 0.0
    learn_rotation_prior: bool = False
    refine: RefineSettings = field(default_factory=RefineSettings)
    advanced: EmAdvanced = field(default_factory=EmAdvanced)

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "em") -> EmSettings:
        """From a (validated) ``em`` config block; unknown keys are errors naming ``where``."""
        return from_block(cls, block, where)
