"""One set of backend names for the moments engine and EM (cryomtd.backend)."""

from __future__ import annotations

import pytest

from cryomtd import backend as names
from cryomtd.em3d import get_backend
from cryomtd.io import InputError
from cryomtd.moments import resolve_backend


def test_names_are_shared():
    assert names.NAMES == ("auto", "numpy", "torch-cpu", "torch-cuda", "cupy")
    assert [n for n in names.CONCRETE if names.needs_gpu(n)] == ["torch-cuda", "cupy"]
    assert names.available()[0] == "numpy"


def test_auto_picks_a_gpu_only_when_one_is_visible():
    avail = names.available()
    want = "torch-cuda" if "torch-cuda" in avail else "cupy" if "cupy" in avail else "numpy"
    assert names.resolve("auto", "x") == want
    assert resolve_backend("auto").name == want
    # EM has no CuPy path: auto never gives it
    assert names.resolve("auto", "x", supported=("numpy", "torch-cpu", "torch-cuda")) in ("numpy", "torch-cuda")


def test_em_backends_follow_the_same_names():
    pytest.importorskip("torch")
    assert (get_backend("numpy").name, get_backend("numpy").device) == ("numpy", "cpu")
    cpu = get_backend("torch-cpu")
    assert (cpu.name, cpu.device, cpu.label) == ("torch", "cpu", "torch-cpu")
    assert get_backend("auto").label in ("numpy", "torch-cuda")


@pytest.mark.parametrize("name", ["torch", "cuda", "fortran", None])
def test_unknown_names_are_refused_naming_the_setting(name):
    with pytest.raises(InputError, match=r"em\.advanced\.backend: unknown backend") as err:
        get_backend(name)
    assert "auto, numpy, torch-cpu, torch-cuda" in str(err.value)
    with pytest.raises(InputError, match=r"moments\.advanced\.backend: unknown backend"):
        resolve_backend(name)


def test_cupy_is_not_an_em_backend():
    with pytest.raises(InputError, match=r"em\.advanced\.backend: backend 'cupy' is not supported"):
        get_backend("cupy")


def test_a_missing_gpu_is_a_clear_error():
    if "torch-cuda" in names.available():
        pytest.skip("a CUDA device is visible")
    for call in (lambda: get_backend("torch-cuda"), lambda: resolve_backend("torch-cuda")):
        with pytest.raises(names.BackendUnavailable, match="torch-cuda' requested but PyTorch sees no CUDA device"):
            call()
    assert issubclass(names.BackendUnavailable, RuntimeError) and issubclass(names.BackendUnavailable, InputError)
