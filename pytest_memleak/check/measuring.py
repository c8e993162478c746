"""Cheap process counters, read after a garbage collection, into pre-allocated storage.

A measuring loop that kept its own results in Python objects (a list of tuples, big ints)
would itself grow by a block per run, so every series lives in an ``array('q')`` sized
before the first run, as CPython's ``regrtest -R`` does.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pytest_memleak.check.counters import read as read_counter
from pytest_memleak.check.deciding import RSS_NOISE
from pytest_memleak.config.units import format_size
from pytest_memleak.probe import allocator, process
from pytest_memleak.probe.process import live_threads as live_threads  # noqa: I001 - the counters' readings, re-exported
from pytest_memleak.probe.process import open_fds as open_fds
from pytest_memleak.probe.process import rss as rss

if TYPE_CHECKING:
    from pytest_memleak.check.counters import Counter

def problems() -> list[str]:
    """What psutil could not read in this process, and malloc's statistics when the heap meter
    found them missing, a line each for the end of the run."""
    out = []
    if _heap_meter is not None and _heap_meter.missing is not None:
        untrimmed = allocator.trim_missing()
        out.append(
            f"{_heap_meter.missing}: memory outside pymalloc (native memory, a buffer growing in place) is measured "
            f"by RSS alone, in pages: a repeated test's leak of it is found from {format_size(RSS_NOISE)}/run, and "
            "growth below that is inconclusive at best"
            + (f"; {untrimmed}: RSS keeps memory freed earlier, which such growth can fill unseen" if untrimmed else "")
        )
    unreadable = process.unreadable
    if unreadable:
        whats = ", ".join(unreadable)
        error = next(iter(unreadable.values()))[0]
        consequences = "; ".join(c for _, c in unreadable.values())
        out.append(f"psutil could not read {whats} ({error}): {consequences}")
    return out


def settled_threads(floor: int, grace: float) -> int:
    """The live thread count once threads that are finishing have ended: polled for up to
    ``grace`` seconds while it is above ``floor``."""
    deadline = time.monotonic() + max(0.0, grace)
    count = live_threads()
    while count > floor and time.monotonic() < deadline:
        time.sleep(0.02)
        count = live_threads()
    return count


_clear_type_cache = getattr(sys, "_clear_internal_caches", None) or getattr(sys, "_clear_type_cache", None)


def collect() -> None:
    """Collect garbage: a collection of the (unfrozen) heap, then young ones while they free
    something (cycles that a finalizer made), at most 3 passes in all.

    The interpreter's type attribute cache is emptied first: it keeps a reference to the
    name of each of its 4,096 recent lookups, so code that makes a class per call (such as
    ``inspect.signature`` of a builtin) fills it over thousands of runs, a bounded fill that
    looked like a leak of a few blocks per run.
    """
    if _clear_type_cache is not None:
        _clear_type_cache()
    # what a finalizer makes is young, and the whole heap again would cost as much as the first
    # pass (tens of milliseconds for a large heap) to find it
    if gc.collect():
        for _ in range(2):
            if not gc.collect(0):
                break


# Python 3.10 builds a code object's opcode cache, two pymalloc blocks kept as long as the code, at
# its 1,024th call: a function called k times a run gets them at run 1024/k, a step in a clean test's
# blocks. CPython's regrtest -R turns the cache off for the same reason (from 3.11 the interpreter
# specializes code in place, allocating nothing).
_deactivate_opcache = getattr(sys, "_deactivate_opcache", None)


def settle_interpreter() -> None:
    """Before the first measured run of a checked test, and before a soak's first sample: no
    opcode cache built from then on (for the rest of the process: it cannot be turned on again).
    A soak of a bounded ring read +2.3 to +6.6 MiB/h of Python heap on 3.10 with the cache on
    (+11.4 once, a leak), 0.0 with it off."""
    if _deactivate_opcache is not None:
        _deactivate_opcache()


_frozen = False  # the heap frozen by freeze() (gc.get_freeze_count() walks the frozen heap to tell)


def freeze() -> None:
    """Freeze the heap (``gc.freeze()``): each collection then skips what is alive now."""
    global _frozen
    gc.freeze()
    _frozen = True


def unfreeze() -> None:
    global _frozen
    gc.unfreeze()
    _frozen = False


@contextlib.contextmanager
def thawed() -> Iterator[None]:
    """The heap unfrozen, so that ``gc.get_objects()`` and collections see every object, then
    frozen again (the freeze count is read only when freeze() did not freeze it: it walks the
    frozen heap, milliseconds for a large one)."""
    frozen = _frozen or gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    try:
        yield
    finally:
        if frozen:
            gc.freeze()


def full_collect(census: Callable[[], Any] | None = None) -> Any:
    """A collection of the whole heap, the frozen part included, then the heap frozen again.

    The per-run collection skips the frozen heap (that is what makes it cheap), so an object
    that was alive at the freeze and has since become cyclic garbage stays: a bounded cache of
    cyclic objects that evicts would look like a leak the plugin made. Checkpoints that judge
    use this instead. ``census`` runs while every object is visible to ``gc.get_objects()``.
    """
    with thawed():
        collect()
        return census() if census is not None else None


class HeapMeter:
    """Bytes held by Python's allocators, read without tracing.

    tracemalloc makes every allocation about ten times slower, too slow for a screen that
    runs on every test. pymalloc knows exactly how many bytes its blocks hold
    (``sys._debugmallocstats``, written to C stderr, so fd 2 is pointed at a scratch file for
    the call) and the C allocator's statistics (glibc's ``mallinfo2``, jemalloc's
    ``stats.allocated``) know what larger objects hold. Together they see a string that keeps
    growing, which a block count cannot. Where either source is missing, its part reads 0:
    ``missing`` says why malloc's is (an allocator whose statistics cannot be read serves
    ``malloc``, or glibc has no ``mallinfo2``), and RSS stands in for it
    (:mod:`pytest_memleak.probe.allocator`).
    """

    _PATTERN = re.compile(rb"# bytes in allocated blocks\s*=\s*([\d,]+)")

    def __init__(self) -> None:
        # kept open for the session (one constant descriptor), closed by close()
        self._scratch = tempfile.TemporaryFile() if hasattr(sys, "_debugmallocstats") else None  # noqa: SIM115
        self.missing = allocator.statistics_missing()

    @property
    def available(self) -> bool:
        """Whether either source can be read here (else every reading is 0)."""
        return self._scratch is not None or self.missing is None

    def __call__(self, full: bool = True) -> int:
        """Bytes in use: malloc's (cheap) and, when ``full``, pymalloc's (a walk of its arenas)."""
        return (self._pymalloc() if full else 0) + (allocator.allocated_bytes() or 0)

    def _pymalloc(self) -> int:
        scratch = self._scratch
        if scratch is None:
            return 0
        scratch.seek(0)
        scratch.truncate()
        saved = os.dup(2)
        try:
            os.dup2(scratch.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        scratch.seek(0)
        match = self._PATTERN.search(scratch.read())
        return int(match.group(1).replace(b",", b"")) if match else 0

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None


_heap_meter: HeapMeter | None = None


def heap_meter() -> HeapMeter:
    """The process's heap meter (its scratch file is opened once, before any baseline)."""
    global _heap_meter
    if _heap_meter is None:
        _heap_meter = HeapMeter()
    return _heap_meter


def close_heap_meter() -> None:
    """Close the process's heap meter (its scratch file), at the end of a session."""
    global _heap_meter
    if _heap_meter is not None:
        _heap_meter.close()
        _heap_meter = None


# The screen's counters: one column each, a row per measurement.
SCREEN_METRICS = ("blocks", "heap", "rss", "fds", "threads")


class Counters:
    """Pre-allocated series of the screen's counters, and the runs made by each row."""

    __slots__ = ("capacity", "columns", "n", "heap", "at", "extra", "errors", "traced")

    def __init__(self, capacity: int, extra: Sequence[Counter] = (), errors: dict[str, str] | None = None, traced: bool = False) -> None:
        """``extra``: a project's counters (``pytest_memleak_counters``), a column each; a
        counter that fails to read is said in ``errors``. ``traced``: the heap column holds the
        bytes tracemalloc traces (it runs), not the allocators' (which count by size classes)."""
        self.capacity = capacity
        self.traced = traced
        self.heap = heap_meter()
        self.columns: dict[str, array[Any]] = {name: array("q", bytes(8 * capacity)) for name in SCREEN_METRICS}
        self.extra = tuple(extra)
        self.columns.update({c.name: array("d", bytes(8 * capacity)) for c in self.extra})
        self.errors: dict[str, str] = {} if errors is None else errors
        self.at = array("q", bytes(8 * capacity))
        self.n = 0

    def measure(self, full: bool = False, walk: bool | None = None, at: int | None = None) -> None:
        """Collect garbage, then record one row. Allocates nothing that survives.

        ``full``: a collection of the frozen heap too; ``walk`` (default: ``full``): pymalloc's
        bytes in the heap column. Each costs milliseconds: for checkpoints, not for every
        screening run. ``at``: the runs made when the row is taken (default: one per row).
        """
        if self.n >= self.capacity:
            raise IndexError("Counters is full")
        if full:
            full_collect()
        else:
            collect()
        walk = full if walk is None else walk
        cols = self.columns
        n = self.n
        cols["fds"][n] = open_fds()
        cols["threads"][n] = live_threads()
        if self.heap.missing is not None:  # RSS stands in for malloc's bytes: freed memory is given back first
            allocator.trim()
        cols["rss"][n] = rss()
        cols["heap"][n] = tracemalloc.get_traced_memory()[0] if self.traced else self.heap(walk)
        cols["blocks"][n] = sys.getallocatedblocks()
        for counter in self.extra:
            cols[counter.name][n] = read_counter(counter, self.errors)
        self.at[n] = n if at is None else at
        self.n = n + 1

    def series(self, metrics: Any) -> dict[str, list[float]]:
        return {m: self.values(m) for m in metrics}

    def runs_at(self) -> list[int]:
        return list(self.at[: self.n])

    def values(self, name: str) -> list[float]:
        return list(self.columns[name][: self.n])

    def metrics(self) -> tuple[str, ...]:
        """Every column: the screen's counters, then the project's."""
        return (*SCREEN_METRICS, *(c.name for c in self.extra))
