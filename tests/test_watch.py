"""mem_watch: objects a test says must be collected by its end."""

from __future__ import annotations

import gc
import re
import sys
import textwrap
import types
from collections.abc import Iterator

import pytest

from pytest_memleak.explicit.watch import Survivor, Watcher


class Session:
    pass


@pytest.fixture
def registry() -> Iterator[types.ModuleType]:
    module = types.ModuleType("myservice.sessions")
    module.OPEN = []  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield module
    finally:
        del sys.modules[module.__name__]


def test_a_collected_object_is_no_survivor():
    watcher = Watcher()
    s = watcher.watch(Session(), "closed sessions are released")
    assert isinstance(s, Session)
    assert watcher.alive() == 1
    del s
    assert watcher.survivors() == []
    watcher.assert_collected()


def test_a_cycle_is_collected_before_judging():
    watcher = Watcher()
    a, b = Session(), Session()
    a.peer, b.peer = b, a  # type: ignore[attr-defined]
    watcher(a, "a cycle")
    del a, b
    assert watcher.survivors() == []


def test_a_survivor_is_reported_with_why_and_the_global_that_holds_it(registry: types.ModuleType):
    watcher = Watcher()
    kept = Session()
    watcher(kept, "closed sessions are released")
    registry.OPEN.append(kept)
    del kept
    (survivor,) = watcher.survivors()
    assert survivor.why == "closed sessions are released"
    assert survivor.type == "tests.test_watch.Session" or survivor.type.endswith("test_watch.Session")
    assert survivor.path == "myservice.sessions.OPEN[0] -> Session"
    message = watcher.message([survivor])
    assert message.startswith("mem_watch: 1 of 1 watched object(s) survived the test:")
    assert "(closed sessions are released) is still alive, kept by: myservice.sessions.OPEN[0] -> Session" in message
    with pytest.raises(AssertionError, match=r"kept by: myservice\.sessions\.OPEN\[0\] -> Session"):
        watcher.assert_collected()
    registry.OPEN.clear()
    assert watcher.survivors() == []


def test_values_without_weak_references_are_refused_clearly():
    watcher = Watcher()
    for value in ([], {}, 3, "text", (1,)):
        with pytest.raises(TypeError, match=r"mem_watch cannot watch a \w+: it does not support weak references"):
            watcher.watch(value, "why")
    assert len(watcher) == 0


def test_the_watcher_keeps_nothing_alive():
    watcher = Watcher()
    watcher.watch(Session(), "temporary")
    gc.collect()
    assert watcher.alive() == 0


def test_survivor_line():
    s = Survivor("why", "app.Thing", "app.CACHE[0] -> Thing", "<app.Thing object at 0x1>")
    assert s.line() == "app.Thing <app.Thing object at 0x1> (why) is still alive, kept by: app.CACHE[0] -> Thing"


# -- the fixture, in a pytest of its own ----------------------------------------------------

FIXTURE_TESTS = """
    import gc

    class Conversation:
        pass

    HISTORY = {}

    def test_kept_by_a_global(mem_watch):
        c = Conversation()
        mem_watch(c, "finished conversations are dropped")
        HISTORY["3f2a9b1c0d"] = c

    def test_released(mem_watch):
        c = mem_watch(Conversation(), "finished conversations are dropped")
        del c

    def test_failing_on_its_own(mem_watch):
        c = mem_watch(Conversation(), "never checked: the test fails first")
        assert c is None
"""


def test_the_fixture_fails_a_test_whose_object_survives(pytester: pytest.Pytester):
    pytester.makepyfile(textwrap.dedent(FIXTURE_TESTS))
    result = pytester.runpytest_subprocess("-p", "pytest_memleak.explicit.watch", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    out = result.stdout.str()
    # a survivor fails the test at teardown, with its reason and the path that holds it
    assert re.search(r"ERROR at teardown of test_kept_by_a_global", out), out
    assert "mem_watch: 1 of 1 watched object(s) survived the test:" in out
    assert re.search(
        r"test_the_fixture_fails_a_test_whose_object_survives\.Conversation <\S+ object at 0x[0-9a-f]+> "
        r"\(finished conversations are dropped\) is still alive, kept by: "
        r"test_the_fixture_fails_a_test_whose_object_survives\.HISTORY\['3f2a9b…'\] -> Conversation",
        out,
    ), out
    # a test that failed on its own is not piled on: its own failure stands
    assert "(never checked: the test fails first) is still alive" not in out
    assert re.search(r"FAILED \S+::test_failing_on_its_own", out), out
    assert re.search(r"ERROR \S+::test_kept_by_a_global", out), out
    assert not re.search(r"(FAILED|ERROR) \S+::test_released", out), out


def test_the_fixture_is_available_without_p(pytester: pytest.Pytester):
    pytester.makepyfile("def test_x(mem_watch):\n    mem_watch(object.__new__(type('T', (), {})), 'w')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
