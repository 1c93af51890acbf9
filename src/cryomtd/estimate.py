"""One result format for every estimator: ``<estimator>.npz`` read by evaluation.

An estimate file holds

* ``estimator`` (str: ``lsq``, ``em``, …), ``coef`` (3-D: spherical-Bessel coefficients,
  shape (basis.size,); 1-D: the signal, shape (L,)), ``gamma`` (density estimate, NaN when
  the estimator gives none);
* ``trace`` (float64, one value per iteration) with ``trace_label`` saying what it is
  (``"least-squares cost"``, ``"log-likelihood per patch"``, …), ``wall_time_s``;
* ``settings`` (JSON text: the settings block that produced it, :func:`cryomtd.settings.to_block`);
* any estimator-specific arrays (``L``, ``ell_max``, ``voxel_size``, ``rho``, ``restart_costs``, …)
  under their own names.

A new estimator is a package that writes this file, a rule and a schema block; the
evaluation stage needs no change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryomtd.io import InputError, read_npz, save_npz

__all__ = ["Estimate", "REQUIRED_KEYS"]

#: Keys every estimate file has.
REQUIRED_KEYS = ("estimator", "coef", "gamma", "trace", "trace_label", "wall_time_s", "settings")


@dataclass
class Estimate:
    """An estimator's result (see the module docstring for the fields and their shapes)."""

    estimator: str
    coef: np.ndarray
    gamma: float
    trace: np.ndarray
    trace_label: str
    wall_time_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (:func:`cryomtd.io.save_npz`)."""
        clash = set(self.extra) & set(REQUIRED_KEYS)
        if clash:
            raise ValueError(f"Estimate.extra must not use the reserved keys {sorted(clash)}")
        save_npz(
            path,
            estimator=np.str_(self.estimator),
            coef=np.asarray(self.coef, dtype=np.float64),
            gamma=np.float64(np.nan if self.gamma is None else self.gamma),
            trace=np.asarray(self.trace, dtype=np.float64).ravel(),
            trace_label=np.str_(self.trace_label),
            wall_time_s=np.float64(self.wall_time_s),
            settings=np.str_(json.dumps(self.settings, sort_keys=True)),
            **self.extra,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, what: str = "estimate file") -> Estimate:
        """Read an estimate file; a missing key raises :class:`~cryomtd.io.InputError` naming the file."""
        z = read_npz(path, REQUIRED_KEYS, what=what)
        try:
            settings = json.loads(str(z["settings"]))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: 'settings' is not JSON ({e})") from None
        extra = {k: v for k, v in z.items() if k not in REQUIRED_KEYS}
        return cls(
            estimator=str(z["estimator"]),
            coef=np.asarray(z["coef"], dtype=np.float64),
            gamma=float(z["gamma"]),
            trace=np.asarray(z["trace"], dtype=np.float64).ravel(),
            trace_label=str(z["trace_label"]),
            wall_time_s=float(z["wall_time_s"]),
            settings=settings,
            extra=extra,
        )
