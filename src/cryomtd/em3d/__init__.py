"""3-D approximate expectation-maximisation directly from micrographs (docs/design.md §10).

Micrographs are cut into non-overlapping L×L patches; each patch is explained by a
projection of the volume (spherical-Bessel coefficients) at a rotation of a grid,
zero-padded to 2L×2L, circularly shifted and cropped (empty patches included), plus
white Gaussian noise. EM alternates FFT-based E-steps over patches × rotations × shifts
and weighted least-squares M-steps. Batch EM and stochastic approximate EM, checkpoint
and resume. With a CTF (one group CTF per micrograph) the patches are compared with the
filtered projections of their defocus group on an enlarged box (:mod:`.ctfmodel`).
Public entry point: :func:`run`.
"""

from .backend import Backend, get_backend
from .ctfmodel import CtfModel, plan_ctf, truncation_radius
from .driver import EMResult, em, run, step_size
from .estep import Statistics, estep_batch, log_likelihoods, projection_spectra
from .model import ProjectionModel
from .mstep import mstep, normal_equations, solve, weight_images
from .patches import PatchSource
from .settings import EmAdvanced, EmSettings, RefineSettings, StepSettings

__all__ = [
    "run",
    "em",
    "EMResult",
    "CtfModel",
    "plan_ctf",
    "truncation_radius",
    "ProjectionModel",
    "PatchSource",
    "Statistics",
    "estep_batch",
    "log_likelihoods",
    "projection_spectra",
    "mstep",
    "normal_equations",
    "solve",
    "weight_images",
    "step_size",
    "Backend",
    "get_backend",
    "EmSettings",
    "EmAdvanced",
    "RefineSettings",
    "StepSettings",
]
