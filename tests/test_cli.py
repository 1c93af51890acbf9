"""The stage subcommands chained by hand equal the library calls with the same settings."""

from __future__ import annotations

import json

import numpy as np

from cryomtd.cli import main


def test_prepare_simulate_em_chain_equals_the_library(tmp_path):
    from cryomtd.em3d import EmSettings
    from cryomtd.em3d.stage import reconstruct
    from cryomtd.estimate import Estimate
    from cryomtd.simulate import MicrographSettings
    from cryomtd.volume import VolumeSettings, read_image_mrc

    out = tmp_path / "exp"
    assert (
        main(["prepare-volume", "gaussian_blobs", "--L", "7", "--ell-max", "3", "--seed", "2", "--out", str(out)]) == 0
    )
    truth = out / "truth.npz"
    ref = VolumeSettings(source="gaussian_blobs", L=7).prepare(ell_max=3, seed=2)
    np.testing.assert_array_equal(np.load(truth)["coef"], ref.coef)

    args = [
        "simulate",
        str(truth),
        "--out",
        str(out),
        "--n-micrographs",
        "2",
        "--size",
        "96",
        "--gamma",
        "0.2",
        "--snr",
        "2",
        "--spacing",
        "nonoverlapping",
        "--seed",
        "5",
    ]
    assert main(args) == 0
    mics = MicrographSettings(n_micrographs=2, size=96, gamma=0.2, snr=2.0, spacing="nonoverlapping")
    for k in range(2):
        image, _ = read_image_mrc(out / "micrographs" / f"{k}.mrc")
        expected = mics.simulate(truth, k, seed=5).image
        np.testing.assert_array_equal(image, expected.astype(np.float32))
        assert json.loads((out / "micrographs" / f"{k}.json").read_text())["L"] == 7

    files = [str(out / "micrographs" / f"{k}.mrc") for k in range(2)]
    em_args = [
        "em",
        *files,
        "--out",
        str(out),
        "--ell-max",
        "3",
        "--grid-step",
        "90",
        "--iterations",
        "2",
        "--backend",
        "numpy",
        "--threads",
        "1",
        "--seed",
        "1",
    ]
    assert main(em_args) == 0
    est = Estimate.load(out / "em.npz")
    assert est.estimator == "em" and est.settings["iterations"] == 2 and est.settings["advanced"]["backend"] == "numpy"
    settings = EmSettings.from_config(
        {"grid_step": 90, "iterations": 2, "advanced": {"backend": "numpy", "threads": 1}}
    )
    res, _, _ = reconstruct(files, [f.replace(".mrc", ".json") for f in files], settings=settings, ell_max=3, seed=1)
    np.testing.assert_allclose(est.coef, res.coef, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.trace, res.loglik, rtol=1e-12)


def test_bad_option_value_is_one_error_line(tmp_path, capsys):
    code = main(["em", str(tmp_path / "missing.mrc"), "--out", str(tmp_path), "--iterations", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("cryomtd em: error:") and "missing" in err[0]
