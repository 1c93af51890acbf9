"""Command-line options generated from a settings dataclass.

Every field of a settings object (nested blocks flattened: ``advanced.backend`` →
``--backend``, ``step.burn_in`` → ``--burn-in``) becomes one option whose default is the
dataclass default, whose choices and help text come from the block's schema when the
schema files are present. So the CLI and the workflow share one set of defaults and one
set of descriptions; nothing is retyped here.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

from cryomtd.settings import from_block

__all__ = ["add_settings_options", "settings_from_options"]

T = TypeVar("T")


def _leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaves(hints[f.name], prefix + (f.name,))
        else:
            out.append((prefix + (f.name,), f, hints[f.name]))
    return out


def _schema_props(schema_name: str | None, path: tuple[str, ...]) -> dict[str, Any]:
    """The schema of the property at ``path`` of a block's schema file ({} without the file)."""
    if schema_name is None:
        return {}
    from cryomtd.config import SCHEMA_DIR, load_schema

    file = SCHEMA_DIR / f"{schema_name}.schema.yaml"
    if not file.is_file():
        return {}
    node: Any = load_schema(file)
    for key in path:
        node = (node.get("properties") or {}).get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _scalar_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _enum_value(values: list[Any]) -> Any:
    """An argparse ``type`` that maps an option's text to the enum value it spells (``true`` → True)."""

    def convert(text: str) -> Any:
        for v in values:
            if str(v).lower() == text.lower():
                return v
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(str(v).lower() for v in values)}, got {text!r}")

    return convert


def add_settings_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    schema: str | None = None,
    skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
) -> None:
    """One ``--option`` per leaf field of the settings dataclass ``cls`` (fields in ``skip`` left
    out; ``rename`` maps a field name to another option name where it would clash)."""
    group = parser.add_argument_group(f"{cls.__name__} (config block defaults)")
    for path, f, hint in _leaves(cls):
        if path[-1] in skip:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default if f.default is not dataclasses.MISSING else f.default_factory()
        node = _schema_props(schema, path)
        desc = " ".join(str(node.get("description", "")).split())
        kw: dict[str, Any] = {"dest": "_".join(path), "help": desc + (" (required)" if required else "")}
        if required:
            kw["required"] = True
        else:
            kw.update(default=default, help=(desc + " " if desc else "") + "(default: %(default)s)")
        t = _scalar_type(hint)
        if "enum" in node:
            kw["choices"] = node["enum"]
        if "enum" in node and any(isinstance(v, bool) for v in node["enum"]):  # e.g. auto | true | false
            kw["type"] = _enum_value(node["enum"])
            kw["metavar"] = "{" + ",".join(str(v).lower() for v in node["enum"]) + "}"
        elif t is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(t) is tuple:
            kw.update(nargs=len(default), type=typing.get_args(t)[0], metavar=path[-1].upper())
        else:
            kw["metavar"] = path[-1].upper()
            if t in (int, float, str):
                kw["type"] = t
        group.add_argument("--" + (rename or {}).get(path[-1], path[-1]).replace("_", "-"), **kw)


def settings_from_options(cls: type[T], args: argparse.Namespace, where: str) -> T:
    """The settings object built from the options that :func:`add_settings_options` added."""
    block: dict[str, Any] = {}
    for path, _, _ in _leaves(cls):
        dest = "_".join(path)
        if not hasattr(args, dest):
            continue
        node = block
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = getattr(args, dest)
    return from_block(cls, block, where)
