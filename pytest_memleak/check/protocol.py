"""pytest's side of a checked test: its own run, the final teardown, and the verdict put on its reports.

The session decides which tests are checked and what their check may cost; this module does
what pytest's own protocol would have done around that check, so the test's reports are the
ones pytest makes, with the verdict on them.
"""

from __future__ import annotations

import pytest

from pytest_memleak import compat
from pytest_memleak.results import LeakResult


def run_once(item: pytest.Item) -> tuple[list[pytest.TestReport], float]:
    """The test's own run (setup, call, teardown, unlogged), keeping its module and class scopes
    up for the re-runs; and how long it took, less its wait for a CPU (the kernel's count): what
    the check may spend is measured by it, and a busy machine's wait is not its cost (under load a
    0.2 s sleep's own run took 1 s, so ten of its calls read as cheap, and a clean test got 21 runs
    where its bound allows 9)."""
    from pytest_memleak.check.runner import exact_wait, less_wait

    reports, own_seconds = less_wait(exact_wait(), lambda: compat.runtestprotocol(item, log=False, nextitem=item.parent))  # type: ignore[arg-type]
    return reports, max(own_seconds, 1e-6)


def final_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> pytest.TestReport:
    """Tear down the scopes the next test does not need (the runs kept module and class scope up).

    The teardown hooks already ran once for this item, so only the setup state is unwound
    here; the report is made the ordinary way.
    """
    reraise = (pytest.exit.Exception,) if item.config.getoption("usepdb", False) else (pytest.exit.Exception, KeyboardInterrupt)
    call = pytest.CallInfo.from_call(lambda: compat.teardown_exact(item, nextitem), when="teardown", reraise=reraise)
    has_request = compat.start_request(item)  # report hooks may read item.funcargs
    try:
        report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
        return report
    finally:
        if has_request:
            compat.end_request(item)


def log(item: pytest.Item, reports: tuple[pytest.TestReport | None, ...]) -> None:
    """Hand the reports to pytest's reporting hooks, as its protocol would have."""
    for report in reports:
        if report is not None:
            item.ihook.pytest_runtest_logreport(report=report)


def attach(call: pytest.TestReport, teardown: pytest.TestReport, result: LeakResult) -> None:
    """The verdict on the test's reports: all of it on the call's (stored, then slimmed, when
    it is logged), its figures as the teardown's user properties (JUnit XML)."""
    call.memleak = result.to_dict()  # type: ignore[attr-defined]
    teardown.user_properties.extend(
        [
            ("memleak_status", str(result.status)),
            ("memleak_retained_per_run", f"{result.retained_per_run:.1f}"),
            ("memleak_runs", str(result.runs)),
        ]
    )


def fail(report: pytest.TestReport, item: pytest.Item, result: LeakResult) -> None:
    """A test that passed fails on its verdict: the report's outcome, and the leak drawn as its failure."""
    # (not imported by a run that checks nothing)
    from pytest_memleak.report.terminal import LeakRepr

    path, lineno, _ = item.location
    report.outcome = "failed"
    report.longrepr = LeakRepr(result, path, (lineno or 0) + 1)
