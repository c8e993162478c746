"""One root cause, one finding: leaks grouped by the function outside the tests they allocate through."""

from __future__ import annotations

import json
import pathlib
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_memleak.evidence import grouping
from pytest_memleak.evidence.sites import Classifier
from pytest_memleak.results import LeakResult, SiteGrowth

LIBRARY = '''
class Registry:
    def __init__(self):
        self.items = {}

    def remember(self, key):
        value = [key] * 8
        self.items[object()] = value
        return value


REGISTRY = Registry()


def remember(key):
    return REGISTRY.remember(key)
'''


def _site(*stack: str) -> SiteGrowth:
    return SiteGrowth(stack[0], 100.0, 1.0, 1000, 10, list(stack))


def test_the_group_is_the_innermost_function_outside_the_tests_and_the_stdlib(tmp_path: pathlib.Path) -> None:
    (tmp_path / "mylib.py").write_text(LIBRARY)
    stdlib_frame = f"{sys.modules['weakref'].__file__}:428"
    tests = {"tests/test_a.py"}
    # the key (line 8) and the value (line 7) of one call: one function, one group
    assert grouping.leak_group([_site(stdlib_frame, "mylib.py:8", "tests/test_a.py:3")], tests, Classifier(str(tmp_path))) == "mylib.py:Registry.remember()"
    assert grouping.leak_group([_site("mylib.py:7", "tests/test_a.py:5")], tests, Classifier(str(tmp_path))) == "mylib.py:Registry.remember()"
    # a line outside any function, or a file that cannot be read: the line itself
    assert grouping.leak_group([_site("mylib.py:12", "tests/test_a.py:5")], tests, Classifier(str(tmp_path))) == "mylib.py:12"
    assert grouping.leak_group([_site("gone.py:3")], tests, Classifier(str(tmp_path))) == "gone.py:3"
    # every frame the tests' own (a conftest too): no group
    assert grouping.leak_group([_site("tests/test_a.py:3"), _site("tests/conftest.py:9")], tests, Classifier(str(tmp_path))) is None
    assert grouping.leak_group([], tests) is None
    # an installed library is not the standard library, though a venv's lib/pythonX.Y holds both
    installed = f"{json.__file__}:1", f"{pytest.__file__}:1"
    assert grouping.leak_group([_site(*installed)], tests) == "pytest/__init__.py:1"


def test_a_retention_path_from_outside_the_tests_names_the_group_up_to_what_grows() -> None:
    tests = {"tests/test_a.py", "tests/conftest.py"}
    lines = [
        "list: 2 instance(s), 112 B shallow",
        "  2 × list (112 B): test_a.KEPT[…]; e.g. test_a.KEPT[3]",  # the test module's own: not a group
        "  1 × dict (64 B): no path from a module global, class attribute, live frame or context variable within 12 references",
        "  2 × io.BytesIO (282 B): lib._default -> function.__closure__[…] -> cell.cell_contents -> WeakKeyDictionary.data[…]"
        " -> Wrapper.buffer -> BytesIO; e.g. lib._default -> function.__closure__[0] -> …",
    ]
    group = grouping.retention_group(lines, tests)
    assert group == "kept by lib._default -> function.__closure__[…] -> cell.cell_contents -> WeakKeyDictionary.data[…]"
    assert grouping.short(group) == "kept by lib._default -> … -> WeakKeyDictionary.data[…]"
    assert grouping.retention_group(lines[:3], tests) is None
    assert grouping.retention_group(["  1 × X (1 B): tests.test_a.CACHE[…]"], tests) is None  # dotted test module too
    runner = "  1 × list (56 B): _pytest.debugging.pytestPDB._pluginmanager -> PytestPluginManager._name2plugin[…] -> list"
    assert grouping.retention_group([runner], tests) is None  # pytest's own state is no shared cause
    # the retention path goes first; without one, where it was made
    site = _site("lib.py:3", "tests/test_a.py:5")
    assert grouping.group_of(lines, [site], tests) == group
    assert grouping.group_of(lines[:3], [site], tests) == "lib.py:3"


@given(
    members=st.lists(st.tuples(st.sampled_from(["a()", "b()", None]), st.sampled_from(["leak", "clean", "inconclusive"])), max_size=30)
)
def test_groups_count_each_leak_once_and_keep_only_shared_causes(members: list[tuple[str | None, str]]) -> None:
    results = [{"nodeid": f"t.py::test_{i}", "status": status, "group": group, "retained_per_run": 10.0} for i, (group, status) in enumerate(members)]
    found = grouping.groups([LeakResult.from_dict(r) for r in results])
    assert all(g["count"] >= 2 and g["count"] == len(g["tests"]) for g in found)
    for g in found:
        expected = [r["nodeid"] for r in results if r["group"] == g["site"] and r["status"] == "leak"]
        assert g["tests"] == expected and g["retained_per_run"] == 10.0 * len(expected)
    assert [g["count"] for g in found] == sorted((g["count"] for g in found), reverse=True)
    counted = [t for g in found for t in g["tests"]]
    assert len(counted) == len(set(counted))  # a test is in one group at the most


@pytest.mark.slow
def test_a_thousand_failures_of_one_cause_are_one_finding(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mylib=LIBRARY)
    pytester.makepyfile(
        test_uses=textwrap.dedent(
            """
            import pytest

            import mylib

            OWN = []

            @pytest.mark.parametrize("n", range(6))
            def test_calls_the_library(n):
                mylib.remember(n)

            def test_own_leak():
                OWN.append(object())
            """
        )
    )
    args = ("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", "--memleak-budget=none")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(failed=7)  # each leaking test still fails: its own verdict stands
    result.stdout.fnmatch_lines(
        [
            "7 checked: 7 leaking, 0 clean, 0 inconclusive, 0 without verdict (not passed)",
            "LEAK ×6 tests, kept by mylib.REGISTRY -> Registry.items[[]…[]], one cause: test_uses.py::test_calls_the_library[[]0[]] and 5 more (memleak.json lists them) - *",
            "LEAK test_uses.py::test_own_leak - *",
        ]
    )
    result.stdout.no_fnmatch_line("LEAK test_uses.py::test_calls_the_library[[]1[]]*")
    report = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    assert report["summary"]["groups"] == [
        {
            "site": "kept by mylib.REGISTRY -> Registry.items[…]",
            "count": 6,
            "tests": [f"test_uses.py::test_calls_the_library[{n}]" for n in range(6)],
            "retained_per_run": pytest.approx(sum(t["retained_per_run"] for t in report["tests"] if t["group"]), rel=0.01),
        }
    ]
    assert {t["nodeid"]: t["group"] for t in report["tests"]}["test_uses.py::test_own_leak"] is None
    html = (pytester.path / "reports" / "memleak.html").read_text()
    assert "Leak groups (1)" in html and "kept by mylib.REGISTRY -&gt; Registry.items[…]" in html

    # a baseline entry can name the group: every test of it is known
    (pytester.path / "known.json").write_text(json.dumps({"schema": 1, "leaks": {"group:kept by mylib.REGISTRY -> Registry.items[…]": {"heap": 10_000.0}}}))
    known = pytester.runpytest_subprocess(*args, "--memleak-baseline=known.json")
    known.assert_outcomes(passed=6, failed=1)
    known.stdout.fnmatch_lines(["LEAK (known) ×6 tests, kept by mylib.REGISTRY -> Registry.items[[]…[]], one cause: *"])

    # memleak_ignore can name the group: its tests pass, and the summary says what was not counted
    ignored = pytester.runpytest_subprocess(*args, "--memleak-ignore=group:kept by mylib.*")
    ignored.assert_outcomes(passed=6, failed=1)
    ignored.stdout.fnmatch_lines(
        [
            "7 checked: 1 leaking, 6 clean, 0 inconclusive, 0 without verdict (not passed)",
            "memleak_ignore: growth not counted in 6 test(s), *B/run in all",
            "LEAK test_uses.py::test_own_leak - *",
        ]
    )
    report = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    one = next(t for t in report["tests"] if t["nodeid"] == "test_uses.py::test_calls_the_library[0]")
    assert one["reason"] == "its leak is not counted: memleak_ignore group:kept by mylib.* names its group (kept by mylib.REGISTRY -> Registry.items[…])"
    assert one["details"][0].startswith("memleak_ignore group:kept by mylib.*: not counted: retained ")


def test_a_group_pattern_runs_to_the_next_comma() -> None:
    from pytest_memleak.config.options import _patterns

    assert _patterns("click/* group:kept by mylib.* -> x, */vendor/*:*") == ("click/*", "group:kept by mylib.* -> x", "*/vendor/*:*")
    assert _patterns("a.py:*\ngroup:mylib.py:Registry.remember()") == ("a.py:*", "group:mylib.py:Registry.remember()")
    assert _patterns(["group:kept by a b"]) == ("group:kept by a b",)
