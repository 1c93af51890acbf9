"""Evaluation without a ground truth: the half-map FSC, a reference map at another box and
voxel size, and the three experiment flavours (simulated, reference, half maps only) through
evaluate_experiment + write_evaluation + the summary."""

from __future__ import annotations

import csv
import json
import runpy
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryomtd import rotations
from cryomtd.basis import SphericalBessel
from cryomtd.estimate import Estimate
from cryomtd.evaluate import EvaluationAdvanced, EvaluationSettings, evaluate_experiment, write_evaluation
from cryomtd.evaluate.figures import FIGURES
from cryomtd.evaluate.metrics import half_map_metrics, summary_rows, write_summary
from cryomtd.evaluate.outputs import make_figure
from cryomtd.evaluate.reference import match_reference, resample_volume
from cryomtd.io import InputError, save_npz, write_json
from cryomtd.layout import Layout
from cryomtd.seeding import rng

FAST = EvaluationSettings(advanced=EvaluationAdvanced(grid_step=30.0))
BLOBS = [(1.0, 3.0, 0.0, 0.0), (0.7, 0.0, 3.0, 1.0), (0.5, -1.0, -2.0, 3.0), (0.8, -3.0, 1.0, -1.0)]


def blobs(L: int, voxel_size: float, width: float = 3.0, scale: float = 2.0) -> np.ndarray:
    """Gaussian blobs sampled at voxel centres: centres and width in Å (``scale`` Å per unit),
    so the same continuous object at any box and voxel size; centre voxel L//2 at the origin."""
    c = (np.arange(L) - L // 2) * voxel_size
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return sum(
        a * np.exp(-((x - scale * px) ** 2 + (y - scale * py) ** 2 + (z - scale * pz) ** 2) / (width * scale**2))
        for a, px, py, pz in BLOBS
    )


def shell_fsc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """FSC by an explicit loop over shells k = round(|f|·L), k = 0 … L//2 (independent of cryomtd.evaluate.fsc)."""
    L = a.shape[0]
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    f = np.fft.fftfreq(L) * L
    r = np.rint(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2))
    out = []
    for k in range(L // 2 + 1):
        s = r == k
        num = np.sum(fa[s] * np.conj(fb[s])).real
        den = np.sqrt(np.sum(np.abs(fa[s]) ** 2) * np.sum(np.abs(fb[s]) ** 2))
        out.append(num / den if den > 0 else 0.0)
    return np.array(out)


def write_mrc(path, vol, voxel_size):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(vol, dtype=np.float32))
        m.voxel_size = voxel_size


def write_estimate(layout: Layout, name: str, coef, basis: SphericalBessel, voxel_size: float, gamma=0.1):
    """An estimate in the common format with the basis recorded in ``extra`` (as lsq and em write it)."""
    extra = {"L": np.int64(basis.L), "ell_max": np.int64(basis.ell_max), "voxel_size": np.float64(voxel_size)}
    Estimate(name, coef, gamma, np.geomspace(1, 1e-2, 5), "least-squares cost", 2.0, {}, extra).save(
        layout.estimate(name)
    )
    write_mrc(layout.estimate_mrc(name), basis.evaluate(coef), voxel_size)


# --------------------------------------------------------------------------- half-map FSC
@pytest.mark.slow
def test_half_map_fsc_predicts_the_fsc_of_the_full_estimate_with_the_truth():
    """Two halves = truth + independent white noise in coefficient space (the second one rotated
    by a hidden rotation). The full-data estimate is their average, whose noise power is half a
    half's, so FSC(full, truth) = sqrt(2·F/(1+F)) with F the half-map FSC (Rosenthal & Henderson)."""
    L, vs = 15, 2.0
    b = SphericalBessel(L, 6)
    coef = b.expand(blobs(L, vs, width=2.0, scale=vs))
    truth = b.evaluate(coef)
    g = rng(3, "test-halfmaps")
    sigma = 0.7 * np.linalg.norm(coef) / np.sqrt(b.size)
    pred, obs, half, half_def = [], [], [], []
    for trial in range(8):
        c1 = coef + sigma * g.standard_normal(b.size)
        c2 = coef + sigma * g.standard_normal(b.size)
        R = rotations.random(1, 100 + trial)[0]
        m, v1, v2 = half_map_metrics(c1, b.rotate(c2, R), b, voxel_size=vs, settings=FAST)
        # the alignment fits half 2 onto half 1 at least as well as the hidden rotation does
        w1, w2 = b.evaluate(c1), b.evaluate(c2)
        assert m["half_correlation"] >= np.vdot(w1, w2) / (np.linalg.norm(w1) * np.linalg.norm(w2)) - 1e-3
        pred.append(m["fsc_full_estimate"])
        half.append(m["half_fsc"])
        half_def.append(shell_fsc(w1, w2))  # the halves in their common frame, no alignment
        obs.append(shell_fsc(b.evaluate((c1 + c2) / 2), truth))
    pred, obs, half, half_def = map(np.asarray, (pred, obs, half, half_def))
    # Aligning two noisy maps fits some noise (6 parameters), so the aligned half-map FSC is a
    # little above that of the halves in their true common frame: ≤ 0.03 on average per shell here.
    assert np.all(np.abs((half - half_def).mean(axis=0)) <= 0.03), (half - half_def).mean(axis=0)
    # The relation holds in expectation; one realisation has few degrees of freedom per shell (252
    # coefficients in all), so the 8 realisations are averaged and the tolerance is 4 standard
    # errors of the mean difference plus that 0.03 of the alignment. Compared where the mean
    # half-map FSC is above 0.143 (up to the half-map resolution): beyond, F is noise around 0
    # and sqrt(2F/(1+F)) of a clipped noisy F is biased upwards (the root magnifies small values).
    diff = pred - obs
    se = diff.std(axis=0, ddof=1) / np.sqrt(len(diff))
    keep = half.mean(axis=0) > 0.143
    assert keep.sum() >= 4, half.mean(axis=0)
    assert np.all(np.abs(diff.mean(axis=0))[keep] <= 4 * se[keep] + 0.03), (diff.mean(axis=0), se)
    # 0.143 between halves is 0.5 for the full estimate: sqrt(2·0.143/1.143) = 0.5
    from cryomtd.evaluate import resolution

    m, _, _ = half_map_metrics(c1, c2, b, voxel_size=vs, settings=FAST)
    assert m["resolution_half_0.143"] == pytest.approx(resolution(m["fsc_full_estimate"], 0.5, vs, L=L), rel=0.1)


# --------------------------------------------------------------------------- reference maps
def test_resample_volume_samples_the_same_object():
    """A smooth object sampled at 1.3 Å on 31³ and resampled to 2 Å on 11³ equals the object sampled
    there directly (independent definition: the analytic blobs); the error is that of cubic-spline
    interpolation of a band-limited function sampled at 1.3 Å (< 1 % here)."""
    direct = blobs(11, 2.0)
    got = resample_volume(blobs(31, 1.3), 1.3, 11, 2.0)
    assert np.linalg.norm(got - direct) / np.linalg.norm(direct) < 0.01
    # integer ratio: Fourier crop only, exact for a band-limited volume on the coarse grid
    fine = resample_volume(direct, 2.0, 22, 1.0)
    np.testing.assert_allclose(resample_volume(fine, 1.0, 11, 2.0), direct, atol=1e-10)


def test_reference_without_voxel_size_and_another_box_is_an_error_naming_the_file(tmp_path):
    b = SphericalBessel(11, 3)
    p = tmp_path / "ref.mrc"
    write_mrc(p, blobs(15, 1.0), 0.0)
    with pytest.raises(InputError, match=r"ref\.mrc.*no voxel size"):
        match_reference(p, b, 2.0)
    write_mrc(p, blobs(11, 2.0), 0.0)  # same box: the estimates' voxel size is assumed
    r = match_reference(p, b, 2.0)
    assert r.voxel_size == 2.0 and r.box == 11 and r.volume.shape == (11, 11, 11)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One object, three folders:

    * ``sim``: truth.npz/truth.mrc (L = 11, 2 Å, ℓ ≤ 4) and the estimates;
    * ``ref``: no truth, the same estimates, the halves under half1/half2, and a reference map of
      the same object at 27³ × 1 Å (another box and voxel size) in ``ref.mrc``;
    * ``data``: the same without the reference.

    lsq = reflected, rotated truth + 5 % coefficient noise; em = rotated truth; halves of each:
    the truth + 20 % independent coefficient noise, half 2 rotated.
    """
    root = tmp_path_factory.mktemp("results")
    L, ell_max, vs = 11, 4, 2.0
    b = SphericalBessel(L, ell_max)
    g = rng(17, "test-halfmaps")
    coef = b.expand(blobs(L, vs))
    sim = Layout(str(root), "sim")
    save_npz(sim.truth_npz, coef=coef, L=L, ell_max=ell_max, voxel_size=vs)
    write_mrc(sim.truth_mrc, b.evaluate(coef), vs)
    R1, R2, R3 = rotations.random(3, 21)
    parity = np.where(b.ell % 2 == 1, -1.0, 1.0)
    noise = np.linalg.norm(coef) / np.sqrt(b.size)
    full = {
        "lsq": b.rotate(parity * coef, R1) + 0.05 * noise * g.standard_normal(b.size),
        "em": b.rotate(coef, R2),
    }
    halves = {
        n: (
            coef + 0.2 * noise * g.standard_normal(b.size),
            b.rotate(coef + 0.2 * noise * g.standard_normal(b.size), R3),
        )
        for n in full
    }
    ref_path = root / "ref.mrc"
    write_mrc(ref_path, 3.7 * blobs(27, 1.0), 1.0)  # other units, box and voxel size
    for exp in ("sim", "ref", "data"):
        lay = Layout(str(root), exp)
        for n, c in full.items():
            write_estimate(lay, n, c, b, vs)
            if exp != "sim":
                for i in (1, 2):
                    write_estimate(lay.half(i), n, halves[n][i - 1], b, vs)
    return root, b, coef, ref_path


@pytest.mark.slow
def test_reference_at_another_box_gives_the_fsc_of_the_truth(dataset):
    """The reference (27³ × 1 Å, scaled by 3.7) is matched to 11³ × 2 Å and the basis: the FSC
    and correlation of each estimate against it equal those against the truth of the same size
    (difference: resampling of a band-limited object, < 0.02 per shell); the errors after the
    least-squares scale equal the errors against the truth to the same precision."""
    root, b, coef, ref_path = dataset
    sim = evaluate_experiment(Layout(str(root), "sim"), settings=FAST)
    ref = evaluate_experiment(Layout(str(root), "ref"), settings=FAST, reference=ref_path, halves=False)
    assert sim.metrics["truth"] == "simulated" and ref.metrics["truth"] == "reference"
    assert ref.metrics["reference_box"] == 27 and ref.metrics["reference_voxel_size"] == pytest.approx(1.0)
    assert ref.metrics["L"] == 11 and ref.metrics["ell_max"] == 4 and ref.metrics["voxel_size"] == 2.0
    # the matched reference is the truth up to the scale 3.7 (the same object, resampled)
    t = b.evaluate(coef)
    assert np.linalg.norm(ref.target.volume / 3.7 - t) / np.linalg.norm(t) < 0.01
    for n in ("lsq", "em"):
        ms, mr = sim.metrics["estimators"][n], ref.metrics["estimators"][n]
        np.testing.assert_allclose(mr["fsc"], ms["fsc"], atol=0.02)
        assert mr["correlation"] == pytest.approx(ms["correlation"], abs=0.01)
        assert mr["reflected"] == ms["reflected"]
        assert mr["relative_error"] == pytest.approx(ms["relative_error"], abs=0.02)
        assert mr["scale_to_reference"] == pytest.approx(3.7, rel=0.06)
        assert set(ms) - {"gamma_relative_error"} <= set(mr)  # the same keys as against a truth
    assert "gamma_true" not in ref.metrics and "gamma_relative_error" not in ref.metrics["estimators"]["lsq"]


# --------------------------------------------------------------------------- the three flavours
TRUTH_KEYS = {"fsc", "resolution_0.5", "resolution_0.143", "relative_error", "relative_error_coef", "correlation"}
HALF_KEYS = {"half_fsc", "resolution_half_0.143", "resolution_half_0.143_bound", "fsc_full_estimate"}


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["simulated", "reference", None])
def test_three_flavours_through_evaluate_and_write(dataset, tmp_path, flavour):
    root, _, _, ref_path = dataset
    exp = {"simulated": "sim", "reference": "ref", None: "data"}[flavour]
    layout = Layout(str(tmp_path), exp)
    shutil.copytree(Path(root) / exp, layout.root)
    ev = evaluate_experiment(layout, settings=FAST, reference=ref_path if flavour == "reference" else None)
    write_evaluation(ev, layout)
    back = json.loads(Path(layout.metrics).read_text())
    assert back["truth"] == flavour and back["half_maps"] is (flavour != "simulated")
    for f in FIGURES:
        assert Path(layout.figure(f)).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for n in ("lsq", "em"):
        m = back["estimators"][n]
        assert (TRUTH_KEYS <= set(m)) is (flavour is not None)
        assert not (TRUTH_KEYS & set(m)) or flavour is not None
        assert (HALF_KEYS <= set(m)) is (flavour != "simulated")
        assert Path(layout.aligned_mrc(n)).exists() is (flavour is not None)
        assert Path(layout.aligned_half_mrc(n)).exists() is (flavour != "simulated")
        assert m["gamma"] == pytest.approx(0.1)  # the estimate's own
        if flavour != "simulated":
            # halves with 20 % noise: resolved well beyond the centre, and the full-data estimate curve
            assert m["half_correlation"] > 0.9 and m["resolution_half_0.143"] < 11 * 2.0 / 2
            assert np.all(np.asarray(m["fsc_full_estimate"]) >= np.asarray(m["half_fsc"]) - 1e-12)
    if flavour is None:
        assert not {"gamma_true", "thresholds", "reference"} & set(back)
        assert back["half_map_threshold"] == 0.143
    rows = summary_rows([back])
    assert [r["estimator"] for r in rows] == ["lsq", "em"]
    assert all("resolution_half_0.143" in r for r in rows)
    assert all(("relative_error" in r) is (flavour is not None) for r in rows)
    assert all(r["truth"] == flavour for r in rows)


@pytest.mark.slow
def test_figures_of_a_data_experiment_name_the_half_maps(dataset, tmp_path):
    root, *_ = dataset
    ev = evaluate_experiment(Layout(str(root), "data"), settings=FAST)
    fig = make_figure(ev, "fsc")
    ax = fig.axes[0]
    labels = {t.get_gid(): t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("threshold-")}
    assert labels == {"threshold-0.143": "0.143: half-map criterion"}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("lsq half 1 vs half 2:") and ("FSC 0.143" in t or "above 0.143" in t) for t in legend), (
        legend
    )
    assert "half-map FSC" in ax.get_title() and "truth" not in ax.get_ylabel()
    fig = make_figure(ev, "slices")
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0] == "lsq half 1: slice z = 5" and titles[3] == "lsq half 2 (aligned):\nslice z = 5"
    assert "half-data estimates" in fig._suptitle.get_text()
    # with a reference: estimates against the reference, both criteria labelled
    ev = evaluate_experiment(Layout(str(root), "ref"), settings=FAST, reference=Path(root) / "ref.mrc")
    fig = make_figure(ev, "fsc")
    labels = {t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("threshold-")}
    assert labels == {"0.5: criterion against the reference", "0.143: half-map criterion"}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("em vs reference:") for t in legend) and any(
        t.startswith("em half 1 vs half 2") for t in legend
    )
    fig = make_figure(ev, "mip")
    assert fig.axes[0].get_title().startswith("reference: max along z")


def test_nothing_to_compare_with_is_an_error(tmp_path):
    layout = Layout(str(tmp_path), "x")
    b = SphericalBessel(7, 2)
    write_estimate(layout, "lsq", rng(1, "test-halfmaps").standard_normal(b.size), b, 1.5)
    with pytest.raises(InputError, match="nothing to compare"):
        evaluate_experiment(layout)


def test_summary_csv_has_the_half_map_column(tmp_path):
    a = {"experiment": "a", "kind": "cryo3d", "truth": "simulated", "estimators": {"lsq": {"relative_error": 0.2}}}
    d = {"experiment": "d", "kind": "cryo3d", "truth": None, "estimators": {"em": {"resolution_half_0.143": 6.5}}}
    write_json(tmp_path / "a" / "metrics.json", a)
    write_json(tmp_path / "d" / "metrics.json", d)
    write_summary([tmp_path / "a" / "metrics.json", tmp_path / "d" / "metrics.json"], tmp_path / "s.csv")
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [(r["experiment"], r["resolution_half_0.143"], r["relative_error"]) for r in rows] == [
        ("a", "", "0.2"),
        ("d", "6.5", ""),
    ]


# --------------------------------------------------------------------------- workflow plumbing
def test_stage_inputs_of_a_data_experiment():
    from cryomtd.evaluate.stage import evaluate_inputs

    cfg = {"data": {"micrographs": "raw/*.mrc", "L": 11}, "reference": "maps/ref.mrc", "lsq": {}, "em": {}}
    d = evaluate_inputs(cfg, "e", "res", from_micrographs=True, n_micrographs=3)
    assert "truth_npz" not in d and "truth_mrc" not in d
    assert d["micrographs"] == [f"res/e/micrographs/{k}.json" for k in range(3)]
    assert d["reference"] == "maps/ref.mrc"
    for n in ("lsq", "em"):
        assert d[f"{n}_npz"] == f"res/e/{n}.npz" and d[f"{n}_mrc"] == f"res/e/{n}.mrc"
        for i in (1, 2):
            assert d[f"{n}_half{i}_npz"] == f"res/e/half{i}/{n}.npz" == Layout("res", "e").half(i).estimate(n)
            assert d[f"{n}_half{i}_mrc"] == f"res/e/half{i}/{n}.mrc"
    d = evaluate_inputs({**cfg, "reference": None, "em": {"enabled": False}}, "e", "res", True, n_micrographs=1)
    assert "reference" not in d and not any(k.startswith("em") for k in d) and "lsq_half2_npz" in d
    with pytest.raises(ValueError, match="n_micrographs"):
        evaluate_inputs(cfg, "e", "res", from_micrographs=True)
    # placeholders pass through (the rule's patterns)
    assert evaluate_inputs(cfg, "{exp}", "res", True, n_micrographs=0)["lsq_half1_npz"] == "res/{exp}/half1/lsq.npz"


class _Files(dict):
    """The part of Snakemake's named-file lists the rule script uses: attribute access and keys()."""

    __getattr__ = dict.__getitem__


class _Snakemake:
    def __init__(self, input, output, params, log):
        self.input, self.output, self.params, self.log = _Files(input), _Files(output), _Files(params), log


@pytest.mark.slow
def test_rule_script_on_a_data_experiment(dataset, tmp_path, repo_root):
    """scripts/evaluate.py with the inputs of evaluate_inputs for a data experiment with a reference."""
    from cryomtd.evaluate.stage import FIGURES as RULE_FIGURES
    from cryomtd.evaluate.stage import evaluate_inputs

    root, _, _, ref_path = dataset
    results = tmp_path / "results"
    shutil.copytree(Path(root) / "ref", results / "ref")
    for k in range(2):
        write_json(Layout(str(results), "ref").micrograph_info(k), {"size": 200, "L": 11, "sigma": 1.0})
    cfg = {"data": {"micrographs": "raw/*.mrc", "L": 11}, "reference": str(ref_path), "evaluate": {}}
    inp = evaluate_inputs(cfg, "ref", str(results), True, n_micrographs=2)
    lay = Layout(str(results), "ref")
    sm = _Snakemake(
        inp,
        {"metrics": lay.metrics, "aligned": lay.aligned_dir},
        {"settings": {"advanced": {"grid_step": 30}}, "gamma": None, "figures": list(RULE_FIGURES)},
        [str(tmp_path / "evaluate.log")],
    )
    runpy.run_path(str(repo_root / "scripts" / "evaluate.py"), init_globals={"snakemake": sm})
    back = json.loads(Path(lay.metrics).read_text())
    assert back["truth"] == "reference" and back["half_maps"] and back["n_micrographs"] == 2
    assert {"resolution_0.5", "resolution_half_0.143", "scale_to_reference"} <= set(back["estimators"]["em"])
    assert Path(lay.aligned_mrc("em")).exists() and Path(lay.aligned_half_mrc("em")).exists()
