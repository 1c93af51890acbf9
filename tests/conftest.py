"""Shared pytest fixtures and paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The shared data next to the checkout (CI copies the tree elsewhere and sets CRYOMTD_SHARED).
SHARED = Path(os.environ.get("CRYOMTD_SHARED", REPO.parent / "shared")).resolve()
STRUCTURES = SHARED / "data" / "structures"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def structures_dir() -> Path:
    """Folder of the shared PDB/mmCIF test structures (skips if absent)."""
    if not STRUCTURES.is_dir():
        pytest.skip(f"shared structures not found at {STRUCTURES}")
    return STRUCTURES


def snakemake_command(workdir: Path, *args: str, cores: int = 2) -> list[str]:
    """The command that runs the repository's Snakefile with ``workdir`` as working directory."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--cores", str(cores), "--nocolor", *args]  # fmt: skip


def _run_workflow(workdir: Path, *targets: str, timeout: float = 900) -> str:
    """Run the repository's Snakefile for ``targets`` with ``workdir`` as working directory
    (a temporary folder, never the checkout) on 2 cores; fail the test with the tail of
    Snakemake's output on error; return its stdout + stderr."""
    cmd = snakemake_command(workdir, *targets)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def run_workflow():
    """``run_workflow(workdir, *targets) -> output``: Snakemake on the repository's workflow in ``workdir``."""
    return _run_workflow


def pytest_configure(config):
    # Keep BLAS single-threaded per test process unless asked otherwise: timing-free tests,
    # and two cores shared with the workflow tests.
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny problems: fastest, and no oversubscription of CI's 2 cores."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
