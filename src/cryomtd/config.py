"""Fill the defaults of a (validated) workflow config from its JSON schema.

``snakemake.utils.validate`` fills defaults only along plain ``properties``; the
cryomtd schema nests experiments under ``additionalProperties`` with ``if``/``then``
and ``$ref`` to one file per stage, so the defaults written there are applied here.
The schema stays the single place where a default is written.

Where the schemas live: ``workflow/schemas/`` of the repository, next to ``src/``. The
package is installed editable (``pip install -e .``; a ``.pth`` file puts ``src/`` on the
path), so this module is ``<repo>/src/cryomtd/config.py`` and the schemas are found at
``Path(__file__).parents[2] / "workflow" / "schemas"`` (:data:`SCHEMA_DIR`). The schemas are
part of the workflow, not of the package data: a plain (non-editable) wheel install has no
schema folder, and :func:`schema_defaults` then returns ``{}`` (CLI options fall back to
their own fallbacks).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = ["SCHEMA_DIR", "fill_defaults", "load_schema", "schema_defaults"]

#: ``<repo>/workflow/schemas`` (this file is ``<repo>/src/cryomtd/config.py``; see the module docstring).
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"


def load_schema(path: str | Path) -> dict:
    """Read a YAML/JSON schema file."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _resolve(schema: dict, base: Path) -> tuple[dict, Path]:
    while isinstance(schema, dict) and "$ref" in schema:
        ref_path = base / schema["$ref"]
        schema, base = load_schema(ref_path), ref_path.parent
    return schema, base


def _fill(instance: Any, schema: dict, base: Path) -> None:
    schema, base = _resolve(schema, base)
    if not isinstance(schema, dict):
        return
    if "if" in schema:
        cond, cbase = _resolve(schema["if"], base)
        branch = "then" if jsonschema.Draft202012Validator(cond).is_valid(instance) else "else"
        if branch in schema:
            _fill(instance, schema[branch], base)
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for key, sub in props.items():
        sub_r, sub_base = _resolve(sub, base)
        if key not in instance and isinstance(sub_r, dict) and "default" in sub_r:
            instance[key] = copy.deepcopy(sub_r["default"])
        if key in instance:
            _fill(instance[key], sub_r, sub_base)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in props:
                _fill(value, extra, base)


def fill_defaults(config: dict, schema_path: str | Path) -> dict:
    """Insert, in place, every default the schema at ``schema_path`` declares; returns ``config``.

    Call after validation. Follows ``$ref`` (relative to the referring file),
    ``if``/``then``/``else``, ``properties`` and ``additionalProperties``.
    """
    schema_path = Path(schema_path)
    _fill(config, load_schema(schema_path), schema_path.parent)
    return config


def schema_defaults(block_schema_file: str | Path, *path: str) -> dict:
    """The ``default`` of each property of one config block's schema, ``{name: default}``.

    ``block_schema_file`` is a block name (``"mtd1d"``), a file name in :data:`SCHEMA_DIR`
    (``"mtd1d.schema.yaml"``) or a path (absolute, or relative to it). ``path`` descends into nested object properties
    (``schema_defaults("moments", "noise")``). ``$ref`` is followed at every level
    (relative to the referring file). Properties without a default are left out; returns
    ``{}`` when the schema file is not shipped (non-editable install). A ``path`` entry
    that is not a property raises ``KeyError``.
    """
    name = str(block_schema_file)
    if not name.endswith((".yaml", ".yml", ".json")):
        name += ".schema.yaml"
    file = SCHEMA_DIR / name
    if not file.is_file():
        return {}
    schema, base = _resolve(load_schema(file), file.parent)
    for key in path:
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        if key not in props:
            raise KeyError(f"{file}: no property {key!r} along {'/'.join(path)}")
        schema, base = _resolve(props[key], base)
    out = {}
    for key, sub in (schema.get("properties", {}) if isinstance(schema, dict) else {}).items():
        sub, _ = _resolve(sub, base)
        if isinstance(sub, dict) and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    return out
