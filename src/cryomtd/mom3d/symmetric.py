"""A moment model restricted to point-group-symmetric volumes (``lsq.symmetry``).

The fit then runs over the reduced coefficients z (k,) of the symmetric subspace,
c = Q z with Q the orthonormal columns of :func:`cryomtd.basis.symmetry.symmetric_subspace`.
At a symmetric volume the moments are blind, to first order, to every perturbation
outside that subspace (see that module and docs/mom3d.md): for a molecule of known
symmetry the constraint removes those directions instead of leaving the optimiser to
wander along them. Everything the fit uses (moments, box sums, their exact Jacobian)
is the full model's, composed with Q. Q is orthonormal, so ‖z‖ = ‖c‖: the Tikhonov prior
λ‖z‖²/k is λ‖c‖² divided by the number k of fitted coefficients (not by the basis size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cryomtd.basis.symmetry import invariant_blocks, parse_symmetry, subspace_from_blocks

__all__ = ["SymmetricModel"]


class SymmetricModel:
    """``SymmetricModel(model, symbol)``: ``model`` (a :class:`~cryomtd.mom3d.model.MomentModel`)
    seen as a function of the reduced coefficients z (k,) of the ``symbol``-symmetric volumes.

    ``size`` is k; :meth:`full` maps z to the basis coefficients (``model.size``,); ``Q``
    (model.size, k) is the map. Other attributes (W, L, ell_max, kind, …) are the model's.
    """

    def __init__(self, model: Any, symbol: str) -> None:
        self.inner = model
        self.symmetry = parse_symmetry(symbol)
        angular = invariant_blocks(model.basis, self.symmetry)  # the group's Wigner matrices, once
        Q = subspace_from_blocks(model.basis, angular)
        if Q.shape[1] == 0:
            raise ValueError(
                f"no {self.symmetry}-symmetric volume has a nonzero coefficient up to ell_max "
                f"{model.ell_max}; raise basis.ell_max or check lsq.symmetry"
            )
        self.Q = torch.from_numpy(np.ascontiguousarray(Q))
        self.size = int(Q.shape[1])
        self.angular = [torch.from_numpy(np.ascontiguousarray(V)) for V in angular]
        # degree triples whose invariants vanish on these volumes (skipped by the Jacobian)
        self.active = model.active_triples(self.angular) if getattr(model, "kind", None) == "invariants" else None

    def __getattr__(self, name: str) -> Any:  # W, L, ell_max, kind, dense_to_orbit, basis, …
        if name == "inner":  # not yet set (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def full(self, z: torch.Tensor) -> torch.Tensor:
        """Basis coefficients c = Q z (model.size,) of reduced coefficients z (k,)."""
        return self.Q @ z

    def moments(
        self, z: torch.Tensor, gamma: torch.Tensor | float, sigma: float = 0.0, *, third: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self.inner.moments(self.full(z), gamma, sigma, third=third)

    def box_moments(
        self, z: torch.Tensor, *, third: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self.inner.box_moments(self.full(z), third=third)

    def box_jacobian(self, z: torch.Tensor, *, single: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The full model's exact Jacobians times Q: ∂m/∂z = (∂m/∂c) Q, with Q's per-ℓ angular
        factors applied inside the invariant model's contraction (fewer columns to form)."""
        return self.inner.box_jacobian(self.full(z), angular=self.angular, active=self.active, single=single)

    def numpy(self, z: np.ndarray, gamma: float, sigma: float = 0.0) -> Any:
        return self.inner.numpy(self.Q.numpy() @ np.asarray(z, dtype=np.float64), gamma, sigma)
