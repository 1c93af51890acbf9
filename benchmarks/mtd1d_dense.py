"""Densely packed copies in 1-D: the separated and the arbitrary-spacing models at one density.

For each seed: a gaussian signal, a measurement with touching copies allowed
(``min_gap`` 0) at density γ, then least squares with ``spacing="separated"`` and
``"arbitrary"`` (library defaults otherwise) and, on the first ``--em-samples`` samples,
EM with both patch models started from the dense LS estimate. Prints the relative errors,
γ and the wall times (the cost of the L − 1 extra unknowns / L(L−1)/2 extra patch
configurations)::

    python benchmarks/mtd1d_dense.py --L 15 --sigma 0.5 --gamma 0.4 --N 2000000 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cryomtd.mtd1d import Placement, autocorrelations, fit_em, fit_lsq, make_signal, rho_from_gamma, simulate_segment
from cryomtd.mtd1d.metrics import relative_error


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=15)
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--gamma", type=float, default=0.4)
    ap.add_argument("--N", type=int, default=2_000_000)
    ap.add_argument("--em-samples", type=int, default=400_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    for s in range(a.seeds):
        x = make_signal("gaussian", a.L, s)
        y, copies = simulate_segment(x, a.N, Placement(a.gamma, 0), a.sigma, s, 0)
        m = autocorrelations(y, a.L)
        row: dict = {"seed": s, "gamma_true": copies * a.L / a.N}
        for sp in ("separated", "arbitrary"):
            t0 = time.perf_counter()
            r = fit_lsq(m, a.L, sigma=a.sigma, seed=s, spacing=sp)
            row[f"lsq_{sp}"] = {"error": relative_error(r.x, x), "gamma": r.gamma, "time_s": time.perf_counter() - t0}
            if sp == "arbitrary":
                start = r
        for sp in ("separated", "arbitrary"):
            t0 = time.perf_counter()
            e = fit_em(
                y[: a.em_samples],
                a.L,
                sigma=a.sigma,
                x0=start.x,
                rho0=rho_from_gamma(a.L, start.gamma, sp),
                iterations=100,
                tol=1e-9,
                spacing=sp,
            )
            ll = np.array(e.loglik)
            row[f"em_{sp}"] = {
                "error": relative_error(e.x, x),
                "gamma": e.gamma,
                "iterations": e.iterations,
                "monotone": bool(np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))),
                "time_s": time.perf_counter() - t0,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
