"""The whole 1-D pipeline through Snakemake on a tiny config in tmp_path; rerun semantics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import snakemake_command

from cryomtd.estimate import Estimate
from cryomtd.layout import Layout
from cryomtd.mtd1d.settings import Mtd1dSettings

REPO = Path(__file__).resolve().parents[1]


def tiny(seed: int) -> dict:
    return {
        "kind": "mtd1d",
        "seed": seed,
        "L": 8,
        "signal": {"type": "gaussian"},
        "sigma": 0.3,
        "N": 120_000,
        "segments": 2,
        "placement": {"gamma": 0.1},
        "lsq": {"restarts": 2, "max_iterations": 60},
        "em": {"iterations": 40, "tol": 1e-6},
        "advanced": {"chunk": 20_000},
    }


TARGETS = ["results/exp_a/metrics.json", "results/exp_b/metrics.json"]


def snakemake(workdir: Path, *args: str) -> str:
    """Run the workflow on the 1-D targets only (rule `all` also collects other stages' summaries)."""
    cmd = snakemake_command(workdir, *args, *TARGETS)
    res = subprocess.run(cmd, check=False, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def planned_jobs(out: str) -> dict[str, int]:
    """Rule → job count from the 'Job stats' table of a dry run (empty if nothing to do)."""
    counts = {}
    for line in out.splitlines():
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.mark.slow
def test_pipeline_end_to_end_and_rerun_semantics(tmp_path):
    cfg = {"experiments": {"exp_a": tiny(1), "exp_b": tiny(2)}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(tmp_path)
    for exp in ("exp_a", "exp_b"):
        d = tmp_path / "results" / exp
        metrics = json.loads((d / "metrics.json").read_text())
        assert set(metrics) >= {"gamma_true", "lsq", "em"}
        assert set(metrics["lsq"]) >= {"rel_error", "gamma", "cost"}
        assert set(metrics["em"]) >= {"rel_error", "iterations", "loglik"}
        # plumbing check, not accuracy (2 restarts may all land in a local minimum; accuracy is
        # tested in test_mtd1d_lsq/test_mtd1d_em): EM starts from the best restart and ends near x
        assert metrics["lsq"]["cost"] == min(metrics["lsq"]["restart_costs"])
        assert metrics["em"]["rel_error"] < 0.5
        assert abs(metrics["gamma_true"] - 0.1) < 0.02
        for png in ("figures/overlay.png", "figures/loglik.png"):
            assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        lay = Layout(str(tmp_path / "results"), exp)
        assert Path(lay.log("mtd1d_segment", 0)).exists() and Path(lay.log("mtd1d_merge")).exists()
        assert Path(lay.benchmark("mtd1d_em")).exists()
        assert not list(d.rglob(".*.tmp*"))  # no temporary files left behind
        # the estimates are in the common format, recording the settings that produced them
        s = Mtd1dSettings.from_config(cfg["experiments"][exp], exp)
        lsq, em = Estimate.load(lay.estimate("lsq")), Estimate.load(lay.estimate("em"))
        assert lsq.settings == s.stage_block("lsq") and em.settings == s.stage_block("em")
        assert lsq.trace[-1] == metrics["lsq"]["cost"] and em.trace[-1] == metrics["em"]["loglik"]

    # second run: nothing to do
    assert planned_jobs(snakemake(tmp_path, "-n")) == {}

    # change one EM parameter of one experiment: only its EM and evaluation rerun
    cfg["experiments"]["exp_b"]["em"]["tol"] = 1e-7
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"mtd1d_em": 1, "mtd1d_evaluate": 1, "total": 2}

    # one more restart for exp_a: only the new restart, the pick and what follows run (exp_b as above)
    cfg["experiments"]["exp_a"]["lsq"]["restarts"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert planned_jobs(snakemake(tmp_path, "-n")) == {
        "mtd1d_lsq": 1,
        "mtd1d_pick": 1,
        "mtd1d_em": 2,
        "mtd1d_evaluate": 2,
        "total": 6,
    }
    cfg["experiments"]["exp_a"]["lsq"]["restarts"] = 2

    # change the noise of exp_a: its whole chain reruns, exp_b (EM already stale) is untouched beyond that
    cfg["experiments"]["exp_a"]["sigma"] = 0.4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(tmp_path, "-n"))
    assert jobs == {
        "mtd1d_segment": 2,
        "mtd1d_merge": 1,
        "mtd1d_lsq": 2,
        "mtd1d_pick": 1,
        "mtd1d_em": 2,
        "mtd1d_evaluate": 2,
        "total": 10,
    }
