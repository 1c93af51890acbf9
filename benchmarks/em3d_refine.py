"""Local rotation refinement on the default demo's data: EM with the demo's ``em`` settings,
then with ``refine`` overrides, each compared with the truth after alignment (O(3) and a
translation, as the workflow's evaluation).

Needs the demo's micrographs (``snakemake --cores 2`` first). Each argument is one run's
JSON override of the ``em`` block ('{}' = the demo as shipped):

    OMP_NUM_THREADS=2 python benchmarks/em3d_refine.py '{}' \
        '{"refine": {"fine_step": 15, "after": 10, "top": 8}}'
"""

from __future__ import annotations

import glob
import json
import sys
import time

import numpy as np
import yaml

from cryomtd.em3d.stage import reconstruct
from cryomtd.evaluate.align import align, relative_error
from cryomtd.evaluate.fsc import fsc, resolution


def main() -> None:
    d = "results/cryo3d_demo"
    mics = sorted(glob.glob(f"{d}/micrographs/*.mrc"))
    if not mics:
        sys.exit(f"{d}/micrographs: no micrographs; run `snakemake --cores 2` first")
    exp = yaml.safe_load(open("config.yaml"))["experiments"]["cryo3d_demo"]
    truth_coef = np.load(f"{d}/truth.npz")["coef"]
    for arg in sys.argv[1:] or ["{}"]:
        cfg = {**exp["em"], **json.loads(arg)}
        t0 = time.perf_counter()
        res, b, _ = reconstruct(
            mics, [m[:-4] + ".json" for m in mics], settings=cfg, ell_max=exp["basis"]["ell_max"], seed=exp["seed"]
        )
        wall = time.perf_counter() - t0
        truth = b.evaluate(truth_coef)
        a = align(b.evaluate(res.coef), truth, basis=b, output="basis", grid_step=15.0, shift=True)
        row = {
            "override": json.loads(arg),
            "rel_error": relative_error(a.volume, truth),
            "fsc05_voxels": float(resolution(fsc(a.volume, truth), 0.5)),
            "gamma": res.gamma,
            "estep_s": sum(res.estep_s),
            "mstep_s": sum(res.mstep_s),
            "wall_s": wall,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
