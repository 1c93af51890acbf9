"""3-D autocorrelation analysis: the volume from micrograph moments by least squares (docs/design.md §9).

Public API (stable):

* :func:`expected_moments` ``(basis, coef, gamma, W, *, sigma=0.0)`` → :class:`ModelMoments`
  with ``.a1``, ``.a2``, ``.a3`` in the layout and normalisation of
  :func:`cryomtd.moments.autocorrelations_2d` (exact SO(3) average);
* :func:`fit` ``(moments, basis, settings=None, *, sigma=0.0, seed=0, **overrides)`` →
  :class:`FitResult` with ``.coef``, ``.gamma``, ``.cost``, ``.cost_trace``, ``.iterations``
  (settings: :class:`LsqSettings`, default = the workflow's ``lsq`` block);
* :class:`MomentModel`: the precomputed model (torch, differentiable) behind both;
* the CTF: ``expected_moments(..., ctf=CTF(...), pixel_size=...)`` and ``fit(..., ctf=, pixel_size=)``
  model CTF-filtered projections mixed over CTF groups (:class:`CtfMixture`, :mod:`cryomtd.mom3d.ctfmodel`).
"""

from cryomtd.mom3d.ctfmodel import CtfMixture
from cryomtd.mom3d.fit import FitResult, cost_terms, fit, fit_restart
from cryomtd.mom3d.model import ModelMoments, MomentModel, expected_moments
from cryomtd.mom3d.quadrature import euler_quadrature
from cryomtd.mom3d.settings import LsqAdvanced, LsqSettings

__all__ = [
    "expected_moments",
    "CtfMixture",
    "fit",
    "fit_restart",
    "FitResult",
    "ModelMoments",
    "MomentModel",
    "cost_terms",
    "euler_quadrature",
    "LsqSettings",
    "LsqAdvanced",
]
