"""``memleak.html``: one self-contained page (inline CSS and SVG, no scripts), drawn from typed results.

The page is ``templates/report.html.j2`` with its style ``static/report.css`` inlined. This
module turns results into what the template shows: the lines of "What to fix", a row and a
detail section per test, a card per soak, each chart as SVG (:mod:`.charts`). Jinja2 escapes
every value; only the SVG that :mod:`.charts` draws (which escapes its own text) goes in as is.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import IO, Any

from pytest_memleak import __version__
from pytest_memleak.config.units import format_duration, format_size
from pytest_memleak.report import charts
from pytest_memleak.report.charts import (
    BLUE,
    GREY,
    ORANGE,
    PURPLE,
    RED,
    HLine,
    Line,
    VLine,
    fmt_count,
    fmt_value,
)
from pytest_memleak.report.files import atomic_write
from pytest_memleak.report.json_file import SCHEMA, default_meta
from pytest_memleak.report.summary import (
    Summary,
    ordered,
    soaks_of,
    summarize,
    tests_of,
    unexpected,
)
from pytest_memleak.results import (
    CLEAN,
    INCONCLUSIVE,
    LEAK,
    NO_VERDICT,
    LeakResult,
    SoakResult,
    Status,
)

MAX_DETAILED = 300  # leaking/inconclusive tests with a full detail section and charts
MAX_CHARTED_OTHERS = 200  # other tests that get a sparkline in the table
MAX_FIXES = 50  # lines in "What to fix"; the tests table lists the rest
MAX_INLINE_GRAPH = 256 * 1024  # bytes of a retention graph's SVG put in the page
PROJECTION_IN_CHART = 3.0  # a limit reached within this many times the soak's span is drawn in its chart

HERE = pathlib.Path(__file__).resolve().parent

# What each measured series is, in words: (what, is it bytes)
_WHAT: dict[str, tuple[str, bool]] = {
    "blocks": ("allocated blocks", False),
    "heap": ("heap bytes", True),
    "traced": ("traced Python heap bytes", True),
    "untraced": ("bytes the allocators hold beyond tracemalloc's", True),
    "rss": ("RSS", True),
    "fds": ("open file descriptors", False),
    "threads": ("live threads", False),
    "processes": ("child processes", False),
    "tasks": ("asyncio tasks", False),
    "objects": ("objects", False),
}
_SCREEN_WHAT = {"heap": ("bytes in use by the allocators", True)}  # the screen reads pymalloc's and malloc's own counts
_CONFIRM_WHAT = {"heap": ("heap bytes allocated from the test's code (traced)", True)}
# the series a sparkline shows, first found first
_PRIMARY = ("confirm.heap", "confirm.traced", "screen.blocks", "confirm.rss", "screen.rss")


# --------------------------------------------------------------------------- views


@dataclass
class Figure:
    caption: str
    svg: str  # drawn by .charts (escaped there)


@dataclass
class Fix:
    """One line of "What to fix": a leaking test, group of tests, or soak."""

    kind: str  # "test", "group" or "soak"
    name: str
    href: str  # its detail on this page
    amount: str  # "96.0 KiB/run", "+54.4 GiB/h"
    where: str  # the line that allocates it, or what it grows through
    kept: str = ""  # what keeps it alive (the first retention path)
    note: str = ""  # "known leak", "expected", a projection


@dataclass
class TestView:
    r: LeakResult
    row_id: str
    detail_id: str | None  # None: no detail section (a clean test, or past MAX_DETAILED)
    reason: str
    retained: str
    budget: str
    budget_kind: str
    spark: str = ""
    spark_label: str = ""
    flamegraph: str | None = None  # a link from the page
    flamegraph_missing: str | None = None  # the path of a flamegraph that is not on disk
    retention_graph: str | None = None  # the picture of what keeps it alive, as a data: URI (an SVG in an img runs nothing)
    figures: list[Figure] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    facts: str = ""


@dataclass
class SoakView:
    r: SoakResult
    anchor: str
    facts: list[tuple[str, str, str | None]]  # (name, text, link)
    legend: list[tuple[str, str, bool | None]]  # (label, colour, dashed; None: a note without a line)
    figures: list[Figure]
    expectation: str  # "", "as expected" or "unexpected"


# --------------------------------------------------------------------------- helpers


def anchor(nodeid: str, prefix: str = "t") -> str:
    return f"{prefix}-" + hashlib.sha256(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def href(target: str, html_dir: str) -> str:
    """A link from the HTML file to ``target`` (a relative target is taken from the cwd)."""
    absolute = os.path.abspath(target)
    try:
        relative = os.path.relpath(absolute, html_dir)
    except ValueError:  # another drive on Windows
        return pathlib.Path(absolute).as_uri()
    return urllib.parse.quote(relative.replace(os.sep, "/"), safe="/")


def _per_run(amount: float, unit: str) -> str:
    return (format_size(amount) if unit == "B" else fmt_count(round(amount, 1))) + "/run"


def series_words(name: str, runs_per_step: int = 0) -> tuple[str, bool]:
    """A series named for people ("RSS at each checkpoint of 12 runs"), and whether it is bytes."""
    phase, _, key = name.rpartition(".")
    if phase == "screen":
        what, is_bytes = _SCREEN_WHAT.get(key) or _WHAT.get(key) or (key, False)
        return f"{what}, screening after each run", is_bytes
    if phase == "confirm":
        what, is_bytes = _CONFIRM_WHAT.get(key) or _WHAT.get(key) or (key, False)
        every = f" of {runs_per_step} runs" if runs_per_step > 1 else ""
        return f"{what} at each checkpoint{every}", is_bytes
    what, is_bytes = _WHAT.get(key) or (name, False)
    return what, is_bytes


def _inline_svg(path: str) -> str | None:
    """An SVG file as a ``data:`` URI, so the page stays one file; None when it is missing or too big."""
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError:
        return None
    if len(data) > MAX_INLINE_GRAPH or b"<svg" not in data[:2048]:
        return None
    return "data:image/svg+xml;base64," + base64.b64encode(data).decode("ascii")


def _primary(series: Mapping[str, list[float]]) -> str | None:
    for name in (*_PRIMARY, *series):
        if len(series.get(name, ())) >= 2:
            return name
    return None


def _status_colour(status: Status) -> str:
    return RED if status == LEAK else "#a35f00" if status == INCONCLUSIVE else GREY


# --------------------------------------------------------------------------- tests


def _reason(r: LeakResult) -> str:
    reason = r.reason
    if r.peak_over:
        reason = f"{r.peak_over}; {reason}" if reason else r.peak_over
    if r.known:
        reason = f"known leak (baseline), the test passed: {reason}"
    elif r.warned:
        reason = f"warn-only, the test passed: {reason}"
    return reason


def _figures(r: LeakResult) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    unchanged: list[str] = []
    names = [n for n in _PRIMARY if n in r.series] + [n for n in r.series if n not in _PRIMARY]
    for name in names:
        values = r.series[name]
        if not values:
            continue
        words, is_bytes = series_words(name, r.runs_per_step)
        if len(values) < 2 or max(values) == min(values):
            unchanged.append(f"{words}: {fmt_value(values[0], is_bytes)}")
            continue
        step = "run" if name.startswith("screen.") else "checkpoint" if name.startswith("confirm.") else "sample"
        growth = values[-1] - values[0]
        svg = charts.chart(
            [Line(words, charts.downsample([(i + 1.0, v) for i, v in enumerate(values)]), RED if growth > 0 else BLUE, dots=True)],
            width=300,
            height=130,
            is_bytes=is_bytes,
            x_time=False,
            x_label=step,
            css_class="chart series-chart",
            label=f"{words}, over {len(values)} {step}s",
        )
        caption = f"{words}: {fmt_value(growth, is_bytes, signed=True)} over {len(values)} {step}s"
        figures.append(Figure(caption, svg))
    return figures, unchanged


def _test_view(r: LeakResult, html_dir: str, spark: bool, detailed: bool) -> TestView:
    measured = r.status in (LEAK, CLEAN)
    if r.findings:
        budget, budget_kind = _per_run(r.findings[0].budget, r.findings[0].unit), r.findings[0].kind
    elif isinstance(r.settings.get("retained"), (int, float)):
        budget, budget_kind = _per_run(float(r.settings["retained"]), "B"), ""
    else:
        budget, budget_kind = "—", ""
    view = TestView(
        r=r,
        row_id=anchor(r.nodeid, "row"),
        detail_id=anchor(r.nodeid) if detailed else None,
        reason=_reason(r),
        retained=_per_run(r.retained_per_run, "B") if measured else "—",
        budget=budget,
        budget_kind=budget_kind,
    )
    metric = _primary(r.series) if spark else None
    if metric:
        words, is_bytes = series_words(metric, r.runs_per_step)
        view.spark = charts.sparkline(r.series[metric], is_bytes, _status_colour(r.status))
        view.spark_label = words if view.spark else ""
    if r.flamegraph:
        if os.path.exists(r.flamegraph):
            view.flamegraph = href(r.flamegraph, html_dir)
        else:
            view.flamegraph_missing = r.flamegraph
    if detailed and r.retention_graph:
        view.retention_graph = _inline_svg(r.retention_graph)
    if detailed:
        view.figures, view.unchanged = _figures(r)
        facts = []
        if r.runs:
            facts.append(f"{r.runs} runs, {r.measured_runs} measured")
        if r.seconds > 0:
            facts.append(f"checked in {format_duration(r.seconds)}")
        view.facts = ", ".join(facts)
    return view


def _test_views(tests: list[LeakResult], html_dir: str) -> tuple[list[TestView], list[str]]:
    rows: list[TestView] = []
    attention = sum(1 for t in tests if t.status not in (CLEAN, NO_VERDICT))
    others = len(tests) - attention
    detailed = charted = 0
    for r in ordered(tests):
        if r.status not in (CLEAN, NO_VERDICT):
            detail = detailed < MAX_DETAILED
            detailed += detail
            rows.append(_test_view(r, html_dir, spark=detail, detailed=detail))
        else:
            spark = charted < MAX_CHARTED_OTHERS
            charted += spark
            rows.append(_test_view(r, html_dir, spark=spark, detailed=False))
    notes = []
    if attention > MAX_DETAILED:
        notes.append(
            f"Detail sections with charts are shown for the first {MAX_DETAILED:,} of "
            f"{attention:,} leaking or inconclusive tests; the JSON report has them all."
        )
    if others > MAX_CHARTED_OTHERS:
        notes.append(f"Sparklines are shown for the first {MAX_CHARTED_OTHERS:,} of {others:,} other tests; the rest are listed without charts.")
    return rows, notes


# --------------------------------------------------------------------------- soaks


def _projection(s: SoakResult) -> str:
    if not s.memory_limit:
        return ""
    limit = format_size(s.memory_limit)
    if s.time_to_limit is None:
        return f"does not reach the {limit} limit at the fitted rate"
    if s.time_to_limit <= 0:
        return f"already at or above the {limit} limit"
    return f"projected to reach the {limit} limit in {format_duration(s.time_to_limit)}"


def _soak_facts(s: SoakResult, html_dir: str) -> list[tuple[str, str, str | None]]:
    facts: list[tuple[str, str, str | None]] = []
    scenario = " / ".join(x for x in (s.scenario, s.variant) if x)
    if scenario:
        facts.append(("scenario", scenario, None))
    facts.append(("duration", format_duration(s.duration), None))
    rate = f" ({s.throughput:,.1f}/s)" if s.throughput else ""
    facts.append(("iterations", f"{fmt_count(s.iterations)}{rate}", None))
    interval = (
        f" (CI {format_size(s.slope_lower, signed=True)} … {format_size(s.slope_upper, signed=True)})"
        if s.slope_lower or s.slope_upper
        else ""
    )
    rss = "RSS of the watched process" if s.watched_pid else "RSS"
    facts.append((f"{rss} trend", f"{format_size(s.slope_per_hour, signed=True)}/h{interval}", None))
    if s.slope_per_iteration:
        facts.append(("per iteration", format_size(s.slope_per_iteration, signed=True), None))
    if s.heap and not s.watched_pid:
        unit = "B" if s.heap_unit == "B" else "blocks"
        amount = format_size(s.heap_slope_per_hour, signed=True) if unit == "B" else f"{s.heap_slope_per_hour:+,.0f} blocks"
        facts.append(("Python heap trend", f"{amount}/h", None))
    if s.plateaued:
        facts.append(("plateau", "memory levelled off", None))
    if s.memory_limit:
        facts.append(("memory limit", format_size(s.memory_limit), None))
        facts.append(("projection", _projection(s), None))
    else:
        facts.append(("memory limit", "none set", None))
    if s.expect_leak is not None:
        facts.append(("expectation", "expected to leak" if s.expect_leak else "expected not to leak", None))
    if s.watched:
        facts.append(("watched", s.watched, None))
    if s.exit:
        facts.append(("exit", f"the service exited with {s.exit}", None))
    if s.cpu_waited and s.cpu_waited >= 0.05:
        facts.append(("waited for a CPU", format_duration(s.cpu_waited), None))
    for path, name in ((s.samples_path, "samples"), (s.flamegraph, "live flamegraph")):
        if path:
            facts.append((name, os.path.basename(path), href(path, html_dir)))
    return facts


def _soak_figures(s: SoakResult) -> tuple[list[Figure], list[tuple[str, str, bool | None]]]:
    legend: list[tuple[str, str, bool | None]] = []
    rss_label = f"RSS of pid {s.watched_pid} and children" if s.watched_pid else "RSS"
    lines: list[Line] = []
    rss = charts.downsample(charts.finite_points(s.t, s.rss))
    if rss:
        lines.append(Line(rss_label, rss, BLUE))
        legend.append((rss_label, BLUE, False))
    heap = charts.downsample(charts.finite_points(s.t, s.heap))
    heap_in_bytes = s.heap_unit == "B"
    if heap and heap_in_bytes:
        lines.append(Line("Python heap", heap, PURPLE))
        legend.append(("Python heap (bytes)", PURPLE, False))
    if not lines and not heap:
        return [], legend
    figures: list[Figure] = []
    label = f"memory over time for {s.nodeid}"
    if lines:
        t_end = max(p[0] for line in lines for p in line.points)
        if s.fit_intercept or s.fit_slope_per_second:
            x0 = s.fit_start or min(p[0] for line in lines for p in line.points)
            x1 = s.fit_end or t_end
            fitted = [(x0, s.fit_intercept + s.fit_slope_per_second * x0), (x1, s.fit_intercept + s.fit_slope_per_second * x1)]
            lines.append(Line("trend", fitted, ORANGE, dash="8 5", width=1.6))
            legend.append((f"fitted trend ({format_size(s.fit_slope_per_second * 3600, signed=True)}/h)", ORANGE, True))
        hlines: list[HLine] = []
        vlines: list[VLine] = []
        limit = s.memory_limit or 0
        ttl = s.time_to_limit
        span = max(t_end - (min(p[0] for p in lines[0].points)), 1e-9)
        projected = limit > 0 and ttl is not None and ttl > 0 and s.fit_slope_per_second > 0
        if projected and ttl is not None and ttl <= PROJECTION_IN_CHART * span:
            lines.append(_projection_line(s, t_end, ttl))
            hlines.append(HLine(limit, f"limit {format_size(limit)}", RED))
            vlines.append(VLine(t_end + ttl, f"limit in {format_duration(ttl)}", RED))
            legend.append(("trend projected to the limit", RED, True))
        elif limit > 0:
            hi = max(p[1] for line in lines for p in line.points)
            lo = min(p[1] for line in lines for p in line.points)
            if limit <= hi + 4 * max(hi - lo, 0.05 * hi):  # inside the chart unless it would flatten the data
                hlines.append(HLine(limit, f"limit {format_size(limit)}", RED))
                legend.append(("memory limit", RED, True))
            else:
                legend.append((f"memory limit {format_size(limit)}: above the chart", RED, None))
        svg = charts.chart(
            lines, width=640, height=260, is_bytes=True, x_time=True, hlines=hlines, vlines=vlines,
            x_label="time since start", css_class="chart soak-chart", label=label,
        )
        figures.append(Figure("memory over time", svg))
        if projected and ttl is not None and ttl > PROJECTION_IN_CHART * span:
            whole = [Line(rss_label, rss or lines[0].points, BLUE), _projection_line(s, t_end, ttl)]
            svg = charts.chart(
                whole, width=640, height=200, is_bytes=True, x_time=True,
                hlines=[HLine(limit, f"limit {format_size(limit)}", RED)],
                vlines=[VLine(t_end + ttl, f"limit in {format_duration(ttl)}", RED)],
                x_label="time since start", css_class="chart soak-chart", label=f"projection to the memory limit for {s.nodeid}",
            )
            figures.append(Figure(f"projected at the fitted rate: the {format_size(limit)} limit in {format_duration(ttl)}", svg))
    if heap and not heap_in_bytes:
        svg = charts.chart(
            [Line("Python heap (blocks)", heap, PURPLE)], width=640, height=160, is_bytes=False, x_time=True,
            x_label="time since start", css_class="chart soak-chart", label=f"Python heap blocks over time for {s.nodeid}",
        )
        figures.append(Figure("Python heap, in allocated blocks", svg))
    return figures, legend


def _projection_line(s: SoakResult, t_end: float, ttl: float) -> Line:
    """The fitted rate from where the series ends to where it meets the limit."""
    limit = float(s.memory_limit or 0)
    return Line("projection", [(t_end, limit - s.fit_slope_per_second * ttl), (t_end + ttl, limit)], RED, dash="4 4", width=1.4)


def _soak_view(s: SoakResult, html_dir: str) -> SoakView:
    figures, legend = _soak_figures(s)
    expectation = ""
    if s.expect_leak is not None and s.status in (LEAK, CLEAN):
        expectation = "unexpected" if unexpected(s) else "as expected"
    return SoakView(s, anchor(s.nodeid, "soak"), _soak_facts(s, html_dir), legend, figures, expectation)


# --------------------------------------------------------------------------- what to fix


def _fixes(tests: list[LeakResult], soaks: list[SoakResult], summary: Summary) -> list[Fix]:
    out: list[Fix] = []
    grouped: set[str] = set()
    for g in summary.groups:
        grouped.update(g["tests"])
        out.append(
            Fix("group", f"{g['count']:,} tests", "#" + anchor(g["tests"][0], "row"), f"{format_size(g['retained_per_run'])}/run in all",
                g["site"] if g["site"].startswith("kept by ") else f"through {g['site']}")
        )
    for r in ordered(tests):
        if r.status != LEAK or r.nodeid in grouped:
            continue
        where = f"allocated at {r.sites[0].site}" if r.sites else (r.findings[0].message if r.findings else r.reason)
        kept = next((line.strip() for line in r.retention if line.startswith("  ")), "")
        note = "known leak (baseline)" if r.known else "warn-only" if r.warned else ""
        out.append(Fix("test", r.nodeid, "#" + anchor(r.nodeid), _per_run(r.retained_per_run, "B") if r.retained_per_run else
                       (_per_run(r.findings[0].per_run, r.findings[0].unit) if r.findings else ""), where, kept, note))
    urgent = sorted(soaks, key=lambda s: (s.time_to_limit is None, s.time_to_limit or 0.0, -s.slope_per_hour, s.nodeid))
    for s in urgent:  # the soonest to reach its limit first
        if s.status != LEAK:
            continue
        note = "expected (a leaky variant)" if s.expect_leak is True else ""
        out.append(Fix("soak", s.nodeid, "#" + anchor(s.nodeid, "soak"), f"{format_size(s.slope_per_hour, signed=True)}/h",
                       _projection(s), "", note))
    return out


# --------------------------------------------------------------------------- the page


def _meta_line(meta: Mapping[str, Any]) -> str:
    parts = [
        f"{name} {meta.get(key)}"
        for key, name in (("python", "Python"), ("pytest", "pytest"), ("memray", "memray"), ("plugin_version", "pytest-memleak"))
        if meta.get(key)
    ]
    if meta.get("platform"):
        parts.append(str(meta.get("platform")))
    return " · ".join(parts)


@cache
def _stylesheet() -> Any:
    import markupsafe

    return markupsafe.Markup((HERE / "static" / "report.css").read_text(encoding="utf-8"))  # ours: inlined as it is


@cache
def _environment() -> Any:
    import jinja2
    import markupsafe

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["svg"] = markupsafe.Markup  # drawn by .charts, which escapes its text
    env.filters["size"] = format_size
    env.filters["count"] = lambda value: fmt_count(round(value, 1))
    return env


def render(tests: list[LeakResult], soaks: list[SoakResult], meta: Mapping[str, Any], html_dir: str) -> Iterable[str]:
    """The page, in chunks (a page with thousands of tests is never one string)."""
    summary = summarize(tests, soaks)
    rows, notes = _test_views(tests, html_dir)
    fixes = _fixes(tests, soaks, summary)
    context = {
        "summary": summary,
        "meta_line": _meta_line(meta),
        "css": _stylesheet(),
        "fixes": fixes[:MAX_FIXES],
        "more_fixes": max(0, len(fixes) - MAX_FIXES),
        "soaks": [_soak_view(s, html_dir) for s in ordered(soaks)],
        "groups": [{**g, "href": "#" + anchor(g["tests"][0], "row"), "links": [(t, "#" + anchor(t, "row")) for t in g["tests"][:50]]}
                   for g in summary.groups],
        "rows": rows,
        "notes": notes,
        "statuses": [(LEAK.value, "leaking"), (INCONCLUSIVE.value, "inconclusive"), (CLEAN.value, "clean"), (NO_VERDICT.value, "no verdict")],
        "version": __version__,
        "schema": SCHEMA,
        "generated": meta.get("generated") or "",
        "settings": meta.get("settings") if isinstance(meta.get("settings"), Mapping) else {},
    }
    chunks: Iterable[str] = _environment().get_template("report.html.j2").generate(context)
    return chunks


def write_html(
    path: str | os.PathLike[str],
    tests: Iterable[Mapping[str, Any] | LeakResult],
    soaks: Iterable[Mapping[str, Any] | SoakResult],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write ``memleak.html`` atomically. Raises OSError.

    Links to flamegraphs and sample files are relative to the HTML file; a relative path in a
    result is taken relative to the current working directory.
    """
    test_list, soak_list = tests_of(path, tests), soaks_of(path, soaks)
    full_meta = {**default_meta(), **dict(meta or {})}
    html_dir = os.path.dirname(os.path.abspath(os.fspath(path)))

    def write(out: IO[str]) -> None:
        for chunk in render(test_list, soak_list, full_meta, html_dir):
            out.write(chunk)

    atomic_write(path, write)
