"""FSC and resolution against independent definitions written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryomtd.evaluate import crossing_shell, fsc, resolution, shell_frequencies
from cryomtd.seeding import rng


def fsc_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent FSC: centred DFT, explicit loop over shells with a boolean mask per shell."""
    L = a.shape[0]
    A = np.fft.fftshift(np.fft.fftn(a))
    B = np.fft.fftshift(np.fft.fftn(b))
    k = np.arange(L) - L // 2  # centred integer frequencies (fftshift puts 0 at index L//2)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    radius = np.sqrt(kx**2 + ky**2 + kz**2)
    out = []
    for shell in range(L // 2 + 1):
        sel = np.floor(radius + 0.5) == shell  # |k| is never exactly half-integer (k² is an integer)
        num = np.sum(A[sel] * np.conj(B[sel])).real
        den = math.sqrt(np.sum(np.abs(A[sel]) ** 2) * np.sum(np.abs(B[sel]) ** 2))
        out.append(num / den)
    return np.array(out)


@pytest.mark.parametrize("L", [8, 11, 16])
def test_fsc_matches_shell_loop(L):
    g = rng(0, "test-fsc", L)
    a = g.standard_normal((L, L, L))
    b = 0.7 * a + g.standard_normal((L, L, L))
    got = fsc(a, b)
    want = fsc_loop(a, b)
    assert got.shape == (L // 2 + 1,)
    # same sums in a different order: agreement to float64 round-off
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_fsc_identical_is_one_and_independent_is_small():
    g = rng(1, "test-fsc")
    a = g.standard_normal((15, 15, 15))
    np.testing.assert_allclose(fsc(a, a), 1.0, atol=1e-12)
    np.testing.assert_allclose(fsc(a, 3.0 * a), 1.0, atol=1e-12)  # scale invariant
    np.testing.assert_allclose(fsc(a, -a), -1.0, atol=1e-12)
    b = g.standard_normal((15, 15, 15))
    # independent white noise: shell k≥3 holds ≥ 100 voxels, so |FSC| ~ 1/sqrt(n) < 0.35
    assert np.all(np.abs(fsc(a, b)[3:]) < 0.35)


def test_fsc_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        fsc(np.zeros((4, 4, 4)), np.zeros((5, 5, 5)))


def test_resolution_linear_interpolation():
    # L = 20 → 11 shells; curve falls from 0.9 at k=4 to 0.3 at k=5: crosses 0.5 at k = 4 + 0.4/0.6
    curve = np.array([1, 1, 0.95, 0.92, 0.9, 0.3, 0.2, 0.1, 0.1, 0.05, 0.0])
    k = 4 + (0.9 - 0.5) / (0.9 - 0.3)
    assert crossing_shell(curve, 0.5) == pytest.approx(k)
    assert resolution(curve, 0.5) == pytest.approx(20 / k)
    assert resolution(curve, 0.5, voxel_size=2.5) == pytest.approx(20 * 2.5 / k)
    # 0.143 crossed between k=6 (0.2) and k=7 (0.1)
    k2 = 6 + (0.2 - 0.143) / 0.1
    assert resolution(curve, 0.143, voxel_size=1.5) == pytest.approx(20 * 1.5 / k2)
    # odd box: the caller passes L
    assert resolution(curve, 0.5, L=21) == pytest.approx(21 / k)


def test_resolution_edge_cases():
    never = np.linspace(1.0, 0.6, 11)  # stays above 0.5 → bound at the last shell (Nyquist 2 voxels)
    assert crossing_shell(never, 0.5) is None
    assert resolution(never, 0.5, voxel_size=3.0) == pytest.approx(6.0)
    at_once = np.full(11, 0.1)  # below threshold already at k=0 → nothing resolved
    assert resolution(at_once, 0.143) == math.inf
    assert shell_frequencies(20, 2.0)[10] == pytest.approx(10 / 40)
