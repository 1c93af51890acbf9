"""Volumes and images on disk and in memory: MRC I/O, Fourier down-sampling, phantoms, atomic models.

Conventions (docs/conventions.md): volumes are float64 arrays indexed ``[z, y, x]`` with
shape (L, L, L); images are ``[y, x]``; the centre is voxel ``L//2`` on every axis.
Voxel sizes are in Å. Files are float32 MRC (mode 2) with the voxel size in the header,
written atomically (temporary name, then rename).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from cryomtd.io import InputError, atomic_path, read_npz
from cryomtd.seeding import rng as seeded_rng

__all__ = [
    "VolumeSettings",
    "read_mrc",
    "write_mrc",
    "read_image_mrc",
    "write_image_mrc",
    "mmap_mrc",
    "downsample",
    "shepp_logan",
    "gaussian_blobs",
    "from_structure",
    "ball_mask",
    "centred_coordinates",
    "structure_atoms",
    "source_kind",
    "resolve_source",
    "auto_voxel_size",
    "make_volume",
    "prepare_volume",
    "PreparedVolume",
    "load_truth",
]

log = logging.getLogger("cryomtd.volume")

# MRC modes holding real numbers: int8, int16, float32, uint16, float16.
_REAL_MODES = {0, 1, 2, 6, 12}


# --------------------------------------------------------------------------- MRC I/O
def _read_mrc_any(path: str | os.PathLike, ndim: int) -> tuple[np.ndarray, float]:
    path = Path(path)
    what = "volume" if ndim == 3 else "image"
    if not path.is_file():
        raise InputError(f"{path}: MRC file not found (expected a {ndim}-D {what})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=False) as mrc:
                mode = int(mrc.header.mode)
                if mode not in _REAL_MODES:
                    raise InputError(
                        f"{path}: MRC mode {mode} is not a real-valued mode; expected one of "
                        f"{sorted(_REAL_MODES)} (2 = float32)"
                    )
                data = np.asarray(mrc.data, dtype=np.float64).copy()
                vs = mrc.voxel_size
                sizes = (float(vs.x), float(vs.y), float(vs.z))
    except InputError:
        raise
    except Exception as exc:  # mrcfile raises ValueError/OSError with varied messages
        raise InputError(f"{path}: not a readable MRC file ({exc})") from None
    if ndim == 2 and data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != ndim:
        raise InputError(f"{path}: expected a {ndim}-D {what}, got an array of shape {data.shape}")
    if ndim == 3 and len(set(data.shape)) != 1:
        raise InputError(f"{path}: expected a cubic volume (L, L, L), got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise InputError(f"{path}: {bad} voxel(s) are NaN or Inf; expected finite values")
    voxel = sizes[0]
    used = sizes[:ndim]
    if max(used) - min(used) > 1e-3 * max(abs(voxel), 1e-12):
        raise InputError(f"{path}: anisotropic voxel size {sizes} Å; expected equal sizes on every axis")
    return data, voxel


def read_mrc(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a cubic 3-D MRC volume.

    Returns ``(volume, voxel_size)``: ``volume`` float64 ``[z, y, x]`` of shape (L, L, L),
    ``voxel_size`` in Å (0.0 when the header records none, e.g. a zero unit cell).
    Raises :class:`cryomtd.io.InputError` naming the file when it is missing, not an MRC
    file, not 3-D/cubic, of a complex mode, anisotropic, or holds NaN/Inf.
    """
    return _read_mrc_any(path, 3)


def read_image_mrc(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a 2-D MRC image (a micrograph): ``(image [y, x] float64, pixel size Å)``; same checks as :func:`read_mrc`.

    A stack holding a single image (1, ny, nx) is accepted as that image.
    """
    return _read_mrc_any(path, 2)


@contextmanager
def mmap_mrc(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Memory-map an MRC file read-only and yield its data array (file dtype, not copied).

    For micrographs larger than memory: slice the yielded array to read only what is
    needed. The array is valid only inside the ``with`` block. Raises
    :class:`cryomtd.io.InputError` naming the file when it is missing, not an MRC file,
    or has no data block; shape and mode checks are the caller's.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: MRC file not found")
    try:
        fh = mrcfile.mmap(path, mode="r", permissive=False)
    except ValueError as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc})") from None
    try:
        if fh.data is None:
            raise InputError(f"{path}: MRC file has no data block")
        yield fh.data
    finally:
        fh.close()


def _write_mrc_any(path: str | os.PathLike, array: np.ndarray, voxel_size: float, ndim: int) -> None:
    array = np.asarray(array)
    if array.ndim != ndim:
        raise ValueError(f"write to {path}: expected a {ndim}-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"write to {path}: array holds NaN or Inf")
    with atomic_path(path, suffix=".mrc") as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(array, dtype=np.float32))
            mrc.voxel_size = float(voxel_size)
            mrc.update_header_stats()


def write_mrc(path: str | os.PathLike, array: np.ndarray, voxel_size: float = 1.0) -> None:
    """Write a 3-D ``[z, y, x]`` volume as float32 MRC with ``voxel_size`` (Å) in the header, atomically."""
    _write_mrc_any(path, array, voxel_size, 3)


def write_image_mrc(path: str | os.PathLike, image: np.ndarray, pixel_size: float = 1.0) -> None:
    """Write a 2-D ``[y, x]`` image as float32 MRC with ``pixel_size`` (Å) in the header, atomically."""
    _write_mrc_any(path, image, pixel_size, 2)


# --------------------------------------------------------------------------- geometry helpers
def centred_coordinates(L: int, ndim: int = 3) -> tuple[np.ndarray, ...]:
    """Integer coordinates from the centre voxel ``L//2``, as broadcastable arrays.

    For ``ndim=3`` returns ``(z, y, x)`` of shapes (L,1,1), (1,L,1), (1,1,L).
    """
    c = np.arange(L) - L // 2
    out = []
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = L
        out.append(c.reshape(shape).astype(np.float64))
    return tuple(out)


def ball_mask(L: int, radius: float | None = None) -> np.ndarray:
    """Boolean (L, L, L) mask of voxels within ``radius`` (default L/2) of the centre voxel."""
    radius = L / 2 if radius is None else radius
    z, y, x = centred_coordinates(L)
    return x**2 + y**2 + z**2 <= radius**2


def soft_ball(L: int, radius: float, edge: float = 1.0) -> np.ndarray:
    """(L, L, L) ball of value 1/(1 + exp((r − radius)/edge)), r the distance (pixels) from the centre voxel.

    A sphere with a logistic edge of width ``edge`` px: the featureless start of ab-initio
    reconstruction (``lsq.init: ball``)."""
    if radius <= 0 or edge <= 0:
        raise ValueError(f"soft_ball: radius and edge must be positive, got {radius}, {edge}")
    z, y, x = centred_coordinates(L)
    r = np.sqrt(x**2 + y**2 + z**2)
    return 0.5 * (1.0 - np.tanh((r - radius) / (2.0 * edge)))  # = 1/(1+exp((r-R)/edge)), no overflow


# --------------------------------------------------------------------------- down-sampling
def downsample(vol: np.ndarray, L: int) -> np.ndarray:
    """Down-sample a cubic array (any dimension) to side ``L`` by cropping its centred Fourier transform.

    The centre voxel ``N//2`` of the input maps onto the centre voxel ``L//2`` of the
    output, and output voxel ``j`` samples the band-limited (frequencies |k| < L/2 in
    cycles per box) trigonometric interpolant of the input at input position
    ``N//2 + (j - L//2)·N/L``. Values are preserved (not sums): a constant stays the
    same constant. The voxel size grows by N/L. For even ``L`` the Nyquist plane keeps only
    the −L/2 frequency and the real part is returned.
    """
    vol = np.asarray(vol, dtype=np.float64)
    N = vol.shape[0]
    if any(n != N for n in vol.shape):
        raise ValueError(f"downsample: expected a cubic array, got shape {vol.shape}")
    if L > N:
        raise ValueError(f"downsample: target size {L} exceeds input size {N}")
    if L == N:
        return vol.copy()
    axes = tuple(range(vol.ndim))
    # centre voxel → index 0 so the crop keeps the centre fixed
    f = np.fft.fftshift(np.fft.fftn(np.roll(vol, [-(N // 2)] * vol.ndim, axis=axes)))
    lo = N // 2 - L // 2
    crop = f[tuple(slice(lo, lo + L) for _ in axes)]
    out = np.fft.ifftn(np.fft.ifftshift(crop)).real * (L / N) ** vol.ndim
    return np.roll(out, [L // 2] * vol.ndim, axis=axes)


# --------------------------------------------------------------------------- phantoms
# 3-D Shepp–Logan ellipsoids (Kak & Slaney; as in Schabel's phantom3d):
# A, a, b, c (semi-axes), x0, y0, z0 (centre), phi, theta, psi (degrees), on [-1, 1]^3.
_SHEPP_LOGAN_GEOMETRY = np.array(
    [
        [0.6900, 0.920, 0.810, 0.00, 0.0000, 0.00, 0.0, 0.0, 0.0],
        [0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0.0, 0.0, 0.0],
        [0.1100, 0.310, 0.220, 0.22, 0.0000, 0.00, -18.0, 0.0, 10.0],
        [0.1600, 0.410, 0.280, -0.22, 0.0000, 0.00, 18.0, 0.0, 10.0],
        [0.2100, 0.250, 0.410, 0.00, 0.3500, -0.15, 0.0, 0.0, 0.0],
        [0.0460, 0.046, 0.050, 0.00, 0.1000, 0.25, 0.0, 0.0, 0.0],
        [0.0460, 0.046, 0.050, 0.00, -0.1000, 0.25, 0.0, 0.0, 0.0],
        [0.0460, 0.023, 0.050, -0.08, -0.6050, 0.00, 0.0, 0.0, 0.0],
        [0.0230, 0.023, 0.020, 0.00, -0.6060, 0.00, 0.0, 0.0, 0.0],
        [0.0230, 0.046, 0.020, 0.06, -0.6050, 0.00, 0.0, 0.0, 0.0],
    ]
)
_SHEPP_LOGAN_INTENSITY = {
    "original": np.array([1.0, -0.98, -0.02, -0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]),
    "modified": np.array([1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
}


def _zxz_matrix(phi: float, theta: float, psi: float) -> np.ndarray:
    """The Euler matrix of phantom3d (ZXZ, degrees), applied to coordinates."""
    p, t, s = np.deg2rad([phi, theta, psi])
    cp, sp, ct, st, cs, ss = np.cos(p), np.sin(p), np.cos(t), np.sin(t), np.cos(s), np.sin(s)
    return np.array(
        [
            [cs * cp - ct * sp * ss, cs * sp + ct * cp * ss, ss * st],
            [-ss * cp - ct * sp * cs, -ss * sp + ct * cp * cs, cs * st],
            [st * sp, -st * cp, ct],
        ]
    )


def shepp_logan(L: int, variant: str = "modified") -> np.ndarray:
    """The 3-D Shepp–Logan phantom of 10 ellipsoids, sampled at voxel centres, (L, L, L) ``[z, y, x]``.

    The phantom's cube [-1, 1]³ is mapped onto the ball of radius L/2 about voxel ``L//2``
    (coordinate u = p / (L/2)); every ellipsoid lies within radius 0.92, so the support
    is inside the ball. ``variant``: ``"modified"`` (intensities 1, −0.8, −0.2, …, 0.1:
    visible contrast, the usual choice) or ``"original"`` (1, −0.98, −0.02, …, 0.01).
    """
    if variant not in _SHEPP_LOGAN_INTENSITY:
        raise InputError(f"shepp_logan variant: expected one of {sorted(_SHEPP_LOGAN_INTENSITY)}, got {variant!r}")
    z, y, x = centred_coordinates(L)
    coords = np.stack(np.broadcast_arrays(x, y, z), axis=-1) / (L / 2)  # (L,L,L,3) (x,y,z)
    vol = np.zeros((L, L, L))
    for amp, (a, b, c, x0, y0, z0, phi, theta, psi) in zip(
        _SHEPP_LOGAN_INTENSITY[variant], _SHEPP_LOGAN_GEOMETRY, strict=True
    ):
        cp = coords @ _zxz_matrix(phi, theta, psi).T
        inside = ((cp[..., 0] - x0) / a) ** 2 + ((cp[..., 1] - y0) / b) ** 2 + ((cp[..., 2] - z0) / c) ** 2 <= 1
        vol[inside] += amp
    return vol


def gaussian_blobs(L: int, n_blobs: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """A random pseudo-molecule: a sum of ``n_blobs`` isotropic Gaussians inside the ball of radius L/2.

    Centres are uniform in the ball of radius L/4, standard deviations uniform in
    [L/16, L/8] voxels, amplitudes uniform in [0.5, 1]; the result is multiplied by the
    ball mask of radius L/2 (the Gaussian tails there are < e^{-2}·amplitude at most,
    far less for most blobs). ``seed``: an integer (generator ``rng(seed, "volume", 0)``)
    or a ``numpy.random.Generator``. Returns (L, L, L) ``[z, y, x]`` float64.
    """
    if n_blobs < 1:
        raise InputError(f"gaussian_blobs: n_blobs must be ≥ 1, got {n_blobs}")
    g = seed if isinstance(seed, np.random.Generator) else seeded_rng(int(seed), "volume", 0)
    direction = g.normal(size=(n_blobs, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = (L / 4) * g.uniform(size=(n_blobs, 1)) ** (1 / 3)
    centres = direction * radius  # (n, 3) in (x, y, z)
    sigma = g.uniform(L / 16, L / 8, size=n_blobs)
    amp = g.uniform(0.5, 1.0, size=n_blobs)
    z, y, x = centred_coordinates(L)
    r2 = (
        (x[None] - centres[:, 0, None, None, None]) ** 2
        + (y[None] - centres[:, 1, None, None, None]) ** 2
        + (z[None] - centres[:, 2, None, None, None]) ** 2
    )
    vol = np.einsum("n,nzyx->zyx", amp, np.exp(-r2 / (2 * sigma[:, None, None, None] ** 2)))
    return vol * ball_mask(L)


# --------------------------------------------------------------------------- atomic models
def _load_structure(path: Path):
    import gemmi

    if not path.is_file():
        raise InputError(f"{path}: structure file not found (expected a PDB or mmCIF model)")
    try:
        st = gemmi.read_structure(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable PDB/mmCIF model ({exc})") from None
    if len(st) == 0:
        raise InputError(f"{path}: the model file holds no models")
    st.setup_entities()
    st.remove_hydrogens()  # H and D
    st.remove_waters()
    st.remove_alternative_conformations()
    st.remove_empty_chains()
    return st


def structure_atoms(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Heavy, non-water atoms of the first model: positions (n, 3) Å (x, y, z), occupancies (n,), element names."""
    st = _load_structure(Path(path))
    pos, occ, el = [], [], []
    for cra in st[0].all():
        p = cra.atom.pos
        pos.append((p.x, p.y, p.z))
        occ.append(cra.atom.occ)
        el.append(cra.atom.element.name)
    if not pos:
        raise InputError(f"{path}: no atoms left after removing waters and hydrogens")
    return np.asarray(pos), np.asarray(occ), el


def from_structure(path: str | os.PathLike, L: int, voxel_size: float, resolution: float) -> np.ndarray:
    """Electron-scattering density of an atomic model in an (L, L, L) box, ``[z, y, x]``.

    Steps: read the PDB/mmCIF with gemmi; keep the first model; remove waters, hydrogens
    (and deuterium) and alternative conformations; translate so the centre of mass (atomic
    masses × occupancy) sits on voxel ``L//2``; compute the density with
    ``gemmi.DensityCalculatorE`` (electron form factors, 5-Gaussian c4322 tables) on a
    periodic fine grid of k·L voxels (spacing ``voxel_size/k`` ≤ resolution/5), with an extra
    isotropic blur B = 4·ln2·resolution² Å², i.e. a Gaussian low-pass whose amplitude is 1/2
    at spatial frequency 1/resolution (on top of each atom's own B-factor); then Fourier-crop
    to L (:func:`downsample`). Units: gemmi's electron-scattering density (Å⁻³ × form-factor
    units), so Σ voxels × voxel_size³ ≈ Σ_atoms occupancy × f_e(0). The box is periodic:
    atoms farther than L·voxel_size/2 from the centre wrap around (a warning is logged when
    any atom lies outside the ball of radius L/2).
    """
    import gemmi

    path = Path(path)
    if L < 2 or voxel_size <= 0 or resolution <= 0:
        raise InputError(
            f"from_structure: need L ≥ 2, voxel_size > 0, resolution > 0; got {L}, {voxel_size}, {resolution}"
        )
    st = _load_structure(path)
    model = st[0]
    masses, positions = [], []
    for cra in model.all():
        masses.append(cra.atom.element.weight * cra.atom.occ)
        p = cra.atom.pos
        positions.append((p.x, p.y, p.z))
    if not masses:
        raise InputError(f"{path}: no atoms left after removing waters and hydrogens")
    positions = np.asarray(positions)
    com = np.average(positions, axis=0, weights=np.asarray(masses))
    k = max(1, math.ceil(5 * voxel_size / resolution))
    N = k * L
    h = voxel_size / k
    box = N * h
    centre = (N // 2) * h
    shift = gemmi.Position(*(centre - com))
    for cra in model.all():
        cra.atom.pos = cra.atom.pos + shift
    r_max = float(np.max(np.linalg.norm(positions - com, axis=1)))
    if r_max > L * voxel_size / 2:
        log.warning(
            "%s: atoms reach %.1f Å from the centre of mass, beyond the ball radius %.1f Å "
            "(L·voxel_size/2); the density is cut by the periodic box",
            path,
            r_max,
            L * voxel_size / 2,
        )
    st.cell = gemmi.UnitCell(box, box, box, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    dc = gemmi.DensityCalculatorE()
    dc.d_min = 2 * h
    dc.blur = 4 * math.log(2) * resolution**2
    dc.grid.unit_cell = st.cell
    dc.grid.spacegroup = gemmi.find_spacegroup_by_name("P 1")
    dc.grid.set_size(N, N, N)
    dc.add_model_density_to_grid(model)
    fine = np.array(dc.grid, copy=True).transpose(2, 1, 0)  # gemmi [x, y, z] → [z, y, x]
    return downsample(fine, L)


# --------------------------------------------------------------------------- the prepare_volume stage
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")
MRC_SUFFIXES = (".mrc", ".map", ".mrcs", ".ccp4")
PHANTOMS = ("shepp_logan", "gaussian_blobs")


def source_kind(source: str) -> str:
    """'shepp_logan', 'gaussian_blobs', 'structure' (PDB/mmCIF path) or 'mrc' (map path), from ``volume.source``."""
    if source in PHANTOMS:
        return source
    low = str(source).lower()
    if low.endswith(STRUCTURE_SUFFIXES):
        return "structure"
    if low.endswith(MRC_SUFFIXES):
        return "mrc"
    raise InputError(
        f"volume.source: expected one of {list(PHANTOMS)}, a PDB/mmCIF path ({', '.join(STRUCTURE_SUFFIXES)}) "
        f"or an MRC path ({', '.join(MRC_SUFFIXES)}); got {source!r}"
    )


def resolve_source(source: str, repo_dir: str | os.PathLike | None = None) -> list[str]:
    """The file behind ``volume.source`` as a list ([] for phantoms): the path as given when it
    exists (absolute, or relative to the working directory), else relative to ``repo_dir``
    when it exists there, else as given (Snakemake then reports it missing)."""
    if source in PHANTOMS:
        return []
    if os.path.isabs(source) or os.path.exists(source) or repo_dir is None:
        return [source]
    in_repo = os.path.join(repo_dir, source)
    return [in_repo] if os.path.exists(in_repo) else [source]


def auto_voxel_size(path: str | os.PathLike, L: int) -> float:
    """Voxel size (Å) that fits the model in the ball of radius L/2: 2·r_max/(L − 1), r_max from the centre of mass."""
    st = _load_structure(Path(path))
    pos = np.array([(a.atom.pos.x, a.atom.pos.y, a.atom.pos.z) for a in st[0].all()])
    w = np.array([a.atom.element.weight * a.atom.occ for a in st[0].all()])
    if len(pos) == 0:
        raise InputError(f"{path}: no atoms left after removing waters and hydrogens")
    com = np.average(pos, axis=0, weights=w)
    r_max = float(np.max(np.linalg.norm(pos - com, axis=1)))
    return 2 * r_max / (L - 1)


@dataclass(frozen=True)
class VolumeSettings:
    """The ``volume`` block (schema ``workflow/schemas/volume.schema.yaml``): source, box L, voxel
    size (Å; None = per source), resolution (Å; structures), phantom options, normalisation."""

    source: str = "shepp_logan"
    L: int = 11
    voxel_size: float | None = None
    resolution: float | None = None
    n_blobs: int = 8
    variant: str = "modified"
    normalize: str = "l2"

    @classmethod
    def from_config(cls, block: Any, where: str = "volume") -> VolumeSettings:
        from cryomtd.settings import from_block

        return from_block(cls, block, where)

    def prepare(self, *, source: str | None = None, ell_max: int | None = None, seed: int = 0) -> PreparedVolume:
        """:func:`prepare_volume` with these settings (``source``: the resolved path, default ``self.source``)."""
        return prepare_volume(
            source or self.source,
            self.L,
            voxel_size=self.voxel_size,
            resolution=self.resolution,
            n_blobs=self.n_blobs,
            variant=self.variant,
            normalize=self.normalize,
            ell_max=ell_max,
            seed=seed,
        )


@dataclass(frozen=True)
class PreparedVolume:
    """Output of the ``prepare_volume`` stage.

    ``raw`` (L, L, L) the volume on the voxel grid (after normalisation); ``truth`` =
    ``basis.evaluate(coef)`` with ``coef = basis.expand(raw)``, the ground truth every
    later stage uses; ``voxel_size`` Å; ``ell_max`` of the basis; ``expansion_error`` =
    ‖truth − raw‖/‖raw‖.
    """

    raw: np.ndarray
    truth: np.ndarray
    coef: np.ndarray
    voxel_size: float
    ell_max: int
    expansion_error: float

    @property
    def L(self) -> int:
        return int(self.raw.shape[0])

    def save(self, raw_path: str | os.PathLike, truth_path: str | os.PathLike, npz_path: str | os.PathLike) -> None:
        """Write ``truth_raw.mrc``, ``truth.mrc`` and ``truth.npz`` (coef, L, ell_max, voxel_size), atomically."""
        from cryomtd.io import save_npz

        write_mrc(raw_path, self.raw, self.voxel_size)
        write_mrc(truth_path, self.truth, self.voxel_size)
        save_npz(
            npz_path,
            coef=self.coef,
            L=np.int64(self.L),
            ell_max=np.int64(self.ell_max),
            voxel_size=np.float64(self.voxel_size),
            expansion_error=np.float64(self.expansion_error),
        )


def load_truth(path: str | os.PathLike) -> dict:
    """Read ``truth.npz``: dict with coef (size,), L, ell_max (ints), voxel_size (float)."""
    z = read_npz(path, ("coef", "L", "ell_max", "voxel_size"), what="truth file (written by prepare_volume)")
    return {
        "coef": z["coef"].astype(np.float64),
        "L": int(z["L"]),
        "ell_max": int(z["ell_max"]),
        "voxel_size": float(z["voxel_size"]),
    }


def make_volume(
    source: str,
    L: int,
    *,
    voxel_size: float | None = None,
    resolution: float | None = None,
    n_blobs: int = 8,
    variant: str = "modified",
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """The raw (L, L, L) volume of ``volume.source`` and its voxel size (Å).

    Phantoms use ``voxel_size`` (default 1 Å). Structures: ``voxel_size`` default
    :func:`auto_voxel_size`, ``resolution`` default 2·voxel_size. MRC maps are Fourier-cropped
    to L (voxel size × N/L; the header value, or ``voxel_size`` when given, is the input's).
    ``seed`` drives ``gaussian_blobs`` through ``rng(seed, "volume", 0)``.
    """
    kind = source_kind(source)
    if kind == "shepp_logan":
        return shepp_logan(L, variant), float(voxel_size or 1.0)
    if kind == "gaussian_blobs":
        return gaussian_blobs(L, n_blobs, seeded_rng(seed, "volume", 0)), float(voxel_size or 1.0)
    if kind == "structure":
        vs = float(voxel_size) if voxel_size else auto_voxel_size(source, L)
        res = float(resolution) if resolution else 2 * vs
        return from_structure(source, L, vs, res), vs
    vol, vs = read_mrc(source)
    if voxel_size:
        vs = float(voxel_size)
    elif vs <= 0:
        log.warning("%s: the header records no voxel size; set volume.voxel_size (Å) to keep physical units", source)
    N = vol.shape[0]
    if N < L:
        raise InputError(f"{source}: map side {N} is smaller than volume.L = {L}; expected at least L")
    return downsample(vol, L), vs * N / L


def prepare_volume(
    source: str,
    L: int,
    *,
    voxel_size: float | None = None,
    resolution: float | None = None,
    n_blobs: int = 8,
    variant: str = "modified",
    normalize: str = "l2",
    ell_max: int | None = None,
    seed: int = 0,
) -> PreparedVolume:
    """The ``prepare_volume`` stage: raw volume (:func:`make_volume`), normalised, expanded in the basis.

    ``normalize``: ``"l2"`` scales the raw volume to unit Euclidean norm (voxel sum),
    ``"max"`` to maximum 1, ``"none"`` keeps it. The basis is
    ``SphericalBessel(L, ell_max)`` (``ell_max=None``: the basis default).
    """
    from cryomtd.basis import SphericalBessel

    raw, vs = make_volume(
        source, L, voxel_size=voxel_size, resolution=resolution, n_blobs=n_blobs, variant=variant, seed=seed
    )
    if normalize == "l2":
        raw = raw / np.linalg.norm(raw)
    elif normalize == "max":
        raw = raw / np.max(np.abs(raw))
    elif normalize != "none":
        raise InputError(f"volume.normalize: expected 'l2', 'max' or 'none', got {normalize!r}")
    basis = SphericalBessel(L, ell_max)
    coef = basis.expand(raw)
    truth = basis.evaluate(coef)
    err = float(np.linalg.norm(truth - raw) / np.linalg.norm(raw))
    log.info(
        "volume %s: L=%d voxel %.3f Å, basis ell_max=%d size=%d, expansion error %.4f",
        source,
        L,
        vs,
        basis.ell_max,
        basis.size,
        err,
    )
    return PreparedVolume(
        raw=raw, truth=truth, coef=coef, voxel_size=vs, ell_max=int(basis.ell_max), expansion_error=err
    )
