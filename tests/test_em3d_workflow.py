"""The approx_em rule through Snakemake in a temporary directory (never in the repository)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

EXP = "em_wf"

pytestmark = pytest.mark.slow


def config(iterations: int) -> dict:
    return {
        "experiments": {
            EXP: {
                "kind": "cryo3d",
                "seed": 4,
                "volume": {"source": "gaussian_blobs", "L": 5, "n_blobs": 3},
                "basis": {"ell_max": 2},
                "micrographs": {"n_micrographs": 1, "size": 60, "gamma": 0.1, "snr": 10.0, "spacing": "separated"},
                "lsq": {"enabled": False},
                "em": {
                    "grid_step": 60,
                    "iterations": iterations,
                    "tol": 0,
                    "fraction": 0.5,
                    "advanced": {"threads": 1, "memory_mb": 128, "backend": "numpy"},
                },
            }
        }
    }


def run(run_workflow, workdir: Path, iterations: int) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config(iterations)))
    run_workflow(workdir, f"results/{EXP}/em_trace.json")


def test_approx_em_rule_writes_outputs_and_resumes(tmp_path, run_workflow):
    from cryomtd.io import read_json
    from cryomtd.volume import read_mrc

    run(run_workflow, tmp_path, 2)
    base = tmp_path / "results" / EXP
    trace = read_json(base / "em_trace.json")
    assert trace["iterations"] == 2 and trace["resumed_from"] == 0 and trace["n_patches"] == 144
    vol, _ = read_mrc(base / "em.mrc")
    with np.load(base / "em.npz") as z:
        assert vol.shape == (5, 5, 5) and z["rho"].shape == (10, 10)
        assert z["rho"].sum() == pytest.approx(1.0)
    assert (base / "em_checkpoint" / "state.npz").is_file()
    assert (base / "logs" / "approx_em" / "approx_em.log").is_file()
    run(run_workflow, tmp_path, 3)  # more iterations: the rule reruns and continues from the checkpoint
    trace = read_json(base / "em_trace.json")
    assert trace["iterations"] == 3 and trace["resumed_from"] == 2
