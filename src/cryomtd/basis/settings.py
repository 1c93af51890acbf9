"""Settings of the spherical-Bessel basis: the ``basis`` config block
(schema ``workflow/schemas/basis.schema.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryomtd.settings import from_block

__all__ = ["BasisSettings"]


@dataclass(frozen=True)
class BasisSettings:
    """``ell_max``: highest angular degree (None = the sampling criterion of the box L)."""

    ell_max: int | None = None

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "basis") -> BasisSettings:
        return from_block(cls, block, where)
