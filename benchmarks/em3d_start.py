"""EM from generic starts on crowded micrographs: the ball start vs the random start.

Simulates ``--micrographs`` micrographs of ``--size``² pixels of a hidden-style volume (an
11³ sum of Gaussian blobs, expanded to ``--ell-max``) at γ = 0.4, non-overlapping, SNR 4
(the project's simulator), then runs batch EM on the 30° grid (576 rotations) from each
``--starts`` entry: ``ball`` (the default start, :mod:`cryomtd.em3d.start`), ``random``
(``em.init: random``) or ``truth`` (the true coefficients: where the likelihood's optimum
near the truth lies). After every iteration: relative error after alignment over O(3) and a
translation (as the workflow's evaluation: EM's volume is defined up to a 3-D translation),
FSC-0.5 (voxels), γ from the shift prior, mean log-likelihood per patch, E- and M-step
seconds. Writes JSON (``--out``).

    OMP_NUM_THREADS=2 python benchmarks/em3d_start.py --size 768 --micrographs 2 \
        --iterations 8 --starts ball,random --out em3d_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from cryomtd import simulate
from cryomtd.basis import SphericalBessel
from cryomtd.em3d import run
from cryomtd.evaluate.align import align, relative_error
from cryomtd.evaluate.fsc import fsc, resolution
from cryomtd.volume import gaussian_blobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=11)
    ap.add_argument("--ell-max", type=int, default=6)
    ap.add_argument("--blobs", type=int, default=6)
    ap.add_argument("--volume-seed", type=int, default=3)
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--micrographs", type=int, default=2)
    ap.add_argument("--gamma", type=float, default=0.4)
    ap.add_argument("--snr", type=float, default=4.0)
    ap.add_argument("--grid-step", type=float, default=30.0)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--starts", default="ball,random")
    ap.add_argument("--seed", type=int, default=0, help="EM seed (the start's random detail)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    b = SphericalBessel(args.L, args.ell_max)
    coef = b.expand(gaussian_blobs(args.L, args.blobs, seed=args.volume_seed))
    truth = b.evaluate(coef)
    mics = [
        simulate.micrograph(
            coef, args.size, gamma=args.gamma, snr=args.snr, seed=1 + k, spacing="nonoverlapping", basis=b
        )
        for k in range(args.micrographs)
    ]
    sigma = float(mics[0].sigma)
    n_particles = int(sum(len(m.particles) for m in mics))
    out = {"args": vars(args), "basis_size": b.size, "sigma": sigma, "n_particles": n_particles, "runs": {}}
    print(f"L={args.L} ell_max={args.ell_max} size={b.size} particles={n_particles} σ={sigma:.4g}", flush=True)

    def measure(c: np.ndarray) -> tuple[float, float]:
        a = align(b.evaluate(c), truth, basis=b, output="basis", grid_step=15.0, shift=True)
        return relative_error(a.volume, truth), float(resolution(fsc(a.volume, truth), 0.5))

    for start in args.starts.split(","):
        rows: list[dict] = []

        def record(k, res, rows=rows, start=start):
            err, fsc05 = measure(res.coef)
            rows.append(
                {
                    "iteration": k,
                    "loglik": res.loglik[-1],
                    "rel_error": err,
                    "fsc05_voxels": fsc05,
                    "gamma": res.gamma,
                    "estep_s": res.estep_s[-1],
                    "mstep_s": res.mstep_s[-1],
                }
            )
            print(start, json.dumps(rows[-1]), flush=True)

        kw = {"x0": coef} if start == "truth" else {"init": start}
        t0 = time.perf_counter()
        run(
            [m.image for m in mics],
            b,
            sigma=sigma,
            iterations=args.iterations,
            grid_step=args.grid_step,
            seed=args.seed,
            callback=record,
            show_progress=False,
            backend="numpy",
            **kw,
        )
        wall = time.perf_counter() - t0
        out["runs"][start] = {"rows": rows, "wall_s": wall}
        final = rows[-1]["rel_error"]
        print(f"{start}: final rel. error {final:.3f} after {len(rows)} iterations, {wall:.0f} s", flush=True)
    out["load"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
