"""A project's own counters (the ``pytest_memleak_counters`` hook), judged by the same rule."""

from __future__ import annotations

import json

import pytest

from pytest_memleak import Counter
from pytest_memleak.check.counters import builtin, problem

ARGS = ("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")

# rows in a real sqlite table: a store of sessions that are never deleted grows no Python heap
SESSIONS_CONFTEST = """
import sqlite3

import pytest
from pytest_memleak import Counter

DB = sqlite3.connect(":memory:", isolation_level=None)
DB.execute("create table sessions (id integer primary key, user text)")


def rows():
    return DB.execute("select count(*) from sessions").fetchone()[0]


def pytest_memleak_counters(config):
    return [Counter("session rows", rows, budget={budget})]
"""

SESSIONS_TESTS = """
from conftest import DB

def test_sessions_never_deleted():
    DB.execute("insert into sessions (user) values ('u')")

def test_sessions_deleted():
    cur = DB.execute("insert into sessions (user) values ('u')")
    DB.execute("delete from sessions where id = ?", (cur.lastrowid,))
"""


def _report(pytester: pytest.Pytester) -> dict[str, dict]:
    data = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    return {t["nodeid"].split("::")[-1]: t for t in data["tests"]}


def test_a_counter_finds_what_the_heap_does_not(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SESSIONS_CONFTEST.format(budget=0))
    pytester.makepyfile(test_sessions=SESSIONS_TESTS)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["LEAK test_sessions.py::test_sessions_never_deleted - session rows grew by * over * runs (+1.00/run, allowed 0/run)"])
    found = _report(pytester)
    assert found["test_sessions_deleted"]["status"] == "clean", found["test_sessions_deleted"]["reason"]
    leak = found["test_sessions_never_deleted"]
    assert [f["kind"] for f in leak["findings"]][0] == "session rows"
    assert "screen.session rows" in leak["series"]


def test_a_counters_budget_is_per_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SESSIONS_CONFTEST.format(budget=1))
    pytester.makepyfile(test_sessions=SESSIONS_TESTS)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=2)
    found = _report(pytester)
    assert found["test_sessions_never_deleted"]["status"] == "clean", found["test_sessions_never_deleted"]["reason"]


def test_a_pool_that_is_never_given_back_is_named(pytester: pytest.Pytester) -> None:
    """A connection pool's open connections, a count the heap shows only as objects."""
    pytester.makeconftest(
        """
        import sqlite3
        from pytest_memleak import Counter

        class Pool:
            def __init__(self):
                self.idle, self.opened = [], 0
            def acquire(self):
                if self.idle:
                    return self.idle.pop()
                self.opened += 1
                return sqlite3.connect(":memory:")
            def release(self, conn):
                self.idle.append(conn)

        POOL = Pool()

        def pytest_memleak_counters(config):
            return [Counter("pool connections", lambda: POOL.opened)]
        """
    )
    pytester.makepyfile(
        test_pool="""
        from conftest import POOL

        BORROWED = []

        def test_given_back():
            conn = POOL.acquire()
            conn.total_changes
            POOL.release(conn)

        def test_never_given_back():
            BORROWED.append(POOL.acquire())
        """
    )
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*also: pool connections grew by * over * runs (+1.00/run, allowed 0/run)*"])
    assert _report(pytester)["test_given_back"]["status"] == "clean"


def test_a_counter_in_bytes_reads_as_sizes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from pytest_memleak import Counter

        SPOOLED = [0]

        def pytest_memleak_counters(config):
            return [Counter("spooled bytes", lambda: SPOOLED[0], budget=1024, unit="B")]
        """
    )
    pytester.makepyfile(
        test_spool="""
        from conftest import SPOOLED

        def test_spools():
            SPOOLED[0] += 4096
        """
    )
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["LEAK test_spool.py::test_spools - spooled bytes grew by * KiB over * runs (+4.0 KiB/run, allowed 1.0 KiB/run)"])
    finding = _report(pytester)["test_spools"]["findings"][0]
    assert finding["unit"] == "B" and finding["per_run"] == 4096


def test_a_counter_that_fails_is_said_and_the_test_stands(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from pytest_memleak import Counter

        def broken():
            raise ConnectionError("metrics endpoint down")

        def pytest_memleak_counters(config):
            return [Counter("remote sockets", broken)]
        """
    )
    pytester.makepyfile(test_ok="def test_ok():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1)
    found = _report(pytester)["test_ok"]
    assert found["status"] == "clean"
    assert "the counter 'remote sockets' failed: ConnectionError: metrics endpoint down" in found["problems"]
    assert "screen.remote sockets" not in found["series"]


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("[42]", "*pytest_memleak_counters (for test_x.py::test_x) returned 42: expected pytest_memleak.Counter(name, read, budget=0, unit='')*"),
        ("42", "*pytest_memleak_counters (for test_x.py::test_x) returned 42: expected a list of pytest_memleak.Counter*"),
        ("[Counter('fds', len)]", "*returned a Counter named 'fds': expected a name of its own*"),
        ("[Counter('pool', len, budget=-1)]", "*returned the Counter 'pool' with budget=-1: expected a number of 0 or more per run*"),
        ("[Counter('pool', len, unit='MB')]", "*returned the Counter 'pool' with unit='MB': expected 'B' (bytes) or '' (a count)*"),
        ("[Counter('pool', len), Counter('pool', len)]", "*returned more than one Counter named 'pool'*"),
    ],
)
def test_a_bad_counter_is_a_usage_error(pytester: pytest.Pytester, returned: str, message: str) -> None:
    pytester.makeconftest(f"from pytest_memleak import Counter\n\ndef pytest_memleak_counters(config):\n    return {returned}\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_counters_are_not_asked_for_without_a_check(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_memleak_counters(config):\n    raise AssertionError('asked')\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_no_gpu_counter_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)
    assert builtin() == ()


# No GPU here: CUDA's allocator is replaced by a tally of the bytes "tensors" hold (the one
# fault this machine cannot make real). PyTorch's own check reads the same call per device.
FAKE_TORCH = """
import sys, types

ALLOCATED = {0: 0, 1: 0}

class Tensor:
    def __init__(self, nbytes, device=0):
        self.nbytes, self.device = nbytes, device
        ALLOCATED[device] += nbytes
    def __del__(self):
        ALLOCATED[self.device] -= self.nbytes

cuda = types.SimpleNamespace(
    is_available=lambda: True,
    device_count=lambda: 2,
    memory_allocated=lambda device=0: ALLOCATED[device],
)
sys.modules["torch"] = types.SimpleNamespace(cuda=cuda, Tensor=Tensor)
"""


def test_gpu_memory_is_a_builtin_counter_when_cuda_is_there(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_TORCH)
    pytester.makepyfile(
        test_gpu="""
        import torch

        CACHE = []

        def test_freed():
            t = torch.Tensor(1 << 20, device=1)
            del t

        def test_kept_on_device_1():
            CACHE.append(torch.Tensor(1 << 20, device=1))
        """
    )
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*also: cuda:1 allocated grew by * MiB over * runs (+1.0 MiB/run, allowed 0 B/run)*"])
    found = _report(pytester)
    assert found["test_freed"]["status"] == "clean"
    assert {"screen.cuda:0 allocated", "screen.cuda:1 allocated"} <= set(found["test_freed"]["series"])


def test_problem_accepts_a_well_formed_counter() -> None:
    assert problem(Counter("pool", lambda: 0, budget=2.5), "here") is None
