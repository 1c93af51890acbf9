"""Faults: a job killed mid-way (SIGKILL) and two Snakemake runs on one directory.

Runs the toy scatter/gather workflow of tests/cluster/toy (it writes with the
project's cryomtd.io.atomic_path, like every stage) in pytest's tmp_path, never in
the clone. Expected numbers are recomputed here from the seeding contract.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cryomtd.io import read_json
from cryomtd.seeding import rng

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "cluster" / "toy"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

pytestmark = pytest.mark.slow


def toy_dir(tmp_path: Path, **overrides) -> Path:
    cfg = yaml.safe_load((TOY / "config.yaml").read_text())
    cfg.update(overrides)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    return [*SNAKEMAKE, "-s", str(TOY / "Snakefile"), "-d", str(workdir), "--cores", "1", "--nocolor", *extra]


def start(workdir: Path, *extra: str, log_name: str) -> tuple[subprocess.Popen, Path]:
    """Start Snakemake in its own process group (so a kill reaches its jobs too)."""
    out = workdir / log_name
    proc = subprocess.Popen(
        snakemake_cmd(workdir, *extra),
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=workdir,
    )
    return proc, out


def wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    """Poll a log file until a line containing ``text`` appears; return that line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if text in line:
                    return line
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not seen in {path} (snakemake rc={proc.poll()})")


def run(workdir: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, *extra), capture_output=True, text=True, timeout=timeout, cwd=workdir)


def expected_total(seed: int, n_parts: int, size: int) -> dict:
    """Independent definition of the toy result: the seeded samples of every part."""
    x = np.concatenate([rng(seed, "toy", k).standard_normal(size) for k in range(n_parts)])
    return {"count": x.size, "sum": x.sum(), "sum_sq": np.square(x).sum()}


def assert_total(workdir: Path, cfg: dict) -> None:
    got = read_json(workdir / "results" / "total.json")
    want = expected_total(cfg["seed"], cfg["n_parts"], cfg["size"])
    assert got["count"] == want["count"]
    # same seeds, same float64 operations in another order: equal to rounding
    np.testing.assert_allclose([got["sum"], got["sum_sq"]], [want["sum"], want["sum_sq"]], rtol=1e-12, atol=1e-9)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def unlock(workdir: Path) -> None:
    """A killed Snakemake leaves its lock: the documented first step is --unlock."""
    res = run(workdir, "--unlock")
    assert res.returncode == 0, res.stdout + res.stderr


def test_sigkill_inside_an_atomic_write_leaves_no_output_and_rerun_recovers(tmp_path):
    wd = toy_dir(tmp_path, n_parts=1, sleep_s=60)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    proc, _ = start(wd, log_name="run1.txt")
    line = wait_for_line(wd / "results/logs/toy_part/0.log", "temporary written", proc)
    kill_group(proc)
    tmp = Path(line.split("temporary written: ", 1)[1].strip())
    out = wd / "results/parts/0.npz"
    # the data was being written: it lies in the temporary file, never under the output's name
    assert tmp.exists() and tmp.name.startswith(".0.npz.")
    assert not out.exists()
    assert not (wd / "results/parts/0.json").exists()
    # rerun (no sleeping now): Snakemake redoes the killed job and finishes
    unlock(wd)
    res = run(wd, "--rerun-incomplete", "--config", "sleep_s=0")
    assert res.returncode == 0, res.stdout + res.stderr
    assert np.load(out)["x"].shape == (cfg["size"],)
    assert_total(wd, cfg)


def test_sigkill_between_outputs_is_incomplete_until_rerun_incomplete(tmp_path):
    # Killed after its first output was renamed into place but before the second: the
    # first file is whole, yet its job is not. Snakemake must refuse to trust it.
    wd = toy_dir(tmp_path, n_parts=1, pause_s=60)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    proc, _ = start(wd, log_name="run1.txt")
    wait_for_line(wd / "results/logs/toy_part/0.log", "npz renamed", proc)
    kill_group(proc)
    assert (wd / "results/parts/0.npz").exists() and not (wd / "results/parts/0.json").exists()

    unlock(wd)
    refused = run(wd, "--config", "pause_s=0")
    assert refused.returncode != 0
    assert "incomplete" in (refused.stdout + refused.stderr).lower()

    res = run(wd, "--rerun-incomplete", "--config", "pause_s=0")
    assert res.returncode == 0, res.stdout + res.stderr
    log = res.stdout + res.stderr
    assert "results/parts/0.npz" in log  # the incomplete job was redone
    assert_total(wd, cfg)


def test_second_invocation_on_same_directory_fails_with_lock(tmp_path):
    # the first run's job waits (up to 120 s) until the test creates `release`
    wd = toy_dir(tmp_path, n_parts=1, sleep_s=120)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    first, first_out = start(wd, log_name="run1.txt")
    try:
        wait_for_line(wd / "results/logs/toy_part/0.log", "temporary written", first)
        second = run(wd, timeout=120)
        text = second.stdout + second.stderr
        assert first.poll() is None, "the first run must still hold the lock"
        assert second.returncode != 0
        assert "LockException" in text or "cannot be locked" in text, text
        (wd / "release").touch()
        assert first.wait(timeout=240) == 0, first_out.read_text()
    finally:
        if first.poll() is None:
            kill_group(first)
    # the first run's outputs are whole and right; the second touched nothing
    assert_total(wd, cfg)
    assert not list((wd / "results" / "parts").glob(".*.tmp*")), "leftover temporary files"
