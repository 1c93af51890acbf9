"""The autocorrelation engine: a¹, a², a³ of a micrograph as Gram products of window vectors.

For a base pixel r the window vector is v_r[f(ℓ)] = I[r + ℓ] over the D² = (2W−1)²
lags (flat index f of :mod:`cryomtd.moments.lags`). Then

    Σ_r I[r] I[r+ℓ]          = (Σ_r I[r] v_r)[f(ℓ)]
    Σ_r I[r] I[r+ℓ1] I[r+ℓ2] = (Σ_r I[r] v_r v_rᵀ)[f(ℓ1), f(ℓ2)]

so a³ is one weighted Gram matrix G = Yᵀ U with U the (n, D²) matrix of window
vectors of n base pixels and Y = diag(I) U: matrix multiplication, which BLAS (CPU)
and cuBLAS (GPU) run near the machine's peak. Only a part of G is formed (every a³
class needs one member, :mod:`cryomtd.moments.lags`). Two methods:

* ``"rows"`` (CPU default, :func:`_row_plan`): one set of products per image row, on
  a zero-copy view of a stack of D shifted copies of the band (no per-pixel gather
  of D² values), in the reversed lag order. Computed set: the lower × upper
  half-plane block with the lexicographically middle point of each triple as base
  (one (n_h+1)×n_h product, s2 included as its first row) plus two small "wide"
  rectangles for the triples whose middle point is ≥ W columns from another point:
  ≈ 0.36·D⁴ multiply-adds per pixel in three products (K3 ≈ 0.31·D⁴ is the minimum).
* ``"gather"`` (GPU default): one gathered (n, D²) window-vector matrix per band of
  ``band_pixels`` base pixels (large products for a GPU), lag order H, L, R, Z of
  :func:`cryomtd.moments.lags.gram_layout`: the H rows of G from the diagonal on (in
  ``chunk``-row blocks, G[a:e, a:]) plus the L×R block, ≈ 0.44–0.47·D⁴.

Work is organised in **bands** (``band_rows`` consecutive image rows, all columns,
≈ ``band_pixels`` base pixels) and **memory tiles**: groups of bands copied to the
device at once with a halo of W−1 rows on each side (zeros beyond the image), at most
``tile_pixels`` pixels, so micrographs larger than memory (e.g. an ``mrcfile`` memory
map) stream through.

Results are added to one float64 accumulator in row (``rows``) or band (``gather``)
order whatever the tiling, so tiled and untiled runs are bitwise identical.
``dtype="float32"`` computes each row's / band's products in float32 (faster on GPUs)
and still accumulates in float64; see docs/moments.md for its measured error.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from cryomtd.io import InputError
from cryomtd.moments.backends import Backend, resolve_backend
from cryomtd.moments.lags import _a3_maps, gram_layout, lag_size
from cryomtd.moments.result import Moments2D
from cryomtd.progress import progress

__all__ = ["autocorrelations_2d", "default_band_pixels", "default_chunk", "default_method", "memory_needed"]


def default_method(backend: str) -> str:
    """``"rows"`` on CPU backends (per-image-row products on a zero-copy view), ``"gather"`` on a GPU
    (large bands of gathered window vectors: few, large products)."""
    return "rows" if backend in ("numpy", "torch-cpu") else "gather"


def default_band_pixels(backend: str, W: int, method: str | None = None) -> int:
    """Base pixels per band. ``rows``: 2^16 (the band's shifted-row stack holds ≈ D values per
    pixel); ``gather`` on CPU: 4096 (U of a few MB); on a GPU up to 2^18 (U ≤ 1 GiB)."""
    method = method or default_method(backend)
    D2 = lag_size(W) ** 2
    if method == "rows":
        return 1 << 16
    if backend in ("numpy", "torch-cpu"):
        return 4096
    return int(max(4096, min(1 << 18, (1 << 30) // (8 * D2))))


def default_chunk(backend: str, W: int) -> int:
    """Gram rows per matrix product of the ``gather`` method: 64 on CPU (cache-sized operands),
    512 on a GPU (fewer, larger products). The ``rows`` method has a fixed plan (three products)."""
    return 64 if backend in ("numpy", "torch-cpu") else 512


def memory_needed(
    W: int, M1: int, M2: int, method: str = "rows", band_pixels: int | None = None, tile_pixels: int = 1 << 24
) -> int:
    """Bytes :func:`autocorrelations_2d` needs at its peak for window ``W`` on an M1 × M2 image.

    The dense a3 (D⁴ float64, D = 2W − 1) and the index maps that relate it to the stored
    sums (about 12 D⁴ int64 while they are built), the Gram accumulator (D⁴ float64 for
    ``gather``, about D⁴/2 for ``rows``), the host tile with its halo and one band's
    products. An upper estimate; it sizes the check that refuses a window too large for
    the machine before anything is allocated.
    """
    D = lag_size(W)
    D4 = D**4
    band_pixels = band_pixels or (1 << 16 if method == "rows" else 4096)
    band_rows = max(1, min(M1, band_pixels // max(M2, 1)))
    tile_rows = min(M1, max(band_rows, (tile_pixels // max(M2, 1)) // band_rows * band_rows))
    tile = 8 * (tile_rows + 2 * (W - 1)) * (M2 + 2 * (W - 1))
    if method == "rows":
        accumulator = 8 * (D4 // 2 + 2 * D**3)
        band = 8 * ((D * D // 2 + 1 + D * W) * M2 + (band_rows + D) * D * M2)
    else:
        accumulator = 8 * D4
        band = 3 * 8 * band_rows * M2 * D * D
    return int(8 * D4 + 12 * 8 * D4 + accumulator + tile + band)


def _physical_memory() -> int | None:
    """Bytes of physical memory of this machine (``os.sysconf``), or None where unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(W: int, M1: int, M2: int, method: str, band_pixels: int, tile_pixels: int) -> None:
    """Refuse a window whose arrays cannot fit in this machine's memory (:class:`InputError`)."""
    available = _physical_memory()
    need = memory_needed(W, M1, M2, method, band_pixels, tile_pixels)
    if available is None or need <= available:
        return
    fits = W
    while fits > 1 and memory_needed(fits, M1, M2, method, band_pixels, tile_pixels) > available:
        fits -= 1
    raise InputError(
        f"moments.window (--window) = {W}: the autocorrelations need about {_bytes(need)} "
        f"(the dense a3 alone is (2W−1)⁴ float64 = {_bytes(8 * lag_size(W) ** 4)}), but this machine has "
        f"{_bytes(available)} of memory; the largest window that fits is about {fits}"
    )


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"


def _overlap_rows(band: np.ndarray, W: int, M2: int) -> np.ndarray:
    """(h, D): for each row, Σ_x I[y, x] over the columns x with x + ℓx inside the image."""
    D = 2 * W - 1
    h = band.shape[0]
    rowsum = band.sum(axis=1)
    # left[:, k] = sum of the first k columns, right[:, k] = sum of the last k columns (k < W)
    k = min(W - 1, M2)
    left = np.zeros((h, W))
    right = np.zeros((h, W))
    if k:
        left[:, 1 : k + 1] = np.cumsum(band[:, :k], axis=1)
        right[:, 1 : k + 1] = np.cumsum(band[:, ::-1][:, :k], axis=1)
        left[:, k + 1 :] = rowsum[:, None]
        right[:, k + 1 :] = rowsum[:, None]
    lx = np.arange(D) - (W - 1)
    # ℓx ≥ 0: drop the last ℓx columns; ℓx < 0: drop the first |ℓx| columns
    return rowsum[:, None] - np.where(lx >= 0, right[:, np.clip(lx, 0, None)], left[:, np.clip(-lx, 0, None)])


class _RowPlan(NamedTuple):
    """The products of the ``rows`` method for one window (see :func:`_row_plan`)."""

    shape: tuple[int, int]  # accumulator A: rows = Y rows, columns = [Uᵀ rows ; Uᵀ wide-column rows]
    products: tuple[tuple[int, int, int, int], ...]  # (r0, r1, c0, c1): A[r0:r1, c0:c1] += Y[r0:r1] Xᵀ[c0:c1]
    wide_rows: np.ndarray  # Uᵀ rows weighted into Y after the Up rows (lags with ℓx < 0, window-row major)
    wide_cols: np.ndarray  # Uᵀ rows copied as the columns D²… of X (lags with ℓx > 0, window-row major)
    s2_index: np.ndarray  # (K2,) flat indices into A of s2
    s3_index: np.ndarray  # (K3,) flat indices into A of s3 (one computed member per class)


@lru_cache(maxsize=32)
def _row_plan(W: int) -> _RowPlan:
    """Which products the ``rows`` method forms, and where each stored sum ends up.

    Lag order: q = D² − 1 − f (reversed flat order; window row a = W − 1 − ℓy, column
    b = W − 1 − ℓx, q = a·D + b), so the upper half-plane Up = {ℓ ≥ 0} (lexicographic
    in (ℓy, ℓx), i.e. H of :mod:`cryomtd.moments.lags`) is q < n_h and the lower one
    Lo = {ℓ ≤ 0} is q ≥ n_h − 1 (ℓ = 0 at q = n_h − 1). Every a³ class, a point triple
    {p0 < p1 < p2} up to translation (lexicographic order, ties allowed), is formed once:

    * **Lo×Up**, base = the middle point p1: ℓ1 = p0 − p1 ∈ Lo, ℓ2 = p2 − p1 ∈ Up. Its
      differences in ℓy are within the window whenever any base is valid; it fails only
      when p1 is ≥ W columns from p0 or p2;
    * **wide**, the rest: then the base must be the point between the other two in x,
      b, with ℓL = left − b (ℓx < 0), ℓR = right − b (ℓx > 0), ℓRx − ℓLx ≥ W, and b not
      the lexicographic middle: ℓL, ℓR both > 0 (ℓLy ≥ 1, ℓRy ≥ 0) or both < 0
      (ℓLy ≤ 0, ℓRy ≤ −1). Formed as two rectangles over those ℓy ranges and all
      ℓx < 0 × ℓx > 0 (the ℓx pairs with span < W come along).

    Y rows: [I (unweighted, for s2); I·Uᵀ[Up]; I·Uᵀ[ℓx < 0] (a-major)], X rows: [Uᵀ;
    Uᵀ[ℓx > 0] (a-major)]. Lo×Up is (n_h + 1)·n_h multiply-adds per pixel (≈ D⁴/4), each
    wide rectangle W·(W−1)³: 0.361·D⁴ at W = 6, 0.365·D⁴ at W = 11 (the minimum, one
    sum per class, is K3 ≈ 0.316·D⁴), in three products. Coverage of every class is
    asserted here.
    """
    D = lag_size(W)
    D2 = D * D
    n_h = (D2 + 1) // 2
    k = W - 1
    wide_rows = np.array([a * D + W - 1 + j for a in range(D) for j in range(1, W)], dtype=np.int64)  # ℓx = −j
    wide_cols = np.array([a * D + m for a in range(D) for m in range(k)], dtype=np.int64)  # ℓx = W − 1 − m
    w0 = 1 + n_h
    n_rows = w0 + wide_rows.size
    n_cols = D2 + wide_cols.size
    products = [(0, w0, n_h - 1, D2)]  # [I; Up] × Lo
    if W > 1:
        products += [
            (w0, w0 + k * k, D2, D2 + W * k),  # ℓLy ∈ [1, W−1] × ℓRy ∈ [0, W−1]
            (w0 + k * k, w0 + D * k, D2 + W * k, D2 + D * k),
        ]  # ℓLy ∈ [1−W, 0] × ℓRy ∈ [1−W, −1]
    # lag (flat f) of every accumulator row and column
    row_f = np.concatenate([[-1], D2 - 1 - np.arange(n_h), D2 - 1 - wide_rows])
    col_f = np.concatenate([D2 - 1 - np.arange(D2), D2 - 1 - wide_cols])
    painted = np.zeros((n_rows, n_cols), dtype=bool)
    for r0, r1, c0, c1 in products:
        painted[r0:r1, c0:c1] = True
    ii, cc = np.nonzero(painted[1:])
    ii += 1
    flat = ii * n_cols + cc  # increasing
    cls = _a3_maps(W)[1][row_f[ii] * D2 + col_f[cc]]
    ucls, first = np.unique(cls, return_index=True)
    if ucls.size != _a3_maps(W)[0].size:
        raise AssertionError(f"rows plan misses a3 classes for W={W}")
    s3_index = flat[first]
    # s2: Σ_r I[r] I[r+ℓ] formed at ℓ ∈ Lo (row 0); stored at −ℓ ∈ Up in increasing f
    s2_index = np.arange(n_h - 1, D2)  # f = c … D²−1 is column q = D²−1−f(−ℓ) = f
    if not painted[0, s2_index].all():
        raise AssertionError(f"rows plan misses s2 for W={W}")
    for arr in (wide_rows, wide_cols, s2_index, s3_index):
        arr.setflags(write=False)
    return _RowPlan((n_rows, n_cols), tuple(products), wide_rows, wide_cols, s2_index, s3_index)


def autocorrelations_2d(
    image: np.ndarray,
    W: int,
    *,
    backend: str | Backend = "auto",
    dtype: str = "float64",
    band_pixels: int | None = None,
    tile_pixels: int = 1 << 24,
    chunk: int | None = None,
    sigma2: float | None = None,
    show_progress: bool | None = None,
    method: str | None = None,
) -> Moments2D:
    """First three autocorrelations of a 2-D image over the lags |ℓ|∞ ≤ W−1.

    Parameters
    ----------
    image : (M1, M2) real array (rows = y, columns = x); any array-like including a
        memory map (read tile by tile). Zero outside its support.
    W : window; lags ℓ with |ℓy|, |ℓx| ≤ W−1 (D = 2W−1 per axis).
    backend : a name of :data:`cryomtd.backend.NAMES`: ``"auto"`` (CUDA if present, else
        numpy), ``"numpy"``, ``"torch-cpu"``, ``"torch-cuda"``, ``"cupy"``; or a :class:`Backend`.
    dtype : ``"float64"`` (default; backends and methods agree to ~1e-13 relative) or
        ``"float32"`` (float32 products per row / band, float64 accumulation).
    band_pixels : base pixels per band (default :func:`default_band_pixels`).
        ``gather``: results depend on it only through rounding; ``rows``: not at all.
    tile_pixels : memory budget: base pixels copied to the device per tile
        (rounded to whole bands). Does not change the result.
    chunk : Gram rows per matrix product of the ``gather`` method (default :func:`default_chunk`).
    sigma2 : noise variance of this micrograph if known (stored, see ``Moments2D.debiased``).
    method : ``"rows"`` (one set of products per image row on a zero-copy view of the
        band; CPU default) or ``"gather"`` (gathered window vectors of whole bands; GPU
        default). Same sums up to rounding.

    Returns
    -------
    Moments2D with the sums s1, s2 (K2,), s3 (K3,), overlap sums t (D, D) and count
    P = M1·M2; dense views ``.a1``, ``.a2`` (D, D), ``.a3`` (D, D, D, D).
    """
    W = int(W)
    D = lag_size(W)
    if np.ndim(image) != 2:
        raise ValueError(f"autocorrelations_2d: image must be 2-D, got shape {np.shape(image)}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"autocorrelations_2d: dtype must be 'float32' or 'float64', got {dtype!r}")
    be = backend if isinstance(backend, Backend) else resolve_backend(backend)
    method = method or default_method(be.name)
    if method not in ("rows", "gather"):
        raise ValueError(f"autocorrelations_2d: method must be 'rows' or 'gather', got {method!r}")
    M1, M2 = (int(s) for s in np.shape(image))
    if M1 == 0 or M2 == 0:
        raise ValueError("autocorrelations_2d: empty image")
    band_pixels = band_pixels or default_band_pixels(be.name, W, method)
    chunk = chunk or default_chunk(be.name, W)
    band_rows = max(1, band_pixels // M2)
    n_bands = math.ceil(M1 / band_rows)
    bands_per_tile = max(1, (tile_pixels // M2) // band_rows)
    _check_memory(W, M1, M2, method, band_pixels, tile_pixels)
    if method == "rows":
        band_sums = _RowsBands(be, W, M2, dtype, _row_plan(W))
    else:
        band_sums = _GatherBands(be, W, M2, chunk)
    s1 = 0.0
    t = np.zeros((D, D))
    rows_valid = np.arange(D) - (W - 1)  # ℓy: row y counts in t[ℓy] iff 0 ≤ y + ℓy < M1

    bar = progress(total=n_bands, desc=f"autocorrelate W={W}", enable=show_progress, unit="band")
    for b0 in range(0, n_bands, bands_per_tile):
        b1 = min(n_bands, b0 + bands_per_tile)
        y0, y1 = b0 * band_rows, min(M1, b1 * band_rows)
        # host tile with halo: rows y0−(W−1) … y1+(W−1), columns −(W−1) … M2+(W−1), zero outside
        host = np.zeros((y1 - y0 + 2 * (W - 1), M2 + 2 * (W - 1)))
        lo, hi = max(0, y0 - (W - 1)), min(M1, y1 + (W - 1))
        host[lo - (y0 - (W - 1)) : hi - (y0 - (W - 1)), W - 1 : W - 1 + M2] = np.asarray(image[lo:hi], dtype=np.float64)
        if not np.all(np.isfinite(host)):
            raise ValueError(f"autocorrelations_2d: non-finite pixels in rows {lo}–{hi}")
        tile = be.asarray(host, dtype)
        for b in range(b0, b1):
            ya, yb = b * band_rows, min(M1, (b + 1) * band_rows)
            # band in tile coordinates: base rows ya..yb → padded rows ya−y0 … yb−y0+2(W−1)
            band_sums.add(tile[ya - y0 : yb - y0 + 2 * (W - 1)], yb - ya)
            # first-order sums on the host in float64 (cheap): s1 and the overlap sums t
            hb = host[ya - y0 + W - 1 : yb - y0 + W - 1, W - 1 : W - 1 + M2]
            s1 += float(hb.sum())
            C = _overlap_rows(hb, W, M2)  # (h, D) over ℓx
            yy = np.arange(ya, yb)[None, :] + rows_valid[:, None]  # (D, h): y + ℓy
            t += ((yy >= 0) & (yy < M1)).astype(np.float64) @ C
            bar.update(1)
    bar.close()
    s2h, s3 = band_sums.result()
    return Moments2D(
        window=W,
        count=M1 * M2,
        s1=s1,
        s2=s2h,
        s3=s3,
        t=t,
        n_images=1,
        noise_sum=float("nan") if sigma2 is None else float(sigma2) * M1 * M2,
        backend=be.name,
        dtype=dtype,
    )


class _RowsBands:
    """The ``rows`` method: per image row, products on a zero-copy view of the band (:func:`_row_plan`).

    For a band of h base rows (padded band T of h + D − 1 rows, M2 + D − 1 columns) the
    stack S[i, b, x] = T[h + D − 2 − i, x + D − 1 − b] (D shifted copies of the reversed
    rows, ≈ D values per pixel) makes the transposed window-vector matrix of base row j,
    Uᵀ[q, x] = I[y + ℓy, x + ℓx] in the reversed lag order q = D² − 1 − f, the contiguous
    block S[h−1−j : h−1−j+D] reshaped to (D², M2): no gather. Each row's products are
    added to one float64 accumulator in row order, so tiling and band size do not
    change the result.
    """

    def __init__(self, be: Backend, W: int, M2: int, dtype: str, plan: _RowPlan):
        D = lag_size(W)
        self.be, self.W, self.D, self.M2, self.plan = be, W, D, M2, plan
        self.n_h = (D * D + 1) // 2
        self.Y = be.zeros((plan.shape[0], M2), dtype)
        self.Xw = be.zeros((plan.wide_cols.size, M2), dtype)
        self.A = be.zeros(plan.shape, "float64")
        self.exact = dtype == "float64"

    def add(self, band: Any, h: int) -> None:
        be, D, M2, n_h, Y = self.be, self.D, self.M2, self.n_h, self.Y
        D2 = D * D
        flipped = be.module.flip(band, (0,))
        S = be.module.stack([flipped[:, D - 1 - b : D - 1 - b + M2] for b in range(D)], 1)  # (h+D−1, D, M2)
        w0 = 1 + n_h
        W = self.W
        Yw = Y[w0:].reshape(D, W - 1, M2)  # [a, j−1, x]: wide row ℓ = (W−1−a, −j)
        Xw = self.Xw.reshape(D, W - 1, M2)  # [a, m, x]: wide column ℓ = (W−1−a, W−1−m)
        for j in range(h):
            UT = S[h - 1 - j : h - 1 - j + D].reshape(D2, M2)
            w = UT[n_h - 1]  # I[r] for the M2 base pixels of this row
            Y[0] = w
            be.multiply(UT[:n_h], w, out=Y[1:w0])
            if W > 1:
                V = UT.reshape(D, D, M2)  # [a, b, x]
                be.multiply(V[:, W:], w, out=Yw)
                Xw[...] = V[:, : W - 1]
            for r0, r1, c0, c1 in self.plan.products:
                X = UT[c0:c1] if c1 <= D2 else self.Xw[c0 - D2 : c1 - D2]
                P = Y[r0:r1] @ X.T
                self.A[r0:r1, c0:c1] += P if self.exact else be.float64(P)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        A = self.be.to_numpy(self.A).ravel()
        return A[self.plan.s2_index], A[self.plan.s3_index]


class _GatherBands:
    """The ``gather`` method: one (n, D²) window-vector matrix U per band, gathered from the band.

    Columns in the permuted lag order H, L, R, Z of :func:`cryomtd.moments.lags.gram_layout`;
    the H rows of G = Yᵀ U (Y = diag(I) U) from the diagonal on in ``chunk``-row products,
    plus the L×R block; band results are added in band order.
    """

    def __init__(self, be: Backend, W: int, M2: int, chunk: int):
        D = lag_size(W)
        D2 = D * D
        self.be, self.W, self.M2 = be, W, M2
        self.layout = layout = gram_layout(W)
        Wp = M2 + 2 * (W - 1)  # row length of the padded tile
        ly, lx = np.divmod(np.asarray(layout.perm), D)
        self.offsets = ly * Wp + lx  # flat offset of lag column p from the window's top-left corner
        self.Wp = Wp
        self.gather_idx: dict[int, Any] = {}  # band height → (n, D²) flat indices into the band
        self.starts = list(range(0, layout.n_h, chunk))
        self.chunk = chunk
        self.G = be.zeros((D2, D2), "float64")
        self.s2 = be.zeros((D2,), "float64")

    def band_index(self, h: int) -> Any:
        if h not in self.gather_idx:
            base = (np.arange(h)[:, None] * self.Wp + np.arange(self.M2)[None, :]).ravel()
            idx = base[:, None] + self.offsets[None, :]
            self.gather_idx[h] = idx if self.be.name == "numpy" else self.be.asarray(idx, "int64")
        return self.gather_idx[h]

    def add(self, band: Any, h: int) -> None:
        be, G = self.be, self.G
        (l0, l1), (r0, r1), n_h = self.layout.l_range, self.layout.r_range, self.layout.n_h
        # (n, D²) window vectors, columns in the permuted lag order H, L, R, Z; column 0 is ℓ = 0
        U = be.gather(band, self.band_index(h))
        self.s2 += be.float64(U[:, 0] @ U)  # Σ_r I[r] I[r+ℓ] (column 0 holds I[r])
        Y = U[:, :l1] * U[:, 0:1]  # I-weighted window vectors, only the H and L columns are rows of G
        for a in self.starts:  # H rows, upper block triangle (H×H upper, H×(L∪R∪Z))
            e = min(n_h, a + self.chunk)
            G[a:e, a:] += be.float64(Y[:, a:e].T @ U[:, a:])
        G[l0:l1, r0:r1] += be.float64(Y[:, l0:l1].T @ U[:, r0:r1])  # L×R

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        Gh = self.be.to_numpy(self.G).ravel()
        return self.be.to_numpy(self.s2)[: self.layout.n_h], Gh[_a3_maps(self.W)[2]]
