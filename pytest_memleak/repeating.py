"""Run one test again and again and measure what each run leaves behind.

One run is setup + call + teardown of the test's function-scoped fixtures (higher scopes stay
set up), so state that teardown releases is not counted and state a fixture leaks is.
The caller has already made the test's own run; this module adds warm-up, screening and
confirmation runs, and returns the series that :mod:`pytest_memleak.deciding` judges.
"""

from __future__ import annotations

import functools
import gc
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

from . import deciding, measuring, sites
from .options import TestSettings
from .results import CLEAN, INCONCLUSIVE, LEAK, Finding, LeakResult
from .units import format_size

MIN_TRACED_SECONDS = 30.0  # the traced window may always take this long, whatever confirm_seconds says
MIN_SCREEN_RUNS = 2  # measured runs before the screen may clear a test
STEPS = 6  # checkpoints of the confirmation window (plus its start)
STOPPED_FRACTION = 0.1  # growth under this share of the traced rate means a fill has stopped
MAX_WINDOW_GROWTH = 64 * 1024 * 1024  # no longer window when it would retain more than this
MAX_WINDOW_RUNS = 1024  # the longest untraced window: about 2,000 runs in all, enough for fills seen in the wild


@dataclass
class TracingOwner:
    """Whether the plugin started tracemalloc for this test (and so may restart or stop it)."""

    owned: bool = False

    def begin(self, frames: int = 1) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
            self.owned = True

    def stop(self) -> None:
        if self.owned and tracemalloc.is_tracing():
            tracemalloc.stop()
        self.owned = False


class NotRepeatable(Exception):
    """A repeated run did not pass: the test cannot be measured by repetition."""


@dataclass
class Runner:
    """Runs an item once more, as a whole function-scoped cycle, and discards the reports."""

    item: pytest.Item
    after_run: Callable[[pytest.Item, list[Any]], None] | None = None  # ends a forked child back in pytest
    runs: int = 0
    _sections: int = 0
    _props: int = 0
    _log: list[Any] = field(default_factory=list)
    resources_before: Any = None  # what was alive when the last confirmation window began

    def __post_init__(self) -> None:
        self._sections = len(getattr(self.item, "_report_sections", ()))
        self._props = len(getattr(self.item, "user_properties", ()))

    def __call__(self) -> None:
        item = self.item
        # nextitem=parent: teardown pops the function-level node only; module and class
        # fixtures stay set up across runs.
        session = item.session
        session.gethookproxy = _quiet_proxy(session)  # type: ignore[method-assign,assignment]
        try:
            reports = runtestprotocol(item, log=False, nextitem=item.parent)  # type: ignore[arg-type]
        finally:
            del session.gethookproxy
        if self.after_run is not None:
            self.after_run(item, reports)
        self.runs += 1
        failed = next((r for r in reports if not r.passed), None)
        del reports
        _drop_finished_dependants(item)
        # Repeated runs must not pile up captured output, properties or warnings.
        del item._report_sections[self._sections :]
        del item.user_properties[self._props :]
        self._log.clear()
        if failed is not None:
            outcome = "skipped" if failed.skipped else "failed"
            raise NotRepeatable(f"run {self.runs + 1} {outcome} in {failed.when}: the test is not repeatable")


class _QuietRelay:
    """A node's hook relay that drops subtest reports: pytest's ``subtests`` fixture and
    unittest's ``subTest`` log them themselves, whatever ``runtestprotocol(log=False)`` says."""

    def __init__(self, relay: Any) -> None:
        self._relay = relay

    def __getattr__(self, name: str) -> Any:
        caller = getattr(self._relay, name)
        if name != "pytest_runtest_logreport":
            return caller

        def logreport(*, report: Any) -> Any:
            if type(report).__name__ == "SubtestReport":
                return None
            return caller(report=report)

        return logreport


def _quiet_proxy(session: pytest.Session) -> Callable[[Any], Any]:
    real = type(session).gethookproxy

    def gethookproxy(fspath: Any) -> Any:
        return _QuietRelay(real(session, fspath))

    return gethookproxy


def _drop_finished_dependants(item: pytest.Item) -> None:
    """Forget the finalizers a finished run left on higher-scoped fixtures.

    When a function fixture uses a session or module fixture, pytest appends
    ``partial(FixtureDef.finish, request=...)`` to the higher fixture's finalizers at every
    setup, and that keeps every run's request (and all it holds) alive until the session ends.
    For a function fixture that has already finished, calling it again would do nothing, so
    after a repeated run those entries are pytest's bookkeeping, not the test's retention.
    """
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in defs:
            finalizers = getattr(fixturedef, "_finalizers", None)
            if getattr(fixturedef, "scope", "function") == "function" or not finalizers:
                continue
            keep = [f for f in finalizers if not _is_finished_dependant(f, item)]
            if len(keep) != len(finalizers):
                finalizers[:] = keep


def _is_finished_dependant(finalizer: object, item: pytest.Item) -> bool:
    if not isinstance(finalizer, functools.partial):
        return False
    dependant = getattr(finalizer.func, "__self__", None)
    request = finalizer.keywords.get("request")
    return (
        getattr(finalizer.func, "__name__", "") == "finish"
        and getattr(dependant, "scope", None) == "function"
        and getattr(dependant, "cached_result", True) is None
        and getattr(request, "node", None) is item
    )


def _type_counts(own_module: str = "pytest_memleak") -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():  # the heap is frozen: only objects made since the freeze
        cls = type(obj)
        module = cls.__module__
        if module.startswith(own_module):
            continue
        name = cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
        counts[name] = counts.get(name, 0) + 1
    return counts


@dataclass
class Checkpoints:
    """The confirmation window's measurements, one entry per checkpoint."""

    totals: list[sites.SiteTotals] = field(default_factory=list)
    blocks: list[float] = field(default_factory=list)  # the allocator's blocks, less our own bookkeeping
    own_blocks: int = 0
    types: list[dict[str, int]] = field(default_factory=list)
    traced: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    fds: list[float] = field(default_factory=list)
    threads: list[float] = field(default_factory=list)
    processes: list[float] = field(default_factory=list)
    tasks: list[float] = field(default_factory=list)
    resources: Any = None  # what was alive at the first checkpoint (a resources.ResourceSnapshot)

    def take(self, classifier: sites.Classifier) -> None:
        from . import native, resources

        if not tracemalloc.is_tracing():
            raise NotRepeatable("the test stopped tracemalloc: its allocations cannot be traced")
        measuring.collect()
        before = sys.getallocatedblocks()
        self.blocks.append(float(before - self.own_blocks))
        self.fds.append(float(measuring.open_fds()))
        self.threads.append(float(measuring.live_threads()))
        self.processes.append(float(resources.count_children()))
        self.tasks.append(float(resources.count_pending_tasks()))
        native.trim()  # give freed memory back to the OS, so RSS shows what is held
        self.rss.append(float(measuring.rss()))
        self.traced.append(float(tracemalloc.get_traced_memory()[0]))
        snapshot = tracemalloc.take_snapshot()
        self.totals.append(sites.totals(snapshot, classifier))
        del snapshot
        self.types.append(_type_counts())
        if self.resources is None:
            self.resources = resources.ResourceSnapshot.take()
        measuring.collect()
        # What this checkpoint keeps is ours, not the test's: count it out of the next one.
        self.own_blocks += sys.getallocatedblocks() - before

    def site_series(self, counts: bool = False) -> dict[tuple[str, int], list[float]]:
        keys: set[tuple[str, int]] = set()
        for t in self.totals:
            keys.update(t.sizes)
        if counts:
            return {k: [float(t.counts.get(k, 0)) for t in self.totals] for k in keys}
        return {k: [float(t.sizes.get(k, 0)) for t in self.totals] for k in keys}

    def type_series(self) -> dict[str, list[float]]:
        keys: set[str] = set()
        for t in self.types:
            keys.update(t)
        return {k: [float(t.get(k, 0)) for t in self.types] for k in keys}


def _still_open(counters: measuring.Counters, judged: tuple[str, ...], native_allowed: float) -> bool:
    for metric in judged:
        # RSS creeps by pages from fragmentation while the heap is flat: only growth beyond
        # the native budget counts.
        allowed = native_allowed if metric == "rss" else 0
        if deciding.screen_open(counters.values(metric), allowed):
            return True
    return any(counters.values(m)[-1] > counters.values(m)[0] for m in ("fds", "threads"))


def _suspect(counters: measuring.Counters, judged: tuple[str, ...], native_allowed: float) -> bool:
    for metric in judged:
        allowed = native_allowed if metric == "rss" else 0
        if deciding.screen_suspect(counters.values(metric), allowed_per_run=allowed):
            return True
    return any(deciding.screen_suspect(counters.values(m), any_growth=True) for m in ("fds", "threads"))


def screen(run: Runner, settings: TestSettings) -> tuple[bool, measuring.Counters]:
    """Cheap counters after each run; stops as soon as no counter has grown overall.

    Everything the loop needs exists before the baseline, and nothing it makes survives a
    measurement, so the loop itself adds no block per run.
    """
    counters = measuring.Counters(settings.runs + 1)
    judged: tuple[str, ...] = ("blocks", "heap")
    if settings.native is not None:
        judged += ("rss",)
    native_allowed = max(settings.native or 0, deciding.RSS_NOISE)
    remaining = iter(range(settings.runs))
    counters.measure()
    for _ in remaining:
        run()
        counters.measure()
        # One run can be masked: something else of the same size happened to be freed in it
        # (seen under load). Two measured runs at least, before a test is cleared.
        if counters.n > MIN_SCREEN_RUNS and not _still_open(counters, judged, native_allowed):
            return False, counters
    return _suspect(counters, judged, native_allowed), counters


def confirm_window(run: Runner, classifier: sites.Classifier, steps: int, per_step: int) -> Checkpoints:
    """One confirmation window: a checkpoint, then `steps` times `per_step` runs and a checkpoint."""
    from . import resources

    cps = Checkpoints()
    cps.take(classifier)
    for step in range(steps):
        for _ in range(per_step):
            run()
        if step == steps - 1:  # a thread or process that is finishing is not a leak
            resources.settle(cps.resources, resources.GRACE)
        cps.take(classifier)
    run.resources_before = cps.resources
    return cps


def _project_types(grown: dict[str, float], classifier: sites.Classifier) -> list[str]:
    """Grown types defined outside the standard library and the test machinery."""
    out = []
    for name in grown:
        module_name = name.rpartition(".")[0]
        module = sys.modules.get(module_name) if module_name else None
        path = getattr(module, "__file__", None)
        if path and classifier.kind(path) in ("project", "other"):
            out.append(name)
    return out


def judged_windows(
    run: Runner,
    settings: TestSettings,
    classifier: sites.Classifier,
    tracing_owner: TracingOwner,
    nodeid: str,
) -> LeakResult:
    """Traced confirmation, then untraced windows while growth persists.

    The first window is traced: it finds the sites and judges them. Clean code can fill a
    cache for hundreds of runs before it plateaus, so while the verdict is "leak" a new
    window with twice the runs per step asks only whether the growth goes on. It is read with
    the exact untraced counters (heap bytes and blocks), which cost a fifth of a traced run,
    within ``memleak_confirm_seconds``. A leak grows in every window. Instances of the
    project's own classes that grow in every step get no longer window: objects the test made
    and dropped are alive.
    """
    steps = min(STEPS, settings.confirm_runs)
    per_step = max(1, settings.confirm_runs // steps)
    started = tracing_owner.owned or not tracemalloc.is_tracing()
    if started:  # deeper stacks than the screen's one frame
        tracemalloc.stop()
        tracemalloc.start(settings.trace_frames)
    from . import resources

    try:
        with resources.track_task_origins():
            traced_began = time.perf_counter()
            run()  # warm-up under tracing
            traced_run = time.perf_counter() - traced_began
            # The traced window has a time budget too: fewer runs per step for a slow test, and
            # no traced window at all when even one run a step would take far too long.
            budget = max(settings.confirm_seconds, MIN_TRACED_SECONDS)
            affordable = int(budget / max(traced_run, 1e-6))
            if affordable < steps:
                return LeakResult(
                    nodeid,
                    INCONCLUSIVE,
                    f"the screen saw growth, but one traced run takes {traced_run:.1f} s: "
                    f"{steps} of them do not fit in {budget:g} s (raise confirm_seconds to confirm)",
                )
            per_step = max(1, min(per_step, affordable // steps))
            result = judge(nodeid, settings, confirm_window(run, classifier, steps, per_step), per_step, classifier)
    finally:
        if started:
            tracemalloc.stop()
            tracing_owner.owned = False
    if not result.leaked:
        return result
    if all(site.total_blocks <= 0 for site in result.sites):
        return result  # bytes growing at a steady count (a string, a buffer): no fill to wait for
    project_types = _project_types(result.grown_types, classifier)
    if project_types:
        result.details.append(
            f"instances of {', '.join(project_types[:3])} grew in every step: objects the test made "
            "and dropped are still alive, so no longer window was given for them to plateau"
        )
        return result
    big_blocks = sum(g.total_bytes for g in result.sites) > deciding.SMALL_BLOCK * max(
        1, sum(g.total_blocks for g in result.sites)
    )
    began = time.perf_counter()
    window_runs = steps * per_step
    last = 0.0
    windows = 1
    while True:
        per_step *= 2
        if steps * per_step > MAX_WINDOW_RUNS or time.perf_counter() - began + 2 * last > settings.confirm_seconds:
            break
        if result.retained_per_run * steps * per_step > MAX_WINDOW_GROWTH:
            break  # waiting longer for a plateau would itself cost too much memory
        window_began = time.perf_counter()
        counters = measuring.Counters(steps + 1)
        counters.measure()
        for _ in range(steps):
            for _ in range(per_step):
                run()
            counters.measure()
        last = time.perf_counter() - window_began
        windows += 1
        window_runs = steps * per_step
        block_values = counters.values("blocks")
        # malloc'd buffers (numpy arrays, anything past 512 bytes) never move pymalloc's block
        # count: where the retaining sites allocate big blocks, heap bytes (mallinfo) answer.
        signal = counters.values("heap") if big_blocks else block_values
        # A fill has clearly stopped when the latest half of the window grows at under a tenth
        # of the traced rate; one flat step (noise) does not clear a leak.
        reference = result.retained_per_run if big_blocks else sum(g.blocks_per_run for g in result.sites)
        if deciding.latest_rate(signal, per_step) <= STOPPED_FRACTION * reference:
            result.status = CLEAN
            result.reason = (
                f"growth stopped after {run.runs} runs: a fill that plateaus, not a leak "
                f"({'heap bytes' if big_blocks else 'allocated blocks'} every {per_step} runs: "
                f"{[int(d) for d in deciding.steps(signal)]})"
            )
            result.findings = [f for f in result.findings if f.kind not in ("heap", "site")]
            if result.findings:
                result.status = LEAK
                result.reason = result.findings[0].message
            return result
    if windows > 1:
        result.details.append(
            f"confirmation: {windows} windows; growth persisted in every one, the last of {window_runs} runs"
        )
    return result


def judge(
    nodeid: str, settings: TestSettings, cps: Checkpoints, per_step: int, classifier: sites.Classifier
) -> LeakResult:
    """Turn the confirmation window into a verdict with its evidence."""
    window_runs = per_step * (len(cps.totals) - 1)
    site_series = cps.site_series()
    site_counts = cps.site_series(counts=True)
    labels = {k: f"{classifier.relpath(k[0])}:{k[1]}" for k in site_series}
    heap = deciding.decide_heap(
        {labels[k]: v for k, v in site_series.items()},
        per_step,
        settings.retained,
        settings.per_site,
        site_counts={labels[k]: v for k, v in site_counts.items()},
        real_blocks=cps.blocks,
    )
    findings: list[Finding] = []
    grown = sites.growth(cps.totals[0], cps.totals[-1], window_runs, classifier)
    persistent = [g for g in grown if g.site in heap.persistent_sites]
    for g in persistent:  # the latest-half rate is the one judged
        g.bytes_per_run = heap.persistent_sites[g.site]
    top = persistent[: settings.top] or grown[: settings.top]
    if heap.leaking:
        where = f"; top site {top[0].site} {format_size(top[0].bytes_per_run, signed=True)}/run" if top else ""
        if heap.retained_per_run > settings.retained:
            findings.append(
                Finding(
                    "heap",
                    heap.retained_per_run,
                    settings.retained,
                    "B",
                    f"retained {format_size(heap.retained_per_run)}/run of Python heap "
                    f"(budget {format_size(settings.retained)}/run){where}",
                )
            )
        for site, rate in heap.over_site_budget.items():
            findings.append(
                Finding(
                    "site",
                    rate,
                    float(settings.per_site or 0),
                    "B",
                    f"site {site} retained {format_size(rate)}/run (per-site budget {format_size(settings.per_site or 0)}/run)",
                )
            )
    nouns = {"fds": "open file descriptors", "threads": "live threads", "processes": "child processes", "tasks": "pending asyncio tasks"}
    for kind, values, allowed in (
        ("fds", cps.fds, settings.fds),
        ("threads", cps.threads, settings.threads),
        ("processes", cps.processes, settings.processes),
        ("tasks", cps.tasks, settings.tasks),
    ):
        leaking, per_run = deciding.decide_count(values, window_runs, allowed)
        if leaking:
            noun = nouns[kind]
            findings.append(
                Finding(kind, per_run, allowed, "", f"{noun} grew by {values[-1] - values[0]:.0f} over {window_runs} runs ({per_run:+.2f}/run, allowed {allowed}/run)")
            )
    native_leak, native_rate = deciding.decide_native(cps.rss, cps.traced, per_step, settings.native)
    if native_leak:
        findings.append(
            Finding(
                "native",
                native_rate,
                float(settings.native or 0),
                "B",
                f"native memory grew {format_size(native_rate)}/run outside Python's allocator "
                f"(RSS minus traced heap; budget {format_size(settings.native or 0)}/run); tracemalloc cannot attribute it",
            )
        )
    types = deciding.grown_types(cps.type_series(), per_step)
    result = LeakResult(
        nodeid=nodeid,
        status=LEAK if findings else CLEAN,
        reason=findings[0].message if findings else "no growth persisted over the confirmation runs",
        retained_per_run=heap.retained_per_run,
        findings=findings,
        sites=top,
        grown_types=dict(list(types.items())[:10]),
        runs_per_step=per_step,
    )
    result.series.update(
        {
            "heap": [float(t.total_bytes) for t in cps.totals],
            "blocks": cps.blocks,
            "traced": cps.traced,
            "rss": cps.rss,
            "fds": cps.fds,
            "threads": cps.threads,
            "processes": cps.processes,
            "tasks": cps.tasks,
        }
    )
    return result


def measure_item(
    item: pytest.Item,
    settings: TestSettings,
    classifier: sites.Classifier,
    before_measuring: Callable[[], None],
    tracing_owner: TracingOwner,
    after_run: Callable[[pytest.Item, list[Any]], None] | None = None,
) -> tuple[LeakResult, Runner]:
    """The repeated-run check of one test whose own run has passed."""
    started = time.perf_counter()
    run = Runner(item, after_run)
    with warnings.catch_warnings(record=True) as log:
        run._log = log
        try:
            for _ in range(settings.warmup - 1):
                run()
            before_measuring()
            suspect, counters = screen(run, settings)
            series = {f"screen.{m}": [float(v) for v in counters.values(m)] for m in measuring.SCREEN_METRICS}
            if not suspect:
                result = LeakResult(item.nodeid, CLEAN, f"no growth over {counters.n - 1} measured run(s)")
            else:
                result = judged_windows(run, settings, classifier, tracing_owner, item.nodeid)
            result.series = {**series, **{f"confirm.{k}": v for k, v in result.series.items()}}
        except NotRepeatable as exc:
            result = LeakResult(item.nodeid, INCONCLUSIVE, str(exc))
    result.runs = run.runs + 1
    result.measured_runs = max(0, run.runs - (settings.warmup - 1))
    result.seconds = time.perf_counter() - started
    result.settings = settings.as_dict()
    return result, run
