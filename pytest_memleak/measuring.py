"""Cheap process counters, read after a garbage collection, into pre-allocated storage.

A measuring loop that kept its own results in Python objects (a list of tuples, big ints)
would itself grow by a block per run, so every series lives in an ``array('q')`` sized
before the first run, as CPython's ``regrtest -R`` does.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import tracemalloc
from array import array

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAVE_PROC = os.path.exists("/proc/self/statm")
_process = None


def _psutil_process():  # type: ignore[no-untyped-def]
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
    try:
        return int(_psutil_process().memory_info().rss)
    except Exception:
        return -1


def open_fds() -> int:
    """Open file descriptors of this process (-1 when the platform can't tell)."""
    if _HAVE_PROC:
        try:
            return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself holds
        except OSError:
            return -1
    try:
        return int(_psutil_process().num_fds())
    except Exception:
        return -1


def live_threads() -> int:
    return threading.active_count()


def collect() -> None:
    """Collect garbage until nothing more is freed (cycles that free cycles), at most 3 passes."""
    for _ in range(3):
        if not gc.collect():
            break


# The screen's counters: one column each, a row per measurement.
SCREEN_METRICS = ("blocks", "traced", "rss", "fds", "threads")


class Counters:
    """Pre-allocated series of the screen's counters."""

    __slots__ = ("capacity", "columns", "n")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.columns = {name: array("q", bytes(8 * capacity)) for name in SCREEN_METRICS}
        self.n = 0

    def measure(self) -> None:
        """Collect garbage, then record one row. Allocates nothing that survives."""
        if self.n >= self.capacity:
            raise IndexError("Counters is full")
        collect()
        cols = self.columns
        n = self.n
        cols["fds"][n] = open_fds()
        cols["threads"][n] = live_threads()
        cols["rss"][n] = rss()
        cols["blocks"][n] = sys.getallocatedblocks()
        cols["traced"][n] = tracemalloc.get_traced_memory()[0]
        self.n = n + 1

    def deltas(self, name: str) -> list[int]:
        col = self.columns[name]
        return [col[i] - col[i - 1] for i in range(1, self.n)]

    def values(self, name: str) -> list[int]:
        return list(self.columns[name][: self.n])
