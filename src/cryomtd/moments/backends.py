"""Array backends for the autocorrelation engine: numpy, PyTorch (CPU/CUDA), CuPy.

The engine is written once against the array API (``array-api-compat`` namespaces);
this module holds the little that differs per library: moving arrays to and from
the device, the gather that builds the window vectors (``gather`` method), products
(elementwise) into preallocated buffers, and which
backend ``"auto"`` picks (CUDA when a device is present: PyTorch-CUDA, then CuPy;
otherwise numpy; the names and their resolution are those of :mod:`cryomtd.backend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from cryomtd import backend as _names

__all__ = ["Backend", "BACKENDS", "resolve_backend", "available_backends", "is_cuda_backend"]

BACKENDS = _names.CONCRETE


def is_cuda_backend(name: str) -> bool:
    """True for the backends that need a CUDA device (``torch-cuda``, ``cupy``)."""
    return _names.needs_gpu(name)


@dataclass(frozen=True)
class Backend:
    """One array library on one device.

    ``name`` is one of ``BACKENDS``; ``module`` the raw library (numpy, torch, cupy);
    ``xp`` its array-API namespace; ``device`` the device object (or ``None``).
    """

    name: str
    module: Any
    device: Any = None

    @property
    def xp(self) -> Any:
        return array_namespace(self.asarray(np.zeros(1)))

    def dtype(self, name: str) -> Any:
        """The library's dtype object for ``"float32"`` or ``"float64"``."""
        return getattr(self.module, name)

    def asarray(self, a: np.ndarray, dtype: str = "float64") -> Any:
        """Copy a host array to this backend's device with the given dtype."""
        a = np.ascontiguousarray(a, dtype=dtype)
        if self.name.startswith("torch"):
            if not a.flags.writeable:  # torch.from_numpy wants a writable buffer
                a = a.copy()
            return self.module.from_numpy(a).to(self.device)
        if self.name == "cupy":
            return self.module.asarray(a)
        return a

    def zeros(self, shape: tuple[int, ...], dtype: str = "float64") -> Any:
        if self.name.startswith("torch"):
            return self.module.zeros(shape, dtype=self.dtype(dtype), device=self.device)
        return self.module.zeros(shape, dtype=dtype)

    def float64(self, a: Any) -> Any:
        """``a`` as float64 on its device (no copy when it already is)."""
        if self.name.startswith("torch"):
            return a.to(self.module.float64)
        return a.astype("float64", copy=False)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.name.startswith("torch"):
            return a.detach().cpu().numpy()
        if self.name == "cupy":
            return self.module.asnumpy(a)
        return np.asarray(a)

    def gather(self, a: Any, idx: Any) -> Any:
        """``a.ravel()[idx]`` for a C-contiguous array ``a`` and an integer index array ``idx`` on
        this device: one gather builds the whole (n, D²) window-vector matrix (7× faster on
        numpy than a sliding-window view followed by a copy)."""
        if self.name.startswith("torch"):
            return self.module.take(a, idx)
        return self.module.take(a.ravel(), idx)

    def multiply(self, a: Any, b: Any, out: Any) -> Any:
        """``out[...] = a * b`` (broadcasting) without a temporary; ``out`` may be ``a``."""
        if self.name.startswith("torch"):
            return self.module.mul(a, b, out=out)
        return self.module.multiply(a, b, out=out)

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""
        if self.name == "torch-cuda":
            self.module.cuda.synchronize()
        elif self.name == "cupy":
            self.module.cuda.Device().synchronize()


def available_backends() -> list[str]:
    """The backends usable on this machine, in ``BACKENDS`` order."""
    return _names.available()


def resolve_backend(name: str = "auto", what: str = "moments.advanced.backend") -> Backend:
    """A ``Backend`` for ``name`` in :data:`cryomtd.backend.NAMES` (``auto`` or one of ``BACKENDS``).

    ``auto`` → ``torch-cuda`` or ``cupy`` when a CUDA device is usable, else ``numpy``.
    Errors (:class:`~cryomtd.io.InputError`) name the setting ``what``; a backend this
    machine cannot run raises :class:`cryomtd.backend.BackendUnavailable` (also a ``RuntimeError``).
    """
    name = _names.resolve(name, what)
    if name == "numpy":
        return Backend("numpy", np)
    if name == "cupy":
        import cupy

        return Backend(name, cupy)
    import torch

    return Backend(name, torch, torch.device("cuda" if name == "torch-cuda" else "cpu"))
