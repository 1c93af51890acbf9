"""Point-group detection from the moments (``lsq.symmetry: auto``, cryomtd.mom3d.detect) and the
relaxation of a symmetric fit to C1.

Independent definitions: symmetric volumes are built by averaging a random volume over the
group (``symmetrize``) and then turned into a random orientation (the detection must not
need the axes); the merged subspaces are checked against the m = 0 (axial) coefficient
count of the basis; errors are coefficient errors after the best rotation/reflection
(``evaluate.align_coefficients``).
"""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.basis import SphericalBessel
from cryomtd.basis.symmetry import symmetric_subspace, symmetrize
from cryomtd.io import InputError
from cryomtd.mom3d import LsqSettings, expected_moments, fit
from cryomtd.mom3d.detect import candidate_groups, choose_group, detect_symmetry, moment_noise_floor, relax_to_c1
from cryomtd.rotations import random as random_rotations
from cryomtd.settings import override

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _volume(basis, group, seed=7):
    """A smooth random volume with point group ``group`` in a random orientation."""
    g = np.random.default_rng(seed)
    c = g.standard_normal(basis.size) * np.exp(-0.3 * np.asarray(basis.ell))
    c = symmetrize(c, basis, group)
    return basis.rotate(c, random_rotations(1, np.random.default_rng(seed + 1))[0])


def _align_error(basis, est, truth):
    from cryomtd.evaluate.align import align_coefficients, reflect_coefficients

    R, reflected, _ = align_coefficients(est, truth, basis)
    e = reflect_coefficients(est, basis) if reflected else est
    return float(np.linalg.norm(basis.rotate(e, R) - truth) / np.linalg.norm(truth))


def test_candidates_are_sorted_by_freedom_and_equal_subspaces_merged():
    # at ell_max = 3, |m| <= 3: C4 ... C8 keep only m = 0 (axially symmetric volumes), so they
    # share one subspace whose dimension is the number of m = 0 coefficients
    b = SphericalBessel(7, 3)
    groups = candidate_groups(b)
    ks = [k for _, k, _ in groups]
    assert ks == sorted(ks)
    assert groups[-1][:2] == ("C1", b.size)
    by = {g: (k, eq) for g, k, eq in groups}
    assert by["C4"][1] == ["C5", "C6", "C7", "C8"]
    assert by["C4"][0] == int(np.sum(np.asarray(b.m) == 0))
    assert "C8" not in by
    # a distinct group keeps its own subspace
    assert by["C3"][0] == symmetric_subspace(b, "C3").shape[1]


def test_rule_picks_the_most_symmetric_group_not_rejected():
    sizes = {"O": 3, "C4": 10, "C2": 18, "C1": 36}
    # C4 exact: chosen although C2 and C1 fit too
    assert choose_group({"O": 0.5, "C4": 1e-20, "C2": 1e-21, "C1": 1e-9}, sizes, 1e-12, 10)[0] == "C4"
    # nothing at the floor: C4 within a factor 10 of the best (C1 stuck at 1e-8) is accepted
    assert choose_group({"O": 0.5, "C4": 5e-8, "C2": 2e-8, "C1": 1e-8}, sizes, 1e-12, 10) == ("C4", 1e-7)
    # an asymmetric molecule: only C1 fits
    assert choose_group({"O": 0.5, "C4": 1e-3, "C2": 1e-4, "C1": 1e-8}, sizes, 1e-12, 10)[0] == "C1"
    # noisy moments: everything below the noise floor is indistinguishable, the most symmetric wins
    assert choose_group({"O": 0.5, "C4": 2e-5, "C2": 1e-5, "C1": 1e-6}, sizes, 3e-5, 10)[0] == "C4"


def test_relaxed_c1_cost_can_reject_the_detected_group():
    from cryomtd.mom3d.detect import after_relaxation

    summary = {
        "group": "C2",
        "costs": {"D2": 7e-7, "C2": 2e-8, "C1": 1e-8},
        "sizes": {"D2": 13, "C2": 22, "C1": 40},
        "floor": 1e-12,
        "factor": 10.0,
        "threshold": 1e-7,
    }
    # the relaxation reached 6e-11: C2 (2e-8) is no longer within a factor 10 of the best
    out = after_relaxation(summary, 6e-11)
    assert (out["group"], out["detected"], out["threshold"]) == ("C1", "C2", pytest.approx(6e-10))
    assert out["costs"] == {"D2": 7e-7, "C2": 2e-8, "C1": 6e-11}
    # a relaxation that gains little keeps the group (a symmetric molecule)
    assert after_relaxation(summary, 5e-9)["group"] == "C2"


def test_noise_floor_of_micrograph_moments_scales_with_the_pixel_count():
    from cryomtd.moments import Moments2D

    b = SphericalBessel(7, 2)
    m = expected_moments(b, _volume(b, "C1"), 0.1, 4)
    assert moment_noise_floor(m, 4) == 0.0  # exact model moments: no pixel count
    few = Moments2D.from_dense(m.a1, m.a2, m.a3, count=10_000, window=4)
    many = Moments2D.from_dense(m.a1, m.a2, m.a3, count=1_000_000, window=4)
    assert moment_noise_floor(few, 4) == pytest.approx(100 * moment_noise_floor(many, 4), rel=1e-9)


@pytest.mark.parametrize("group", ["C1", "C3", "D2"])
def test_detection_from_exact_moments_small_candidate_set(group):
    # L = 7, ell_max = 3: a few candidates, two screened restarts each (seconds)
    b = SphericalBessel(7, 3)
    data = expected_moments(b, _volume(b, group), 0.1, 4)
    det = detect_symmetry(data, b, sigma=0.0, seed=0, exact=True, candidates=("C2", "C3", "D2", "T"), detect_restarts=2)
    assert det.group == group, det.costs
    assert det.costs[group] <= det.floor
    # every group more symmetric than the answer was fitted and rejected
    more = [g for g in det.costs if det.sizes[g] < det.sizes[group]]
    assert all(det.costs[g] > det.threshold for g in more)


@pytest.mark.slow
@pytest.mark.parametrize("group", ["C1", "C2", "C3", "C4", "D2"])
def test_detection_from_exact_moments_all_candidates(group):
    # the default candidates C1-C8, D2-D6, T, O at ell_max = 4 (C4 differs from C5-C8 there);
    # 30-70 s each on one thread
    b = SphericalBessel(7, 4)
    data = expected_moments(b, _volume(b, group), 0.1, 4)
    det = detect_symmetry(data, b, sigma=0.0, seed=0, exact=True)
    assert det.group == group, det.costs


def test_relaxation_leaves_a_symmetric_truth_in_place():
    # C1 relaxation from the exact C2 truth: the random asymmetric kick (1e-2 of the norm) is
    # pulled back by the moments (cost ~ delta^4 along it) onto the truth's orbit (the fit may
    # turn it by a small rotation, which the moments cannot see: compare after alignment)
    from cryomtd.seeding import rng

    b = SphericalBessel(7, 2)
    truth = symmetrize(np.random.default_rng(23).standard_normal(b.size), b, "C2")
    data = expected_moments(b, truth, 0.1, 4)
    s = override(LsqSettings(), "lsq", relax=200, relax_perturbation=1e-2)
    res = relax_to_c1(data, b, truth, 0.1, "C2", s, rng=rng(0, "test", 0), sigma=0.0)
    assert res.cost < 1e-20
    assert _align_error(b, res.coef, truth) < 1e-4
    assert abs(res.gamma - 0.1) < 1e-6


def test_relaxation_fits_the_asymmetric_part_of_a_nearly_symmetric_truth():
    # a C2 volume plus a 5 % asymmetric part: the C2 fit cannot represent it (error >= 5 %);
    # relaxed to C1 the error drops well below that
    from cryomtd.seeding import rng

    b = SphericalBessel(7, 2)
    g = np.random.default_rng(23)
    sym = symmetrize(g.standard_normal(b.size), b, "C2")
    asym = g.standard_normal(b.size)
    asym -= symmetrize(asym, b, "C2")
    truth = sym + 0.05 * np.linalg.norm(sym) / np.linalg.norm(asym) * asym
    data = expected_moments(b, truth, 0.1, 4)
    start = fit(data, b, sigma=0.0, restarts=2, seed=1, optimizer="gauss-newton", max_iterations=80, symmetry="C2")
    e_sym = _align_error(b, start.coef, truth)
    assert e_sym > 0.04
    res = relax_to_c1(data, b, start.coef, start.gamma, "C2", rng=rng(0, "test", 1), sigma=0.0, relax=300)
    assert res.cost < start.cost
    assert _align_error(b, res.coef, truth) < 0.5 * e_sym


def test_auto_fit_reports_the_detected_group():
    b = SphericalBessel(7, 3)
    truth = _volume(b, "C3")
    data = expected_moments(b, truth, 0.1, 4)
    res = fit(
        data,
        b,
        sigma=0.0,
        seed=0,
        symmetry="auto",
        restarts=1,
        optimizer="gauss-newton",
        max_iterations=40,
        candidates=("C2", "C3", "D2"),
        detect_restarts=2,
    )
    assert res.symmetry == "C3"
    assert res.detection["group"] == "C3"
    assert set(res.detection["costs"]) <= {"D2", "C3", "C2", "C1"}
    assert _align_error(b, res.coef, truth) < 1e-3


def test_bad_detection_settings_name_the_key():
    b = SphericalBessel(7, 1)
    data = expected_moments(b, _volume(b, "C1"), 0.1, 3)
    with pytest.raises(InputError, match="lsq.advanced.candidates"):
        detect_symmetry(data, b, candidates=("C2", "X9"))
    with pytest.raises(InputError, match="lsq.advanced.detect_factor"):
        detect_symmetry(data, b, detect_factor=0.5)
    with pytest.raises(InputError, match="lsq.symmetry"):
        from cryomtd.mom3d.fit import fit_restart
        from cryomtd.seeding import rng

        fit_restart(data, b, rng=rng(0, "x", 0), symmetry="auto")


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="not reached: with symmetry auto and the default settings this blob volume ends at relative "
    "error 0.378 (detected C2, relaxed to C1 at cost 5.7e-9; plain C1 fits 0.44-0.51, cost 1e-8: a "
    "near-translated copy); docs/mom3d.md 'Unknown symmetry'",
)
def test_hidden_style_blobs_reach_the_truth_from_exact_moments():
    # the target: 11^3, ell_max = 3, Gaussian blobs, no symmetry, exact moments, the
    # default fit (symmetry auto, the default restarts): relative error < 0.1 after alignment
    from cryomtd.volume import gaussian_blobs

    b = SphericalBessel(11, 3)
    truth = b.expand(gaussian_blobs(11, 6, seed=0))
    data = expected_moments(b, truth, 0.1, 6)
    res = fit(data, b, sigma=0.0, seed=0, symmetry="auto")
    err = _align_error(b, res.coef, truth)
    print(
        f"hidden-style blobs: symmetry {res.symmetry}, detection {res.detection}, cost {res.cost:.3e}, error {err:.3f}"
    )
    assert err < 0.1


def test_stage_files_carry_the_detected_group(tmp_path):
    # detect_symmetry_file → restarts in the detected group → pick_best_file: lsq.npz records
    # the group and the per-group costs, and evaluate's estimate_info puts them in metrics.json
    from cryomtd.estimate import Estimate
    from cryomtd.evaluate.metrics import estimate_info
    from cryomtd.io import read_json, save_npz
    from cryomtd.mom3d.stage import detect_symmetry_file, exact_moments_file, pick_best_file, recover_restart_file

    b = SphericalBessel(7, 3)
    truth = tmp_path / "truth.npz"
    save_npz(truth, coef=_volume(b, "D2"), L=np.int64(7), ell_max=np.int64(3), voxel_size=np.float64(2.0))
    moments = tmp_path / "moments.npz"
    exact_moments_file(truth, moments, gamma=0.1, window=4)
    s = override(
        LsqSettings(),
        "lsq",
        symmetry="auto",
        restarts=1,
        optimizer="gauss-newton",
        max_iterations=30,
        candidates=("C2", "C3", "D2"),
        detect_restarts=2,
    )
    sym, det = tmp_path / "lsq" / "symmetry.json", tmp_path / "lsq" / "detected.npz"
    assert detect_symmetry_file(moments, sym, det, L=7, ell_max=3, settings=s, seed=0, exact=True) == "D2"
    summary = read_json(sym)
    assert summary["group"] == "D2" and summary["costs"]["D2"] <= summary["floor"]
    with pytest.raises(InputError, match="symmetry.json"):
        recover_restart_file(moments, tmp_path / "r0.npz", L=7, ell_max=3, settings=s, seed=0, restart=0, exact=True)
    r0 = tmp_path / "lsq" / "restart_0.npz"
    recover_restart_file(moments, r0, L=7, ell_max=3, settings=s, seed=0, restart=0, exact=True, symmetry_json=sym)
    z = np.load(r0)
    assert str(z["symmetry"]) == "D2"
    pick_best_file([r0, det], tmp_path / "lsq.npz", tmp_path / "lsq.mrc", settings=s, symmetry_json=sym)
    est = Estimate.load(tmp_path / "lsq.npz")
    info = estimate_info(est, 7)
    assert info["symmetry"] == "D2"
    assert info["symmetry_detection"]["costs"] == summary["costs"]


@pytest.mark.slow
def test_workflow_auto_symmetry_reaches_metrics(tmp_path, run_workflow):
    # symmetry auto through Snakemake: detect_symmetry → recover_lsq → refine_lsq (+ relaxation)
    # → pick_best_restart → evaluate; metrics.json names the detected group and its costs (with
    # these few iterations the C1 fit is far from converged, so a symmetric group may be chosen)
    import json

    import yaml

    exp = "autowf"
    config = {
        "experiments": {
            exp: {
                "kind": "cryo3d",
                "seed": 3,
                "volume": {"source": "data/structures/5PTI.pdb", "L": 7},
                "basis": {"ell_max": 2},
                "moments": {"source": "exact", "window": 3},
                "micrographs": {"gamma": 0.1},
                "lsq": {
                    "restarts": 2,
                    "symmetry": "auto",
                    "max_iterations": 10,
                    "refine_top": 1,
                    "refine_iterations": 10,
                    "advanced": {
                        "optimizer": "gauss-newton",
                        "marching": False,
                        "a2_first": False,
                        "threads": 2,
                        "candidates": ["C2", "D2"],
                        "detect_restarts": 1,
                        "detect_iterations": 10,
                        "detect_refine": 10,
                    },
                },
                "em": {"enabled": False},
            }
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = run_workflow(tmp_path, f"results/{exp}/metrics.json")
    assert "detect_symmetry" in out
    m = json.loads((tmp_path / "results" / exp / "metrics.json").read_text())
    lsq = m["estimators"]["lsq"]
    det = lsq["symmetry_detection"]
    assert lsq["symmetry"] == det["group"] in det["costs"]
    assert set(det["costs"]) <= {"C2", "D2", "C1"} and det["costs"][det["group"]] <= det["threshold"]
    d = tmp_path / "results" / exp / "lsq"
    fitted = det.get("detected", det["group"])  # the group the restarts ran in (before the relaxation)
    assert str(np.load(d / "refine_0.npz")["symmetry"]) == fitted
    assert str(np.load(d / "restart_0.npz")["symmetry"]) == fitted
