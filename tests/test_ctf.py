"""cryomtd.ctf: the astigmatic CTF against an independent formula, grouping by defocus, the
group table and the RELION STAR reader (hand-written files)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryomtd.ctf import (
    CTF,
    CtfGroupTable,
    apply_ctf,
    ctf_group_table,
    group_ctfs,
    read_ctf_star,
)
from cryomtd.io import InputError


def _ctf_reference(fy, fx, du, dv, angle_deg, kv=300.0, cs_mm=2.7, ac=0.1, b=0.0):
    """RELION's CTF written out independently (ctf.h: K1 = πλ, K2 = π/2 Cs λ³, astigmatic defocus
    along the frequency's azimuth). λ is the CODATA wavelength, pinned against the textbook value
    in tests/test_simulate.py; the phase reaches ~200 rad in the corners here, so a 1e-5 difference
    in λ would dominate the comparison."""
    from cryomtd.ctf import electron_wavelength

    lam = electron_wavelength(kv)
    u2 = fx**2 + fy**2
    azimuth = np.arctan2(fy, fx)
    defocus = 0.5 * (du + dv) + 0.5 * (du - dv) * np.cos(2 * (azimuth - math.radians(angle_deg)))
    gamma = math.pi * lam * defocus * u2 - 0.5 * math.pi * cs_mm * 1e7 * lam**3 * u2**2
    return -(math.sqrt(1 - ac**2) * np.sin(gamma) + ac * np.cos(gamma)) * np.exp(-b * u2 / 4)


@pytest.mark.parametrize("du,dv,angle", [(15000.0, 15000.0, 0.0), (21000.0, 18000.0, 37.0), (9000.0, 12000.0, -80.0)])
def test_astigmatic_ctf_matches_independent_formula(du, dv, angle):
    pix = 1.7
    c = CTF(defocus=du, defocus_v=dv, defocus_angle=angle, amplitude_contrast=0.07, b_factor=30.0)
    fy = np.fft.fftfreq(64, d=pix)[:, None]
    fx = np.fft.fftfreq(48, d=pix)[None, :]
    ref = _ctf_reference(fy, fx, du, dv, angle, ac=0.07, b=30.0)
    np.testing.assert_allclose(c.on_grid((64, 48), pix), ref, atol=1e-9)
    half = c.on_grid((64, 48), pix, real=True)
    # rfft2 columns are the fft2 ones up to Nyquist, which rfft2 holds at +1/(2·pix) (fftfreq: −)
    np.testing.assert_array_equal(half[:, :24], c.on_grid((64, 48), pix)[:, :24])
    np.testing.assert_allclose(half[:, 24], _ctf_reference(fy[:, 0], 0.5 / pix, du, dv, angle, ac=0.07, b=30.0))
    assert c.at(0.0, 0.0) == pytest.approx(-0.07)


def test_astigmatic_ctf_is_even_and_rotates_with_its_angle():
    c = CTF(defocus=20000.0, defocus_v=16000.0, defocus_angle=25.0)
    s = np.linspace(0.01, 0.2, 17)
    theta = math.radians(70.0)
    a = c.at(s * math.sin(theta), s * math.cos(theta))
    b = c.at(-s * math.sin(theta), -s * math.cos(theta))
    np.testing.assert_allclose(a, b, atol=1e-12)
    # along the U axis (θ = angle) the defocus is U, along V (θ = angle + 90°) it is V
    iso_u, iso_v = CTF(defocus=20000.0), CTF(defocus=16000.0)
    for th, iso in ((25.0, iso_u), (115.0, iso_v)):
        t = math.radians(th)
        np.testing.assert_allclose(c.at(s * math.sin(t), s * math.cos(t)), iso(s), atol=1e-12)


def test_apply_ctf_astigmatic_cosine_is_eigenfunction():
    """A cosine of frequency (fy, fx) comes out multiplied by CTF(fy, fx)."""
    n, pix = 64, 2.0
    y, x = np.mgrid[0:n, 0:n]
    ky, kx = 5, -9
    img = np.cos(2 * np.pi * (ky * y + kx * x) / n)
    c = CTF(defocus=12000.0, defocus_v=9000.0, defocus_angle=60.0)
    out = apply_ctf(img, c, pix)
    np.testing.assert_allclose(out, img * c.at(ky / (n * pix), kx / (n * pix)), atol=1e-10)


def test_delocalisation_is_the_phase_slope():
    c = CTF(defocus=25000.0, cs=2.7)
    pix = 3.85
    s = 0.5 / pix
    lam = c.wavelength
    expected = (lam * 25000.0 * s - 2.7e7 * lam**3 * s**3) / pix
    assert c.delocalisation(pix) == pytest.approx(expected, rel=1e-3)
    assert CTF(defocus=10000.0).delocalisation(pix) < c.delocalisation(pix)


def test_grouping_bounds_the_phase_error_and_is_deterministic():
    rng = np.random.default_rng(3)
    pix = 3.0
    ctfs = [CTF(defocus=float(d)) for d in rng.uniform(10000.0, 25000.0, 40)]
    for tol in (0.2, 0.5, 2.0):
        groups = group_ctfs(ctfs, pix, tol)
        members = sorted(m for g in groups for m in g.members)
        assert members == list(range(40))
        lam = ctfs[0].wavelength
        for g in groups:
            # independent check of the stated error: |Δχ| at Nyquist for every member
            gaps = [math.pi * lam * abs(ctfs[m].defocus - g.ctf.defocus) * (0.5 / pix) ** 2 for m in g.members]
            assert max(gaps) <= tol + 1e-9
            assert g.phase_error == pytest.approx(max(gaps), abs=1e-9)
        assert group_ctfs(ctfs, pix, tol) == groups
    assert len(group_ctfs(ctfs, pix, 0.2)) > len(group_ctfs(ctfs, pix, 2.0))
    assert len(group_ctfs(ctfs, pix, 0.0)) == 40
    # different optics never share a group
    mixed = [CTF(defocus=15000.0), CTF(defocus=15000.0, voltage=200.0)]
    assert len(group_ctfs(mixed, pix, 10.0)) == 2


def test_group_table_weights_roundtrip_and_errors(tmp_path):
    infos = [
        {"ctf": CTF(defocus=d).to_dict(), "pixel_size": 2.0, "size": size}
        for d, size in ((10000.0, [100, 100]), (10010.0, [200, 100]), (24000.0, [100, 100]))
    ]
    t = ctf_group_table(infos, ["0", "1", "2"])
    assert t.modelled and t.group_of == (0, 0, 1)
    assert t.weights == pytest.approx((0.75, 0.25))
    assert t.ctf_of("2").defocus == 24000.0
    t.save(tmp_path / "g.json")
    assert CtfGroupTable.load(tmp_path / "g.json") == t
    ignored = ctf_group_table(infos, ["0", "1", "2"], mode="ignore")
    assert not ignored.modelled and ignored.ctf_of("1") is None
    none = ctf_group_table([{"ctf": None, "pixel_size": 2.0, "size": [8, 8]}] * 2, ["0", "1"])
    assert not none.modelled
    with pytest.raises(InputError, match="has a CTF and micrograph 1 has none"):
        ctf_group_table([infos[0], {"ctf": None, "pixel_size": 2.0}], ["0", "1"])
    with pytest.raises(InputError, match="'model' or 'ignore'"):
        ctf_group_table(infos, ["0", "1", "2"], mode="off")
    with pytest.raises(InputError, match="unknown CTF key"):
        ctf_group_table([{"ctf": {"defocus": 1.0, "phase": 2}, "pixel_size": 2.0}], ["0"])


STAR = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
opticsGroup1 1 1.06 300.0 2.7 0.1
opticsGroup2 2 1.06 200.0 1.4 0.07

# version 30001

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
_rlnDefocusU #3
_rlnDefocusV #4
_rlnDefocusAngle #5
_rlnCtfBfactor #6
MotionCorr/job002/Movies/mic_001.mrc 1 15234.5 14876.25 -12.5 0.0
MotionCorr/job002/Movies/mic_002.mrc 2 22011.0 22011.0 0.0 40.0
MotionCorr/job002/Movies/mic_003.tif 1 9800.0 10200.0 88.0 0.0
"""


def test_star_reader_against_hand_written_file(tmp_path):
    path = tmp_path / "micrographs_ctf.star"
    path.write_text(STAR)
    table = read_ctf_star(path)
    assert table.pixel_size == pytest.approx(1.06)
    a, b, c = table.for_files(["raw/mic_001.mrc", "other/mic_002.mrc", "mic_003.mrc"])
    assert (a.defocus, a.defocus_v, a.defocus_angle) == (15234.5, 14876.25, -12.5)
    assert (a.voltage, a.cs, a.amplitude_contrast) == (300.0, 2.7, 0.1)
    assert a.astigmatic and not b.astigmatic
    assert (b.voltage, b.cs, b.amplitude_contrast, b.b_factor) == (200.0, 1.4, 0.07, 40.0)
    assert (c.defocus, c.defocus_v, c.defocus_angle) == (9800.0, 10200.0, 88.0)
    # the astigmatic CTF read from the file is the one the formula gives
    fy, fx = np.fft.fftfreq(32, d=1.06)[:, None], np.fft.fftfreq(32, d=1.06)[None, :]
    np.testing.assert_allclose(a.on_grid((32, 32), 1.06), _ctf_reference(fy, fx, 15234.5, 14876.25, -12.5), atol=1e-9)
    with pytest.raises(InputError, match=r"no rlnMicrographName row for mic_004\.mrc"):
        table.for_files(["mic_001.mrc", "mic_004.mrc"])


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda s: (
                s.replace("_rlnDefocusV #4\n", "")
                .replace(" 14876.25", "")
                .replace(" 22011.0 0.0", " 0.0")
                .replace(" 10200.0", "")
            ),
            "lacks column",
        ),
        (lambda s: s.split("# version 30001\n\ndata_micrographs")[0], "no data_micrographs"),
        (lambda s: s.replace("_rlnCtfBfactor #6", "_rlnPhaseShift #6").replace(" 40.0", " 90.0"), "phase plate"),
        (lambda s: s.replace("mic_003.tif", "mic_001.mrc"), "appears twice"),
        (lambda s: s.replace("mic_002.mrc 2", "mic_002.mrc 3"), "optics group 3"),
    ],
)
def test_star_reader_errors(tmp_path, edit, match):
    path = tmp_path / "bad.star"
    path.write_text(edit(STAR))
    with pytest.raises(InputError, match=match):
        read_ctf_star(path)


def test_star_reader_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_ctf_star(tmp_path / "nope.star")
