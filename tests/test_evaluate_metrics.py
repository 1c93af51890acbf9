"""Metrics files, summary table and figures of the evaluation stage on a synthetic experiment."""

from __future__ import annotations

import csv
import json

import mrcfile
import numpy as np
import pytest

from cryomtd import rotations
from cryomtd.basis import SphericalBessel
from cryomtd.evaluate import (EvaluationSettings, evaluate_experiment, gamma_from_micrographs, summary_rows,
                              write_evaluation, write_summary)
from cryomtd.io import InputError, save_npz, write_json
from cryomtd.seeding import rng


def test_gamma_from_micrographs_matches_definition():
    infos = [{"n_particles": 30, "size": 200, "L": 11}, {"n_particles": 12, "size": [100, 150], "L": 11}]
    # γ = Σ n·L² / Σ pixels (docs/conventions.md)
    assert gamma_from_micrographs(infos) == pytest.approx((42 * 121) / (200 * 200 + 100 * 150))


def test_summary_reads_both_layouts(tmp_path):
    m3 = {"experiment": "a3", "kind": "cryo3d", "L": 11, "gamma_true": 0.1, "frequencies": [0, 0.1],
          "estimators": {"lsq": {"relative_error": 0.2, "fsc": [1, 0.5], "rotation": [[1, 0, 0]] * 3},
                         "em": {"relative_error": 0.1, "gamma": None}}}
    m1 = {"experiment": "b1", "L": 21, "gamma_true": 0.1,
          "lsq": {"rel_error": 0.05, "gamma_rel_error": 0.01, "restart_costs": [1.0, 2.0]},
          "em": {"rel_error": 0.02, "loglik": -3.5}}
    write_json(tmp_path / "a3" / "metrics.json", m3)
    write_json(tmp_path / "b1" / "metrics.json", m1)
    out = tmp_path / "summary.csv"
    write_summary([tmp_path / "a3" / "metrics.json", tmp_path / "b1" / "metrics.json"], out,
                  kinds=["cryo3d", "mtd1d"])
    rows = list(csv.DictReader(out.open()))
    assert [(r["experiment"], r["kind"], r["estimator"]) for r in rows] == [
        ("a3", "cryo3d", "lsq"), ("a3", "cryo3d", "em"), ("b1", "mtd1d", "lsq"), ("b1", "mtd1d", "em")]
    assert [float(r["relative_error"]) for r in rows] == [0.2, 0.1, 0.05, 0.02]
    assert rows[2]["gamma_relative_error"] == "0.01"
    assert "fsc" not in rows[0] and "restart_costs" not in rows[2]  # lists stay in metrics.json
    assert summary_rows([{"experiment": "x", "note": "none"}]) == [
        {"experiment": "x", "kind": "", "estimator": "", "note": "none"}]


def _write_mrc(path, vol, voxel_size):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(vol, dtype=np.float32))
        m.voxel_size = voxel_size


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """truth in the basis; lsq = reflected + rotated truth with 5 % coefficient noise; em = rotated truth."""
    d = tmp_path_factory.mktemp("exp")
    L, ell_max, vs = 11, 4, 2.0
    b = SphericalBessel(L, ell_max)
    g = rng(7, "test-metrics")
    c = np.arange(L) - L // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    raw = sum(a * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / 3.0)
              for a, px, py, pz in [(1.0, 2, 0, 0), (0.7, 0, 2.5, 1), (0.5, -1, -1, 2.5), (0.8, -2, 1, -1)])
    coef = b.expand(raw)
    truth = b.evaluate(coef)
    save_npz(d / "truth.npz", coef=coef, L=L, ell_max=ell_max, voxel_size=vs)
    _write_mrc(d / "truth.mrc", truth, vs)
    R1, R2 = rotations.random(2, 8)
    parity = np.where(b.ell % 2 == 1, -1.0, 1.0)
    c_lsq = b.rotate(parity * coef, R1)
    c_lsq = c_lsq + 0.05 * np.linalg.norm(c_lsq) / np.sqrt(b.size) * g.standard_normal(b.size)
    save_npz(d / "lsq.npz", coef=c_lsq, gamma=0.11, cost=1e-3, cost_trace=np.geomspace(1, 1e-3, 20), wall_time_s=3.0)
    _write_mrc(d / "lsq.mrc", b.evaluate(c_lsq), vs)
    c_em = b.rotate(coef, R2)
    save_npz(d / "em.npz", coef=c_em, rho=np.ones(4) / 4)
    _write_mrc(d / "em.mrc", b.evaluate(c_em), vs)
    write_json(d / "em_trace.json", {"loglik": [-10.0, -5.0, -4.0], "wall_time_s": 7.5})
    for k in range(2):
        write_json(d / "micrographs" / f"{k}.json", {"n_particles": 50, "size": 110, "L": L, "sigma": 1.0})
    files = {"lsq": {"npz": d / "lsq.npz", "mrc": d / "lsq.mrc"},
             "em": {"npz": d / "em.npz", "mrc": d / "em.mrc", "trace": d / "em_trace.json"}}
    res = evaluate_experiment("synthetic", truth_npz=d / "truth.npz", truth_mrc=d / "truth.mrc", estimates=files,
                              micrograph_infos=sorted((d / "micrographs").glob("*.json")),
                              settings=EvaluationSettings(grid_step=30.0))
    return d, res, truth, b, coef


@pytest.mark.slow
def test_evaluate_experiment_metrics(experiment):
    d, (metrics, aligned, truth, traces), truth0, b, coef = experiment
    gamma_true = 100 * 121 / (2 * 110**2)
    assert metrics["gamma_true"] == pytest.approx(gamma_true)
    lsq, em = metrics["estimators"]["lsq"], metrics["estimators"]["em"]
    assert lsq["reflected"] and not em["reflected"]
    # em is an exact rotation (error: BFGS tolerance); lsq carries 5 % coefficient noise
    assert em["relative_error"] < 1e-3 and em["relative_error_coef"] < 1e-3
    assert 0.02 < lsq["relative_error_coef"] < 0.08
    # voxel error ≈ coefficient error (orthonormal basis): independent of the alignment code path
    assert lsq["relative_error"] == pytest.approx(np.linalg.norm(aligned["lsq"] - truth0) / np.linalg.norm(truth0))
    assert np.all(np.asarray(em["fsc"]) > 0.999)
    assert em["resolution_0.5_bound"] and em["resolution_0.5"] == pytest.approx(11 * 2.0 / 5)
    assert lsq["gamma_relative_error"] == pytest.approx(abs(0.11 - gamma_true) / gamma_true)
    assert em["gamma"] is None and em["wall_time_s"] == 7.5 and em["iterations"] == 3
    assert lsq["wall_time_s"] == 3.0 and lsq["iterations"] == 20
    assert traces["em"]["label"] == "log-likelihood"


@pytest.mark.slow
def test_write_evaluation_files(experiment, tmp_path):
    d, (metrics, aligned, truth, traces), *_ = experiment
    figs = {f: tmp_path / "figures" / f"{f}.png" for f in ("fsc", "slices", "projections", "mip", "convergence")}
    write_evaluation(metrics, aligned, truth, traces, metrics_path=tmp_path / "metrics.json",
                     aligned_paths={k: tmp_path / "aligned" / f"{k}.mrc" for k in aligned}, figure_paths=figs)
    for p in figs.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with mrcfile.open(tmp_path / "aligned" / "lsq.mrc") as m:
        assert float(m.voxel_size.x) == pytest.approx(2.0)
        np.testing.assert_allclose(m.data, aligned["lsq"], atol=1e-5 * np.abs(aligned["lsq"]).max())
    back = json.loads((tmp_path / "metrics.json").read_text())
    assert set(back["estimators"]) == {"lsq", "em"} and len(back["frequencies"]) == 11 // 2 + 1


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "truth.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="truth.npz"):
        evaluate_experiment("x", truth_npz=tmp_path / "truth.npz", truth_mrc=tmp_path / "truth.mrc", estimates={})
    with pytest.raises(InputError, match="unknown keys"):
        EvaluationSettings.from_config({"grid": 3})


def test_gamma_from_shift_prior_matches_tiling_count():
    # Independent: place separated particles in a micrograph, cut L×L patches, count patches
    # touched by a particle, build ρ with that empty mass; γ must come back.
    from cryomtd.evaluate.metrics import gamma_from_shift_prior

    L, P = 7, 2100
    g = rng(11, "test-metrics")
    # particles on a jittered lattice of pitch 3L (well separated: ≤ 1 particle per patch)
    centres = np.array([(i, j) for i in range(0, P - 3 * L, 3 * L) for j in range(0, P - 3 * L, 3 * L)])
    centres = centres + g.integers(0, 2 * L, size=centres.shape)
    occupied = np.zeros((P // L, P // L), dtype=bool)
    for dy in (0, L - 1):  # a box [c, c+L) touches the patches of its first and last pixel
        for dx in (0, L - 1):
            occupied[(centres[:, 0] + dy) // L, (centres[:, 1] + dx) // L] = True
    frac = occupied.mean()
    rho = np.full((2 * L, 2 * L), 1.0)
    empty = np.zeros_like(rho, dtype=bool)
    empty[L, :] = empty[:, L] = True
    rho[empty] = (1 - frac) / empty.sum()
    rho[~empty] = frac / (~empty).sum()
    gamma = len(centres) * L**2 / P**2
    # Monte-Carlo over ~10⁴ particles: the touched-patch count per particle has sd ≈ 0.8,
    # so the relative error of the mean is ~1 %; 3 % tolerance.
    assert gamma_from_shift_prior(rho, L) == pytest.approx(gamma, rel=0.03)
    with pytest.raises(InputError, match="rho"):
        gamma_from_shift_prior(np.ones((3, 3)), L)


def test_stage_inputs_follow_enabled_flags():
    from cryomtd.evaluate.stage import evaluate_inputs

    cfg = {"micrographs": {"n_micrographs": 2}, "lsq": {"enabled": True}, "em": {}}
    d = evaluate_inputs(cfg, "e", "res", from_micrographs=True)
    assert d["micrographs"] == ["res/e/micrographs/0.json", "res/e/micrographs/1.json"]
    assert {"lsq_npz", "lsq_mrc", "em_npz", "em_mrc", "em_trace"} <= set(d)
    d = evaluate_inputs({"lsq": {"enabled": False}}, "e", "res", from_micrographs=False)  # exact moments
    assert d["micrographs"] == [] and not any(k.startswith(("lsq", "em")) for k in d)


def test_embed_coefficients_is_the_lower_degree_basis():
    # Independent: evaluate in the small basis directly and compare with the embedded vector.
    from cryomtd.evaluate.metrics import embed_coefficients

    big, small = SphericalBessel(9, 4), SphericalBessel(9, 2)
    c = rng(4, "test-metrics").standard_normal(small.size)
    e = embed_coefficients(c, big)
    np.testing.assert_allclose(big.evaluate(e), small.evaluate(c), atol=1e-12)
    assert embed_coefficients(np.ones(small.size + 1), big) is None
