"""Contrast transfer function of the microscope (astigmatic), applied per micrograph, and
grouping of micrographs by defocus.

Formula (the one place it is written; docs/simulation.md, RELION conventions):

    λ(V)  = h / sqrt(2 m e V (1 + e V / (2 m c²)))         Å, V = accelerating voltage (CODATA)
    Δf(θ) = ½(Δu + Δv) + ½(Δu − Δv) cos 2(θ − θ_a)         Å, θ = direction of the frequency
                                                            from the x axis, θ_a = defocus angle
    χ(s)  = π λ Δf(θ) s² − (π/2) C_s λ³ s⁴                 Δf > 0 is under-focus, C_s in Å
    CTF(s) = −( sqrt(1 − A²) · sin χ(s) + A · cos χ(s) ) · exp(−B s² / 4)

with s the spatial frequency in 1/Å (components (s_x, s_y)), A the amplitude contrast and
B the B-factor (Å²) of the envelope (RELION's ``rlnCtfBfactor``: positive dampens,
negative, as CTF refinement writes relative to a reference, sharpens). The sign makes a
positive density appear dark at low frequency (CTF(0) = −A), as in RELION.
Δu = ``defocus``, Δv = ``defocus_v`` (None: = Δu, no astigmatism),
θ_a = ``defocus_angle`` (degrees, from x towards y), as RELION's ``rlnDefocusU/V/Angle``.

A CTF is real and even (CTF(−s) = CTF(s)), so filtering keeps images real. Its real-space
kernel spreads the frequency s of a particle over a radius (1/2π)|dχ/ds| = |λΔf s − C_s λ³ s³|
(Å; :meth:`CTF.delocalisation`): at 300 kV, 2.5 µm and 1/8 Å⁻¹ that is ≈ 60 Å.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cryomtd.io import InputError

__all__ = [
    "CTF",
    "CtfGroup",
    "electron_wavelength",
    "apply_ctf",
    "group_ctfs",
    "ctf_from_dict",
    "GROUP_PHASE_ERROR",
    "CtfGroupTable",
    "CtfTable",
    "read_ctf_star",
    "ctf_group_table",
]

#: Default largest phase error (radians, at Nyquist) of a member's CTF against its group's.
GROUP_PHASE_ERROR = 0.5


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    from scipy import constants as c

    v = 1e3 * float(voltage_kv)
    return c.h / math.sqrt(2 * c.m_e * c.e * v * (1 + c.e * v / (2 * c.m_e * c.c**2))) * 1e10


@dataclass(frozen=True)
class CTF:
    """CTF parameters: defocus U Å (> 0 under-focus), defocus V Å (None = U), defocus angle
    degrees, voltage kV, Cs mm, amplitude contrast, B-factor Å², and ``gain``: an optional
    radial filter (frequencies 1/Å, gains; linear in |s|, constant beyond the ends) that
    multiplies the CTF — the whitening filter of a prepared micrograph, so that the CTF of
    a side file is the whole transfer from the molecule to the prepared image."""

    defocus: float
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    b_factor: float = 0.0
    defocus_v: float | None = None
    defocus_angle: float = 0.0
    gain: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if self.gain is not None:
            f, g = (tuple(float(v) for v in part) for part in self.gain)
            if len(f) != len(g) or not f or np.any(np.diff(f) <= 0) or not np.all(np.isfinite(g)):
                raise InputError("ctf.gain: expected (frequencies increasing, gains) of equal length")
            object.__setattr__(self, "gain", (f, g))
        if not self.voltage > 0:
            raise InputError(f"ctf.voltage: expected > 0 kV, got {self.voltage}")
        if not 0 <= self.amplitude_contrast < 1:
            raise InputError(f"ctf.amplitude_contrast: expected in [0, 1), got {self.amplitude_contrast}")
        if self.cs < 0:
            raise InputError(f"ctf.cs: expected ≥ 0 mm, got {self.cs}")
        for key in ("defocus", "defocus_v", "defocus_angle", "voltage", "cs", "b_factor"):
            v = getattr(self, key)
            if v is not None and not math.isfinite(v):
                raise InputError(f"ctf.{key}: expected a finite number, got {v}")

    @property
    def wavelength(self) -> float:
        """Electron wavelength λ in Å."""
        return electron_wavelength(self.voltage)

    @property
    def astigmatic(self) -> bool:
        return self.defocus_v is not None and self.defocus_v != self.defocus

    @property
    def mean_defocus(self) -> float:
        """½(Δu + Δv), Å."""
        return 0.5 * (self.defocus + (self.defocus if self.defocus_v is None else self.defocus_v))

    def defocus_at(self, theta: np.ndarray) -> np.ndarray:
        """Δf(θ) (Å) along frequency directions θ (radians from x towards y)."""
        dv = self.defocus if self.defocus_v is None else self.defocus_v
        return 0.5 * (self.defocus + dv) + 0.5 * (self.defocus - dv) * np.cos(
            2.0 * (np.asarray(theta, dtype=np.float64) - math.radians(self.defocus_angle))
        )

    def at(self, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
        """CTF at frequency components ``(sy, sx)`` (1/Å, broadcast together)."""
        sy, sx = np.broadcast_arrays(np.asarray(sy, dtype=np.float64), np.asarray(sx, dtype=np.float64))
        s2 = sx * sx + sy * sy
        lam = self.wavelength
        defocus = self.defocus_at(np.arctan2(sy, sx)) if self.astigmatic else self.defocus
        cs_a = self.cs * 1e7  # mm → Å
        chi = math.pi * lam * defocus * s2 - 0.5 * math.pi * cs_a * lam**3 * s2**2
        a = self.amplitude_contrast
        out = -(math.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * np.exp(-self.b_factor * s2 / 4)
        return out if self.gain is None else out * np.interp(np.sqrt(s2), *self.gain)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """CTF at radial frequencies ``s`` (1/Å, any shape) along the x axis (θ = 0)."""
        return self.at(np.zeros_like(np.asarray(s, dtype=np.float64)), s)

    def on_grid(self, shape: tuple[int, int], pixel_size: float, *, real: bool = False) -> np.ndarray:
        """CTF on the ``numpy.fft.fft2`` frequency grid (``real``: ``rfft2``) of an image of
        ``shape`` [y, x] with ``pixel_size`` Å; shape ``shape`` (or [ny, nx//2+1])."""
        fy = np.fft.fftfreq(shape[0], d=pixel_size)[:, None]
        fx = (np.fft.rfftfreq if real else np.fft.fftfreq)(shape[1], d=pixel_size)[None, :]
        return self.at(fy, fx)

    def delocalisation(self, pixel_size: float, s_max: float | None = None) -> float:
        """Largest real-space spread (1/2π)|dχ/ds| = |λΔf s − C_s λ³ s³| over s ≤ ``s_max``
        (1/Å; None = Nyquist 1/(2·pixel)) and every direction, in **pixels**."""
        s_max = 0.5 / pixel_size if s_max is None else float(s_max)
        s = np.linspace(0.0, s_max, 512)
        lam, cs_a = self.wavelength, self.cs * 1e7
        dv = self.defocus if self.defocus_v is None else self.defocus_v
        spread = max(np.abs(lam * d * s - cs_a * lam**3 * s**3).max() for d in (self.defocus, dv))
        return float(spread / pixel_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gain"] = None if self.gain is None else [list(self.gain[0]), list(self.gain[1])]
        return d


def ctf_from_dict(block: dict | None, where: str = "ctf") -> CTF | None:
    """A :class:`CTF` from its ``to_dict`` form (the side file's ``ctf``); None stays None.
    Unknown keys or a missing defocus → :class:`~cryomtd.io.InputError` naming ``where``."""
    if block is None:
        return None
    if not isinstance(block, dict) or "defocus" not in block:
        raise InputError(f"{where}: expected a mapping with at least 'defocus' (Å), got {block!r}")
    known = set(CTF.__dataclass_fields__)
    extra = sorted(set(block) - known)
    if extra:
        raise InputError(f"{where}: unknown CTF key(s) {extra}; expected some of {sorted(known)}")
    params = {k: (None if v is None else float(v)) for k, v in block.items() if k != "gain"}
    gain = block.get("gain")
    try:
        return CTF(**params, gain=None if gain is None else (tuple(gain[0]), tuple(gain[1])))
    except (TypeError, IndexError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def apply_ctf(image: np.ndarray, ctf: CTF, pixel_size: float) -> np.ndarray:
    """Filter a [y, x] image by the CTF (periodic convolution via the FFT); returns float64."""
    image = np.asarray(image, dtype=np.float64)
    f = np.fft.rfft2(image)
    return np.fft.irfft2(f * ctf.on_grid(image.shape, pixel_size, real=True), s=image.shape)


# --------------------------------------------------------------------------- grouping by defocus
@dataclass(frozen=True)
class CtfGroup:
    """Micrographs sharing one CTF in the models: the representative ``ctf`` (members' mean
    defocus U/V, angle of the first member; other parameters must agree), the member
    indices into the list given to :func:`group_ctfs`, and ``phase_error``, the largest
    |Δχ| (radians) at ``s_max`` between a member's CTF and the representative."""

    ctf: CTF
    members: tuple[int, ...]
    phase_error: float


def _phase_gap(a: CTF, b: CTF, s_max: float) -> float:
    """max over directions of |χ_a − χ_b| at s_max (radians); same voltage and Cs assumed."""
    theta = np.linspace(0.0, math.pi, 181)
    return float(math.pi * a.wavelength * s_max**2 * np.abs(a.defocus_at(theta) - b.defocus_at(theta)).max())


def _mean_gain(ctfs: Sequence[CTF]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The members' mean gain on the first gain's frequencies (None when no member has one)."""
    gains = [c.gain for c in ctfs if c.gain is not None]
    if not gains:
        return None
    f = np.asarray(gains[0][0])
    mean = np.mean([np.interp(f, *(c.gain or ((0.0,), (1.0,)))) for c in ctfs], axis=0)
    return tuple(f.tolist()), tuple(mean.tolist())


def _optics(c: CTF) -> tuple[float, float, float, float]:
    return (c.voltage, c.cs, c.amplitude_contrast, c.b_factor)


def group_ctfs(ctfs: Sequence[CTF], pixel_size: float, max_phase_error: float = GROUP_PHASE_ERROR) -> list[CtfGroup]:
    """Micrographs grouped so that each member's CTF is within ``max_phase_error`` radians
    of its group's at Nyquist (1/(2·pixel_size)), in every direction.

    Greedy over increasing mean defocus within each set of equal optics (voltage, Cs,
    amplitude contrast, B-factor): a group takes micrographs while every member stays
    within the tolerance of the members' mean; deterministic (ties by index). The error a
    group makes is reported per group (``phase_error``); |ΔCTF| ≤ |Δχ| at every frequency,
    and ≤ |Δχ|·(s/s_max)² below s_max.
    """
    if not max_phase_error >= 0:
        raise InputError(f"ctf grouping: max_phase_error must be ≥ 0 radians, got {max_phase_error}")
    s_max = 0.5 / float(pixel_size)
    order = sorted(range(len(ctfs)), key=lambda i: (_optics(ctfs[i]), ctfs[i].mean_defocus, i))

    def representative(members: list[int]) -> CTF:
        first = ctfs[members[0]]
        u = float(np.mean([ctfs[i].defocus for i in members]))
        v = float(np.mean([ctfs[i].defocus if ctfs[i].defocus_v is None else ctfs[i].defocus_v for i in members]))
        return CTF(
            defocus=u,
            voltage=first.voltage,
            cs=first.cs,
            amplitude_contrast=first.amplitude_contrast,
            b_factor=first.b_factor,
            defocus_v=None if all(ctfs[i].defocus_v is None for i in members) else v,
            defocus_angle=first.defocus_angle,
            gain=_mean_gain([ctfs[i] for i in members]),
        )

    def error(members: list[int], rep: CTF) -> float:
        return max(_phase_gap(ctfs[i], rep, s_max) for i in members)

    groups: list[CtfGroup] = []

    def close(members: list[int]) -> None:
        if members:
            rep = representative(members)
            groups.append(CtfGroup(rep, tuple(sorted(members)), error(members, rep)))

    current: list[int] = []
    for i in order:
        if current and _optics(ctfs[i]) == _optics(ctfs[current[0]]):
            trial = current + [i]
            rep = representative(trial)
            if error(trial, rep) <= max_phase_error:
                current = trial
                continue
        close(current)
        current = [i]
    close(current)
    return groups


# --------------------------------------------------------------------------- the experiment's CTF groups file
@dataclass(frozen=True)
class CtfGroupTable:
    """The CTF groups of an experiment's micrographs (``results/<exp>/ctf_groups.json``), the
    one input through which both estimators see the microscope.

    ``pixel_size`` Å of the prepared micrographs; ``names`` the micrograph names (k of
    ``micrographs/{k}``) in the estimators' order; ``groups`` (empty: no CTF is modelled,
    because the data have none or ``ctf: ignore``); ``weights[g]`` the fraction of the
    micrographs' pixels in group g (the moments of the set are the weighted mixture);
    ``group_of[i]`` the group of micrograph ``names[i]`` (−1 when ``groups`` is empty);
    ``mode`` ``model`` or ``ignore``; ``max_phase_error`` the grouping tolerance (radians at
    Nyquist).
    """

    pixel_size: float
    names: tuple[str, ...]
    groups: tuple[CtfGroup, ...]
    weights: tuple[float, ...]
    group_of: tuple[int, ...]
    mode: str = "model"
    max_phase_error: float = GROUP_PHASE_ERROR

    @property
    def modelled(self) -> bool:
        return len(self.groups) > 0

    def ctf_of(self, name: str) -> CTF | None:
        """The group CTF the models use for micrograph ``name`` (None: no CTF modelled)."""
        g = self.group_of[self.names.index(str(name))]
        return None if g < 0 else self.groups[g].ctf

    def to_dict(self) -> dict:
        return {
            "pixel_size": self.pixel_size,
            "mode": self.mode,
            "max_phase_error": self.max_phase_error,
            "names": list(self.names),
            "group_of": list(self.group_of),
            "groups": [
                {"ctf": g.ctf.to_dict(), "members": list(g.members), "phase_error": g.phase_error, "weight": w}
                for g, w in zip(self.groups, self.weights, strict=True)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "ctf_groups") -> CtfGroupTable:
        try:
            groups = tuple(
                CtfGroup(ctf_from_dict(g["ctf"], f"{where}.groups[{i}].ctf"), tuple(g["members"]), g["phase_error"])
                for i, g in enumerate(d["groups"])
            )
            return cls(
                pixel_size=float(d["pixel_size"]),
                names=tuple(str(n) for n in d["names"]),
                groups=groups,
                weights=tuple(float(g["weight"]) for g in d["groups"]),
                group_of=tuple(int(i) for i in d["group_of"]),
                mode=str(d.get("mode", "model")),
                max_phase_error=float(d.get("max_phase_error", GROUP_PHASE_ERROR)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: not a CTF group table ({exc!r})") from None

    def save(self, path) -> None:
        from cryomtd.io import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> CtfGroupTable:
        from cryomtd.io import read_json

        return cls.from_dict(read_json(path), where=str(path))


def ctf_group_table(
    infos: Sequence[dict],
    names: Sequence[str],
    *,
    mode: str = "model",
    max_phase_error: float = GROUP_PHASE_ERROR,
) -> CtfGroupTable:
    """The :class:`CtfGroupTable` of micrographs from their side files ``infos`` (keys
    ``ctf`` (a CTF dict or None), ``pixel_size`` Å, ``size`` [ny, nx] or the side).

    ``mode`` ``ignore`` (or no micrograph with a CTF) gives an empty table. Micrographs with
    a CTF and without one cannot be mixed (an error naming one of each); nor can pixel sizes
    differ by more than 1e-4 relative.
    """
    if mode not in ("model", "ignore"):
        raise InputError(f"ctf: expected 'model' or 'ignore', got {mode!r}")
    if len(infos) != len(names) or not names:
        raise InputError(f"ctf groups: expected one side file per micrograph, got {len(infos)} for {len(names)}")
    pixels = [float(i.get("pixel_size") or 1.0) for i in infos]
    if max(pixels) - min(pixels) > 1e-4 * max(pixels):
        raise InputError(f"ctf groups: micrographs at different pixel sizes {sorted(set(pixels))} Å")
    ctfs = [ctf_from_dict(i.get("ctf"), f"micrograph {n}: ctf") for i, n in zip(infos, names, strict=True)]
    have = [c is not None for c in ctfs]
    names = tuple(str(n) for n in names)
    if mode == "ignore" or not any(have):
        return CtfGroupTable(pixels[0], names, (), (), (-1,) * len(names), mode, max_phase_error)
    if not all(have):
        with_, without = names[have.index(True)], names[have.index(False)]
        raise InputError(
            f"ctf groups: micrograph {with_} has a CTF and micrograph {without} has none; "
            "expected a CTF for every micrograph or for none"
        )
    groups = tuple(group_ctfs(ctfs, pixels[0], max_phase_error))
    npix = np.array([float(np.prod(np.broadcast_to(i.get("size") or 1, (2,)))) for i in infos])  # side or [ny, nx]
    weights = tuple(float(npix[list(g.members)].sum() / npix.sum()) for g in groups)
    group_of = [-1] * len(names)
    for gi, g in enumerate(groups):
        for m in g.members:
            group_of[m] = gi
    return CtfGroupTable(pixels[0], names, groups, weights, tuple(group_of), mode, max_phase_error)


# --------------------------------------------------------------------------- RELION STAR input
_OPTICS_REQUIRED = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
_MICROGRAPH_REQUIRED = ("rlnMicrographName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")


def _stem(name: str) -> str:
    base = os.path.basename(str(name).replace("\\", "/"))
    return base.rsplit(".", 1)[0] if "." in base else base


@dataclass(frozen=True)
class CtfTable:
    """Per-micrograph CTFs of a RELION 3.1+ STAR file (:func:`read_ctf_star`): ``ctfs`` keyed
    by the micrograph's file name without folder and extension, and the optics' pixel size
    (Å, None when the file has none)."""

    path: str
    ctfs: dict[str, CTF]
    pixel_size: float | None

    def for_files(self, files: Sequence[str]) -> list[CTF]:
        """The CTF of each micrograph file, matched by file name without folder and extension;
        a file without a row → :class:`~cryomtd.io.InputError` listing the first missing ones."""
        stems = [_stem(f) for f in files]
        missing = [f for f, s in zip(files, stems, strict=True) if s not in self.ctfs]
        if missing:
            shown = ", ".join(os.path.basename(f) for f in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise InputError(
                f"{self.path}: no rlnMicrographName row for {shown}{more} (of {len(files)} micrographs); "
                "expected one data_micrographs row per micrograph, matched by file name without folder and extension"
            )
        return [self.ctfs[s] for s in stems]


def read_ctf_star(path: str | os.PathLike) -> CtfTable:
    """The CTFs of a RELION 3.1+ micrograph STAR file (``data_optics`` + ``data_micrographs``).

    Optics: ``rlnVoltage`` (kV), ``rlnSphericalAberration`` (mm), ``rlnAmplitudeContrast``,
    the pixel size from ``rlnMicrographPixelSize`` or ``rlnImagePixelSize`` (optional),
    ``rlnOpticsGroup`` (needed when there is more than one optics row). Micrographs:
    ``rlnMicrographName``, ``rlnDefocusU``, ``rlnDefocusV`` (Å), ``rlnDefocusAngle``
    (degrees), optional ``rlnCtfBfactor`` (Å², the envelope exp(−B s²/4), RELION's sign) and
    ``rlnOpticsGroup``. A non-zero
    ``rlnPhaseShift`` (phase plate) is refused. Read with ``starfile``; every missing table
    or column is an :class:`~cryomtd.io.InputError` naming the file and what was expected.
    """
    import starfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: CTF STAR file not found (data.ctf)")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises varied errors on malformed input
        raise InputError(f"{path}: not a readable STAR file ({exc})") from None
    for block in ("optics", "micrographs"):
        if block not in blocks or not hasattr(blocks[block], "columns"):
            raise InputError(
                f"{path}: no data_{block} table; expected a RELION 3.1+ micrograph STAR file "
                "(data_optics and data_micrographs loops, as written by CtfFind/Gctf jobs)"
            )
    optics, mics = blocks["optics"], blocks["micrographs"]
    for table, cols, block in ((optics, _OPTICS_REQUIRED, "optics"), (mics, _MICROGRAPH_REQUIRED, "micrographs")):
        absent = [c for c in cols if c not in table.columns]
        if absent:
            raise InputError(f"{path}: data_{block} lacks column(s) {', '.join(absent)}")
    if "rlnPhaseShift" in mics.columns and np.any(np.abs(mics["rlnPhaseShift"].to_numpy(dtype=float)) > 1e-6):
        raise InputError(f"{path}: rlnPhaseShift is non-zero (phase plate); cryomtd models no phase shift")
    pixel_col = next((c for c in ("rlnMicrographPixelSize", "rlnImagePixelSize") if c in optics.columns), None)
    by_group: dict[int, dict] = {}
    for i, row in optics.reset_index(drop=True).iterrows():
        group = int(row["rlnOpticsGroup"]) if "rlnOpticsGroup" in optics.columns else i + 1
        by_group[group] = {
            "voltage": float(row["rlnVoltage"]),
            "cs": float(row["rlnSphericalAberration"]),
            "amplitude_contrast": float(row["rlnAmplitudeContrast"]),
            "pixel": None if pixel_col is None else float(row[pixel_col]),
        }
    if len(by_group) > 1 and "rlnOpticsGroup" not in mics.columns:
        raise InputError(f"{path}: {len(by_group)} optics groups but data_micrographs has no rlnOpticsGroup column")
    ctfs: dict[str, CTF] = {}
    for i, row in mics.reset_index(drop=True).iterrows():
        group = int(row["rlnOpticsGroup"]) if "rlnOpticsGroup" in mics.columns else next(iter(by_group))
        if group not in by_group:
            raise InputError(f"{path}: data_micrographs row {i + 1} names optics group {group}, not in data_optics")
        opt = by_group[group]
        stem = _stem(row["rlnMicrographName"])
        if stem in ctfs:
            raise InputError(f"{path}: micrograph {stem!r} appears twice in data_micrographs")
        b = float(row["rlnCtfBfactor"]) if "rlnCtfBfactor" in mics.columns else 0.0
        try:
            ctfs[stem] = CTF(
                defocus=float(row["rlnDefocusU"]),
                defocus_v=float(row["rlnDefocusV"]),
                defocus_angle=float(row["rlnDefocusAngle"]),
                voltage=opt["voltage"],
                cs=opt["cs"],
                amplitude_contrast=opt["amplitude_contrast"],
                b_factor=b,
            )
        except InputError as exc:
            raise InputError(f"{path}: data_micrographs row {i + 1} ({stem}): {exc}") from None
    pixels = {o["pixel"] for o in by_group.values() if o["pixel"] is not None}
    return CtfTable(path, ctfs, pixels.pop() if len(pixels) == 1 else None)
