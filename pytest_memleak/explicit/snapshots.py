"""Memory snapshots, their differences, and deliberate allocations, for explicit leak checks.

Not every leak check is "run this test again": often a test wants to take a baseline, drive
a workload, and fail if more than some budget stayed behind, naming where it was allocated;
or to push the process towards its memory limit on purpose and watch how it copes::

    from pytest_memleak import allocate, cleanup, compare, snapshot

    baseline = snapshot()
    for message in messages:
        service.handle(message)
    diff = compare(baseline)
    diff.assert_within(retained="2 MiB", per_site="256 KiB", objects={"Conversation": 0})

    holder = allocate("64 MiB", kind="native")   # resident at once, invisible to tracemalloc
    recovered = cleanup(holder)                  # Recovered(rss=..., heap=..., released=...)

The pytest fixtures ``mem_snapshot``, ``mem_compare``, ``mem_allocate`` and ``mem_cleanup``
(:mod:`pytest_memleak.explicit.fixtures`) wrap these and add tracing and teardown for one test.

This module is cheap to import: psutil, ctypes and the site attribution of
:mod:`pytest_memleak.evidence.sites` are imported when first needed.
"""

from __future__ import annotations

import gc
import itertools
import mmap
import os
import sys
import threading
import time as _time
import tracemalloc
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pytest_memleak.check import measuring
from pytest_memleak.config.units import SIZE_FORM, format_size, parse_size
from pytest_memleak.probe import allocator
from pytest_memleak.probe.census import census
from pytest_memleak.probe.paths import PACKAGE_DIR, short_path

if TYPE_CHECKING:
    from pytest_memleak.evidence.sites import Classifier
    from pytest_memleak.results import SiteGrowth

__all__ = [
    "Diff",
    "Holder",
    "Recovered",
    "Snapshot",
    "allocate",
    "cleanup",
    "compare",
    "snapshot",
]

PAGE = mmap.PAGESIZE
SHOWN_SITES = 5  # sites listed by str(diff) and by a failing assert_within

_seq = itertools.count(1)
_live: weakref.WeakSet[Snapshot] = weakref.WeakSet()  # snapshots whose trace data is alive
_process_cache: dict[int, tuple[Any, float]] = {}  # pid -> (psutil.Process, start time)


# --------------------------------------------------------------------------------------
# sizes


def _size(value: object, name: str = "size") -> int:
    """parse_size with the accepted form in the message (negative and unparseable: ValueError)."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}; expected {SIZE_FORM}") from None


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


# --------------------------------------------------------------------------------------
# snapshots


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What the process held at one moment, after a garbage collection. Immutable.

    ``heap_bytes`` is the traced Python heap (tracemalloc) less what live snapshots themselves
    keep, or None when tracemalloc was not tracing; ``heap_blocks`` is
    ``sys.getallocatedblocks()`` (always available). ``uss`` is None where psutil cannot
    read it. ``objects`` counts gc-tracked objects by type name (``module.Qualname``; bare
    ``Qualname`` for builtins). ``trace_snapshot`` is the ``tracemalloc.Snapshot`` taken when
    tracing was on; it is dropped when the snapshot is pickled.
    """

    time: float  # wall clock, time.time()
    monotonic: float  # time.monotonic(), for durations
    pid: int
    started: float  # the process's start time: pid plus this names the process
    seq: int  # order of snapshots within the process
    heap_bytes: int | None
    heap_blocks: int
    rss: int
    uss: int | None
    threads: int
    fds: int
    objects: Mapping[str, int]
    tracing: bool
    frames: int  # tracemalloc's traceback limit when tracing, else 0
    trace_snapshot: tracemalloc.Snapshot | None = field(default=None, repr=False)
    label: str = ""
    overhead_bytes: int = field(default=0, repr=False)  # traced bytes this snapshot keeps alive
    overhead_blocks: int = field(default=0, repr=False)

    @property
    def object_count(self) -> int:
        return sum(self.objects.values())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["objects"] = dict(self.objects)
        state["trace_snapshot"] = None  # big, and useless in another process
        state["overhead_bytes"] = state["overhead_blocks"] = 0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["objects"] = MappingProxyType(dict(state.get("objects", {})))
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def __str__(self) -> str:
        heap = "untraced" if self.heap_bytes is None else format_size(self.heap_bytes)
        uss = "?" if self.uss is None else format_size(self.uss)
        label = f" {self.label!r}" if self.label else ""
        return (
            f"Snapshot{label} #{self.seq} of pid {self.pid}: heap {heap} in {self.heap_blocks} blocks,"
            f" RSS {format_size(self.rss)}, USS {uss}, {self.threads} threads, {self.fds} fds,"
            f" {self.object_count} gc objects"
        )


def _process() -> tuple[Any, float]:
    pid = os.getpid()
    cached = _process_cache.get(pid)
    if cached is None:
        import psutil

        proc = psutil.Process(pid)
        try:
            started = float(proc.create_time())
        except Exception:
            started = 0.0
        cached = _process_cache[pid] = (proc, started)
    return cached


def prepare() -> None:
    """Import and warm up what :func:`snapshot` uses (psutil, libc, site attribution), so a
    baseline taken right after ``tracemalloc.start()`` doesn't trace those one-off costs."""
    from pytest_memleak.evidence import sites  # noqa: F401

    proc, _ = _process()
    _uss(proc)
    trim()


def _uss(proc: Any) -> int | None:
    try:
        return int(proc.memory_full_info().uss)
    except Exception:
        return None


def _own_objects(live: Iterable[Snapshot]) -> list[object]:
    """The gc-tracked containers that live snapshots hold (not the user's objects)."""
    # the weak references of the registries (WeakSet.data is a set of weakref.ref)
    own: list[object] = [*getattr(_live, "data", ()), *getattr(_holders, "data", ())]
    for snap in live:
        own.append(snap.__dict__)
        own.append(snap.objects)
        own.extend(gc.get_referents(snap.objects))
        trace = snap.trace_snapshot
        if trace is not None:
            traces = getattr(trace, "traces", None)
            for obj in (trace, traces):
                own.append(obj)
                own.append(getattr(obj, "__dict__", None))
            own.append(getattr(traces, "_traces", None))
    return own


def snapshot(label: str = "") -> Snapshot:
    """Collect garbage, then record the process's memory and resources in a :class:`Snapshot`.

    Takes a ``tracemalloc`` snapshot too when tracemalloc is tracing (start it first, e.g.
    ``tracemalloc.start(16)``, to get allocation sites in :func:`compare`). Costs two full
    garbage collections, one pass over the gc-tracked objects and, when tracing, one
    tracemalloc snapshot: tens of milliseconds, more for a big traced heap.
    """
    if not isinstance(label, str):
        raise TypeError(f"label must be a string, got {label!r}")
    proc, started = _process()
    tracing = tracemalloc.is_tracing()
    if tracing:
        from pytest_memleak.evidence import sites  # noqa: F401 - imported before measuring, not between two snapshots
    measuring.collect()
    trim()  # freed C heap back to the OS, so RSS shows what is held
    rss = measuring.rss()
    uss = _uss(proc)
    threads = measuring.live_threads()
    fds = measuring.open_fds()
    pid = os.getpid()
    live = [s for s in _live if s.pid == pid]
    exclude = _own_objects(live)
    blocks0 = sys.getallocatedblocks()
    traced0 = tracemalloc.get_traced_memory()[0] if tracing else 0
    objects = MappingProxyType(census(exclude))
    del exclude
    trace = None
    if tracing:
        trace = tracemalloc.take_snapshot()
        gc.collect()  # untracks its tuples, so later snapshots don't count them as 'tuple'
    heap_bytes = None
    if tracing:
        heap_bytes = max(0, traced0 - sum(s.overhead_bytes for s in live))
    heap_blocks = max(0, blocks0 - sum(s.overhead_blocks for s in live))
    snap = Snapshot(
        time=_time.time(),
        monotonic=_time.monotonic(),
        pid=pid,
        started=started,
        seq=next(_seq),
        heap_bytes=heap_bytes,
        heap_blocks=heap_blocks,
        rss=rss,
        uss=uss,
        threads=threads,
        fds=fds,
        objects=objects,
        tracing=tracing,
        frames=tracemalloc.get_traceback_limit() if tracing else 0,
        trace_snapshot=trace,
        label=label,
    )
    snap.__dict__  # noqa: B018 - materialised now, so it is part of the overhead measured next
    _live.add(snap)
    traced1 = tracemalloc.get_traced_memory()[0] if tracing else 0
    blocks1 = sys.getallocatedblocks()
    object.__setattr__(snap, "overhead_bytes", max(0, traced1 - traced0))
    object.__setattr__(snap, "overhead_blocks", max(0, blocks1 - blocks0))
    return snap


# --------------------------------------------------------------------------------------
# differences


def _check_pair(baseline: object, current: object) -> None:
    for name, value in (("baseline", baseline), ("current", current)):
        if not isinstance(value, Snapshot):
            raise TypeError(
                f"{name} must be a Snapshot (from snapshot() or the mem_snapshot fixture), got {value!r}"
            )
    assert isinstance(baseline, Snapshot) and isinstance(current, Snapshot)
    _check_process(baseline, current.pid, current.started)
    if baseline.seq > current.seq:
        raise ValueError(
            f"baseline was taken after current (snapshot #{baseline.seq} after #{current.seq});"
            " call compare(baseline, current) with the earlier snapshot first"
        )


def _check_process(
    baseline: Snapshot, pid: int | None = None, started: float | None = None
) -> None:
    """ValueError unless baseline comes from the process ``pid`` started at ``started``
    (default: this process)."""
    if pid is None or started is None:
        pid, started = os.getpid(), _process()[1]
    if (baseline.pid, baseline.started) != (pid, started):
        same_pid = " (a different process with the same pid)" if baseline.pid == pid else ""
        raise ValueError(
            f"the baseline was taken in another process{same_pid}: pid {baseline.pid} started at"
            f" {baseline.started:.2f}, current pid {pid} started at {started:.2f};"
            " snapshots can only be compared within the process that took them"
        )


def _matches(type_name: str, wanted: str) -> bool:
    return type_name == wanted or type_name.endswith("." + wanted)


@dataclass(frozen=True, eq=False)
class Diff:
    """What changed from ``baseline`` to ``current``: every delta, the sites and types that grew.

    ``retained`` is the net growth of the traced Python heap outside pytest and this plugin
    (the sum over allocation sites; ``allocate(kind="python")`` buffers count, charged to
    the line that asked for them), or None unless both snapshots were traced.
    ``sites`` lists the allocation sites (``file:line``) that grew, user code (under the
    root directory) first, then other code by growth. ``grown_types`` maps type names to
    their growth in instances, largest first.
    """

    baseline: Snapshot = field(repr=False)
    current: Snapshot = field(repr=False)
    seconds: float
    heap_bytes: int | None
    heap_blocks: int
    rss: int
    uss: int | None
    threads: int
    fds: int
    retained: int | None
    sites: list[SiteGrowth] = field(default_factory=list)
    grown_types: dict[str, int] = field(default_factory=dict)
    user_sites: frozenset[str] = field(default_factory=frozenset, repr=False)

    @property
    def traced(self) -> bool:
        """True when both snapshots carried tracemalloc snapshots (so sites are known)."""
        return self.retained is not None

    def objects(self, name: str) -> int:
        """Growth in instances of the type ``name`` (full ``module.Qualname`` or just ``Qualname``)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a type name must be a non-empty string, got {name!r}")
        names = set(self.baseline.objects) | set(self.current.objects)
        return sum(
            self.current.objects.get(n, 0) - self.baseline.objects.get(n, 0)
            for n in names
            if _matches(n, name)
        )

    # -- budgets ----------------------------------------------------------------------------
    def assert_within(
        self,
        retained: int | float | str | None = None,
        per_site: int | float | str | None = None,
        objects: Mapping[str, int] | None = None,
        rss: int | float | str | None = None,
        *,
        fds: int | None = None,
        threads: int | None = None,
    ) -> None:
        """Raise AssertionError naming every budget exceeded and the top allocation sites.

        ``retained``: bytes the traced Python heap may keep (needs tracing; falls back to the
        traced heap totals when the snapshots lost their traces, e.g. by pickling).
        ``per_site``: bytes any single allocation site may keep (needs tracing).
        ``objects``: type name -> instances that may remain (``{"Conversation": 0}``).
        ``rss``: bytes the resident set may grow. ``fds``, ``threads``: counts.
        Sizes are ints or strings such as ``"2 MiB"``; bad values raise ValueError.
        """
        __tracebackhide__ = True
        budgets_given = (retained, per_site, objects, rss, fds, threads)
        if all(b is None for b in budgets_given):
            raise ValueError(
                "assert_within() needs at least one budget: retained, per_site, objects, rss, fds or threads"
            )
        problems: list[str] = []
        if retained is not None:
            budget = _size(retained, "retained")
            if self.retained is not None:
                amount, what = self.retained, "stayed on the traced Python heap"
            elif self.heap_bytes is not None:
                amount, what = self.heap_bytes, "stayed on the traced Python heap (totals only)"
            else:
                raise ValueError(
                    "retained= needs snapshots taken while tracemalloc was tracing (the mem_snapshot"
                    " fixture traces unless called with trace=False; outside pytest call"
                    " tracemalloc.start(16) before the baseline); use rss= for untraced snapshots"
                )
            if amount > budget:
                problems.append(
                    f"retained: {format_size(amount, signed=True)} {what}, budget {format_size(budget)}"
                )
        if per_site is not None:
            budget = _size(per_site, "per_site")
            if not self.traced:
                raise ValueError(
                    "per_site= needs allocation sites, so both snapshots must carry tracemalloc"
                    " snapshots (trace with the mem_snapshot fixture or tracemalloc.start(16))"
                )
            over = [site for site in self.sites if site.total_bytes > budget]
            over.sort(key=lambda site: -site.total_bytes)
            for site in over[:SHOWN_SITES]:
                problems.append(
                    f"per site: {short_path(site.site)} kept {format_size(site.total_bytes, signed=True)}"
                    f" in {site.total_blocks:+d} blocks, budget {format_size(budget)} per site"
                )
            if len(over) > SHOWN_SITES:
                problems.append(
                    f"per site: ... and {len(over) - SHOWN_SITES} more sites over budget"
                )
        if objects is not None:
            if not isinstance(objects, Mapping):
                raise ValueError(
                    f"objects must map type names to counts, e.g. {{'Conversation': 0}}, got {objects!r}"
                )
            for name, allowed in objects.items():
                allowed = _count(allowed, f"objects[{name!r}]")
                grew = self.objects(name)
                if grew > allowed:
                    problems.append(f"objects: {name} {grew:+d} instances, budget {allowed}")
        if rss is not None:
            budget = _size(rss, "rss")
            if self.rss > budget:
                problems.append(
                    f"rss: {format_size(self.rss, signed=True)}, budget {format_size(budget)}"
                )
        for name, value, delta in (("fds", fds, self.fds), ("threads", threads, self.threads)):
            if value is not None and delta > _count(value, name):
                problems.append(f"{name}: {delta:+d}, budget {value}")
        if problems:
            raise AssertionError(self._failure(problems))

    def _failure(self, problems: list[str]) -> str:
        lines = [
            f"memory grew beyond its budget between snapshot #{self.baseline.seq} and"
            f" #{self.current.seq} ({self.seconds:.2f} s apart):"
        ]
        lines += [f"  {p}" for p in problems]
        if self.sites:
            lines.append("where it was allocated (user code first, then by growth):")
            lines += self._site_lines(SHOWN_SITES, stacks=True)
        elif not self.traced:
            lines.append("(no allocation sites: the snapshots were not traced by tracemalloc)")
        if self.grown_types:
            lines.append("types that grew: " + self._types_text(8))
        lines.append("measured: " + self._deltas_text())
        return "\n".join(lines)

    # -- text -----------------------------------------------------------------------------
    def _site_lines(self, limit: int, stacks: bool = False) -> list[str]:
        shown = self.sites[:limit]
        width = min(60, max((len(short_path(s.site)) for s in shown), default=0))
        lines = []
        for s in shown:
            mark = "" if s.site in self.user_sites else "  (outside the project)"
            lines.append(
                f"  {short_path(s.site):<{width}}  {format_size(s.total_bytes, signed=True):>10}"
                f"  {s.total_blocks:+d} blocks{mark}"
            )
            after = s.stack.index(s.site) + 1 if s.site in s.stack else len(s.stack)
            callers = [short_path(f) for f in s.stack[after : after + 3]]
            if stacks and callers:
                lines.append("      called from " + " <- ".join(callers))
        if len(self.sites) > limit:
            lines.append(f"  ... and {len(self.sites) - limit} more sites")
        return lines

    def _types_text(self, limit: int) -> str:
        items = list(self.grown_types.items())
        text = ", ".join(f"{name} {n:+d}" for name, n in items[:limit])
        return text + (f", ... {len(items) - limit} more" if len(items) > limit else "")

    def _deltas_text(self) -> str:
        parts = []
        if self.heap_bytes is not None:
            parts.append(
                f"heap {format_size(self.heap_bytes, signed=True)} ({self.heap_blocks:+d} blocks)"
            )
        else:
            parts.append(f"heap {self.heap_blocks:+d} blocks (untraced)")
        if self.retained is not None:
            parts.append(f"retained {format_size(self.retained, signed=True)}")
        parts.append(f"RSS {format_size(self.rss, signed=True)}")
        if self.uss is not None:
            parts.append(f"USS {format_size(self.uss, signed=True)}")
        parts.append(f"threads {self.threads:+d}")
        parts.append(f"fds {self.fds:+d}")
        return ", ".join(parts) + f" in {self.seconds:.2f} s"

    def __str__(self) -> str:
        text = self._deltas_text()
        if self.sites:
            top = self.sites[0]
            text += f"; top site {short_path(top.site)} {format_size(top.total_bytes, signed=True)} ({top.total_blocks:+d} blocks)"
        if self.grown_types:
            text += "; grew " + self._types_text(4)
        return text


def _totals(trace: tracemalloc.Snapshot, classifier: Classifier) -> Any:
    """:func:`sites.totals`, with ``allocate(kind="python")`` buffers charged to its caller."""
    from pytest_memleak.evidence import sites

    return sites.totals(trace, classifier, adjust=_charge_buffers_to_caller)


def _charge_buffers_to_caller(frames: Any) -> Any:
    if frames and frames[0] in _BUFFER_FRAMES:
        return _callers_frames(frames)
    return frames


def _site_growth(
    baseline: Snapshot, current: Snapshot, classifier: Classifier
) -> tuple[int, list[SiteGrowth], frozenset[str]]:
    from pytest_memleak.evidence import sites

    assert baseline.trace_snapshot is not None and current.trace_snapshot is not None
    before = _totals(baseline.trace_snapshot, classifier)
    after = _totals(current.trace_snapshot, classifier)
    grown = sites.growth(before, after, 1, classifier)
    user = frozenset(
        f"{classifier.relpath(filename)}:{lineno}"
        for filename, lineno in after.sizes
        if classifier.kind(filename) == "project"
    )
    grown.sort(key=lambda g: g.site not in user)  # stable: by growth within each group
    return after.total_bytes - before.total_bytes, grown, user


def compare(
    baseline: Snapshot,
    current: Snapshot | None = None,
    *,
    rootdir: str | os.PathLike[str] | None = None,
) -> Diff:
    """What changed since ``baseline``: a :class:`Diff` (``current`` defaults to a new snapshot).

    Allocation sites are attributed to the innermost frame under ``rootdir`` (default: the
    current directory), so the project's own ``file:line`` is named rather than the library
    call that allocated. Raises ValueError for snapshots of another process or in the wrong
    order, TypeError for anything that is not a Snapshot.
    """
    if current is None:
        _check_pair(baseline, baseline)  # a bad baseline fails before the snapshot is taken
        _check_process(baseline)
        current = snapshot()
    _check_pair(baseline, current)
    retained: int | None = None
    grown: list[SiteGrowth] = []
    user: frozenset[str] = frozenset()
    if baseline.trace_snapshot is not None and current.trace_snapshot is not None:
        from pytest_memleak.evidence.sites import Classifier

        classifier = Classifier(os.fspath(rootdir) if rootdir is not None else os.getcwd())
        retained, grown, user = _site_growth(baseline, current, classifier)
    names = set(current.objects) | set(baseline.objects)
    types = {n: current.objects.get(n, 0) - baseline.objects.get(n, 0) for n in names}
    grown_types = dict(
        sorted(((n, d) for n, d in types.items() if d > 0), key=lambda kv: (-kv[1], kv[0]))
    )
    heap = None
    if baseline.heap_bytes is not None and current.heap_bytes is not None:
        heap = current.heap_bytes - baseline.heap_bytes
    uss = None if baseline.uss is None or current.uss is None else current.uss - baseline.uss
    return Diff(
        baseline=baseline,
        current=current,
        seconds=current.monotonic - baseline.monotonic,
        heap_bytes=heap,
        heap_blocks=current.heap_blocks - baseline.heap_blocks,
        rss=current.rss - baseline.rss,
        uss=uss,
        threads=current.threads - baseline.threads,
        fds=current.fds - baseline.fds,
        retained=retained,
        sites=grown,
        grown_types=grown_types,
        user_sites=user,
    )


# --------------------------------------------------------------------------------------
# deliberate allocations

def trim() -> None:
    """Give free heap memory back to the OS where the allocator can (glibc's ``malloc_trim``,
    jemalloc's purge: :func:`pytest_memleak.probe.allocator.trim`)."""
    allocator.trim()


def _python_buffer(size: int) -> bytearray:
    buffer = bytearray(size)
    buffer[::PAGE] = b"\x01" * len(range(0, size, PAGE))  # one write per page: resident
    return buffer


# A trace whose innermost frame is here is a buffer the caller asked for: compare() charges
# it to the caller's line, not to this plugin (whose own allocations it ignores).
_BUFFER_FRAMES = frozenset(
    (_python_buffer.__code__.co_filename, line)
    for _, _, line in _python_buffer.__code__.co_lines()
    if line is not None
)


def _callers_frames(frames: Any) -> Any:
    return tuple(f for f in frames if not f[0].startswith(PACKAGE_DIR)) or frames


class _Allocation:
    """One allocation: a bytearray (kind "python") or a malloc'd pointer (kind "native")."""

    __slots__ = ("kind", "size", "_buffer", "_pointer", "_lock")

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.size = size
        self._buffer: bytearray | None = None
        self._pointer: int | None = None
        self._lock = threading.Lock()
        if size == 0:
            return
        if kind == "python":
            self._buffer = _python_buffer(size)
        else:
            pointer = allocator.malloc(size)  # the allocator in use, as a C extension reaches it
            if not pointer:
                raise MemoryError(f"malloc({size}) failed")
            allocator.memset(pointer, 1, size)  # touches every page
            self._pointer = pointer

    @property
    def alive(self) -> bool:
        return self._buffer is not None or self._pointer is not None

    def release(self) -> int:
        """Free the memory; returns the bytes released (0 if already released)."""
        with self._lock:
            buffer, pointer = self._buffer, self._pointer
            self._buffer = self._pointer = None
        if pointer is not None:
            allocator.free(pointer)
            return self.size
        if buffer is not None:
            del buffer
            return self.size
        return 0

    def __del__(self) -> None:
        try:
            if self._pointer is not None:
                self.release()
        except Exception:  # at interpreter shutdown libc may be gone: the OS reclaims it
            pass


_holders: weakref.WeakSet[Holder] = weakref.WeakSet()


class Holder:
    """Keeps what :func:`allocate` made alive until :func:`cleanup` (or until it is dropped).

    Dropping the last reference to a holder frees its memory too, native included.
    """

    __slots__ = ("label", "_items", "_lock", "__weakref__")

    def __init__(self, label: str = "") -> None:
        self.label = label
        self._items: list[_Allocation] = []
        self._lock = threading.Lock()
        _holders.add(self)

    def _add(self, item: _Allocation) -> None:
        with self._lock:
            self._items.append(item)

    def _take(self, items: Iterable[_Allocation] | None = None) -> list[_Allocation]:
        """Remove and return ``items`` (default: all) from this holder."""
        with self._lock:
            if items is None:
                taken, self._items = self._items, []
                return taken
            wanted = {id(i) for i in items}
            taken = [i for i in self._items if id(i) in wanted]
            self._items = [i for i in self._items if id(i) not in wanted]
            return taken

    def _bytes(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(i.size for i in self._items if i.alive and (kind is None or i.kind == kind))

    @property
    def python_bytes(self) -> int:
        return self._bytes("python")

    @property
    def native_bytes(self) -> int:
        return self._bytes("native")

    @property
    def nbytes(self) -> int:
        """Bytes held, Python and native."""
        return self._bytes()

    @property
    def allocations(self) -> int:
        with self._lock:
            return sum(1 for i in self._items if i.alive)

    def __repr__(self) -> str:
        label = f" {self.label!r}" if self.label else ""
        return (
            f"<Holder{label}: {self.allocations} allocations, python {format_size(self.python_bytes)},"
            f" native {format_size(self.native_bytes)}>"
        )


@dataclass(frozen=True)
class Recovered:
    """What a cleanup gave back, in bytes.

    ``rss``: how far the resident set fell (negative if it grew). ``heap``: how far the
    traced Python heap fell when tracemalloc is tracing (``heap_measured``), otherwise the
    Python buffer bytes released. ``released``: the bytes the holders had allocated and
    released (Python and native), whatever the OS did with them.
    """

    rss: int
    heap: int
    released: int
    heap_measured: bool = False

    def __str__(self) -> str:
        heap = format_size(self.heap) + ("" if self.heap_measured else " (released, untraced)")
        return f"recovered RSS {format_size(self.rss)}, heap {heap} of {format_size(self.released)} released"


Kind = Literal["python", "native"]


def _new_allocation(size: object, kind: object) -> _Allocation:
    if kind not in ("python", "native"):
        raise ValueError(f"kind must be 'python' or 'native', got {kind!r}")
    nbytes = _size(size, "size")
    return _Allocation(str(kind), nbytes)


def _check_holder(holder: object) -> None:
    if holder is not None and not isinstance(holder, Holder):
        raise TypeError(f"holder must be a Holder (as returned by allocate()), got {holder!r}")


def allocate(
    size: int | float | str, holder: Holder | None = None, kind: Kind = "python"
) -> Holder:
    """Allocate ``size`` bytes, touch every page so RSS shows them, keep them in ``holder``.

    ``kind="python"`` is a ``bytearray`` from Python's allocator (visible to tracemalloc);
    ``kind="native"`` is C ``malloc`` memory, outside Python's allocator: it shows in RSS
    and not in tracemalloc. ``size``: bytes or a string such as ``"64 MiB"``. Returns the
    holder (a new one when none is given: keep it, dropping it frees the memory).
    """
    _check_holder(holder)
    item = _new_allocation(size, kind)
    if holder is None:
        holder = Holder()
    holder._add(item)
    return holder


def _release(items: Iterable[_Allocation]) -> Recovered:
    tracing = tracemalloc.is_tracing()
    rss0 = measuring.rss()
    heap0 = tracemalloc.get_traced_memory()[0] if tracing else 0
    released = python = 0
    for item in items:
        freed = item.release()
        released += freed
        if item.kind == "python":
            python += freed
    measuring.collect()
    trim()
    rss1 = measuring.rss()
    heap1 = tracemalloc.get_traced_memory()[0] if tracing else 0
    heap = heap0 - heap1 if tracing else python
    return Recovered(rss=rss0 - rss1, heap=heap, released=released, heap_measured=tracing)


def cleanup(holder: Holder | None = None) -> Recovered:
    """Free what ``holder`` keeps (every live holder when None), collect garbage, trim the
    C heap, and return what was recovered (:class:`Recovered`)."""
    _check_holder(holder)
    holders = [holder] if holder is not None else list(_holders)
    items = [item for h in holders if h is not None for item in h._take()]
    return _release(items)
