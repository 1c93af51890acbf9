"""Benchmark of the spherical-Bessel basis and rotations.

For each (L, ell_max), measured in one process:

* construction: ``SphericalBessel(L, ell_max)`` (Bessel zeros), the voxel tables
  (first ``evaluate``), Ψ (first ``projection_matrix``) — each from a cold cache;
* ``evaluate`` and ``expand`` (conjugate gradients) times, and the expand round-trip error;
* ``wigner`` for ``--rotations`` rotations (Ivanic–Ruedenberg recursion) vs the plain
  reference D^ℓ = Σ_j w_j Y_ℓ(u_j) Y_ℓ(Rᵀu_j)ᵀ (exact sphere quadrature, a dense fit) on
  the same rotations: ratio and max difference;
* ``project`` for ``--rotations`` rotations vs the plain reference: rotate the voxel
  volume with ``scipy.ndimage.map_coordinates`` (cubic splines) and sum along z, one
  rotation at a time (timed on ``--reference-rotations`` and extrapolated): ratio and the
  relative difference of the images (interpolation error of the reference included), and
  the relative error against the analytic projections of the test volume (Gaussian blobs).

Printed as a table and written as JSON (``--out``).

    OMP_NUM_THREADS=1 python benchmarks/basis.py --sizes 11:None 20:5 20:10 32:5 --rotations 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from scipy.ndimage import map_coordinates

from cryomtd import rotations
from cryomtd.basis import SphericalBessel, real_sph_harm_blocks
from cryomtd.basis import spherical_bessel as sb


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def reference_wigner(ell_max: int, R: np.ndarray, max_values: int = 10_000_000) -> list[np.ndarray]:
    """Plain definition: Gauss–Legendre × uniform sphere rule exact to degree 2ℓmax (chunks of rotations
    so that at most ``max_values`` harmonic values are held at once)."""
    x, w = np.polynomial.legendre.leggauss(ell_max + 1)
    nphi = 2 * ell_max + 1
    phi = np.arange(nphi) * 2 * np.pi / nphi
    st = np.sqrt(1 - x * x)
    u = np.stack([np.outer(st, np.cos(phi)), np.outer(st, np.sin(phi)), np.repeat(x[:, None], nphi, 1)], -1).reshape(
        -1, 3
    )
    wu = np.repeat(w * 2 * np.pi / nphi, nphi)
    Y = list(real_sph_harm_blocks(ell_max, u))
    step = max(1, max_values // (u.shape[0] * (ell_max + 1) ** 2))
    out = [np.empty((R.shape[0], 2 * l + 1, 2 * l + 1)) for l in range(ell_max + 1)]
    for a in range(0, R.shape[0], step):
        Yrot = real_sph_harm_blocks(ell_max, np.einsum("nji,pj->npi", R[a : a + step], u))
        for l, (Yl, Yr) in enumerate(zip(Y, Yrot)):
            out[l][a : a + step] = np.einsum("p,pm,npk->nmk", wu, Yl, Yr)
    return out


def reference_projection(vol: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Σ_z v(Rᵀp) with cubic-spline interpolation of the voxel volume."""
    L = vol.shape[0]
    ax = np.arange(L) - L // 2
    Z, Y, X = np.meshgrid(ax, ax, ax, indexing="ij")
    p = np.stack([X, Y, Z], -1).reshape(-1, 3).astype(float)
    coords = (p @ R)[:, ::-1].T + L // 2
    return map_coordinates(vol, coords, order=3, mode="constant").reshape(vol.shape).sum(axis=0)


def bench(L: int, ell_max: int | None, n_rot: int, n_ref: int, seed: int = 0) -> dict:
    sb._zeros_for.cache_clear()
    sb._voxel_tables.cache_clear()
    sb._projection_matrix.cache_clear()
    sb.default_ell_max.cache_clear()
    b, t_init = timed(lambda: SphericalBessel(L, ell_max))
    rng = np.random.default_rng(seed)
    # a smooth random volume: 6 Gaussian blobs (σ 1.3–1.8 voxels) within L/5 of the centre
    u = rng.standard_normal((6, 3))
    centres = u / np.linalg.norm(u, axis=1, keepdims=True) * rng.uniform(0, L / 5, (6, 1))
    sig, amp = rng.uniform(1.3, 1.8, 6), rng.uniform(0.5, 1.5, 6)
    ax = np.arange(L) - L // 2
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij")[::-1], -1).astype(float)  # (x, y, z) at [z, y, x]
    blobs = sum(a * np.exp(-((grid - c) ** 2).sum(-1) / (2 * s * s)) for c, s, a in zip(centres, sig, amp))
    coef = b.expand(blobs)
    sb._voxel_tables.cache_clear()
    vol, t_tables = timed(lambda: b.evaluate(coef))
    _, t_eval = timed(lambda: b.evaluate(coef))
    back, t_expand = timed(lambda: b.expand(vol))
    _, t_psi = timed(lambda: b.projection_matrix)
    R = rotations.random(n_rot, seed)
    D, t_wig = timed(lambda: b.wigner(R))
    k = max(2, min(n_rot, 200, 200_000_000 // ((b.ell_max + 1) ** 4 * 2)))  # bound the reference's time
    Dref, t_wig_ref = timed(lambda: reference_wigner(b.ell_max, R[:k]))
    wig_diff = max(float(np.abs(a[:k] - c).max()) for a, c in zip(D, Dref))
    images, t_proj = timed(lambda: b.project(coef, R))
    refs, t_ref = timed(lambda: np.stack([reference_projection(vol, R[i]) for i in range(n_ref)]))
    proj_diff = float(np.linalg.norm(images[:n_ref] - refs) / np.linalg.norm(refs))
    Yi, Xi = np.meshgrid(ax, ax, indexing="ij")
    analytic = np.stack(
        [
            sum(
                a
                * np.sqrt(2 * np.pi)
                * s
                * np.exp(-((Xi - (R[i] @ c)[0]) ** 2 + (Yi - (R[i] @ c)[1]) ** 2) / (2 * s * s))
                for c, s, a in zip(centres, sig, amp)
            )
            for i in range(n_ref)
        ]
    )
    analytic_diff = float(np.linalg.norm(images[:n_ref] - analytic) / np.linalg.norm(analytic))
    expand_err = float(np.linalg.norm(vol - blobs) / np.linalg.norm(blobs))
    t_ref_all = t_ref / n_ref * n_rot
    return {
        "L": L,
        "ell_max": b.ell_max,
        "size": b.size,
        "construct_s": t_init,
        "voxel_tables_s": t_tables,
        "projection_matrix_s": t_psi,
        "evaluate_s": t_eval,
        "expand_s": t_expand,
        "expand_roundtrip_max_err": float(np.abs(back - coef).max()),
        "rotations": n_rot,
        "wigner_s": t_wig,
        "wigner_reference_s_extrapolated": t_wig_ref / k * n_rot,
        "wigner_speedup": t_wig_ref / k * n_rot / t_wig,
        "wigner_max_diff": wig_diff,
        "project_s": t_proj,
        "project_per_image_us": 1e6 * t_proj / n_rot,
        "project_reference_s_extrapolated": t_ref_all,
        "project_speedup": t_ref_all / t_proj,
        "project_vs_realspace_rel_diff": proj_diff,
        "project_vs_analytic_rel_err": analytic_diff,
        "blobs_expansion_rel_err": expand_err,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=["11:None", "20:5", "20:10", "32:5"],
        help="L:ell_max pairs (ell_max None = sampling criterion)",
    )
    ap.add_argument("--rotations", type=int, default=2000)
    ap.add_argument("--reference-rotations", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for item in args.sizes:
        L, lm = item.split(":")
        rows.append(bench(int(L), None if lm == "None" else int(lm), args.rotations, args.reference_rotations))
        r = rows[-1]
        print(
            f"L={r['L']:3d} ell_max={r['ell_max']:3d} size={r['size']:5d} | construct {r['construct_s']:.3f}s "
            f"tables {r['voxel_tables_s']:.3f}s Psi {r['projection_matrix_s']:.3f}s | evaluate {r['evaluate_s']:.4f}s "
            f"expand {r['expand_s']:.3f}s (err {r['expand_roundtrip_max_err']:.1e}) | wigner {r['wigner_s']:.3f}s "
            f"(x{r['wigner_speedup']:.0f} vs quadrature fit, diff {r['wigner_max_diff']:.1e}) | project "
            f"{r['project_per_image_us']:.0f} us/image (x{r['project_speedup']:.0f} vs map_coordinates+sum, "
            f"rel diff {r['project_vs_realspace_rel_diff']:.1e}; vs analytic {r['project_vs_analytic_rel_err']:.1e}, "
            f"expansion error {r['blobs_expansion_rel_err']:.1e})",
            flush=True,
        )
    meta = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
    }
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"meta": meta, "results": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
