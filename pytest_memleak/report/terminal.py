"""Text for people: the failure section of a leaking test and the end-of-run summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_memleak.check.deciding import steps
from pytest_memleak.compat import ReprFileLocation, TerminalRepr, TerminalWriter
from pytest_memleak.config.units import format_size
from pytest_memleak.results import CLEAN, INCONCLUSIVE, LEAK, NO_VERDICT, LeakResult


def _deltas(values: Sequence[float], unit: str = "") -> str:
    ds = steps(values)
    if unit == "B":
        return "[" + ", ".join(format_size(d, signed=True) for d in ds) + "]"
    return "[" + ", ".join(f"{d:+.0f}" for d in ds) + "]"


def detail_lines(result: LeakResult) -> list[str]:
    """The detail section of a leaking (or inconclusive) test."""
    s: dict[str, Any] = result.settings
    lines = [f"memleak: {result.reason}"]
    lines.append(
        f"  runs: {result.runs} in all ({s.get('warmup', 1)} warm-up incl. the test's own, "
        f"{result.measured_runs} measured), {result.seconds:.2f} s"
    )
    budget = f"retained {format_size(s.get('retained', 0))}/run"
    if s.get("per_site") is not None:
        budget += f", per site {format_size(s['per_site'])}/run"
    if s.get("native") is not None:
        budget += f", native {format_size(s['native'])}/run"
    budget += f", fds {s.get('fds', 0)}/run, threads {s.get('threads', 0)}/run"
    lines.append(f"  budgets: {budget}")
    for f in result.findings[1:]:
        lines.append(f"  also: {f.message}")
    series = result.series
    if "screen.blocks" in series:
        lines.append(f"  screen, allocated blocks per run: {_deltas(series['screen.blocks'])}")
    if "confirm.heap" in series:
        per_step = result.runs_per_step
        lines.append(f"  confirm, user heap every {per_step} runs: {_deltas(series['confirm.heap'], 'B')}")
        lines.append(f"  confirm, RSS every {per_step} runs: {_deltas(series['confirm.rss'], 'B')}")
        for key, noun in (("confirm.fds", "open descriptors"), ("confirm.threads", "live threads")):
            if series.get(key) and series[key][-1] != series[key][0]:
                lines.append(f"  confirm, {noun} every {per_step} runs: {_deltas(series[key])}")
    lines.append(f"  retained per run (sites whose growth persists): {format_size(result.retained_per_run)}")
    if result.sites:
        lines.append("  top allocation sites by growth:")
        for site in result.sites:
            lines.append(
                f"    {site.site}  {format_size(site.bytes_per_run, signed=True)}/run, "
                f"{site.blocks_per_run:+.1f} blocks/run"
            )
            callers = [frame for frame in site.stack if frame != site.site][:3]
            if callers:
                lines.append(f"      via {' <- '.join(callers)}")
    if result.grown_types:
        grown = ", ".join(f"{name} {rate:+.1f}/run" for name, rate in list(result.grown_types.items())[:6])
        lines.append(f"  object types that grew: {grown}")
    for finding in result.findings:
        for line in finding.evidence:
            lines.append(f"  {line}")
    if result.retention:
        lines.append("  kept alive by:")
        lines.extend(f"    {path}" for path in result.retention)
    lines.extend(f"  {line}" for line in result.details)
    if result.flamegraph:
        lines.append(f"  flamegraph: {result.flamegraph}")
    if result.capture:
        lines.append(f"  memray capture: {result.capture}")
    lines.extend(f"  note: {p}" for p in result.problems)
    return lines


def peak_lines(result: LeakResult) -> list[str]:
    """The failure of a test whose call's peak exceeded its budget."""
    lines = [f"memleak: {result.peak_over}"]
    if result.peak_sites:
        lines.append("  alive at the peak, largest first:")
        lines.extend(f"    {site}" for site in result.peak_sites)
    if result.peak_capture:
        lines.append(f"  memray capture of the call: {result.peak_capture} (memray flamegraph on it shows the peak)")
    return lines


class LeakRepr(TerminalRepr):
    """The longrepr of a leaking test: a one-line crash message plus the detail section."""

    def __init__(self, result: LeakResult, path: str, lineno: int) -> None:
        peak = peak_lines(result) if result.peak_over else []
        self.lines = detail_lines(result) + [f"  {line}" for line in peak] if result.leaked else peak
        self.reprcrash = ReprFileLocation(path, lineno, self.lines[0])

    def toterminal(self, tw: TerminalWriter) -> None:
        for i, line in enumerate(self.lines):
            tw.line(line, red=(i == 0), bold=(i == 0))


def _through(group: str) -> str:
    return group if group.startswith("kept by ") else f"through {group}"


def summary_lines(
    results: Sequence[LeakResult], counts: dict[str, int], unreached: int = 0, budget: str = "", ignored: Sequence[float] = (0, 0.0)
) -> list[str]:
    """The end-of-run section: counts, what the cost budget left out, then one line per leaking
    or inconclusive test."""
    checked = sum(counts.values())
    failed = counts.get(NO_VERDICT, 0) - unreached
    without = f"{failed} without verdict (not passed)"
    if unreached:
        without = f"{counts.get(NO_VERDICT, 0)} without verdict ({failed} not passed, {unreached} not reached by the cost budget)"
    lines = [
        f"{checked} checked: {counts.get(LEAK, 0)} leaking, {counts.get(CLEAN, 0)} clean, "
        f"{counts.get(INCONCLUSIVE, 0)} inconclusive, {without}"
    ]
    if unreached:
        lines.append(f"{budget} did not reach {unreached} test(s): --memleak-budget=none checks every test")
    if ignored[0]:
        lines.append(f"memleak_ignore: growth not counted in {ignored[0]:.0f} test(s), {format_size(ignored[1])}/run in all")
    known = sum(1 for r in results if r.known)
    if known:
        lines.append(f"baseline (memleak_baseline): {known} known leak(s) within their recorded rates, and their tests passed")
    warned = sum(1 for r in results if r.warned and not r.known)
    if warned:
        lines.append(f"warn-only (memleak_warn): {warned} leak(s) reported, and no test failed because of them")
    from pytest_memleak.evidence.grouping import groups, short

    first_of = {g["tests"][0]: g for g in groups(results)}  # a group's first test -> the group; its others are not listed
    grouped = {nodeid for g in first_of.values() for nodeid in g["tests"][1:]}
    for r in results:
        if r.peak_over:
            lines.append(f"PEAK {r.nodeid} - {r.peak_over}")
        if r.nodeid in grouped or r.status not in (LEAK, INCONCLUSIVE):
            continue
        label = "INCONCLUSIVE"
        if r.status == LEAK:
            label = "LEAK (known)" if r.known else "LEAK (warn-only)" if r.warned else "LEAK"
        group = first_of.get(r.nodeid)
        if group is None:
            lines.append(f"{label} {r.nodeid} - {r.reason}")
        else:
            lines.append(
                f"{label} ×{group['count']} tests, {_through(short(group['site']))}, one cause: {r.nodeid} and "
                f"{group['count'] - 1} more (memleak.json lists them) - {r.reason}"
            )
    return lines
