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
   The search uses the blocks ℓ ≤ ``ell_search`` on a HEALPix × in-plane grid
   (``cryomtd.rotations.grid``); their Wigner blocks are computed once per process and
   reused for every estimator and reflection.
2. The best few grid rotations (for each reflection) are refined locally by BFGS on the
   rotation vector of a left perturbation R = exp([ω]×) R₀ (gradient by central differences,
   evaluated as one batch of 7 rotations), first with ℓ ≤ ``ell_search``, then the winner
   with ℓ ≤ ``ell_refine``.
3. Optionally a translation t: the rotation search runs on both volumes centred at their
   |v|²-weighted centroids c (equivariant under rotation and translation), which gives
   t = c_ref − s R c_est; then ``shift_iterations`` polishing rounds: the maximum of the
   Fourier-interpolated cross-correlation (sub-voxel, BFGS) and a rotation search of the
   translated estimate.

The output volume is either the estimate re-evaluated from its rotated coefficients
(``output="basis"``, exact for volumes that live in the basis, as every estimator of this
project does) or the voxel estimate resampled by cubic-spline interpolation
(``output="interpolate"``, keeps detail beyond the basis band limit).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:
    from cryomtd.basis import SphericalBessel

__all__ = [
    "Alignment",
    "align",
    "align_coefficients",
    "coefficient_correlations",
    "reflect_coefficients",
    "relative_error",
    "transform_volume",
]


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


def _blocks(ell: np.ndarray, cap: int) -> list[tuple[int, np.ndarray]]:
    """(ℓ, index array (S_ℓ, 2ℓ+1)) for ℓ = 0 … cap, from the layout (ℓ ascending, then s, then m)."""
    out = []
    for l in range(int(cap) + 1):
        idx = np.flatnonzero(ell == l)
        if idx.size:
            out.append((l, idx.reshape(-1, 2 * l + 1)))
    return out


def reflect_coefficients(coef: np.ndarray, basis: SphericalBessel) -> np.ndarray:
    """Coefficients of v(−p): every ℓ block times (−1)^ℓ."""
    return np.asarray(coef) * np.where(np.asarray(basis.ell) % 2 == 1, -1.0, 1.0)


def _wigner(ell_max: int, R: np.ndarray) -> list[np.ndarray]:
    from cryomtd.basis import real_wigner

    return real_wigner(int(ell_max), np.asarray(R, dtype=np.float64).reshape(-1, 3, 3))


@functools.lru_cache(maxsize=4)
def _grid_wigner(step: float, ell_max: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The rotation grid of ``step`` degrees and its Wigner blocks up to ``ell_max`` (cached: the
    search of every estimator and reflection reuses them)."""
    from cryomtd import rotations as rot

    R = rot.grid(step)
    return R, tuple(_wigner(ell_max, R))


def _correlations(D: Sequence[np.ndarray], mats: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Σ_ℓ ⟨D^ℓ(R_n), M_ℓ⟩_F for every n: one batched contraction per ℓ → (n,)."""
    acc = np.zeros(D[0].shape[0])
    for l, M in mats:
        acc += np.einsum("nij,ij->n", D[l], M)
    return acc


def _contractions(est: np.ndarray, ref: np.ndarray, ell: np.ndarray, cap: int) -> list[tuple[int, np.ndarray]]:
    """M_ℓ = Σ_s ref_{ℓ,s} est_{ℓ,s}ᵀ ((2ℓ+1)×(2ℓ+1)) for ℓ ≤ cap."""
    return [(l, ref[idx].T @ est[idx]) for l, idx in _blocks(ell, cap)]


def coefficient_correlations(
    est: np.ndarray,
    ref: np.ndarray,
    basis: SphericalBessel,
    rotations: np.ndarray,
    ell_max: int | None = None,
    chunk: int = 4096,
) -> np.ndarray:
    """C(R) = ⟨D(R) est, ref⟩ over the blocks ℓ ≤ ``ell_max`` (default all) for R (n, 3, 3) → (n,)."""
    cap = basis.ell_max if ell_max is None else min(int(ell_max), basis.ell_max)
    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    mats = _contractions(np.asarray(est, float), np.asarray(ref, float), np.asarray(basis.ell), cap)
    out = np.empty(len(rotations))
    for start in range(0, len(rotations), chunk):
        out[start : start + chunk] = _correlations(_wigner(cap, rotations[start : start + chunk]), mats)
    return out


def _perturb(R0: np.ndarray, omegas: np.ndarray) -> np.ndarray:
    """exp([ω]×) R₀ for each ω (k, 3) → (k, 3, 3)."""
    return Rotation.from_rotvec(omegas).as_matrix() @ R0


def _refine(mats, cap: int, R0: np.ndarray, h: float = 1e-5, maxiter: int = 60) -> tuple[np.ndarray, float]:
    """Local maximisation of C(R) around R₀: BFGS on ω of R = exp([ω]×) R₀; the gradient by
    central differences, evaluated with C as one batch of 7 rotations."""
    steps = np.vstack([np.zeros(3), h * np.eye(3), -h * np.eye(3)])

    def fun(w):
        c = _correlations(_wigner(cap, _perturb(R0, w[None, :] + steps)), mats)
        return -c[0], -(c[1:4] - c[4:7]) / (2 * h)

    res = optimize.minimize(fun, np.zeros(3), jac=True, method="BFGS", options={"maxiter": maxiter, "gtol": 1e-9})
    return _perturb(R0, res.x[None, :])[0], -float(res.fun)


def align_coefficients(
    est: np.ndarray,
    ref: np.ndarray,
    basis: SphericalBessel,
    *,
    reflections: bool = True,
    grid_step: float = 15.0,
    ell_search: int = 6,
    ell_refine: int | None = 12,
    refine: bool = True,
    n_candidates: int = 4,
) -> tuple[np.ndarray, bool, float]:
    """Best (R, reflected, normalised coefficient correlation) maximising ⟨D(R)·(±)est, ref⟩.

    Three stages, each cheap: (1) correlations of the blocks ℓ ≤ ``ell_search`` at every
    rotation of ``cryomtd.rotations.grid(grid_step)`` (for each reflection); (2) BFGS from the
    ``n_candidates`` best grid rotations of each reflection, still with ℓ ≤ ``ell_search``;
    (3) BFGS from the winner with ℓ ≤ ``ell_refine`` (None: all). The low blocks carry most of
    the energy of a smooth volume and their correlation is smooth in R, so a coarse grid
    suffices; for an exact rotated copy every block peaks at the same rotation.
    The returned correlation uses all blocks, normalised by the coefficient norms.
    """
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    norm = np.linalg.norm(est) * np.linalg.norm(ref)
    if norm == 0:
        raise ValueError("cannot align a zero volume")
    ell = np.asarray(basis.ell)
    cap_s = min(int(ell_search), basis.ell_max)
    cap_r = basis.ell_max if ell_refine is None else min(int(ell_refine), basis.ell_max)
    grid, D = _grid_wigner(float(grid_step), cap_s)
    variants = [(False, est)] + ([(True, reflect_coefficients(est, basis))] if reflections else [])
    best = (np.eye(3), False, -np.inf, est)
    for reflected, e in variants:
        mats = _contractions(e, ref, ell, cap_s)
        corr = _correlations(D, mats)
        for i in np.argsort(corr)[::-1][: max(1, n_candidates)]:
            R, c = _refine(mats, cap_s, grid[i]) if refine else (grid[i], float(corr[i]))
            if c > best[2]:
                best = (R, reflected, c, e)
    R, reflected, _, e = best
    if refine and cap_r > cap_s:
        R, _ = _refine(_contractions(e, ref, ell, cap_r), cap_r, R)
    c_all = float(coefficient_correlations(e, ref, basis, R[None])[0])
    return R, reflected, c_all / norm


def transform_volume(
    vol: np.ndarray, rotation: np.ndarray, reflected: bool = False, shift: np.ndarray | None = None, order: int = 3
) -> np.ndarray:
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
    return ndimage.affine_transform(vol, M, offset=offset, order=order, mode="constant", cval=0.0, prefilter=order > 1)


def _find_shift(vol: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Translation t (x, y, z) maximising ⟨vol(p − t), ref⟩.

    Integer peak of the FFT cross-correlation, then the continuous maximum of its Fourier
    interpolation c(d) = (1/N) Re Σ_k X_k exp(2πi k·d/L), X = F(ref)·conj(F(vol)) (exact for
    band-limited volumes, periodic), by BFGS with the analytic gradient.
    """
    X = np.fft.fftn(ref) * np.conj(np.fft.fftn(vol))
    cc = np.fft.ifftn(X).real
    L = np.array(cc.shape)
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape), dtype=np.float64)
    peak = np.where(peak > L / 2, peak - L, peak)
    k = [np.fft.fftfreq(n) * n for n in cc.shape]  # integer frequencies per axis (z, y, x)
    kz, ky, kx = np.meshgrid(*k, indexing="ij")
    kv = np.stack([kz / L[0], ky / L[1], kx / L[2]])  # cycles per voxel
    scale = 1.0 / X.size

    def fun(d):
        ph = X * np.exp(2j * np.pi * np.tensordot(d, kv, axes=1))
        val = scale * ph.real.sum()
        grad = -scale * 2 * np.pi * np.array([(ph * kv[a]).imag.sum() for a in range(3)])
        return -val, -grad

    res = optimize.minimize(fun, peak, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 50})
    d = res.x if np.all(np.abs(res.x - peak) <= 1.0) else peak  # stay at the peak found on the grid
    return d[::-1]  # (z, y, x) → (x, y, z)


def energy_centroid(vol: np.ndarray) -> np.ndarray:
    """|v|²-weighted centroid (x, y, z) in voxels from the centre voxel L//2."""
    w = np.asarray(vol, dtype=np.float64) ** 2
    c = np.arange(w.shape[0]) - w.shape[0] // 2
    tot = w.sum()
    return (
        np.array([(w.sum(axis=(0, 1)) * c).sum(), (w.sum(axis=(0, 2)) * c).sum(), (w.sum(axis=(1, 2)) * c).sum()]) / tot
    )


def _fourier_shift(vol: np.ndarray, t: np.ndarray) -> np.ndarray:
    """vol(p − t) for t = (x, y, z) by a Fourier phase ramp (periodic; exact for band-limited volumes)."""
    if not np.any(t):
        return vol
    return np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(vol), np.asarray(t)[::-1])).real


def relative_error(vol: np.ndarray, ref: np.ndarray) -> float:
    """‖vol − ref‖₂ / ‖ref‖₂ over voxels."""
    return float(np.linalg.norm(np.asarray(vol) - ref) / np.linalg.norm(ref))


def align(
    estimate: np.ndarray,
    reference: np.ndarray,
    *,
    reflections: bool = True,
    basis: SphericalBessel | None = None,
    ell_max: int | None = None,
    grid_step: float = 15.0,
    ell_search: int = 6,
    ell_refine: int | None = 12,
    refine: bool = True,
    n_candidates: int = 4,
    shift: bool = False,
    shift_iterations: int = 1,
    output: Literal["interpolate", "basis"] = "interpolate",
    est_coef: np.ndarray | None = None,
    ref_coef: np.ndarray | None = None,
) -> Alignment:
    """Rotate (and reflect, optionally shift) ``estimate`` (L, L, L) onto ``reference`` (L, L, L).

    ``basis`` defaults to ``SphericalBessel(L, ell_max)`` with ``ell_max`` defaulting to
    min(10, the basis limit for L): the search needs the low blocks only, and a volume
    is expanded (conjugate gradients to rtol 1e-4) only up to that degree. Pass
    ``est_coef``/``ref_coef`` (in ``basis``) when the coefficients are known.
    ``grid_step``, ``ell_search``, ``ell_refine``, ``n_candidates``, ``refine``: see
    :func:`align_coefficients`. ``shift``: also fit a translation (step 3 of the module
    docstring). ``output``: see the module docstring. See :class:`Alignment`
    for the result.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if estimate.ndim != 3 or estimate.shape != reference.shape or len(set(estimate.shape)) != 1:
        raise ValueError(f"align needs two cubic volumes of one shape, got {estimate.shape} and {reference.shape}")
    L = estimate.shape[0]
    if basis is None:
        from cryomtd.basis import SphericalBessel, default_ell_max

        basis = SphericalBessel(L, min(10, default_ell_max(L)) if ell_max is None else ell_max)
    ce = basis.expand(estimate, rtol=1e-4) if est_coef is None else np.asarray(est_coef, dtype=np.float64)
    cr = basis.expand(reference, rtol=1e-4) if ref_coef is None else np.asarray(ref_coef, dtype=np.float64)
    if output not in ("basis", "interpolate"):
        raise ValueError(f"output must be 'basis' or 'interpolate', got {output!r}")
    search = dict(
        grid_step=grid_step, ell_search=ell_search, ell_refine=ell_refine, refine=refine, n_candidates=n_candidates
    )
    t = np.zeros(3)
    if not shift:
        R, reflected, ccorr = align_coefficients(ce, cr, basis, reflections=reflections, **search)
    else:
        # Rotation about the energy centroids c (|v|²-weighted, equivariant under rotation and
        # translation): centre both, search, then t = c_ref − s R c_est.
        est_vol = np.asarray(basis.evaluate(ce)) if output == "basis" else estimate
        ref_vol = np.asarray(basis.evaluate(cr)) if ref_coef is not None else reference
        c_est, c_ref = energy_centroid(est_vol), energy_centroid(ref_vol)
        ce_c = basis.expand(_fourier_shift(est_vol, -c_est), rtol=1e-6)
        cr_c = basis.expand(_fourier_shift(ref_vol, -c_ref), rtol=1e-6)
        R, reflected, ccorr = align_coefficients(ce_c, cr_c, basis, reflections=reflections, **search)
        t = c_ref - (-1.0 if reflected else 1.0) * R @ c_est
    ce_s = reflect_coefficients(ce, basis) if reflected else ce

    def apply(R: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The estimate under (R, reflected, t): exact in the basis, or spline resampling."""
        if output == "interpolate":
            return transform_volume(estimate, R, reflected, t)
        return _fourier_shift(np.asarray(basis.evaluate(basis.rotate(ce_s, R)), dtype=np.float64), t)

    if shift:
        # Polish: translation of the current alignment (cross-correlation maximum), then a
        # rotation search of the translated estimate about the reference centre (a rotation Q
        # applied after (R, t) gives (Q R, Q t)).
        for _ in range(shift_iterations):
            t = t + _find_shift(apply(R, t), reference)
            Q, _, ccorr = align_coefficients(
                basis.expand(apply(R, t), rtol=1e-6), cr, basis, reflections=False, **search
            )
            R, t = Q @ R, Q @ t
        t = t + _find_shift(apply(R, t), reference)
    coef = basis.rotate(ce_s, R)
    vol = apply(R, t)
    corr = float(np.vdot(vol, reference) / (np.linalg.norm(vol) * np.linalg.norm(reference)))
    return Alignment(
        volume=vol,
        rotation=R,
        reflected=bool(reflected),
        correlation=corr,
        shift=t,
        coef_correlation=float(ccorr),
        coef=coef,
    )
