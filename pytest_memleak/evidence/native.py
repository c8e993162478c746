"""Native memory: what lives outside Python's allocator, and where memray says it came from.

tracemalloc sees only Python's allocators, so a C extension's ``malloc`` that is never freed
shows as +0 traced bytes and +RSS. Two tools here:

* :func:`trim` and :func:`native_bytes`: RSS read after giving freed memory back to the OS
  (glibc's ``malloc_trim(0)``, jemalloc's purge), so that memory freed by the test but kept by
  the allocator does not look retained. The caller subtracts the traced Python heap.
* :func:`attribute_native`: one more run under memray with native stacks, returning the
  native allocation stacks still alive at its end, or a plain note when memray saw nothing
  substantial (memory from a library whose ``malloc`` memray does not intercept, such as a
  ``malloc`` reached through ``ctypes`` symbol lookup).

Cheap to import: ctypes is loaded on first use (by :mod:`pytest_memleak.probe.allocator`), psutil
and memray inside the functions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_memleak.check import measuring
from pytest_memleak.config.units import format_size
from pytest_memleak.probe import allocator, process
from pytest_memleak.probe.paths import short_path

CAPTURE_SUFFIX = "-native.bin"
MIN_RECORD = 4096  # bytes: smaller native allocations still alive are not worth a line
SEEN_FRACTION = 0.5  # memray must see at least this share of the expected growth to "see" it

UNSEEN = (
    "memray could not see this allocation: memory from a library memray does not intercept "
    "(e.g. malloc reached via ctypes symbol lookup, or memory mapped directly)"
)

# Native frames that mean "this allocation is Python's own heap" (pymalloc arenas, object
# and raw allocators): tracemalloc already accounts for it, so it is not native evidence.
_PYTHON_ALLOCATOR_FRAMES = frozenset(
    {
        "_PyObject_Malloc",
        "_PyObject_Calloc",
        "_PyObject_Realloc",
        "_PyObject_ArenaMmap",
        "_PyObject_ArenaMalloc",
        "new_arena",
        "allocate_from_new_pool",
        "pymalloc_alloc",
        "pymalloc_realloc",
        "_PyMem_RawMalloc",
        "_PyMem_RawCalloc",
        "_PyMem_RawRealloc",
        "PyMem_RawMalloc",
        "PyMem_RawCalloc",
        "PyMem_RawRealloc",
        "PyMem_Malloc",
        "PyMem_Calloc",
        "PyMem_Realloc",
        "PyObject_Malloc",
        "PyObject_Calloc",
        "PyObject_Realloc",
        "_PyMem_DebugRawAlloc",
        "_PyMem_DebugRawRealloc",
    }
)
# Python frames from these places are the test harness, not the code under test.
_HARNESS_PARTS = (
    f"{os.sep}pytest_memleak{os.sep}",
    f"{os.sep}_pytest{os.sep}",
    f"{os.sep}pluggy{os.sep}",
    f"{os.sep}memray{os.sep}",
)
# CPython's own C sources, as memray names them for interpreter frames (relative, or absolute
# in the build tree): these frames are the interpreter, not the code that allocated.
_INTERPRETER_DIRS = ("Objects/", "Python/", "Modules/", "Include/", "Parser/")

def can_trim() -> bool:
    """True when :func:`trim` really gives memory back (glibc, jemalloc); False where it is a no-op."""
    return allocator.can_trim()


def trim() -> None:
    """Give freed heap memory back to the OS (:func:`pytest_memleak.probe.allocator.trim`); a no-op
    where the allocator in use has no way to.

    Freed ``malloc`` memory stays resident until the allocator returns it: without a trim,
    RSS stays up after a test frees what it allocated, and fragmentation makes it creep.
    """
    allocator.trim()


def native_bytes() -> int:
    """Resident set size in bytes after :func:`trim` (-1 when the platform can't tell).

    This is RSS, not yet "native": the caller subtracts the traced Python heap.
    """
    trim()
    return measuring.rss()


def uss() -> int:
    """Unique set size in bytes after :func:`trim` (memory only this process maps), or -1.

    USS leaves out shared library pages that RSS counts; it reads ``/proc/self/smaps`` and so
    costs about a millisecond (more for a big process) against RSS's microseconds.
    """
    trim()
    try:
        return int(process.psutil_process().memory_full_info().uss)
    except Exception:
        return -1


# -- attribution with memray --------------------------------------------------------------


def _is_python_heap(frames: Sequence[tuple[str, str, int]]) -> bool:
    return any(fn in _PYTHON_ALLOCATOR_FRAMES for fn, _, _ in frames[:8])


def _frame_text(fn: str, filename: str, line: int) -> str | None:
    """A readable frame, or None for interpreter internals and harness frames."""
    if not fn or fn in ("<unknown>", "??"):
        return None
    if not filename.endswith((".py", ".pyw")) and not filename.startswith("<"):
        path = filename.replace(os.sep, "/")
        if any(path.startswith(d) or f"/{d}" in path for d in _INTERPRETER_DIRS):
            return None
        return fn  # a native frame of a library: its symbol says it all
    if filename.startswith("<") and filename not in ("<string>", "<stdin>"):
        return fn if filename == "<unknown>" else None
    if any(part in filename for part in _HARNESS_PARTS):
        return None
    return f"{fn} ({short_path(filename)}:{line})"


def _stack_line(frames: Sequence[tuple[str, str, int]], limit: int = 8) -> str:
    shown: list[str] = []
    for fn, filename, line in frames:
        text = _frame_text(fn, filename, line)
        if text and (not shown or shown[-1] != text):
            shown.append(text)
        if len(shown) >= limit:
            break
    return " <- ".join(shown) if shown else "(no readable frames)"


def _records(capture: Path) -> list[tuple[int, int, str, list[tuple[str, str, int]]]]:
    """(size, allocations, allocating function, frames innermost first) of allocations alive at the end."""
    import memray

    out = []
    reader = memray.FileReader(str(capture))
    try:
        for rec in reader.get_leaked_allocation_records(merge_threads=True):
            try:
                frames = [(str(f), str(p), int(n)) for f, p, n in rec.hybrid_stack_trace(max_stacks=64)]
            except Exception:  # no native information for this record
                frames = [(str(f), str(p), int(n)) for f, p, n in rec.stack_trace(max_stacks=64)]
            try:
                function = memray.AllocatorType(rec.allocator).name.lower()
            except Exception:
                function = str(rec.allocator)
            out.append((int(rec.size), int(rec.n_allocations), function, frames))
    finally:
        reader.close()
    return out


def attribute_native(
    run: Callable[[], object],
    base: Path,
    expected: float | None = None,
    top: int = 5,
    keep_capture: bool = True,
) -> tuple[list[str], str | None]:
    """Run ``run()`` once under memray (native stacks) and name the native memory it kept.

    Returns readable lines, one per allocation stack still alive at the end of the run
    (largest first, Python's own heap left out, as tracemalloc covers it), and a note: None
    when memray saw the growth, otherwise a plain sentence saying what memray could not see.
    ``expected`` is the native growth per run that was measured (bytes); memray "sees" it when
    the stacks it names add up to at least half of it. The capture is written to
    ``<base>-native.bin`` (kept when ``keep_capture``, for ``memray flamegraph --leaks``).
    Never raises for a memray problem; KeyboardInterrupt and SystemExit propagate.
    """
    capture = Path(str(base) + CAPTURE_SUFFIX)
    try:
        capture.parent.mkdir(parents=True, exist_ok=True)
        capture.unlink(missing_ok=True)  # memray refuses to overwrite a capture
    except OSError as exc:
        return [], f"no native attribution: cannot write {capture}: {exc.strerror or exc}"
    try:
        import memray
    except Exception as exc:
        return [], f"no native attribution: memray is not available ({type(exc).__name__}: {exc})"
    try:
        tracker = memray.Tracker(
            str(capture), native_traces=True, trace_python_allocators=False, follow_fork=False
        )
        tracker.__enter__()
    except Exception as exc:  # another tracker active (pytest-memray, a flamegraph), no support
        with contextlib.suppress(OSError):
            capture.unlink(missing_ok=True)
        return [], f"no native attribution: memray could not attach: {type(exc).__name__}: {exc}"
    raised: str | None = None
    try:
        run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pytest outcomes are BaseExceptions; NotRepeatable too
        raised = f"the run under memray raised {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        try:
            tracker.__exit__(None, None, None)
        except Exception as exc:
            raised = (raised + "; " if raised else "") + f"memray failed to finish: {exc}"
    try:
        records = _records(capture)
    except Exception as exc:
        return [], f"no native attribution: memray's capture could not be read: {type(exc).__name__}: {exc}"
    finally:
        if not keep_capture:
            with contextlib.suppress(OSError):
                capture.unlink(missing_ok=True)

    # Group by readable stack: records of one call site differ only in frames we hide.
    groups: dict[str, list[Any]] = {}
    for size, count, function, frames in records:
        if size <= 0 or _is_python_heap(frames):
            continue
        key = _stack_line(frames)
        entry = groups.setdefault(key, [0, 0, set()])
        entry[0] += size
        entry[1] += count
        entry[2].add(function)  # memray's name of the call: malloc, calloc, mmap, ...
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])
    floor = MIN_RECORD if expected is None else max(MIN_RECORD, 0.05 * expected)
    shown = [(stack, e) for stack, e in ranked if e[0] >= floor][:top]
    seen = sum(e[0] for _, e in shown)
    lines = [
        f"{format_size(e[0])} in {e[1]} allocation(s) [{'/'.join(sorted(e[2]))}]: {stack}"
        for stack, e in shown
    ]
    if lines:
        lines.insert(0, "memray native stacks still alive after one more run (largest first):")
        if keep_capture:
            lines.append(f"native capture: {capture} (memray flamegraph --leaks / memray tree)")
    note: str | None = None
    if not shown:
        note = UNSEEN
    elif expected is not None and expected > 0 and seen < SEEN_FRACTION * expected:
        note = (
            f"memray saw only {format_size(seen)} of the {format_size(expected)}/run native growth; "
            f"the rest is invisible to it: {UNSEEN.split(': ', 1)[1]}"
        )
    if raised:
        note = f"{note}; {raised}" if note else raised
    return lines, note
