"""Bases for 3-D volumes: the real spherical-Bessel basis (docs/design.md §5), see docs/basis.md."""

from cryomtd.basis.harmonics import real_sph_harm, real_sph_harm_blocks
from cryomtd.basis.settings import BasisSettings
from cryomtd.basis.spherical_bessel import SphericalBessel, default_ell_max
from cryomtd.basis.wigner import real_wigner

__all__ = [
    "BasisSettings",
    "SphericalBessel",
    "default_ell_max",
    "real_sph_harm",
    "real_sph_harm_blocks",
    "real_wigner",
]
