"""Array-backend names shared by every stage, and the one place ``"auto"`` is resolved.

A backend name is one of :data:`NAMES`:

* ``numpy``: the CPU, always available;
* ``torch-cpu``: PyTorch on the CPU;
* ``torch-cuda``: PyTorch on a CUDA device;
* ``cupy``: CuPy on a CUDA device;
* ``auto``: ``torch-cuda`` when PyTorch sees a CUDA device, else ``cupy`` when CuPy sees
  one (where the stage supports it), else ``numpy``.

Each stage builds its own array namespace from the concrete name :func:`resolve`
returns (:mod:`cryomtd.moments.backends`, :mod:`cryomtd.em3d.backend`), so a config
value means the same thing in the ``moments`` and the ``em`` block.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryomtd.io import InputError

__all__ = ["NAMES", "CONCRETE", "GPU_NAMES", "BackendUnavailable", "available", "needs_gpu", "resolve"]

#: Every accepted backend name, ``auto`` first.
NAMES = ("auto", "numpy", "torch-cpu", "torch-cuda", "cupy")
#: The names :func:`resolve` can return.
CONCRETE = NAMES[1:]
#: The backends that need a CUDA device (a workflow job then asks for ``gpu=1``).
GPU_NAMES = ("torch-cuda", "cupy")

_SUGGEST = {
    "cuda": "torch-cuda or cupy",
    "gpu": "torch-cuda or cupy",
    "torch": "torch-cpu or torch-cuda",
    "cpu": "numpy or torch-cpu",
}


class BackendUnavailable(InputError, RuntimeError):
    """A backend was requested that this machine cannot run (library or CUDA device missing)."""


def _torch_ok() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_cuda_ok() -> bool:
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA runtime counts as no device
        return False


def _cupy_ok() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError or a CUDA runtime error: no usable device
        return False


def available() -> list[str]:
    """The concrete backends usable on this machine, in :data:`CONCRETE` order."""
    out = ["numpy"]
    if _torch_ok():
        out.append("torch-cpu")
    if _torch_cuda_ok():
        out.append("torch-cuda")
    if _cupy_ok():
        out.append("cupy")
    return out


def needs_gpu(name: str) -> bool:
    """True for the backend names that need a CUDA device (``torch-cuda``, ``cupy``)."""
    return name in GPU_NAMES


def resolve(name: str, what: str, supported: Iterable[str] = CONCRETE) -> str:
    """The concrete backend (one of ``supported`` ⊆ :data:`CONCRETE`) that ``name`` stands for here.

    ``what`` names the setting in error messages (``"moments.backend"``). Raises
    :class:`~cryomtd.io.InputError` for a name outside :data:`NAMES` or one the stage does
    not support, and :class:`BackendUnavailable` (an ``InputError`` and a ``RuntimeError``)
    when the library or the CUDA device it needs is missing.
    """
    supported = tuple(s for s in CONCRETE if s in tuple(supported))
    allowed = ("auto", *supported)
    if not isinstance(name, str) or name not in NAMES:
        hint = f" (for {name!r} use {_SUGGEST[name]})" if isinstance(name, str) and name in _SUGGEST else ""
        raise InputError(f"{what}: unknown backend {name!r}; expected one of {', '.join(allowed)}{hint}")
    if name == "auto":
        if "torch-cuda" in supported and _torch_cuda_ok():
            return "torch-cuda"
        if "cupy" in supported and _cupy_ok():
            return "cupy"
        return "numpy"
    if name not in supported:
        raise InputError(
            f"{what}: backend {name!r} is not supported by this stage; expected one of {', '.join(allowed)}"
        )
    if name == "torch-cpu" and not _torch_ok():
        raise BackendUnavailable(f"{what}: backend 'torch-cpu' requested but PyTorch is not installed")
    if name == "torch-cuda" and not _torch_cuda_ok():
        raise BackendUnavailable(
            f"{what}: backend 'torch-cuda' requested but PyTorch sees no CUDA device "
            "(torch.cuda.is_available() is False)"
        )
    if name == "cupy" and not _cupy_ok():
        raise BackendUnavailable(f"{what}: backend 'cupy' requested but CuPy is not installed or sees no CUDA device")
    return name
