"""The SLURM profile, statically and on a real single-node SLURM cluster.

Static checks (always run): profiles/slurm/config.yaml names only the project's rules,
places every rule of the workflow, keeps sizes in the rules, and matches the test
cluster's partitions.

Cluster checks (marker ``slurm``; skipped unless tests/cluster/slurm_up.sh has started
the cluster, which .ci/run does): workflows run through ``--profile profiles/slurm``
with snakemake-executor-plugin-slurm; every job the executor reports is found in
SLURM's job-completion log, the results equal a local run with the same seeds, a
deliberately failing job is reported FAILED and a rerun after the fix redoes only it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
TOY = REPO / "tests" / "cluster" / "toy"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# fast polling for a test cluster (production values stay in the profile); no slurmdbd: squeue
FAST = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "1",
    "--nocolor",
]
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def convention_rule_names() -> set[str]:
    text = (REPO / "docs" / "conventions.md").read_text()
    block = text[text.index("Rule names") : text.index("Per-rule conda")]
    return set(re.findall(r"`(\w+)`", block))


def workflow_rule_names() -> set[str]:
    names = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        names |= set(re.findall(r"^(?:rule|checkpoint)\s+(\w+)\s*:", smk.read_text(), re.M))
    return names


# ---------------------------------------------------------------- static checks


def test_profile_names_only_known_rules():
    known = convention_rule_names()
    assert {"autocorrelate", "approx_em", "mtd1d_segment"} <= known  # the parser found the list
    p = profile()
    assert set(p["set-resources"]) <= known, set(p["set-resources"]) - known
    grouped = {g.split("=")[0] for g in p["groups"]}
    assert grouped <= known, grouped - known
    groups = {g.split("=")[1] for g in p["groups"]}
    assert groups == {c.split("=")[0] for c in p["group-components"]}


def test_profile_places_every_workflow_rule():
    missing = workflow_rule_names() - set(profile()["set-resources"]) - {"all"}
    assert not missing, f"rules without a placement in profiles/slurm/config.yaml: {sorted(missing)}"


def test_profile_leaves_threads_to_rules_and_uses_the_plugin():
    p = profile()
    assert p["executor"] == "slurm"
    # cpus_per_task in the defaults would override every rule's threads (--cpus-per-task)
    assert "cpus_per_task" not in p["default-resources"]
    assert {"slurm_partition", "mem_mb", "runtime"} <= set(p["default-resources"])
    assert p["slurm-logdir"] and p["retries"] >= 1 and p["rerun-incomplete"] is True
    assert p["set-resources"]["approx_em"].get("gpu") == 1


def test_test_cluster_has_the_profile_partitions():
    script = (REPO / "tests" / "cluster" / "slurm_up.sh").read_text()
    partitions = set(re.findall(r"^PartitionName=(\w+)", script, re.M))
    used = {profile()["default-resources"]["slurm_partition"]}
    used |= {r["slurm_partition"] for r in profile()["set-resources"].values() if "slurm_partition" in r}
    assert used <= partitions, used - partitions


# ---------------------------------------------------------------- cluster


def _cluster_state() -> str | None:
    if shutil.which("sinfo") is None:
        return None
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = set(res.stdout.split())
    return next(iter(states & {"idle", "mixed", "allocated"}), None) if res.returncode == 0 else None


needs_cluster = pytest.mark.skipif(
    _cluster_state() is None,
    reason="no SLURM test cluster is up: start it with tests/cluster/slurm_up.sh (as root; .ci/run does)",
)


def jobcomp_records() -> dict[str, dict[str, str]]:
    """SLURM's job-completion log (jobcomp/filetxt): {job id: fields} (last record wins)."""
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=15).stdout
    loc = re.search(r"^JobCompLoc\s*=\s*(\S+)", conf, re.M).group(1)
    out = {}
    for line in Path(loc).read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            out[fields["JobId"]] = fields
    return out


def run_snakemake(snakefile: Path, workdir: Path, *extra: str, timeout: int = 420) -> subprocess.CompletedProcess:
    # timeout -k: on SIGTERM Snakemake waits for its jobs, which never ends if polling broke
    cmd = ["timeout", "-k", "10", str(timeout), *SNAKEMAKE, "-s", str(snakefile), "-d", str(workdir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)


def through_slurm(snakefile: Path, workdir: Path, *extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    res = run_snakemake(snakefile, workdir, "--profile", str(PROFILE), *FAST, *extra)
    log = res.stdout + res.stderr
    lines = [ln.strip() for ln in log.splitlines() if SUBMITTED.search(ln)]
    print("\n".join(["executor lines naming SLURM job ids:", *lines]))
    ids = [SUBMITTED.search(ln).group(1) for ln in lines]
    return res, ids


def assert_in_jobcomp(ids: list[str], workdir: Path) -> dict[str, dict[str, str]]:
    assert ids, "no job was submitted to SLURM"
    records = jobcomp_records()
    for i in ids:
        assert i in records, f"SLURM job {i} not in the job-completion log"
        assert records[i]["WorkDir"] == str(workdir), records[i]
    return {i: records[i] for i in ids}


def toy_workdir(path: Path, **overrides) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((TOY / "config.yaml").read_text())
    cfg.update(overrides)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slurm
@needs_cluster
def test_failed_job_is_reported_and_rerun_redoes_only_it(tmp_path):
    wd = toy_workdir(tmp_path / "slurm", fail_parts=[1])
    res, ids = through_slurm(TOY / "Snakefile", wd, "--retries", "0")
    log = res.stdout + res.stderr
    assert res.returncode != 0, "a failing job must fail the run"
    assert "Error in rule toy_part" in log or "Error in group toy_parts" in log, log[-3000:]
    records = assert_in_jobcomp(ids, wd)
    states = sorted(r["JobState"] for r in records.values())
    assert states == ["COMPLETED", "COMPLETED", "FAILED"], states
    failed_id = next(i for i, r in records.items() if r["JobState"] == "FAILED")
    print(f"SLURM job {failed_id} FAILED as intended")
    done = {k: (wd / f"results/parts/{k}.npz").stat().st_mtime_ns for k in (0, 2)}
    assert not (wd / "results/parts/1.npz").exists() and not (wd / "results/total.json").exists()

    # fix the config and rerun: only part 1 and the gather run, the finished parts stay
    toy_workdir(wd, fail_parts=[])
    res, ids = through_slurm(TOY / "Snakefile", wd, "--retries", "0")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert len(ids) == 2, ids  # toy_part k=1 and toy_gather
    assert_in_jobcomp(ids, wd)
    assert {k: (wd / f"results/parts/{k}.npz").stat().st_mtime_ns for k in (0, 2)} == done

    # the same numbers as a local run with the same seeds
    local = toy_workdir(tmp_path / "local")
    lres = run_snakemake(TOY / "Snakefile", local, "--cores", "2")
    assert lres.returncode == 0, lres.stderr[-3000:]
    assert json.loads((wd / "results/total.json").read_text()) == json.loads((local / "results/total.json").read_text())
    for k in range(3):
        np.testing.assert_array_equal(
            np.load(wd / f"results/parts/{k}.npz")["x"], np.load(local / f"results/parts/{k}.npz")["x"]
        )


def tiny_mtd1d_config() -> dict:
    """The default 1-D experiment, shrunk to seconds of compute."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    name, exp = next((n, e) for n, e in cfg["experiments"].items() if e["kind"] == "mtd1d")
    exp.update(N=200_000, segments=2)
    exp["lsq"] = {**exp.get("lsq", {}), "restarts": 2}
    exp["em"] = {**exp.get("em", {}), "iterations": 20}
    return {**{k: v for k, v in cfg.items() if k != "experiments"}, "experiments": {name: exp}}


# Two SLURM jobs for the whole 1-D experiment: scatter + merge, then the fits and the summary
MTD1D_GROUPS = [
    "--groups",
    "mtd1d_segment=sim",
    "mtd1d_merge=sim",
    "mtd1d_lsq=fit",
    "mtd1d_pick=fit",
    "mtd1d_em=fit",
    "mtd1d_evaluate=fit",
    "summary=fit",
    "--group-components",
    "sim=100",
    "fit=100",
]


def compare_results(slurm: Path, local: Path, files: list[str]) -> None:
    """SLURM vs local results: same keys and values, timings aside.

    Estimator outputs (.npz) agree to rtol 1e-9: the same seeded computation, but a SLURM
    job gets its own CPU count (--cpus-per-task), so BLAS may sum in another order (seen:
    1e-14 relative). Metrics (.json) agree to rtol 1e-6: the 3-D ones come from aligning
    the estimate to the truth, an iterative optimisation that stops at a tolerance, so
    1e-14 input differences move its result by up to ~1e-7 (seen); the pose it returns
    (rotation, shift) is compared through the FSC and errors it yields, not directly, as
    it is poorly determined for a rough estimate. A missed seed differs at O(1).
    """
    timing = re.compile(r"time|wall|seconds|_s$")
    pose = {"rotation", "shift"}

    def same(a, b, where, rtol):
        if isinstance(a, dict):
            keys = {k for k in a if not timing.search(k) and k not in pose}
            assert keys == {k for k in b if not timing.search(k) and k not in pose}, where
            for k in keys:
                same(a[k], b[k], f"{where}.{k}", rtol)
        elif isinstance(a, (int, float, list)) and not isinstance(a, bool):
            np.testing.assert_allclose(
                np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rtol, atol=1e-12, err_msg=where
            )
        else:
            assert a == b, where

    for f in files:
        if f.endswith(".json"):
            same(json.loads((slurm / f).read_text()), json.loads((local / f).read_text()), f, 1e-6)
        else:
            a, b = np.load(slurm / f), np.load(local / f)
            assert set(a.files) == set(b.files), f
            for key in a.files:
                if not timing.search(key):
                    same(a[key].tolist(), b[key].tolist(), f"{f}:{key}", 1e-9)


def slurm_and_local(tmp_path: Path, cfg: dict, *groups: str) -> tuple[dict[str, Path], str, dict]:
    """Run the workflow on ``cfg`` through SLURM and, meanwhile, locally on one core."""
    dirs = {m: tmp_path / m for m in ("slurm", "local")}
    for wd in dirs.values():
        wd.mkdir()
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    local = subprocess.Popen(
        [
            "timeout",
            "-k",
            "10",
            "600",
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(dirs["local"]),
            "--cores",
            "1",
            "--nocolor",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=dirs["local"],
    )
    try:
        res, ids = through_slurm(REPO / "Snakefile", dirs["slurm"], *groups)
    finally:
        local_log, _ = local.communicate(timeout=660)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    records = assert_in_jobcomp(ids, dirs["slurm"])
    assert all(r["JobState"] == "COMPLETED" for r in records.values())
    assert local.returncode == 0, local_log[-4000:]
    return dirs, log, records


@pytest.mark.slurm
@needs_cluster
def test_mtd1d_through_slurm_equals_local_run(tmp_path):
    if "mtd1d_evaluate" not in workflow_rule_names():
        pytest.skip("the 1-D rules are not in workflow/rules yet")
    cfg = tiny_mtd1d_config()
    (name,) = cfg["experiments"]
    dirs, _, _ = slurm_and_local(tmp_path, cfg, *MTD1D_GROUPS)
    print(f"{name} metrics through SLURM: {json.loads((dirs['slurm'] / f'results/{name}/metrics.json').read_text())}")
    compare_results(
        dirs["slurm"],
        dirs["local"],
        [f"results/{name}/{f}" for f in ("metrics.json", "moments.npz", "lsq.npz", "em.npz")],
    )


def tiny_cryo3d_config() -> dict:
    """A 7³ BPTI box, two 96² micrographs, approximate EM only (1 iteration, coarse grid)."""
    return {
        "experiments": {
            "slurm3d": {
                "kind": "cryo3d",
                "seed": 5,
                "volume": {"source": "data/structures/5PTI.pdb", "L": 7},
                "micrographs": {"n_micrographs": 2, "size": 96, "gamma": 0.1, "snr": 2.0, "spacing": "separated"},
                "lsq": {"enabled": False},
                "em": {"iterations": 1, "init": "random", "grid_step": 60.0},
            }
        }
    }


# Three SLURM jobs: volume + micrographs + moments, the EM (on the GPU partition), evaluation
CRYO3D_GROUPS = [
    "--groups",
    "prepare_volume=sim",
    "simulate_micrograph=sim",
    "autocorrelate=sim",
    "merge_moments=sim",
    "evaluate=eval",
    "summary=eval",
    "--group-components",
    "sim=100",
    "eval=100",
]


@pytest.mark.slurm
@needs_cluster
def test_tiny_cryo3d_through_slurm_equals_local_run(tmp_path):
    cfg = tiny_cryo3d_config()
    dry = tmp_path / "dry"
    dry.mkdir()
    (dry / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = run_snakemake(REPO / "Snakefile", dry, "-n", timeout=120)
    if res.returncode != 0:
        pytest.skip(f"the 3-D stages cannot build this DAG yet: {(res.stdout + res.stderr)[-600:]}")
    dirs, log, records = slurm_and_local(tmp_path, cfg, *CRYO3D_GROUPS)
    em_ids = [SUBMITTED.search(ln).group(1) for ln in log.splitlines() if SUBMITTED.search(ln) and "approx_em" in ln]
    assert len(em_ids) == 1 and records[em_ids[0]]["Partition"] == "gpu", "approx_em must go to the GPU partition"
    print(f"approx_em ran as SLURM job {em_ids[0]} on partition gpu")
    compare_results(
        dirs["slurm"], dirs["local"], [f"results/slurm3d/{f}" for f in ("metrics.json", "em.npz", "truth.npz")]
    )
