"""The soak summary table at the end of the run, and the words a trend is said in."""

from __future__ import annotations

import math

from pytest_memleak.config.units import (
    format_duration,
    format_size,
)
from pytest_memleak.results import (
    CLEAN,
    INCONCLUSIVE,
    LEAK,
    SoakResult,
)
from pytest_memleak.soak.trend import Level, Trend, within_resolution


def rate(per_hour: float, unit: str, signed: bool = False) -> str:
    if not math.isfinite(per_hour):
        return "unbounded"
    if unit == "B":
        return format_size(per_hour, signed=signed) + "/h"
    return (f"{per_hour:+,.0f}" if signed else f"{per_hour:,.0f}") + f" {unit}/h"


def state(trend: Trend, unit: str) -> str:
    if not trend.sufficient:
        return "too few samples"
    if trend.persistent:
        return "growth persists in the last half and the last third"
    if trend.within_resolution:
        return within_resolution(trend, unit)
    tail = trend.tail
    tail_rate = rate(tail.slope * 3600, unit, True) if tail is not None else "?"
    if trend.plateaued:
        return f"plateaued (last third {tail_rate})"
    return f"no persistent growth (last third {tail_rate})"


def verdict_word(result: SoakResult) -> str:
    expect = result.expect_leak
    if result.status == LEAK:
        return {True: "LEAK (expected)", False: "LEAK (expected ok)", None: "LEAK"}[expect]
    if result.status == CLEAN:
        return {True: "ok (expected LEAK)", False: "ok (expected)", None: "ok"}[expect]
    if result.status == INCONCLUSIVE:
        return "inconclusive (expected LEAK)" if expect else "inconclusive"
    return "no verdict"


def summary_lines(results: list[SoakResult]) -> list[str]:
    """A table for the terminal summary: one row per soak test, header first; [] for none.

    Columns: scenario, variant, verdict (LEAK/ok and whether it matched its expectation),
    growth per hour of RSS over the window (", then <rate>" over the last third when it
    plateaued; the Python heap's rate when only the heap leaked), projected time to the
    memory limit, iterations.
    """
    if not results:
        return []
    header = ("scenario", "variant", "verdict", "growth", "to memory limit", "iterations")
    rows = [header]
    for r in results:
        judged = r.status in (LEAK, CLEAN)
        growth = format_size(r.slope_per_hour, signed=True) + "/h" if judged else "-"
        if judged and r.plateaued and r.slope_per_hour > 0:
            growth += f", then {format_size(r.tail_slope_per_hour, signed=True)}/h"
        if r.leaked_metrics == ["heap"]:
            growth = "heap " + rate(r.heap_slope_per_hour, r.heap_unit, True)
        if not judged or r.memory_limit is None:
            to_limit = "-"
        elif r.time_to_limit is None:
            to_limit = "never"
        else:
            to_limit = f"{format_duration(r.time_to_limit)} ({format_size(r.memory_limit)})"
        rows.append((r.scenario or r.nodeid, r.variant or "-", verdict_word(r), growth, to_limit, f"{r.iterations:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths[:-1], strict=True)]
        cells.append(row[-1].rjust(widths[-1]))
        return "  ".join(cells).rstrip()

    return [line(rows[0]), line(tuple("-" * w for w in widths)), *(line(row) for row in rows[1:])]


def saw_label(name: str, level: Level) -> str:
    """What a verdict's trend is of: the series, or its troughs when it saws."""
    return f"{name} troughs (after each of {level.troughs} clean-ups)" if level.troughs else name
