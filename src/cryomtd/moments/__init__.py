"""Micrograph autocorrelations up to third order (docs/design.md §8).

``autocorrelations_2d(image, W)`` → :class:`Moments2D` (sums + pixel count; dense
views ``a1``, ``a2`` (2W−1, 2W−1), ``a3`` (2W−1)⁴); ``merge`` combines results exactly;
``estimate_noise_variance`` gives σ² from the power spectrum; the lag layout and the
6-fold a³ symmetry are in :mod:`cryomtd.moments.lags`.
"""

from cryomtd.moments.autocorr2d import autocorrelations_2d
from cryomtd.moments.backends import available_backends, resolve_backend
from cryomtd.moments.lags import (
    a2_index_map,
    a2_nonredundant_lags,
    a3_index_map,
    a3_nonredundant_lags,
)
from cryomtd.moments.noise import estimate_noise_variance
from cryomtd.moments.result import Moments2D, merge

__all__ = [
    "autocorrelations_2d",
    "Moments2D",
    "merge",
    "estimate_noise_variance",
    "a2_nonredundant_lags",
    "a3_nonredundant_lags",
    "a2_index_map",
    "a3_index_map",
    "available_backends",
    "resolve_backend",
]
