"""Streaming simulation of a 1-D MTD measurement: copies of x at random positions plus noise.

A measurement of N samples is split into independent *segments* (each zero outside
itself); segment k is produced in chunks from ``rng(seed, "mtd1d-segment", k)`` so memory
depends on the chunk size only, and the samples do not depend on the chunk size (the
placement and the noise use two separate streams spawned from that generator, each
consumed in order).

Placement is a renewal process: the first copy starts at G₀ and each next copy starts
``L + min_gap + G`` samples after the previous start, with G ~ Geometric on {0, 1, …}
of mean ``L/γ − L − min_gap``, so the density of copies tends to γ. Copies that would
cross the end of the segment are dropped (segments are independent measurements).

* well separated (``min_gap = L − 1``, the default): no two copies are closer than
  L − 1 zeros, the condition under which the moment model of docs/design.md §7 is exact;
* arbitrary spacing (any ``min_gap ≥ 0``): dense packing allowed; the pair-separation
  function (:meth:`Placement.pair_separation`) then enters the moments (Lan et al. 2020),
  modelled by ``model_moments(..., xi=...)`` and ``fit_lsq(..., spacing="arbitrary")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cryomtd.io import InputError
from cryomtd.seeding import rng

__all__ = ["Placement", "segment_lengths", "simulate_chunks", "simulate_segment"]

_GAP_BATCH = 65536


@dataclass(frozen=True)
class Placement:
    """Target density ``gamma`` and minimum number of zeros ``min_gap`` between copies."""

    gamma: float
    min_gap: int

    def check(self, L: int) -> None:
        if self.min_gap < 0:
            raise InputError(f"placement.min_gap: expected >= 0, got {self.min_gap}")
        gmax = L / (L + self.min_gap)
        if not 0.0 < self.gamma <= gmax:
            raise InputError(
                f"placement.gamma: expected 0 < gamma <= L/(L+min_gap) = {gmax:.4g} "
                f"for L={L}, min_gap={self.min_gap}; got {self.gamma}"
            )

    def mean_extra_gap(self, L: int) -> float:
        return L / self.gamma - L - self.min_gap

    def pair_separation(self, L: int) -> np.ndarray:
        """The pair-separation function ξ (L − 1,) of this placement law (far from segment ends):
        ξ[d] = (γ/L) · P(d zeros between consecutive copies), d = 0 … L − 2, with the gap
        min_gap + G, G geometric on {0, 1, …} of mean :meth:`mean_extra_gap` (zero for d < min_gap;
        all zero when well separated). The moment model with it is
        :func:`cryomtd.mtd1d.moments.model_moments` (``xi``)."""
        self.check(L)
        p = 1.0 / (1.0 + self.mean_extra_gap(L))
        k = np.arange(L - 1) - self.min_gap
        prob = np.where(k >= 0, p * (1.0 - p) ** np.maximum(k, 0), 0.0)
        return self.gamma / L * prob


def segment_lengths(N: int, segments: int) -> np.ndarray:
    """Lengths of the ``segments`` segments of an N-sample measurement (first ones one longer)."""
    if segments < 1 or N < segments:
        raise InputError(f"segments: expected 1 <= segments <= N={N}, got {segments}")
    base, extra = divmod(int(N), int(segments))
    return np.array([base + (k < extra) for k in range(segments)], dtype=np.int64)


class _Starts:
    """Start positions of the copies, produced in order in batches (renewal process).

    Every geometric draw is used exactly once, in order, so the positions do not depend
    on how the caller slices the segment into chunks.
    """

    def __init__(self, gen: np.random.Generator, L: int, placement: Placement):
        self.gen, self.step = gen, L + placement.min_gap
        self.p = 1.0 / (1.0 + placement.mean_extra_gap(L))
        self.buf = np.empty(0, dtype=np.int64)
        self.last: int | None = None  # last start produced so far

    def _extend(self) -> None:
        g = self.gen.geometric(self.p, size=_GAP_BATCH).astype(np.int64) - 1  # support {0, 1, ...}
        inc = g + self.step
        if self.last is None:
            inc[0] = g[0]
            starts = np.cumsum(inc)
        else:
            starts = self.last + np.cumsum(inc)
        self.last = int(starts[-1])
        self.buf = np.concatenate((self.buf, starts))

    def upto(self, stop: int) -> np.ndarray:
        """Pop and return all starts < ``stop`` (ascending)."""
        while self.buf.size == 0 or self.buf[-1] < stop:
            self._extend()
        k = int(np.searchsorted(self.buf, stop, side="left"))
        out, self.buf = self.buf[:k], self.buf[k:]
        return out


def simulate_chunks(
    x: np.ndarray, n: int, placement: Placement, sigma: float, seed: int, index: int, chunk: int = 1 << 20
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield segment ``index`` of length ``n`` as consecutive chunks ``(y_chunk, copies)``.

    ``y_chunk`` is float64 of length ``chunk`` (the last one shorter); ``copies`` is the
    number of copies of ``x`` (shape (L,)) that start inside the chunk. Noise is i.i.d.
    N(0, σ²). The concatenated chunks do not depend on ``chunk``.
    """
    x = np.asarray(x, dtype=np.float64)
    L = x.size
    placement.check(L)
    if sigma < 0:
        raise InputError(f"sigma: expected >= 0, got {sigma}")
    if chunk < 1:
        raise InputError(f"chunk: expected >= 1, got {chunk}")
    place_gen, noise_gen = rng(seed, "mtd1d-segment", index).spawn(2)
    starts = _Starts(place_gen, L, placement)
    offsets = np.arange(L)
    carry = np.zeros(L - 1)  # clean signal spilling over from the previous chunk
    for c0 in range(0, int(n), int(chunk)):
        m = min(chunk, n - c0)
        s = starts.upto(c0 + m)
        s = s[s <= n - L]  # a copy crossing the segment end is dropped
        buf = np.zeros(m + L - 1)
        buf[: L - 1] = carry
        buf[((s - c0)[:, None] + offsets).ravel()] = np.tile(x, s.size)  # copies never overlap
        y = buf[:m]
        if sigma > 0:
            y += sigma * noise_gen.standard_normal(m)
        carry = buf[m:].copy()
        yield y, int(s.size)


def simulate_segment(
    x: np.ndarray, n: int, placement: Placement, sigma: float, seed: int, index: int, chunk: int = 1 << 20
) -> tuple[np.ndarray, int]:
    """The whole segment as one array (n,) float64 and its number of copies (for tests and EM)."""
    ys, copies = [], 0
    for y, c in simulate_chunks(x, n, placement, sigma, seed, index, chunk):
        ys.append(y)
        copies += c
    return np.concatenate(ys) if ys else np.zeros(0), copies
