"""Ground-truth 1-D signals: random Gaussian, the published step, or an array from a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cryomtd.io import InputError
from cryomtd.seeding import rng

__all__ = ["make_signal", "SIGNAL_TYPES"]

SIGNAL_TYPES = ("gaussian", "step", "file")


def make_signal(kind: str, L: int, seed: int = 0, path: str | os.PathLike | None = None) -> np.ndarray:
    """The ground-truth signal x, shape (L,), float64.

    * ``gaussian``: i.i.d. N(0, 1) entries from ``rng(seed, "mtd1d-signal", 0)``, scaled to
      ‖x‖₂ = √L (unit mean energy per sample, so σ is the inverse amplitude SNR).
    * ``step``: the published example, ones on the first ⌈L/2⌉ samples and zeros after
      (L = 21 gives 11 ones), scaled to ‖x‖₂ = √L.
    * ``file``: a 1-D ``.npy`` array of length L, used as is.
    """
    if L < 2:
        raise InputError(f"signal length L must be >= 2, got {L}")
    if kind == "gaussian":
        x = rng(seed, "mtd1d-signal", 0).standard_normal(L)
    elif kind == "step":
        x = np.zeros(L)
        x[: (L + 1) // 2] = 1.0
    elif kind == "file":
        if path is None:
            raise InputError("signal.path: required when signal.type is 'file' (a .npy file of length L)")
        p = Path(path)
        try:
            x = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"signal.path {p}: cannot read a .npy array ({exc})") from None
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (L,):
            raise InputError(f"signal.path {p}: expected a 1-D array of length L={L}, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise InputError(f"signal.path {p}: contains non-finite values")
        return x
    else:
        raise InputError(f"signal.type: expected one of {SIGNAL_TYPES}, got {kind!r}")
    return x * (np.sqrt(L) / np.linalg.norm(x))
