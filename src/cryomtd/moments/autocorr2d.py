"""The autocorrelation engine: a¹, a², a³ of a micrograph as Gram products of window vectors.

For a base pixel r the window vector is v_r[f(ℓ)] = I[r + ℓ] over the D² = (2W−1)²
lags (flat index f of :mod:`cryomtd.moments.lags`). Then

    Σ_r I[r] I[r+ℓ]          = (Σ_r I[r] v_r)[f(ℓ)]
    Σ_r I[r] I[r+ℓ1] I[r+ℓ2] = (Σ_r I[r] v_r v_rᵀ)[f(ℓ1), f(ℓ2)]

so a³ is one weighted Gram matrix G = Yᵀ U with U the (n, D²) matrix of window
vectors of n base pixels and Y = diag(I) U: matrix multiplication, which BLAS (CPU)
and cuBLAS (GPU) run near the machine's peak. Work is organised as

* **bands**: ``band_rows`` consecutive image rows (all columns) of base pixels,
  n = band_rows·M2 ≈ ``band_pixels``; one U per band (cache/GPU-memory sized);
* **the computed set** (:mod:`cryomtd.moments.lags`): the window vector is
  permuted to the lag order H, L, R, Z and only the H rows of G from the diagonal
  on (in ``chunk``-row blocks, G[a:e, a:]) plus the L×R block are formed — ≈ 0.44
  of the full Gram (0.47 for W = 11 with 64-row chunks) instead of 1/2 for a
  symmetric product; every a³ class has its stored representative there;
* **memory tiles**: groups of bands copied to the device at once with a halo of
  W−1 rows on each side (zeros beyond the image), at most ``tile_pixels`` pixels,
  so micrographs larger than memory (e.g. an ``mrcfile`` memory map) stream through.

Band results are added to one float64 accumulator in band order whatever the tiling,
so tiled and untiled runs are bitwise identical. ``dtype="float32"`` computes each
band in float32 (faster on GPUs) and still accumulates across bands in float64;
see docs/moments.md for its measured error.
"""

from __future__ import annotations

import math

import numpy as np

from cryomtd.moments.backends import Backend, resolve_backend
from cryomtd.moments.lags import _a3_maps, gram_layout, lag_size
from cryomtd.moments.result import Moments2D
from cryomtd.progress import progress

__all__ = ["autocorrelations_2d", "default_band_pixels", "default_chunk"]


def default_band_pixels(backend: str, W: int) -> int:
    """Base pixels per band: ~4k on CPU (U of a few MB), up to 2^18 on a GPU (U ≤ 1 GiB)."""
    D2 = lag_size(W) ** 2
    if backend in ("numpy", "torch-cpu"):
        return 4096
    return int(max(4096, min(1 << 18, (1 << 30) // (8 * D2))))


def default_chunk(backend: str, W: int) -> int:
    """Gram rows per matrix product: 64 on CPU (cache-sized operands), 512 on a GPU (fewer, larger products)."""
    return 64 if backend in ("numpy", "torch-cpu") else 512


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
        left[:, 1:k + 1] = np.cumsum(band[:, :k], axis=1)
        right[:, 1:k + 1] = np.cumsum(band[:, ::-1][:, :k], axis=1)
        left[:, k + 1:] = rowsum[:, None]
        right[:, k + 1:] = rowsum[:, None]
    lx = np.arange(D) - (W - 1)
    # ℓx ≥ 0: drop the last ℓx columns; ℓx < 0: drop the first |ℓx| columns
    return rowsum[:, None] - np.where(lx >= 0, right[:, np.clip(lx, 0, None)], left[:, np.clip(-lx, 0, None)])


def autocorrelations_2d(image: np.ndarray, W: int, *, backend: str | Backend = "auto",
                        dtype: str = "float64", band_pixels: int | None = None,
                        tile_pixels: int = 1 << 24, chunk: int | None = None,
                        sigma2: float | None = None, show_progress: bool | None = None) -> Moments2D:
    """First three autocorrelations of a 2-D image over the lags |ℓ|∞ ≤ W−1.

    Parameters
    ----------
    image : (M1, M2) real array (rows = y, columns = x); any array-like including a
        memory map (read tile by tile). Zero outside its support.
    W : window; lags ℓ with |ℓy|, |ℓx| ≤ W−1 (D = 2W−1 per axis).
    backend : ``"auto"`` (CUDA if present, else numpy), ``"numpy"``, ``"torch-cpu"``,
        ``"torch-cuda"``, ``"cupy"``, ``"cuda"`` or a :class:`Backend`.
    dtype : ``"float64"`` (default; backends agree to ~1e-13 relative) or ``"float32"``
        (per-band float32 products, float64 accumulation across bands).
    band_pixels : base pixels per band (default :func:`default_band_pixels`).
        Results depend on it only through rounding.
    tile_pixels : memory budget: base pixels copied to the device per tile
        (rounded to whole bands). Does not change the result.
    chunk : Gram rows per matrix product (default :func:`default_chunk`).
    sigma2 : noise variance of this micrograph if known (stored, see ``Moments2D.debiased``).

    Returns
    -------
    Moments2D with the sums s1, s2 (K2,), s3 (K3,), overlap sums t (D, D) and count
    P = M1·M2; dense views ``.a1``, ``.a2`` (D, D), ``.a3`` (D, D, D, D).
    """
    W = int(W)
    D = lag_size(W)
    D2 = D * D
    if np.ndim(image) != 2:
        raise ValueError(f"autocorrelations_2d: image must be 2-D, got shape {np.shape(image)}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"autocorrelations_2d: dtype must be 'float32' or 'float64', got {dtype!r}")
    be = backend if isinstance(backend, Backend) else resolve_backend(backend)
    M1, M2 = (int(s) for s in np.shape(image))
    if M1 == 0 or M2 == 0:
        raise ValueError("autocorrelations_2d: empty image")
    band_pixels = band_pixels or default_band_pixels(be.name, W)
    chunk = chunk or default_chunk(be.name, W)
    band_rows = max(1, band_pixels // M2)
    n_bands = math.ceil(M1 / band_rows)
    bands_per_tile = max(1, (tile_pixels // M2) // band_rows)
    layout = gram_layout(W)
    Wp = M2 + 2 * (W - 1)  # row length of the padded tile
    ly, lx = np.divmod(np.asarray(layout.perm), D)
    offsets = ly * Wp + lx  # flat offset of lag column p from the window's top-left corner
    gather_idx: dict[int, object] = {}  # band height → (n, D²) flat indices into the band

    def band_index(h: int):
        if h not in gather_idx:
            base = (np.arange(h)[:, None] * Wp + np.arange(M2)[None, :]).ravel()
            idx = base[:, None] + offsets[None, :]
            gather_idx[h] = idx if be.name == "numpy" else be.asarray(idx, "int64")
        return gather_idx[h]

    (l0, l1), (r0, r1), n_h = layout.l_range, layout.r_range, layout.n_h
    starts = list(range(0, n_h, chunk))

    G = be.zeros((D2, D2), "float64")
    s2 = be.zeros((D2,), "float64")
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
        host[lo - (y0 - (W - 1)): hi - (y0 - (W - 1)), W - 1: W - 1 + M2] = np.asarray(image[lo:hi], dtype=np.float64)
        if not np.all(np.isfinite(host)):
            raise ValueError(f"autocorrelations_2d: non-finite pixels in rows {lo}–{hi}")
        tile = be.asarray(host, dtype)
        for b in range(b0, b1):
            ya, yb = b * band_rows, min(M1, (b + 1) * band_rows)
            # band in tile coordinates: base rows ya..yb → padded rows ya−y0 … yb−y0+2(W−1)
            # (n, D²) window vectors, columns in the permuted lag order H, L, R, Z; column 0 is ℓ = 0
            U = be.gather(tile[ya - y0: yb - y0 + 2 * (W - 1)], band_index(yb - ya))
            s2 += be.float64(U[:, 0] @ U)  # Σ_r I[r] I[r+ℓ] (column 0 holds I[r])
            Y = U[:, :l1] * U[:, 0:1]  # I-weighted window vectors, only the H and L columns are rows of G
            for a in starts:  # H rows, upper block triangle (H×H upper, H×(L∪R∪Z))
                e = min(n_h, a + chunk)
                G[a:e, a:] += be.float64(Y[:, a:e].T @ U[:, a:])
            G[l0:l1, r0:r1] += be.float64(Y[:, l0:l1].T @ U[:, r0:r1])  # L×R
            # first-order sums on the host in float64 (cheap): s1 and the overlap sums t
            hb = host[ya - y0 + W - 1: yb - y0 + W - 1, W - 1: W - 1 + M2]
            s1 += float(hb.sum())
            C = _overlap_rows(hb, W, M2)  # (h, D) over ℓx
            yy = np.arange(ya, yb)[None, :] + rows_valid[:, None]  # (D, h): y + ℓy
            t += ((yy >= 0) & (yy < M1)).astype(np.float64) @ C
            bar.update(1)
    bar.close()
    Gh = be.to_numpy(G).ravel()
    s2h = be.to_numpy(s2)
    return Moments2D(window=W, count=M1 * M2, s1=s1, s2=s2h[:n_h], s3=Gh[_a3_maps(W)[2]], t=t,
                     n_images=1, noise_sum=float("nan") if sigma2 is None else float(sigma2) * M1 * M2,
                     backend=be.name, dtype=dtype)
