"""Throughput of the streamed 1-D moments (samples/s) against a plain per-lag numpy reference.

Both run in this process on the same data: the reference computes every non-redundant lag
(ℓ1 ≤ ℓ2) with one vectorised numpy expression per lag (a sliced product and a sum), the
way one writes it first; cryomtd accumulates all lags at once with GEMMs over blocks of
windows (cryomtd.mtd1d.moments), in float64 (default) and with float32 block products.
Also reports simulate + moments, the work of one ``mtd1d_segment`` job. Run::

    OMP_NUM_THREADS=1 python benchmarks/mtd1d_moments.py --n 4000000 --L 21
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cryomtd.mtd1d import Placement, autocorrelations, make_signal, simulate_chunks
from cryomtd.mtd1d.moments import MomentAccumulator


def per_lag_reference(y: np.ndarray, L: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Plain numpy: one expression per lag, y zero outside (sums, not normalised)."""
    n = y.size
    yp = np.concatenate([y, np.zeros(L)])
    s1 = y.sum()
    s2 = np.array([np.dot(y, yp[l : l + n]) for l in range(L)])
    s3 = np.zeros((L, L))
    for l1 in range(L):
        for l2 in range(l1, L):
            s3[l1, l2] = s3[l2, l1] = np.sum(y * yp[l1 : l1 + n] * yp[l2 : l2 + n])
    return s1, s2, s3


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4_000_000, help="samples")
    ap.add_argument("--L", type=int, default=21)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n, L = args.n, args.L
    y = np.random.default_rng(0).standard_normal(n)

    t_ref = best_of(lambda: per_lag_reference(y, L), args.repeats)
    t_new = best_of(lambda: autocorrelations(y, L), args.repeats)
    t_f32 = best_of(lambda: autocorrelations(y, L, dtype="float32"), args.repeats)
    s1, s2, s3 = per_lag_reference(y, L)
    m = autocorrelations(y, L)
    err = float(np.max(np.abs(m.s3 - s3)) / np.max(np.abs(s3)))
    err32 = float(np.max(np.abs(autocorrelations(y, L, dtype="float32").s3 - s3)) / np.max(np.abs(s3)))

    x = make_signal("step", L)

    def segment():
        acc = MomentAccumulator(L)
        for chunk, _ in simulate_chunks(x, n, Placement(0.05, L - 1), 3.0, 0, 0):
            acc.update(chunk)
        return acc.result()

    t_seg = best_of(segment, args.repeats)
    out = {
        "n": n,
        "L": L,
        "reference_samples_per_s": n / t_ref,
        "cryomtd_samples_per_s": n / t_new,
        "speedup": t_ref / t_new,
        "cryomtd_float32_samples_per_s": n / t_f32,
        "speedup_float32": t_ref / t_f32,
        "max_rel_diff_a3_float32": err32,
        "segment_simulate_plus_moments_samples_per_s": n / t_seg,
        "max_rel_diff_a3": err,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
