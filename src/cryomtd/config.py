"""Fill the defaults of a (validated) workflow config from its JSON schema.

``snakemake.utils.validate`` fills defaults only along plain ``properties``; the
cryomtd schema nests experiments under ``additionalProperties`` with ``if``/``then``
and ``$ref`` to one file per stage, so the defaults written there are applied here.
The schema stays the single place where a default is written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = ["fill_defaults", "load_schema"]


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
