"""The approx_em stage over files (shared by the rule script and ``cryomtd em``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryomtd.cli import main
from cryomtd.io import InputError, read_json


@pytest.fixture()
def micrograph_files(tmp_path):
    from cryomtd import rotations, simulate, volume
    from cryomtd.basis import SphericalBessel

    L = 5
    b = SphericalBessel(L, 2)
    coef = b.expand(volume.gaussian_blobs(L, 3, 0))
    paths = []
    for k in range(2):
        g = np.random.default_rng(k)
        corners = simulate.place_particles(45, L, 6, 2 * L - 1, g)
        img = simulate.paste(45, corners, b.project(coef, rotations.random(6, g))) + 0.05 * g.standard_normal((45, 45))
        p = tmp_path / f"{k}.mrc"
        volume.write_image_mrc(p, img, 2.0)
        (tmp_path / f"{k}.json").write_text(json.dumps({"sigma": 0.05, "L": L, "pixel_size": 2.0}))
        paths.append(str(p))
    return tmp_path, paths


def test_cli_writes_outputs_and_resumes(micrograph_files):
    import mrcfile

    tmp, mics = micrograph_files
    args = [
        "em",
        *mics,
        "--out",
        str(tmp / "out"),
        "--ell-max",
        "2",
        "--grid-step",
        "60",
        "--tol",
        "0",
        "--fraction",
        "0.5",
        "--backend",
        "numpy",
    ]
    assert main(args + ["--iterations", "2"]) == 0
    first = np.load(tmp / "out" / "em.npz")["coef"].copy()
    with mrcfile.open(tmp / "out" / "em.mrc") as fh:
        assert fh.data.shape == (5, 5, 5) and float(fh.voxel_size.x) == pytest.approx(2.0)
    assert main(args + ["--iterations", "3"]) == 0  # same settings, more iterations: resumes at 2
    trace = read_json(tmp / "out" / "em_trace.json")
    assert trace["resumed_from"] == 2 and trace["iterations"] == 3 and len(trace["loglik"]) == 3
    assert trace["n_patches"] == 2 * 81
    assert not np.allclose(np.load(tmp / "out" / "em.npz")["coef"], first)


def test_stage_rejects_bad_micrograph_info(micrograph_files):
    from cryomtd.em3d.stage import noise_and_box, reconstruct

    tmp, mics = micrograph_files
    with pytest.raises(InputError, match="missing field 'sigma'"):
        noise_and_box([{"L": 5}], ["m.json"])
    with pytest.raises(InputError, match="m.json: field 'sigma': expected a positive finite number, got 0.0"):
        noise_and_box([{"L": 5, "sigma": 0.0}], ["m.json"])
    with pytest.raises(InputError, match="box size"):
        noise_and_box([{"L": 5, "sigma": 1.0}, {"L": 7, "sigma": 1.0}], ["a.json", "b.json"])
    np.savez(tmp / "lsq.npz", coef=np.zeros(3))
    with pytest.raises(InputError, match="lsq.npz: 'coef' has 3 entries"):
        reconstruct(mics, [tmp / "0.json", tmp / "1.json"], ell_max=2, lsq_npz=tmp / "lsq.npz")
    assert main(["em", str(tmp / "nothere.mrc"), "--infos", str(tmp / "0.json")]) == 2
