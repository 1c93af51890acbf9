"""Non-overlapping L×L patches of any number of micrographs, read in batches.

A :class:`PatchSource` indexes the patches of a list of micrographs (2-D arrays or
MRC paths) without loading them: patch ``j`` is the block ``[r·L:(r+1)·L, c·L:(c+1)·L]``
of micrograph ``k``, numbered micrograph by micrograph, then row-major. MRC files are
memory-mapped and only the rows a batch needs are read, so the data never sit in
memory all at once. Incomplete blocks at the right/bottom edges are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from cryomtd.io import InputError
from cryomtd.volume import mmap_mrc

__all__ = ["PatchSource"]


class PatchSource:
    """Patches of side ``L`` cut from ``micrographs`` (arrays ``[y, x]`` or MRC paths).

    Attributes: ``L``, ``n`` (total patches), ``shapes`` (micrograph shapes),
    ``offsets`` (first global patch index of each micrograph).
    """

    def __init__(self, micrographs: Sequence[np.ndarray | str | os.PathLike], L: int):
        if L < 1:
            raise InputError(f"patch size L must be >= 1, got {L}")
        if len(micrographs) == 0:
            raise InputError("no micrographs given")
        self.L = int(L)
        self._items = list(micrographs)
        shapes = []
        for k in range(len(self._items)):
            shape = self._shape(k)
            if len(shape) != 2:
                raise InputError(f"micrograph {self._name(k)}: expected a 2-D image, got shape {shape}")
            if shape[0] < L or shape[1] < L:
                raise InputError(f"micrograph {self._name(k)}: shape {shape} is smaller than one {L}×{L} patch")
            shapes.append(shape)
        self.shapes = shapes
        self.grid = [(h // L, w // L) for h, w in shapes]
        counts = np.array([r * c for r, c in self.grid], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.n = int(self.offsets[-1])

    def _name(self, k: int) -> str:
        m = self._items[k]
        return str(m) if isinstance(m, (str, os.PathLike)) else f"#{k}"

    def _shape(self, k: int) -> tuple[int, ...]:
        m = self._items[k]
        if isinstance(m, (str, os.PathLike)):
            with self._mmap(k) as data:
                return np.squeeze(data).shape
        return np.shape(m)

    def _mmap(self, k: int):
        """Context manager yielding the memory-mapped data of micrograph ``k`` (an MRC path)."""
        return mmap_mrc(self._items[k])

    def _read_rows(self, k: int, y0: int, y1: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1``, columns ``0:x1`` of micrograph ``k`` as float64 (copied from the map).

        Raises :class:`InputError` naming the micrograph when the rows hold NaN or Inf
        (with the count over the whole micrograph): EM would otherwise fail much later,
        in the M-step's linear algebra.
        """
        m = self._items[k]
        if isinstance(m, (str, os.PathLike)):
            with self._mmap(k) as data:
                rows = np.array(np.squeeze(data)[y0:y1, :x1], dtype=np.float64)
        else:
            rows = np.asarray(m[y0:y1, :x1], dtype=np.float64)
        if not np.isfinite(rows).all():
            if isinstance(m, (str, os.PathLike)):
                with self._mmap(k) as data:
                    bad = sum(
                        int(np.count_nonzero(~np.isfinite(np.asarray(r, dtype=np.float64)))) for r in np.squeeze(data)
                    )
            else:
                bad = int(np.count_nonzero(~np.isfinite(np.asarray(m, dtype=np.float64))))
            raise InputError(f"{self._name(k)}: micrograph holds {bad} non-finite pixels (NaN/Inf)")
        return rows

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Patches at sorted-or-not global ``indices`` → (len(indices), L, L) float64."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.n):
            raise IndexError(f"patch index out of range [0, {self.n})")
        L = self.L
        out = np.empty((indices.size, L, L), dtype=np.float64)
        mic = np.searchsorted(self.offsets, indices, side="right") - 1
        for k in np.unique(mic):  # loop over micrographs only; patches are gathered vectorised
            sel = np.nonzero(mic == k)[0]
            local = indices[sel] - self.offsets[k]
            rows, cols = self.grid[k]
            r, c = np.divmod(local, cols)
            r_lo, r_hi = int(r.min()), int(r.max()) + 1  # read only the needed band of rows
            band = self._read_rows(int(k), r_lo * L, r_hi * L, cols * L)
            band = band.reshape(r_hi - r_lo, L, cols, L).transpose(0, 2, 1, 3)
            out[sel] = band[r - r_lo, c]
        return out

    def batches(
        self, indices: np.ndarray | None = None, batch_size: int = 1024
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices_batch, patches (b, L, L))`` over ``indices`` (default: all, in order)."""
        if indices is None:
            indices = np.arange(self.n, dtype=np.int64)
        batch_size = max(1, int(batch_size))
        for start in range(0, len(indices), batch_size):
            idx = np.asarray(indices[start : start + batch_size])
            yield idx, self.get(idx)

    def mean_power(self, batch_size: int = 4096) -> float:
        """Mean of y² over all patch pixels (one streaming pass)."""
        total = 0.0
        for _, p in self.batches(batch_size=batch_size):
            total += float(np.einsum("ijk,ijk->", p, p))
        return total / (self.n * self.L * self.L)
