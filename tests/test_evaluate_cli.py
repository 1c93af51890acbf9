"""The evaluation subcommands (cryomtd fsc / align / summary) on small MRC files."""

from __future__ import annotations

import csv
import json

import mrcfile
import numpy as np
import pytest

from cryomtd.cli import main
from cryomtd.evaluate import fsc, transform_volume
from cryomtd.io import write_json
from cryomtd.seeding import rng


def write(path, vol, vs=1.5):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(vol, dtype=np.float32))
        m.voxel_size = vs


def blobs(L):
    c = np.arange(L) - L // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return sum(
        a * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / 3.0)
        for a, px, py, pz in [(1.0, 3, 0, 0), (0.7, 0, 3, 1), (0.5, -1, -2, 3), (0.8, -3, 1, -1)]
    )


def test_cli_fsc(tmp_path, capsys):
    g = rng(0, "test-cli")
    a = g.standard_normal((10, 10, 10))
    b = a + 0.5 * g.standard_normal((10, 10, 10))
    write(tmp_path / "a.mrc", a)
    write(tmp_path / "b.mrc", b)
    assert main(["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"), "--json", str(tmp_path / "f.json")]) == 0
    out = json.loads((tmp_path / "f.json").read_text())
    # float32 storage: agreement to single precision
    np.testing.assert_allclose(out["fsc"], fsc(a, b), atol=1e-5)
    assert out["voxel_size"] == pytest.approx(1.5)
    assert "resolution_0.143" in capsys.readouterr().out


def test_cli_errors_name_the_file(tmp_path, capsys):
    (tmp_path / "bad.mrc").write_bytes(b"nope")
    write(tmp_path / "a.mrc", np.zeros((4, 4, 4)))
    assert main(["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "bad.mrc")]) == 2
    assert "bad.mrc" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_align_and_summary(tmp_path, capsys):
    L = 15
    ref = blobs(L)
    R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # a proper rotation (det +1)
    write(tmp_path / "ref.mrc", ref)
    write(tmp_path / "est.mrc", transform_volume(ref, R, reflected=True))
    assert (
        main(
            [
                "align",
                str(tmp_path / "est.mrc"),
                str(tmp_path / "ref.mrc"),
                "--out",
                str(tmp_path / "al.mrc"),
                "--grid-step",
                "30",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["reflected"] is True
    np.testing.assert_allclose(res["rotation"], R.T, atol=0.02)
    with mrcfile.open(tmp_path / "al.mrc") as m:
        assert np.linalg.norm(m.data - ref) / np.linalg.norm(ref) < 0.15
    write_json(tmp_path / "x" / "metrics.json", {"kind": "cryo3d", "estimators": {"lsq": {"relative_error": 0.3}}})
    assert main(["summary", str(tmp_path / "x" / "metrics.json"), "--out", str(tmp_path / "s.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    # every 3-D row has the half-map resolution column (empty: no half maps)
    assert rows == [
        {"experiment": "x", "kind": "cryo3d", "estimator": "lsq", "relative_error": "0.3", "resolution_half_0.143": ""}
    ]


def test_cli_evaluate_a_results_folder(tmp_path, capsys):
    """`cryomtd evaluate results/<exp>` on a folder in the results layout (the estimate is the truth)."""
    from cryomtd.basis import SphericalBessel
    from cryomtd.estimate import Estimate
    from cryomtd.io import save_npz
    from cryomtd.layout import Layout

    layout = Layout(str(tmp_path), "exp")
    b = SphericalBessel(9, 2)
    coef = b.expand(blobs(9))
    save_npz(layout.truth_npz, coef=coef, L=9, ell_max=2, voxel_size=1.5)
    write(tmp_path / "exp" / "truth.mrc", b.evaluate(coef))
    Estimate("lsq", coef, 0.1, [1.0, 0.1], "least-squares cost", 1.0).save(layout.estimate("lsq"))
    write(tmp_path / "exp" / "lsq.mrc", b.evaluate(coef))
    assert main(["evaluate", layout.root, "--gamma", "0.1", "--grid-step", "45"]) == 0
    assert "lsq: relative error" in capsys.readouterr().out
    m = json.loads((tmp_path / "exp" / "metrics.json").read_text())
    assert set(m["estimators"]) == {"lsq"} and m["estimators"]["lsq"]["relative_error"] < 1e-3
    assert (tmp_path / "exp" / "figures" / "convergence.png").exists()
    assert (tmp_path / "exp" / "aligned" / "lsq.mrc").exists()
