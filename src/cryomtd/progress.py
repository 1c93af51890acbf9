"""Progress bars that appear only when a person is watching (stderr is a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress"]


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    enable: bool | None = None,
    **kwargs: Any,
) -> tqdm:
    """``tqdm`` over ``iterable``; disabled unless ``enable`` or stderr is a TTY."""
    if enable is None:
        enable = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enable, dynamic_ncols=True, **kwargs)
