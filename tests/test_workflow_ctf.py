"""The CTF through the default DAG: simulated micrographs with a CTF (modelled and ignored),
and the same micrographs as a user's files with a RELION CTF table.

Experiments (BPTI at L = 7, four 512² micrographs, defocus 1–2.5 µm at 300 kV):
``sim`` models the CTF (the default), ``ignore`` has the same data with ``ctf: ignore``,
``real`` reads sim's micrographs from raw/ as unknown files with a STAR file written here
from the simulation's defoci. Both estimators must do measurably better with the CTF
modelled than ignored, and the data path must come close to the simulated-input path (1.2× for the moments, 1.4× for
EM, whose gap the auto-whitening explains).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cryomtd.ctf import CtfGroupTable
from cryomtd.estimate import Estimate
from cryomtd.io import read_json

pytestmark = pytest.mark.slow

N = 4
CTF = {"defocus": [10000.0, 25000.0], "voltage": 300.0, "cs": 2.7, "amplitude_contrast": 0.1}
ESTIMATORS = {
    "basis": {"ell_max": 4},
    "lsq": {"ell_max": 2, "restarts": 1, "max_iterations": 40},
    "em": {"grid_step": 60, "iterations": 6, "tol": 0, "prior_weight": 100, "advanced": {"threads": 1}},
}
SIM = {
    "kind": "cryo3d",
    "seed": 5,
    "volume": {"source": "data/structures/5PTI.pdb", "L": 7},
    "micrographs": {"n_micrographs": N, "size": 512, "gamma": 0.1, "snr": 4.0, "spacing": "separated", "ctf": CTF},
    **ESTIMATORS,
}
REAL = {
    "kind": "cryo3d",
    "seed": 5,
    "data": {"micrographs": "raw/*.mrc", "L": 7, "ctf": "raw/micrographs_ctf.star", "advanced": {"edge": 0}},
    "reference": "results/sim/truth.mrc",
    **ESTIMATORS,
}


def _star(defoci: list[float]) -> str:
    rows = "\n".join(f"MotionCorr/job002/Movies/mic_{k:02d}.mrc {d:.3f} {d:.3f} 0.0" for k, d in enumerate(defoci))
    return (
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnVoltage #2\n_rlnSphericalAberration #3\n"
        "_rlnAmplitudeContrast #4\n1 300.0 2.7 0.1\n\n"
        "data_micrographs\n\nloop_\n_rlnMicrographName #1\n_rlnDefocusU #2\n_rlnDefocusV #3\n"
        f"_rlnDefocusAngle #4\n{rows}\n"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, run_workflow) -> Path:
    d = tmp_path_factory.mktemp("ctf")
    experiments = {"sim": SIM, "ignore": {**SIM, "ctf": "ignore"}}
    (d / "config.yaml").write_text(yaml.safe_dump({"experiments": experiments}))
    run_workflow(d, "results/sim/metrics.json", "results/ignore/metrics.json")
    raw = d / "raw"
    raw.mkdir()
    defoci = []
    for k in range(N):
        shutil.copy(d / f"results/sim/micrographs/{k}.mrc", raw / f"mic_{k:02d}.mrc")
        defoci.append(read_json(d / f"results/sim/micrographs/{k}.json")["ctf"]["defocus"])
    (raw / "micrographs_ctf.star").write_text(_star(defoci))
    (d / "config.yaml").write_text(yaml.safe_dump({"experiments": {**experiments, "real": REAL}}))
    run_workflow(d, "results/real/metrics.json")
    return d


def test_ctf_groups_follow_the_micrographs_and_the_ctf_key(workdir):
    sim = CtfGroupTable.load(workdir / "results/sim/ctf_groups.json")
    assert sim.modelled and sum(len(g.members) for g in sim.groups) == N
    assert not CtfGroupTable.load(workdir / "results/ignore/ctf_groups.json").modelled
    real = CtfGroupTable.load(workdir / "results/real/ctf_groups.json")
    assert [real.ctf_of(str(k)).defocus for k in range(N)] == pytest.approx(
        [sim.ctf_of(str(k)).defocus for k in range(N)], abs=0.01
    )
    for half in ("half1", "half2"):
        assert CtfGroupTable.load(workdir / f"results/real/{half}/ctf_groups.json").modelled
    em = Estimate.load(workdir / "results/sim/em.npz")
    assert int(em.extra["ctf_box"]) > 7  # the enlarged box of the filtered projections


@pytest.mark.parametrize("name", ["em", "lsq"])
def test_modelling_the_ctf_beats_ignoring_it(workdir, name):
    model = read_json(workdir / "results/sim/metrics.json")["estimators"][name]["relative_error"]
    ignored = read_json(workdir / "results/ignore/metrics.json")["estimators"][name]["relative_error"]
    assert model < ignored - 0.05, (model, ignored)


@pytest.mark.parametrize("name", ["em", "lsq"])
def test_user_micrographs_with_a_ctf_table_reconstruct_like_the_simulation(workdir, name):
    sim = read_json(workdir / "results/sim/metrics.json")["estimators"][name]["relative_error"]
    real = read_json(workdir / "results/real/metrics.json")["estimators"][name]["relative_error"]
    # Measured: lsq 0.388 vs 0.387; EM 0.321 vs 0.244 — at SNR 4 the CTF-filtered particles'
    # power above half Nyquist makes `whiten: auto` whiten these (white-noise) files, which
    # also flattens part of the signal (docs/own_micrographs.md); EM feels it, the moments not.
    factor = {"lsq": 1.2, "em": 1.4}[name]
    assert real <= factor * sim + 0.02, (real, sim)
