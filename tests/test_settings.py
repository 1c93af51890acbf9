"""Every settings dataclass mirrors its config block's schema: same keys, same defaults.

The schema (workflow/schemas/*.schema.yaml) is where a default is written; each block's
frozen dataclass repeats it so that a library function called without options behaves
like the workflow. This test reads the schema files directly (independent of
cryomtd.config) and walks both trees.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path

import pytest
import yaml

from cryomtd.io import InputError
from cryomtd.settings import from_block, to_block

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow" / "schemas"

#: (module, class, schema file): every config block and its settings object.
BLOCKS = [
    ("cryomtd.mtd1d.settings", "Mtd1dSettings", "mtd1d.schema.yaml"),
    ("cryomtd.em3d.settings", "EmSettings", "em3d.schema.yaml"),
    ("cryomtd.mom3d.settings", "LsqSettings", "lsq3d.schema.yaml"),
    ("cryomtd.moments.settings", "MomentsSettings", "moments.schema.yaml"),
    ("cryomtd.evaluate.settings", "EvaluationSettings", "evaluate.schema.yaml"),
    ("cryomtd.volume", "VolumeSettings", "volume.schema.yaml"),
    ("cryomtd.simulate", "MicrographSettings", "micrographs.schema.yaml"),
    ("cryomtd.basis", "BasisSettings", "basis.schema.yaml"),
    ("cryomtd.micrographs", "DataSettings", "data.schema.yaml"),
]


def _schema(file: str) -> dict:
    with open(SCHEMAS / file) as fh:
        return yaml.safe_load(fh)


def _mismatches(cls: type, schema: dict, where: str) -> list[str]:
    """Differences between a dataclass and an object schema (keys, defaults, nesting)."""
    out = []
    props = schema.get("properties", {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in sorted(set(props) - set(fields)):
        out.append(f"{where}.{name}: in the schema, not in {cls.__name__}")
    for name in sorted(set(fields) - set(props)):
        out.append(f"{where}.{name}: in {cls.__name__}, not in the schema")
    for name in sorted(set(props) & set(fields)):
        sub, f = props[name], fields[name]
        if dataclasses.is_dataclass(hints[name]):
            out += _mismatches(hints[name], sub, f"{where}.{name}")
            if f.default_factory is dataclasses.MISSING:
                out.append(f"{where}.{name}: nested settings need default_factory")
            continue
        has = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if "default" not in sub:
            if has and name not in ("kind",):
                out.append(f"{where}.{name}: dataclass default but none in the schema")
            continue
        if not has:
            out.append(f"{where}.{name}: schema default {sub['default']!r}, none in the dataclass")
            continue
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(value, tuple):
            value = list(value)
        if (
            value != sub["default"]
            or type(value) is not type(sub["default"])
            and not (
                isinstance(value, float) and isinstance(sub["default"], int) and not isinstance(sub["default"], bool)
            )
        ):
            out.append(f"{where}.{name}: dataclass {value!r}, schema {sub['default']!r}")
    return out


@pytest.mark.parametrize("module,name,schema", BLOCKS, ids=[b[1] for b in BLOCKS])
def test_dataclass_defaults_equal_schema_defaults(module, name, schema):
    cls = getattr(importlib.import_module(module), name)
    assert _mismatches(cls, _schema(schema), schema.split(".")[0]) == []


@pytest.mark.parametrize("module,name,schema", BLOCKS, ids=[b[1] for b in BLOCKS])
def test_from_block_of_the_schema_defaults_is_the_default_object(module, name, schema):
    """The defaults filled by cryomtd.config build the same object as the dataclass defaults."""
    from cryomtd.config import fill_defaults

    cls = getattr(importlib.import_module(module), name)
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if required:
        pytest.skip(f"{name} has required fields {sorted(required)}")
    block: dict = {}
    fill_defaults(block, SCHEMAS / schema)
    assert from_block(cls, block, "test") == cls()
    assert to_block(from_block(cls, block, "test")) == to_block(cls())


def test_unknown_key_is_one_line_naming_it():
    from cryomtd.em3d.settings import EmSettings

    with pytest.raises(InputError) as e:
        from_block(EmSettings, {"grid_stp": 30}, "experiments.demo.em")
    msg = str(e.value)
    assert "experiments.demo.em" in msg and "grid_stp" in msg and "\n" not in msg
    with pytest.raises(InputError, match=r"experiments\.demo\.em\.advanced.*threds"):
        from_block(EmSettings, {"advanced": {"threds": 2}}, "experiments.demo.em")


def test_1d_library_defaults_are_the_workflow_defaults():
    """fit_lsq / fit_em called without options use the 1-D block's defaults."""
    import inspect

    from cryomtd.mtd1d import fit_em, fit_lsq
    from cryomtd.mtd1d.settings import Em1dSettings, Lsq1dSettings

    em, lsq = inspect.signature(fit_em).parameters, inspect.signature(fit_lsq).parameters
    assert (em["iterations"].default, em["tol"].default) == (Em1dSettings().iterations, Em1dSettings().tol)
    assert (lsq["restarts"].default, lsq["max_iterations"].default) == (
        Lsq1dSettings().restarts,
        Lsq1dSettings().max_iterations,
    )
