"""Benchmark: micrograph simulation (cryomtd.simulate) against a plain per-particle loop.

    python benchmarks/simulate.py                      # 4096², γ = 0.4 nonoverlapping, L = 11
    python benchmarks/simulate.py --size 1024 --ref-size 512

Part 1 times the full micrograph of ``--size`` (placement, projection through the
spherical-Bessel basis, pasting, noise) stage by stage. Part 2 runs the plain reference —
random sequential placement by rejection against every accepted particle, one
``basis.project`` call (full Wigner matrices) and one slice-add per particle — and the vectorised code on the same
``--ref-size`` micrograph in this process, and prints the ratio (the reference is
quadratic in the particle count, so it is run on a smaller micrograph).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cryomtd import rotations
from cryomtd import simulate as S
from cryomtd.basis import SphericalBessel
from cryomtd.volume import gaussian_blobs


def reference_micrograph(coef, basis, size, gamma, snr_sigma, distance, g):
    """Plain implementation: rejection placement against all accepted particles, per-particle projection and paste."""
    L = basis.L
    n = int(round(gamma * size * size / (L * L)))
    centres: list[tuple[int, int]] = []
    tries = 0
    while len(centres) < n:
        tries += 1
        if tries > 200 * n + 10000:
            raise RuntimeError("reference placement did not reach the target")
        ty, tx = (int(v) for v in g.integers(0, size - L + 1, size=2))
        if all(max(abs(ty - a), abs(tx - b)) >= distance for a, b in centres):
            centres.append((ty, tx))
    image = np.zeros((size, size))
    for ty, tx in centres:
        R = rotations.random(1, g)[0]
        image[ty : ty + L, tx : tx + L] += basis.project(coef, R)
    return image + snr_sigma * g.standard_normal((size, size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--ref-size", type=int, default=512)
    ap.add_argument("--L", type=int, default=11)
    ap.add_argument("--ell-max", type=int, default=None)
    ap.add_argument("--gamma", type=float, default=0.4)
    ap.add_argument("--spacing", default="nonoverlapping")
    args = ap.parse_args()

    L = args.L
    basis = SphericalBessel(L, args.ell_max)
    coef = basis.expand(gaussian_blobs(L, 8, 0))
    _ = basis.projection_matrix  # build the cached Ψ outside the timings
    d = S.min_distance(args.spacing, L)
    print(
        f"L = {L}, ell_max = {basis.ell_max} ({basis.size} coefficients), γ = {args.gamma}, "
        f"spacing {args.spacing} (d = {d})"
    )

    # Part 1: the full micrograph, stage by stage
    g = np.random.default_rng(0)
    n = int(round(args.gamma * args.size**2 / L**2))
    t0 = time.perf_counter()
    corners = S.place_particles(args.size, L, n, d, g)
    t1 = time.perf_counter()
    R = rotations.random(n, g)
    project = S.EulerProjector(basis, coef)
    images = np.concatenate([project(R[a : a + 4096]) for a in range(0, n, 4096)])
    t2 = time.perf_counter()
    clean = S.paste(args.size, corners, images)
    t3 = time.perf_counter()
    energy = S.basis_signal_energy(basis, coef)
    _ = clean + np.sqrt(energy / (L * L)) * g.standard_normal(clean.shape)
    t4 = time.perf_counter()
    print(
        f"{args.size}²: {n} particles; placement {t1 - t0:.2f} s, projection {t2 - t1:.2f} s, "
        f"paste {t3 - t2:.2f} s, energy + noise {t4 - t3:.2f} s; total {t4 - t0:.2f} s"
    )
    t5, c5 = time.perf_counter(), time.process_time()
    m = S.micrograph(coef, args.size, gamma=args.gamma, snr=1.0, seed=1, spacing=args.spacing, basis=basis)
    t6, c6 = time.perf_counter(), time.process_time()
    print(
        f"simulate.micrograph({args.size}²) end to end: {t6 - t5:.2f} s wall, {c6 - c5:.2f} s CPU "
        f"({len(m.particles)} particles)"
    )

    # Part 2: ratio to the plain per-particle reference on the same (smaller) micrograph
    size = args.ref_size
    sigma = np.sqrt(energy / (L * L))
    t7 = time.perf_counter()
    reference_micrograph(coef, basis, size, args.gamma, sigma, d, np.random.default_rng(2))
    t8 = time.perf_counter()
    S.micrograph(coef, size, gamma=args.gamma, snr=1.0, seed=2, spacing=args.spacing, basis=basis, energy=energy)
    t9 = time.perf_counter()
    print(f"{size}²: reference loop {t8 - t7:.2f} s, vectorised {t9 - t8:.2f} s, ratio {(t8 - t7) / (t9 - t8):.1f}×")


if __name__ == "__main__":
    main()
