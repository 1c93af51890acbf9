"""The `evaluate` and `summary` rules and the 3-D part of `snakemake --report`, on synthetic
inputs placed where the upstream rules would write them (only these two rules may run)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from conftest import snakemake_command

from cryomtd import rotations
from cryomtd.basis import SphericalBessel
from cryomtd.estimate import Estimate
from cryomtd.io import save_npz, write_json

CONFIG = """\
experiments:
  syn3d:
    kind: cryo3d
    seed: 5
    volume: {source: phantom, L: 11}
    micrographs: {n_micrographs: 2}
    basis: {ell_max: 4}
    evaluate: {advanced: {grid_step: 30}}
  synexact:
    kind: cryo3d
    seed: 6
    volume: {source: phantom, L: 11}
    micrographs: {gamma: 0.12}
    basis: {ell_max: 4}
    moments: {source: exact}
    evaluate: {advanced: {grid_step: 30}}
"""


def _mrc(path: Path, vol: np.ndarray, vs: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(vol.astype(np.float32))
        m.voxel_size = vs


def make_inputs(d: Path, L: int = 11, ell_max: int = 4, vs: float = 1.5, em: bool = True, seed: int = 0) -> None:
    """truth; lsq = reflected rotated truth; em = rotated truth (exact, so the numbers are known)."""
    b = SphericalBessel(L, ell_max)
    c = np.arange(L) - L // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    raw = sum(
        a * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / 3.0)
        for a, px, py, pz in [(1.0, 2, 0, 0), (0.7, 0, 2.5, 1), (0.5, -1, -1, 2.5), (0.8, -2, 1, -1)]
    )
    coef = b.expand(raw)
    save_npz(d / "truth.npz", coef=coef, L=L, ell_max=ell_max, voxel_size=vs)
    _mrc(d / "truth.mrc", b.evaluate(coef), vs)
    R1, R2 = rotations.random(2, seed)
    c_lsq = b.rotate(np.where(b.ell % 2 == 1, -1.0, 1.0) * coef, R1)
    Estimate("lsq", c_lsq, 0.1, np.geomspace(1, 1e-4, 12), "least-squares cost", 2.0, {}, {"cost": 1e-4}).save(
        d / "lsq.npz"
    )
    _mrc(d / "lsq.mrc", b.evaluate(c_lsq), vs)
    if em:
        c_em = b.rotate(coef, R2)
        Estimate(
            "em",
            c_em,
            float("nan"),
            np.array([-3.0, -2.0, -1.5]),
            "log-likelihood per patch",
            4.0,
            {"fraction": 1.0},
            {"rho": np.full((2 * L, 2 * L), 1 / (2 * L) ** 2)},
        ).save(d / "em.npz")
        _mrc(d / "em.mrc", b.evaluate(c_em), vs)
        for k in range(2):
            write_json(d / "micrographs" / f"{k}.json", {"n_particles": 40, "size": 200, "L": L})


def snakemake(repo: Path, wd: Path, targets: list[str], *args: str) -> subprocess.CompletedProcess:
    # targets first: --configfile and --allowed-rules take every following word up to the next option
    cmd = snakemake_command(wd, *targets, "--configfile", str(wd / "config.yaml"), *args,
                            "--allowed-rules", "evaluate", "summary")  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_evaluate_rule_and_report(repo_root, tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    make_inputs(tmp_path / "results" / "syn3d", seed=1)
    make_inputs(tmp_path / "results" / "synexact", em=False, seed=2)
    targets = ["results/syn3d/metrics.json", "results/synexact/metrics.json", "results/summary.csv"]
    run = snakemake(repo_root, tmp_path, targets)
    assert run.returncode == 0, run.stderr[-3000:]
    m = json.loads((tmp_path / "results/syn3d/metrics.json").read_text())
    assert set(m["estimators"]) == {"lsq", "em"}
    assert m["gamma_true"] == pytest.approx(80 * 121 / (2 * 200**2))  # from micrographs/{k}.json
    assert m["estimators"]["lsq"]["reflected"] and not m["estimators"]["em"]["reflected"]
    assert m["estimators"]["em"]["wall_time_s"] == 4.0 and m["estimators"]["em"]["iterations"] == 3
    assert m["estimators"]["em"]["gamma"] is not None  # from the shift prior ρ (the estimate's γ is NaN)
    assert max(e["relative_error"] for e in m["estimators"].values()) < 1e-3  # exact rotations
    mx = json.loads((tmp_path / "results/synexact/metrics.json").read_text())
    assert set(mx["estimators"]) == {"lsq"} and mx["gamma_true"] == 0.12  # exact moments: γ from config, no EM
    assert (tmp_path / "results/syn3d/aligned/em.mrc").exists()
    assert not (tmp_path / "results/synexact/aligned/em.mrc").exists()
    for f in ("fsc", "slices", "projections", "mip", "convergence"):
        assert (tmp_path / f"results/syn3d/figures/{f}.png").stat().st_size > 1000
    rows = list(csv.DictReader((tmp_path / "results/summary.csv").open()))
    assert [(r["experiment"], r["estimator"]) for r in rows] == [("syn3d", "lsq"), ("syn3d", "em"), ("synexact", "lsq")]
    rep = snakemake(repo_root, tmp_path, targets, "--report", str(tmp_path / "report.html"))
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "3-D experiments" in html and "fsc.png" in html and "summary.csv" in html
