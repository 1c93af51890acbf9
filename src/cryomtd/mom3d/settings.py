"""Settings of the 3-D method of moments: the ``lsq`` config block (schema ``workflow/schemas/lsq3d.schema.yaml``).

The defaults equal the schema's (``tests/test_settings.py``), so :func:`cryomtd.mom3d.fit`
called without settings runs the workflow's default fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryomtd.settings import from_block

__all__ = ["LsqAdvanced", "LsqSettings"]


@dataclass(frozen=True)
class LsqAdvanced:
    """How each restart is optimised: optimiser, frequency marching, a1/a2 warm start, the
    third-moment model and its cache, the start, a Gauss–Newton polish, residual weights,
    the noise handling, the initial γ and the threads of a job; the point-group detection of
    ``symmetry: auto`` (candidates, screened restarts per group, the rule's factor and floor)
    and the relaxation of a symmetric fit to C1 (:mod:`cryomtd.mom3d.detect`)."""

    optimizer: str = "conjugate-gradient"
    max_inner: int | None = 10
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    marching: bool = True
    a2_first: bool = True
    model: str = "invariants"
    cache_dir: str | None = None
    init: str = "ball"
    init_radius: float | None = None
    init_spread: float = 0.3
    polish: int = 0
    noise: str = "auto"
    gamma_init: float = 0.1
    threads: int = 1
    candidates: tuple[str, ...] = (
        "C1",
        "C2",
        "C3",
        "C4",
        "C5",
        "C6",
        "C7",
        "C8",
        "D2",
        "D3",
        "D4",
        "D5",
        "D6",
        "T",
        "O",
    )
    detect_restarts: int = 3
    detect_iterations: int = 30
    detect_refine: int = 100
    detect_factor: float = 10.0
    detect_floor: float = 1e-12
    relax: int = 100
    relax_perturbation: float = 1e-3


@dataclass(frozen=True)
class LsqSettings:
    """The ``lsq`` block: restarts, fitted degree (None = the basis' ℓmax), point group (a symbol,
    or ``auto``: detected from the moments, :mod:`cryomtd.mom3d.detect`),
    optimiser iterations per stage, Tikhonov weight, and the continuation of the best restarts."""

    enabled: bool = True
    restarts: int = 4
    ell_max: int | None = None
    symmetry: str = "C1"
    max_iterations: int = 100
    prior_weight: float = 0.0
    refine_top: int = 0
    refine_iterations: int = 200
    advanced: LsqAdvanced = field(default_factory=LsqAdvanced)

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "lsq") -> LsqSettings:
        """From a (validated) ``lsq`` config block; unknown keys are errors naming ``where``."""
        return from_block(cls, block, where)
