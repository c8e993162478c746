"""Writing a report file: atomically, into a directory checked first."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import IO


class ReportWriteError(OSError):
    """A report could not be produced for a reason other than I/O (e.g. a value JSON cannot hold)."""


def ensure_dir(path: str | os.PathLike[str]) -> str | None:
    """Create ``path`` (a directory) if needed and check that files can be written in it.

    Returns None when the directory is usable, or a one-line problem; never raises.
    """
    try:
        directory = os.fspath(path)
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".memleak-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except (OSError, TypeError, ValueError) as exc:
        return f"cannot write reports to {path}: {exc}"
    return None


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path`` and move it into place.

    Raises OSError; any other exception from ``write`` becomes :class:`ReportWriteError`.
    Either way the temporary file is removed and a previous ``path`` is left untouched.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a report is an ordinary file
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) or not isinstance(exc, Exception):
            raise
        raise ReportWriteError(f"could not write {target}: {type(exc).__name__}: {exc}") from exc
    _fsync_dir(directory)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    def write(handle: IO[str]) -> None:
        handle.write(text)

    atomic_write(path, write)


def _fsync_dir(directory: str) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
