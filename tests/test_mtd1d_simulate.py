"""1-D simulation: signals, density γ, the separation rule, chunk invariance, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.io import InputError
from cryomtd.mtd1d import Placement, make_signal, segment_lengths, simulate_segment


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in a boolean array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return starts, ends - starts


@pytest.mark.parametrize("min_gap", [20, 3])
def test_density_and_separation(min_gap):
    L, gamma, n = 21, 0.05, 5_000_000
    x = make_signal("gaussian", L, seed=2)  # no zero entries, so the support shows every copy
    assert np.all(x != 0)
    y, copies = simulate_segment(x, n, Placement(gamma, min_gap), 0.0, seed=7, index=0, chunk=100_003)
    starts, lengths = runs(y != 0)
    # every copy is whole (runs are exactly L long: copies never touch since min_gap >= 1)
    assert np.all(lengths == L)
    assert starts.size == copies
    gaps = starts[1:] - (starts[:-1] + L)
    assert gaps.min() >= min_gap
    assert gaps.min() <= min_gap + 2  # the bound is reached (geometric gaps start at 0)
    for s in starts[:50]:
        np.testing.assert_array_equal(y[s : s + L], x)
    # realised density: ~11900 copies, renewal CV ≈ 0.9 → relative std ≈ 0.9/√11900 ≈ 0.8 %; 4 % ≈ 5 std
    assert abs(copies * L / n - gamma) / gamma < 0.04


def test_dense_packing_allowed_with_zero_gap():
    L = 5
    x = make_signal("gaussian", L, seed=1)
    y, copies = simulate_segment(x, 200_000, Placement(0.9, 0), 0.0, seed=1, index=0)
    assert abs(copies * L / y.size - 0.9) < 0.02  # far above the well-separated limit L/(2L-1)
    assert np.mean(y != 0) == pytest.approx(copies * L / y.size)


def test_chunk_size_does_not_change_data_and_seeds_do():
    x = make_signal("step", 21)
    p = Placement(0.1, 20)
    a, ca = simulate_segment(x, 50_000, p, 2.0, seed=3, index=4, chunk=7)
    b, cb = simulate_segment(x, 50_000, p, 2.0, seed=3, index=4, chunk=50_000)
    np.testing.assert_array_equal(a, b)
    assert ca == cb
    c, _ = simulate_segment(x, 50_000, p, 2.0, seed=3, index=5)
    d, _ = simulate_segment(x, 50_000, p, 2.0, seed=4, index=4)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_noise_statistics():
    x = make_signal("gaussian", 8, seed=0)
    clean, _ = simulate_segment(x, 400_000, Placement(0.1, 7), 0.0, seed=1, index=0)
    noisy, _ = simulate_segment(x, 400_000, Placement(0.1, 7), 1.7, seed=1, index=0)
    # same placement stream whatever σ; noise variance within 1 % (std of the estimate ≈ 0.2 %)
    assert np.var(noisy - clean) == pytest.approx(1.7**2, rel=0.01)


def test_signals():
    s = make_signal("step", 21)
    assert np.count_nonzero(s) == 11 and np.allclose(s[:11], s[0])
    assert np.linalg.norm(s) ** 2 == pytest.approx(21)
    g = make_signal("gaussian", 10, seed=5)
    np.testing.assert_array_equal(g, make_signal("gaussian", 10, seed=5))
    assert not np.array_equal(g, make_signal("gaussian", 10, seed=6))


def test_signal_from_file(tmp_path):
    v = np.arange(6, dtype=float)
    np.save(tmp_path / "x.npy", v)
    np.testing.assert_array_equal(make_signal("file", 6, path=tmp_path / "x.npy"), v)
    with pytest.raises(InputError, match="length L=7"):
        make_signal("file", 7, path=tmp_path / "x.npy")
    with pytest.raises(InputError, match="signal.path"):
        make_signal("file", 6, path=tmp_path / "missing.npy")


def test_bad_inputs_are_named():
    x = make_signal("step", 21)
    with pytest.raises(InputError, match="placement.gamma"):
        simulate_segment(x, 1000, Placement(0.6, 20), 1.0, 0, 0)  # > L/(2L-1)
    with pytest.raises(InputError, match="segments"):
        segment_lengths(10, 11)
    assert segment_lengths(10, 3).tolist() == [4, 3, 3]


@pytest.mark.parametrize("min_gap", [0, 3])
def test_pair_separation_is_the_gap_histogram_per_sample(min_gap):
    """ξ[d] = (consecutive pairs with d zeros between them) / n, counted on a simulated segment."""
    L, gamma, n = 6, 0.4, 2_000_000
    x = make_signal("gaussian", L, seed=2)
    pl = Placement(gamma, min_gap)
    y, copies = simulate_segment(x, n, pl, 0.0, seed=3, index=0)
    # copies may touch (min_gap 0), so read the starts from the placement stream, not the support
    from cryomtd.mtd1d.simulate import _Starts
    from cryomtd.seeding import rng

    starts = _Starts(rng(3, "mtd1d-segment", 0).spawn(2)[0], L, pl).upto(n - L + 1)
    assert starts.size == copies
    counts = np.bincount(np.diff(starts) - L, minlength=L - 1)[: L - 1] / n
    xi = pl.pair_separation(L)
    assert np.all(xi[:min_gap] == 0) and np.all(counts[:min_gap] == 0)
    # each bin holds ~ n ξ ≈ 2e4 pairs: Poisson-like relative error ≈ 0.7 %; 5 % is ≥ 5 std
    np.testing.assert_allclose(counts[min_gap:], xi[min_gap:], rtol=0.05)
    far = Placement(gamma=0.05, min_gap=L - 1).pair_separation(L)
    assert np.all(far == 0)  # well separated: no pair within reach of the lags
