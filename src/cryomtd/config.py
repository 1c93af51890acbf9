"""Check a workflow config against its JSON schema, with one line per error, and fill its defaults.

:func:`check_config_file` reports a YAML syntax error with its file and line;
:func:`validate_config` reports every schema violation as one line naming the config
path (``config: experiments.demo.em: unknown key 'grid_stp'``), and :func:`exit_on_error`
turns either into a plain message and exit status 1 in the Snakefile (no traceback).

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

import contextlib
import copy
import difflib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cryomtd.io import InputError

__all__ = [
    "SCHEMA_DIR",
    "ConfigError",
    "check_config_file",
    "exit_on_error",
    "fill_defaults",
    "load_schema",
    "schema_defaults",
    "validate_config",
]

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


class ConfigError(InputError):
    """A workflow config that does not match its schema; ``lines`` holds one message per error."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def check_config_file(path: str | Path) -> None:
    """Parse the YAML config file ``path`` (nothing to do when it does not exist).

    A syntax error raises :class:`~cryomtd.io.InputError` with the file, line and column
    (``config.yaml, line 6, column 5: invalid YAML: expected ',' or '}' …``); so does a
    file whose top level is not a mapping of settings.
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark, cmark = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        mark = mark or cmark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        detail = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        if context:
            context = " ".join(str(context).split()).removeprefix("while ").replace("parsing", "in", 1)
            if cmark is not None and cmark is not mark:
                context += f" that starts at line {cmark.line + 1}, column {cmark.column + 1}"
            detail += f" ({context})"
        raise InputError(f"{where}: invalid YAML: {detail}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc.reason})") from None
    if data is not None and not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings at the top level, got {_json_type(data)}")


def _inline(schema: Any, base: Path) -> Any:
    """``schema`` with every file ``$ref`` (relative to ``base``) replaced by the file's schema."""
    if isinstance(schema, dict):
        if "$ref" in schema and isinstance(schema["$ref"], str) and not schema["$ref"].startswith("#"):
            ref_path = base / schema["$ref"]
            target = {k: v for k, v in load_schema(ref_path).items() if k not in ("$schema", "$id")}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return _inline({**target, **rest}, ref_path.parent)
        return {k: _inline(v, base) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, base) for v in schema]
    return schema


_JSON_TYPES = [
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
]


def _json_type(value: Any) -> str:
    for t, name in _JSON_TYPES:
        if isinstance(value, t):
            return name
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(schema: Any) -> str:
    """A short phrase for what ``schema`` accepts (for messages about ``oneOf``/``anyOf``)."""
    if not isinstance(schema, dict):
        return "anything" if schema is True else "nothing"
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "const" in schema:
        return repr(schema["const"])
    types = schema.get("type")
    text = " or ".join(types) if isinstance(types, list) else str(types or "a value")
    bounds = [
        f"{op} {schema[k]}"
        for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
        if k in schema
    ]
    if bounds:
        text += " " + " and ".join(bounds)
    if types == "array" and ("minItems" in schema or "maxItems" in schema):
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        text += f" of {lo} items" if lo == hi else f" of {lo or 0}–{hi if hi is not None else '…'} items"
    return text


def _messages(error: jsonschema.ValidationError) -> list[str]:
    """One or more lines (without the ``config:`` prefix) for one validation error."""
    where = _path(error.absolute_path)
    at = f"{where}: " if where else ""
    v, value, schema = error.validator, error.instance, error.schema
    arg = error.validator_value
    if v == "additionalProperties" and isinstance(value, dict):
        known = list(schema.get("properties", {}))
        extra = [
            k for k in value if k not in known and not any(re.search(p, k) for p in schema.get("patternProperties", {}))
        ]
        lines = []
        for key in extra:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = (
                f" (did you mean {near[0]!r}?)"
                if near
                else (f" (expected one of: {', '.join(known)})" if known else "")
            )
            lines.append(f"{at}unknown key {key!r}{hint}")
        return lines or [f"{at}{error.message}"]
    if v == "required":
        missing = [k for k in arg if isinstance(value, dict) and k not in value]
        return [f"{at}missing required key {k!r}" for k in missing] or [f"{at}{error.message}"]
    if v == "type":
        want = " or ".join(arg) if isinstance(arg, list) else arg
        return [f"{at}expected {want}, got {_short(value)}"]
    if v == "enum":
        return [f"{at}expected one of {', '.join(map(str, arg))}, got {_short(value)}"]
    if v == "const":
        return [f"{at}expected {arg!r}, got {_short(value)}"]
    ops = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if v in ops:
        return [f"{at}expected a value {ops[v]} {arg}, got {_short(value)}"]
    if v in ("minItems", "maxItems"):
        return [f"{at}expected {'at least' if v == 'minItems' else 'at most'} {arg} items, got {len(value)}"]
    if v == "minProperties":
        return [f"{at}expected at least {arg} entr{'y' if arg == 1 else 'ies'}"]
    if v == "pattern" and "propertyNames" in error.schema_path:
        return [f"{at}invalid name {_short(value)}: expected a name matching {arg}"]
    if v == "pattern":
        return [f"{at}expected a string matching {arg}, got {_short(value)}"]
    if v in ("oneOf", "anyOf") and "x-message" in schema:  # the schema's own explanation
        return [f"{at}{schema['x-message']}"]
    if v in ("oneOf", "anyOf"):
        alternatives = "; or ".join(_describe(s) for s in arg)
        return [f"{at}expected {alternatives}, got {_short(value)}"]
    return [f"{at}{error.message}"]


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Check ``config`` against the schema at ``schema_path`` (following file ``$ref``); returns it.

    Raises :class:`ConfigError` with one line per error, each naming the config path and
    what was expected: ``config: experiments.demo.em: unknown key 'grid_stp' (did you mean
    'grid_step'?)``, ``config: experiments.demo.em.grid_step: expected number, got 'x'``.
    Errors inside ``if``/``then``/``else`` branches are reported at their own (deepest) path;
    one line per config path, except unknown and missing keys (one line each).
    """
    schema_path = Path(schema_path)
    schema = _inline(load_schema(schema_path), schema_path.parent)
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    # an unknown `kind` makes every other key of that experiment look wrong: report the kind only
    bad_kind = [
        tuple(e.absolute_path)[:-1]
        for e in errors
        if e.validator == "enum" and tuple(e.absolute_path)[-1:] == ("kind",)
    ]
    errors = [
        e
        for e in errors
        if not any(tuple(e.absolute_path)[: len(b)] == b and tuple(e.absolute_path) != (*b, "kind") for b in bad_kind)
    ]
    lines: list[str] = []
    seen: set[str] = set()
    for error in errors:
        path = _path(error.absolute_path)
        several = error.validator in ("additionalProperties", "required")
        if path in seen and not several:
            continue
        if not several:
            seen.add(path)
        for line in _messages(error):
            if f"config: {line}" not in lines:
                lines.append(f"config: {line}")
    if lines:
        raise ConfigError(lines)
    return config


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """For the Snakefile: an :class:`~cryomtd.io.InputError` in the block prints ``error: <line>``
    for each line of its message to stderr and exits with status 1, with no traceback."""
    try:
        yield
    except InputError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
