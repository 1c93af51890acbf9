"""Typed settings objects from config blocks: one frozen dataclass per block.

Each config block (``em``, ``lsq``, ``moments``, ``evaluate``, the 1-D ``lsq``/``em``, …)
has one frozen dataclass next to the library code that uses it. Its field defaults
equal the defaults written in the block's schema (``workflow/schemas/*.schema.yaml``;
``tests/test_settings.py`` checks every field against it), so a library function
called without options behaves like the workflow default. Engine knobs that do not
change results live in a nested ``advanced`` dataclass (config sub-block
``advanced:``).

:func:`from_block` builds a settings object from a (validated) config block and
rejects unknown keys with a one-line error naming the key; :func:`to_block` turns it
back into plain JSON-ready data (result files record the settings that produced them).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from cryomtd.io import InputError

__all__ = ["from_block", "override", "to_block"]

T = TypeVar("T")


def from_block(cls: type[T], block: Mapping[str, Any] | None, where: str) -> T:
    """The dataclass ``cls`` built from a config ``block`` (``None`` = all defaults).

    ``where`` names the block in error messages (``"experiments.demo.em"``). Unknown keys
    raise :class:`~cryomtd.io.InputError`; fields whose type is a dataclass are built
    recursively from the sub-block; lists become tuples. Values are taken as given (the
    workflow validates types against the schema first).
    """
    if block is None:
        block = {}
    if isinstance(block, cls):
        return block
    if not isinstance(block, Mapping):
        raise InputError(f"{where}: expected a mapping of settings, got {type(block).__name__} {block!r}")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(block) - set(names))
    if unknown:
        raise InputError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))} "
            f"(expected one of: {', '.join(names)})"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in block.items():
        hint = _optional_of(hints[key]) if value is not None else hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_block(hint, value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _optional_of(hint: Any) -> Any:
    """``X`` for ``X | None`` (an optional nested block), else ``hint``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def to_block(settings: Any) -> dict[str, Any]:
    """Plain data (dicts, lists, numbers, strings) of a settings dataclass, nested blocks included."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(settings)


def override(settings: T, where: str, **changes: Any) -> T:
    """A copy of ``settings`` with fields changed by name, at any nesting level.

    ``override(EmSettings(), "em", iterations=5, backend="numpy")`` sets ``iterations`` and
    ``advanced.backend``: a key is looked up among the top-level fields first, then in each
    nested settings block (field names are unique across a block's levels). An unknown name
    raises :class:`~cryomtd.io.InputError` naming ``where``.
    """
    if not changes:
        return settings
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    subs = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)  # type: ignore[arg-type]
        if dataclasses.is_dataclass(getattr(settings, f.name))
    }
    names = {f.name for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    for key, value in changes.items():
        if key in names:
            top[key] = tuple(value) if isinstance(value, list) else value
            continue
        owner = next((s for s, obj in subs.items() if key in {f.name for f in dataclasses.fields(obj)}), None)
        if owner is None:
            raise InputError(f"{where}: unknown setting {key!r}")
        nested.setdefault(owner, {})[key] = value
    for owner, kw in nested.items():
        top[owner] = override(top.get(owner, subs[owner]), f"{where}.{owner}", **kw)
    return dataclasses.replace(settings, **top)  # type: ignore[type-var]
