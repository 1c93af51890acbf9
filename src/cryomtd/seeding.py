"""Reproducible randomness: one generator per (experiment seed, stage, item index).

A micrograph, a 1-D segment or a restart is the same whatever order or machine
produces it, because its generator depends only on these three numbers.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["rng", "stage_code"]


def stage_code(stage: str) -> int:
    """A stable 32-bit code for a stage name (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(stage.encode("utf-8"))


def rng(seed: int, stage: str, index: int = 0) -> np.random.Generator:
    """``numpy.random.Generator`` (PCG64) seeded from ``SeedSequence([seed, stage_code(stage), index])``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), stage_code(stage), int(index)])))
