"""Metrics files, summary table and figures of the evaluation stage on a synthetic experiment."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryomtd import rotations
from cryomtd.basis import SphericalBessel
from cryomtd.estimate import Estimate
from cryomtd.evaluate import (
    EvaluationAdvanced,
    EvaluationSettings,
    evaluate_experiment,
    gamma_from_micrographs,
    summary_rows,
    write_evaluation,
    write_summary,
)
from cryomtd.evaluate.figures import FIGURES
from cryomtd.io import InputError, save_npz, write_json
from cryomtd.layout import Layout
from cryomtd.seeding import rng


def test_gamma_from_micrographs_matches_definition():
    infos = [{"n_particles": 30, "size": 200, "L": 11}, {"n_particles": 12, "size": [100, 150], "L": 11}]
    # γ = Σ n·L² / Σ pixels (docs/conventions.md)
    assert gamma_from_micrographs(infos) == pytest.approx((42 * 121) / (200 * 200 + 100 * 150))


def test_summary_reads_both_layouts(tmp_path):
    m3 = {
        "experiment": "a3",
        "kind": "cryo3d",
        "L": 11,
        "gamma_true": 0.1,
        "frequencies": [0, 0.1],
        "estimators": {
            "lsq": {"relative_error": 0.2, "fsc": [1, 0.5], "rotation": [[1, 0, 0]] * 3},
            "em": {"relative_error": 0.1, "gamma": None},
        },
    }
    m1 = {
        "experiment": "b1",
        "L": 21,
        "gamma_true": 0.1,
        "lsq": {"rel_error": 0.05, "gamma_rel_error": 0.01, "restart_costs": [1.0, 2.0]},
        "em": {"rel_error": 0.02, "loglik": -3.5},
    }
    write_json(tmp_path / "a3" / "metrics.json", m3)
    write_json(tmp_path / "b1" / "metrics.json", m1)
    out = tmp_path / "summary.csv"
    write_summary([tmp_path / "a3" / "metrics.json", tmp_path / "b1" / "metrics.json"], out, kinds=["cryo3d", "mtd1d"])
    rows = list(csv.DictReader(out.open()))
    assert [(r["experiment"], r["kind"], r["estimator"]) for r in rows] == [
        ("a3", "cryo3d", "lsq"),
        ("a3", "cryo3d", "em"),
        ("b1", "mtd1d", "lsq"),
        ("b1", "mtd1d", "em"),
    ]
    assert [float(r["relative_error"]) for r in rows] == [0.2, 0.1, 0.05, 0.02]
    assert rows[2]["gamma_relative_error"] == "0.01"
    assert "fsc" not in rows[0] and "restart_costs" not in rows[2]  # lists stay in metrics.json
    assert summary_rows([{"experiment": "x", "note": "none"}]) == [
        {"experiment": "x", "kind": "", "estimator": "", "note": "none"}
    ]


def _write_mrc(path, vol, voxel_size):
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(vol, dtype=np.float32))
        m.voxel_size = voxel_size


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """truth in the basis; lsq = reflected + rotated truth with 5 % coefficient noise; em = rotated truth.

    The estimates are written in the common estimate format (cryomtd.estimate), em without a
    γ but with its shift prior ρ (uniform: every shift equally likely)."""
    root = tmp_path_factory.mktemp("results")
    layout = Layout(str(root), "synthetic")
    L, ell_max, vs = 11, 4, 2.0
    b = SphericalBessel(L, ell_max)
    g = rng(7, "test-metrics")
    c = np.arange(L) - L // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    raw = sum(
        a * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / 3.0)
        for a, px, py, pz in [(1.0, 2, 0, 0), (0.7, 0, 2.5, 1), (0.5, -1, -1, 2.5), (0.8, -2, 1, -1)]
    )
    coef = b.expand(raw)
    truth = b.evaluate(coef)
    save_npz(layout.truth_npz, coef=coef, L=L, ell_max=ell_max, voxel_size=vs)
    _write_mrc(Path(layout.truth_mrc), truth, vs)
    R1, R2 = rotations.random(2, 8)
    parity = np.where(b.ell % 2 == 1, -1.0, 1.0)
    c_lsq = b.rotate(parity * coef, R1)
    c_lsq = c_lsq + 0.05 * np.linalg.norm(c_lsq) / np.sqrt(b.size) * g.standard_normal(b.size)
    Estimate(
        "lsq",
        c_lsq,
        0.11,
        np.geomspace(1, 1e-3, 20),
        "least-squares cost",
        3.0,
        {"restarts": 2},
        {"cost": 1e-3, "stage_ends": np.array([8, 14, 20])},
    ).save(layout.estimate("lsq"))
    _write_mrc(Path(layout.estimate_mrc("lsq")), b.evaluate(c_lsq), vs)
    c_em = b.rotate(coef, R2)
    rho = np.full((2 * L, 2 * L), 1.0)
    Estimate(
        "em",
        c_em,
        float("nan"),
        np.array([-10.0, -5.0, -4.0]),
        "log-likelihood per patch",
        7.5,
        {"fraction": 0.25},
        {"rho": rho},
    ).save(layout.estimate("em"))
    _write_mrc(Path(layout.estimate_mrc("em")), b.evaluate(c_em), vs)
    for k in range(2):
        write_json(layout.micrograph_info(k), {"n_particles": 50, "size": 110, "L": L, "sigma": 1.0})
    ev = evaluate_experiment(
        layout,
        micrograph_infos=[layout.micrograph_info(k) for k in range(2)],
        settings=EvaluationSettings(advanced=EvaluationAdvanced(grid_step=30.0)),
    )
    return layout, ev, truth, b, coef, rho


@pytest.mark.slow
def test_evaluate_experiment_metrics(experiment):
    _, ev, truth0, *_ = experiment
    metrics, aligned = ev.metrics, ev.aligned
    gamma_true = 100 * 121 / (2 * 110**2)
    assert metrics["experiment"] == "synthetic" and metrics["gamma_true"] == pytest.approx(gamma_true)
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
    # em: NaN γ in the estimate → the γ of its shift prior (uniform ρ: 1 − (4L−1)/(2L)² non-empty)
    L = 11
    assert em["gamma"] == pytest.approx((1 - (4 * L - 1) / (2 * L) ** 2) * L**2 / (2 * L - 1) ** 2)
    assert em["wall_time_s"] == 7.5 and em["iterations"] == 3 and "final_cost" not in em
    assert lsq["wall_time_s"] == 3.0 and lsq["iterations"] == 20 and lsq["final_cost"] == 1e-3
    assert ev.traces["em"].label == "log-likelihood per patch" and "subset" in ev.traces["em"].note
    assert ev.traces["lsq"].stage_ends == (8, 14, 20) and ev.traces["lsq"].note == ""


@pytest.mark.slow
def test_write_evaluation_files(experiment, tmp_path):
    _, ev, *_ = experiment
    out = Layout(str(tmp_path), "copy")
    write_evaluation(ev, out)
    for f in FIGURES:
        assert Path(out.figure(f)).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with mrcfile.open(out.aligned_mrc("lsq")) as m:
        assert float(m.voxel_size.x) == pytest.approx(2.0)
        np.testing.assert_allclose(m.data, ev.aligned["lsq"], atol=1e-5 * np.abs(ev.aligned["lsq"]).max())
    back = json.loads(Path(out.metrics).read_text())
    assert set(back["estimators"]) == {"lsq", "em"} and len(back["frequencies"]) == 11 // 2 + 1


@pytest.mark.slow
def test_fsc_figure_of_an_evaluation_names_the_criterion(experiment):
    from cryomtd.evaluate.outputs import make_figure

    _, ev, *_ = experiment
    fig = make_figure(ev, "fsc")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # em equals the truth: FSC above 0.5 to the last shell, the value is a bound (2.5 · 2 Å · 11/5)
    assert any(t.startswith("em: above 0.5 to the last shell (4.4 Å)") for t in legend), legend
    assert any(t.startswith("lsq:") and ("at FSC 0.5" in t or "last shell" in t) for t in legend), legend


def test_bad_inputs_name_the_file(tmp_path):
    layout = Layout(str(tmp_path), "x")
    Path(layout.root).mkdir()
    Path(layout.truth_npz).write_bytes(b"not a zip")
    with pytest.raises(InputError, match="truth.npz"):
        evaluate_experiment(layout, [])
    with pytest.raises(InputError, match="unknown key grid"):
        EvaluationSettings.from_config({"grid": 3})


def test_estimate_in_the_old_layout_is_rejected_naming_the_file(tmp_path):
    """An estimate file without the common format's keys is an error naming the file and the key."""
    layout = Layout(str(tmp_path), "x")
    b = SphericalBessel(7, 2)
    coef = rng(2, "test-metrics").standard_normal(b.size)
    save_npz(layout.truth_npz, coef=coef, L=7, ell_max=2)
    _write_mrc(Path(layout.truth_mrc), b.evaluate(coef), 1.0)
    save_npz(layout.estimate("lsq"), coef=coef, gamma=0.1, cost_trace=np.ones(3))
    _write_mrc(Path(layout.estimate_mrc("lsq")), b.evaluate(coef), 1.0)
    with pytest.raises(InputError, match=r"lsq\.npz.*(estimator|trace)"):
        evaluate_experiment(layout)


def test_estimate_gamma_and_trace_without_extras():
    """γ: the estimate's own when finite; NaN without ρ stays None. No trace → no panel."""
    from cryomtd.evaluate.metrics import estimate_gamma, estimate_trace

    e = Estimate("x", np.zeros(3), 0.2, np.array([]), "", float("nan"))
    assert estimate_gamma(e, 5) == 0.2 and estimate_trace(e) is None
    e = Estimate(
        "em",
        np.zeros(3),
        float("nan"),
        np.array([1.0, 2.0]),
        "log-likelihood per patch",
        1.0,
        {"fraction": 1.0},
        {"rho": np.ones((4, 4))},
    )  # ρ of the wrong shape for L=5: ignored
    assert estimate_gamma(e, 5) is None and estimate_trace(e).note == ""


@pytest.mark.parametrize("B", [7, 15])
def test_gamma_from_shift_prior_counts_the_patches_holding_a_centre(B):
    """Independent construction: non-overlapping boxes on a jittered lattice, the L×L tiling,
    and for each patch the true state of the EM model — the shift s of the box whose centre
    pixel lies in it ((corner − t − patch origin) mod N, per axis), else a sliver or empty state
    at random. The histogram of those states is the ideal ρ; γ must come back within the
    Monte-Carlo error of the particle count (placement inside the tiling: exact up to the
    edge patches)."""
    from cryomtd.evaluate.metrics import gamma_from_shift_prior

    L, P = 7, 2100
    t = (B - L) // 2
    N = L + B
    g = rng(11, "test-metrics")
    corners = np.array([(i, j) for i in range(0, P - 2 * L, 2 * L) for j in range(0, P - 2 * L, 2 * L)])
    corners = corners + g.integers(0, L + 1, size=corners.shape)  # boxes ≥ L apart: never overlap
    centres = corners + L // 2
    patch = centres // L  # the patch holding each centre
    s = (corners - t - patch * L) % N  # box pixel u at crop pixel (u + s) mod N
    counts = np.zeros((N, N))
    np.add.at(counts, (s[:, 0], s[:, 1]), 1.0)
    n_patches = (P // L) ** 2
    centre_states = ((t + L // 2 + np.arange(N)) % N) < L
    others = np.argwhere(~np.outer(centre_states, centre_states))
    pick = others[g.integers(0, len(others), size=n_patches - len(centres))]
    np.add.at(counts, (pick[:, 0], pick[:, 1]), 1.0)
    gamma = len(centres) * L**2 / P**2
    assert gamma_from_shift_prior(counts, L) == pytest.approx(gamma, rel=1e-3)
    with pytest.raises(InputError, match="rho"):
        gamma_from_shift_prior(np.ones((3, 3)), L)


def test_stage_inputs_follow_enabled_flags():
    from cryomtd.evaluate.stage import evaluate_inputs

    cfg = {"micrographs": {"n_micrographs": 2}, "lsq": {"enabled": True}, "em": {}}
    d = evaluate_inputs(cfg, "e", "res", from_micrographs=True)
    assert d["micrographs"] == ["res/e/micrographs/0.json", "res/e/micrographs/1.json"]
    assert d["em_npz"] == "res/e/em.npz" and d["lsq_mrc"] == "res/e/lsq.mrc" and d["truth_npz"] == "res/e/truth.npz"
    assert {"lsq_npz", "lsq_mrc", "em_npz", "em_mrc"} <= set(d)
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
