"""File-level stages and CLI of the 3-D method of moments (cryomtd.mom3d.stage, cryomtd recover-lsq)."""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.basis import SphericalBessel
from cryomtd.io import InputError, save_npz
from cryomtd.mom3d import LsqSettings, expected_moments
from cryomtd.mom3d.stage import (
    default_window,
    exact_moments_file,
    fit_basis,
    noise_sigma,
    pick_best_file,
    recover_restart_file,
    refine_restart_file,
)
from cryomtd.moments import Moments2D
from cryomtd.settings import override

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lsq(base: LsqSettings | None = None, **changes) -> LsqSettings:
    """The workflow's lsq settings with some fields changed by name."""
    return override(base or LsqSettings(), "lsq", **changes)


@pytest.fixture
def truth_npz(tmp_path):
    b = SphericalBessel(7, 3)
    coef = np.random.default_rng(0).standard_normal(b.size)
    path = tmp_path / "truth.npz"
    save_npz(path, coef=coef, L=np.int64(7), ell_max=np.int64(3), voxel_size=np.float64(2.5))
    return path, b, coef


def test_fit_basis_is_a_prefix_of_the_experiment_basis():
    # the ell <= 1 fit basis has the same functions as the first entries of the ell <= 3 basis
    full, small = fit_basis(7, 3, 1)
    assert small.size < full.size
    np.testing.assert_allclose(
        np.asarray(full.projection_matrix)[:, : small.size], np.asarray(small.projection_matrix), atol=1e-12
    )
    assert default_window(11) == 6 and default_window(20) == 10


def test_exact_moments_file_round_trips_the_model(truth_npz, tmp_path):
    # moments.npz (the Moments2D format) holds the model moments of the truncated truth, every dense entry
    path, _, coef = truth_npz
    out = tmp_path / "moments.npz"
    exact_moments_file(path, out, gamma=0.2, window=3, fit_ell_max=1)
    m = Moments2D.load(out)
    b1 = SphericalBessel(7, 1)
    ref = expected_moments(b1, coef[: b1.size], 0.2, 3)
    assert m.window == 3
    np.testing.assert_allclose(m.a3, ref.a3, rtol=0, atol=1e-14 * np.abs(ref.a3).max())
    np.testing.assert_allclose(m.a2, ref.a2, rtol=0, atol=1e-14 * np.abs(ref.a2).max())
    assert noise_sigma(m, "auto") == 0.0 and noise_sigma(m, "exclude") is None


def test_recover_and_pick_best(truth_npz, tmp_path):
    # two short restarts from exact moments; the best one is written with its volume; rerunning
    # a restart gives the same numbers (seeded by (seed, "lsq3d", r))
    path, _, _ = truth_npz
    moments = tmp_path / "moments.npz"
    exact_moments_file(path, moments, gamma=0.1, window=3, fit_ell_max=1)
    lsq = _lsq(ell_max=1, optimizer="conjugate-gradient", max_iterations=5)
    files = [tmp_path / "lsq" / f"restart_{r}.npz" for r in range(2)]
    for r, f in enumerate(files):
        recover_restart_file(moments, f, L=7, ell_max=3, settings=lsq, seed=4, restart=r, exact=True)
    z0 = dict(np.load(files[0]))
    assert z0["coef"].shape == (SphericalBessel(7, 3).size,)
    assert np.all(z0["coef"][SphericalBessel(7, 1).size :] == 0) and int(z0["window"]) == 3
    again = tmp_path / "again.npz"
    recover_restart_file(moments, again, L=7, ell_max=3, settings=lsq, seed=4, restart=0, exact=True)
    np.testing.assert_array_equal(np.load(again)["coef"], z0["coef"])
    best = pick_best_file(files, tmp_path / "lsq.npz", tmp_path / "lsq.mrc", voxel_size=2.5)
    z = np.load(tmp_path / "lsq.npz")
    assert best == int(np.argmin(z["restart_costs"])) and float(z["cost"]) == z["restart_costs"].min()
    from cryomtd.volume import read_mrc

    vol, voxel = read_mrc(tmp_path / "lsq.mrc")
    b = SphericalBessel(7, 3)
    np.testing.assert_allclose(vol, b.evaluate(z["coef"]), atol=1e-5 * np.abs(vol).max())
    assert np.isclose(voxel, 2.5)


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "truth.npz"
    save_npz(bad, coef=np.zeros(3))
    with pytest.raises(InputError, match="truth.npz"):
        exact_moments_file(bad, tmp_path / "m.npz", gamma=0.1, window=3)
    with pytest.raises(InputError, match="lsq.advanced.noise"):
        noise_sigma(object(), "guess")


def test_cli_recover_lsq(truth_npz, tmp_path):
    from cryomtd.cli import main

    path, _, _ = truth_npz
    m = tmp_path / "m.npz"
    assert (
        main(["exact-moments", str(path), "--gamma", "0.1", "--window", "3", "--fit-ell-max", "1", "--out", str(m)])
        == 0
    )
    assert (
        main(
            [
                "recover-lsq",
                str(m),
                "--L",
                "7",
                "--ell-max",
                "3",
                "--fit-ell-max",
                "1",
                "--restarts",
                "1",
                "--max-iterations",
                "3",
                "--exact",
                "--out",
                str(tmp_path / "fit"),
            ]
        )
        == 0
    )
    assert (tmp_path / "fit" / "lsq.mrc").exists() and (tmp_path / "fit" / "lsq" / "restart_0.npz").exists()


def test_recover_restart_with_symmetry(truth_npz, tmp_path):
    # lsq.symmetry: the written coefficients are C3-symmetric (in the experiment basis);
    # a bad symbol is refused naming the field, before any file is written
    from cryomtd.basis.symmetry import symmetrize

    path, _, _ = truth_npz
    moments = tmp_path / "moments.npz"
    exact_moments_file(path, moments, gamma=0.1, window=3, fit_ell_max=2)
    lsq = _lsq(ell_max=2, optimizer="gauss-newton", max_iterations=5, symmetry="c3")
    out = tmp_path / "restart_0.npz"
    recover_restart_file(moments, out, L=7, ell_max=3, settings=lsq, seed=1, restart=0, exact=True)
    coef = np.load(out)["coef"]
    b = SphericalBessel(7, 3)
    assert np.abs(coef).max() > 0
    np.testing.assert_allclose(symmetrize(coef, b, "C3"), coef, atol=1e-12)
    bad = tmp_path / "bad.npz"
    with pytest.raises(InputError, match="lsq.symmetry"):
        recover_restart_file(
            moments, bad, L=7, ell_max=3, settings=_lsq(lsq, symmetry="D1"), seed=1, restart=0, exact=True
        )
    assert not bad.exists()


def test_recover_restart_with_ball_start(truth_npz, tmp_path, caplog):
    # lsq.init: ball fits the ball radius to the data (logged) and writes the restart; a bad
    # init is refused naming the field, before any file is written
    import logging

    path, _, _ = truth_npz
    moments = tmp_path / "moments.npz"
    exact_moments_file(path, moments, gamma=0.1, window=3, fit_ell_max=2)
    lsq = _lsq(ell_max=2, optimizer="gauss-newton", max_iterations=3, init="ball")
    out = tmp_path / "restart_0.npz"
    with caplog.at_level(logging.INFO, logger="cryomtd.mom3d"):
        recover_restart_file(moments, out, L=7, ell_max=3, settings=lsq, seed=1, restart=0, exact=True)
    assert "ball start: radius" in caplog.text
    assert np.isfinite(np.load(out)["cost"])
    fixed = tmp_path / "fixed.npz"
    recover_restart_file(
        moments, fixed, L=7, ell_max=3, settings=_lsq(lsq, init_radius=2.0), seed=1, restart=0, exact=True
    )
    assert not np.array_equal(np.load(out)["coef"], np.load(fixed)["coef"])
    bad = tmp_path / "bad.npz"
    with pytest.raises(InputError, match="lsq.advanced.init"):
        recover_restart_file(
            moments, bad, L=7, ell_max=3, settings=_lsq(lsq, init="sphere"), seed=1, restart=0, exact=True
        )
    assert not bad.exists()


def test_refine_continues_the_best_restarts(truth_npz, tmp_path):
    # lsq.refine_top: rank k continues the restart of the k-th lowest cost; its saved cost is the
    # cost of its coefficients recomputed from the moments (cost_terms, the dense residual on every
    # non-redundant lag, not the polish's per-orbit rows), no higher than the restart's; traces and
    # iterations include the restart's; the symmetry is kept; a rank beyond the restarts is refused
    # before any file is written; pick_best_file then prefers the refinement
    from cryomtd.basis.symmetry import symmetrize
    from cryomtd.mom3d.fit import cost_terms, make_model

    path, _, _ = truth_npz
    moments = tmp_path / "moments.npz"
    exact_moments_file(path, moments, gamma=0.1, window=3, fit_ell_max=2)
    lsq = _lsq(ell_max=2, optimizer="gauss-newton", max_iterations=3, symmetry="C3", refine_iterations=15)
    files = [tmp_path / "lsq" / f"restart_{r}.npz" for r in range(3)]
    for r, f in enumerate(files):
        recover_restart_file(moments, f, L=7, ell_max=3, settings=lsq, seed=2, restart=r, exact=True)
    costs = [float(np.load(f)["cost"]) for f in files]
    order = np.argsort(costs)
    b = SphericalBessel(7, 3)
    small = SphericalBessel(7, 2)
    model = make_model(small, 3)
    data = Moments2D.load(moments)
    for k in range(2):
        out = tmp_path / "lsq" / f"refine_{k}.npz"
        assert refine_restart_file(moments, files, out, rank=k, L=7, ell_max=3, settings=lsq, exact=True) == order[k]
        z, src = np.load(out), np.load(files[order[k]])
        assert int(z["refined_from"]) == int(z["restart"]) == order[k]
        assert float(z["cost"]) <= float(src["cost"])
        assert np.isclose(
            sum(cost_terms(model, data, z["coef"][: small.size], float(z["gamma"]))),
            float(z["cost"]),
            rtol=1e-9,
            atol=1e-300,
        )
        assert z["cost_trace"].size > src["cost_trace"].size and int(z["iterations"]) > int(src["iterations"])
        np.testing.assert_allclose(symmetrize(z["coef"], b, "C3"), z["coef"], atol=1e-12)
    bad = tmp_path / "lsq" / "refine_3.npz"
    with pytest.raises(InputError, match="lsq.refine_top"):
        refine_restart_file(moments, files, bad, rank=3, L=7, ell_max=3, settings=lsq, exact=True)
    assert not bad.exists()
    refined = [tmp_path / "lsq" / f"refine_{k}.npz" for k in range(2)]
    best = pick_best_file(files + refined, tmp_path / "lsq.npz", tmp_path / "lsq.mrc")
    assert best in (3, 4) and float(np.load(tmp_path / "lsq.npz")["cost"]) <= min(costs)
