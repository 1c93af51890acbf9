"""The mtd1d config block: bad values stop validation naming the key; defaults fill; CLI runs a stage."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from snakemake.utils import validate

from cryomtd.cli import main
from cryomtd.io import InputError
from cryomtd.mtd1d import Moments1D
from cryomtd.cli.mtd1d import load_experiment

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
    cfg = load_experiment(tmp_path / "c.yaml", "x")
    assert cfg["L"] == 21 and cfg["placement"]["gamma"] == 0.05 and cfg["placement"]["min_gap"] is None
    assert cfg["lsq"]["restarts"] >= 1 and cfg["em"]["segments"] is None
    with pytest.raises(InputError, match="experiments.x.placement.gamma"):
        (tmp_path / "d.yaml").write_text(yaml.safe_dump(
            {"experiments": {"x": {"kind": "mtd1d", "seed": 0, "placement": {"gamma": "a"}}}}))
        load_experiment(tmp_path / "d.yaml", "x")


def test_cli_segment_and_merge_write_the_rule_files(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"experiments": {"x": GOOD}}))
    for k in range(2):
        assert main(["mtd1d", "segment", "--config", str(tmp_path / "c.yaml"), "-e", "x", "--index", str(k),
                     "--out", str(tmp_path / f"s{k}.npz")]) == 0
    assert main(["mtd1d", "merge", "--out", str(tmp_path / "m.npz"), str(tmp_path / "s0.npz"),
                 str(tmp_path / "s1.npz")]) == 0
    m = Moments1D.load(tmp_path / "m.npz")
    assert m.n == 5000 and m.L == 6
    with np.load(tmp_path / "m.npz") as f:
        assert 0.05 < float(f["gamma_true"]) < 0.15
    assert main(["mtd1d", "segment", "--config", str(tmp_path / "c.yaml"), "-e", "nope", "--index", "0",
                 "--out", str(tmp_path / "z.npz")]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
