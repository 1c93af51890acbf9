"""Generic starting volumes of approximate EM (``em.init``: ``ball`` or ``random``).

Without the method-of-moments estimate EM starts from a soft ball fitted to the data, plus
a little random detail:

* :func:`patch_spectrum` — the patches' mean periodogram D(k) = mean_i |DFT(y_i)|²(k) − L²σ²
  (L×L, unnormalised DFT; the white noise's expectation L²σ² removed).
* :func:`expected_spectrum` — what EM's first E-step expects of it: the mean over the N²
  shifts of the uniform initial shift prior of |DFT(C R_s Z p)|² for a projection box p.
  A ball's projection is the same at every rotation, so one box per CTF group suffices.
* :func:`ball_start` — the radius R and amplitude a of the soft ball 1/(1 + exp((r − R)/edge))
  whose expected spectrum best fits D up to the scale a² (closed form per R, best R on a
  0.25-pixel grid; the zero frequency is left out, so a subtracted micrograph mean does not
  matter), plus random low-pass ℓ ≥ 1 coefficients of norm ``spread``·‖ball‖.

The random start (``random``, :meth:`ProjectionModel.lowpass_random`) is kept for comparison:
on crowded micrographs (γ = 0.4, non-overlapping) it needs more iterations to reach the
error the ball start reaches (docs/em3d.md, "Starting volume").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from cryomtd.io import InputError
from cryomtd.volume import soft_ball

from .estep import shift_index
from .model import ProjectionModel, WignerBlocks
from .patches import PatchSource

__all__ = ["ball_coefficients", "ball_start", "expected_spectrum", "patch_spectrum", "random_start"]

log = logging.getLogger("cryomtd.em3d")

#: Edge width (pixels) of the soft ball, as ``lsq.init: ball`` uses.
EDGE = 1.0


def patch_spectrum(
    source: PatchSource, sigma: float, idx: np.ndarray | None = None, batch_size: int = 4096
) -> np.ndarray:
    """Mean periodogram of the patches ``idx`` (default all) minus the white noise's: (L, L),
    D(k) = mean_i |Σ_u y_i[u] e^{−2πi k·u/L}|² − L²σ² (one streaming pass)."""
    L = source.L
    total = np.zeros((L, L))
    count = 0
    for _, p in source.batches(idx, batch_size):
        f = np.fft.fft2(p)
        total += np.sum(f.real**2 + f.imag**2, axis=0)
        count += p.shape[0]
    return total / max(count, 1) - L * L * sigma**2


def expected_spectrum(box: np.ndarray, L: int) -> np.ndarray:
    """Mean over all N² shifts s of |DFT(C R_s Z p)|² for the projection box p (B, B), B ≥ L,
    N = L + B (the E-step's crop model with a uniform shift prior, :mod:`.estep`): (L, L)."""
    B = box.shape[-1]
    N = L + B
    z = np.zeros((N, N))
    z[:B, :B] = box
    crops = z.ravel()[shift_index(L, B)].reshape(N * N, L, L)
    f = np.fft.fft2(crops)
    return np.mean(f.real**2 + f.imag**2, axis=0)


def ball_coefficients(model: ProjectionModel, radius: float, edge: float = EDGE) -> np.ndarray:
    """Coefficients (size,) of the soft ball of ``radius`` px: its ℓ = 0 block fitted by least
    squares to the ball's projection (the voxel sum along z), every other coefficient zero."""
    zero = model.ell == 0
    if not zero.any():
        raise InputError("em.init: ball needs the basis to hold ℓ = 0 (it has no radial block)")
    target = soft_ball(model.L, radius, edge).sum(axis=0).ravel()
    c = np.zeros(model.size)
    c[zero] = np.linalg.lstsq(model.psi[:, zero], target, rcond=None)[0]
    return c


def _detail(model: ProjectionModel, rng: np.random.Generator, norm: float) -> np.ndarray:
    """Low-pass random ℓ ≥ 1 coefficients of the given norm."""
    d = model.lowpass_random(rng, 1.0)
    d[model.ell == 0] = 0.0
    n = float(np.linalg.norm(d))
    return d * (norm / n) if n > 0 else d


def ball_start(
    source: PatchSource,
    model: ProjectionModel,
    sigma: float,
    rng: np.random.Generator,
    *,
    radius: float | None = None,
    spread: float = 0.1,
    filtered: Sequence[tuple[ProjectionModel, float]] | None = None,
    wigner: WignerBlocks | None = None,
) -> np.ndarray:
    """The ball start (size,): soft ball of ``radius`` px (None: fitted, module docstring) with
    the amplitude whose expected patch spectrum fits the data's, plus ``spread``·‖ball‖ of
    random low-pass ℓ ≥ 1 detail from ``rng``.

    With a CTF, ``filtered`` lists (filtered model of a group, fraction of the patches) and
    ``wigner`` the rotation blocks (only their first rotation is used: a ball is round): the
    expected spectrum is the groups' mixture of their filtered balls' on the enlarged box.
    """
    L = model.L
    data = patch_spectrum(source, sigma)
    keep = np.ones((L, L), dtype=bool)
    keep[0, 0] = False

    def spectrum(c: np.ndarray) -> np.ndarray:
        if filtered is None:
            return expected_spectrum((model.psi @ c).reshape(L, L), L)
        w1 = [w[:1] for w in wigner]
        return sum(frac * expected_spectrum(m.project(c, w1)[0], L) for m, frac in filtered)

    def fit(R: float) -> tuple[float, float, np.ndarray]:
        c = ball_coefficients(model, R)
        m = spectrum(c)[keep]
        scale = float(m @ data[keep]) / max(float(m @ m), 1e-300)
        misfit = float(np.sum((scale * m - data[keep]) ** 2)) / max(float(np.sum(data[keep] ** 2)), 1e-300)
        return misfit, scale, c

    if radius is None:
        grid = np.arange(1.0, L / 2 + 1e-9, 0.25)
        fits = [fit(R) for R in grid]  # a 1-D search over ≈ 20 radii, each one small FFT batch
        i = int(np.argmin([f[0] for f in fits]))
        radius, (misfit, scale, c) = float(grid[i]), fits[i]
    else:
        if not 0 < radius:
            raise InputError(f"em.init_radius: expected a positive radius in pixels, got {radius}")
        misfit, scale, c = fit(float(radius))
    if not scale > 0:
        raise InputError(
            "em.init: ball: the patches' power spectrum shows no signal above the noise level "
            f"σ = {sigma:.4g} (fitted scale {scale:.3g}); check the micrographs' noise level or give em.init: random"
        )
    ball = np.sqrt(scale) * c
    log.info("em ball start: radius %.2f px, amplitude %.4g, spectrum misfit %.3g", radius, np.sqrt(scale), misfit)
    return ball + _detail(model, rng, spread * float(np.linalg.norm(ball)))


def random_start(source: PatchSource, model: ProjectionModel, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A low-pass random volume matched to the data power (``em.init: random``)."""
    power = max(source.mean_power() - sigma**2, 1e-3 * sigma**2)
    return model.lowpass_random(rng, 2.0 * power)
