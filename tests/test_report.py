"""End to end: a tiny 1-D experiment through the workflow, the summary table and `snakemake --report`."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
from conftest import snakemake_command

CONFIG = """\
experiments:
  tiny1d:
    kind: mtd1d
    seed: 1
    L: 11
    signal: {type: gaussian}
    sigma: 0.5
    N: 100000
    segments: 2
    placement: {gamma: 0.1}
    lsq: {restarts: 2, sigma_known: true}
    em: {iterations: 20, tol: 1.0e-6}
"""


def snakemake(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = snakemake_command(workdir, "--configfile", str(workdir / "config.yaml"), *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_summary_and_html_report(repo_root, tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    run = snakemake(repo_root, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results" / "summary.csv").open()))
    assert [(r["experiment"], r["kind"], r["estimator"]) for r in rows] == [
        ("tiny1d", "mtd1d", "lsq"),
        ("tiny1d", "mtd1d", "em"),
    ]
    assert all(0 <= float(r["relative_error"]) < 1 for r in rows)
    # nothing left to do: the summary and metrics are up to date (reruns resume, not redo)
    dry = snakemake(repo_root, tmp_path, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    rep = snakemake(repo_root, tmp_path, "--report", str(tmp_path / "report.html"))
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    # self-contained: the figures and the table are embedded, not linked
    assert "summary.csv" in html and "overlay.png" in html and "cryomtd: detection-free" in html
    assert len(html) > 100_000
