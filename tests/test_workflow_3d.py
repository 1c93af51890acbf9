"""The 3-D workflow through Snakemake in a temporary directory, one test per stage target.

Each test asks Snakemake for one stage's outputs of a tiny cryo3d experiment (BPTI from the
in-repo model, L = 7, two 96² micrographs) in a shared temporary working directory, so a
later stage reuses the earlier outputs. To extend: add a test per stage that runs
``run_workflow(workdir, <its targets>)`` (fixture in conftest.py) and checks its files
against the library called in-process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cryomtd.io import read_json

EXP = "wf3d"
N_MICROGRAPHS = 2
CONFIG = {
    "experiments": {
        EXP: {
            "kind": "cryo3d",
            "seed": 7,
            # relative path: not in the working directory, so the repository copy is used
            "volume": {"source": "data/structures/5PTI.pdb", "L": 7},
            "micrographs": {
                "n_micrographs": N_MICROGRAPHS,
                "size": 96,
                "gamma": 0.1,
                "snr": 2.0,
                "spacing": "separated",
                "ctf": {"defocus": [10000.0, 20000.0]},
            },
        }
    }
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wf3d")
    (d / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return d


def res(*parts: str) -> str:
    return "/".join(["results", EXP, *parts])


def test_prepare_volume(workdir, run_workflow):
    from cryomtd.basis import SphericalBessel
    from cryomtd.volume import load_truth, read_mrc

    run_workflow(workdir, res("truth.mrc"))
    truth, vs = read_mrc(workdir / res("truth.mrc"))
    raw, vs_raw = read_mrc(workdir / res("truth_raw.mrc"))
    t = load_truth(workdir / res("truth.npz"))
    assert truth.shape == raw.shape == (7, 7, 7) and t["L"] == 7
    assert vs == pytest.approx(t["voxel_size"], rel=1e-6) and vs == pytest.approx(vs_raw)
    b = SphericalBessel(7, t["ell_max"])
    np.testing.assert_allclose(truth, b.evaluate(t["coef"]), atol=1e-6)  # float32 file
    np.testing.assert_allclose(t["coef"], b.expand(raw), atol=1e-5)
    assert (workdir / res("logs", "prepare_volume", "prepare_volume.log")).is_file()


def test_simulate_micrograph(workdir, run_workflow):
    from cryomtd.simulate import read_particles, simulate_from_truth
    from cryomtd.volume import read_image_mrc

    targets = [
        res(sub, f"{k}.{ext}")
        for k in range(N_MICROGRAPHS)
        for sub, ext in (("micrographs", "mrc"), ("particles", "star"), ("micrographs", "json"))
    ]
    run_workflow(workdir, *targets)
    mic = CONFIG["experiments"][EXP]["micrographs"]
    for k in range(N_MICROGRAPHS):
        img, _ = read_image_mrc(workdir / res("micrographs", f"{k}.mrc"))
        info = read_json(workdir / res("micrographs", f"{k}.json"))
        table = read_particles(workdir / res("particles", f"{k}.star"))
        assert img.shape == (96, 96) and info["size"] == 96
        assert info["n_particles"] == len(table) == round(0.1 * 96**2 / 49)
        assert info["gamma"] == pytest.approx(len(table) * 49 / 96**2)
        assert 10000 <= info["ctf"]["defocus"] <= 20000
        # same seed and index ⇒ same micrograph, in-process
        m = simulate_from_truth(
            workdir / res("truth.npz"),
            k,
            seed=7,
            size=96,
            gamma=mic["gamma"],
            snr=mic["snr"],
            spacing=mic["spacing"],
            ctf=mic["ctf"],
        )
        np.testing.assert_allclose(img, m.image, atol=1e-5 * np.abs(m.image).max())
        np.testing.assert_array_equal(table["x"], m.particles["x"])
    # a rerun resumes: nothing left to do
    assert "Nothing to be done" in run_workflow(workdir, *targets)
