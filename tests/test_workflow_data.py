"""Your own micrographs through the workflow: MRC files on disk, no side files, no truth.

The project's simulator writes micrographs (experiment ``sim``); they are copied to raw/
without their side files and reconstructed as unknown data (experiment ``real``:
``data`` block, the simulation's truth given only as a ``reference``). The prepared
micrographs must carry the simulator's σ (within 2 %), and EM and the method of moments on
them must come within 1.2× the error the simulated-input path reaches on the same
micrographs; the data experiment also gets its half maps and their FSC.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cryomtd.estimate import Estimate
from cryomtd.io import read_json

pytestmark = pytest.mark.slow

N = 4
ESTIMATORS = {
    "basis": {"ell_max": 4},
    "lsq": {"ell_max": 2, "restarts": 1, "max_iterations": 30},
    "em": {"grid_step": 60, "iterations": 6, "tol": 0, "advanced": {"threads": 1}},
}
SIM = {
    "kind": "cryo3d",
    "seed": 4,
    "volume": {"source": "data/structures/5PTI.pdb", "L": 7},
    "micrographs": {"n_micrographs": N, "size": 512, "gamma": 0.1, "snr": 1.0, "spacing": "nonoverlapping"},
    **ESTIMATORS,
}
REAL = {
    "kind": "cryo3d",
    "seed": 4,
    "data": {"micrographs": "raw/*.mrc", "L": 7, "advanced": {"edge": 0, "psd_tile": 128}},
    "reference": "results/sim/truth.mrc",
    **ESTIMATORS,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, run_workflow) -> Path:
    d = tmp_path_factory.mktemp("data")
    (d / "config.yaml").write_text(yaml.safe_dump({"experiments": {"sim": SIM}}))
    run_workflow(d, "results/sim/metrics.json")
    raw = d / "raw"
    raw.mkdir()
    for k in range(N):  # the files alone: no side file, no particle table
        shutil.copy(d / f"results/sim/micrographs/{k}.mrc", raw / f"mic_{k:02d}.mrc")
    (d / "config.yaml").write_text(yaml.safe_dump({"experiments": {"sim": SIM, "real": REAL}}))
    run_workflow(d, "results/real/metrics.json")
    return d


def test_prepared_micrographs_carry_the_simulated_noise_level(workdir):
    for k in range(N):
        sim = read_json(workdir / f"results/sim/micrographs/{k}.json")
        real = read_json(workdir / f"results/real/micrographs/{k}.json")
        assert real["sigma"] == pytest.approx(sim["sigma"], rel=0.02)
        assert real["L"] == 7 and real["pixel_size"] == pytest.approx(sim["pixel_size"])
        assert "gamma" not in real  # unknown for real data


@pytest.mark.parametrize("name", ["em", "lsq"])
def test_estimates_on_prepared_micrographs_are_as_good_as_on_simulated_input(workdir, name):
    """EM, and the method of moments (central moments: the prepared micrographs have zero mean)."""
    sim = read_json(workdir / "results/sim/metrics.json")["estimators"][name]
    real = read_json(workdir / "results/real/metrics.json")["estimators"][name]
    assert real["relative_error"] <= 1.2 * sim["relative_error"], (real["relative_error"], sim["relative_error"])
    est = Estimate.load(workdir / f"results/real/{name}.npz")
    pixel = read_json(workdir / "results/sim/micrographs/0.json")["pixel_size"]
    assert float(est.extra["voxel_size"]) == pytest.approx(pixel)


def test_data_experiment_has_half_maps_and_their_fsc(workdir):
    for half in ("half1", "half2"):
        for name in ("lsq", "em"):
            assert (workdir / f"results/real/{half}/{name}.mrc").is_file()
    metrics = read_json(workdir / "results/real/metrics.json")
    em = metrics["estimators"]["em"]
    res = em["resolution_half_0.143"]
    assert res is None or np.isfinite(res)
    assert len(em["half_fsc"]) == len(metrics["frequencies"])
    summary = (workdir / "results/summary.csv").read_text() if (workdir / "results/summary.csv").exists() else ""
    assert summary == "" or "real" in summary
