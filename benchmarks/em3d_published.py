"""The published approximate-EM setting, scaled to what a small machine runs.

Simulates micrographs of a volume at 11³ (Shepp–Logan or BPTI, prepared as in the workflow,
expanded with ell_max = 10), γ = 0.4 with non-overlapping placement, SNR 1, with the
project's simulator; then runs batch EM on the patches of ``--batch-size``² pixels of
micrographs and stochastic EM (``--fraction`` of the patches per iteration) on
``--stochastic-size``², both on the ``--grid-step`` rotation grid, from the same start
(``--init``: the default ball, or random). After every iteration: FSC-0.5 resolution
(voxels) and relative error after alignment to the truth (cryomtd.evaluate.align over O(3)
and a translation), loglik per patch, E- and M-step
seconds. ``--start-ell k`` starts instead from the truth low-passed to ℓ ≤ k (a stand-in
for the workflow's method-of-moments start). Writes JSON (``--out``).

    python benchmarks/em3d_published.py --volume shepp_logan --batch-size 330 \
        --stochastic-size 1400 --iterations 8 --out em_published_sl.json
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
from cryomtd.volume import prepare_volume

SOURCES = {"shepp_logan": "shepp_logan", "bpti": "data/structures/5PTI.pdb"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volume", choices=list(SOURCES), default="shepp_logan")
    ap.add_argument("--L", type=int, default=11)
    ap.add_argument("--ell-max", type=int, default=10)
    ap.add_argument("--gamma", type=float, default=0.4)
    ap.add_argument("--snr", type=float, default=1.0)
    ap.add_argument("--grid-step", type=float, default=30.0)
    ap.add_argument("--batch-size", type=int, default=330, help="micrograph side for batch EM (0 = skip)")
    ap.add_argument("--stochastic-size", type=int, default=1400, help="micrograph side for stochastic EM (0 = skip)")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--start-ell",
        type=int,
        default=None,
        help="start from the truth low-passed to ℓ ≤ this (a stand-in for the method-of-moments "
        "estimate) instead of the low-pass random volume",
    )
    ap.add_argument("--init", choices=["ball", "random"], default="ball", help="EM start without --start-ell")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = SOURCES[args.volume]
    if source.endswith(".pdb"):
        source = os.path.join(repo, source)
    prep = prepare_volume(source, args.L, ell_max=args.ell_max)
    b = SphericalBessel(args.L, args.ell_max)
    truth = prep.truth
    out = {"args": vars(args), "basis_size": b.size, "runs": {}}
    print(f"{args.volume}: L={args.L} ell_max={args.ell_max} size={b.size}  load={os.getloadavg()}", flush=True)
    for name, size, fraction in (("batch", args.batch_size, 1.0), ("stochastic", args.stochastic_size, args.fraction)):
        if size <= 0:
            continue
        t0 = time.perf_counter()
        m = simulate.micrograph(
            prep.coef, size, gamma=args.gamma, snr=args.snr, seed=args.seed, spacing="nonoverlapping", basis=b
        )
        t_sim = time.perf_counter() - t0
        rows = []

        def record(k, res, rows=rows, name=name):
            a = align(b.evaluate(res.coef), truth, basis=b, output="basis", grid_step=15.0, shift=True)
            curve = fsc(a.volume, truth)
            rows.append(
                {
                    "iteration": k,
                    "loglik": res.loglik[-1],
                    "estep_s": res.estep_s[-1],
                    "mstep_s": res.mstep_s[-1],
                    "fsc05_voxels": resolution(curve, 0.5, L=args.L),
                    "relative_error": relative_error(a.volume, truth),
                    "fsc": curve.tolist(),
                }
            )
            r = rows[-1]
            print(
                f"  {name} it {k}: loglik/patch {r['loglik']:.5f}  E {r['estep_s']:.1f}s  M {r['mstep_s']:.1f}s  "
                f"FSC0.5 {r['fsc05_voxels']:.2f} vox  rel.err {r['relative_error']:.3f}",
                flush=True,
            )

        print(
            f"{name}: micrograph {size}², {len(m.particles)} particles, γ={m.gamma:.3f}, σ={m.sigma:.4g} "
            f"(simulated in {t_sim:.1f}s)",
            flush=True,
        )
        x0 = None if args.start_ell is None else np.where(b.ell <= args.start_ell, prep.coef, 0.0)
        res = run(
            [m.image],
            b,
            sigma=m.sigma,
            grid_step=args.grid_step,
            iterations=args.iterations,
            x0=x0,
            init=args.init,
            fraction=fraction,
            seed=args.seed,
            tol=0,
            backend=args.backend,
            callback=record,
        )
        out["runs"][name] = {
            "micrograph_size": size,
            "particles": int(len(m.particles)),
            "patches": res.n_patches,
            "patches_per_iteration": int(round(fraction * res.n_patches)),
            "rotations": int(len(np.asarray(__import__("cryomtd.rotations", fromlist=["grid"]).grid(args.grid_step)))),
            "sigma": m.sigma,
            "iterations": rows,
        }
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
