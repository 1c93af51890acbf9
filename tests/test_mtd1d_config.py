"""The mtd1d config block: bad values stop validation naming the key; defaults fill; CLI runs a stage."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from snakemake.utils import validate

from cryomtd.cli import main
from cryomtd.cli.mtd1d import load_experiment
from cryomtd.io import InputError
from cryomtd.mtd1d import Moments1D

SCHEMA = "workflow/schemas/config.schema.yaml"
GOOD = {"kind": "mtd1d", "seed": 1, "N": 5000, "segments": 2, "L": 6, "placement": {"gamma": 0.1}}


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda e: e["placement"].update(gamma="high"), "gamma"),
        (lambda e: e["placement"].update(spacing=3), "spacing"),
        (lambda e: e.update(signal={"type": "sine"}), "sine"),
        (lambda e: e.update(lsq={"restart": 3}), "restart"),
        (lambda e: e.update(sigma=-1.0), "sigma"),
        (lambda e: e.update(N=10.5), "N"),
        (lambda e: e.update(em={"max_iterations": 50}), "max_iterations"),
        (lambda e: e.update(chunk=1000), "chunk"),
        (lambda e: e.update(advanced={"moments_dtype": "float16"}), "float16"),
    ],
)
def test_bad_mtd1d_values_are_rejected_naming_the_key(repo_root, monkeypatch, mutate, needle):
    monkeypatch.chdir(repo_root)
    exp = copy.deepcopy(GOOD)
    mutate(exp)
    cfg = {"experiments": {"x": exp}}
    with pytest.raises(Exception) as exc:
        validate(cfg, SCHEMA)
    assert needle in str(exc.value)


def test_defaults_come_from_the_schema(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"experiments": {"x": {"kind": "mtd1d", "seed": 0}}}))
    s = load_experiment(tmp_path / "c.yaml", "x")
    assert s.L == 21 and s.placement.gamma == 0.05 and s.placement.min_gap is None
    assert s.lsq.restarts >= 1 and s.em.segments is None and s.em_segments_used == s.segments
    assert s.advanced.chunk == 1048576 and s.advanced.moments_dtype == "float64"
    with pytest.raises(InputError, match="experiments.x.placement.gamma"):
        (tmp_path / "d.yaml").write_text(
            yaml.safe_dump({"experiments": {"x": {"kind": "mtd1d", "seed": 0, "placement": {"gamma": "a"}}}})
        )
        load_experiment(tmp_path / "d.yaml", "x")


def test_cli_segment_and_merge_write_the_rule_files(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"experiments": {"x": GOOD}}))
    for k in range(2):
        assert (
            main(
                [
                    "mtd1d",
                    "segment",
                    "--config",
                    str(tmp_path / "c.yaml"),
                    "-e",
                    "x",
                    "--index",
                    str(k),
                    "--out",
                    str(tmp_path / f"s{k}.npz"),
                ]
            )
            == 0
        )
    assert (
        main(["mtd1d", "merge", "--out", str(tmp_path / "m.npz"), str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz")])
        == 0
    )
    m = Moments1D.load(tmp_path / "m.npz")
    assert m.n == 5000 and m.L == 6
    with np.load(tmp_path / "m.npz") as f:
        assert 0.05 < float(f["gamma_true"]) < 0.15
    assert (
        main(
            [
                "mtd1d",
                "segment",
                "--config",
                str(tmp_path / "c.yaml"),
                "-e",
                "nope",
                "--index",
                "0",
                "--out",
                str(tmp_path / "z.npz"),
            ]
        )
        == 2
    )
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_em_regenerates_exactly_the_data_the_segment_job_saw(tmp_path):
    """EM does not read stored data: it regenerates segment k from (seed, k). The moments of the
    regenerated samples must equal, to rounding, the sums the segment job wrote."""
    from cryomtd.mtd1d import autocorrelations, simulate_segment
    from cryomtd.mtd1d.stages import placement_of, run_segment, signal_of

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"experiments": {"x": {**GOOD, "advanced": {"chunk": 777}}}}))
    s = load_experiment(tmp_path / "c.yaml", "x")
    assert s.advanced.chunk == 777
    saved = run_segment(s, 1, tmp_path / "s1.npz")
    y, _ = simulate_segment(signal_of(s), 2500, placement_of(s), s.sigma, s.seed, 1, chunk=4096)
    again = autocorrelations(y.astype(np.float64), s.L)
    np.testing.assert_allclose(again.s3, saved.s3, rtol=1e-12, atol=1e-9)
    assert again.n == saved.n


def test_sigma_estimate_from_moments():
    from cryomtd.mtd1d import Placement, autocorrelations, make_signal, simulate_segment
    from cryomtd.mtd1d.stages import estimate_sigma

    x = make_signal("gaussian", 10, seed=1)
    y, copies = simulate_segment(x, 1_000_000, Placement(0.1, 9), 0.8, seed=0, index=0)
    m = autocorrelations(y, 10)
    # a2[0] = γ‖x‖²/L + σ² + O(1/√n): with the true (x, γ) σ is recovered to ~0.2 %; 1 % tolerance
    assert estimate_sigma(m, x, copies * 10 / y.size) == pytest.approx(0.8, rel=0.01)
    with pytest.raises(InputError, match="sigma"):
        estimate_sigma(m, 10 * x, 0.1)
