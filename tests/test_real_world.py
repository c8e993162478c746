"""What real suites need from `pytest --memleak` (issue 11): blind spots closed, async suites, traps of the
plugin's own making, re-run hygiene, and a bounded cost per test.

Every test runs an inner pytest in a subprocess (tracemalloc, gc.freeze and the plugin's session state are
process-wide, so an in-process run would measure, and disturb, the outer session). Verdict settings stay at their
defaults; only memray flamegraphs are off (they cost about a second per leak and decide nothing).

Inner sources mark the line a failure must name with ``# LEAK-LINE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from fnmatch import fnmatch

import pytest
from verdicts import assert_outcomes, verdict_lines

from pytest_memleak.check import repeating
from pytest_memleak.check.runner import Runner
from pytest_memleak.probe import contention as contention_mod

BASE_ARGS = ("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")

# Re-run hygiene (case 14): a line of the failure or the summary must say the growth comes from the test's own
# non-repeatable setup. THE WORDING IS TO BE AGREED with the core's author: adjust these patterns (any one line
# matching any one pattern passes). Keep "tmp_path", "hygiene" and "re-run" out of this file's test names: the
# inner run's paths contain the outer test's name.
HYGIENE_PATTERNS = ("*tmp_path*", "*test hygiene*", "*re-run*", "*non-repeatable*")

# Bounded cost (case 15): the reason of a test whose runs keep getting slower must say so. Wording to be agreed.
SLOWDOWN_PATTERNS = ("*run time*", "*slower*", "*time per run*", "*each run took*", "*took longer*")


OPEN = "issue 11, still open: "  # strict xfails: each one turns into a failure (XPASS) once fixed, so the marker goes


def _line_of(source: str, marker: str = "LEAK-LINE") -> int:
    """The 1-based line of `marker` in `source` as pytester writes it (dedented, leading newlines stripped)."""
    text = textwrap.dedent(source).strip("\n")
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def _report(pytester: pytest.Pytester) -> dict[str, dict]:
    data = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    return {t["nodeid"]: t for t in data["tests"]}


def run(pytester: pytest.Pytester, files: dict[str, str], *args: str, ini: str | None = None, timeout: float = 300) -> pytest.RunResult:
    pytester.makepyfile(**files)
    if ini is not None:
        pytester.makeini("[pytest]\n" + textwrap.dedent(ini))
    return pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=timeout)


def expect_leak(pytester: pytest.Pytester, name: str, source: str, *args: str, ini: str | None = None, test: str = "test_leak") -> pytest.RunResult:
    """The inner test fails as LEAKED and its failure names the LEAK-LINE of `source`."""
    result = run(pytester, {name: source}, "-v", *args, ini=ini)
    assert_outcomes(result, pytester, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            f"*{name}.py::{test}* LEAKED*",
            "*memleak summary*",
            "*1 checked: 1 leaking*",
            f"LEAK {name}.py::{test}*",
        ]
    )
    line = _line_of(source)
    named = [text for text in result.outlines if re.search(rf"\b{name}\.py:{line}\b", text)]
    assert named, f"no line names {name}.py:{line}:\n" + result.stdout.str()
    return result


def expect_clean(pytester: pytest.Pytester, files: dict[str, str], passed: int, *args: str, ini: str | None = None) -> pytest.RunResult:
    """Every inner test passes, is clean, and nothing is reported as leaking."""
    result = run(pytester, files, *args, ini=ini)
    assert_outcomes(result, pytester, passed=passed)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*{passed} checked: 0 leaking, {passed} clean, 0 inconclusive*"])
    summary = result.stdout.str().split("memleak summary", 1)[-1]
    assert "LEAK" not in summary, summary
    statuses = {nodeid: t["status"] for nodeid, t in _report(pytester).items()}
    assert set(statuses.values()) == {"clean"}, statuses
    return result


STRICT_ASYNCIO_INI = """
    asyncio_mode = strict
    asyncio_default_fixture_loop_scope = function
"""
AUTO_ASYNCIO_INI = """
    asyncio_mode = auto
    asyncio_default_fixture_loop_scope = function
"""


# -- MUST CATCH: blind spots, under default settings ------------------------------------------------------------


# A quick test's stretch is as many runs as fit in a quarter of its own run plus 0.1 ms, and ten at the least for a
# call under 50 µs (under one setup, a call costs the call alone). A marked test gets a row after each of its runs.
@pytest.mark.parametrize(("k", "marked"), [(2, False), (10, False), (5, True)])
def test_leak_every_kth_run_is_caught(pytester: pytest.Pytester, k: int, marked: bool) -> None:
    """A history that grows on some requests only: 200 B every k-th run."""
    mark = "@pytest.mark.memleak" if marked else ""
    source = f"""
        import pytest
        REGISTRY = []
        COUNTER = [0]
        {mark}
        def test_leak():
            COUNTER[0] += 1
            if COUNTER[0] % {k} == 0:
                REGISTRY.append(bytearray(200))  # LEAK-LINE
    """
    expect_leak(pytester, "test_kth", source)


@pytest.mark.xfail(
    strict=False,  # (not strict: in 1 of 9 loaded legs of d0c364c, its windows stepped 9 runs and the leak was caught at
    # its line: the stretch is set by timing, and a leak caught is no failure)
    reason=OPEN + "a slow test's stretch is one run (each costs as much as its own run): its first repeated run grows, its second is quiet",
)
def test_slow_leak_every_other_run_is_caught(pytester: pytest.Pytester) -> None:
    """Growth every 2nd run in a test of 60 ms a run, unmarked."""
    source = """
        import time
        REGISTRY = []
        COUNTER = [0]
        def test_leak():
            COUNTER[0] += 1
            if COUNTER[0] % 2 == 0:
                REGISTRY.append(bytearray(200))  # LEAK-LINE
            time.sleep(0.06)
    """
    expect_leak(pytester, "test_slow_kth", source)


def test_slow_test_keeping_one_object_a_run_is_caught(pytester: pytest.Pytester) -> None:
    """The same leak as a quick test's one object() a run (caught at its line), in a test of 20 ms."""
    source = """
        import time
        KEPT = []
        def test_leak():
            KEPT.append(object())  # LEAK-LINE
            time.sleep(0.02)
    """
    expect_leak(pytester, "test_slow_object", source, "--memleak-budget=none")


def test_leak_every_kth_run_into_a_dict_is_caught(pytester: pytest.Pytester) -> None:
    """The same every 5th run, as a dict entry keyed on the counter, in a test marked for checking."""
    source = """
        import pytest
        SEEN = {}
        COUNTER = [0]
        @pytest.mark.memleak
        def test_leak():
            COUNTER[0] += 1
            if COUNTER[0] % 5 == 0:
                SEEN[COUNTER[0]] = "request-%d" % COUNTER[0]  # LEAK-LINE
    """
    expect_leak(pytester, "test_kth_dict", source)


def test_one_string_growing_100_bytes_a_run_is_caught(pytester: pytest.Pytester) -> None:
    """One object, rebuilt 100 B longer on every run: the block count never moves."""
    source = """
        S = [""]
        def test_leak():
            S[0] = S[0] + "x" * 100  # LEAK-LINE
    """
    expect_leak(pytester, "test_growing_str", source)


def test_native_growth_of_4_kib_a_run_is_caught(pytester: pytest.Pytester) -> None:
    """A C library that keeps 4 KiB per call (40 MiB per 10,000 requests), far below the 64 KiB/run budget."""
    source = """
        import ctypes
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        def test_leak():
            p = libc.malloc(4096)  # never freed
            ctypes.memset(p, 1, 4096)  # touch the page so RSS sees it
    """
    result = run(pytester, {"test_native_4k": source}, "-v")
    assert_outcomes(result, pytester, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_native_4k.py::test_leak* LEAKED*", "*memleak summary*", "LEAK test_native_4k.py::test_leak - *native memory*"]
    )


def test_one_object_per_run_stays_caught(pytester: pytest.Pytester) -> None:
    source = """
        KEEP = []
        def test_leak():
            KEEP.append(object())  # LEAK-LINE
    """
    expect_leak(pytester, "test_one_object", source)


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_leak_is_caught(pytester: pytest.Pytester, mode: str) -> None:
    pytest.importorskip("pytest_asyncio")
    marker = "@pytest.mark.asyncio" if mode == "strict" else ""
    source = f"""
        import asyncio
        import pytest
        HISTORY = []
        {marker}
        async def test_leak():
            await asyncio.sleep(0)
            HISTORY.append({{"role": "user", "text": "hi"}})  # LEAK-LINE
    """
    expect_leak(pytester, "test_async_leak", source, ini=STRICT_ASYNCIO_INI if mode == "strict" else AUTO_ASYNCIO_INI)


PINNED = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or not os.access(contention_mod.SCHEDSTAT, os.R_OK), reason="needs CPU affinity and the kernel's wait count"
)


@contextlib.contextmanager
def _beside_busy_loops(n: int) -> Iterator[None]:
    """This thread, and the inner pytest it starts, on one CPU with ``n`` busy loops pinned to it."""
    cpu = min(os.sched_getaffinity(0))
    pin = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    loops = [subprocess.Popen([sys.executable, "-c", pin]) for _ in range(n)]
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # (this thread's: the inner pytest inherits it)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)
        for loop in loops:
            loop.kill()
            loop.wait()


@PINNED
def test_a_suspect_on_a_busy_cpu_runs_on_by_its_wait_and_is_caught(pytester: pytest.Pytester) -> None:
    """The pytest-asyncio leak (a bare call of a fraction of a ms, 10 ms and more traced, within a
    0.5 s bound) on one CPU shared with two busy loops, so it gets a third of it: the leak is caught
    at its line, and the detail says the bound ran on by the wait the kernel counted. (Beside two
    busy loops on two cores, before the bound ran on, it was inconclusive three times in three:
    "4 steps of 10 do not fit in the 0.5 s bound"; here, without it, the traced window's overrun
    still catches it, and the line is missing.)"""
    pytest.importorskip("pytest_asyncio")
    source = """
        import asyncio
        HISTORY = []
        async def test_leak():
            await asyncio.sleep(0)
            HISTORY.append({"role": "user", "text": "hi"})  # LEAK-LINE
    """
    with _beside_busy_loops(2):
        result = expect_leak(pytester, "test_busy_cpu", source, ini=AUTO_ASYNCIO_INI)
    # (whether the bound had to run on depends on where the waits fell: a loaded CI run's did not)
    result.stdout.fnmatch_lines(["*a busy machine: the checks waited for a CPU *s, and their time bound *"])


class _Waited:
    """The kernel's count of a wait, as the suspect's checks read it (set here: a real wait does not fall where a test asks)."""

    exact = True

    def __init__(self) -> None:
        self.seconds = 0.0

    def read(self) -> float:
        return self.seconds


def test_a_suspects_bound_runs_on_by_its_wait_up_to_its_length_and_never_past_the_hard_bound(request: pytest.FixtureRequest) -> None:
    """The arithmetic the busy-CPU test above relies on, where its waits happened to fall: a wait
    of a tenth of the bound or more moves the deadline on by what was not yet credited, up to the
    bound's length in all, and never past the hard bound or the session's credit."""
    run = Runner(request.node)
    waits = _Waited()
    run.waits, run.wait_cap, run.deadline, run.hard_until = waits, 0.5, 100.0, 101.0
    waits.seconds = 0.04  # below WAIT_SHARE of the bound: a quiet machine's
    run.credit_wait()
    assert (run.deadline, run.credited) == (100.0, 0.0)
    waits.seconds = 0.2
    run.credit_wait()
    assert (run.deadline, run.credited) == (pytest.approx(100.2), 0.2)
    waits.seconds = 0.9  # more than the bound: credited up to it
    run.credit_wait()
    assert (run.deadline, run.credited) == (pytest.approx(100.5), 0.5)
    run.wait_cap, run.deadline, run.credited = 5.0, 100.0, 0.0
    waits.seconds = 3.0  # the hard bound (pytest-timeout's) stops it
    run.credit_wait()
    assert run.deadline == 101.0


@PINNED
def test_a_cheap_call_that_waits_for_its_cpu_still_gets_ten_runs_a_stretch(pytester: pytest.Pytester) -> None:
    """A string rebuilt 100 B longer each run is below pymalloc's 512 B for its first five runs,
    where the unmarked screen cannot see it: its stretches need ten runs, which a call costing
    no more than a fifth of the test's own run gets. Each call here yields its CPU to a busy loop
    pinned beside it, so its wall time is a timeslice while its work is microseconds (what one
    preemption did to a cold first call in a loaded CI run: the stretch was one run, and the leak
    read clean after three). The call is timed less its wait: the leak is caught at its line."""
    source = """
        import os
        S = [""]
        def test_leak():
            S[0] = S[0] + "x" * 100  # LEAK-LINE
            os.sched_yield()  # the busy loop runs its timeslice: the call waits for the CPU
    """
    with _beside_busy_loops(1):
        expect_leak(pytester, "test_yielding", source, "--memleak-confirm-seconds=60")


def test_a_quick_call_that_was_slow_once_still_gets_ten_runs_a_stretch(pytester: pytest.Pytester) -> None:
    """The same string, in a test whose first repeated call alone is slow (0.6 ms, as a cold cache or a page fault
    can make one; its other calls take microseconds): ten such calls read as several own runs, past what is timed
    again by its share, so the stretch was one run and the leak read clean after three. A call this quick is timed
    again whatever its share: the leak is caught at its line."""
    source = """
        import time
        S = [""]
        N = [0]
        def test_leak():
            N[0] += 1
            if N[0] == 2:  # the screen's first call (the first after the test's own run)
                time.sleep(0.0006)
            S[0] = S[0] + "x" * 100  # LEAK-LINE
    """
    expect_leak(pytester, "test_slow_once", source, "--memleak-confirm-seconds=60")


def test_anyio_leak_is_caught(pytester: pytest.Pytester) -> None:
    pytest.importorskip("anyio")
    source = """
        import anyio
        import pytest
        HISTORY = []
        @pytest.fixture
        def anyio_backend():
            return "asyncio"
        @pytest.mark.anyio
        async def test_leak(anyio_backend):
            await anyio.sleep(0)
            HISTORY.append({"role": "user", "text": "hi"})  # LEAK-LINE
    """
    expect_leak(pytester, "test_anyio_leak", source, ini=STRICT_ASYNCIO_INI)


# -- MUST PASS CLEAN ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_clean_tests_pass(pytester: pytest.Pytester, mode: str) -> None:
    """A clean async test, with and without a function-scoped async fixture (issue 11: flagged at
    pytest_asyncio/plugin.py:912, SubRequest and functools.partial +1.0/run)."""
    pytest.importorskip("pytest_asyncio")
    marker = "@pytest.mark.asyncio" if mode == "strict" else ""
    fixture = "@pytest_asyncio.fixture" if mode == "strict" else "@pytest.fixture"
    source = f"""
        import asyncio
        import pytest
        import pytest_asyncio

        {fixture}
        async def resource():
            await asyncio.sleep(0)
            yield {{"pool": [1, 2, 3]}}
            await asyncio.sleep(0)

        {marker}
        async def test_clean():
            await asyncio.sleep(0)
            d = {{i: str(i) for i in range(100)}}
            assert len(d) == 100

        {marker}
        async def test_clean_with_async_fixture(resource):
            await asyncio.sleep(0)
            d = {{i: resource["pool"] for i in range(100)}}
            assert len(d) == 100
    """
    expect_clean(pytester, {"test_async_clean": source}, 2, ini=STRICT_ASYNCIO_INI if mode == "strict" else AUTO_ASYNCIO_INI)


def test_unraisable_exception_in_each_run_is_not_a_leak(pytester: pytest.Pytester) -> None:
    """A destructor that raises on every run (httpcore's trio tests do): pytest queues the
    exception, with its traceback and the frame's 1 MB payload, until its per-phase hooks turn it
    into a warning. Light runs skip those hooks, and 9.6 MiB/run was once flagged from the queue."""
    source = """
        class Closer:
            def __init__(self):
                self.payload = bytearray(1_000_000)
            def __del__(self):
                raise RuntimeError("close failed")

        def test_raises_in_a_destructor():
            Closer()
    """
    expect_clean(pytester, {"test_unraisable": source}, 1, "-W", "ignore::pytest.PytestUnraisableExceptionWarning")


def test_a_module_level_sqlite_connection_is_clean(pytester: pytest.Pytester) -> None:
    """Python 3.11's sqlite3 keeps a weak reference to every cursor and drops the dead ones every
    200 cursors: +88 B/run for 199 runs, then given back. That sawtooth was once a leak "that
    persisted in every window, 776 runs in all"."""
    source = """
        import sqlite3

        DB = sqlite3.connect(":memory:")

        def test_query():
            assert DB.execute("select 1").fetchall() == [(1,)]
    """
    expect_clean(pytester, {"test_sqlite_query": source}, 1)


def test_fd_leak_that_keeps_no_object_is_caught(pytester: pytest.Pytester) -> None:
    """``os.open`` leaves a descriptor and no Python object: no heap grows, and the check once
    judged it "a fill that plateaus" from the heap's windows alone."""
    pytester.makepyfile(test_fd_only="import os\n\ndef test_opens():\n    os.open(os.devnull, os.O_RDONLY)\n")
    result = pytester.runpytest_subprocess(*BASE_ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["LEAK test_fd_only.py::test_opens - open file descriptors grew by * over * runs (+1.00/run, allowed 0/run)"])


def test_anyio_clean_test_passes(pytester: pytest.Pytester) -> None:
    pytest.importorskip("anyio")
    source = """
        import anyio
        import pytest
        @pytest.fixture
        def anyio_backend():
            return "asyncio"
        @pytest.mark.anyio
        async def test_clean(anyio_backend):
            await anyio.sleep(0)
            d = {i: str(i) for i in range(100)}
            assert len(d) == 100
    """
    expect_clean(pytester, {"test_anyio_clean": source}, 1, ini=STRICT_ASYNCIO_INI)


@pytest.mark.parametrize("filled", ["at_import", "in_module_fixture"])
def test_bounded_cache_of_cyclic_objects_is_clean(pytester: pytest.Pytester, filled: str) -> None:
    """The gc.freeze trap: entries alive at the freeze that later become cyclic garbage must still be collected."""
    fill_at_import = "fill()" if filled == "at_import" else ""
    source = f"""
        import collections
        import pytest

        class Node:
            def __init__(self, i):
                self.me = self  # a reference cycle: only the cyclic collector frees it
                self.payload = [i] * 16

        CACHE = collections.OrderedDict()
        N = [0]

        def put():
            N[0] += 1
            CACHE[N[0]] = Node(N[0])
            while len(CACHE) > 64:
                CACHE.popitem(last=False)

        def fill():
            for _ in range(64):
                put()

        {fill_at_import}

        @pytest.fixture(scope="module")
        def cache():
            if not CACHE:
                fill()
            return CACHE

        def test_clean(cache):
            put()
            assert len(cache) == 64
    """
    expect_clean(pytester, {"test_cyclic_cache": source}, 1)


def test_classes_in_typing_generics_are_clean(pytester: pytest.Pytester) -> None:
    """A class-building library's tests: a class defined on every run, with fields that are instances of the
    project's own class, used in typing generics. typing's caches are bounded lru_caches (128 entries each) and keep
    the last 128 classes, and so their fields, alive: instances of a project class grow for 128 runs, then plateau
    (measured outside pytest: 256 Field instances from run 128 on, blocks flat to run 2,000)."""
    source = """
        import typing
        from typing import Optional

        class Field:
            def __init__(self, kind):
                self.kind = kind

        def test_clean():
            class A:
                x = Field(int)
                y = Field(str)
            hints = [Optional[A], list[A], typing.Union[A, int], typing.List[A], dict[str, A]]
            assert len(hints) == 5
    """
    expect_clean(pytester, {"test_typing": source}, 1)


def test_hypothesis_tests_are_clean(pytester: pytest.Pytester) -> None:
    """hypothesis's own pytest plugin (_hypothesis_pytestplugin) wraps a parametrized @given test's settings in a new
    settings object, parent=the previous one, at every setup: a chain one longer per run, made by hypothesis's
    bookkeeping, not by the test."""
    pytest.importorskip("hypothesis")
    source = """
        import pytest
        from hypothesis import given, settings, strategies as st

        @given(st.integers())
        def test_default_settings(x):
            assert isinstance(x, int)

        @settings(max_examples=10)
        @given(st.integers())
        def test_few_examples(x):
            assert isinstance(x, int)

        @pytest.mark.parametrize("n", [1, 2])
        @settings(max_examples=10)
        @given(st.integers())
        def test_parametrized(n, x):
            assert isinstance(x * n, int)
    """
    if sys.version_info >= (3, 11):
        expect_clean(pytester, {"test_hyp": source}, 4)
        return
    # Python 3.10: hypothesis's bookkeeping grows over a test's first runs, and its runs trace
    # 20 times slower or more (a traced run of 100 examples took 1.2 s, against 0.05 s untraced):
    # a suspect may not be settled within its bound. It says so; none is a leak.
    result = run(pytester, {"test_hyp": source})
    assert_outcomes(result, pytester, passed=4)
    for nodeid, test in _report(pytester).items():
        # (inconclusive, it names its bound: "do not fit in what is left of the 1.0 s bound", "overran the 0.5 s bound")
        assert test["status"] == "clean" or (test["status"] == "inconclusive" and re.search(r"\d s bound\b", test["reason"])), (nodeid, test["reason"])


def test_bounded_caches_that_fill_slowly_are_clean(pytester: pytest.Pytester) -> None:
    source = """
        import collections
        import functools

        N = [0]

        @functools.lru_cache(maxsize=256)
        def render(i):
            return {"i": i, "payload": [i] * 10}

        def test_lru_cache_new_key_each_run():
            N[0] += 1
            render(N[0])

        HISTORY = collections.deque(maxlen=100)

        def test_deque_appended_each_run():
            HISTORY.append({"role": "user", "text": "x" * 100})
    """
    expect_clean(pytester, {"test_bounded": source}, 2)


def test_big_temporaries_and_dropped_cycles_are_clean(pytester: pytest.Pytester) -> None:
    source = """
        class Node:
            def __init__(self):
                self.other = None

        def test_big_temporary():
            buf = bytearray(40 * 1024 * 1024)
            buf[::4096] = b"x" * len(buf[::4096])
            assert len(buf) == 40 * 1024 * 1024

        def test_dropped_cycles():
            for _ in range(100):
                a, b = Node(), Node()
                a.other, b.other = b, a
                d = {}
                d["self"] = d
    """
    expect_clean(pytester, {"test_temporaries": source}, 2)


@pytest.mark.skipif(not hasattr(sys, "_deactivate_opcache"), reason="only Python 3.10 builds a code object's opcode cache after 1,024 calls")
def test_code_that_gets_hot_over_the_runs_is_no_suspect(pytester: pytest.Pytester) -> None:
    """Python 3.10 gives a code object its opcode cache, two pymalloc blocks kept as long as the code, at its
    1,024th call: a function a test calls k times a run gets them at run 1024/k. Here helper i reaches that call
    in run i + 2, so without the cache turned off (as regrtest -R turns it off) the blocks step up run after run,
    and the clean test was made a suspect (166 to 294 runs)."""
    source = """
        import math

        HELPERS = []
        for i in range(300):  # a code object each (functions made in a loop would share one)
            exec(compile(f"def helper_{i}(x):\\n    return math.floor(x)\\n", __file__, "exec"))
            HELPERS.append((globals()[f"helper_{i}"], -(-1024 // (i + 2))))

        def test_helpers():
            for helper, calls in HELPERS:
                for _ in range(calls):
                    helper(1.5)
    """
    expect_clean(pytester, {"test_hot_code": source}, 1)
    _assert_no_suspect(_report(pytester)["test_hot_code.py::test_helpers"])


def test_one_slow_run_of_a_quick_test_is_no_suspect(pytester: pytest.Pytester) -> None:
    """One run of a quick test is slow, as a busy machine makes one: the runner reads the next run's wait for a CPU
    and its slowdown watch looks, for the first time. On Python 3.10 a code object's first call keeps a frame, a
    block, so the screen's blocks stepped by 5 and then 1 (the screen's own tests, reached for the first time by
    that growth), and the test was made a suspect (254 runs where 13 clear it)."""
    source = """
        import time
        import pytest

        RUNS = [0]

        @pytest.mark.memleak
        def test_one_slow_run():
            RUNS[0] += 1
            d = {i: str(i) for i in range(200)}
            if RUNS[0] == 9:
                time.sleep(0.05)
            del d
    """
    expect_clean(pytester, {"test_slow_once": source}, 1)
    _assert_no_suspect(_report(pytester)["test_slow_once.py::test_one_slow_run"])


def _assert_no_suspect(test: dict) -> None:
    """The test was cleared by its screen: it made no more runs than the screen makes at most (the
    first call timed again among them), where a suspect's windows make hundreds."""
    screen_runs = repeating.SCREEN_STRETCHES * test["settings"]["runs"] + 1
    assert test["measured_runs"] <= screen_runs, (test["measured_runs"], test["reason"], test["series"])


# -- re-run hygiene: growth the re-run itself causes ------------------------------------------------------------


def test_state_patched_on_every_run_is_told_apart(pytester: pytest.Pytester) -> None:
    """A loader test that registers its fresh temporary zip path in sys.path_importer_cache on every run: it grows,
    and is reported, but as the test's own non-repeatable setup rather than a product leak.

    WORDING TO BE AGREED: see HYGIENE_PATTERNS at the top of this file.
    """
    source = """
        import sys
        def test_loader(tmp_path):
            sys.path_importer_cache[str(tmp_path / "x.zip")] = None  # LEAK-LINE
    """
    result = run(pytester, {"test_loader_state": source}, "-v")
    assert_outcomes(result, pytester, failed=1)
    result.stdout.fnmatch_lines(["*test_loader_state.py::test_loader* LEAKED*", "LEAK test_loader_state.py::test_loader*"])
    told = [line for line in result.outlines if any(fnmatch(line, p) for p in HYGIENE_PATTERNS)]
    assert told, "no line says the growth is the test's own re-run setup:\n" + result.stdout.str()


# -- BOUNDED COST --------------------------------------------------------------------------------------------------


def test_test_that_slows_down_every_run_finishes(pytester: pytest.Pytester) -> None:
    """A wrapper stacked on a class attribute on every run: each call takes twice as long as the one before,
    from ~1 ms. Plain pytest runs it once; the checker must stop, and say why, not hang."""
    source = """
        def base():
            pass

        def wrap(fn):
            def wrapper():
                fn()
                fn()
            return wrapper

        class Wrapped:
            call = staticmethod(base)

        for _ in range(13):  # the test's own run makes 16,384 calls of base(): about a millisecond
            Wrapped.call = staticmethod(wrap(Wrapped.call))

        def test_wrapped():
            Wrapped.call = staticmethod(wrap(Wrapped.call))  # one more layer: twice the calls
            Wrapped.call()
    """
    try:
        result = run(pytester, {"test_slower": source}, timeout=120)
    except pytester.TimeoutExpired:
        pytest.fail("the inner run did not finish in 120 s: the checker kept re-running a test that doubles its run time")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("passed", 0) == 1, result.stdout.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
    verdict = [line for line in result.outlines if line.startswith(("LEAK test_slower.py", "INCONCLUSIVE test_slower.py"))]
    assert verdict, "reported neither leaking nor inconclusive:\n" + result.stdout.str() + "\n" + verdict_lines(pytester)
    assert any(fnmatch(verdict[0], p) for p in SLOWDOWN_PATTERNS), f"the reason does not say the runs got slower: {verdict[0]}"


def test_thread_leak_that_slows_the_runs_still_fails(pytester: pytest.Pytester) -> None:
    """Each run leaves a thread waiting and gets slower with the threads left (as a loaded machine
    makes a thread leak slower): the runs are stopped, and the threads the screen counted, still
    alive at the stop, are the verdict (seen as inconclusive in CI under xdist before)."""
    source = """
        import threading
        import time

        STOP = threading.Event()
        LEFT = []

        def test_leaves_a_thread():
            t = threading.Thread(target=STOP.wait, daemon=True)
            t.start()
            LEFT.append(t)
            time.sleep(0.0001 * len(LEFT) ** 2)
    """
    result = run(pytester, {"test_slowing_threads": source}, "-v")
    assert_outcomes(result, pytester, failed=1)
    result.stdout.fnmatch_lines(["LEAK test_slowing_threads.py::test_leaves_a_thread - live threads grew by * still alive when the runs stopped"])
    report = _report(pytester)["test_slowing_threads.py::test_leaves_a_thread"]
    assert [f["kind"] for f in report["findings"]] == ["threads"]
    # stopped by the slowdown, or because its slowed runs no longer fit a traced window
    assert any("repeating stopped early" in d for d in report["details"]), report["details"]


@pytest.mark.slow
def test_slow_buffer_growing_in_place_is_never_clean(pytester: pytest.Pytester) -> None:
    """A slow test (60 ms) whose one string is rebuilt 1 KiB longer on every run: no new Python
    block, only the allocator's bytes, as glibc's caches filling look too. Unmarked it is not clean
    but inconclusive, naming the marker; marked memleak it is a leak at its line."""
    source = """
        import time
        import pytest

        LOG = ""
        MARKED = ""

        def test_unmarked():
            global LOG
            LOG = LOG + "x" * 1024
            time.sleep(0.06)

        @pytest.mark.memleak
        def test_marked():
            global MARKED
            MARKED = MARKED + "x" * 1024  # LEAK-LINE
            time.sleep(0.06)
    """
    result = run(pytester, {"test_slow_buffer": source}, "-v")
    report = _report(pytester)
    unmarked, marked = report["test_slow_buffer.py::test_unmarked"], report["test_slow_buffer.py::test_marked"]
    assert unmarked["status"] in ("inconclusive", "leak"), verdict_lines(pytester)
    # (unmarked, its windows can also show it: a persistence window that outran the bound keeps the last whole one's growth)
    caught = unmarked["status"] == "leak"
    assert_outcomes(result, pytester, passed=0 if caught else 1, failed=2 if caught else 1)
    assert marked["status"] == "leak", verdict_lines(pytester)
    assert marked["sites"][0]["site"] == f"test_slow_buffer.py:{_line_of(source)}"


@PINNED
def test_a_slow_test_whose_own_run_waited_for_its_cpu_gets_no_cheap_stretch(pytester: pytest.Pytester) -> None:
    """Ten calls under one setup are cheap when they cost no more than two of the test's own runs.
    Beside two busy loops in CI, a clean test that sleeps 0.2 s had an own run of a second or more,
    so its calls read as cheap: 21 runs, where a slow test gets 9 at the most. Here its own run
    yields its CPU to a busy loop pinned beside it for a second: that wait is not its cost."""
    source = """
        import os
        import time
        FIRST = [True]
        def test_sleeps():
            if FIRST[0]:  # its own run: the busy loop holds the CPU for a second
                FIRST[0] = False
                end = time.perf_counter() + 1.0
                while time.perf_counter() < end:
                    os.sched_yield()
            time.sleep(0.2)
    """
    with _beside_busy_loops(1):
        result = run(pytester, {"test_yielding": source}, "--memleak-budget=none")
    assert_outcomes(result, pytester, passed=1)
    found = _report(pytester)["test_yielding.py::test_sleeps"]
    most = 2 + repeating.SCREEN_STRETCHES + repeating.STEPS  # its own, the warm-up, the screen, one window
    assert found["status"] == "clean" and found["runs"] <= most, (found["runs"], found["reason"])


class _Preempted:
    """The kernel's count of this thread's wait for a CPU, with the waits set by the test (a real
    preemption does not fall where a test asks): ``pending`` seconds are added at each reading,
    ``ns`` by the test; ``sleep`` sleeps each added wait, so that the clock sees the wait the count
    reports. ``kernel`` (a probe.contention.Contention counting exactly) adds the thread's real waits,
    so that on a loaded machine a sleep that ends late for want of a CPU is not read as work."""

    def __init__(self, sleep: bool = False, kernel: contention_mod.Contention | None = None) -> None:
        self.ns, self.sleep, self.pending, self.kernel = 0, sleep, 0.0, kernel

    def wait(self, seconds: float) -> None:
        if self.sleep:
            time.sleep(seconds)
        self.ns += int(seconds * 1e9)

    def _count(self) -> int:
        return self.ns + (self.kernel.mark() if self.kernel is not None else 0)

    def mark(self) -> int:
        mark = self._count()
        self.wait(self.pending)  # just after the reading
        return mark

    def since(self, mark: int) -> float:
        self.wait(self.pending)  # just before the reading
        return (self._count() - mark) / 1e9


@pytest.mark.parametrize("counted", [True, False], ids=["waits counted", "waits not counted"])
def test_runs_that_only_wait_longer_for_their_cpu_are_no_slowdown(request: pytest.FixtureRequest, counted: bool) -> None:
    """A slowdown is judged on each run less its wait for a CPU. Beside two busy loops in CI, a test
    keeping a 2 MiB numpy array a run read as slowing "from 11.7 ms to 21.9 ms a run", and its leak
    went unreported (inconclusive). Here five runs in a row each wait twice as long as the one
    before (10 ms to 160 ms) and work no longer: no slowdown. The same runs with their waits not
    counted (as before) are a slowdown."""
    from pytest_memleak.check.runner import SlowingDown

    run = Runner(request.node)
    kernel = contention_mod.Contention()
    waits = _Preempted(kernel=kernel if kernel.exact else None)  # (a loaded machine's own waits are no work either)
    run.cpu_wait, run._inside, run.watch_slowing = waits, True, True
    began = run._begin_run()
    run._account(began, None, torn_down=False)  # a quick first run
    try:
        for k in range(5):
            began = run._begin_run()
            time.sleep(0.01 * 2**k)  # the wall time a wait takes (the work is nothing)
            if counted:
                waits.ns += int(0.01 * 2**k * 1e9)
            run._account(began, None, torn_down=False)
    except SlowingDown:
        assert not counted, [round(d, 3) for d in run.busy(0, run.runs)]
    else:
        assert counted, [round(d, 3) for d in run.durations(run.runs)]
        # (the first wait is not read: it follows a run quicker than WAIT_READ_MIN, which reads none)
        assert max(run.busy(2, run.runs)) < 0.01 and run.durations(1)[0] >= 0.16


def test_a_run_is_timed_less_only_the_wait_inside_it() -> None:
    """A test's own run and a stretch's first call are timed less the thread's wait for a CPU, read
    inside the clock's span. Read outside it (the wait first, the clock second), a preemption between
    the two readings was subtracted from a run it did not fall in, and a quick test's own run could
    read as 1 us: its screen, sized by that, then clears it after one run (a loaded CI run cleared
    an empty test after fewer than three). The preemptions are set where the readings are."""
    from pytest_memleak.check.runner import less_wait

    preempted = _Preempted(sleep=True)
    preempted.pending = 0.05
    result, seconds = less_wait(preempted, lambda: time.sleep(0.1) or "ran")
    assert result == "ran" and seconds >= 0.099, seconds  # the run's own 0.1 s, though 0.1 s of waiting was read
    assert less_wait(None, lambda: 7)[0] == 7  # no exact count: the clock alone


def test_slow_clean_test_is_run_only_a_few_times(pytester: pytest.Pytester) -> None:
    """A clean test of ~0.2 s a run (a socket round trip through a thread, then a wait) costs a few runs, not 30:
    its own, the screen's and, when the thread's allocator noise grows in every stretch (seen under load in CI),
    one persistence window of single runs that clears it."""
    source = """
        import socket
        import threading
        import time

        def test_socket_round_trip():
            a, b = socket.socketpair()
            with a, b:
                t = threading.Thread(target=lambda: b.sendall(b.recv(5)))
                t.start()
                a.sendall(b"hello")
                assert a.recv(5) == b"hello"
                t.join()
            time.sleep(0.2)

        def test_sleeps():
            time.sleep(0.2)
    """
    result = run(pytester, {"test_slow_clean": source}, "--memleak-budget=none")  # the bound per test, not the session's
    assert_outcomes(result, pytester, passed=2)
    report = _report(pytester)
    runs = {nodeid: t["runs"] for nodeid, t in report.items()}
    assert len(runs) == 2, runs
    why = {nodeid: (t["status"], t["reason"], t["details"], t["series"], t["own_seconds"]) for nodeid, t in report.items()}
    for nodeid, t in report.items():
        assert t["own_seconds"] >= 0.2, why  # (the test's own run, as the report gives it)
        # ten calls under one setup are cheap when they cost no more than CHEAP_SHARE own runs: a call sleeps 0.2 s,
        # so only an own run of a second or more makes them so (its stall beside a loaded CI run made the screen's
        # stretches ten runs, and the test cost 21)
        cheap = repeating.CHEAP_SHARE * t["own_seconds"] >= repeating.CHEAP_STRETCH * 0.2
        stretch = repeating.CHEAP_STRETCH if cheap else 1
        most = 2 + (repeating.SCREEN_STRETCHES + repeating.STEPS) * stretch  # its own, the warm-up, the screen, one window
        assert runs[nodeid] <= most, f"runs per test: {runs}\n{why}"
    # never a leak; the thread's round trip can leave glibc's per-thread caches a little fuller
    # on one run than the next, which a slow test is not given the runs to tell from a leak
    statuses = {nodeid: (t["status"], t["reason"]) for nodeid, t in report.items()}
    assert statuses["test_slow_clean.py::test_sleeps"][0] == "clean", statuses
    status, reason = statuses["test_slow_clean.py::test_socket_round_trip"]
    # (or the time bound, on a slow or loaded machine, before a 0.2 s test showed which: it says so)
    assert status == "clean" or (status == "inconclusive" and ("glibc's per-thread caches" in reason or "mark the test memleak" in reason)), statuses


def test_a_run_keeps_as_many_blocks_whether_its_wait_was_read_or_not(request: pytest.FixtureRequest) -> None:
    """The runner's own state holds the same blocks after a run whose wait for a CPU was read (one
    after a run of WAIT_READ_MIN or more) as after one whose was not. The mark was an int attribute:
    a block when read, the cached -1 when not, so a test of about a millisecond a run, read at some
    runs and not at others, stepped [+2, 0] for a block a run, and CI read its leak clean."""
    from pytest_memleak.check.runner import WAIT_READ_MIN
    from pytest_memleak.probe.contention import Contention

    waits = Contention()
    if not waits.exact:
        pytest.skip("the kernel does not count this thread's wait for a CPU here (/proc/thread-self/schedstat)")
    run = Runner(request.node)
    run.cpu_wait = waits

    def one(seconds: float) -> int:
        began = run._begin_run()
        time.sleep(seconds)
        run._account(began, None, torn_down=False)
        return sys.getallocatedblocks()

    slow, quick = 2 * WAIT_READ_MIN, 0.0
    steps = []
    for _ in range(8):
        before = one(slow)  # the next run reads its wait
        read = one(quick)  # ... and the one after it does not
        steps.append((read - before, one(slow) - read))
    assert steps[3:] == [(0, 0)] * 5, steps  # (the first cycles settle the free lists)
