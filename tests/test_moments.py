"""Tests of the 2-D autocorrelation engine and the Moments2D container.

Every accuracy check compares with the definition (docs/design.md §8) evaluated directly in
the test: zero-padded shifted copies of the image, one product-sum per lag (pair).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cryomtd.io import InputError
from cryomtd.moments import (
    Moments2D,
    a2_nonredundant_lags,
    a3_nonredundant_lags,
    autocorrelations_2d,
    merge,
)
from cryomtd.moments.backends import available_backends

# float64 sums of ≤ 100 products of O(1) numbers: rounding ≲ 1e-14; 1e-12 leaves room.
TOL = 1e-12


def shifted(image: np.ndarray, ly: int, lx: int) -> np.ndarray:
    """S[r] = I[r + ℓ] with I zero outside the image (independent of the engine's windows)."""
    M1, M2 = image.shape
    out = np.zeros_like(image)
    ys, xs = slice(max(0, -ly), min(M1, M1 - ly)), slice(max(0, -lx), min(M2, M2 - lx))
    yd, xd = slice(max(0, ly), min(M1, M1 + ly)), slice(max(0, lx), min(M2, M2 + lx))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[ys, xs] = image[yd, xd]
    return out


def brute_force(image: np.ndarray, W: int) -> tuple[float, np.ndarray, np.ndarray]:
    D = 2 * W - 1
    lags = range(-(W - 1), W)
    S = {(a, b): shifted(image, a, b) for a in lags for b in lags}
    P = image.size
    a2 = np.zeros((D, D))
    a3 = np.zeros((D,) * 4)
    for (l1y, l1x), A in S.items():
        a2[l1y + W - 1, l1x + W - 1] = (image * A).sum() / P
        for (l2y, l2x), B in S.items():
            a3[l1y + W - 1, l1x + W - 1, l2y + W - 1, l2x + W - 1] = (image * A * B).sum() / P
    return image.mean(), a2, a3


def random_image(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("method", ["rows", "gather"])
@pytest.mark.parametrize("W", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(7, 7), (8, 6), (5, 9), (3, 2)])
def test_brute_force_all_dense_entries(W, shape, method):
    """All (2W−1)⁴ dense entries equal the definition, on odd, even and smaller-than-window images,
    for both computation methods (CPU default "rows", GPU default "gather")."""
    img = random_image(shape, seed=W + 10 * shape[0])
    a1, a2, a3 = brute_force(img, W)
    m = autocorrelations_2d(img, W, backend="numpy", band_pixels=8, chunk=5, method=method)
    assert m.count == img.size and m.n == img.size
    assert abs(m.a1 - a1) < TOL
    np.testing.assert_allclose(m.a2, a2, rtol=0, atol=TOL)
    np.testing.assert_allclose(m.a3, a3, rtol=0, atol=TOL)


def test_nonredundant_lags_and_values():
    """a3_unique()[k] is the definition evaluated at a3_nonredundant_lags(W)[k] (same for a2)."""
    W = 3
    img = random_image((9, 8), seed=3)
    m = autocorrelations_2d(img, W, backend="numpy")
    for k, (l1y, l1x, l2y, l2x) in enumerate(a3_nonredundant_lags(W)):
        expect = (img * shifted(img, l1y, l1x) * shifted(img, l2y, l2x)).mean()
        assert abs(m.a3_unique()[k] - expect) < TOL
    for k, (ly, lx) in enumerate(a2_nonredundant_lags(W)):
        assert abs(m.a2_unique()[k] - (img * shifted(img, ly, lx)).mean()) < TOL
    # a2 non-redundant lags are the half-plane
    L2 = a2_nonredundant_lags(W)
    assert np.all((L2[:, 0] > 0) | ((L2[:, 0] == 0) & (L2[:, 1] >= 0)))


def test_symmetries():
    """a2[ℓ] = a2[−ℓ]; a3 has the 6-fold symmetry of the point triple {0, ℓ1, ℓ2} inside the window."""
    W = 4
    m = autocorrelations_2d(random_image((11, 10), seed=5), W, backend="numpy")
    a2, a3 = m.a2, m.a3
    np.testing.assert_array_equal(a2, a2[::-1, ::-1])
    np.testing.assert_array_equal(a3, a3.transpose(2, 3, 0, 1))
    lag = range(-(W - 1), W)
    inside = lambda *ls: all(abs(v) <= W - 1 for v in ls)  # noqa: E731
    o = W - 1
    for l1y, l1x, l2y, l2x in itertools.product(lag, repeat=4):
        if inside(l2y - l1y, l2x - l1x):
            assert a3[l1y + o, l1x + o, l2y + o, l2x + o] == a3[-l1y + o, -l1x + o, l2y - l1y + o, l2x - l1x + o]


def test_class_sizes_count_all_entries():
    """Every dense entry maps to one class; K3 matches the number of distinct canonical triples."""
    from cryomtd.moments.lags import a3_index_map

    for W in (1, 2, 3, 5):
        D = 2 * W - 1
        idx = a3_index_map(W)
        K = a3_nonredundant_lags(W).shape[0]
        assert idx.shape == (D,) * 4 and idx.min() == 0 and idx.max() == K - 1
        assert np.unique(idx).size == K
        # independent count: canonical triples by brute force
        keys = set()
        for l1 in itertools.product(range(-(W - 1), W), repeat=2):
            for l2 in itertools.product(range(-(W - 1), W), repeat=2):
                pts = sorted([(0, 0), l1, l2])
                keys.add(tuple((p[0] - pts[0][0], p[1] - pts[0][1]) for p in pts[1:]))
        assert len(keys) == K


def test_merge_equals_pooled_brute_force():
    """merge of per-image results = the pixel-weighted mean of brute force; order-independent bitwise."""
    W = 2
    imgs = [random_image(s, seed=i) for i, s in enumerate([(6, 5), (4, 8), (7, 7)])]
    parts = [autocorrelations_2d(im, W, backend="numpy") for im in imgs]
    merged = merge(parts)
    P = sum(im.size for im in imgs)
    bf = [brute_force(im, W) for im in imgs]
    np.testing.assert_allclose(merged.a3, sum(b[2] * im.size for b, im in zip(bf, imgs)) / P, atol=TOL, rtol=0)
    np.testing.assert_allclose(merged.a2, sum(b[1] * im.size for b, im in zip(bf, imgs)) / P, atol=TOL, rtol=0)
    assert abs(merged.a1 - sum(im.sum() for im in imgs) / P) < TOL
    assert merged.count == P and merged.n_images == 3
    rev = merge(parts[::-1])
    np.testing.assert_array_equal(rev.s3, merged.s3)
    assert Moments2D.merge(parts).s1 == merged.s1
    with pytest.raises(ValueError):
        merge([parts[0], autocorrelations_2d(imgs[0], 3, backend="numpy")])


@pytest.mark.parametrize("method", ["rows", "gather"])
def test_tiled_equals_untiled_bitwise(method):
    """Memory tiles with halos give exactly (bitwise) the untiled result; band size changes only rounding
    (and for the "rows" method, whose sums run row by row, not even that for s2 and s3)."""
    img = random_image((37, 23), seed=7)
    W = 4
    ref = autocorrelations_2d(img, W, backend="numpy", band_pixels=50, tile_pixels=10**9, method=method)
    for tile in (23, 50, 150, 400):
        m = autocorrelations_2d(img, W, backend="numpy", band_pixels=50, tile_pixels=tile, method=method)
        np.testing.assert_array_equal(m.s3, ref.s3)
        np.testing.assert_array_equal(m.s2, ref.s2)
        np.testing.assert_array_equal(m.t, ref.t)
        assert m.s1 == ref.s1
    other = autocorrelations_2d(img, W, backend="numpy", band_pixels=1000, chunk=7, method=method)
    np.testing.assert_allclose(other.s3, ref.s3, rtol=0, atol=1e-11)
    if method == "rows":
        np.testing.assert_array_equal(other.s3, ref.s3)
        np.testing.assert_array_equal(other.s2, ref.s2)
    switched = autocorrelations_2d(img, W, backend="numpy", method="gather" if method == "rows" else "rows")
    np.testing.assert_allclose(switched.s3, ref.s3, rtol=0, atol=1e-11)
    np.testing.assert_allclose(switched.s2, ref.s2, rtol=0, atol=1e-11)


def test_rows_plan_covers_every_class():
    """The "rows" computed set (lower × upper half-plane with the middle point as base, plus the wide
    rectangles) holds a member of every a3 class for W = 1…12 (asserted when the plan is built), and
    the stored entries are one per class, read from positions that belong to that class."""
    from cryomtd.moments.autocorr2d import _row_plan
    from cryomtd.moments.lags import a3_index_map

    for W in range(1, 13):
        plan = _row_plan(W)
        assert plan.s3_index.size == a3_nonredundant_lags(W).shape[0]
        assert np.unique(plan.s3_index).size == plan.s3_index.size
    # values: an image whose W=5 result is compared entry by entry with the definition
    W = 5
    img = random_image((12, 13), seed=21)
    m = autocorrelations_2d(img, W, backend="numpy", method="rows")
    idx = a3_index_map(W)
    for k, (l1y, l1x, l2y, l2x) in enumerate(a3_nonredundant_lags(W)):
        assert idx[l1y + W - 1, l1x + W - 1, l2y + W - 1, l2x + W - 1] == k
        expect = (img * shifted(img, l1y, l1x) * shifted(img, l2y, l2x)).mean()
        assert abs(m.a3_unique()[k] - expect) < TOL


def test_memmap_input(tmp_path):
    """A memory-mapped micrograph is read tile by tile and gives the in-memory result."""
    img = random_image((30, 17), seed=8)
    path = tmp_path / "img.npy"
    np.save(path, img)
    mm = np.load(path, mmap_mode="r")
    a = autocorrelations_2d(mm, 3, backend="numpy", band_pixels=40, tile_pixels=60)
    b = autocorrelations_2d(img, 3, backend="numpy", band_pixels=40)
    np.testing.assert_array_equal(a.s3, b.s3)


@pytest.mark.skipif("torch-cpu" not in available_backends(), reason="torch not installed")
def test_torch_cpu_equals_numpy():
    """float64 backends agree to 1e-10; differences come only from summation order."""
    img = random_image((33, 29), seed=9)
    a = autocorrelations_2d(img, 5, backend="numpy")
    for method in ("rows", "gather"):
        b = autocorrelations_2d(img, 5, backend="torch-cpu", method=method)
        assert b.backend == "torch-cpu"
        np.testing.assert_allclose(b.s3, a.s3, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b.s2, a.s2, rtol=0, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["torch-cuda", "cupy"])
def test_cuda_backends_equal_numpy(name):
    if name not in available_backends():
        pytest.skip(f"{name} not available")
    img = random_image((64, 61), seed=11)
    a = autocorrelations_2d(img, 6, backend="numpy")
    b = autocorrelations_2d(img, 6, backend=name)
    np.testing.assert_allclose(b.s3, a.s3, rtol=0, atol=1e-10)
    c = autocorrelations_2d(img, 6, backend=name, dtype="float32")
    np.testing.assert_allclose(c.a3, a.a3, rtol=0, atol=1e-5)


def test_float32_mode_error_is_small():
    """float32 per band, float64 across bands: error ~ 1e-7 relative to the entry scale (documented)."""
    img = random_image((64, 64), seed=12)
    a = autocorrelations_2d(img, 3, backend="numpy")
    b = autocorrelations_2d(img, 3, backend="numpy", dtype="float32", band_pixels=512)
    assert b.dtype == "float32"
    err = np.abs(b.a3_unique() - a.a3_unique()).max()
    assert 0 < err < 1e-5  # a3 entries are O(1); float32 eps 6e-8 × √(band) growth


def test_save_load_roundtrip_and_errors(tmp_path):
    m = autocorrelations_2d(random_image((9, 9), seed=1), 3, backend="numpy", sigma2=0.5)
    p = tmp_path / "m.npz"
    m.save(p)
    r = Moments2D.load(p)
    assert (r.window, r.count, r.backend, r.dtype, r.n_images) == (3, 81, "numpy", "float64", 1)
    np.testing.assert_array_equal(r.s3, m.s3)
    np.testing.assert_array_equal(r.t, m.t)
    assert r.sigma2 == pytest.approx(0.5)
    with pytest.raises(InputError, match="not found"):
        Moments2D.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, window=3)
    with pytest.raises(InputError, match="bad.npz"):
        Moments2D.load(bad)


def test_from_dense_roundtrip():
    m = autocorrelations_2d(random_image((10, 7), seed=2), 3, backend="numpy")
    r = Moments2D.from_dense(m.a1, m.a2, m.a3, m.count, 3)
    np.testing.assert_allclose(r.s3, m.s3, rtol=1e-15, atol=1e-13)
    np.testing.assert_allclose(r.a3, m.a3, rtol=1e-15, atol=1e-15)
    with pytest.raises(ValueError):
        Moments2D.from_dense(m.a1, m.a2, m.a3, m.count, 2)


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        autocorrelations_2d(np.zeros(5), 2, backend="numpy")
    img = np.zeros((5, 5))
    img[2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        autocorrelations_2d(img, 2, backend="numpy")
    with pytest.raises(ValueError, match="window"):
        autocorrelations_2d(np.zeros((5, 5)), 0, backend="numpy")


def test_backend_resolution():
    """auto is numpy without a CUDA device (CUDA backends otherwise); unknown names are refused."""
    from cryomtd.moments import resolve_backend

    avail = available_backends()
    auto = resolve_backend("auto").name
    assert auto == ("torch-cuda" if "torch-cuda" in avail else "cupy" if "cupy" in avail else "numpy")
    for name in ("fortran", "cuda"):
        with pytest.raises(ValueError, match=f"moments.advanced.backend: unknown backend '{name}'"):
            resolve_backend(name)
    for name in ("torch-cuda", "cupy"):
        if name not in avail:
            with pytest.raises(RuntimeError, match=f"moments.advanced.backend: backend '{name}' requested"):
                resolve_backend(name)


@pytest.mark.skipif("torch-cpu" not in available_backends(), reason="torch not installed")
def test_torch_float32_close_to_float64():
    img = random_image((40, 40), seed=13)
    a = autocorrelations_2d(img, 3, backend="numpy")
    b = autocorrelations_2d(img, 3, backend="torch-cpu", dtype="float32")
    np.testing.assert_allclose(b.a3_unique(), a.a3_unique(), rtol=0, atol=1e-5)  # float32 over ≤ 1600-term sums


def test_crop_equals_direct_smaller_window():
    """Cropping W=4 sums to W=2 gives the W=2 computation (same sums, different rounding order)."""
    img = random_image((15, 12), seed=14)
    big = autocorrelations_2d(img, 4, backend="numpy")
    small = autocorrelations_2d(img, 2, backend="numpy")
    c = big.crop(2)
    assert c.window == 2 and c.count == small.count
    np.testing.assert_allclose(c.s3, small.s3, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.s2, small.s2, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(c.t, small.t)
    np.testing.assert_array_equal(c.a3, big.a3[2:5, 2:5, 2:5, 2:5])  # a dense sub-block, exactly
    with pytest.raises(ValueError):
        big.crop(5)
