"""The 3-D least-squares rules through Snakemake: exact_moments → recover_lsq (per restart) →
refine_lsq (lsq.refine_top) → pick_best_restart, on a tiny clean-moment experiment."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

EXP = "lsqwf"
CONFIG = {
    "experiments": {
        EXP: {
            "kind": "cryo3d",
            "seed": 3,
            "volume": {"source": "data/structures/5PTI.pdb", "L": 7},
            "basis": {"ell_max": 2},
            "moments": {"source": "exact", "window": 3},
            "micrographs": {"gamma": 0.1},
            "lsq": {
                "restarts": 3,
                "max_iterations": 4,
                "refine_top": 2,
                "refine_iterations": 10,
                "advanced": {"optimizer": "gauss-newton", "marching": False, "a2_first": False, "threads": 2},
            },
            "em": {"enabled": False},
        }
    }
}


def test_restarts_refine_and_pick_best(tmp_path, run_workflow):
    # refine_k continues the k-th lowest-cost restart and ends no higher; pick_best_restart
    # chooses among all five files; a second run has nothing to do (resume, no recompute)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    out = run_workflow(tmp_path, f"results/{EXP}/lsq.mrc")
    assert "refine_lsq" in out
    d = tmp_path / "results" / EXP
    costs = [float(np.load(d / "lsq" / f"restart_{r}.npz")["cost"]) for r in range(3)]
    refined = [np.load(d / "lsq" / f"refine_{k}.npz") for k in range(2)]
    for k, z in enumerate(refined):
        assert int(z["refined_from"]) == int(np.argsort(costs, kind="stable")[k])
        assert float(z["cost"]) <= costs[int(z["refined_from"])]
    best = np.load(d / "lsq.npz")
    assert len(best["restart_files"]) == 5 and any("refine_" in str(f) for f in best["restart_files"])
    assert float(best["cost"]) == min(costs + [float(z["cost"]) for z in refined])
    assert (d / "logs" / "refine_lsq" / "refine_1.log").read_text().count("refine rank 1") == 2
    assert "Nothing to be done" in run_workflow(tmp_path, f"results/{EXP}/lsq.mrc")
