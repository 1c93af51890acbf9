"""Per-rule conda environments (envs/*.yaml) and the workflow's lint status.

conda channels are not reachable from the test machines, so the environments are
checked statically: every rule names an existing env of the five kinds in
docs/conventions.md, every env pins exact conda-forge versions that satisfy
pyproject.toml, and every third-party module a rule's script needs at import time
(followed through the cryomtd modules it imports) is installed by that rule's env.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "workflow" / "rules"
ENVS = REPO / "envs"
ENV_KINDS = {"simulate", "moments", "optimize", "em", "evaluate"}  # docs/conventions.md

# conda-forge name -> PyPI name, where they differ
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib", "cupy": "cupy-cuda12x"}
# import name -> conda-forge package that provides it
IMPORT_TO_CONDA = {
    "yaml": "pyyaml",
    "torch": "pytorch",
    "matplotlib": "matplotlib-base",
    "mpl_toolkits": "matplotlib-base",  # shipped inside matplotlib
    "array_api_compat": "array-api-compat",
    "quaternionic": "spherical",  # installed as a dependency of spherical
    "numba": "spherical",
}
# packages an env may hold although pyproject.toml does not list them
TOOLING = {"python", "pip", "setuptools"}
# array backends chosen at run time (backend="auto"): optional in every env
OPTIONAL_IMPORTS = {"torch", "cupy"}
# deferred imports (inside functions) that a rule's stage does run
DEFERRED_NEEDS = {
    "prepare_volume": {"gemmi"},  # atomic models -> density
    "simulate_micrograph": {"starfile"},  # particle tables
    "mtd1d_lsq": {"pymanopt"},
    "recover_lsq": {"pymanopt"},
    "mtd1d_evaluate": {"matplotlib-base"},
    "evaluate": {"matplotlib-base"},
}
# provided by the Snakemake script preamble, not by the env
PREAMBLE_IMPORTS = {"snakemake"}


def rule_blocks() -> list[tuple[Path, str, str]]:
    """(rule file, rule name, rule body text) for every rule/checkpoint in workflow/rules."""
    blocks = []
    head = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        for m in head.finditer(text):
            rest = text[m.end() :]
            end = re.search(r"^\S", rest, re.M)  # next top-level statement
            blocks.append((smk, m.group(1), rest[: end.start()] if end else rest))
    return blocks


def directive(body: str, name: str) -> str | None:
    """The string argument of a rule directive (same line or the next), or None."""
    m = re.search(rf"^\s+{name}:\s*(?:\n\s*)?(?:f?)[\"']([^\"']+)[\"']", body, re.M)
    return m.group(1) if m else None


def parse_env(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a YAML mapping"
    return data


def pinned(env: dict) -> dict[str, str]:
    """{conda package: version} of an env's conda dependencies (pip sections excluded)."""
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, _, version = re.match(r"^([A-Za-z0-9_.\-]+)\s*(==?)?\s*(.*)$", dep).groups()
            out[name] = version
    return out


def pyproject_requirements() -> dict[str, Requirement]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = list(meta["project"]["dependencies"]) + list(meta["build-system"]["requires"])
    for extra in meta["project"].get("optional-dependencies", {}).values():
        reqs += extra
    out: dict[str, Requirement] = {}
    for r in map(Requirement, reqs):
        key = r.name.lower()
        if key in out:  # several lines for one package: all must hold
            out[key].specifier &= r.specifier
        else:
            out[key] = r
    return out


def module_file(module: str) -> Path | None:
    """The source file of a cryomtd module, or None if it is not one."""
    parts = module.split(".")
    if parts[0] != "cryomtd":
        return None
    base = REPO / "src" / Path(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _kind(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    """'optional' (TYPE_CHECKING or try/except ImportError), 'deferred' (inside a function) or 'eager'."""
    p = parents.get(node)
    kind = "eager"
    while p is not None:
        if isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test):
            return "optional"
        if isinstance(p, ast.Try) and any(
            h.type is not None and re.search(r"ImportError|ModuleNotFoundError|Exception", ast.unparse(h.type))
            for h in p.handlers
        ):
            return "optional"
        if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind = "deferred"
        p = parents.get(p)
    return kind


def import_closure(script: Path) -> dict[str, set[str]]:
    """Third-party top-level modules a script imports, by kind (eager/deferred/optional), following cryomtd.

    Eager imports happen when the script starts, so the rule's env must hold them. A
    deferred import (inside a function) is needed only if that function runs; which ones
    a rule runs is stated per rule in DEFERRED_NEEDS rather than guessed.
    """
    found: dict[str, set[str]] = {"eager": set(), "deferred": set(), "optional": set()}
    seen: set[Path] = set()
    todo = [(script, "")]
    while todo:
        path, pkg = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), str(path))
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import inside cryomtd
                    base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                f = module_file(name)
                if f is not None:  # a cryomtd module: follow it (its package for relative imports)
                    todo.append((f, name if f.name == "__init__.py" else name.rsplit(".", 1)[0]))
                elif top and top != "cryomtd" and top not in sys.stdlib_module_names:
                    found[_kind(node, parents)].add(top)
    found["deferred"] -= found["eager"]
    found["optional"] -= found["eager"] | found["deferred"]
    return found


ENV_FILES = sorted(ENVS.glob("*.yaml"))
RULE_PARAMS = [pytest.param(f, r, b, id=r) for f, r, b in rule_blocks()]


def test_env_files_are_the_five_kinds():
    assert {p.stem for p in ENV_FILES} == ENV_KINDS


@pytest.mark.parametrize("rule_file,rule,body", RULE_PARAMS)
def test_rule_has_conda_env_that_exists(rule_file, rule, body):
    conda = directive(body, "conda")
    assert conda, f"{rule_file.name}: rule {rule} has no conda: directive"
    env = (rule_file.parent / conda).resolve()
    assert env.is_file(), f"{rule_file.name}: rule {rule}: conda env {conda} does not exist"
    assert env.parent == ENVS and env.stem in ENV_KINDS, f"rule {rule}: {conda} is not one of envs/{ENV_KINDS}"


@pytest.mark.parametrize("rule_file,rule,body", RULE_PARAMS)
def test_rule_env_provides_script_imports(rule_file, rule, body):
    script, conda = directive(body, "script"), directive(body, "conda")
    if script is None or conda is None:
        pytest.skip(f"rule {rule} has no script: or conda: directive")
    script_path = (rule_file.parent / script).resolve()
    assert script_path.is_file(), f"rule {rule}: script {script} missing"
    eager = import_closure(script_path)["eager"]
    have = set(pinned(parse_env((rule_file.parent / conda).resolve())))
    needed = {IMPORT_TO_CONDA.get(m, m.replace("_", "-")) for m in eager - OPTIONAL_IMPORTS - PREAMBLE_IMPORTS}
    needed |= DEFERRED_NEEDS.get(rule, set())
    missing = sorted(needed - have)
    assert not missing, f"rule {rule} imports {missing} (via {script}) but {conda} does not install them"


def test_import_closure_finds_nested_imports(tmp_path):
    # The closure must see through cryomtd modules and tell guarded imports apart.
    s = tmp_path / "s.py"
    s.write_text(
        "import json\nfrom cryomtd.io import save_npz\ntry:\n    import cupy\nexcept ImportError:\n    cupy = None\n"
        "def f():\n    import torch\n"
    )
    found = import_closure(s)
    assert "numpy" in found["eager"]  # through cryomtd.io
    assert found["deferred"] == {"torch"}  # imported when f() runs
    assert found["optional"] == {"cupy"} and "json" not in found["eager"]


@pytest.mark.parametrize("env_path", ENV_FILES, ids=lambda p: p.stem)
def test_env_pins_versions_compatible_with_pyproject(env_path):
    env = parse_env(env_path)
    assert env.get("channels") and env["channels"][0] == "conda-forge", f"{env_path.name}: conda-forge first"
    assert set(env["channels"]) <= {"conda-forge", "nodefaults"}, f"{env_path.name}: only conda-forge"
    reqs = pyproject_requirements()
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    deps = pinned(env)
    assert "python" in deps and "numpy" in deps
    for name, version in deps.items():
        assert re.fullmatch(r"\d+(\.\d+)+", version), (
            f"{env_path.name}: {name} not pinned to an exact version ({version!r})"
        )
        if name == "python":
            assert Version(version + ".0") in Requirement(f"python{requires_python}").specifier
            continue
        pypi = CONDA_TO_PYPI.get(name, name).lower()
        if pypi not in reqs:
            assert name in TOOLING, f"{env_path.name}: {name} is not a dependency in pyproject.toml"
            continue
        assert Version(version) in reqs[pypi].specifier, (
            f"{env_path.name}: {name}={version} outside pyproject.toml's {reqs[pypi]}"
        )


@pytest.mark.parametrize("env_path", ENV_FILES, ids=lambda p: p.stem)
def test_env_installs_the_project(env_path):
    # Snakemake runs <env>.post-deploy.sh inside a new env: it must install this clone.
    deploy = env_path.with_name(env_path.stem + ".post-deploy.sh")
    assert deploy.is_file() and os.access(deploy, os.X_OK), f"{deploy.name} missing or not executable"
    assert "install-cryomtd.sh" in deploy.read_text()
    installer = (ENVS / "install-cryomtd.sh").read_text()
    assert "pip install --no-deps" in installer and "CRYOMTD_SOURCE" in installer
    assert "CRYOMTD_SOURCE" in (RULES / "common.smk").read_text()


def test_install_script_rejects_a_folder_without_the_project(tmp_path):
    env = {**os.environ, "CRYOMTD_SOURCE": str(tmp_path)}
    res = subprocess.run(["bash", str(ENVS / "install-cryomtd.sh")], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "no cryomtd clone" in res.stderr


def snakemake_exe() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else shutil.which("snakemake") or "snakemake"


def test_snakemake_lint_is_clean(tmp_path):
    # Lint in a temp copy of the default config (never run Snakemake in the clone itself).
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    res = subprocess.run(
        [snakemake_exe(), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--lint"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, f"snakemake --lint found problems:\n{res.stdout}\n{res.stderr}"


# Heavy rules (cost grows with the data) must write a benchmark file: the scale-out
# report sums them per rule (docs/cluster.md). Light gathers need not.
HEAVY_RULES = {
    "mtd1d_segment",
    "mtd1d_lsq",
    "mtd1d_em",
    "prepare_volume",
    "simulate_micrograph",
    "autocorrelate",
    "exact_moments",
    "recover_lsq",
    "refine_lsq",
    "approx_em",
    "evaluate",
}


@pytest.mark.parametrize("rule_file,rule,body", RULE_PARAMS)
def test_rule_declares_log_threads_resources(rule_file, rule, body):
    for name in ("log", "threads", "resources"):
        assert re.search(rf"^\s+{name}:", body, re.M), f"{rule_file.name}: rule {rule} has no {name}: directive"
    if rule in HEAVY_RULES:
        assert re.search(r"^\s+benchmark:", body, re.M), f"{rule_file.name}: heavy rule {rule} has no benchmark:"
