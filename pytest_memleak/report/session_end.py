"""What a session shows and writes when it ends: the terminal's memleak sections, and the report
files (``memleak.json``, ``memleak.html``, GitHub's step summary), from the session's results.

The session (:mod:`pytest_memleak.check.session`) calls these with what it gathered; a report
that cannot be written is a problem said at the end of the run, never a lost verdict.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pytest_memleak.check.store import ResultStore
from pytest_memleak.report import terminal


def write_summary(
    terminalreporter: Any,
    store: ResultStore,
    budget: str,
    baseline_lines: Iterable[str],
    left_to_reruns: set[str],
    problems: Iterable[str],
) -> None:
    """The ``memleak summary`` and ``memleak soak`` sections, and the run's problems."""
    if store.counts:
        terminalreporter.write_sep("=", "memleak summary", yellow=True)
        for line in terminal.summary_lines(store.notable, store.counts, store.over_budget, budget, store.ignored):
            warned = line.startswith(("LEAK (", "warn-only", "baseline"))
            terminalreporter.write_line(line, red=line.startswith(("LEAK", "PEAK")) and not warned, yellow=warned)
    for line in baseline_lines:
        terminalreporter.write_line(line, yellow=True)
    if left_to_reruns:
        terminalreporter.write_line(
            f"memleak: {len(left_to_reruns)} test(s) not checked: pytest-rerunfailures reruns them when they fail "
            "(--reruns or the flaky marker), and their reruns are its to make",
            yellow=True,
        )
    if store.soaks:
        from pytest_memleak.results import SoakResult
        from pytest_memleak.soak.table import summary_lines

        terminalreporter.write_sep("=", "memleak soak", yellow=True)
        for line in summary_lines([SoakResult.from_dict(d) for d in store.soaks]):
            terminalreporter.write_line(line)
    for problem in problems:
        terminalreporter.write_line(f"memleak: {problem}", yellow=True)


def write_files(report_dir: Path, store: ResultStore, meta: dict[str, Any]) -> list[str]:
    """``memleak.json`` and ``memleak.html`` in ``report_dir`` (usable by now), and GitHub's step
    summary when ``GITHUB_STEP_SUMMARY`` is set; what could not be written, as problems."""
    from pytest_memleak import report

    problems: list[str] = []
    try:  # read once, typed, for every writer
        tests = report.tests_of("the reports", _rendered(store.iter("test")))
        soaks = report.soaks_of("the reports", store.soaks)
    except Exception as exc:  # never lose the run's verdicts over a report
        return [f"reports not written: {type(exc).__name__}: {exc}"]
    for name, writer in (("memleak.json", report.write_json), ("memleak.html", report.write_html)):
        try:
            writer(report_dir / name, tests, soaks, meta)
        except Exception as exc:  # never lose the run's verdicts over a report
            problems.append(f"{name} not written: {type(exc).__name__}: {exc}")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        problem = report.append_github_summary(report.github_summary(tests, soaks))
        if problem:
            problems.append(problem)
    return problems


def _rendered(results: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Results whose flamegraph is on disk name it (a render may have failed, here or in a worker)."""
    for data in results:
        if data.get("flamegraph") and not os.path.isfile(data["flamegraph"]):
            data["flamegraph"] = None
        yield data
