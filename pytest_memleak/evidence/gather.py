"""The evidence a checked test's verdict is shown with, gathered after the verdict is made.

Called by the session for each checked test: what keeps a leak alive and where it was
allocated (:mod:`diagnose`), fresh temporary paths each run holds (:mod:`hygiene`), and a
flamegraph of more runs under memray (:mod:`flamegraph`). Evidence never changes a verdict: a
step that fails is a problem said on the result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pytest_memleak.config.units import format_size
from pytest_memleak.results import LeakResult


def temporary_paths(item: pytest.Item, result: LeakResult) -> None:
    """Say so when the growth holds a fresh temporary path per run (the re-run's own doing)."""
    from pytest_memleak.evidence import hygiene

    base = hygiene.basetemp(item.config)
    if base is None:
        return
    try:
        result.details.extend(hygiene.per_run_paths(base))
    except Exception as exc:  # evidence only: never the verdict
        result.problems.append(f"temporary-path scan failed: {type(exc).__name__}: {exc}")


def flamegraph(result: LeakResult, run: Any, report_dir: Path, native: bool, aggregated: bool) -> tuple[Any, str | None]:
    """More runs of the test under memray, as many as hold enough of the leak to show (planned by
    the median of its latest runs), rendered under ``report_dir``/flamegraphs in the background.
    Returns the render under way (None when finished or not started) and a problem that is the
    session's to say once (memray missing), not this test's."""
    try:
        from pytest_memleak.evidence import flamegraph as memray_capture
    except ImportError as exc:  # pragma: no cover - a partial install
        result.problems.append(f"no flamegraph: {exc}")
        return None, None
    base = report_dir / "flamegraphs" / memray_capture.safe_name(result.nodeid)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        result.problems.append(f"no flamegraph: cannot create {base.parent}: {exc.strerror or exc}")
        return None, None
    per_run = max([result.retained_per_run, *(f.per_run for f in result.findings if f.unit == "B")])
    wanted = memray_capture.capture_runs(per_run, memray_capture.run_time(run.durations(memray_capture.PACE_RUNS)) or run.seconds)
    until = time.perf_counter() + memray_capture.CAPTURE_SECONDS
    first, made = run.runs + 1, 0

    def runs() -> None:
        nonlocal made
        made = run.repeat_for_capture(wanted, until)

    outcome = memray_capture.capture_run(runs, base, native=native, aggregated=aggregated, background=True)
    if made:
        held = f", {format_size(made * per_run)} of the leak at its rate" if per_run > 0 else ""
        result.details.append(f"flamegraph: {made:,} runs under memray (runs {first:,}-{first + made - 1:,}){held}")
    result.flamegraph = str(outcome.html) if outcome.html else None
    result.capture = str(outcome.capture) if outcome.capture else None
    shared = None
    if outcome.problem and outcome.problem.startswith("no flamegraph: memray"):
        shared = outcome.problem  # the same gap for every test
    elif outcome.problem:
        result.problems.append(outcome.problem)
    return outcome.pending, shared
