"""How often the default 1-D least-squares fit finds the global minimum (docs/mtd1d.md).

For each seed s: the signal (gaussian from seed s, or the step), a measurement of N samples
simulated from seed s (one segment), its moments, then

* the reference fit: one trust-region run started from the truth (x, realised γ) — the
  best achievable error at these data;
* the fit under test: ``fit_lsq(moments, L, sigma=σ, seed=s)`` with the library defaults
  (or the options given).

Success: error ≤ reference error + 0.05 (``--tol``). Also reported: how often the fit's cost
is at most the reference cost (1e-6 relative), i.e. it found a minimum at least as deep as
the one next to the truth (``deep``), and how often either holds. At low SNR the minimum
next to the truth need not be the global one: a fit can be deeper and still further from
the truth, which is the estimator's error, not the optimiser's. Settings:

* ``separated``: L = 15, gaussian signal, σ = 1, γ = 0.2, N = 2·10⁶ (well separated);
* ``published``: L = 21, step, σ = 3, γ = 0.05, N = 4.1·10⁷ (M = 10⁵ of configs/published_1d.yaml;
  ``--N 4100000`` is M = 10⁴, ten times faster to simulate).

Moments are cached in ``--cache`` (they do not depend on the fit options)::

    python benchmarks/mtd1d_success.py --setting separated --seeds 50
    python benchmarks/mtd1d_success.py --setting separated --seeds 50 --starts 1 --screen-iterations 0 --keep 1
    python benchmarks/mtd1d_success.py --setting published --N 4100000 --seeds 50
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from cryomtd.mtd1d import Moments1D, Placement, autocorrelations, fit_lsq, make_signal, simulate_chunks
from cryomtd.mtd1d.lsq import fit_lsq_restart
from cryomtd.mtd1d.metrics import relative_error
from cryomtd.mtd1d.settings import Lsq1dSettings

SETTINGS = {
    "separated": {"L": 15, "signal": "gaussian", "sigma": 1.0, "gamma": 0.2, "N": 2_000_000},
    "published": {"L": 21, "signal": "step", "sigma": 3.0, "gamma": 0.05, "N": 41_000_000},
}


def moments_of(setting: str, seed: int, cache: str, N: int) -> tuple[np.ndarray, Moments1D, float]:
    c = {**SETTINGS[setting], "N": N}
    L = c["L"]
    x = make_signal(c["signal"], L, seed)
    path = os.path.join(cache, f"{setting}_{N}_{seed}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return x, Moments1D.load(path), float(f["gamma_true"])
    copies = 0

    def chunks():
        nonlocal copies
        for y, k in simulate_chunks(x, c["N"], Placement(c["gamma"], L - 1), c["sigma"], seed, 0):
            copies += k
            yield y

    m = autocorrelations(chunks(), L, dtype="float32")  # block products in float32: 2e-7 relative, ≪ sampling error
    gamma_true = copies * L / c["N"]
    os.makedirs(cache, exist_ok=True)
    m.save(path, gamma_true=gamma_true)
    return x, m, gamma_true


def main() -> None:
    d = Lsq1dSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="separated")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--N", type=int, default=None, help="samples (default: the setting's)")
    ap.add_argument("--restarts", type=int, default=d.restarts)
    ap.add_argument("--starts", type=int, default=d.starts)
    ap.add_argument("--screen-iterations", type=int, default=d.screen_iterations)
    ap.add_argument("--keep", type=int, default=d.keep)
    ap.add_argument("--tol", type=float, default=0.05, help="success: error <= reference error + tol")
    ap.add_argument("--cache", default="/tmp/cryomtd_mtd1d_success")
    ap.add_argument("--out", default=None, help="write the per-seed rows and the summary here (JSON)")
    a = ap.parse_args()
    c = {**SETTINGS[a.setting], **({"N": a.N} if a.N else {})}
    L, sigma = c["L"], c["sigma"]
    opts = {"restarts": a.restarts, "starts": a.starts, "screen_iterations": a.screen_iterations, "keep": a.keep}
    print(f"setting {a.setting} {c}; fit options {opts}", flush=True)
    rows = []
    for s in range(a.first_seed, a.first_seed + a.seeds):
        x, m, gamma_true = moments_of(a.setting, s, a.cache, c["N"])
        ref = fit_lsq_restart(m, L, sigma=sigma, x0=x, gamma0=gamma_true)
        t0 = time.perf_counter()
        r = fit_lsq(m, L, sigma=sigma, seed=s, **opts)
        dt = time.perf_counter() - t0
        row = {
            "seed": s,
            "gamma_true": gamma_true,
            "ref_error": relative_error(ref.x, x),
            "ref_cost": ref.cost,
            "error": relative_error(r.x, x),
            "gamma": r.gamma,
            "cost": r.cost,
            "time_s": dt,
        }
        row["success"] = bool(row["error"] <= row["ref_error"] + a.tol)
        row["deep"] = bool(row["cost"] <= row["ref_cost"] * (1 + 1e-6))
        rows.append(row)
        print(
            f"seed {s:3d}: error {row['error']:.3f} (reference {row['ref_error']:.3f}) γ {r.gamma:.4f} "
            f"(true {gamma_true:.4f}) cost/reference {r.cost / ref.cost:.4f} {dt:.1f} s"
            + ("" if row["success"] else "  FAIL"),
            flush=True,
        )
    n = len(rows)
    summary = {
        "setting": a.setting,
        **c,
        **opts,
        "seeds": n,
        "first_seed": a.first_seed,
        "success_rate": sum(r["success"] for r in rows) / n,
        "deep_rate": sum(r["deep"] for r in rows) / n,
        "success_or_deep_rate": sum(r["success"] or r["deep"] for r in rows) / n,
        "median_error": float(np.median([r["error"] for r in rows])),
        "median_ref_error": float(np.median([r["ref_error"] for r in rows])),
        "mean_time_s": float(np.mean([r["time_s"] for r in rows])),
        "failed_seeds": [r["seed"] for r in rows if not r["success"]],
    }
    print(json.dumps(summary, indent=1), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
