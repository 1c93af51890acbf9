"""cryomtd.micrographs: a user's MRC micrograph → the micrograph contract.

Accuracy is asserted on seeded micrographs from the project's simulator (Gaussian-blob
molecule, L = 11, γ = 0.1, per-pixel SNR 1 in the box), written as plain MRC files and
prepared as unknown data (no side file). Every spectrum check uses an independent
estimator written here: the full-image periodogram |DFT|²/N averaged over wide radial
bands (tens of thousands of frequencies each, relative error ≲ 1 %), not the library's
tiled median.
"""

from __future__ import annotations

import json
import math

import mrcfile
import numpy as np
import pytest

from cryomtd.io import InputError
from cryomtd.micrographs import (
    COLOUR_THRESHOLD,
    DataAdvanced,
    DataSettings,
    check_pixel_sizes,
    fourier_downsample,
    micrograph_files,
    noise_spectrum,
    prepare_micrograph,
    read_micrograph_file,
    whiten,
)
from cryomtd.volume import read_image_mrc, write_image_mrc, write_mrc

L = 11


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    from cryomtd.volume import VolumeSettings

    d = tmp_path_factory.mktemp("truth")
    p = VolumeSettings(source="gaussian_blobs", L=L).prepare(ell_max=4, seed=1)
    p.save(d / "raw.mrc", d / "truth.mrc", d / "truth.npz")
    return d / "truth.npz"


def simulate(truth, k, size=512, snr=1.0, gamma=0.1, seed=7):
    from cryomtd.simulate import MicrographSettings

    return MicrographSettings(size=size, gamma=gamma, snr=snr).simulate(truth, k, seed=seed)


def radius(shape):
    """|f| (cycles/pixel) of the full DFT grid."""
    return np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :])


def band_powers(image, lo, hi, n_bands):
    """Full-image periodogram |DFT|²/N averaged over n_bands equal radial bands of [lo, hi]."""
    power = np.abs(np.fft.fft2(image)) ** 2 / image.size
    r = radius(image.shape)
    edges = np.linspace(lo, hi, n_bands + 1)
    return np.array([power[(r >= a) & (r < b)].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])


def flatness(powers):
    """Largest relative deviation of band powers from their mean."""
    return float(np.max(np.abs(powers / powers.mean() - 1)))


def settings(**kw):
    adv = {k: kw.pop(k) for k in ("edge", "psd_tile", "psd_shells", "whiten") if k in kw}
    return DataSettings(micrographs="*.mrc", L=kw.pop("L", L), advanced=DataAdvanced(**adv), **kw)


# --------------------------------------------------------------------------- Fourier downsampling
def _crop_matrix(n_in, n_out):
    """The 1-D band-limiting operator written out: DFT, keep −⌊n_out/2⌋ … ⌈n_out/2⌉−1 (an even
    n_out's Nyquist coefficient = mean of the input's ± pair), inverse DFT, × n_out/n_in."""
    k_out = np.round(np.fft.fftfreq(n_out) * n_out).astype(int)
    select = np.zeros((n_out, n_in))
    for i, k in enumerate(k_out):
        if n_out % 2 == 0 and k == -(n_out // 2):
            select[i, k % n_in] += 0.5
            select[i, (-k) % n_in] += 0.5
        else:
            select[i, k % n_in] = 1.0
    F_in = np.fft.fft(np.eye(n_in), axis=0)
    F_out_inv = np.fft.ifft(np.eye(n_out), axis=0)
    return F_out_inv @ select @ F_in * (n_out / n_in)


@pytest.mark.parametrize("shape,factor", [((64, 48), 2), ((63, 47), 2), ((60, 45), 1.5), ((50, 40), 1)])
def test_fourier_downsample_is_the_dft_crop_written_out(shape, factor):
    image = np.random.default_rng(0).standard_normal(shape)
    out = fourier_downsample(image, factor)
    cy = _crop_matrix(shape[0], int(round(shape[0] / factor)))
    cx = _crop_matrix(shape[1], int(round(shape[1] / factor)))
    ref = cy @ image @ cx.T
    assert np.max(np.abs(ref.imag)) < 1e-12  # the written-out operator is real
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref.real, atol=1e-12)


def test_fourier_downsample_keeps_what_is_below_the_new_nyquist_and_removes_what_is_above():
    ny, nx, factor = 120, 90, 3  # → 40 × 30; new Nyquist 1/6 cycles per input pixel
    y, x = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    below = np.cos(2 * np.pi * (9 * x / nx + 4 * y / ny) + 0.3)  # 0.1 and 0.033 cycles/pixel
    above = np.cos(2 * np.pi * 20 * x / nx) + np.sin(2 * np.pi * 25 * y / ny)  # 0.22, 0.21 > 1/6
    out = fourier_downsample(5.0 + below + above, factor)
    yo, xo = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    expected = 5.0 + np.cos(2 * np.pi * (9 * xo / 30 + 4 * yo / 40) + 0.3)  # same function, coarser samples
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_fourier_downsample_of_white_noise_is_binning_variance():
    """White noise σ² → σ²·(n_out/n_in) per axis (the mean-preserving crop averages like binning)."""
    image = 3.0 * np.random.default_rng(1).standard_normal((1024, 768))
    out = fourier_downsample(image, 2)
    assert out.shape == (512, 384)
    assert abs(out.var() / (9.0 / 4) - 1) < 0.02  # 2e5 samples: standard error 0.3 %


# --------------------------------------------------------------------------- noise spectrum and whitening
@pytest.mark.parametrize("shape,tile", [((512, 384), 128), ((512, 384), 64), ((300, 300), 256), ((520, 260), 256)])
def test_noise_spectrum_of_white_noise_is_its_variance(shape, tile):
    """psd ≡ σ² for white noise, for many tiles (median → mean by ln 2) and for 1 or 2 tiles (exact factor)."""
    image = 2.0 * np.random.default_rng(2).standard_normal(shape)
    freqs, psd = noise_spectrum(image, tile)
    assert np.all(np.diff(freqs) > 0) and freqs[-1] > 0.5
    level = psd[freqs > 0.05].mean()
    assert abs(level / 4.0 - 1) < 0.02  # ≥ 2e4 periodogram values: standard error < 1 %


def _median_with_outliers(n_tiles, n_bad):
    """E[median of n_tiles values] / E[one value] when n_bad of them are huge and the rest i.i.d.
    exponential (order statistics E[X_(i)] = Σ_{j<i} 1/(n − j) of the n clean ones), after the
    library's division by the same expression for n_bad = 0."""

    def order(i, n):
        return sum(1.0 / (n - j) for j in range(i))

    def median(n, bad):
        m = n - bad  # clean values; the median is the mean of the middle pair (n even)
        return 0.5 * (order(n // 2, m) + order(n // 2 + 1, m))

    return median(n_tiles, n_bad) / median(n_tiles, 0)


@pytest.mark.parametrize("n_bad", [12, 24])
def test_noise_spectrum_is_robust_to_particles_in_a_few_tiles(n_bad):
    """Bright particles in n_bad of 256 tiles move the median by a bounded amount (the quantile
    shift of the clean tiles: +7 % for 12 tiles, +16 % for 24), where the mean is many times off."""
    rng = np.random.default_rng(3)
    image = rng.standard_normal((1024, 1024))
    y, x = np.mgrid[:64, :64]
    blob = 30.0 * np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / (2 * 4.0**2))
    for t in rng.choice(256, n_bad, replace=False):
        image[64 * (t // 16) : 64 * (t // 16) + 64, 64 * (t % 16) : 64 * (t % 16) + 64] += blob
    freqs, psd = noise_spectrum(image, 64)
    low = (freqs > 0.015) & (freqs < 0.065)  # the blob's power is ≥ 100× the noise's here
    expected = _median_with_outliers(256, n_bad)
    assert abs(psd[low].mean() / expected - 1) < 0.05  # 3 shells × ~50 bins × 256 tiles: error ~ 1.5 %
    assert band_powers(image, 0.015, 0.065, 1)[0] > n_bad  # the plain periodogram


def test_whiten_is_the_identity_for_a_flat_spectrum():
    image = np.random.default_rng(4).standard_normal((101, 64))
    freqs = np.linspace(0, 0.71, 30)
    np.testing.assert_allclose(whiten(image, freqs, np.full(30, 2.5)), image, atol=1e-12)


# --------------------------------------------------------------------------- prepared micrographs
@pytest.mark.parametrize("k", [0, 1, 2])
def test_white_noise_sigma_recovered(truth, tmp_path, k):
    m = simulate(truth, k, size=512, seed=11)
    write_image_mrc(tmp_path / "a.mrc", m.image, 1.0)
    p = prepare_micrograph(tmp_path / "a.mrc", settings())
    assert abs(p.sigma / m.sigma - 1) < 0.02  # measured ≤ 1.2 % (one 256-tile of a 480² image)
    assert p.image.shape == (480, 480) and p.info["size"] == [480, 480]
    assert abs(p.image.mean()) < 1e-10


def test_whitened_micrograph_flat_above_half_nyquist(truth, tmp_path):
    """With particles, the whitened image is white above half Nyquist (where the particle has < 0.2 %
    of σ²). 1024² (9 tiles of 256): one 256-tile of a 512² micrograph gives ~6 % per-shell noise."""
    m = simulate(truth, 0, size=1024, seed=11)
    write_image_mrc(tmp_path / "a.mrc", m.image, 1.0)
    p = prepare_micrograph(tmp_path / "a.mrc", settings())
    assert flatness(band_powers(p.image, 0.25, 0.5, 5)) < 0.05
    assert abs(p.sigma / m.sigma - 1) < 0.02


def test_white_noise_whitened_spectrum_flat(truth, tmp_path):
    """A pure-noise micrograph (γ = 0) stays white at every frequency after whitening. 2048² (49 tiles
    of 256): over 12 seeds the worst band deviates ≤ 4 % (at 1024², 9 tiles, up to 6 %)."""
    m = simulate(truth, 0, size=2048, gamma=0.0, seed=12)
    write_image_mrc(tmp_path / "a.mrc", m.image, 1.0)
    p = prepare_micrograph(tmp_path / "a.mrc", settings())
    assert abs(p.sigma / m.sigma - 1) < 0.02
    assert flatness(band_powers(p.image, 0.02, 0.5, 12)) < 0.05
    assert abs(p.image.std() / m.sigma - 1) < 0.02


def _coloured(shape, sigma0, seed):
    """White noise σ0 filtered by H with |H(f)|² = 2 / (1 + (|f|/0.2)²) (an MTF-like fall-off, ×2.8
    across the reference band), periodic; returns (noise, |H|² as a function of |f|)."""

    def h2(r):
        return 2.0 / (1.0 + (r / 0.2) ** 2)

    white = sigma0 * np.random.default_rng(seed).standard_normal(shape)
    noise = np.fft.ifft2(np.fft.fft2(white) * np.sqrt(h2(radius(shape)))).real
    return noise, h2


@pytest.mark.parametrize("seed", [20, 21])
def test_coloured_noise_whitened_and_sigma_at_the_white_reference(truth, tmp_path, seed):
    """σ after whitening = the coloured noise's level over the reference band: σ0·√mean(|H|²) there."""
    m = simulate(truth, 0, size=1024, snr=None, seed=seed)  # clean image
    sigma0 = math.sqrt(m.signal_energy / L**2)  # white noise at SNR 1
    noise, h2 = _coloured((1024, 1024), sigma0, seed)
    write_image_mrc(tmp_path / "a.mrc", m.clean + noise, 1.0)
    p = prepare_micrograph(tmp_path / "a.mrc", settings())
    r = radius((992, 992))
    band = (r >= 0.25) & (r <= 0.5)
    expected = sigma0 * math.sqrt(h2(r[band]).mean())
    assert abs(p.sigma / expected - 1) < 0.02
    # the noise part, through the same whitening filter, is white above half Nyquist
    freqs = np.array(p.info["noise_spectrum"]["frequency"]) * p.pixel_size
    psd = np.array(p.info["noise_spectrum"]["psd"])
    part = noise[16:-16, 16:-16] - noise[16:-16, 16:-16].mean()
    white = whiten(part, freqs, psd)
    powers = band_powers(white, 0.25, 0.5, 5)
    assert flatness(powers) < 0.05
    assert abs(math.sqrt(powers.mean()) / p.sigma - 1) < 0.02

    # pure coloured noise (2048², as in the white case): white at every frequency after whitening
    noise, _ = _coloured((2048, 2048), sigma0, seed)
    write_image_mrc(tmp_path / "b.mrc", noise, 1.0)
    q = prepare_micrograph(tmp_path / "b.mrc", settings())
    assert flatness(band_powers(q.image, 0.02, 0.5, 12)) < 0.05
    r = radius((2016, 2016))
    band = (r >= 0.25) & (r <= 0.5)
    assert abs(q.sigma / (sigma0 * math.sqrt(h2(r[band]).mean())) - 1) < 0.02


def test_auto_whitening_leaves_white_noise_alone_and_whitens_coloured_noise(truth, tmp_path):
    """whiten: auto: white noise (with particles) passes through as it is — only the border crop
    and the mean removal change it — while MTF-like coloured noise is detected and whitened."""
    m = simulate(truth, 1, size=512, seed=14)
    write_image_mrc(tmp_path / "w.mrc", m.image, 1.0)
    p = prepare_micrograph(tmp_path / "w.mrc", settings())
    assert not p.info["whitened"] and p.info["noise_colour"] < COLOUR_THRESHOLD
    inner = m.image.astype(np.float32).astype(np.float64)[16:-16, 16:-16]
    np.testing.assert_allclose(p.image, inner - inner.mean(), rtol=0, atol=1e-9)
    forced = prepare_micrograph(tmp_path / "w.mrc", settings(whiten=True))
    assert forced.info["whitened"] and not np.allclose(forced.image, p.image)
    noise, _ = _coloured((512, 512), m.sigma, 15)
    write_image_mrc(tmp_path / "c.mrc", m.clean + noise, 1.0)
    q = prepare_micrograph(tmp_path / "c.mrc", settings())
    assert q.info["whitened"] and q.info["noise_colour"] > 3 * COLOUR_THRESHOLD


def test_offset_and_inverted_contrast_give_the_plain_result(truth, tmp_path):
    m = simulate(truth, 3, size=512, seed=13)
    write_image_mrc(tmp_path / "plain.mrc", m.image, 1.0)
    write_image_mrc(tmp_path / "inv.mrc", 100.0 - m.image, 1.0)
    plain = prepare_micrograph(tmp_path / "plain.mrc", settings())
    inv = prepare_micrograph(tmp_path / "inv.mrc", settings(invert=True))
    # float32 storage of 100 − x rounds at 100·2⁻²⁴ ≈ 6e-6
    np.testing.assert_allclose(inv.image, plain.image, atol=1e-4 * plain.sigma)
    assert abs(inv.sigma / plain.sigma - 1) < 1e-5


@pytest.mark.parametrize("shape", [(384, 512), (387, 501), (501, 387)])
def test_non_square_and_odd_sizes(truth, tmp_path, shape):
    m = simulate(truth, 4, size=512, seed=14)
    write_image_mrc(tmp_path / "a.mrc", m.image[: shape[0], : shape[1]], 1.0)
    p = prepare_micrograph(tmp_path / "a.mrc", settings(psd_tile=128))
    assert p.image.shape == (shape[0] - 32, shape[1] - 32)
    assert p.info["size"] == [shape[0] - 32, shape[1] - 32]
    assert abs(p.sigma / m.sigma - 1) < 0.02


def test_finer_pixel_downsampled_by_two(truth, tmp_path):
    """A 0.5 Å micrograph (the 1 Å clean image Fourier-padded, plus white noise 2σ) prepared at 1 Å:
    the noise becomes 2σ/2 = σ (binning), the pixel 1 Å, the size (1024 − 32)/2."""
    m = simulate(truth, 5, size=512, snr=None, seed=15)
    sigma = math.sqrt(m.signal_energy / L**2)
    spec = np.zeros((1024, 1024), complex)
    spec[256:768, 256:768] = np.fft.fftshift(np.fft.fft2(m.clean))
    fine = np.fft.ifft2(np.fft.ifftshift(spec)).real * 4 + 2 * sigma * np.random.default_rng(5).standard_normal(
        (1024, 1024)
    )
    write_image_mrc(tmp_path / "fine.mrc", fine, 0.5)
    p = prepare_micrograph(tmp_path / "fine.mrc", settings(pixel_size_out=1.0))
    assert p.pixel_size == 1.0 and p.image.shape == (496, 496)
    assert abs(p.sigma / sigma - 1) < 0.02
    p.save(tmp_path / "out.mrc", tmp_path / "out.json")
    _, px = read_image_mrc(tmp_path / "out.mrc")
    assert abs(px - 1.0) < 1e-6
    # the same file with the pixel size given in the settings instead of the header
    write_image_mrc(tmp_path / "nohead.mrc", fine, 1.0)
    q = prepare_micrograph(tmp_path / "nohead.mrc", settings(pixel_size=0.5, pixel_size_out=1.0))
    np.testing.assert_allclose(q.image, p.image, atol=1e-9)


def test_side_file_contract(truth, tmp_path):
    m = simulate(truth, 6, size=512, seed=16)
    write_image_mrc(tmp_path / "a.mrc", m.image, 1.25)
    ctf = {"defocus": 15000.0, "voltage": 300.0}
    p = prepare_micrograph(tmp_path / "a.mrc", settings(), index=3, ctf=ctf)
    p.save(tmp_path / "m.mrc", tmp_path / "m.json")
    info = json.loads((tmp_path / "m.json").read_text())
    for key in ("sigma", "L", "pixel_size", "size", "source", "index", "ctf", "noise_spectrum", "white_spectrum"):
        assert key in info
    assert not {"gamma", "n_particles", "snr"} & set(info)
    assert (info["L"], info["pixel_size"], info["index"]) == (L, 1.25, 3)
    assert {k: info["ctf"][k] for k in ctf} == ctf  # + the whitening filter when whitened
    assert info["source"] == str(tmp_path / "a.mrc") and info["preparation"]["L"] == L
    f = np.array(info["noise_spectrum"]["frequency"])
    assert abs(f.max() - 1 / (math.sqrt(2) * 1.25)) < 0.01  # cycles/Å, up to the corner 1/(√2·pixel)
    white = np.array(info["white_spectrum"]["psd"])
    white_f = np.array(info["white_spectrum"]["frequency"]) * 1.25
    hi = (white_f >= 0.25) & (white_f <= 0.5)
    assert abs(math.sqrt(white[hi].mean()) / info["sigma"] - 1) < 0.01
    image, px = read_image_mrc(tmp_path / "m.mrc")
    assert px == pytest.approx(1.25) and image.shape == (480, 480)
    np.testing.assert_allclose(image, p.image, atol=1e-6 * np.abs(p.image).max())


# --------------------------------------------------------------------------- reading and bad input
def test_side_file_ctf_carries_the_whitening_filter(truth, tmp_path):
    """With whitening the recorded CTF's gain is the filter the image went through: the ratio of
    the prepared image's DFT to the input's (edge 0, no resampling), bin by bin; the CTF
    parameters themselves are recorded as given, and without whitening there is no gain."""
    from cryomtd.ctf import ctf_from_dict

    m = simulate(truth, 0, size=512, snr=None, seed=30)
    noise, _ = _coloured((512, 512), math.sqrt(m.signal_energy / L**2), 30)
    image = m.clean + noise
    write_image_mrc(tmp_path / "a.mrc", image, 2.0)
    image = read_image_mrc(tmp_path / "a.mrc")[0]  # as stored (float32)
    ctf = {"defocus": 15000.0, "voltage": 300.0, "defocus_v": 14000.0, "defocus_angle": 20.0}
    p = prepare_micrograph(tmp_path / "a.mrc", settings(edge=0, whiten=True), ctf=ctf)
    recorded = ctf_from_dict(p.info["ctf"])
    assert {k: p.info["ctf"][k] for k in ctf} == ctf
    ratio = np.fft.rfft2(p.image) / np.fft.rfft2(image - image.mean())
    fy, fx = np.fft.fftfreq(512, d=2.0)[:, None], np.fft.rfftfreq(512, d=2.0)[None, :]
    bare = dict(p.info["ctf"], gain=None)
    expected = recorded.at(fy, fx) / ctf_from_dict(bare).at(fy, fx)  # the gain alone, on the rfft grid
    amplitude = np.abs(np.fft.rfft2(image - image.mean()))
    ok = amplitude > 1e-3 * amplitude.max()  # the ratio is round-off where the input has no power
    ok[0, 0] = False
    np.testing.assert_allclose(ratio.real[ok], expected[ok], rtol=2e-3)
    assert np.abs(ratio.imag[ok]).max() < 1e-8
    plain = prepare_micrograph(tmp_path / "a.mrc", settings(edge=0, whiten=False), ctf=ctf)
    assert plain.info["ctf"] == ctf


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_every_real_mode_and_a_one_image_stack(tmp_path, dtype):
    data = (np.random.default_rng(6).integers(0, 100, (1, 40, 30))).astype(dtype)
    with mrcfile.new(tmp_path / "a.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.5
    image, px = read_micrograph_file(tmp_path / "a.mrc")
    assert image.dtype == np.float64 and image.shape == (40, 30) and px == pytest.approx(1.5)
    np.testing.assert_array_equal(image, data[0].astype(np.float64))


def _error(call, *fragments):
    with pytest.raises(InputError) as e:
        call()
    msg = str(e.value)
    for f in fragments:
        assert str(f) in msg, msg
    assert "\n" not in msg
    return msg


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_bad_files_are_named(tmp_path):
    s = settings()
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"this is not an MRC file" * 100)
    _error(lambda: prepare_micrograph(bad, s), "bad.mrc")
    _error(lambda: prepare_micrograph(tmp_path / "missing.mrc", s), "missing.mrc")
    write_mrc(tmp_path / "vol.mrc", np.zeros((3, 64, 64)), 1.0)
    _error(lambda: prepare_micrograph(tmp_path / "vol.mrc", s), "vol.mrc", "(3, 64, 64)")
    with mrcfile.new(tmp_path / "cplx.mrc") as mrc:
        mrc.set_data(np.zeros((64, 64), np.complex64))
    _error(lambda: prepare_micrograph(tmp_path / "cplx.mrc", s), "cplx.mrc", "mode")
    data = np.zeros((64, 64), np.float32)
    data[1, 2] = data[5, 5] = np.nan
    data[7, 7] = np.inf
    with mrcfile.new(tmp_path / "nan.mrc") as mrc:
        mrc.set_data(data)
    _error(lambda: prepare_micrograph(tmp_path / "nan.mrc", s), "nan.mrc", "3 ")


def test_missing_pixel_size_names_the_key(tmp_path):
    image = np.random.default_rng(7).standard_normal((128, 128)).astype(np.float32)
    with mrcfile.new(tmp_path / "nopx.mrc") as mrc:
        mrc.set_data(image)  # unit cell 0: no pixel size
    _error(lambda: prepare_micrograph(tmp_path / "nopx.mrc", settings()), "nopx.mrc", "data.pixel_size")
    _error(lambda: check_pixel_sizes([tmp_path / "nopx.mrc"], settings()), "nopx.mrc", "data.pixel_size")
    p = prepare_micrograph(tmp_path / "nopx.mrc", settings(pixel_size=1.1))
    assert p.pixel_size == 1.1


def test_too_small_and_finer_output_pixel(tmp_path):
    write_image_mrc(tmp_path / "small.mrc", np.random.default_rng(8).standard_normal((100, 120)), 1.0)
    _error(lambda: prepare_micrograph(tmp_path / "small.mrc", settings(L=21)), "small.mrc", "68×88", "L = 21")
    assert prepare_micrograph(tmp_path / "small.mrc", settings(L=17)).image.shape == (68, 88)
    _error(lambda: prepare_micrograph(tmp_path / "small.mrc", settings(pixel_size_out=0.8)), "small.mrc", "0.8")
    _error(lambda: check_pixel_sizes([tmp_path / "small.mrc"], settings(pixel_size_out=0.8)), "small.mrc", "0.8")


def test_empty_glob_names_key_pattern_and_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _error(lambda: micrograph_files("raw/*.mrc"), "data.micrographs", "raw/*.mrc", str(tmp_path))
    (tmp_path / "raw").mkdir()
    for name in ("b.mrc", "a.mrc", "c.txt"):
        (tmp_path / "raw" / name).write_bytes(b"")
    assert micrograph_files("raw/*.mrc") == ["raw/a.mrc", "raw/b.mrc"]


def test_different_pixel_sizes(tmp_path):
    image = np.zeros((64, 64))
    files = []
    for name, px in (("a.mrc", 1.06), ("b.mrc", 1.2), ("c.mrc", 1.06)):
        write_image_mrc(tmp_path / name, image, px)
        files.append(str(tmp_path / name))
    msg = _error(lambda: check_pixel_sizes(files, settings()), "1.06 Å", "1.2 Å", "a.mrc", "b.mrc", "pixel_size_out")
    assert msg.index("c.mrc") < msg.index("1.2 Å")  # grouped by size
    assert check_pixel_sizes(files[::2], settings()) == pytest.approx([1.06, 1.06])
    assert check_pixel_sizes(files, settings(pixel_size_out=1.5)) == pytest.approx([1.06, 1.2, 1.06])
    assert check_pixel_sizes(files, settings(pixel_size=1.0)) == [1.0, 1.0, 1.0]


def test_from_config_rejects_unknown_keys():
    s = DataSettings.from_config({"micrographs": "raw/*.mrc", "L": 15, "advanced": {"edge": 0}})
    assert (s.L, s.advanced.edge, s.advanced.psd_tile) == (15, 0, 256)
    _error(lambda: DataSettings.from_config({"micrographs": "x", "L": 15, "pixelsize": 1}), "data", "pixelsize")


# --------------------------------------------------------------------------- command line
def test_cli_writes_what_the_library_writes(truth, tmp_path, capsys):
    from cryomtd.cli import main

    files = []
    for k in range(2):
        write_image_mrc(tmp_path / f"raw{k}.mrc", 100.0 - simulate(truth, k, size=256, seed=17).image, 2.0)
        files.append(str(tmp_path / f"raw{k}.mrc"))
    out = tmp_path / "res" / "exp"
    argv = ["prepare", *files, "--L", str(L), "--invert", "--psd-tile", "64", "--out", str(out)]
    assert main(argv) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    s = DataSettings(micrographs=" ".join(files), L=L, invert=True, advanced=DataAdvanced(psd_tile=64))
    for k, f in enumerate(files):
        lib = prepare_micrograph(f, s, index=k)
        image, px = read_image_mrc(out / "micrographs" / f"{k}.mrc")
        np.testing.assert_array_equal(image, lib.image.astype(np.float32))
        assert px == pytest.approx(2.0)
        assert json.loads((out / "micrographs" / f"{k}.json").read_text()) == json.loads(json.dumps(lib.info))
    assert main(["prepare", str(tmp_path / "nothere.mrc"), "--L", "11"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cryomtd prepare: error:") and "nothere.mrc" in err and "\n" not in err
