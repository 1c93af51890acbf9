"""Settings of the evaluation stage: the ``evaluate`` config block of a cryo3d experiment.

Defaults are written in ``workflow/schemas/evaluate.schema.yaml`` and repeated here
(``tests/test_settings.py`` checks that they agree). The user tier says what is measured
(FSC thresholds, whether a translation and the point reflection are fitted); the
``advanced`` sub-block holds the settings of the rotation search.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryomtd.io import InputError
from cryomtd.settings import from_block

__all__ = ["OUTPUTS", "EvaluationAdvanced", "EvaluationSettings"]

#: How the aligned volume is produced (``advanced.output``).
OUTPUTS = ("basis", "interpolate")


@dataclass(frozen=True)
class EvaluationAdvanced:
    """The rotation search of the alignment (config ``evaluate.advanced``).

    ``grid_step``: degrees between rotations of the coarse grid (:func:`cryomtd.rotations.grid`);
    ``ell_search``: coefficient blocks ℓ ≤ ell_search enter the grid search and the first
    refinement; ``ell_refine``: blocks ℓ ≤ ell_refine enter the final refinement (None: all);
    ``n_candidates``: best grid rotations refined per reflection; ``refine``: refine them
    locally; ``output``: the aligned volume from the rotated basis coefficients (``basis``)
    or by resampling the estimate's voxels (``interpolate``).
    """

    grid_step: float = 15.0
    ell_search: int = 6
    ell_refine: int | None = 12
    n_candidates: int = 4
    refine: bool = True
    output: str = "basis"

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise InputError(f"evaluate.advanced.output: expected one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if not 0 < float(self.grid_step) <= 90:
            raise InputError(f"evaluate.advanced.grid_step: expected 0 < grid_step <= 90 degrees, got {self.grid_step}")


@dataclass(frozen=True)
class EvaluationSettings:
    """The ``evaluate`` block: what is measured when an estimate is compared with the truth.

    ``thresholds``: FSC values whose crossing resolution is reported (0.5 is the criterion
    against a known truth; 0.143 is the half-map criterion, reported for comparison with
    published resolutions); ``shift``: also fit a translation; ``reflections``: also try the
    point reflection p → −p; ``advanced``: the rotation search (:class:`EvaluationAdvanced`).
    """

    thresholds: tuple[float, ...] = (0.5, 0.143)
    shift: bool = True
    reflections: bool = True
    advanced: EvaluationAdvanced = field(default_factory=EvaluationAdvanced)

    def __post_init__(self) -> None:
        thresholds = tuple(float(t) for t in self.thresholds)
        if not thresholds or not all(0 < t < 1 for t in thresholds):
            raise InputError(f"evaluate.thresholds: expected FSC values between 0 and 1, got {list(thresholds)}")
        object.__setattr__(self, "thresholds", thresholds)

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "evaluate") -> EvaluationSettings:
        """Build from a config block (``None``: all defaults); unknown keys raise :class:`~cryomtd.io.InputError`."""
        return from_block(cls, block, where)
