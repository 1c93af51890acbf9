"""1-D multi-target detection (docs/design.md §7): simulation, streamed moments, least squares, EM.

>>> from cryomtd.mtd1d import make_signal, simulate_segment, Placement, autocorrelations, fit_lsq, fit_em
"""

from cryomtd.mtd1d.em import EMResult, fit_em, rho_from_gamma
from cryomtd.mtd1d.lsq import LSQResult, fit_lsq, fit_lsq_restart, fit_lsq_two_stage, pick_best
from cryomtd.mtd1d.metrics import relative_error
from cryomtd.mtd1d.moments import MomentAccumulator, Moments1D, autocorrelations, merge, model_moments, noise_bias
from cryomtd.mtd1d.signals import make_signal
from cryomtd.mtd1d.simulate import Placement, segment_lengths, simulate_chunks, simulate_segment

__all__ = [
    "EMResult",
    "fit_em",
    "rho_from_gamma",
    "LSQResult",
    "fit_lsq",
    "fit_lsq_restart",
    "fit_lsq_two_stage",
    "pick_best",
    "relative_error",
    "MomentAccumulator",
    "Moments1D",
    "autocorrelations",
    "merge",
    "model_moments",
    "noise_bias",
    "make_signal",
    "Placement",
    "segment_lengths",
    "simulate_chunks",
    "simulate_segment",
]
