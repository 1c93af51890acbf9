"""Settings of the micrograph moments: the ``moments`` config block (schema ``workflow/schemas/moments.schema.yaml``).

One window W serves both the micrograph autocorrelations and the 3-D fit: lags
|ℓy|, |ℓx| ≤ W−1; null = :func:`default_window` of the particle box L.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryomtd.io import InputError
from cryomtd.settings import from_block

__all__ = ["MomentsAdvanced", "MomentsSettings", "NoiseSettings", "default_window"]


def default_window(L: int) -> int:
    """W = (L−1)//2 + 1: lags up to (L−1)/2 around the centre, the window of the talk."""
    return (int(L) - 1) // 2 + 1


@dataclass(frozen=True)
class NoiseSettings:
    """σ² of every micrograph (None = estimated from its power spectrum above ``cutoff`` × Nyquist);
    ``debias``: store moments with σ² removed instead of recording it for the fit's model."""

    sigma2: float | None = None
    cutoff: float = 0.8
    debias: bool = False


@dataclass(frozen=True)
class MomentsAdvanced:
    """Engine knobs: array backend, band precision, band and tile sizes (pixels)."""

    backend: str = "auto"
    dtype: str = "float64"
    band_pixels: int | None = None
    tile_pixels: int = 16777216


@dataclass(frozen=True)
class MomentsSettings:
    """The ``moments`` block: where the moments come from (``micrographs`` or ``exact``), the window, the noise."""

    source: str = "micrographs"
    window: int | None = None
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    advanced: MomentsAdvanced = field(default_factory=MomentsAdvanced)

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "moments") -> MomentsSettings:
        """From a (validated) ``moments`` config block; unknown keys are errors naming ``where``."""
        return from_block(cls, block, where)

    def window_for(self, L: int | None) -> int:
        """The window W: ``window``, else :func:`default_window` of the particle box ``L``."""
        if self.window is not None:
            if int(self.window) < 1:
                raise InputError(f"moments.window: expected a positive integer, got {self.window!r}")
            return int(self.window)
        if L is None:
            raise InputError("moments.window: not set, and no particle box L to derive it from")
        return default_window(L)
