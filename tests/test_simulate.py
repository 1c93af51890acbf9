"""cryomtd.simulate and cryomtd.ctf: placement, pasting, noise level, CTF, STAR files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cryomtd import rotations
from cryomtd import simulate as S
from cryomtd import volume as V
from cryomtd.ctf import CTF, apply_ctf, electron_wavelength
from cryomtd.io import InputError


def _min_inf_distance(centres: np.ndarray) -> float:
    """Brute force: smallest ∞-norm distance over all pairs."""
    d = np.abs(centres[:, None, :] - centres[None, :, :]).max(axis=2).astype(float)
    np.fill_diagonal(d, np.inf)
    return d.min()


# ------------------------------------------------------------------ placement
@pytest.mark.parametrize("spacing, gamma", [("separated", 0.12), ("nonoverlapping", 0.4), (5, 0.6), (1, 0.9)])
def test_placement_separation_and_gamma(spacing, gamma):
    L, size = 7, 300
    d = S.min_distance(spacing, L)
    n = round(gamma * size**2 / L**2)
    corners = S.place_particles(size, L, n, d, np.random.default_rng(0))
    assert corners.shape == (n, 2)
    assert corners.min() >= 0 and corners.max() <= size - L  # boxes inside the micrograph
    assert _min_inf_distance(corners) >= d
    assert len(np.unique(corners, axis=0)) == n


def test_gamma_reached_and_table():
    vol = V.gaussian_blobs(7, 3, 0)
    m = S.micrograph(vol, 200, gamma=0.1, snr=None, seed=1, spacing="separated", micrograph_name="a.mrc")
    n = len(m.particles)
    assert m.gamma == pytest.approx(n * 49 / 200**2)
    assert abs(m.gamma - 0.1) <= 49 / (2 * 200**2) + 1e-12  # rounding to whole particles
    assert set(S.STAR_COLUMNS) <= set(m.particles.columns)
    assert (m.particles["rlnMicrographName"] == "a.mrc").all()
    np.testing.assert_array_equal(m.particles["x"], m.particles["rlnCoordinateX"])
    assert _min_inf_distance(m.particles[["y", "x"]].to_numpy()) >= 13
    assert m.sigma == 0 and np.array_equal(m.image, m.clean)


def test_unreachable_gamma_is_reported():
    with pytest.raises(InputError, match="reached"):
        S.place_particles(400, 11, round(0.26 * 400**2 / 121), 21, np.random.default_rng(0))
    with pytest.raises(InputError, match="spacing"):
        S.min_distance("touching", 11)


def test_nonoverlapping_reaches_gamma_04():
    """The published EM density: γ = 0.4 with centres ≥ L apart (random, not a lattice)."""
    L, size = 11, 1024
    n = round(0.4 * size**2 / L**2)
    corners = S.place_particles(size, L, n, L, np.random.default_rng(5))
    assert len(corners) == n and _min_inf_distance(corners) >= L


def test_paste_matches_loop():
    g = np.random.default_rng(2)
    size, L, n = 40, 6, 30
    corners = g.integers(0, size - L + 1, size=(n, 2))  # overlapping on purpose
    boxes = g.normal(size=(n, L, L))
    ref = np.zeros((size, size))
    for (ty, tx), b in zip(corners, boxes, strict=True):
        ref[ty : ty + L, tx : tx + L] += b
    np.testing.assert_allclose(S.paste(size, corners, boxes), ref, atol=1e-12)


def test_clean_image_is_projections_at_table_rows():
    """Rebuild the clean micrograph particle by particle from the STAR-table angles and centres
    (Euler → matrix round trip, real-space projector); equal to rounding."""
    vol = V.gaussian_blobs(7, 3, 1)
    m = S.micrograph(vol, 120, gamma=0.1, snr=2.0, seed=3, spacing="nonoverlapping")
    proj = S.real_space_projector(vol)
    ref = np.zeros((120, 120))
    for row in m.particles.itertuples():
        R = rotations.euler_to_matrix(row.rlnAngleRot, row.rlnAngleTilt, row.rlnAnglePsi)
        ref[row.y - 3 : row.y + 4, row.x - 3 : row.x + 4] += proj(R)[0]
    np.testing.assert_allclose(m.clean, ref, atol=1e-9)


def test_same_seed_same_micrograph():
    vol = V.gaussian_blobs(7, 3, 1)
    a = S.micrograph(vol, 64, gamma=0.1, snr=1.0, seed=np.random.default_rng(9))
    b = S.micrograph(vol, 64, gamma=0.1, snr=1.0, seed=np.random.default_rng(9))
    c = S.micrograph(vol, 64, gamma=0.1, snr=1.0, seed=np.random.default_rng(10))
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


# ------------------------------------------------------------------ noise level
def test_noise_variance_matches_snr_definition():
    """σ² = E_ω‖P_ω x‖²/(L²·SNR): the residual image − clean has that variance (262144 samples:
    relative standard error √(2/N) ≈ 0.3 %, tolerance 2 %), and E_ω is checked against an
    independent Monte-Carlo average over 400 fresh Haar rotations (4 standard errors)."""
    vol = V.gaussian_blobs(7, 4, 2)
    m = S.micrograph(vol, 512, gamma=0.05, snr=0.5, seed=4)
    resid = m.image - m.clean
    assert resid.var() == pytest.approx(m.sigma**2, rel=0.02)
    assert abs(resid.mean()) < 5 * m.sigma / 512
    e = (S.real_space_projector(vol)(rotations.random(400, 123)) ** 2).sum(axis=(1, 2))
    assert abs(e.mean() - m.signal_energy) < 4 * e.std() / math.sqrt(len(e))
    assert m.sigma == pytest.approx(math.sqrt(m.signal_energy / (49 * 0.5)))


def test_basis_energy_exact_against_quadrature():
    """Schur-orthogonality energy vs the exact SO(3) quadrature of degree 2·ell_max of ‖Ψ D c‖²."""
    basis_mod = pytest.importorskip("cryomtd.basis")
    b = basis_mod.SphericalBessel(7, 3)
    coef = np.random.default_rng(0).normal(size=b.size)
    R, w = rotations.so3_quadrature(6)
    ref = float(np.dot(w, (b.project(coef, R) ** 2).sum(axis=(1, 2))))
    assert S.basis_signal_energy(b, coef) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("L, ell_max", [(7, 3), (8, None)])
def test_euler_projector_equals_basis_project(L, ell_max):
    """The ZYZ-factorised projector against ``basis.project`` (full Wigner matrices), random
    rotations and the poles tilt = 0°, 180° and negative angles; equal to rounding (1e-12)."""
    basis_mod = pytest.importorskip("cryomtd.basis")
    b = basis_mod.SphericalBessel(L, ell_max)
    coef = np.random.default_rng(1).normal(size=b.size)
    R = np.concatenate(
        [rotations.random(20, 4), rotations.euler_to_matrix([0, 40, -70, 10], [0, 180, 90, 0], [-30, 20, 0, 0])]
    )
    ref = b.project(coef, R)
    np.testing.assert_allclose(S.EulerProjector(b, coef)(R), ref, atol=1e-12 * np.abs(ref).max())


def test_micrograph_through_basis():
    basis_mod = pytest.importorskip("cryomtd.basis")
    b = basis_mod.SphericalBessel(7, 3)
    coef = b.expand(V.gaussian_blobs(7, 3, 0))
    m = S.micrograph(coef, 80, gamma=0.1, snr=None, seed=0, basis=b)
    ref = np.zeros((80, 80))
    for row in m.particles.itertuples():
        R = rotations.euler_to_matrix(row.rlnAngleRot, row.rlnAngleTilt, row.rlnAnglePsi)
        ref[row.y - 3 : row.y + 4, row.x - 3 : row.x + 4] += b.project(coef, R)
    np.testing.assert_allclose(m.clean, ref, atol=1e-9)


# ------------------------------------------------------------------ CTF
@pytest.mark.parametrize("kv, table", [(100.0, 0.037014), (200.0, 0.025079), (300.0, 0.019687)])
def test_wavelength(kv, table):
    """Against the textbook tabulated values (6 digits) and the engineering formula
    12.2643247/sqrt(V + 0.978466e-6 V²) (older constants: agreement 2e-5)."""
    v = kv * 1e3
    assert electron_wavelength(kv) == pytest.approx(table, abs=1e-6)
    assert electron_wavelength(kv) == pytest.approx(12.2643247 / math.sqrt(v + 0.978466e-6 * v * v), rel=2e-5)


def test_ctf_formula_and_zeros():
    c = CTF(defocus=15000.0, voltage=300.0, cs=2.7, amplitude_contrast=0.07, b_factor=50.0)
    lam = electron_wavelength(300.0)
    for s in (0.0, 0.01, 0.05, 0.1, 0.2):
        chi = math.pi * lam * 15000.0 * s**2 - math.pi / 2 * 2.7e7 * lam**3 * s**4
        ref = -(math.sqrt(1 - 0.07**2) * math.sin(chi) + 0.07 * math.cos(chi)) * math.exp(-50.0 * s**2 / 4)
        assert c(np.array(s)) == pytest.approx(ref, abs=1e-12)
    # first zero (Cs negligible at low s): χ = −atan(A/√(1−A²)) + π → s² ≈ (π − atan(...))/(π λ Δf)
    nocs = CTF(defocus=15000.0, cs=0.0, amplitude_contrast=0.07)
    s0 = math.sqrt((math.pi - math.atan(0.07 / math.sqrt(1 - 0.07**2))) / (math.pi * lam * 15000.0))
    assert abs(nocs(np.array(s0))) < 1e-10


def test_apply_ctf_to_a_plane_wave():
    """A cosine of frequency (fy, fx) is an eigenfunction: output = CTF(|f|) × input."""
    size, pix = 64, 1.5
    y, x = np.mgrid[0:size, 0:size]
    fy, fx = 5 / (size * pix), 3 / (size * pix)
    img = np.cos(2 * np.pi * (fy * y * pix + fx * x * pix))
    c = CTF(defocus=8000.0, amplitude_contrast=0.1, b_factor=20.0)
    out = apply_ctf(img, c, pix)
    np.testing.assert_allclose(out, c(np.array(math.hypot(fy, fx))) * img, atol=1e-12)


def test_ctf_config_range_is_drawn_per_micrograph():
    g = np.random.default_rng(0)
    a = S.ctf_for_micrograph({"defocus": [10000.0, 20000.0], "voltage": 300.0}, g)
    assert 10000 <= a.defocus <= 20000
    assert S.ctf_for_micrograph(None, g) is None
    with pytest.raises(InputError, match="amplitude_contrast"):
        CTF(defocus=1.0, amplitude_contrast=1.5)


# ------------------------------------------------------------------ STAR files
def test_star_roundtrip(tmp_path):
    vol = V.gaussian_blobs(7, 3, 0)
    m = S.micrograph(vol, 100, gamma=0.1, snr=None, seed=0, micrograph_name="mic/0.mrc")
    S.write_particles(tmp_path / "p.star", m.particles)
    back = S.read_particles(tmp_path / "p.star")
    pd.testing.assert_frame_equal(
        back[S.STAR_COLUMNS].reset_index(drop=True),
        m.particles[S.STAR_COLUMNS].reset_index(drop=True),
        check_dtype=False,
    )
    np.testing.assert_array_equal(back["x"], m.particles["x"])
    np.testing.assert_array_equal(back["y"], m.particles["y"])


def test_star_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        S.read_particles(tmp_path / "none.star")
    bad = tmp_path / "bad.star"
    bad.write_text("data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1.0 2.0\n")
    with pytest.raises(InputError, match="rlnAngleRot"):
        S.read_particles(bad)


def test_save_micrograph(tmp_path):
    vol = V.gaussian_blobs(7, 3, 0)
    m = S.micrograph(vol, 64, gamma=0.1, snr=1.0, seed=0, pixel_size=2.0)
    S.save_micrograph(m, tmp_path / "m.mrc", tmp_path / "p.star", tmp_path / "m.json")
    img, ps = V.read_image_mrc(tmp_path / "m.mrc")
    np.testing.assert_allclose(img, m.image, atol=1e-5)
    assert ps == pytest.approx(2.0)
    from cryomtd.io import read_json

    info = read_json(tmp_path / "m.json")
    assert info["n_particles"] == len(m.particles) and info["size"] == 64
    assert info["sigma"] == pytest.approx(m.sigma) and info["gamma"] == pytest.approx(m.gamma)


# ------------------------------------------------------------------ CLI
def test_cli_prepare_volume_and_simulate(tmp_path):
    """The CLI writes the same files as the rules; a missing truth file is a clean error (exit 2)."""
    pytest.importorskip("cryomtd.basis")
    from cryomtd.cli import main

    assert main(["prepare-volume", "gaussian_blobs", "--L", "7", "--ell-max", "3", "--out", str(tmp_path)]) == 0
    assert (
        main(
            [
                "simulate",
                str(tmp_path / "truth.npz"),
                "--out",
                str(tmp_path),
                "--size",
                "64",
                "--index",
                "3",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    m = S.simulate_from_truth(tmp_path / "truth.npz", 3, seed=5, size=64, gamma=0.1, snr=1.0)
    img, _ = V.read_image_mrc(tmp_path / "micrographs" / "3.mrc")
    np.testing.assert_allclose(img, m.image, atol=1e-5 * np.abs(m.image).max())
    assert len(S.read_particles(tmp_path / "particles" / "3.star")) == len(m.particles)
    assert main(["simulate", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
