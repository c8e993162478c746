"""Helpers for tests that run an inner pytest through ``pytester``: its verdicts, on failure."""

from __future__ import annotations

import json
import signal

import pytest


def default_sigint() -> None:
    """``preexec_fn`` for an inner pytest that a test interrupts: SIGINT as from a terminal. A shell
    starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def verdict_lines(pytester: pytest.Pytester) -> str:
    """One line per checked test of the inner run: status, reason, runs, series steps, details."""
    reports = pytester.path / "reports" / "memleak.json"
    if not reports.exists():
        return "(no reports/memleak.json)"
    lines = []
    for test in json.loads(reports.read_text())["tests"]:
        deltas = {k: [round(b - a) for a, b in zip(v, v[1:], strict=False)] for k, v in test["series"].items()}
        lines.append(f"{test['nodeid']}: {test['status']}: {test['reason']} runs={test['runs']} {deltas} {test['details']}")
    return "\n".join(lines)


def assert_outcomes(result: pytest.RunResult, pytester: pytest.Pytester, **outcomes: int) -> None:
    """``assert_outcomes``, with the inner run's verdicts and output tail in the message when it fails."""
    try:
        result.assert_outcomes(**outcomes)
    except AssertionError as exc:
        tail = "\n".join(result.outlines[-40:])
        raise AssertionError(f"{exc}\n{verdict_lines(pytester)}\n--- inner output tail ---\n{tail}") from None
