"""Allocators other than glibc's (issue 15): which one serves ``malloc``, what it can be asked,
and the verdicts where glibc's heap statistics or ``malloc_trim`` are missing.

jemalloc is real: its runs preload Debian's ``libjemalloc.so.2`` in a subprocess (skipped where
it is not installed), and its byte count is read through its ``mallctl``. A glibc without
``mallinfo2`` or ``malloc_trim``, a jemalloc built without statistics or one without ``mallctl``
cannot be made here: their runs hide or wrap symbols through ``allocator._symbol``, the one
lookup the module makes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import sysconfig
import textwrap

import pytest
from verdicts import assert_outcomes, verdict_lines

from pytest_memleak.check import measuring
from pytest_memleak.probe import allocator

MiB = 1 << 20
JEMALLOC = (
    f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}/libjemalloc.so.2"
)
needs_jemalloc = pytest.mark.skipif(
    not os.path.exists(JEMALLOC),
    reason=f"jemalloc is not installed: no {JEMALLOC} (apt-get install libjemalloc2)",
)
on_glibc = pytest.mark.skipif(
    allocator.name() != "glibc",
    reason=f"this process's malloc is {allocator.name()}'s, not glibc's",
)
glibc_system = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the C library is not glibc"
)
JEMALLOC_MISSING = "glibc heap statistics unavailable (jemalloc is in use)"  # and no mallctl
JEMALLOC_NO_STATS = "glibc heap statistics unavailable (jemalloc is in use, built without statistics)"
JEMALLOC_NO_TRIM = "malloc_trim unavailable (jemalloc is in use)"
NO_MALLINFO2 = "glibc heap statistics unavailable (this glibc has no mallinfo2)"
NO_MALLOC_TRIM = "malloc_trim unavailable (this glibc has none)"


def _env(preload: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    return env


# -- the module, in a fresh interpreter under each allocator ------------------------------

# A jemalloc built without statistics: its mallctl answers ENOENT for every stats.* name (as
# jemalloc's own ctl does when config_stats is off); the rest (epoch, purges) still works.
NO_STATS = """
import ctypes
from pytest_memleak.probe import allocator

_real = allocator._symbol


def _symbol(library, name):
    found = _real(library, name)
    if name != "mallctl" or found is None:
        return found
    found.restype = ctypes.c_int
    found.argtypes = [ctypes.c_char_p] + [ctypes.c_void_p] * 3 + [ctypes.c_size_t]

    def mallctl(key, *rest):
        return 2 if key.startswith(b"stats.") else found(key, *rest)

    return mallctl


allocator._symbol = _symbol
allocator._state = None
"""

HIDE = """
from pytest_memleak.probe import allocator

_real = allocator._symbol
allocator._symbol = lambda library, name: None if name in {HIDDEN} else _real(library, name)
allocator._state = None
"""


def _hiding(*names: str) -> str:
    return HIDE.replace("{HIDDEN}", repr(set(names)))


PROBE = """
import json
from pytest_memleak.check import measuring
from pytest_memleak.probe import allocator
from pytest_memleak.explicit.snapshots import allocate, cleanup

out = {
    "name": allocator.name(),
    "allocated": allocator.allocated_bytes(),
    "missing": allocator.statistics_missing(),
    "can_trim": allocator.can_trim(),
    "trim_missing": allocator.trim_missing(),
}
blocks = [allocator.malloc(16384) for _ in range(2000)]  # 31 MiB, each below glibc's mmap threshold
for p in blocks:
    allocator.memset(p, 1, 16384)
held = measuring.rss()
for p in blocks[:-1]:  # the last one pins glibc's heap top: only a trim gives the rest back
    allocator.free(p)
freed = measuring.rss()
out["trimmed"] = allocator.trim()
trimmed = measuring.rss()
allocator.free(blocks[-1])
out["given_back_by_free"], out["given_back_by_trim"] = held - freed, freed - trimmed
out["recovered"] = cleanup(allocate("32 MiB", kind="native")).rss  # mem_allocate's native memory
print(json.dumps(out))
"""


def _probe(preload: str | None, preamble: str = "", probe: str = PROBE) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", preamble + probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(preload),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_jemalloc
def test_jemalloc_is_named_and_its_own_statistics_read():
    """glibc's mallinfo2 still resolves, but describes an arena that nothing uses: jemalloc's
    count is read instead."""
    out = _probe(JEMALLOC)
    assert out["name"] == "jemalloc"
    assert isinstance(out["allocated"], int) and out["allocated"] > 0
    assert out["missing"] is None
    assert out["can_trim"] is True and out["trim_missing"] is None


@needs_jemalloc
def test_jemalloc_built_without_statistics_is_said():
    out = _probe(JEMALLOC, NO_STATS)
    assert out["name"] == "jemalloc"
    assert out["allocated"] is None and out["missing"] == JEMALLOC_NO_STATS
    assert out["can_trim"] is True and out["trim_missing"] is None  # its purge still works


@needs_jemalloc
def test_jemalloc_without_mallctl_is_said():
    out = _probe(JEMALLOC, _hiding("mallctl"))
    assert out["name"] == "jemalloc"
    assert out["allocated"] is None and out["missing"] == JEMALLOC_MISSING
    assert out["can_trim"] is False and out["trim_missing"] == JEMALLOC_NO_TRIM


KEPT = """
import ctypes
import json
import sys
import threading
from pytest_memleak.probe import allocator

mallctl = ctypes.CDLL(None).mallctl
mallctl.restype = ctypes.c_int
mallctl.argtypes = [ctypes.c_char_p] + [ctypes.c_void_p] * 3 + [ctypes.c_size_t]


def cached():  # what every thread's cache holds, which jemalloc's stats.allocated counts
    epoch, value, size = ctypes.c_uint64(1), ctypes.c_size_t(0), ctypes.c_size_t(8)
    mallctl(b"epoch", None, None, ctypes.byref(epoch), 8)
    mallctl(b"stats.arenas.4096.tcache_bytes", ctypes.byref(value), ctypes.byref(size), None, 0)
    return value.value


def clean():
    bufs = [bytes(600 + 37 * i) for i in range(200)]  # up to 8 KiB: through the thread cache
    del bufs


out = {}
size = 10 * 1024 - sys.getsizeof(b"")  # each object 10 KiB: one of jemalloc's size classes
before = allocator.allocated_bytes()
kept = [bytes(size) for _ in range(100)]
out["kept"] = sum(sys.getsizeof(b) for b in kept)
out["kept_grew"] = allocator.allocated_bytes() - before
del kept

for _ in range(3):
    clean()
before, most = allocator.allocated_bytes(), 0
for _ in range(500):
    clean()
    most = max(most, abs(allocator.allocated_bytes() - before))
out["clean_moved"], out["cached"] = most, cached()

glibc = ctypes.CDLL("libc.so.6")  # its own malloc, beside jemalloc's: glibc's arena
glibc.malloc.restype, glibc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
# (before the threads: a joined thread's cache is flushed as it exits, which join() does not wait for)
before = allocator.allocated_bytes()
ctypes.memset(glibc.malloc(1 << 20), 1, 1 << 20)
out["glibc_grew"] = allocator.allocated_bytes() - before

go, done = threading.Event(), []


def worker():
    for _ in range(20):
        clean()
    done.append(1)
    go.wait()


threads = [threading.Thread(target=worker) for _ in range(4)]
before, cached_before = allocator.allocated_bytes(), cached()
for t in threads:
    t.start()
while len(done) < 4:
    threading.Event().wait(0.01)
out["threads_grew"], out["threads_cached"] = allocator.allocated_bytes() - before, cached() - cached_before
go.set()
for t in threads:
    t.join()

print(json.dumps(out))
"""


@needs_jemalloc
def test_jemalloc_count_grows_by_what_is_kept_and_not_by_thread_caches():
    """The count grows by the bytes a test keeps, and stays put where jemalloc's thread caches
    fill: their bytes, which stats.allocated counts, are left out, in every thread. What code
    gets from glibc's own malloc beside jemalloc (through a libc.so.6 handle) counts too."""
    out = _probe(JEMALLOC, probe=KEPT)
    assert abs(out["kept_grew"] - out["kept"]) <= 0.1 * out["kept"], out
    assert out["cached"] > 64 * 1024, out  # the clean loop did fill the caches ...
    assert out["clean_moved"] < 16 * 1024, out  # ... and the count did not follow them
    assert out["threads_cached"] > 2 * MiB, out  # four idle threads keep megabytes cached ...
    assert out["threads_grew"] < 512 * 1024, out  # ... which they do not hold
    # (within a tenth, as what is kept: the ctypes call itself freed 52 KiB of jemalloc's once)
    assert abs(out["glibc_grew"] - MiB) <= 0.1 * MiB, out


@needs_jemalloc
def test_jemalloc_keeps_freed_pages_until_trim_purges_them():
    """jemalloc keeps freed pages resident for its decay time (10 s); trim() purges them at once."""
    out = _probe(JEMALLOC)
    assert out["given_back_by_free"] < 8 * MiB, out
    assert out["trimmed"] is True
    assert out["given_back_by_trim"] > 24 * MiB, out
    assert out["recovered"] > 24 * MiB, out  # cleanup() of native memory mem_allocate made


def test_glibc_is_named_and_its_statistics_read():
    """Without a preload (whatever this process runs under), glibc serves malloc and is read."""
    out = _probe(None)
    if out["name"] != "glibc":
        pytest.skip(f"the C library here is not glibc ({out['name']})")
    assert out["missing"] is None and out["trim_missing"] is None
    assert isinstance(out["allocated"], int) and out["allocated"] > 0
    assert out["given_back_by_free"] < 8 * MiB and out["given_back_by_trim"] > 24 * MiB, out
    assert out["recovered"] > 24 * MiB, out


@pytest.mark.skipif(
    allocator.allocated_bytes() is None, reason=f"no C allocator statistics: {allocator.statistics_missing()}"
)
def test_allocated_bytes_count_what_malloc_holds():
    """In this process, whichever allocator serves it (glibc's, or a preloaded jemalloc's)."""
    before = allocator.allocated_bytes()
    pointer = allocator.malloc(8 * MiB)
    try:
        during = allocator.allocated_bytes()
    finally:
        allocator.free(pointer)
    after = allocator.allocated_bytes()
    assert before is not None and during is not None and after is not None
    # (glibc mmaps it: in hblkhd; 8 MiB is one of jemalloc's size classes)
    assert 8 * MiB <= during - before < 9 * MiB and 8 * MiB <= during - after < 9 * MiB


@pytest.fixture
def hidden(monkeypatch: pytest.MonkeyPatch):
    """Hide C symbols from the allocator module, as a C library without them would."""

    def hide(*names: str) -> None:
        real = allocator._symbol
        monkeypatch.setattr(
            allocator,
            "_symbol",
            lambda library, name: None if name in names else real(library, name),
        )
        monkeypatch.setattr(allocator, "_state", None)

    return hide


@on_glibc
def test_a_glibc_without_mallinfo2_or_malloc_trim_is_said(hidden):
    hidden("mallinfo2", "malloc_trim")
    assert allocator.name() == "glibc"
    assert allocator.allocated_bytes() is None
    assert allocator.statistics_missing() == NO_MALLINFO2
    assert allocator.can_trim() is False and allocator.trim() is False
    assert allocator.trim_missing() == NO_MALLOC_TRIM
    meter = measuring.HeapMeter()
    try:
        assert meter.missing == NO_MALLINFO2
        assert meter(full=False) == 0  # malloc's part reads 0, and the reading does not fail
        assert meter(full=True) > 0  # pymalloc's is still read
    finally:
        meter.close()
    pointer = allocator.malloc(MiB)  # malloc and free do not depend on them
    allocator.memset(pointer, 1, MiB)
    allocator.free(pointer)


@on_glibc
def test_hiding_malloc_trim_alone_keeps_the_statistics(hidden):
    hidden("malloc_trim")
    assert allocator.allocated_bytes() is not None and allocator.statistics_missing() is None
    assert allocator.can_trim() is False and allocator.trim_missing() == NO_MALLOC_TRIM


# -- verdicts: an inner pytest --memleak in a subprocess ---------------------------------

SUITE = """
import ctypes
import pytest

libc = ctypes.CDLL(None)  # malloc and free as a C extension reaches them
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
KEEP = []


def test_clean():
    d = {i: str(i) for i in range(200)}
    b = bytearray(100_000)
    del d, b


def test_clean_big_buffers():
    bufs = [bytes(50_000 + i) for i in range(40)]
    del bufs


def test_clean_native():
    p = libc.malloc(MIB)
    ctypes.memset(p, 1, MIB)
    libc.free(p)


def test_leak_objects():
    KEEP.append(object())  # OBJECTS-LINE


def test_leak_big_buffers():
    KEEP.append(bytearray(4096))  # BUFFERS-LINE: past pymalloc, malloc serves it


def test_leak_native():
    ctypes.memset(libc.malloc(256 * 1024), 1, 256 * 1024)  # beyond RSS's page noise (64 KiB/run)


def test_leak_native_small():
    ctypes.memset(libc.malloc(16 * 1024), 1, 16 * 1024)  # below it: only malloc's statistics see it
""".replace("MIB", str(MiB))

def _line(marker: str, source: str = SUITE) -> int:
    """The 1-based line of ``marker`` in ``source`` as pytester writes it."""
    return next(
        i
        for i, text in enumerate(textwrap.dedent(source).strip("\n").splitlines(), 1)
        if marker in text
    )


ARGS = (
    "--memleak",
    "--memleak-flamegraph=none",
    "--memleak-confirm-seconds=60",
    "-p",
    "no:cacheprovider",
)


def _verdicts(pytester: pytest.Pytester) -> dict[str, dict]:
    data = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    return {t["nodeid"].split("::")[-1]: t for t in data["tests"]}


def _run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    preload: str | None,
    hidden: tuple[str, ...] = (),
    conftest: str = "",
) -> pytest.RunResult:
    pytester.makepyfile(test_suite=SUITE)
    if hidden or conftest:
        pytester.makeconftest(conftest or _hiding(*hidden))
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    if preload:
        monkeypatch.setenv("LD_PRELOAD", preload)
    return pytester.runpytest_subprocess(*ARGS, "-rN", timeout=600)


def _assert_python_verdicts(result: pytest.RunResult, pytester: pytest.Pytester) -> dict[str, dict]:
    """Clean tests clean, Python leaks caught at their lines: whatever malloc's statistics."""
    verdicts = _verdicts(pytester)
    for name in ("test_clean", "test_clean_big_buffers", "test_clean_native"):
        assert verdicts[name]["status"] == "clean", verdict_lines(pytester)
    assert verdicts["test_leak_objects"]["status"] == "leak", verdict_lines(pytester)
    assert verdicts["test_leak_big_buffers"]["status"] == "leak", verdict_lines(pytester)
    objects, buffers = (
        f"test_suite.py:{_line('OBJECTS-LINE')}",
        f"test_suite.py:{_line('BUFFERS-LINE')}",
    )
    result.stdout.fnmatch_lines(
        [
            f"LEAK test_suite.py::test_leak_objects - retained * of Python heap* {objects} *",
            f"LEAK test_suite.py::test_leak_big_buffers - retained * of Python heap* {buffers} *",
        ],
        consecutive=False,
    )
    return verdicts


def _assert_native_verdicts(
    result: pytest.RunResult, pytester: pytest.Pytester, missing: str
) -> None:
    """Native memory without malloc's statistics: a leak past RSS's page noise is caught, one
    below it is inconclusive and says what was missing."""
    verdicts = _verdicts(pytester)
    assert verdicts["test_leak_native"]["status"] == "leak", verdict_lines(pytester)
    assert verdicts["test_leak_native_small"]["status"] == "inconclusive", verdict_lines(pytester)
    result.stdout.fnmatch_lines(
        [
            "LEAK test_suite.py::test_leak_native - native memory grew *(RSS minus the traced heap*",
            f"INCONCLUSIVE test_suite.py::test_leak_native_small - {missing}: native memory grew *",
            f"memleak: {missing}: memory outside pymalloc * is measured by RSS alone*",
        ],
        consecutive=False,
    )


def _assert_native_counted(pytester: pytest.Pytester) -> None:
    """Native memory with malloc's statistics: every leak is caught, by what they count."""
    verdicts = _verdicts(pytester)
    for name in ("test_leak_native", "test_leak_native_small"):
        assert verdicts[name]["status"] == "leak", verdict_lines(pytester)
        assert "the C allocator's statistics minus the traced heap" in verdicts[name]["reason"]


MARKED = """
import pytest


def pytest_collection_modifyitems(items):
    for item in items:  # all of confirm_seconds for a suspect: a busy machine does not cut it short
        item.add_marker(pytest.mark.memleak)
"""


@needs_jemalloc
def test_jemalloc_verdicts(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """jemalloc's own count: 16 KiB of native memory a run, below RSS's page noise, is caught (the
    tests marked memleak, so that their verdicts do not depend on how busy the machine is)."""
    result = _run(pytester, monkeypatch, JEMALLOC, conftest=MARKED)
    assert_outcomes(result, pytester, passed=3, failed=4)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    _assert_python_verdicts(result, pytester)
    _assert_native_counted(pytester)
    assert "heap statistics unavailable" not in result.stdout.str()


@needs_jemalloc
def test_jemalloc_without_statistics_verdicts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jemalloc built without statistics: RSS, purged, stands in for them (the tests marked
    memleak, so that their verdicts do not depend on how busy the machine is)."""
    result = _run(pytester, monkeypatch, JEMALLOC, conftest=NO_STATS + MARKED)
    assert_outcomes(result, pytester, passed=4, failed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    _assert_python_verdicts(result, pytester)
    _assert_native_verdicts(result, pytester, JEMALLOC_NO_STATS)


@glibc_system
def test_glibc_without_mallinfo2_verdicts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, None, hidden=("mallinfo2",))
    assert_outcomes(result, pytester, passed=4, failed=3)
    _assert_python_verdicts(result, pytester)
    _assert_native_verdicts(result, pytester, NO_MALLINFO2)


@glibc_system
def test_glibc_without_malloc_trim_verdicts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """malloc's statistics still count native memory: every leak is caught, as with malloc_trim."""
    result = _run(pytester, monkeypatch, None, hidden=("malloc_trim",))
    assert_outcomes(result, pytester, passed=3, failed=4)
    _assert_python_verdicts(result, pytester)
    _assert_native_counted(pytester)


@glibc_system
def test_glibc_without_either_verdicts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RSS alone, untrimmed: how much of native growth it shows depends on the memory freed before
    it, so only the Python verdicts are certain; a native leak found says RSS was untrimmed, and
    the run says what was missing."""
    result = _run(pytester, monkeypatch, None, hidden=("mallinfo2", "malloc_trim"))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    verdicts = _assert_python_verdicts(result, pytester)
    for name in ("test_leak_native", "test_leak_native_small"):
        if verdicts[name]["status"] == "leak":
            assert (
                f"{NO_MALLOC_TRIM}: RSS was read with freed memory still resident"
                in verdicts[name]["reason"]
            )
    result.stdout.fnmatch_lines(
        [f"memleak: {NO_MALLINFO2}: *; {NO_MALLOC_TRIM}: RSS keeps memory freed earlier*"]
    )


GROWING = """
import pytest
LOG = [""]

@pytest.mark.memleak  # pymalloc's walk sees it grow, until it passes 512 bytes: malloc serves it
def test_growing_string():
    LOG[0] = LOG[0] + "request handled;"  # LEAK-LINE
"""

GROWING_100 = """
S = [""]

def test_growing_string():
    S[0] = S[0] + "x" * 100  # LEAK-LINE: one object, rebuilt 100 B longer on every run
"""


GROWING_SLOW = """
import time
import pytest

S = [""]

@pytest.mark.memleak
def test_growing_string():
    S[0] = S[0] + "x" * 1024  # LEAK-LINE
    time.sleep(0.06)  # slow: a step of its windows is one run
"""


@needs_jemalloc
@pytest.mark.parametrize(
    "source", [GROWING, GROWING_100, GROWING_SLOW], ids=["16_bytes_marked", "100_bytes", "slow_1_kib"]
)
def test_jemalloc_growing_string_is_caught(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """One string rebuilt longer on every run: no new Python block, and past 512 bytes malloc
    serves it. jemalloc's count follows it into malloc, in jumps of its size classes (at 10 KiB,
    2 KiB apart: a jump every 20 runs of 100 B; past 16 KiB, a 1 KiB a run string's every fourth
    run, which windows of one-run steps read as flat): a leak, at its line."""
    pytester.makepyfile(test_growing=textwrap.dedent(source))
    monkeypatch.setenv("LD_PRELOAD", JEMALLOC)
    args = (*ARGS, "--memleak-confirm-seconds=6") if source is GROWING_SLOW else ARGS
    result = pytester.runpytest_subprocess(*args, timeout=600)
    verdict = _verdicts(pytester)["test_growing_string"]
    assert verdict["status"] == "leak", verdict_lines(pytester)
    line = _line("LEAK-LINE", source)
    assert verdict["sites"][0]["site"] == f"test_growing.py:{line}", verdict_lines(pytester)
    assert "heap statistics unavailable" not in result.stdout.str()


GROWING_LARGE = """
import pytest
S = ["x" * (40 * 1024)]

@pytest.mark.memleak
def test_growing_string():
    S[0] = S[0] + "x" * 100  # LEAK-LINE
"""


@needs_jemalloc
def test_jemalloc_large_string_growing_below_its_size_class_is_caught_at_its_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jemalloc counts a 40 KiB string by its size class, 8 KiB apart: 100 B a run moves its
    count once in 80 runs, and the screen of a quick test sees none of it. A marked test's clean
    screen is checked once more with tracemalloc at one frame, which counts the bytes asked for."""
    pytester.makepyfile(test_growing=textwrap.dedent(GROWING_LARGE))
    monkeypatch.setenv("LD_PRELOAD", JEMALLOC)
    pytester.runpytest_subprocess(*ARGS, timeout=600)
    verdict = _verdicts(pytester)["test_growing_string"]
    assert verdict["status"] == "leak", verdict_lines(pytester)
    line = _line("LEAK-LINE", GROWING_LARGE)
    assert verdict["sites"][0]["site"] == f"test_growing.py:{line}", verdict_lines(pytester)


@needs_jemalloc
@pytest.mark.xfail(
    strict=True,
    reason="known limit (README): unmarked, a clean screen is not checked again traced under jemalloc (for every test, "
    "that cut the tests a cost budget reaches by half or more), so a 40 KiB string growing 100 B a run reads clean",
)
def test_jemalloc_large_string_growing_below_its_size_class_unmarked_is_never_clean(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_growing=textwrap.dedent(GROWING_LARGE.replace("@pytest.mark.memleak\n", "")))
    monkeypatch.setenv("LD_PRELOAD", JEMALLOC)
    pytester.runpytest_subprocess(*ARGS, timeout=600)
    verdict = _verdicts(pytester)["test_growing_string"]
    assert verdict["status"] in ("leak", "inconclusive"), verdict_lines(pytester)


@needs_jemalloc
def test_jemalloc_without_statistics_growing_string_is_never_clean(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One string that grows 16 B a run, under a jemalloc built without statistics: nothing
    follows it into malloc. It is a leak or, when its growth moved out of sight, inconclusive
    saying why."""
    pytester.makepyfile(test_growing=textwrap.dedent(GROWING))
    pytester.makeconftest(NO_STATS)
    monkeypatch.setenv("LD_PRELOAD", JEMALLOC)
    result = pytester.runpytest_subprocess(*ARGS, timeout=600)
    verdict = _verdicts(pytester)["test_growing_string"]
    assert verdict["status"] in ("leak", "inconclusive"), verdict_lines(pytester)
    if verdict["status"] == "inconclusive":
        assert verdict["reason"].startswith(
            f"{JEMALLOC_NO_STATS}: pymalloc's bytes grew, then stopped"
        ), verdict_lines(pytester)
        result.stdout.fnmatch_lines(
            [f"INCONCLUSIVE test_growing.py::test_growing_string - {JEMALLOC_NO_STATS}: *"]
        )
