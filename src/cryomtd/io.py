"""Atomic file output and log redirection shared by every stage.

Every stage writes to a temporary name in the destination folder and renames on
success (``os.replace`` is atomic on POSIX within one file system), so a killed job
never leaves a half-written output behind. Outputs get the permissions of an ordinary
new file under the process umask (0644 under umask 022, 0664 under 002), not the
owner-only 0600 of the temporary file, so results on a shared cluster stay readable by
the group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "current_umask",
    "save_npz",
    "save_npy",
    "read_npz",
    "write_json",
    "read_json",
    "number_field",
    "log_to",
    "InputError",
]


class InputError(ValueError):
    """Bad user input (file or config field); the message names the file/field and what was expected."""


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting and
    restoring it at once (``os.umask`` has no read-only form).
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    ``suffix`` defaults to the suffix of ``path`` (some writers, e.g. ``np.savez``,
    append their own extension when it is missing). Before the rename the file gets
    mode ``0o666 & ~umask`` (the temporary file is created 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """``np.savez`` written atomically (uncompressed: statistics are small and dense)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` of one array, written atomically to exactly ``path`` (no suffix appended)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def read_npz(path: str | os.PathLike, required: Iterable[str] = (), what: str = ".npz file") -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file, ``{name: array}`` (read into memory; no pickles).

    Raises :class:`InputError` naming the file when it is missing, not a readable ``.npz``,
    or lacks one of the ``required`` arrays. ``what`` names the kind of file in the
    messages (e.g. ``"truth file (written by prepare_volume)"``).
    """
    path, required = Path(path), tuple(required)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile / format / pickle errors, with varied types
        raise InputError(f"{path}: not a readable {what} ({exc})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"{path}: missing array(s) {missing} in the {what}; expected {', '.join(required)}")
    return arrays


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically; numpy scalars/arrays are converted."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=default, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file with an error that names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


_MISSING = object()


def number_field(
    record: Any,
    key: str,
    where: str | os.PathLike,
    *,
    integer: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    default: Any = _MISSING,
    written_by: str | None = None,
) -> float | int:
    """Field ``key`` of a JSON record (e.g. a micrograph side file) as a finite number.

    ``where`` names the file in messages. ``integer`` accepts whole numbers only (``11``
    or ``11.0``, not ``"11"`` nor ``true``); ``positive`` requires > 0, ``minimum`` ≥ it.
    A missing field gives ``default``, or an :class:`InputError` when there is none
    (naming ``written_by``, the stage that writes the field, when given).
    """
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: expected a JSON object with field {key!r}, got {type(record).__name__}")
    if key not in record:
        if default is not _MISSING:
            return default
        raise InputError(f"{where}: missing field {key!r}" + (f" (written by {written_by})" if written_by else ""))
    value = record[key]
    kind = ("a positive " if positive else "an " if integer else "a ") + ("integer" if integer else "finite number")
    if minimum is not None and not positive:
        kind += f" >= {minimum:g}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and positive:
        ok = value > 0
    if ok and minimum is not None:
        ok = value >= minimum
    if not ok:
        raise InputError(f"{where}: field {key!r}: expected {kind}, got {value!r}")
    return int(value) if integer else float(value)


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send stdout, stderr and the ``cryomtd`` logger to ``path`` (append) for a rule script.

    An exception leaving the block is written to ``path`` with its full traceback
    ("stage failed", then the traceback) and raised again, so a failed job's log file
    says why it failed. With ``path=None`` nothing is redirected. Yields the ``cryomtd`` logger.
    """
    logger = logging.getLogger("cryomtd")
    logger.setLevel(logging.INFO)
    if path is None:
        if not logger.handlers:
            logger.addHandler(logging.StreamHandler())
        yield logger
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        try:
            yield logger
        except SystemExit as exc:
            if exc.code not in (None, 0):
                logger.exception("stage failed")
            raise
        except BaseException:
            logger.exception("stage failed")
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            logger.removeHandler(handler)
