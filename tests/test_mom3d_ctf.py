"""The 3-D moment model with the CTF (cryomtd.mom3d.ctfmodel) against independent definitions.

The reference moments are computed here from explicitly CTF-filtered projections: each
projection is placed in the centre of its own T×T tile (a sparse mosaic with one particle per
tile) and filtered in Fourier space by a CTF written in this file (not cryomtd.ctf); the
autocorrelations are the tile's periodic sums, by FFT. A tile's kernel is the isolated
particle's kernel summed over the period T, so a reference differs from the isolated-particle
model by the kernel's tail beyond T/2 (measured: 9·10⁻⁵ relative in a2 at T = 129, 2·10⁻⁵ at
257, for 1 µm at 3.85 Å/px; the tolerances below are far above that).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cryomtd.basis import SphericalBessel
from cryomtd.ctf import CTF
from cryomtd.mom3d import MomentModel, expected_moments
from cryomtd.mom3d.ctfmodel import CtfInvariantModel, CtfMixture, CtfQuadratureModel
from cryomtd.rotations import random as random_rotations
from cryomtd.rotations import so3_quadrature

PX = 3.85  # Å per pixel (BPTI's voxel size)
T_REF = 81  # tile of the exact-average references (3⁴: odd, FFT-friendly)


# --------------------------------------------------------------------------- the test's own CTF and moments
def _wavelength(kv: float) -> float:
    """Relativistic electron wavelength (Å), CODATA constants written out."""
    h, m, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    V = kv * 1e3
    return h / math.sqrt(2 * m * e * V * (1 + e * V / (2 * m * c * c))) * 1e10


def _ctf_grid(T: int, px: float, du: float, dv: float | None = None, angle_deg: float = 0.0) -> np.ndarray:
    """CTF on the rfft2 grid of a T×T tile: −(√(1−A²) sin χ + A cos χ), χ = πλΔf(θ)s² − π/2·Cs·λ³s⁴,
    300 kV, Cs 2.7 mm, A = 0.1, Δf(θ) from the components: ½(u+v) + ½(u−v)·cos 2(θ − θa)."""
    dv = du if dv is None else dv
    lam, cs, A = _wavelength(300.0), 2.7e7, 0.1
    fy = np.fft.fftfreq(T, d=px)[:, None]
    fx = np.fft.rfftfreq(T, d=px)[None, :]
    s2 = fx * fx + fy * fy
    ta = math.radians(angle_deg)
    cos2 = np.divide(
        (fx * fx - fy * fy) * math.cos(2 * ta) + 2 * fx * fy * math.sin(2 * ta), s2, where=s2 > 0, out=np.ones_like(s2)
    )
    df = 0.5 * (du + dv) + 0.5 * (du - dv) * cos2
    chi = math.pi * lam * df * s2 - 0.5 * math.pi * cs * lam**3 * s2 * s2
    return -(math.sqrt(1 - A * A) * np.sin(chi) + A * np.cos(chi))


def _tiles(images: np.ndarray, T: int) -> np.ndarray:
    n, L, _ = images.shape
    out = np.zeros((n, T, T))
    o = T // 2 - L // 2
    out[:, o : o + L, o : o + L] = images
    return out


def _tile_moments(images: np.ndarray, W: int, H: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: Σ q, Σ q q(+ℓ), Σ q q(+ℓ1) q(+ℓ2) of the filtered tile q (periodic sums, lags |ℓ| ≤ W−1):
    (n,), (n, K, K), (n, K, K, K, K)."""
    q = np.fft.irfft2(np.fft.rfft2(_tiles(images, T)) * H, s=(T, T))
    F = np.fft.rfft2(q)
    idx = np.arange(-(W - 1), W) % T
    m1 = q.sum(axis=(1, 2))
    m2 = np.fft.irfft2(np.abs(F) ** 2, s=(T, T))[:, idx[:, None], idx[None, :]]
    K = 2 * W - 1
    m3 = np.zeros((len(q), K, K, K, K))
    for i, ly in enumerate(range(-(W - 1), W)):
        for j, lx in enumerate(range(-(W - 1), W)):
            prod = q * np.roll(q, (-ly, -lx), axis=(1, 2))  # q[r] q[r + ℓ1]
            c = np.fft.irfft2(np.conj(np.fft.rfft2(prod)) * F, s=(T, T))  # Σ_r prod[r] q[r + ℓ2]
            m3[:, i, j] = c[:, idx[:, None], idx[None, :]]
    return m1, m2, m3


def _quadrature_reference(basis, coef, gamma, W, groups, T=T_REF):
    """Exact SO(3) average (quadrature rule of degree 3ℓmax) of the filtered tiles' moments,
    mixed over ``groups`` [(H grid, weight)]: the moments of micrographs of those groups."""
    R, w = so3_quadrature(3 * int(np.max(basis.ell)))
    images = np.asarray(basis.project(coef, R)).reshape(-1, basis.L, basis.L)
    s = gamma / basis.L**2
    out = [0.0, 0.0, 0.0]
    for H, wg in groups:
        m = _tile_moments(images, W, H, T)
        for k in range(3):
            out[k] = out[k] + wg * s * np.tensordot(w, m[k], axes=1)
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def basis7():
    return SphericalBessel(7, 2)


def _volume(basis, seed=0):
    """A compact positive blob off the centre plus small random detail (moments of one sign)."""
    L = basis.L
    z, y, x = np.mgrid[:L, :L, :L] - L // 2
    blob = np.exp(-((x - 1.0) ** 2 + (y + 0.5) ** 2 + z**2) / 3.0) + 0.5 * np.exp(
        -((x + 1.5) ** 2 + y**2 + (z - 1) ** 2) / 2.0
    )
    return basis.expand(blob) + 0.05 * np.random.default_rng(seed).standard_normal(basis.size)


# --------------------------------------------------------------------------- tests
def test_no_ctf_is_bit_identical(basis7):
    c = _volume(basis7)
    a = expected_moments(basis7, c, 0.1, 3)
    b = expected_moments(basis7, c, 0.1, 3, ctf=None, pixel_size=PX)
    m = MomentModel(basis7, 3).numpy(c, 0.1)
    for x, y in ((a, b), (a, m)):
        assert x.a1 == y.a1
        np.testing.assert_array_equal(x.a2, y.a2)
        np.testing.assert_array_equal(x.a3, y.a3)


@pytest.mark.slow
def test_ctf_model_equals_monte_carlo_of_filtered_projections(basis7):
    # 6000 Haar-random rotations, each projection alone in a 64² tile filtered by the test's CTF
    # (1 µm, 300 kV: delocalisation 6.5 px). The sample's standard error is checked to be well
    # below the tolerance (a2 1 %, a3 2 %, relative norm), so a pass is not luck.
    W, T, N = 3, 64, 6000
    c = _volume(basis7)
    model = expected_moments(basis7, c, 0.1, W, ctf=CTF(10000.0), pixel_size=PX)
    R = random_rotations(N, 2024)
    H = _ctf_grid(T, PX, 10000.0)
    s = 0.1 / basis7.L**2
    parts = [
        _tile_moments(np.asarray(basis7.project(c, R[i : i + 1000])).reshape(-1, 7, 7), W, H, T)
        for i in range(0, N, 1000)
    ]
    m1, m2, m3 = (np.concatenate([p[k] for p in parts]) * s for k in range(3))
    se2 = np.linalg.norm(m2.std(axis=0)) / math.sqrt(N) / np.linalg.norm(model.a2)
    se3 = np.linalg.norm(m3.std(axis=0)) / math.sqrt(N) / np.linalg.norm(model.a3)
    assert se2 < 0.004 and se3 < 0.008  # the Monte-Carlo error is below a third of the tolerances
    assert abs(m1.mean() - model.a1) < 0.01 * abs(model.a1)
    assert _rel(m2.mean(axis=0), model.a2) < 0.01
    assert _rel(m3.mean(axis=0), model.a3) < 0.02


def test_ctf_model_equals_exact_average_of_filtered_projections(basis7):
    # the same reference with the exact rotation rule instead of random rotations: no sampling
    # error, so the agreement is the tile's kernel aliasing (≈ 2e-4 at T = 81)
    W = 3
    c = _volume(basis7)
    a1, a2, a3 = _quadrature_reference(basis7, c, 0.1, W, [(_ctf_grid(T_REF, PX, 15000.0), 1.0)])
    for model in (
        CtfQuadratureModel(basis7, W, CtfMixture.of(CTF(15000.0), PX)),
        CtfInvariantModel(basis7, W, CtfMixture.of(CTF(15000.0), PX)),
    ):
        m = model.numpy(c, 0.1)
        assert abs(m.a1 - a1) < 1e-12 * abs(a1)  # Σ q = CTF(0) Σ p exactly
        assert _rel(m.a2, a2) < 5e-4
        assert _rel(m.a3, a3) < 5e-4


def test_group_mixture_equals_pixel_weighted_mosaics(basis7):
    # two defocus groups (1 and 2.5 µm) holding 30 % and 70 % of the pixels: the model of the
    # group table equals the pixel-weighted average of the two groups' filtered moments
    W = 3
    c = _volume(basis7, 1)
    groups = [(_ctf_grid(T_REF, PX, 10000.0), 0.3), (_ctf_grid(T_REF, PX, 25000.0), 0.7)]
    a1, a2, a3 = _quadrature_reference(basis7, c, 0.1, W, groups)
    from cryomtd.ctf import CtfGroup, CtfGroupTable

    table = CtfGroupTable(
        PX,
        ("0", "1", "2"),
        (CtfGroup(CTF(10000.0), (0,), 0.0), CtfGroup(CTF(25000.0), (1, 2), 0.0)),
        (0.3, 0.7),
        (0, 1, 1),
    )
    m = expected_moments(basis7, c, 0.1, W, ctf=table)
    assert _rel(m.a2, a2) < 5e-4 and _rel(m.a3, a3) < 5e-4 and abs(m.a1 - a1) < 1e-12 * abs(a1)
    # and it is not either group alone
    single = expected_moments(basis7, c, 0.1, W, ctf=CTF(25000.0), pixel_size=PX)
    assert _rel(single.a3, a3) > 0.05


def test_astigmatic_ctf(basis7):
    # defocus U 1.2 µm, V 0.8 µm at 30°: the moments keep only the 180° rotation of the lag
    # symmetries; both routes equal the filtered reference, and each other to round-off
    W = 3
    ctf = CTF(12000.0, defocus_v=8000.0, defocus_angle=30.0)
    mix = CtfMixture.of(ctf, PX)
    c = _volume(basis7, 2)
    a1, a2, a3 = _quadrature_reference(basis7, c, 0.1, W, [(_ctf_grid(T_REF, PX, 12000.0, 8000.0, 30.0), 1.0)])
    q = CtfQuadratureModel(basis7, W, mix)
    iv = CtfInvariantModel(basis7, W, mix)
    assert q.lag_group == (0, 4) and iv.lag_group == (0, 4)
    mq, mi = q.numpy(c, 0.1), iv.numpy(c, 0.1)
    assert _rel(mq.a2, a2) < 5e-4 and _rel(mq.a3, a3) < 5e-4
    assert _rel(mi.a3, mq.a3) < 1e-12 and _rel(mi.a2, mq.a2) < 1e-12
    # the a3 of an astigmatic CTF is really not D4-symmetric (a 90° rotation of both lags changes it)
    rot = np.rot90(np.rot90(a3, 1, (0, 1)), 1, (2, 3))
    assert _rel(rot, a3) > 1e-3


def test_ctf_models_agree_with_gradients(basis7):
    # quadrature route (4-D FFT convolution at each evaluation) and invariant route (folded map):
    # the same cost and gradient, and the invariant model's analytic Jacobian equals autograd
    from cryomtd.mom3d.fit import _Cost, crop_moments

    W = 3
    mix = CtfMixture.of([(CTF(10000.0), 0.4), (CTF(20000.0), 0.6)], PX)
    q, iv = CtfQuadratureModel(basis7, W, mix), CtfInvariantModel(basis7, W, mix)
    truth = _volume(basis7, 3)
    data = crop_moments(q.numpy(truth, 0.1), W)
    x = torch.tensor(np.random.default_rng(4).standard_normal(basis7.size), requires_grad=True)
    g = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    vals = []
    for model in (q, iv):
        f = _Cost(model, data, sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)(x, g)
        vals.append((float(f), *[t.numpy() for t in torch.autograd.grad(f, (x, g))]))
    assert abs(vals[0][0] - vals[1][0]) < 1e-12 * vals[0][0]
    np.testing.assert_allclose(vals[0][1], vals[1][1], rtol=1e-10, atol=1e-14 * np.abs(vals[0][1]).max())
    _, _, J3 = iv.box_jacobian(x.detach())  # (n_orb, size): one row per orbit of the lag group
    first = np.unique(iv.dense_to_orbit.numpy(), return_index=True)[1]
    autoJ = torch.autograd.functional.jacobian(
        lambda c: iv.third_box(c).reshape(-1)[torch.as_tensor(first)], x.detach()
    )
    np.testing.assert_allclose(J3.numpy(), autoJ.numpy(), rtol=1e-9, atol=1e-12 * float(autoJ.abs().max()))


def test_per_orbit_residual_with_astigmatism(basis7):
    # the Gauss–Newton residual with one a3 row per orbit of the model's lag group (here the
    # 180° rotation only) has the cost of the dense residual, on data that are not symmetric
    from cryomtd.mom3d.fit import _Cost, _noise_terms, crop_moments

    W = 3
    iv = CtfInvariantModel(basis7, W, CtfMixture.of(CTF(12000.0, defocus_v=8000.0, defocus_angle=30.0), PX))
    d1, d2, d3 = crop_moments(iv.numpy(_volume(basis7, 5), 0.1), W)
    d3 = d3 * (1 + 0.01 * np.random.default_rng(6).standard_normal(d3.shape))  # noisy data
    cost = _Cost(iv, (d1, d2, d3), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
    c = torch.as_tensor(_volume(basis7, 7))
    dense = float(cost(c, torch.tensor(0.1, dtype=torch.float64)))
    sw, d = cost.residual_scales(orbits=True)
    n0, u3 = _noise_terms(cost, orbits=True)
    with torch.no_grad():
        m = cost.box_vector(c, orbits=True).numpy()
    r = sw.numpy() * (0.1 / 49 * (m + m[0] * u3) + n0 - d.numpy())
    assert abs(float(r @ r) + cost.d3_spread * cost.w[2] / cost.n3 - dense) < 1e-10 * dense


def test_ball_start_sees_the_ctf(basis7):
    # the ball radius is read off the data's a2 with the CTF model: from CTF moments of a ball
    # it finds that ball's radius again (the clean model would be misled by the CTF's ringing)
    from cryomtd.mom3d.fit import _Cost, crop_moments
    from cryomtd.mom3d.start import ball_radius
    from cryomtd.volume import soft_ball

    W = 4
    mix = CtfMixture.of(CTF(20000.0), PX)
    model = CtfInvariantModel(basis7, W, mix)
    data = crop_moments(model.numpy(basis7.expand(soft_ball(7, 2.5)), 0.1), W)
    cost = _Cost(model, data, sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)
    assert abs(ball_radius(model, cost) - 2.5) < 0.05


@pytest.mark.slow
def test_fit_recovers_a_volume_from_exact_ctf_moments():
    # L = 7, ℓmax = 1, two defocus groups: the fit with the CTF groups reaches the truth as the
    # clean fit does without a CTF (tests/test_mom3d.py: error < 1e-3, cost < 1e-12)
    from cryomtd.evaluate.align import align_coefficients, reflect_coefficients
    from cryomtd.mom3d import fit

    b = SphericalBessel(7, 1)
    truth = np.random.default_rng(9).standard_normal(b.size)
    groups = [(CTF(10000.0), 0.5), (CTF(20000.0), 0.5)]
    data = expected_moments(b, truth, 0.1, 4, ctf=groups, pixel_size=PX)
    res = fit(data, b, sigma=0.0, restarts=3, seed=1, max_iterations=100, polish=30, ctf=groups, pixel_size=PX)
    assert res.cost < 1e-12
    assert abs(res.gamma - 0.1) < 1e-4
    R, reflected, _ = align_coefficients(res.coef, truth, b)
    est = reflect_coefficients(res.coef, b) if reflected else res.coef
    assert np.linalg.norm(b.rotate(est, R) - truth) / np.linalg.norm(truth) < 1e-3


def test_stage_files_read_the_ctf_group_table(tmp_path):
    # exact_moments_file and recover_restart_file with ctf_groups.json: the exact moments are the
    # CTF model's, the restart records the number of groups; an empty table models no CTF
    from cryomtd.ctf import ctf_group_table
    from cryomtd.io import read_npz
    from cryomtd.mom3d.settings import LsqSettings
    from cryomtd.mom3d.stage import exact_moments_file, recover_restart_file
    from cryomtd.moments import Moments2D

    b = SphericalBessel(7, 1)
    truth = tmp_path / "truth.npz"
    coef = np.random.default_rng(1).standard_normal(b.size)
    np.savez(truth, coef=coef, L=7, ell_max=1)
    infos = [{"ctf": CTF(d).to_dict(), "pixel_size": PX, "size": [64, 64]} for d in (10000.0, 10000.0, 22000.0)]
    table = ctf_group_table(infos, ["0", "1", "2"])
    path = tmp_path / "ctf_groups.json"
    table.save(path)
    empty = tmp_path / "none.json"
    ctf_group_table(infos, ["0", "1", "2"], mode="ignore").save(empty)
    exact_moments_file(truth, tmp_path / "m.npz", gamma=0.1, window=3, ctf_groups=path)
    exact_moments_file(truth, tmp_path / "m0.npz", gamma=0.1, window=3, ctf_groups=empty)
    m, m0 = Moments2D.load(tmp_path / "m.npz"), Moments2D.load(tmp_path / "m0.npz")
    ref = expected_moments(b, coef, 0.1, 3, ctf=table)
    np.testing.assert_allclose(m.a3, ref.a3, rtol=1e-12, atol=1e-15 * np.abs(ref.a3).max())
    np.testing.assert_allclose(m0.a2, expected_moments(b, coef, 0.1, 3).a2, rtol=1e-13)  # through Moments2D's sums
    assert json.loads(path.read_text())["groups"][1]["weight"] == pytest.approx(1 / 3)
    from cryomtd.settings import override

    s = override(LsqSettings(), "lsq", max_iterations=3, polish=0)
    out = tmp_path / "restart_0.npz"
    recover_restart_file(
        tmp_path / "m.npz", out, L=7, ell_max=1, settings=s, seed=0, restart=0, exact=True, ctf_groups=path
    )
    r = read_npz(out)
    assert int(r["ctf_groups"]) == 2 and np.isfinite(float(r["cost"]))


def test_central_moment_cost_with_the_ctf(basis7):
    # zero-mean data (prepared micrographs): the central moments of the CTF model, written here from
    # its raw moments (c2 = a2 − a1², c3 = a3 − a1 (a2(ℓ1) + a2(ℓ2) + a2(ℓ1 − ℓ2)) + 2 a1³, the last
    # a2 from the CTF model at window 2W − 1): the central cost is 0 at the truth, > 0 elsewhere
    from cryomtd.mom3d.fit import _Cost

    W, K = 3, 5
    ctf = [(CTF(10000.0), 0.5), (CTF(20000.0), 0.5)]
    c = _volume(basis7, 8)
    m = expected_moments(basis7, c, 0.1, W, ctf=ctf, pixel_size=PX)
    wide = expected_moments(basis7, c, 0.1, 2 * W - 1, ctf=ctf, pixel_size=PX).a2
    a1 = m.a1
    d2 = m.a2 - a1**2
    idx = np.arange(K)
    dy = idx[:, None, None, None] - idx[None, None, :, None] + 2 * (W - 1)
    dx = idx[None, :, None, None] - idx[None, None, None, :] + 2 * (W - 1)
    d3 = m.a3 - a1 * (m.a2[:, :, None, None] + m.a2[None, None, :, :] + wide[dy, dx]) + 2 * a1**3
    model = CtfInvariantModel(basis7, W, CtfMixture.of(ctf, PX))
    cost = _Cost(model, (0.0, d2, d3), sigma=0.0, weights=(1, 1, 1), prior_weight=0.0, central=True)
    assert cost.wide.ctf == model.ctf
    g = torch.tensor(0.1, dtype=torch.float64)
    assert float(cost(torch.as_tensor(c), g)) < 1e-16  # data and model by the two routes: round-off
    assert float(cost(torch.as_tensor(c * 1.01), g)) > 1e-6


def test_ctf_mixture_inputs(tmp_path):
    # every accepted form of the fit's ctf= argument gives the same hashable mixture; weights are
    # normalised; an empty table (no CTF, or ctf: ignore) is no CTF; a bare CTF needs the pixel size
    from cryomtd.ctf import ctf_group_table
    from cryomtd.io import InputError

    infos = [{"ctf": CTF(d).to_dict(), "pixel_size": PX, "size": [100, 100]} for d in (10000.0, 30000.0)]
    table = ctf_group_table(infos, ["a", "b"])
    table.save(tmp_path / "t.json")
    a = CtfMixture.of(table)
    assert a == CtfMixture.of(tmp_path / "t.json") == CtfMixture.of(str(tmp_path / "t.json"))
    assert a == CtfMixture.of([(g.ctf, 2 * w) for g, w in zip(table.groups, table.weights)], PX)
    assert len(a.ctfs) == 2 and a.weights == (0.5, 0.5) and a.pixel_size == PX and hash(a) == hash(CtfMixture.of(table))
    assert CtfMixture.of(ctf_group_table(infos, ["a", "b"], mode="ignore")) is None and CtfMixture.of(None) is None
    with pytest.raises(InputError, match="pixel size"):
        CtfMixture.of(CTF(10000.0))
    with pytest.raises(InputError, match="weights"):
        CtfMixture.of([(CTF(10000.0), -1.0)], PX)
