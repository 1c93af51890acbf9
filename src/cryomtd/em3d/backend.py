"""Array backends for the EM hot paths: numpy (CPU) and torch (CPU or CUDA).

The E- and M-step kernels are written once against the small namespace below
(real 2-D FFTs over the last two axes, batched matmul, einsum, log-sum-exp);
the backend is chosen once at the edge with the names of :mod:`cryomtd.backend`
(``backend="auto"`` picks ``torch-cuda`` when torch sees a GPU, else ``numpy``;
``cupy`` is not supported here). Log-likelihoods and their log-sum-exp are always float64;
``dtype`` only sets the precision of the FFT cross-correlations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import scipy.special

from cryomtd.backend import resolve
from cryomtd.io import InputError

try:  # ducc0's FFT is ~2× pocketfft's (scipy.fft) on the small batched 2-D transforms of the E-step
    import ducc0
except ImportError:  # pragma: no cover - a listed dependency; scipy.fft gives the same numbers
    ducc0 = None

__all__ = ["Backend", "SUPPORTED", "get_backend", "rfft2", "irfft2", "FFT_LIBRARY"]

#: The library behind the numpy backend's FFTs: ``"ducc0"`` when importable, else ``"scipy"``.
FFT_LIBRARY = "scipy" if ducc0 is None else "ducc0"


def rfft2(a: np.ndarray, workers: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """numpy real FFT over the last two axes (unnormalised forward), ducc0 or scipy.fft."""
    if ducc0 is not None:
        return ducc0.fft.r2c(a, axes=(a.ndim - 2, a.ndim - 1), nthreads=workers, out=out)
    res = scipy.fft.rfft2(a, axes=(-2, -1), workers=workers)
    if out is None:
        return res
    out[...] = res
    return out


def irfft2(
    a: np.ndarray, shape: tuple[int, int], workers: int = 1, out: np.ndarray | None = None, overwrite: bool = False
) -> np.ndarray:
    """Inverse of :func:`rfft2` (divided by n²) giving real arrays whose last two axes have ``shape``
    (the second-to-last axis of ``a`` has ``shape[0]`` entries); ``overwrite`` lets it clobber ``a``."""
    if ducc0 is not None and a.shape[-2] == shape[0]:
        return ducc0.fft.c2r(
            a,
            axes=(a.ndim - 2, a.ndim - 1),
            lastsize=shape[1],
            forward=False,
            inorm=2,
            nthreads=workers,
            out=out,
            allow_overwriting_input=overwrite,
        )
    res = scipy.fft.irfft2(a, s=shape, axes=(-2, -1), workers=workers, overwrite_x=overwrite)
    if out is None:
        return res
    out[...] = res
    return out


#: The backend names EM runs on (:data:`cryomtd.backend.CONCRETE` without ``cupy``).
SUPPORTED = ("numpy", "torch-cpu", "torch-cuda")


@dataclass(frozen=True)
class Backend:
    """A numpy or torch array namespace with the few operations EM needs.

    ``name`` is the library, ``"numpy"`` or ``"torch"``; ``device`` is ``"cpu"`` or ``"cuda"``
    (:attr:`label` is the backend name of :mod:`cryomtd.backend`);
    ``dtype`` (``"float64"`` or ``"float32"``) is the precision of the FFT products.
    """

    name: str
    device: str = "cpu"
    dtype: str = "float64"
    workers: int = 1

    @property
    def label(self) -> str:
        """``"numpy"``, ``"torch-cpu"`` or ``"torch-cuda"``."""
        return "numpy" if self.name == "numpy" else f"torch-{self.device}"

    # ---- conversion -------------------------------------------------------------
    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        dtype = dtype or self.dtype
        if self.name == "numpy":
            return np.asarray(a, dtype=dtype)
        import torch

        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=getattr(torch, dtype))
        return torch.as_tensor(np.asarray(a), dtype=getattr(torch, dtype), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.name == "numpy":
            return np.asarray(a)
        return a.detach().cpu().numpy()

    def zeros(self, shape: tuple[int, ...], dtype: str | None = None) -> Any:
        dtype = dtype or self.dtype
        if self.name == "numpy":
            return np.zeros(shape, dtype=dtype)
        import torch

        return torch.zeros(shape, dtype=getattr(torch, dtype), device=self.device)

    # ---- kernels ----------------------------------------------------------------
    def rfft2(self, a: Any) -> Any:
        """Real FFT over the last two axes (unnormalised forward transform)."""
        if self.name == "numpy":
            return rfft2(np.asarray(a), self.workers)
        import torch

        return torch.fft.rfft2(a, dim=(-2, -1))

    def irfft2(self, a: Any, shape: tuple[int, int]) -> Any:
        """Inverse of :meth:`rfft2` giving real arrays whose last two axes have ``shape``."""
        if self.name == "numpy":
            return irfft2(np.asarray(a), shape, self.workers)
        import torch

        return torch.fft.irfft2(a, s=shape, dim=(-2, -1))

    def conj(self, a: Any) -> Any:
        return np.conj(a) if self.name == "numpy" else a.conj()

    def einsum(self, spec: str, *ops: Any) -> Any:
        if self.name == "numpy":
            return np.einsum(spec, *ops, optimize=True)
        import torch

        return torch.einsum(spec, *ops)

    def float64(self, a: Any) -> Any:
        return self.asarray(a, "float64")

    def logsumexp(self, a: Any, axis: tuple[int, ...]) -> Any:
        """log Σ exp over ``axis`` (float64, max-shifted)."""
        if self.name == "numpy":
            return scipy.special.logsumexp(a, axis=axis)
        import torch

        return torch.logsumexp(a, dim=axis)

    def exp(self, a: Any) -> Any:
        return np.exp(a) if self.name == "numpy" else a.exp()

    def sum(self, a: Any, axis: int | tuple[int, ...]) -> Any:
        return a.sum(axis=axis) if self.name == "numpy" else a.sum(dim=axis)

    def sync(self) -> None:
        """Wait for queued device work (for timings)."""
        if self.name == "torch" and self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def get_backend(
    backend: str = "auto", dtype: str = "float64", workers: int = 1, what: str = "em.advanced.backend"
) -> Backend:
    """Resolve a backend name of :data:`cryomtd.backend.NAMES` to a :class:`Backend`.

    ``"auto"`` gives ``torch-cuda`` when PyTorch sees a GPU, else ``numpy``; ``torch-cpu`` and
    ``torch-cuda`` are PyTorch on that device. ``cupy`` is not supported by EM. Errors
    (:class:`~cryomtd.io.InputError`) name the setting ``what``; ``torch-cuda`` without a GPU
    raises :class:`cryomtd.backend.BackendUnavailable` (also a ``RuntimeError``).
    """
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    name = resolve(backend, what, supported=SUPPORTED)
    if name == "numpy":
        return Backend("numpy", "cpu", dtype, workers)
    return Backend("torch", "cuda" if name == "torch-cuda" else "cpu", dtype, workers)
