"""The session's cost budget (``memleak_budget``): screens charged against the suite's own time.

Inner runs are pytest subprocesses. The slow tests sleep, so each of their runs takes at least
the sleep whatever the load, and a budget of 0 leaves only the floor: what is screened follows
from those two figures, not from how fast this machine is today.
"""

from __future__ import annotations

import json
import math
import textwrap

import pytest
from verdicts import assert_outcomes

from pytest_memleak.check import budget, deciding, repeating, runner

# (in the suite's order: without the cache, rotating, the day's draw would order the credit)
BASE_ARGS = ("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider", "--memleak-budget=0", "--memleak-rotate=false")
TESTS = 66  # in each inner session: its floor is budget.FLOOR * (budget.FEW / TESTS) ** 3, about 0.83 s
FILLER = """
    @pytest.mark.parametrize("n", range({n}))
    def test_filler(n):
        pass
"""


def _session(pytester: pytest.Pytester, source: str, shown: int, tests: int = TESTS) -> pytest.RunResult:
    """An inner session of ``tests`` tests: ``source`` (``shown`` tests) and quick fillers after them."""
    body = textwrap.dedent(source) + textwrap.dedent(FILLER.format(n=tests - shown))
    pytester.makepyfile(test_budgeted="import pytest\n" + body)
    return pytester.runpytest_subprocess(*BASE_ARGS)


def _report(pytester: pytest.Pytester) -> dict[str, dict]:
    data = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    tests = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    assert len(tests) == len(data["tests"]), "one result per test"
    return tests


def test_slow_screens_the_floor_does_not_pay_for_are_counted_unchecked(pytester: pytest.Pytester) -> None:
    """Five tests of 0.3 s a run: a screen takes a run at the least and starts when the credit pays
    for two, so the floor (0.83 s here, and a budget of 0 adds nothing) pays for two at the most:
    after two, less than two runs' worth is left."""
    floor = budget.CostBudget(0, tests=TESTS).floor
    assert 2 * 0.3 < floor < 2 * 0.3 + 2 * 0.3
    result = _session(
        pytester,
        """
        import time

        @pytest.mark.parametrize("n", range(5))
        def test_slow(n):
            time.sleep(0.3)
        """,
        5,
    )
    assert_outcomes(result, pytester, passed=TESTS)  # the tests' own outcomes stand
    assert result.ret == pytest.ExitCode.OK
    tests = _report(pytester)
    slow = [tests[f"test_slow[{n}]"] for n in range(5)]
    assert slow[0]["status"] == "clean" and slow[0]["over_budget"] is False
    unreached = [t for t in slow if t["status"] == "no-verdict"]
    assert len(unreached) >= 3, [(t["status"], t["reason"]) for t in slow]
    assert all(t["over_budget"] is True and t["runs"] == 0 for t in unreached)
    assert unreached[0]["reason"].startswith("not checked: the cost budget (memleak_budget 0:"), unreached[0]["reason"]
    result.stdout.fnmatch_lines(
        [
            f"{TESTS} checked: 0 leaking, * clean, 0 inconclusive, * without verdict (0 not passed, * not reached by the cost budget)",
            "the cost budget (memleak_budget 0: *) did not reach * test(s): --memleak-budget=none checks every test",
        ]
    )


def test_budget_none_checks_every_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_slow="""
            import time
            import pytest

            @pytest.mark.parametrize("n", range(3))
            def test_slow(n):
                time.sleep(0.3)
        """
    )
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--memleak-budget=none")  # the later option wins
    assert_outcomes(result, pytester, passed=3)
    assert {t["status"] for t in _report(pytester).values()} == {"clean"}
    result.stdout.fnmatch_lines(["3 checked: 0 leaking, 3 clean, 0 inconclusive, 0 without verdict (not passed)"])
    result.stdout.no_fnmatch_line("*cost budget*")


def test_a_marked_test_is_checked_whatever_the_credit(pytester: pytest.Pytester) -> None:
    """Two runs of these tests cost more than the floor: the unmarked one is not reached, the one
    marked memleak is checked all the same (a slow test gets few runs: leak or unsettled)."""
    assert budget.CostBudget(0, tests=TESTS).floor < 2 * 0.6
    result = _session(
        pytester,
        """
        import time

        KEPT = []

        def test_unmarked():
            KEPT.append(object())
            time.sleep(0.6)

        @pytest.mark.memleak(runs=2, confirm_seconds="2s")
        def test_marked():
            KEPT.append(object())
            time.sleep(0.6)
        """,
        2,
    )
    tests = _report(pytester)
    assert tests["test_unmarked"]["status"] == "no-verdict" and tests["test_unmarked"]["over_budget"] is True
    marked = tests["test_marked"]
    assert marked["status"] in ("leak", "inconclusive"), marked["reason"]
    assert marked["over_budget"] is False and marked["runs"] > 2
    assert result.ret == (pytest.ExitCode.TESTS_FAILED if marked["status"] == "leak" else pytest.ExitCode.OK)


# pytest's own subtests fixture arrived in 9.0; before it, the same blocks run without reports
SUBTESTS = int(pytest.__version__.split(".")[0]) >= 9
NO_SUBTESTS = """
        import contextlib

        @pytest.fixture
        def subtests():
            class Blocks:
                def test(self, **kwargs):
                    return contextlib.nullcontext()

            return Blocks()
        """


def test_a_suspect_is_followed_to_its_verdict_and_then_pytest_runs_the_tests_alone(pytester: pytest.Pytester) -> None:
    """A leak first, in a session of 200 tests (a floor of 0.3 s): its screen fits the floor, and
    it goes on to its verdict all the same, charged: at least MIN_SUSPECT_SECONDS of windows (600
    runs of 3 ms would take longer). The credit is then spent, so the tests after it run through
    pytest's own protocol, and their reports still say why they were not checked; a failure stays
    the test's own."""
    many = 200
    assert budget.CostBudget(0, tests=many).floor < runner.MIN_SUSPECT_SECONDS < deciding.MIN_LEAK_RUNS * 0.003
    result = _session(
        pytester,
        """
        import time

        KEPT = []

        def test_leak():
            KEPT.append(object())
            time.sleep(0.003)

        def test_fails():
            assert False

        def test_subtests(subtests):
            for i in range(3):
                with subtests.test(i=i):
                    pass
        """
        + ("" if SUBTESTS else NO_SUBTESTS),
        3,
        many,
    )
    assert_outcomes(result, pytester, passed=many - 2, failed=2)
    tests = _report(pytester)
    assert len(tests) == many
    leak = tests["test_leak"]
    assert leak["status"] == "leak" and leak["seconds"] > budget.CostBudget(0, tests=many).floor
    # its windows stopped where the credit did: the verdict says what that leaves open
    assert any("the cost budget's credit ran out before" in line for line in leak["details"]), leak["details"]
    failed = tests["test_fails"]
    assert failed["status"] == "no-verdict" and failed["reason"].startswith("the test did not pass")
    last = tests[f"test_filler[{many - 4}]"]  # the last of many - 3
    assert last["status"] == "no-verdict" and last["over_budget"] is True and last["runs"] == 0
    assert last["reason"].endswith("was spent when it began"), last["reason"]
    assert tests["test_subtests"]["status"] == "no-verdict" and tests["test_subtests"]["over_budget"] is True


def test_credit_is_the_floor_plus_a_share_of_the_suite_own_time_less_what_was_charged() -> None:
    cost = budget.CostBudget(0.5, began=0.0)
    cost.book(2.0)
    cost.book(2.0, exempt=True)  # a test marked memleak: neither charged nor the suite's own time
    assert cost.charged == 2.0 and cost.exempt == 2.0
    # 10 s into the session, 4 s of it checking: 6 s of the suite's own, 3 s of credit, 2 s spent
    assert cost.credit(now=10.0) == pytest.approx(budget.FLOOR + 0.5 * 6.0 - 2.0)
    assert budget.CostBudget(None).credit() == float("inf")
    assert budget.CostBudget.needed(0.25) == pytest.approx(budget.START_RUNS * 0.25 + budget.START_MIN)
    # the floor is a small session's: a suite of ten times FEW tests gets a thousandth of it
    assert budget.CostBudget(0.5, tests=budget.FEW).floor == budget.FLOOR
    assert budget.CostBudget(0.5, tests=10 * budget.FEW).floor == pytest.approx(budget.FLOOR / 1000)


def test_a_slow_suspect_the_credit_cannot_settle_ends_at_once(pytester: pytest.Pytester) -> None:
    """A test of 0.1 s a run that grows: its screen fits the floor (0.83 s), but settling a suspect
    takes SETTLE_RUNS of its runs at the least (1.6 s), more than what the credit leaves. It ends
    inconclusive after its screen, saying so, instead of spending its windows (a hypothesis test
    once spent 1 s of python-dateutil's credit that way, and the 1,991 tests after it went
    unchecked)."""
    assert max(runner.MIN_SUSPECT_SECONDS, budget.CostBudget(0, tests=TESTS).floor) < repeating.SETTLE_RUNS * 0.1
    result = _session(
        pytester,
        """
        import time

        KEPT = []

        def test_slow_growth():
            KEPT.append(bytearray(20_000))
            time.sleep(0.1)
        """,
        1,
    )
    assert_outcomes(result, pytester, passed=TESTS)
    slow = _report(pytester)["test_slow_growth"]
    assert slow["status"] == "inconclusive", slow["reason"]
    assert slow["reason"].startswith(f"the screen saw growth, and settling it takes {repeating.SETTLE_RUNS} runs of 0.1"), slow["reason"]
    assert "that the cost budget left (raise memleak_budget or confirm_seconds to settle it)" in slow["reason"]
    # its own, the warm-up and the screen's: a stretch is as many runs as start within a quarter of its own run, or
    # ten where ten calls cost no more than CHEAP_SHARE own runs (a loaded CI run's screen made 31 runs: an own run
    # that reads 0.5 s or more, less its wait for a CPU, makes ten 0.1 s calls cheap)
    own = slow["own_seconds"]
    cheap = repeating.CHEAP_SHARE * own >= repeating.CHEAP_STRETCH * 0.1
    stretch = max(math.ceil(repeating.SCREEN_FACTOR * own / 0.1), repeating.CHEAP_STRETCH if cheap else 1)
    assert slow["runs"] <= 1 + repeating.SCREEN_STRETCHES * stretch + 1, (slow["runs"], own)


ROTATING = ("--memleak", "--memleak-flamegraph=none", "--memleak-budget=0")  # pytest's cache on: the rotation's store


@pytest.mark.slow
def test_tests_checked_clean_rest_in_the_next_sessions_so_the_credit_reaches_the_others(pytester: pytest.Pytester) -> None:
    """Six tests of 0.15 s a run first: the floor (0.83 s) checks the first two or three. With
    pytest's cache, the next session lets those rest and checks the next ones; with
    ``--memleak-rotate=false`` a session checks the first ones again."""
    body = textwrap.dedent(
        """
        import time

        @pytest.mark.parametrize("n", range(6))
        def test_slow(n):
            time.sleep(0.15)
        """
    ) + textwrap.dedent(FILLER.format(n=TESTS - 6))
    pytester.makepyfile(test_rotating="import pytest\n" + body)

    def session(*args: str) -> dict[str, dict]:
        result = pytester.runpytest_subprocess(*ROTATING, *args)
        assert_outcomes(result, pytester, passed=TESTS)
        return {n: t for n, t in _report(pytester).items() if n.startswith("test_slow")}

    first = session()  # (a fresh cache: the day's draw orders the credit, see the test below)
    checked = {n for n, t in first.items() if t["status"] == "clean"}
    assert checked and len(checked) < 6, {n: t["reason"] for n, t in first.items()}
    second = session()
    for n in checked:  # rested, and said so
        assert second[n]["status"] == "no-verdict" and second[n]["over_budget"] is True
        assert second[n]["reason"].startswith("not checked: rested, checked clean 1 session(s) ago"), second[n]["reason"]
    now = {n for n, t in second.items() if t["status"] == "clean"}
    assert now and not now & checked, (checked, now)
    third = session("--memleak-rotate=false")
    assert "test_slow[0]" in {n for n, t in third.items() if t["status"] == "clean"}
    assert not any(t["reason"].startswith("not checked: rested") for t in third.values())


def test_rotation_arithmetic_and_what_else_the_cache_may_hold(pytester: pytest.Pytester) -> None:
    from pytest_memleak.check import rotation

    cache = pytester.parseconfigure().cache
    assert cache is not None
    for junk in (None, 3, "x", {"session": "a"}, {"session": 1, "checked": [], "rest": 2}):
        cache.set(rotation.KEY, junk)
        fresh = rotation.Rotation.load(cache)
        assert (fresh.session, fresh.checked, fresh.rest) == (1, {}, 1) and fresh.resting("t") is None
    results = [
        {"nodeid": "a", "status": "clean"},
        {"nodeid": "b", "status": "clean"},
        {"nodeid": "c", "status": "leak"},
        *({"nodeid": f"u{i}", "status": "no-verdict", "over_budget": True} for i in range(7)),
    ]
    first = rotation.Rotation(checked={"c": 0, "u0": 0})
    first.save(cache, results)
    # 10 tests, 3 checked: four sessions check every test once; a leak is checked first next time
    assert first.rest == 4 and first.checked == {"a": 1, "b": 1, "u0": 0}
    later = rotation.Rotation.load(cache)
    # u0 was checked clean in session 0, before this budget's pace was known: it rests until session 4
    assert later.session == 2 and later.resting("a") == 1 and later.resting("c") is None and later.resting("u0") == 2
    later.session = 4
    assert later.resting("u0") is None and later.resting("a") == 3
    later.session = 5  # a clean check of session 1 rests for sessions 2 to 4
    assert later.resting("a") is None


def test_a_test_found_leaking_is_checked_again_whatever_the_credit(pytester: pytest.Pytester) -> None:
    """A leak found once keeps failing its test in the next sessions, though the credit would not
    reach it there: otherwise the test would fail and pass by turns. Without the cache (the
    control) the credit does not reach it: 200 tests have a floor of 0.03 s, and its check needs
    two of its own runs, 0.1 s. (A quick test_leaks was reached in a loaded run: the quick tests
    before it leave 0.001 s, which a check of a 0.5 ms test needs.)"""
    pytester.makepyfile(
        test_relapse=textwrap.dedent(
            """
            import time

            import pytest

            KEPT = []

            @pytest.mark.parametrize("n", range(150))
            def test_before(n):
                pass

            def test_leaks():
                if not KEPT:  # its own run, the first, takes 0.05 s; its repeated runs are quick
                    time.sleep(0.05)
                KEPT.append(object())

            @pytest.mark.parametrize("n", range(49))
            def test_after(n):
                pass
            """
        )
    )
    cached = ("--memleak", "--memleak-flamegraph=none")
    first = pytester.runpytest_subprocess(*cached, "--memleak-budget=100")  # a budget that reaches it
    assert_outcomes(first, pytester, passed=199, failed=1)
    assert _report(pytester)["test_leaks"]["status"] == "leak"
    again = pytester.runpytest_subprocess(*cached, "--memleak-budget=0")
    assert_outcomes(again, pytester, passed=199, failed=1)
    report = _report(pytester)
    assert report["test_leaks"]["status"] == "leak" and report["test_leaks"]["over_budget"] is False
    assert report["test_after[0]"]["over_budget"] is True  # the credit had run out before it
    control = pytester.runpytest_subprocess(*cached, "--memleak-budget=0", "-p", "no:cacheprovider", "--memleak-rotate=false")
    assert_outcomes(control, pytester, passed=200)
    assert _report(pytester)["test_leaks"]["over_budget"] is True


def test_without_the_rotations_history_the_days_draw_orders_the_credit(pytester: pytest.Pytester) -> None:
    """A CI job from a clean checkout has no cache: every session would check the same first
    tests. The day's draw decides which go first instead: on a day that draws test_slow[0] last
    it waits (its reason says why), on a day that draws it first it is checked at once, and with
    --memleak-rotate=false the suite's order stands."""
    from pytest_memleak.check import rotation

    nodeid = "test_budgeted.py::test_slow[0]"
    last = next(day for day in range(1, 10_000) if rotation.draw(nodeid, day) > 0.9)
    first = next(day for day in range(1, 10_000) if rotation.draw(nodeid, day) < 0.05)
    source = """
        import time

        @pytest.mark.parametrize("n", range(5))
        def test_slow(n):
            time.sleep(0.15)
        """
    by_day = {}
    for day in (last, first):
        pytester.makeconftest(f"import pytest_memleak.check.rotation\npytest_memleak.check.rotation.today = lambda: {day}\n")
        body = textwrap.dedent(source) + textwrap.dedent(FILLER.format(n=TESTS - 5))
        pytester.makepyfile(test_budgeted="import pytest\n" + body)
        result = pytester.runpytest_subprocess(*[a for a in BASE_ARGS if a != "--memleak-rotate=false"])
        assert_outcomes(result, pytester, passed=TESTS)
        by_day[day] = _report(pytester)["test_slow[0]"]
    assert by_day[last]["status"] == "no-verdict" and by_day[last]["over_budget"] is True
    assert "drawn 0.9" in by_day[last]["reason"] and "gives the credit to the tests drawn first" in by_day[last]["reason"]
    assert by_day[first]["status"] == "clean", by_day[first]["reason"]
    pytester.makeconftest(f"import pytest_memleak.check.rotation\npytest_memleak.check.rotation.today = lambda: {last}\n")
    ordered = pytester.runpytest_subprocess(*BASE_ARGS)  # --memleak-rotate=false: no draw
    assert_outcomes(ordered, pytester, passed=TESTS)
    assert _report(pytester)["test_slow[0]"]["status"] == "clean"
