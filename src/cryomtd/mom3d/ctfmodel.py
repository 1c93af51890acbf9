"""The moment model with the microscope's CTF: expected autocorrelations of CTF-filtered projections.

A micrograph of the simulator (and, to the model's accuracy, a real one) is the sum of the
projections p_i filtered by the CTF kernel h (h ∗ p_i, real, even: CTF(−s) = CTF(s)). For
isolated filtered particles q = h ∗ p (the whole plane, no truncation) the box sums are
exact linear functionals of the clean ones:

    Σ_r q[r]                     = H(0) · Σ_r p[r]                      H(0) = CTF(0) = −A
    Σ_r q[r] q[r+ℓ]              = Σ_ℓ′ m2_p(ℓ′) g2(ℓ − ℓ′)             g2 = h ⋆ h  (ĝ2 = CTF²)
    Σ_r q[r] q[r+ℓ1] q[r+ℓ2]     = Σ_ℓ′ m3_p(ℓ1′, ℓ2′) G3(ℓ1 − ℓ1′, ℓ2 − ℓ2′)
                                   G3(u, v) = Σ_r h[r] h[r+u] h[r+v]   (Ĝ3 = H(f1) H(f2) H(f1+f2))

with m2_p, m3_p the clean box sums on their whole support (lags |ℓ′|∞ ≤ n−1, n the side of
the basis' projection support: the clean model at window n). A set of micrographs in CTF
groups g with pixel fractions w_g has the moments Σ_g w_g a(c; h_g) (every term above is
linear in the kernel, so the mixture is the model of the mixed kernels Σ_g w_g g2_g,
Σ_g w_g G3_g: one model, whatever the number of groups).

The kernels are those of the band-limited filter on the pixel lattice,
h[r] = ∫_{[−½,½]²} CTF(f/px) e^{2πi f·r} df (the limit of the simulator's periodic
micrograph-sized filter, whose kernel is the period-N sum of this one):

* g2 = the inverse DFT of CTF² on an odd ``fft_size``² grid (period ``fft_size``: its
  aliasing is the g2 tail beyond fft_size/2 − |ℓ|, below 10⁻⁶ relative at the defaults);
* G3 = Σ_r over the kernel h (itself from the same grid) truncated to |r|∞ ≤ ``radius``
  (default 2·delocalisation + 32 px); the neglected part is cubic in h's tail.

Measured (``benchmarks/mom3d_ctf.py kernel``, BPTI 11³ at 3.85 Å/px, 1 and 2.5 µm): doubling the
FFT grid changes a2 by 4·10⁻⁹ relative, a 4× larger radius changes a3 by 5–8·10⁻¹⁰ (from ≈ the
default) — the kernels are exact to far below any data's precision.

Both are symmetrised over the subgroup of D4 (the square's lag symmetries) that leaves every
group's CTF invariant — all of D4 for round CTFs, the 180° rotation (and two mirrors when the
astigmatism is along an axis) otherwise; the third-moment map is then stored on the orbits of
that subgroup (``lag_group``), and the fit's per-orbit residual follows it.

The models fold these kernels into the clean model's maps once (:class:`CtfInvariantModel`:
the filtered a2 map and third-moment invariant map at window W, so an evaluation costs what
the clean model's does; :class:`CtfQuadratureModel`: the filtered a2 map, and the clean third
moment at window n convolved with G3 by a 4-D FFT at each evaluation — the reference route).
Everything stays torch-differentiable (the kernels are constants).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryomtd.ctf import CTF, CtfGroupTable
from cryomtd.io import InputError, save_npy
from cryomtd.mom3d.invariants import D4_ALL, InvariantMomentModel, _d4_lag_maps, d4_orbits
from cryomtd.mom3d.model import MomentModel

__all__ = [
    "CtfMixture",
    "CtfKernels",
    "ctf_kernels",
    "ctf_lag_group",
    "CtfInvariantModel",
    "CtfQuadratureModel",
    "make_ctf_model",
    "filter_box_moments",
    "support_side",
]

log = logging.getLogger("cryomtd.mom3d")

#: Default FFT grid (odd, pixels per side) of the kernels h and g2.
FFT_SIZE = 2025  # 3⁴·5²: odd (a grid symmetric under negation) and FFT-friendly


@dataclass(frozen=True)
class CtfMixture:
    """CTF groups of a set of micrographs as the moment model sees them: ``ctfs`` (one per
    group), ``weights`` (fraction of the pixels in each group; normalised to sum 1) and the
    ``pixel_size`` (Å) of the micrographs. Hashable (the fit caches models by it)."""

    ctfs: tuple[CTF, ...]
    weights: tuple[float, ...]
    pixel_size: float

    def __post_init__(self) -> None:
        if len(self.ctfs) == 0 or len(self.ctfs) != len(self.weights):
            raise InputError(f"ctf groups: expected one weight per CTF, got {len(self.weights)} for {len(self.ctfs)}")
        w = np.asarray(self.weights, dtype=np.float64)
        if not (np.all(w >= 0) and w.sum() > 0 and np.all(np.isfinite(w))):
            raise InputError(f"ctf groups: weights must be ≥ 0 with a positive sum, got {list(self.weights)}")
        if not self.pixel_size > 0:
            raise InputError(f"ctf groups: pixel_size must be > 0 Å, got {self.pixel_size}")
        object.__setattr__(self, "weights", tuple(float(x) for x in w / w.sum()))
        object.__setattr__(self, "pixel_size", float(self.pixel_size))

    @classmethod
    def of(cls, ctf: Any, pixel_size: float | None = None) -> CtfMixture | None:
        """The mixture of ``ctf``: None (no CTF) → None; a :class:`CtfMixture`; a
        :class:`~cryomtd.ctf.CtfGroupTable` or the path of one (``ctf_groups.json``; an empty
        table → None; its pixel size unless ``pixel_size`` is given); one :class:`CTF`
        (``pixel_size`` required); or a sequence of (CTF, weight) pairs (``pixel_size`` required)."""
        if ctf is None or isinstance(ctf, CtfMixture):
            return ctf
        if isinstance(ctf, (str, os.PathLike)):
            ctf = CtfGroupTable.load(ctf)
        if isinstance(ctf, CtfGroupTable):
            if not ctf.modelled:
                return None
            return cls(
                tuple(g.ctf for g in ctf.groups),
                tuple(ctf.weights),
                float(ctf.pixel_size if pixel_size is None else pixel_size),
            )
        if pixel_size is None:
            raise InputError("ctf: a CTF needs the pixel size (pixel_size=, Å)")
        if isinstance(ctf, CTF):
            return cls((ctf,), (1.0,), float(pixel_size))
        pairs = list(ctf)
        return cls(tuple(c for c, _ in pairs), tuple(float(w) for _, w in pairs), float(pixel_size))

    @property
    def delocalisation(self) -> float:
        """Largest delocalisation of the groups' CTFs up to Nyquist (pixels)."""
        return max(c.delocalisation(self.pixel_size) for c in self.ctfs)

    def key(self) -> str:
        """A stable text form (cache keys)."""
        return json.dumps(
            {"ctfs": [c.to_dict() for c in self.ctfs], "weights": self.weights, "pixel": self.pixel_size},
            sort_keys=True,
        )


def ctf_lag_group(ctfs: Sequence[CTF], pixel_size: float) -> tuple[int, ...]:
    """The elements of D4 (indices into :func:`cryomtd.mom3d.invariants._d4_lag_maps`) that leave
    every CTF of ``ctfs`` invariant on the frequency plane (checked at 257 random frequencies
    inside the band, 10⁻¹² absolute): all 8 for round CTFs, (0, 4) for a general astigmatism."""
    rng = np.random.default_rng(7)
    f = rng.uniform(-0.5, 0.5, size=(257, 2)) / pixel_size  # (sy, sx)
    keep = []
    for i, g in enumerate(_d4_lag_maps()):
        gf = f @ g.T
        if all(np.abs(c.at(gf[:, 0], gf[:, 1]) - c.at(f[:, 0], f[:, 1])).max() < 1e-12 for c in ctfs):
            keep.append(i)
    return tuple(keep)


@dataclass(frozen=True)
class CtfKernels:
    """The filter's moments for one CTF: ``g1`` = H(0) (float), ``g2`` (2U2+1, 2U2+1) indexed
    [u + U2] (u = (uy, ux) pixels), ``g3`` (2U3+1,)*4 indexed [u + U3, v + U3] or None (not
    asked for), and the grid parameters they were computed with (``fft_size``, ``radius`` px)."""

    g1: float
    g2: np.ndarray
    g3: np.ndarray | None
    fft_size: int
    radius: int


def _symmetrise(a: np.ndarray, elements: tuple[int, ...]) -> np.ndarray:
    """Average of a lag array (2U+1,)*2 or (2U+1,)*4 over the D4 elements (acting on each lag)."""
    maps = _d4_lag_maps()
    out = np.zeros_like(a)
    U = (a.shape[0] - 1) // 2
    idx = np.arange(-U, U + 1)
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    for e in elements:
        g = maps[e]
        ty = g[0, 0] * yy + g[0, 1] * xx + U  # image of lag (y, x) under g
        tx = g[1, 0] * yy + g[1, 1] * xx + U
        if a.ndim == 2:
            out += a[ty, tx]
        else:
            out += a[ty[:, :, None, None], tx[:, :, None, None], ty[None, None], tx[None, None]]
    return out / len(elements)


@lru_cache(maxsize=32)
def _kernel_cached(
    ctf: CTF, pixel_size: float, U2: int, U3: int | None, fft_size: int, radius: int, elements: tuple[int, ...]
) -> CtfKernels:
    P = int(fft_size)
    import scipy.fft as sfft

    grid = ctf.on_grid((P, P), pixel_size, real=True)
    c = P // 2
    g2 = np.fft.fftshift(sfft.irfft2(grid * grid, s=(P, P), workers=-1))[c - U2 : c + U2 + 1, c - U2 : c + U2 + 1]
    g2 = _symmetrise(g2, elements)
    g3 = None
    if U3 is not None:
        h = np.fft.fftshift(sfft.irfft2(grid, s=(P, P), workers=-1))
        R = int(radius)
        hc = h[c - R : c + R + 1, c - R : c + R + 1]
        g3 = _triple_correlation(hc, U3)
        g3 = _symmetrise(g3, elements)
    return CtfKernels(float(ctf.at(0.0, 0.0)), g2, g3, P, int(radius))


def _triple_correlation(hc: np.ndarray, U: int, chunk: int = 64) -> np.ndarray:
    """G3(u, v) = Σ_r h[r] h[r+u] h[r+v] for |u|∞, |v|∞ ≤ U of a compact kernel ``hc`` (2R+1)²,
    as (2U+1,)*4: per u, the product h·h(·+u) correlated with h by one FFT (no wrap: the grid
    has a margin U on each side)."""
    import scipy.fft as sfft

    n = hc.shape[0]
    M = sfft.next_fast_len(n + 2 * U, real=True)  # ≥ n + 2U: no wrap
    X = np.zeros((M, M))
    X[U : U + n, U : U + n] = hc
    FX = sfft.rfft2(X)
    us = [(a, b) for a in range(-U, U + 1) for b in range(-U, U + 1)]
    out = np.empty((2 * U + 1,) * 4)
    for s0 in range(0, len(us), chunk):
        part = us[s0 : s0 + chunk]
        prod = np.stack([X * np.roll(X, (-a, -b), axis=(0, 1)) for a, b in part])  # prod[r] = h[r] h[r+u]
        corr = sfft.irfft2(np.conj(sfft.rfft2(prod, workers=-1)) * FX[None], s=(M, M), workers=-1)  # Σ_r prod[r] X[r+v]
        corr = np.roll(corr, (U, U), axis=(1, 2))[:, : 2 * U + 1, : 2 * U + 1]  # v = −U…U
        for (a, b), cv in zip(part, corr, strict=True):
            out[a + U, b + U] = cv
    return out


def default_radius(mixture: CtfMixture) -> int:
    """Truncation radius of h for G3 (pixels): 2 × the largest delocalisation + 32 (module docstring)."""
    return int(math.ceil(2 * mixture.delocalisation)) + 32


def ctf_kernels(
    mixture: CtfMixture,
    U2: int,
    U3: int | None,
    *,
    fft_size: int = FFT_SIZE,
    radius: int | None = None,
    elements: tuple[int, ...] | None = None,
) -> list[CtfKernels]:
    """The :class:`CtfKernels` of each group of ``mixture`` (lags |u|∞ ≤ U2 for g2, ≤ U3 for G3;
    U3 None: no G3), symmetrised over ``elements`` (default :func:`ctf_lag_group`)."""
    if fft_size % 2 == 0 or fft_size < 4 * max(U2, U3 or 0) + 1:
        raise ValueError(f"fft_size must be odd and ≥ 4·max(U2, U3) + 1, got {fft_size}")
    radius = default_radius(mixture) if radius is None else int(radius)
    radius = min(radius, fft_size // 2)
    elements = ctf_lag_group(mixture.ctfs, mixture.pixel_size) if elements is None else tuple(elements)
    return [
        _kernel_cached(c, mixture.pixel_size, int(U2), None if U3 is None else int(U3), int(fft_size), radius, elements)
        for c in mixture.ctfs
    ]


def support_side(basis: Any) -> int:
    """Side n of the square the clean model forms projections on (its support crop; L if none):
    the clean moments vanish beyond lag n − 1, so the clean model at window n holds all of them."""
    from cryomtd.mom3d.model import _support_crop

    L = int(basis.L)
    crop = _support_crop(np.asarray(basis.projection_matrix, dtype=np.float64), L)
    return L if crop is None else int(round(math.sqrt(crop.size)))


def _g2_matrix(g2: np.ndarray, W: int, n: int) -> torch.Tensor:
    """G (K_W², K_n²): m2_q[ℓ] = Σ_ℓ′ G[ℓ, ℓ′] m2_p[ℓ′], ℓ flat over window W, ℓ′ over window n."""
    U = (g2.shape[0] - 1) // 2
    lw = np.arange(-(W - 1), W)
    ln = np.arange(-(n - 1), n)
    dy = lw[:, None, None, None] - ln[None, None, :, None] + U
    dx = lw[None, :, None, None] - ln[None, None, None, :] + U
    G = g2[dy, dx]  # (K_W, K_W, K_n, K_n)
    return torch.from_numpy(np.ascontiguousarray(G.reshape(lw.size**2, ln.size**2)))


def _filtered_m2(inner: MomentModel, W: int, g2: np.ndarray) -> list[torch.Tensor]:
    """The a2 map of the filtered model per ℓ block (K_W², S, S) from the clean one at window n."""
    G = _g2_matrix(g2, W, inner.W)
    return [torch.einsum("kj,jst->kst", G, M) for M in inner._m2]


class _CtfBase:
    """What the two CTF models share: the clean inner model at window n (the whole support), the
    filtered a1 row and a2 map, and the attributes the fit reads (module docstring)."""

    def _setup(
        self,
        basis: Any,
        window: int,
        mixture: CtfMixture,
        inner: MomentModel,
        *,
        third: bool,
        fft_size: int,
        radius: int | None,
    ) -> None:
        self.basis, self.clean, self.ctf = basis, inner, mixture
        self.L, self.W, self.size = int(basis.L), int(window), int(basis.size)
        if self.W < 1:
            raise ValueError(f"window must be ≥ 1, got {window}")
        self.ell_max, self.blocks, self.dtype = inner.ell_max, inner.blocks, inner.dtype
        self.n = inner.n
        self.quadrature = inner.quadrature
        self.lag_group = ctf_lag_group(mixture.ctfs, mixture.pixel_size)
        n = inner.W
        self.U2, self.U3 = self.W - 1 + n - 1, self.W - 1 + n - 1
        self.fft_size = int(fft_size)
        self.radius = default_radius(mixture) if radius is None else int(radius)  # one radius for every group
        t0 = time.perf_counter()
        kernels = ctf_kernels(
            mixture, self.U2, self.U3 if third else None, fft_size=fft_size, radius=self.radius, elements=self.lag_group
        )
        self.kernels = kernels
        w = mixture.weights
        self.g1 = float(sum(wg * k.g1 for wg, k in zip(w, kernels, strict=True)))
        g2 = sum(wg * k.g2 for wg, k in zip(w, kernels, strict=True))
        self.a1_row = self.g1 * inner.a1_row
        self._m2 = _filtered_m2(inner, self.W, g2)
        log.info(
            "CTF model: %d group(s), delocalisation ≤ %.1f px, kernels (radius %s px, FFT %d) in %.1f s",
            len(kernels),
            mixture.delocalisation,
            kernels[0].radius,
            fft_size,
            time.perf_counter() - t0,
        )


class CtfQuadratureModel(_CtfBase, MomentModel):
    """The CTF model with the third moment by quadrature: the clean Gram products at window n
    (:class:`MomentModel`), then a 4-D FFT convolution with the mixed G3 (the reference route;
    an evaluation costs the clean model's at window n plus one FFT of size (2U3+1)⁴)."""

    kind = "quadrature"

    def __init__(
        self,
        basis: Any,
        window: int,
        ctf: CtfMixture,
        *,
        fft_size: int = FFT_SIZE,
        radius: int | None = None,
        **kwargs: Any,
    ) -> None:
        clean = MomentModel(basis, support_side(basis), **kwargs)
        self._setup(basis, window, ctf, clean, third=False, fft_size=fft_size, radius=radius)
        self._g3_hat: torch.Tensor | None = None

    def _kernel_hat(self) -> torch.Tensor:
        if self._g3_hat is None:  # G3 only when a third moment is asked for (the wide a2 model never does)
            ks = ctf_kernels(
                self.ctf, self.U2, self.U3, fft_size=self.fft_size, radius=self.radius, elements=self.lag_group
            )
            g3 = sum(wg * k.g3 for wg, k in zip(self.ctf.weights, ks, strict=True))
            self._g3_hat = torch.fft.rfftn(torch.from_numpy(np.ascontiguousarray(g3)))
        return self._g3_hat

    def third_box(self, coef: torch.Tensor) -> torch.Tensor:
        """Σ_ℓ′ m3_p(ℓ′) G3(ℓ − ℓ′) on the window-W lags, dense (K,)*4 (:func:`_convolve_a3`)."""
        return _convolve_a3(self.clean.third_box(coef), self._kernel_hat(), self.clean.W, self.W)


class CtfInvariantModel(_CtfBase, InvariantMomentModel):
    """The CTF model with the third moment through a folded invariant map: the clean map at
    window n (:class:`InvariantMomentModel`, cached in ``cache_dir`` as usual) folded with each
    group's G3 into a map on the ``lag_group`` orbits of window W (cached per group), then mixed
    by the weights. An evaluation costs what the clean model's does at window W."""

    kind = "invariants"

    def __init__(
        self,
        basis: Any,
        window: int,
        ctf: CtfMixture,
        *,
        cache_dir: str | os.PathLike | None = None,
        fft_size: int = FFT_SIZE,
        radius: int | None = None,
        max_chunk_elements: int = 2**24,
        **kwargs: Any,
    ) -> None:
        if cache_dir is None:
            cache_dir = os.environ.get("CRYOMTD_CACHE_DIR") or None
        clean = InvariantMomentModel(
            basis, support_side(basis), cache_dir=cache_dir, max_chunk_elements=max_chunk_elements, **kwargs
        )
        self._setup(basis, window, ctf, clean, third=False, fft_size=fft_size, radius=radius)
        self.triples, self.tensors = clean.triples, clean.tensors
        self.invariant_sizes, self.n_invariants = clean.invariant_sizes, clean.n_invariants
        self.psi, self.rows = clean.psi, clean.rows
        from cryomtd.moments.lags import a3_index_map

        orbit_lags, class_to_orbit, _ = d4_orbits(self.W, self.lag_group)
        self.dense_to_orbit = torch.as_tensor(class_to_orbit[a3_index_map(self.W).astype(np.int64).ravel()])
        t0 = time.perf_counter()
        maps = [self._group_map(c, orbit_lags, cache_dir) for c in ctf.ctfs]
        self.map3t = sum(w * m for w, m in zip(ctf.weights, maps, strict=True)).contiguous()
        log.info(
            "CTF invariant map: %d orbits x %d invariants (%d group(s)) in %.1f s",
            self.map3t.shape[1],
            self.n_invariants,
            len(maps),
            time.perf_counter() - t0,
        )

    def _group_map(self, ctf: CTF, orbit_lags: np.ndarray, cache_dir: Any) -> torch.Tensor:
        """The folded map (n_invariants, n_orb) of one group's CTF (cached in ``cache_dir``)."""
        inner = self.clean
        path = None
        if cache_dir is not None:
            h = hashlib.sha256(
                f"ctf-v1 W={self.W} n={inner.W} group={self.lag_group} P={self.fft_size} R={self.radius} "
                f"px={self.ctf.pixel_size} {json.dumps(ctf.to_dict(), sort_keys=True)}".encode()
            )
            for a in [inner.psi, *inner.tensors]:
                h.update(a.numpy().tobytes())
            path = Path(cache_dir) / f"ctf_invariant_map_L{self.L}_l{self.ell_max}_W{self.W}_{h.hexdigest()[:16]}.npy"
            if path.exists():
                m = torch.from_numpy(np.load(path))
                if m.shape == (self.n_invariants, orbit_lags.shape[0]):
                    return m
                raise ValueError(f"{path}: cached CTF map has shape {tuple(m.shape)}; delete the file")
        mix = CtfMixture((ctf,), (1.0,), self.ctf.pixel_size)
        (k,) = ctf_kernels(mix, self.U2, self.U3, fft_size=self.fft_size, radius=self.radius, elements=self.lag_group)
        m = inner.map3t @ _fold_matrix(k.g3, orbit_lags, inner).T  # (n_inv, n_orb)
        if path is not None:
            save_npy(path, m.numpy())
        return m


def _fold_matrix(g3: np.ndarray, orbit_lags: np.ndarray, clean: Any, chunk: int = 64) -> torch.Tensor:
    """F (n_orb_W, n_orb_n): m3_q[orbit o of window W] = Σ_o′ F[o, o′] m3_p[orbit o′ of window n]
    with F[o, o′] = Σ_{ℓ′ ∈ o′} G3(ℓ_o − ℓ′) over the dense lags ℓ′ of the clean window n.

    With G3 flipped on all four axes, ℓ′ ↦ G3(ℓ_o − ℓ′) over the dense box is one 4-D slice
    (starting at U − (n−1) − ℓ_o), read by one flat ``take`` per chunk of orbits, then added
    onto the clean orbits by one ``index_add_``."""
    n = clean.W
    Kn = 2 * n - 1
    S = g3.shape[0]
    U = (S - 1) // 2
    flat = np.ascontiguousarray(g3[::-1, ::-1, ::-1, ::-1]).reshape(-1)
    strides = np.array([S**3, S**2, S, 1], dtype=np.int64)
    ln = np.arange(Kn, dtype=np.int64)
    box = np.stack(np.meshgrid(ln, ln, ln, ln, indexing="ij"), axis=-1).reshape(-1, 4) @ strides  # dense order
    start = (U - (n - 1) - orbit_lags.astype(np.int64)) @ strides
    d2o = clean.dense_to_orbit
    assert d2o.numel() == Kn**4
    out = torch.zeros(start.size, int(clean.map3t.shape[1]), dtype=torch.float64)
    for s0 in range(0, start.size, chunk):
        vals = torch.from_numpy(np.take(flat, start[s0 : s0 + chunk, None] + box[None, :]))  # G3(ℓ_o − ℓ′)
        out[s0 : s0 + chunk].index_add_(1, d2o, vals)
    return out


def filter_box_moments(
    m1: float, m2: np.ndarray, m3: np.ndarray | None, kernels: CtfKernels | Sequence[tuple[CtfKernels, float]], W: int
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Box sums of CTF-filtered particles from the clean ones on their whole support.

    ``m1`` Σ p; ``m2`` (2n−1, 2n−1) Σ p p(+ℓ′) and ``m3`` (2n−1,)*4 (or None) for lags |ℓ′|∞ ≤ n−1
    (every nonzero lag of particles of side ≤ n); ``kernels`` one :class:`CtfKernels` or
    (kernels, weight) pairs (a mixture; g2 with U2 ≥ W+n−2, g3 with U3 = W+n−2). Returns
    (H(0)·m1, m2 ⋆ g2, m3 ⋆ G3) on the lags |ℓ|∞ ≤ W−1 (module docstring; float64 numpy).
    """
    pairs = [(kernels, 1.0)] if isinstance(kernels, CtfKernels) else list(kernels)
    n = (np.asarray(m2).shape[0] + 1) // 2
    K = 2 * W - 1
    g1 = sum(w * k.g1 for k, w in pairs)
    g2 = sum(w * k.g2 for k, w in pairs)
    G = _g2_matrix(g2, W, n).numpy()
    out2 = (G @ np.asarray(m2, dtype=np.float64).reshape(-1)).reshape(K, K)
    out3 = None
    if m3 is not None:
        g3 = sum(w * k.g3 for k, w in pairs)
        out3 = _convolve_a3(
            torch.as_tensor(np.asarray(m3, dtype=np.float64)), torch.fft.rfftn(torch.from_numpy(g3)), n, W
        )
        out3 = out3.numpy()
    return float(g1 * m1), out2, out3


def _convolve_a3(m3: torch.Tensor, g3_hat: torch.Tensor, n: int, W: int) -> torch.Tensor:
    """Σ_ℓ′ m3(ℓ′) G3(ℓ − ℓ′) for |ℓ|∞ ≤ W−1 from m3 (2n−1,)*4 and the rfftn of G3 (2U+1,)*4,
    U = W+n−2: a circular FFT of size 2U+1 = (2n−1) + (2W−1) − 1, where no wrap reaches the
    kept lags (the linear index of lag ℓ is ℓ + n − 1 + U)."""
    N = 2 * (W + n - 2) + 1
    full = torch.fft.irfftn(torch.fft.rfftn(m3, s=(N,) * 4) * g3_hat, s=(N,) * 4)
    o = n - 1 + (W + n - 2) - (W - 1)
    K = 2 * W - 1
    return full[o : o + K, o : o + K, o : o + K, o : o + K]


def make_ctf_model(
    basis: Any, W: int, ctf: CtfMixture, kind: str = "invariants", cache_dir: str | None = None
) -> MomentModel:
    """The CTF model of ``kind`` ("invariants" or "quadrature") for the mixture ``ctf``."""
    if kind == "invariants":
        return CtfInvariantModel(basis, W, ctf, cache_dir=cache_dir)
    if kind == "quadrature":
        return CtfQuadratureModel(basis, W, ctf)
    raise ValueError(f"lsq.model must be one of ('invariants', 'quadrature'), got {kind!r}")


_ = D4_ALL  # re-exported lag-group constant of the clean model
