"""Shared pytest fixtures and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
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


def pytest_configure(config):
    # Keep BLAS single-threaded per test process unless asked otherwise: timing-free tests,
    # and two cores shared with the workflow tests.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
