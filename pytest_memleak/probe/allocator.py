"""The C allocator that serves ``malloc`` here, and what can be asked of it: the only module
that calls it.

Which allocator: the address of ``malloc`` in the dynamic linker's default scope (where a C
extension's, ctypes' and Python's own ``malloc`` calls resolve) is compared with glibc's own
``malloc`` (looked up in ``libc.so.6``'s handle). Equal, glibc serves it; otherwise the file
that maps that address (``/proc/self/maps``) names it: an ``LD_PRELOAD`` of jemalloc or
tcmalloc, or one linked in. Reading the symbol's address is exact where a list of loaded
libraries is not: a jemalloc loaded by ``dlopen`` for one extension serves nothing else.

What that means: glibc's ``mallinfo2`` and ``malloc_trim`` stay reachable under another
allocator and describe glibc's arena that nothing uses (a constant reading, a trim that frees
nothing), so they are called only where glibc serves ``malloc``. :func:`allocated_bytes` is
glibc's ``mallinfo2`` (``uordblks + hblkhd``) there, and under jemalloc jemalloc's own count,
read through ``mallctl``: ``stats.allocated`` after a write to ``epoch`` (which refreshes the
statistics), minus ``stats.arenas.4096.tcache_bytes``, what the threads' caches hold. jemalloc
counts a region that a thread's cache keeps as allocated, its caches hold far more than glibc's
(790 KiB for one thread in a measured loop of buffers up to 8 KiB, 8 MiB for four threads), and
they fill and drain in batches: without the subtraction a clean loop's reading moved by tens of
KiB and a string that grew 100 kB read as shrinking by 104 to 278 kB. With it the count follows
what the program holds, to jemalloc's size classes and in every thread (a clean loop's reading
did not move in 2,000 runs), so glibc's cache allowance is more than jemalloc needs. glibc's
``mallinfo2`` is added: memory that code gets from glibc's own ``malloc`` (looked up in a
``libc.so.6`` handle, as ``ctypes.CDLL(ctypes.util.find_library("c"))`` does) is in glibc's
arena, which jemalloc does not count; otherwise that part stays constant. A read merges every
arena's statistics: about 10 us with one arena in use and 6 us more for each other one a thread
has used (jemalloc makes four per CPU), where glibc's costs under 1 us. Under any other
allocator, or a jemalloc built without statistics, it is None.

Under jemalloc :func:`trim` flushes the calling thread's cache and purges every arena
(``mallctl("arena.4096.purge")``): jemalloc keeps freed pages resident for its decay time
(10 s by default) and this gives them back at once, as ``malloc_trim`` does glibc's.

Cheap to import: ctypes is loaded on first use, once, under a lock. Every symbol is looked up
through :func:`_symbol` (a test replaces it to simulate a C library without one).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GLIBC = "libc.so.6"
_ALL_ARENAS = b"arena.4096.purge"  # MALLCTL_ARENAS_ALL: every arena
_CACHED = b"stats.arenas.4096.tcache_bytes"  # what every thread's cache holds, in every arena
_NAMED = ("jemalloc", "tcmalloc", "mimalloc", "musl")  # allocators a mapped file's name gives away


@dataclass(frozen=True)
class _Allocator:
    name: str  # glibc, jemalloc, tcmalloc, mimalloc, musl or unknown
    malloc: Any
    free: Any
    memset: Any
    allocated: Callable[[], int | None] | None  # bytes handed out: glibc's or jemalloc's statistics
    trims: tuple[tuple[Any, tuple[Any, ...]], ...]  # (function, arguments): what trim() calls
    statistics_missing: str | None
    trim_missing: str | None


_state: _Allocator | None = None
_lock = threading.Lock()


def _library(path: str | None) -> Any:
    """A C library handle (None: the default scope), or None where it cannot be loaded."""
    import ctypes

    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def _symbol(library: Any, name: str) -> Any:
    """``name`` in ``library``, or None: every lookup of this module goes through here."""
    if library is None:
        return None
    try:
        return getattr(library, name)
    except AttributeError:
        return None


def _address(function: Any) -> int | None:
    import ctypes

    return None if function is None else ctypes.cast(function, ctypes.c_void_p).value


def _mapped_file(address: int | None) -> str:
    """The file whose mapping holds ``address`` ("" where /proc/self/maps cannot tell)."""
    if address is None:
        return ""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, _, high = fields[0].partition("-")
                if int(low, 16) <= address < int(high, 16):
                    return fields[5].strip() if len(fields) == 6 else ""
    except (OSError, ValueError, IndexError):
        pass
    return ""


def _load() -> _Allocator:
    import ctypes

    default = _library("msvcrt" if sys.platform == "win32" else None)
    glibc = _library(GLIBC) if sys.platform.startswith("linux") else None
    malloc = _symbol(default, "malloc")
    glibc_malloc = _symbol(glibc, "malloc")
    if malloc is not None and _address(malloc) == _address(glibc_malloc):
        name = "glibc"
    else:
        path = os.path.basename(_mapped_file(_address(malloc)))
        name = next((n for n in _NAMED if n in path), "unknown")
    in_use = f"{name} is in use" if name != "unknown" else "malloc is not glibc's"
    if malloc is not None:
        malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free = _symbol(default, "free")
    if free is not None:
        free.restype, free.argtypes = None, [ctypes.c_void_p]
    memset = _symbol(default, "memset")
    if memset is not None:
        memset.restype, memset.argtypes = (
            ctypes.c_void_p,
            [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t],
        )

    allocated: Callable[[], int | None] | None = None
    trims: tuple[tuple[Any, tuple[Any, ...]], ...] = ()
    statistics_missing: str | None = f"glibc heap statistics unavailable ({in_use})"
    trim_missing: str | None = f"malloc_trim unavailable ({in_use})"
    if name == "glibc":
        mallinfo2 = _symbol(glibc, "mallinfo2")  # glibc 2.33 and later
        if mallinfo2 is None:
            statistics_missing = "glibc heap statistics unavailable (this glibc has no mallinfo2)"
        else:
            mallinfo2.restype, mallinfo2.argtypes = _mallinfo2_struct(), []
            allocated, statistics_missing = _glibc_allocated(mallinfo2), None
        malloc_trim = _symbol(glibc, "malloc_trim")
        if malloc_trim is None:
            trim_missing = "malloc_trim unavailable (this glibc has none)"
        else:
            malloc_trim.restype, malloc_trim.argtypes = ctypes.c_int, [ctypes.c_size_t]
            trims, trim_missing = ((malloc_trim, (0,)),), None
    elif name == "jemalloc":
        mallctl = _symbol(default, "mallctl")
        if mallctl is not None:
            pointer, size = ctypes.c_void_p, ctypes.c_size_t
            mallctl.restype = ctypes.c_int
            mallctl.argtypes = [ctypes.c_char_p, pointer, pointer, pointer, size]
            flush = (mallctl, (b"thread.tcache.flush", None, None, None, 0))
            purge = (mallctl, (_ALL_ARENAS, None, None, None, 0))
            if mallctl(*purge[1]) == 0:  # (0: done; an error number where the build refuses it)
                trims, trim_missing = (flush, purge), None
            allocated = _jemalloc_allocated(mallctl)
            if allocated is None:
                statistics_missing = (
                    "glibc heap statistics unavailable (jemalloc is in use, built without statistics)"
                )
            else:
                statistics_missing = None
                mallinfo2 = _symbol(glibc, "mallinfo2")
                if mallinfo2 is not None:  # what reaches glibc's own malloc, which jemalloc does not see
                    mallinfo2.restype, mallinfo2.argtypes = _mallinfo2_struct(), []
                    allocated = _sum(allocated, _glibc_allocated(mallinfo2))
    return _Allocator(
        name, malloc, free, memset, allocated, trims, statistics_missing, trim_missing
    )


def _sum(*readers: Callable[[], int | None]) -> Callable[[], int | None]:
    def allocated() -> int | None:
        readings = [read() for read in readers]
        return None if None in readings else sum(r for r in readings if r is not None)

    return allocated


def _glibc_allocated(mallinfo2: Any) -> Callable[[], int | None]:
    def allocated() -> int:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return allocated


def _jemalloc_allocated(mallctl: Any) -> Callable[[], int | None] | None:
    """jemalloc's bytes handed out and not in a thread's cache, read through ``mallctl`` (None
    where a build without statistics refuses them)."""
    import ctypes

    def read(name: bytes) -> int | None:
        value = ctypes.c_size_t(0)
        length = ctypes.c_size_t(ctypes.sizeof(value))
        failed = mallctl(name, ctypes.byref(value), ctypes.byref(length), None, 0)
        return None if failed else int(value.value)

    def allocated() -> int | None:
        epoch = ctypes.c_uint64(1)  # any write refreshes every statistic
        if mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch)):
            return None
        total, cached = read(b"stats.allocated"), read(_CACHED)
        return None if total is None or cached is None else total - cached

    return None if allocated() is None else allocated


def _mallinfo2_struct() -> Any:
    """glibc's ``struct mallinfo2``, as a ctypes structure type."""
    import ctypes

    fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

    class MallInfo2(ctypes.Structure):
        _fields_ = [(field, ctypes.c_size_t) for field in fields.split()]

    return MallInfo2


def _allocator() -> _Allocator:
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _load()
    return _state


def name() -> str:
    """The allocator serving ``malloc``: glibc, jemalloc, tcmalloc, mimalloc, musl or unknown."""
    return _allocator().name


def allocated_bytes() -> int | None:
    """Bytes the C allocator has handed out to the program and not had back: glibc's
    ``mallinfo2`` (``uordblks + hblkhd``), or jemalloc's ``stats.allocated`` less what its
    thread caches hold (plus glibc's, for what reaches glibc's own ``malloc`` beside it); None
    where neither serves ``malloc`` or can be read."""
    function = _allocator().allocated
    return None if function is None else function()


def size_classed() -> bool:
    """Whether :func:`allocated_bytes` counts an object by a size class far coarser than its size
    (jemalloc's, four to each power of two: 4 KiB apart at 16 KiB, 256 KiB at 1 MiB), so that one
    object growing in place reads as a jump every few runs, not as growth every run."""
    state = _allocator()
    return state.name == "jemalloc" and state.allocated is not None


def caches_counted() -> bool:
    """Whether :func:`allocated_bytes` counts, as handed out, freed memory that a thread's cache
    keeps (glibc's tcache: up to about 256 KiB a thread); False under jemalloc, whose count here
    leaves every thread's cache out."""
    return not size_classed()


def statistics_missing() -> str | None:
    """Why :func:`allocated_bytes` is None (e.g. "glibc heap statistics unavailable (jemalloc is
    in use)"); None when it can be read."""
    return _allocator().statistics_missing


def can_trim() -> bool:
    """Whether :func:`trim` gives freed memory back to the OS here."""
    return bool(_allocator().trims)


def trim_missing() -> str | None:
    """Why :func:`can_trim` is False (e.g. "malloc_trim unavailable (tcmalloc is in use)")."""
    return _allocator().trim_missing


def trim() -> bool:
    """Give memory freed to the allocator back to the OS: glibc's ``malloc_trim(0)``, or
    jemalloc's purge of every arena. False (and nothing done) where neither serves ``malloc``."""
    trims = _allocator().trims
    for function, arguments in trims:
        function(*arguments)
    return bool(trims)


def malloc(size: int) -> int:
    """``malloc(size)`` of the allocator in use, as a C extension would call it (0 on failure)."""
    function = _allocator().malloc
    if function is None:
        raise OSError("cannot load the C library for native allocations")
    return int(function(size) or 0)


def memset(pointer: int, value: int, size: int) -> None:
    _allocator().memset(pointer, value, size)


def free(pointer: int) -> None:
    _allocator().free(pointer)
