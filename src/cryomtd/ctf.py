"""Contrast transfer function of the microscope (isotropic, no astigmatism), applied per micrograph.

Formula (the one place it is written; docs/simulation.md):

    λ(V)  = h / sqrt(2 m e V (1 + e V / (2 m c²)))         Å, V = accelerating voltage (CODATA
                                                            constants; ≈ 12.2643 / sqrt(V + 0.978466e-6 V²))
    χ(s)  = π λ Δf s² − (π/2) C_s λ³ s⁴                    Δf > 0 is under-focus (Å), C_s in Å
    CTF(s) = −( sqrt(1 − A²) · sin χ(s) + A · cos χ(s) ) · exp(−B s² / 4)

with s the spatial frequency in 1/Å, A the amplitude contrast and B the B-factor (Å²)
of the envelope. The sign makes a positive density appear dark at low frequency
(CTF(0) = −A), as in RELION.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from cryomtd.io import InputError

__all__ = ["CTF", "electron_wavelength", "apply_ctf"]


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    from scipy import constants as c

    v = 1e3 * float(voltage_kv)
    return c.h / math.sqrt(2 * c.m_e * c.e * v * (1 + c.e * v / (2 * c.m_e * c.c**2))) * 1e10


@dataclass(frozen=True)
class CTF:
    """Isotropic CTF parameters: defocus Å (> 0 under-focus), voltage kV, Cs mm, amplitude contrast, B-factor Å²."""

    defocus: float
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    b_factor: float = 0.0

    def __post_init__(self) -> None:
        if not self.voltage > 0:
            raise InputError(f"ctf.voltage: expected > 0 kV, got {self.voltage}")
        if not 0 <= self.amplitude_contrast < 1:
            raise InputError(f"ctf.amplitude_contrast: expected in [0, 1), got {self.amplitude_contrast}")
        if self.cs < 0 or self.b_factor < 0:
            raise InputError(f"ctf.cs and ctf.b_factor: expected ≥ 0, got {self.cs}, {self.b_factor}")

    @property
    def wavelength(self) -> float:
        """Electron wavelength λ in Å."""
        return electron_wavelength(self.voltage)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """CTF at spatial frequencies ``s`` (1/Å, any shape)."""
        s2 = np.asarray(s, dtype=np.float64) ** 2
        lam = self.wavelength
        cs_a = self.cs * 1e7  # mm → Å
        chi = math.pi * lam * self.defocus * s2 - 0.5 * math.pi * cs_a * lam**3 * s2**2
        a = self.amplitude_contrast
        return -(math.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * np.exp(-self.b_factor * s2 / 4)

    def on_grid(self, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """CTF on the ``numpy.fft.fft2`` frequency grid of an image of ``shape`` [y, x] with ``pixel_size`` Å."""
        fy = np.fft.fftfreq(shape[0], d=pixel_size)[:, None]
        fx = np.fft.fftfreq(shape[1], d=pixel_size)[None, :]
        return self(np.sqrt(fx**2 + fy**2))

    def to_dict(self) -> dict:
        return asdict(self)


def apply_ctf(image: np.ndarray, ctf: CTF, pixel_size: float) -> np.ndarray:
    """Filter a [y, x] image by the CTF (periodic convolution via the FFT); returns float64."""
    f = np.fft.rfft2(np.asarray(image, dtype=np.float64))
    fy = np.fft.fftfreq(image.shape[0], d=pixel_size)[:, None]
    fx = np.fft.rfftfreq(image.shape[1], d=pixel_size)[None, :]
    return np.fft.irfft2(f * ctf(np.sqrt(fx**2 + fy**2)), s=image.shape)
