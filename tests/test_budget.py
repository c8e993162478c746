"""The session's cost budget (``memleak_budget``): screens charged against the suite's own time.

Inner runs are pytest subprocesses. The slow tests sleep, so each of their runs takes at least
the sleep whatever the load, and a budget of 0 leaves only the floor: what is screened follows
from those two figures, not from how fast this machine is today.
"""

from __future__ import annotations

import json

import pytest
from verdicts import assert_outcomes

from pytest_memleak import budget

BASE_ARGS = ("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
SLEEP = 0.2  # seconds per run of each slow test: two of them are more than the floor pays for
SLOW_TESTS = """
    import time
    import pytest

    @pytest.mark.parametrize("n", range(5))
    def test_slow(n):
        time.sleep(0.2)
"""


def _report(pytester: pytest.Pytester) -> dict[str, dict]:
    data = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    return {t["nodeid"]: t for t in data["tests"]}


def test_the_floor_pays_for_one_slow_screen_and_the_rest_are_counted_unchecked(pytester: pytest.Pytester) -> None:
    assert 2 * SLEEP < budget.FLOOR < 4 * SLEEP  # the first test's screen fits, a second one's no longer does
    pytester.makepyfile(test_slow=SLOW_TESTS)
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--memleak-budget=0")
    assert_outcomes(result, pytester, passed=5)  # the tests' own outcomes stand
    assert result.ret == pytest.ExitCode.OK
    tests = _report(pytester)
    statuses = [tests[f"test_slow.py::test_slow[{n}]"]["status"] for n in range(5)]
    assert statuses == ["clean", "no-verdict", "no-verdict", "no-verdict", "no-verdict"], statuses
    unreached = tests["test_slow.py::test_slow[1]"]
    assert unreached["over_budget"] is True and unreached["runs"] == 0
    assert unreached["reason"].startswith("not checked: the cost budget (memleak_budget 0:"), unreached["reason"]
    assert tests["test_slow.py::test_slow[0]"]["over_budget"] is False
    result.stdout.fnmatch_lines(
        [
            "5 checked: 0 leaking, 1 clean, 0 inconclusive, 4 without verdict (0 not passed, 4 not reached by the cost budget)",
            "the cost budget (memleak_budget 0: *) did not reach 4 test(s): --memleak-budget=none checks every test",
        ]
    )


def test_budget_none_screens_every_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_slow=SLOW_TESTS)
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--memleak-budget=none")
    assert_outcomes(result, pytester, passed=5)
    assert {t["status"] for t in _report(pytester).values()} == {"clean"}
    result.stdout.fnmatch_lines(["5 checked: 0 leaking, 5 clean, 0 inconclusive, 0 without verdict (not passed)"])
    result.stdout.no_fnmatch_line("*cost budget*")


def test_a_marked_test_is_checked_whatever_the_credit(pytester: pytest.Pytester) -> None:
    """Two runs of these tests cost more than the floor: the unmarked one is not reached, the one
    marked memleak is checked all the same (a slow test gets few runs: leak or unsettled)."""
    pytester.makepyfile(
        test_tail="""
            import time
            import pytest

            KEPT = []

            def test_unmarked():
                KEPT.append(object())
                time.sleep(0.3)

            @pytest.mark.memleak(runs=2, confirm_seconds="2s")
            def test_marked():
                KEPT.append(object())
                time.sleep(0.3)
        """,
    )
    assert budget.FLOOR < 2 * 0.3
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--memleak-budget=0")
    tests = _report(pytester)
    assert tests["test_tail.py::test_unmarked"]["status"] == "no-verdict"
    assert tests["test_tail.py::test_unmarked"]["over_budget"] is True
    marked = tests["test_tail.py::test_marked"]
    assert marked["status"] in ("leak", "inconclusive"), marked["reason"]
    assert marked["over_budget"] is False and marked["runs"] > 2
    assert result.ret == (pytest.ExitCode.TESTS_FAILED if marked["status"] == "leak" else pytest.ExitCode.OK)


def test_a_suspect_is_followed_outside_the_budget(pytester: pytest.Pytester) -> None:
    """A leak screened first: its screen fits the floor, and what settles it (hundreds of runs of at
    least 2 ms: more than the floor) is not charged, so the clean tests after it are still screened."""
    pytester.makepyfile(
        test_leak="""
            import time

            KEPT = []

            def test_leak():
                KEPT.append(object())
                time.sleep(0.002)

            def test_clean_a():
                [object() for _ in range(10)]

            def test_clean_b():
                {"a": 1}.copy()
        """
    )
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--memleak-budget=0")
    assert_outcomes(result, pytester, passed=2, failed=1)
    tests = _report(pytester)
    assert tests["test_leak.py::test_leak"]["status"] == "leak"
    assert tests["test_leak.py::test_leak"]["runs"] * 0.002 > budget.FLOOR
    assert tests["test_leak.py::test_clean_a"]["status"] == "clean"
    assert tests["test_leak.py::test_clean_b"]["status"] == "clean"


def test_credit_is_the_floor_plus_a_share_of_the_suite_own_time_less_what_was_charged() -> None:
    cost = budget.CostBudget(0.5, began=0.0)
    cost.book(3.0, 1.0)  # a check of 3 s, 1 s of it screening
    assert cost.charged == 1.0 and cost.exempt == 2.0
    cost.book(1.0, 5.0)  # never more charged than it took
    assert cost.charged == 2.0 and cost.exempt == 2.0
    # 10 s into the session, 4 s of it checking: 6 s of the suite's own, 3 s of credit, 2 s spent
    assert cost.credit(now=10.0) == pytest.approx(budget.FLOOR + 0.5 * 6.0 - 2.0)
    assert budget.CostBudget(None).credit() == float("inf")
    # the floor is a small session's: a suite of ten times FEW tests gets a tenth of it
    assert budget.CostBudget(0.5, tests=budget.FEW).floor == budget.FLOOR
    assert budget.CostBudget(0.5, tests=10 * budget.FEW).floor == pytest.approx(budget.FLOOR / 10)
    assert budget.CostBudget.needed(0.25) == pytest.approx(budget.START_RUNS * 0.25 + budget.START_MIN)


def test_once_the_credit_is_spent_pytest_runs_the_tests_as_without_the_plugin(pytester: pytest.Pytester) -> None:
    """400 quick tests: the floor of such a session is 25 ms, a budget of 0 adds nothing, so the
    screens spend it long before the end; the tests after that run through pytest's own protocol,
    and their reports still say why they were not checked (a failure stays the test's own)."""
    assert budget.FLOOR * budget.FEW / 401 < 0.03
    pytester.makepyfile(
        test_many="""
            import pytest

            @pytest.mark.parametrize("n", range(400))
            def test_quick(n):
                pass

            def test_last_fails():
                assert False
        """
    )
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--memleak-budget=0")
    assert_outcomes(result, pytester, passed=400, failed=1)
    tests = _report(pytester)
    assert len(tests) == 401
    assert tests["test_many.py::test_quick[0]"]["status"] == "clean"
    last = tests["test_many.py::test_quick[399]"]
    assert last["status"] == "no-verdict" and last["over_budget"] is True and last["runs"] == 0
    assert last["reason"].endswith("was spent when it began"), last["reason"]
    failed = tests["test_many.py::test_last_fails"]
    assert failed["status"] == "no-verdict" and failed["reason"].startswith("the test did not pass")
    result.stdout.fnmatch_lines(["*the cost budget (memleak_budget 0: *) did not reach * test(s): --memleak-budget=none checks every test"])
