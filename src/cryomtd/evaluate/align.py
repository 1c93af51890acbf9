"""Align a 3-D estimate to a reference over O(3) = SO(3) × {identity, point reflection}.

Conventions (docs/conventions.md): volumes are ``[z, y, x]``, centre voxel ``L//2``;
a rotation R acts as v_R(p) = v(Rᵀ p) with p = (x, y, z) in voxels from the centre; the
point reflection is v ↦ v(−p). The aligned estimate is

    aligned(p) = est(s · Rᵀ (p − t)),   s = −1 if ``reflected`` else +1,  t the shift (x, y, z).

Method
------
1. Both volumes are expanded in the spherical-Bessel basis (``cryomtd.basis.SphericalBessel``).
   Rotation acts block-diagonally, c'_{ℓ,s,·} = D^ℓ(R) c_{ℓ,s,·}, so the correlation with the
   reference is

       C(R) = Σ_ℓ Σ_s ref_{ℓ,s}ᵀ D^ℓ(R) est_{ℓ,s} = Σ_ℓ ⟨D^ℓ(R), M_ℓ⟩_F,   M_ℓ = Σ_s ref_{ℓ,s} est_{ℓ,s}ᵀ,

   a (2ℓ+1)² contraction per ℓ: the correlations for every rotation of a grid are one
   batched product of the Wigner-D blocks with the small matrices M_ℓ (no volume is
   rotated during the search). The point reflection is the sign flip (−1)^ℓ of every
   block (real spherical harmonics have parity (−1)^ℓ; radial functions are even).
2. The best few grid rotations (for each reflection) are refined locally by BFGS on the
   rotation vector of a left perturbation R = exp([ω]×) R₀, with the 3-D gradient from
   central differences evaluated as one batch of 7 rotations.
3. Optionally a translation t: integer peak of the FFT cross-correlation, then a
   parabolic sub-voxel fit per axis.

The output volume is either the estimate re-evaluated from its rotated coefficients
(``output="basis"``, exact for volumes that live in the basis, as every estimator of this
project does) or the voxel estimate resampled by cubic-spline interpolation
(``output="interpolate"``, keeps detail beyond the basis band limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial.transform import Rotation

__all__ = ["Alignment", "align", "align_coefficients", "coefficient_correlations", "reflect_coefficients",
           "transform_volume", "relative_error"]


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align`.

    volume: (L, L, L) float64, the estimate rotated (and reflected, shifted) onto the reference.
    rotation: (3, 3) R of the module docstring. reflected: whether the point reflection was applied.
    shift: (3,) t = (x, y, z) in voxels (zeros unless shift refinement was asked for).
    correlation: normalised real-space correlation ⟨volume, reference⟩ / (‖volume‖ ‖reference‖).
    coef_correlation: normalised coefficient-domain correlation at the optimum.
    coef: the estimate's aligned coefficients (rotation/reflection only), or None.
    """

    volume: np.ndarray
    rotation: np.ndarray
    reflected: bool
    correlation: float
    shift: np.ndarray = field(default_factory=lambda: np.zeros(3))
    coef_correlation: float = float("nan")
    coef: np.ndarray | None = None


def _blocks(basis) -> list[tuple[int, np.ndarray]]:
    """(ℓ, index array (S_ℓ, 2ℓ+1)) per ℓ, from the basis layout (ℓ ascending, then s, then m)."""
    ell = np.asarray(basis.ell)
    out = []
    for l in range(int(basis.ell_max) + 1):
        idx = np.flatnonzero(ell == l)
        if idx.size:
            out.append((l, idx.reshape(-1, 2 * l + 1)))
    return out


def reflect_coefficients(coef: np.ndarray, basis) -> np.ndarray:
    """Coefficients of v(−p): every ℓ block times (−1)^ℓ."""
    return np.asarray(coef) * np.where(np.asarray(basis.ell) % 2 == 1, -1.0, 1.0)


def _contraction_matrices(est: np.ndarray, ref: np.ndarray, blocks) -> list[np.ndarray]:
    """M_ℓ = Σ_s ref_{ℓ,s} est_{ℓ,s}ᵀ, one (2ℓ+1, 2ℓ+1) matrix per ℓ."""
    return [ref[idx].T @ est[idx] for _, idx in blocks]


def coefficient_correlations(est: np.ndarray, ref: np.ndarray, basis, rotations: np.ndarray,
                             chunk: int = 2048) -> np.ndarray:
    """C(R) = ⟨D(R) est, ref⟩ for every R in ``rotations`` (n, 3, 3) → (n,), batched over R."""
    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    blocks = _blocks(basis)
    mats = _contraction_matrices(np.asarray(est, float), np.asarray(ref, float), blocks)
    out = np.empty(len(rotations))
    for start in range(0, len(rotations), chunk):
        Rs = rotations[start:start + chunk]
        D = basis.wigner(Rs)
        acc = np.zeros(len(Rs))
        for (l, _), M in zip(blocks, mats):
            acc += np.einsum("nij,ij->n", np.asarray(D[l]), M)
        out[start:start + chunk] = acc
    return out


def _perturb(R0: np.ndarray, omegas: np.ndarray) -> np.ndarray:
    """exp([ω]×) R₀ for each ω (k, 3) → (k, 3, 3)."""
    return Rotation.from_rotvec(omegas).as_matrix() @ R0


def _refine(est: np.ndarray, ref: np.ndarray, basis, R0: np.ndarray, h: float = 1e-4,
            maxiter: int = 50) -> tuple[np.ndarray, float]:
    """Local maximisation of C(R) around R₀ (BFGS on ω, batched central-difference gradient)."""
    steps = np.vstack([np.zeros(3), h * np.eye(3), -h * np.eye(3)])

    def fun(w):
        c = coefficient_correlations(est, ref, basis, _perturb(R0, w[None, :] + steps))
        grad = (c[1:4] - c[4:7]) / (2 * h)
        return -c[0], -grad

    res = optimize.minimize(fun, np.zeros(3), jac=True, method="BFGS", options={"maxiter": maxiter, "gtol": 1e-10})
    R = _perturb(R0, res.x[None, :])[0]
    return R, -float(res.fun)


def align_coefficients(est: np.ndarray, ref: np.ndarray, basis, *, reflections: bool = True,
                       grid_step: float = 12.0, refine: bool = True, n_candidates: int = 4,
                       rotations: np.ndarray | None = None) -> tuple[np.ndarray, bool, float]:
    """Best (R, reflected, normalised coefficient correlation) for ⟨D(R)·(±)est, ref⟩.

    ``grid_step`` is the angular step (degrees) of ``cryomtd.rotations.grid``; ``rotations``
    overrides the grid. The ``n_candidates`` best grid rotations of each reflection are refined.
    """
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if rotations is None:
        from cryomtd import rotations as rot

        rotations = rot.grid(grid_step)
    norm = np.linalg.norm(est) * np.linalg.norm(ref)
    if norm == 0:
        raise ValueError("cannot align a zero volume")
    variants = [(False, est)] + ([(True, reflect_coefficients(est, basis))] if reflections else [])
    best = (np.eye(3), False, -np.inf)
    for reflected, e in variants:
        corr = coefficient_correlations(e, ref, basis, rotations)
        order = np.argsort(corr)[::-1][: max(1, n_candidates)]
        for i in order:
            R, c = (_refine(e, ref, basis, rotations[i]) if refine else (rotations[i], float(corr[i])))
            if c > best[2]:
                best = (R, reflected, c)
    R, reflected, c = best
    return R, reflected, c / norm


def transform_volume(vol: np.ndarray, rotation: np.ndarray, reflected: bool = False,
                     shift: np.ndarray | None = None, order: int = 3) -> np.ndarray:
    """out(p) = vol(s · Rᵀ (p − t)) by spline interpolation (zero outside the box)."""
    vol = np.asarray(vol, dtype=np.float64)
    L = vol.shape[0]
    c = L // 2
    t = np.zeros(3) if shift is None else np.asarray(shift, dtype=np.float64)
    A = (-1.0 if reflected else 1.0) * np.asarray(rotation, dtype=np.float64).T  # acts on (x, y, z)
    # index space (z, y, x): q_idx = P A P (p_idx − c − P t) + c, with P reversing the axis order.
    P = np.eye(3)[::-1]
    M = P @ A @ P
    offset = c - M @ (np.full(3, c) + P @ t)
    return ndimage.affine_transform(vol, M, offset=offset, order=order, mode="constant", cval=0.0,
                                    prefilter=order > 1)


def _find_shift(vol: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Translation t (x, y, z) maximising ⟨vol(p − t), ref⟩: FFT peak + parabolic sub-voxel fit."""
    cc = np.fft.ifftn(np.fft.fftn(ref) * np.conj(np.fft.fftn(vol))).real
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape))
    L = np.array(cc.shape)
    t_idx = np.empty(3)
    for ax in range(3):
        idx = [peak.copy(), peak.copy()]
        idx[0][ax] = (peak[ax] - 1) % L[ax]
        idx[1][ax] = (peak[ax] + 1) % L[ax]
        ym, y0, yp = cc[tuple(idx[0])], cc[tuple(peak)], cc[tuple(idx[1])]
        den = ym - 2 * y0 + yp
        frac = 0.5 * (ym - yp) / den if den < 0 else 0.0
        p = peak[ax] + np.clip(frac, -0.5, 0.5)
        t_idx[ax] = p - L[ax] if p > L[ax] / 2 else p
    return t_idx[::-1]  # (z, y, x) → (x, y, z)


def relative_error(vol: np.ndarray, ref: np.ndarray) -> float:
    """‖vol − ref‖₂ / ‖ref‖₂ over voxels."""
    return float(np.linalg.norm(np.asarray(vol) - ref) / np.linalg.norm(ref))


def align(estimate: np.ndarray, reference: np.ndarray, *, reflections: bool = True, basis=None,
          ell_max: int | None = None, grid_step: float = 12.0, refine: bool = True, n_candidates: int = 4,
          shift: bool = False, output: Literal["interpolate", "basis"] = "interpolate",
          est_coef: np.ndarray | None = None, ref_coef: np.ndarray | None = None) -> Alignment:
    """Rotate (and reflect, optionally shift) ``estimate`` (L, L, L) onto ``reference`` (L, L, L).

    ``basis`` defaults to ``SphericalBessel(L, ell_max)``; pass ``est_coef``/``ref_coef`` when
    the coefficients are known (skips the expansions). See the module docstring for the method
    and :class:`Alignment` for the result.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if estimate.ndim != 3 or estimate.shape != reference.shape or len(set(estimate.shape)) != 1:
        raise ValueError(f"align needs two cubic volumes of one shape, got {estimate.shape} and {reference.shape}")
    L = estimate.shape[0]
    if basis is None:
        from cryomtd.basis import SphericalBessel

        basis = SphericalBessel(L, ell_max)
    ce = basis.expand(estimate) if est_coef is None else np.asarray(est_coef, dtype=np.float64)
    cr = basis.expand(reference) if ref_coef is None else np.asarray(ref_coef, dtype=np.float64)
    R, reflected, ccorr = align_coefficients(ce, cr, basis, reflections=reflections, grid_step=grid_step,
                                             refine=refine, n_candidates=n_candidates)
    coef = basis.rotate(reflect_coefficients(ce, basis) if reflected else ce, R)
    if output == "basis":
        vol = np.asarray(basis.evaluate(coef), dtype=np.float64)
    else:
        vol = transform_volume(estimate, R, reflected)
    t = np.zeros(3)
    if shift:
        t = _find_shift(vol, reference)
        if output == "interpolate":
            vol = transform_volume(estimate, R, reflected, t)
        else:  # sub-voxel shift of a band-limited volume: Fourier phase ramp
            vol = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(vol), t[::-1])).real
    corr = float(np.vdot(vol, reference) / (np.linalg.norm(vol) * np.linalg.norm(reference)))
    return Alignment(volume=vol, rotation=R, reflected=bool(reflected), correlation=corr, shift=t,
                     coef_correlation=float(ccorr), coef=coef)
