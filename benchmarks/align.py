"""Benchmark of 3-D alignment: time to align a hidden rotation at 21³ and 32³.

For each box size L, in one process:

* a smooth chiral volume (Gaussian blobs), rotated and optionally point-reflected by a
  Haar-random hidden map (cubic-spline resampling);
* ``cryomtd.evaluate.align`` end to end (expansion of both volumes, grid search with cold
  Wigner cache, refinement, final resampling): wall time, rotation error (degrees),
  relative error after alignment;
* the plain reference: the same coarse search done in real space — resample the estimate at
  every grid rotation (``scipy.ndimage.affine_transform``, cubic) and correlate with the
  reference — timed on ``--reference-rotations`` grid rotations and extrapolated to the full
  grid (×2 for the reflection), so the ratio is reference time / ours.

ASPIRE's ``align_BO`` (Bayesian optimisation, GPL-3.0) was not rerun here: it is not a
dependency and was not installed (a 739 MB venv); the published figure on this kind of
machine is 17.6 s at 32³ with 50 iterations.

    OMP_NUM_THREADS=2 python benchmarks/align.py --sizes 21 32 --out /tmp/align_bench.json
    OMP_NUM_THREADS=2 python benchmarks/align.py --sizes 21 32 --reflected --shift
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from cryomtd import rotations
from cryomtd.evaluate import align, transform_volume
from cryomtd.seeding import rng


def smooth_volume(L: int, seed: int = 0, n_blobs: int = 8) -> np.ndarray:
    g = rng(seed, "bench-align")
    c = np.arange(L) - L // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((L, L, L))
    sigma = 0.08 * L
    for _ in range(n_blobs):
        d = g.standard_normal(3)
        px, py, pz = d / np.linalg.norm(d) * g.uniform(0.2, 1.0) * L / 3
        vol += g.uniform(0.5, 1.5) * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * sigma**2))
    return vol


def angle_deg(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(A @ B.T) - 1) / 2, -1, 1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[21, 32])
    ap.add_argument("--grid-step", type=float, default=15.0)
    ap.add_argument("--reference-rotations", type=int, default=100)
    ap.add_argument("--reflected", action="store_true", help="hide a point reflection too")
    ap.add_argument("--shift", action="store_true", help="hide a translation (1.3, -0.6, 0.4) voxels too and fit it")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from cryomtd.evaluate.align import _grid_wigner

    results = []
    for L in args.sizes:
        _grid_wigner.cache_clear()  # cold: the grid's Wigner blocks are part of the cost
        truth = smooth_volume(L)
        R = rotations.random(1, L)[0]
        hidden = transform_volume(truth, R, args.reflected, np.array([1.3, -0.6, 0.4]) if args.shift else None)
        t0 = time.perf_counter()
        al = align(hidden, truth, grid_step=args.grid_step, shift=args.shift)
        t_ours = time.perf_counter() - t0
        grid = rotations.grid(args.grid_step)
        sub = grid[:: max(1, len(grid) // args.reference_rotations)][: args.reference_rotations]
        t0 = time.perf_counter()
        for Q in sub:
            np.vdot(transform_volume(hidden, Q), truth)
        t_sub = time.perf_counter() - t0
        t_ref = t_sub / len(sub) * len(grid) * 2
        row = {
            "L": L,
            "grid_rotations": len(grid),
            "align_s": t_ours,
            "reference_search_s": t_ref,
            "ratio": t_ref / t_ours,
            "rotation_error_deg": angle_deg(al.rotation, R.T),
            "reflected_found": al.reflected,
            "relative_error": float(np.linalg.norm(al.volume - truth) / np.linalg.norm(truth)),
            "reference_rotations_timed": len(sub),
        }
        results.append(row)
        print(
            f"L={L:3d}: align {t_ours:6.1f} s | real-space grid search {t_ref:8.1f} s (extrapolated from "
            f"{len(sub)} of {2 * len(grid)}) | ratio {t_ref / t_ours:6.1f} | rotation error "
            f"{row['rotation_error_deg']:.3f}° | relative error {row['relative_error']:.4f}",
            flush=True,
        )
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "grid_step": args.grid_step,
        "aspire_align_BO_32": "17.6 s at 32³, 50 iterations (published on this machine type; not rerun)",
    }
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
