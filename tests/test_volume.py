"""cryomtd.volume: MRC I/O, Fourier down-sampling, phantoms, densities of atomic models."""

from __future__ import annotations

import warnings

import gemmi
import mrcfile
import numpy as np
import pytest

from cryomtd import volume as V
from cryomtd.io import InputError


@pytest.fixture
def bpti(repo_root):
    return repo_root / "data" / "structures" / "5PTI.pdb"


# ------------------------------------------------------------------ MRC I/O
def test_mrc_roundtrip(tmp_path):
    vol = np.random.default_rng(0).normal(size=(6, 6, 6))
    V.write_mrc(tmp_path / "v.mrc", vol, 1.75)
    back, vs = V.read_mrc(tmp_path / "v.mrc")
    # float32 storage: relative rounding 2^-24
    np.testing.assert_allclose(back, vol, rtol=1e-6, atol=1e-6)
    assert back.dtype == np.float64 and vs == pytest.approx(1.75, rel=1e-6)
    with mrcfile.open(tmp_path / "v.mrc") as m:
        assert m.header.mode == 2
    assert not list(tmp_path.glob(".*tmp*")), "atomic write left a temporary file"


def test_image_mrc_roundtrip(tmp_path):
    img = np.random.default_rng(1).normal(size=(5, 7))
    V.write_image_mrc(tmp_path / "m.mrc", img, 2.5)
    back, ps = V.read_image_mrc(tmp_path / "m.mrc")
    np.testing.assert_allclose(back, img, rtol=1e-6, atol=1e-6)
    assert ps == pytest.approx(2.5, rel=1e-6)


def _raw_mrc(path, data, mode_dtype=np.float32):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mrcfile warns about the NaN we write on purpose
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(data.astype(mode_dtype))


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "not found"),
        ("2d", "3-D"),
        ("nan", "NaN"),
        ("complex", "mode"),
        ("text", "MRC"),
        ("noncubic", "cubic"),
    ],
)
def test_read_mrc_errors_name_the_file(tmp_path, case, needle):
    path = tmp_path / f"{case}.mrc"
    if case == "2d":
        _raw_mrc(path, np.zeros((4, 4)))
    elif case == "nan":
        data = np.zeros((4, 4, 4))
        data[1, 2, 3] = np.nan
        _raw_mrc(path, data)
    elif case == "complex":
        _raw_mrc(path, np.zeros((4, 4, 4)), np.complex64)
    elif case == "text":
        path.write_text("not an MRC file\n" * 100)
    elif case == "noncubic":
        _raw_mrc(path, np.zeros((4, 5, 4)))
    with pytest.raises(InputError) as err:
        V.read_mrc(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_read_image_rejects_volume(tmp_path):
    _raw_mrc(tmp_path / "v.mrc", np.zeros((3, 4, 4)))
    with pytest.raises(InputError, match="2-D"):
        V.read_image_mrc(tmp_path / "v.mrc")


def test_mmap_mrc_matches_reader_and_names_missing_file(tmp_path):
    img = np.random.default_rng(1).normal(size=(5, 7))
    V.write_image_mrc(tmp_path / "m.mrc", img, 1.5)
    with V.mmap_mrc(tmp_path / "m.mrc") as data:
        # same float32 file, read two ways: identical values
        np.testing.assert_array_equal(
            np.asarray(data[1:4, 2:6], dtype=np.float64), V.read_image_mrc(tmp_path / "m.mrc")[0][1:4, 2:6]
        )
    with pytest.raises(InputError) as err:
        with V.mmap_mrc(tmp_path / "missing.mrc"):
            pass
    assert str(tmp_path / "missing.mrc") in str(err.value) and "not found" in str(err.value)


# ------------------------------------------------------------------ down-sampling
@pytest.mark.parametrize("N, L", [(9, 5), (8, 5), (12, 7), (7, 7)])
def test_downsample_equals_explicit_fourier_crop(N, L):
    """Brute-force trigonometric interpolant restricted to |k| ≤ (L−1)/2, evaluated at the
    coarse sample positions N//2 + (j − L//2)·N/L; agreement to rounding (1e-12)."""
    vol = np.random.default_rng(N * 10 + L).normal(size=(N, N, N))
    F = np.fft.fftn(vol)
    k = np.rint(np.fft.fftfreq(N) * N)
    keep = np.abs(k) <= (L - 1) // 2
    pos = N // 2 + (np.arange(L) - L // 2) * N / L
    E = np.exp(2j * np.pi * np.outer(pos, k[keep]) / N)  # (L, K)
    Fk = F[np.ix_(keep, keep, keep)]
    ref = np.einsum("abc,ia,jb,kc->ijk", Fk, E, E, E).real / N**3
    np.testing.assert_allclose(V.downsample(vol, L), ref, atol=1e-12)


def test_downsample_keeps_constants_and_centre():
    np.testing.assert_allclose(V.downsample(np.full((10, 10, 10), 3.0), 5), 3.0, atol=1e-12)
    delta = np.zeros((12, 12, 12))
    delta[6, 6, 6] = 1.0
    small = V.downsample(delta, 6)
    assert np.unravel_index(np.argmax(small), small.shape) == (3, 3, 3)


# ------------------------------------------------------------------ phantoms
def test_shepp_logan_values_and_support():
    L = 64
    vol = V.shepp_logan(L)
    c = L // 2
    # centre: ellipsoids 1 (+1) and 2 (−0.8) only; y = 29 voxels (u = 0.906): ellipsoid 1 only
    assert vol[c, c, c] == pytest.approx(0.2)
    assert vol[c, c + 29, c] == pytest.approx(1.0)
    assert vol[c, c - 29, c] == pytest.approx(1.0)
    assert np.all(vol[~V.ball_mask(L)] == 0)
    orig = V.shepp_logan(L, "original")
    assert orig[c, c, c] == pytest.approx(0.02)


def test_gaussian_blobs_seeded_inside_ball():
    a, b, c = V.gaussian_blobs(15, 6, 3), V.gaussian_blobs(15, 6, 3), V.gaussian_blobs(15, 6, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(a[~V.ball_mask(15)] == 0) and a.min() >= 0 and a.max() > 0.3


# ------------------------------------------------------------------ atomic models
def test_from_structure_mass_and_centring(bpti):
    """Σ density × voxel³ equals Σ occupancy·f_e(0) of the heavy atoms (f_e(0) = sum of the
    c4322 Gaussian amplitudes); the box (24 × 2 Å) holds the whole model, so only the
    Gaussian cut-off loses mass (< 1 %). The density's centre of mass sits at the centre voxel
    (electron form factors weight atoms slightly differently from masses: < 0.15 voxel)."""
    L, vs = 24, 2.0
    vol = V.from_structure(bpti, L, vs, resolution=4.0)
    _, occ, elements = V.structure_atoms(bpti)
    assert len(elements) < 470  # waters and hydrogens removed (1104 records, ~460 heavy atoms)
    f0 = {e: sum(gemmi.Element(e).c4322.get_coefs()[:5]) for e in set(elements)}
    expected = sum(o * f0[e] for o, e in zip(occ, elements, strict=True))
    assert vol.sum() * vs**3 == pytest.approx(expected, rel=1e-2)
    z, y, x = V.centred_coordinates(L)
    w = np.clip(vol, 0, None)
    centre = np.array([(w * x).sum(), (w * y).sum(), (w * z).sum()]) / w.sum()
    assert np.all(np.abs(centre) < 0.15), centre


def test_from_structure_lowpass_smooths(bpti):
    """Lower resolution ⇒ less energy above half the band limit (Gaussian low-pass)."""

    def high_fraction(v):
        f = np.abs(np.fft.fftn(v)) ** 2
        k = np.fft.fftfreq(v.shape[0])
        kk = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
        return f[kk > 0.25].sum() / f.sum()

    sharp = V.from_structure(bpti, 16, 3.0, resolution=6.0)
    blurred = V.from_structure(bpti, 16, 3.0, resolution=15.0)
    assert high_fraction(blurred) < 0.5 * high_fraction(sharp)


def test_from_structure_bad_path(tmp_path):
    with pytest.raises(InputError, match="not found"):
        V.from_structure(tmp_path / "none.pdb", 11, 3.0, 6.0)
    bad = tmp_path / "bad.pdb"
    bad.write_text("HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\nEND\n")
    with pytest.raises(InputError, match="no atoms"):
        V.from_structure(bad, 11, 3.0, 6.0)


def test_source_kind():
    assert V.source_kind("shepp_logan") == "shepp_logan"
    assert V.source_kind("x/5PTI.cif.gz") == "structure"
    assert V.source_kind("emd.map") == "mrc"
    with pytest.raises(InputError, match="volume.source"):
        V.source_kind("thing.txt")


def test_make_volume_from_mrc_crops_and_rescales_voxel(tmp_path):
    big = V.gaussian_blobs(14, 4, 0)
    V.write_mrc(tmp_path / "big.mrc", big, 1.5)
    vol, vs = V.make_volume(str(tmp_path / "big.mrc"), 7)
    np.testing.assert_allclose(vol, V.downsample(big.astype(np.float32).astype(np.float64), 7), atol=1e-10)
    assert vs == pytest.approx(3.0, rel=1e-6)
    with pytest.raises(InputError, match="smaller than volume.L"):
        V.make_volume(str(tmp_path / "big.mrc"), 20)


def test_prepare_volume_truth_is_basis_volume(tmp_path):
    basis_mod = pytest.importorskip("cryomtd.basis")
    p = V.prepare_volume("gaussian_blobs", 9, n_blobs=4, ell_max=4, seed=2)
    b = basis_mod.SphericalBessel(9, 4)
    np.testing.assert_allclose(p.coef, b.expand(p.raw), atol=1e-10)
    np.testing.assert_allclose(p.truth, b.evaluate(p.coef), atol=1e-12)
    assert np.linalg.norm(p.raw) == pytest.approx(1.0)
    p.save(tmp_path / "raw.mrc", tmp_path / "truth.mrc", tmp_path / "truth.npz")
    t = V.load_truth(tmp_path / "truth.npz")
    assert t["L"] == 9 and t["ell_max"] == 4
    np.testing.assert_array_equal(t["coef"], p.coef)
    back, _ = V.read_mrc(tmp_path / "truth.mrc")
    np.testing.assert_allclose(back, p.truth, atol=1e-6)


def test_resolve_source(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert V.resolve_source("shepp_logan", repo_root) == []
    assert V.resolve_source("data/structures/5PTI.pdb", repo_root) == [str(repo_root / "data/structures/5PTI.pdb")]
    (tmp_path / "data" / "structures").mkdir(parents=True)
    (tmp_path / "data" / "structures" / "5PTI.pdb").write_text("local copy\n")
    assert V.resolve_source("data/structures/5PTI.pdb", repo_root) == ["data/structures/5PTI.pdb"]  # cwd wins
    assert V.resolve_source("missing.pdb", repo_root) == ["missing.pdb"]
