"""Benchmark of the 2-D autocorrelation engine.

For each window W, each available backend and each engine method (``--methods``;
default: the backend's default, ``rows`` on CPU, ``gather`` on a GPU): megapixels/s of
``autocorrelations_2d`` on a SIZE² float64 micrograph, the achieved GFLOP/s
(2 × multiply-adds of the Gram blocks actually formed) as a fraction of the
matrix-multiply peak measured in the same run (a large matmul on the same
backend), and the speed-up over a naive numpy reference: a Python loop over the
non-redundant shift pairs, each one vectorised product-sum over the image.
The naive loop is timed on ``--naive-pairs`` pairs spread over the whole list and
extrapolated to all K3 pairs (it is linear in the pair count; the full loop at
W = 11 on 2048² would take hours); its values are checked against the engine.

    python benchmarks/moments2d.py --size 2048 --windows 6 11 --out bench.json
    python benchmarks/moments2d.py --windows 6 --backends numpy --methods rows gather --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from cryomtd.moments import a3_nonredundant_lags, autocorrelations_2d, available_backends, resolve_backend
from cryomtd.moments.autocorr2d import _row_plan, default_band_pixels, default_chunk, default_method
from cryomtd.moments.lags import gram_layout


def gram_macs(W: int, chunk: int, method: str = "gather") -> int:
    """Multiply-adds per base pixel of the Gram blocks the engine forms and of the a2 sums.

    ``rows``: the three products of ``_row_plan`` (lower × upper half-plane with the s2 row,
    two wide rectangles); ``gather``: the H rows from the diagonal on in ``chunk``-row
    products, plus L×R (see cryomtd.moments.lags), plus the a2 product."""
    if method == "rows":
        return sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in _row_plan(W).products)
    g = gram_layout(W)
    D2 = (2 * W - 1) ** 2
    h = sum((min(g.n_h, a + chunk) - a) * (D2 - a) for a in range(0, g.n_h, chunk))
    return h + (g.l_range[1] - g.l_range[0]) * (g.r_range[1] - g.r_range[0]) + D2


def matmul_peak(backend: str, dtype: str = "float64", n: int = 2048, repeat: int = 3) -> float:
    """GFLOP/s of an n×n×n matrix product on ``backend`` (best of ``repeat``)."""
    be = resolve_backend(backend)
    a = be.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    best = np.inf
    for _ in range(repeat + 1):
        be.synchronize()
        t = time.perf_counter()
        _ = a @ a
        be.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def naive_seconds_per_pair(image: np.ndarray, W: int, n_pairs: int, engine) -> tuple[float, float]:
    """Mean seconds per non-redundant pair of the naive loop, and its max deviation from the engine."""
    M1, M2 = image.shape
    o = W - 1
    padded = np.zeros((M1 + 2 * o, M2 + 2 * o))
    padded[o : o + M1, o : o + M2] = image
    lags = a3_nonredundant_lags(W)
    pick = np.linspace(0, len(lags) - 1, min(n_pairs, len(lags))).astype(int)
    vals = np.empty(pick.size)
    t = time.perf_counter()
    for i, k in enumerate(pick):
        l1y, l1x, l2y, l2x = lags[k]
        vals[i] = (
            np.sum(
                image
                * padded[o + l1y : o + l1y + M1, o + l1x : o + l1x + M2]
                * padded[o + l2y : o + l2y + M1, o + l2x : o + l2x + M2]
            )
            / image.size
        )
    per_pair = (time.perf_counter() - t) / pick.size
    return per_pair, float(np.max(np.abs(vals - engine.a3_unique()[pick])))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--windows", type=int, nargs="+", default=[6, 11])
    ap.add_argument("--backends", nargs="+", default=None, help="default: every available backend")
    ap.add_argument("--dtypes", nargs="+", default=["float64"])
    ap.add_argument("--naive-pairs", type=int, default=48)
    ap.add_argument(
        "--methods", nargs="+", default=None, help="engine methods (rows, gather); default: each backend's default"
    )
    ap.add_argument("--repeats", type=int, default=1, help="engine runs per configuration (best is reported)")
    ap.add_argument("--out", default=None, help="write the results as JSON here too")
    args = ap.parse_args(argv)
    backends = args.backends or available_backends()
    image = np.random.default_rng(0).standard_normal((args.size, args.size))
    report = {"size": args.size, "machine": platform.processor() or platform.machine(), "runs": []}
    peaks = {(b, d): matmul_peak(b, d) for b in backends for d in args.dtypes}
    report["matmul_peak_gflops"] = {f"{b}/{d}": p for (b, d), p in peaks.items()}
    for W in args.windows:
        K3 = len(a3_nonredundant_lags(W))
        ref_engine = None
        for b in backends:
            for meth in args.methods or [default_method(b)]:
                for d in args.dtypes:
                    be = resolve_backend(b)
                    chunk = default_chunk(be.name, W)
                    autocorrelations_2d(image[:64, :64], W, backend=be, dtype=d, method=meth)  # warm-up
                    dt = np.inf
                    for _ in range(max(1, args.repeats)):
                        be.synchronize()
                        t = time.perf_counter()
                        m = autocorrelations_2d(image, W, backend=be, dtype=d, show_progress=False, method=meth)
                        be.synchronize()
                        dt = min(dt, time.perf_counter() - t)
                    gflops = 2 * gram_macs(W, chunk, meth) * image.size / dt / 1e9
                    run = {
                        "W": W,
                        "backend": be.name,
                        "method": meth,
                        "dtype": d,
                        "seconds": dt,
                        "megapixels_per_s": image.size / dt / 1e6,
                        "gflops": gflops,
                        "fraction_of_peak": gflops / peaks[(b, d)],
                        "macs_per_pixel": gram_macs(W, chunk, meth),
                        "band_pixels": default_band_pixels(be.name, W, meth),
                        "chunk": chunk,
                    }
                    if ref_engine is None:
                        ref_engine = m
                    else:
                        diff = np.abs(m.a3_unique() - ref_engine.a3_unique())
                        run["max_abs_diff_vs_first"] = float(np.max(diff))
                    report["runs"].append(run)
                    print(json.dumps(run), flush=True)
        per_pair, dev = naive_seconds_per_pair(image, W, args.naive_pairs, ref_engine)
        naive = {
            "W": W,
            "K3_pairs": K3,
            "naive_seconds_per_pair": per_pair,
            "naive_seconds_extrapolated": per_pair * K3,
            "naive_max_abs_diff": dev,
        }
        for run in report["runs"]:
            if run["W"] == W:
                run["speedup_vs_naive"] = naive["naive_seconds_extrapolated"] / run["seconds"]
        report.setdefault("naive", []).append(naive)
        print(json.dumps(naive), flush=True)
    print(json.dumps({"matmul_peak_gflops": report["matmul_peak_gflops"]}))
    for run in report["runs"]:
        print(
            f"W={run['W']:>2} {run['backend']:>10}/{run['method']}/{run['dtype']}: "
            f"{run['megapixels_per_s']:.4f} MP/s, "
            f"{run['gflops']:.2f} GFLOP/s = {100 * run['fraction_of_peak']:.0f}% of matmul peak, "
            f"{run['speedup_vs_naive']:.1f}× naive"
        )
    if args.out:
        from cryomtd.io import write_json

        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
