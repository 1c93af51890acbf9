"""Every cryomtd module imports with the core dependencies alone (the plain `pip install -e .`).

Optional GPU libraries (cupy, a CUDA build of torch) are only imported when a backend asks
for them; this walks the package and imports each module in a fresh interpreter, so a
module that imports an extra at the top fails here.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import cryomtd


def test_every_module_imports_without_extras():
    names = sorted(
        m.name for m in pkgutil.walk_packages(cryomtd.__path__, "cryomtd.") if not m.name.endswith("__main__")
    )
    assert len(names) > 40
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n" \
           "assert 'cupy' not in sys.modules, 'cupy imported at module level'\n"  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
