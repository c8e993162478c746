"""Readings of this process: its RSS, open descriptors and threads, cheap enough to take after
every run (one read of ``/proc/self/statm``), through psutil where ``/proc`` is missing.

A reading psutil cannot make is given up on once, and said once (:data:`unreadable`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAVE_PROC = os.path.exists("/proc/self/statm")
_process: Any = None
unreadable: dict[str, tuple[str, str]] = {}  # what psutil could not read: no retry, said once


def _give_up(what: str, consequence: str, exc: BaseException) -> int:
    unreadable.setdefault(what, (f"{type(exc).__name__}: {exc}", consequence))
    return -1


def psutil_process() -> Any:
    """psutil's handle on this process, made once (raises when psutil is missing)."""
    global _process
    if _process is None:
        import psutil

        _process = psutil.Process()
    return _process


def rss() -> int:
    """Resident set size in bytes (cheap: one read of /proc/self/statm on Linux)."""
    if _HAVE_PROC:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            data = os.read(fd, 200)
        finally:
            os.close(fd)
        return int(data.split()[1]) * _PAGE
    if "RSS" in unreadable:
        return -1
    try:
        return int(psutil_process().memory_info().rss)
    except Exception as exc:
        return _give_up("RSS", "native memory is not checked", exc)


def open_fds() -> int:
    """Open file descriptors of this process (-1 when the platform can't tell)."""
    if _HAVE_PROC:
        try:
            return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself holds
        except OSError:
            return -1
    if "open descriptors" in unreadable:
        return -1
    try:
        return int(psutil_process().num_fds())
    except Exception as exc:
        return _give_up("open descriptors", "descriptor leaks are not checked", exc)


def live_threads() -> int:
    """Python threads alive."""
    return threading.active_count()


def os_threads() -> int | None:
    """The process's OS threads, C threads included (None when psutil cannot tell)."""
    try:
        return int(psutil_process().num_threads())
    except Exception:
        return None
