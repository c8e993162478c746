"""Run one test again and again and measure what each run leaves behind.

One run is setup + call + teardown of the test's function-scoped fixtures (higher scopes stay
set up), so state that teardown releases is not counted and state a fixture leaks is. The
caller has already made the test's own run. This module adds the warm-up and the measured
runs, stage by stage as :mod:`pytest_memleak.check.deciding` describes, and never decides: every
status comes from a function there.

A repeated run is *light* where it can be: the fixtures are set up, the test function is
called and the fixtures are torn down, without pytest's reporting hooks around each phase
(capture, logging, reports), which cost several times the test itself for a quick test.
Output stays captured for the whole measurement. A test that cannot run that way (a light
run raised, or it uses ``caplog``, which reads per-phase state) gets full runs through
pytest's own protocol instead. A test with no function-scoped fixture makes several runs
under one setup, each its call alone (:meth:`Runner.repeat`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_memleak.check import deciding, measuring
from pytest_memleak.check.counters import Counter
from pytest_memleak.check.counters import read as read_counter
from pytest_memleak.check.runner import (
    MIN_SUSPECT_SECONDS,
    WAIT_SHARE,
    NotRepeatable,
    OutOfTime,
    Runner,
    SlowingDown,
    TracingOwner,
)
from pytest_memleak.config.options import TestSettings
from pytest_memleak.config.units import format_size
from pytest_memleak.evidence import sites
from pytest_memleak.probe import allocator
from pytest_memleak.probe.census import census
from pytest_memleak.probe.contention import Contention
from pytest_memleak.results import INCONCLUSIVE, LeakResult

STEPS = 4  # checkpoints of a window (plus its start)
FINE_STEPS = 2  # those of below_size_class(): about as many runs as a clean screen makes
FIRST_STEP = 4  # runs per step of the first persistence window; doubled per window
SLOW_RUN = 0.05  # seconds: a test slower than a quarter of this gets fewer runs per step
PERSIST_RUNS = 256  # runs of persisting growth, untraced, before tracing is spent on a suspect (a bounded cache fills for a while)
SCREEN_FACTOR = 0.25  # a clean test's quiet stretch may take a quarter of its own run's time, ...
SCREEN_MIN = 0.0001  # ... plus this many seconds
CHEAP_STRETCH = 10  # runs in a stretch at the least, when as many calls under one setup (the first one timed, ...
CHEAP_SHARE = 2.0  # ... cold, so dearer than the rest) cost no more than this many of the test's own runs
RETIME_SHARE = 2.0  # a first call within this many times the cheap share is timed again: on a busy machine its
# cache goes cold between timeslices (an empty test's first call took 116 us less its wait for a CPU, against 25 us)
RETIME_CALL = 0.002  # ... and any first call this quick, whatever its share (timed again, it costs no more than this):
# a cold call can cost several times a warm one, past RETIME_SHARE (a first call slow once, 0.6 ms where the others take
# microseconds, got one-run stretches, and a string growing 100 B a run read clean after three; timed, that call took
# 0.76 to 0.88 ms beside a loaded .ci/run, too near a bound of 1 ms, with which the loaded suite missed it once)
SCREEN_STRETCHES = 3  # stretches the screen makes at most: growth in each of them is a suspect
SUSPECT_FACTOR = 20  # ... or as long as this many of its runs, within confirm_seconds
TRACED_SHARE = 0.5  # of what is left of a suspect's time, for the traced window
TRACED_SLOWDOWN = 3  # times slower a run is under 8-frame tracemalloc, at the least (some code: 100x)
SETTLE_RUNS = STEPS + STEPS * TRACED_SLOWDOWN  # run times a suspect takes at the least: a persistence window and a traced one
MAX_LONG_STEP = 64  # runs per step of a long window at most: windows of 256 runs
MAX_WINDOW_GROWTH = 64 * 1024 * 1024  # no longer window when it would retain more than this


@dataclass
class Checkpoints:
    """The attribution window's measurements, one entry per checkpoint, after a full collection."""

    totals: list[sites.SiteTotals] = field(default_factory=list)
    blocks: list[float] = field(default_factory=list)  # the allocator's blocks, less our own bookkeeping
    own_blocks: int = 0
    # a census (the whole heap, by type) before tracing began and after it ended: under tracing,
    # counting 50,000 objects allocates an int per count past 256, ~0.3 s with 8 frames
    types: list[dict[str, int]] = field(default_factory=list)
    census_runs: int = 0  # the runs between the two
    traced: list[float] = field(default_factory=list)
    untraced: list[float] = field(default_factory=list)  # the allocators' statistics, less tracemalloc's own
    rss: list[float] = field(default_factory=list)
    counts: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("fds", "threads", "processes", "tasks")})
    resources: Any = None  # what was alive at the first checkpoint (a resources.ResourceSnapshot)
    extra: tuple[Counter, ...] = ()  # the project's counters, in counts by name
    errors: dict[str, str] = field(default_factory=dict)
    # The block count at the latest checkpoint, kept where it is no object: an int held in a local
    # until the checkpoint returned was counted as ours, then freed, and hid one block a step (a
    # test of 20 ms keeping one object() a run, traced one run a step, read flat on 3.11-3.13).
    mark: array[int] = field(default_factory=lambda: array("q", [0]))

    def __post_init__(self) -> None:
        self.counts.update({c.name: [] for c in self.extra})

    def take(self, classifier: sites.Classifier) -> None:
        from pytest_memleak.evidence import native, resources

        if not tracemalloc.is_tracing():
            raise NotRepeatable("the test stopped tracemalloc: its allocations cannot be traced")
        measuring.full_collect()
        self.mark[0] = sys.getallocatedblocks()
        self.blocks.append(float(self.mark[0] - self.own_blocks))
        self.counts["fds"].append(float(measuring.open_fds()))
        self.counts["threads"].append(float(measuring.live_threads()))
        self.counts["processes"].append(float(resources.count_children()))
        self.counts["tasks"].append(float(resources.count_pending_tasks()))
        for counter in self.extra:
            self.counts[counter.name].append(read_counter(counter, self.errors))
        native.trim()  # give freed memory back to the OS, so RSS shows what is held
        self.rss.append(float(measuring.rss()))
        self.traced.append(float(tracemalloc.get_traced_memory()[0]))
        meter = measuring.heap_meter()  # (where malloc's statistics are missing, RSS stands in for the allocators')
        self.untraced.append((float(meter(full=True)) if meter.missing is None else self.rss[-1]) - tracemalloc.get_tracemalloc_memory())
        snapshot = tracemalloc.take_snapshot()
        self.totals.append(sites.totals(snapshot, classifier))
        del snapshot
        if self.resources is None:
            self.resources = resources.ResourceSnapshot.take()
        # What this checkpoint keeps is ours, not the test's: count it out of the next one. It is
        # read as the checkpoint began, after the same collection: a full one empties the free
        # lists, which then hold the same frames and context objects for both readings (after a
        # young one instead, 3.10 showed two blocks a step that were not the test's).
        measuring.full_collect()
        self.own_blocks += sys.getallocatedblocks() - self.mark[0]

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


@dataclass
class Screened:
    state: deciding.ScreenState
    stretch: int  # runs in each of the screen's stretches
    suspects: list[str]  # the counters whose growth persisted


def screen(run: Runner, settings: TestSettings, own_seconds: float, thorough: bool, counters: measuring.Counters) -> Screened:
    """Cheap exact counters after stretches of runs into ``counters`` (a row per stretch, or
    per run when marked), until the screen is clean or suspect.

    The first stretch sets the length of all: as many runs as fit in a quarter of the time of
    the test's own run, and 0.1 ms (one at the least, ``runs`` at the most; ten at the least
    when ten calls under a shared setup, timed by the first, cold one (less its wait for a CPU), cost no more than two own
    runs). A stretch with no growth clears the test, so growth at least every stretch-th run
    cannot pass; growth in stretch after stretch makes it a suspect. A test marked ``memleak``
    gets a row after every run, for all its ``runs``.

    Everything the loop needs exists before the baseline, and nothing it makes survives a
    measurement, so the loop itself adds no block per run.
    """
    allowed = _screen_allowances(settings, run.counters)
    exact = (*deciding.EXACT, *run.counted)
    first = run.runs
    run.drain()  # (the first read of the capture frees what the test's own run left there)
    # pymalloc's bytes (a walk of its arenas) see one object that grows below 512 bytes, which
    # neither the block count nor malloc's statistics do, at ~0.8 ms a walk: in the heap column
    # of a test marked for checking (``thorough``) only. Such an object moves to malloc, whose
    # statistics the column always has, once it passes 512 bytes: unmarked, it is caught then.
    counters.measure(walk=thorough, at=0)
    if thorough:  # a row after every run, for all its runs: a walk swings by more than one object grows in a stretch
        stretch, quiet, cap = run.repeat(1), settings.runs, settings.runs
    else:  # the first stretch: as many runs as fit in a quarter of its own run's time, and a little
        run.call_wait = True  # its first call, timed less its wait for a CPU, says whether ten more runs are cheap
        stretch = run.repeat(settings.runs, time.perf_counter() + SCREEN_FACTOR * own_seconds + SCREEN_MIN)
        own = max(own_seconds, 1e-6)  # (as protocol.run_once times it)
        share = CHEAP_STRETCH * run.call_seconds / own  # what ten calls cost, in the test's own runs
        if run.bare and stretch < CHEAP_STRETCH and share > CHEAP_SHARE and (share <= RETIME_SHARE * CHEAP_SHARE or run.call_seconds <= RETIME_CALL):
            run.repeat(1)  # (in the first stretch, whose length stays: growth every stretch-th run still cannot pass)
            share = min(share, CHEAP_STRETCH * run.call_seconds / own)
        run.call_wait = False
        if run.bare and share <= CHEAP_SHARE and stretch < CHEAP_STRETCH:
            stretch += run.repeat(min(settings.runs, CHEAP_STRETCH) - stretch)  # growth every few runs costs little to see
        quiet, cap = stretch, SCREEN_STRETCHES * stretch
    while True:
        run.drain()
        counters.measure(walk=thorough, at=run.runs - first)
        state = deciding.screen_state(counters.series(allowed), allowed, quiet, cap, counters.runs_at(), exact)
        if state != "open":
            break
        run.repeat(stretch)
    suspects = deciding.suspect_metrics(counters.series(allowed), allowed, counters.runs_at()) if state == "suspect" else []
    return Screened(state, stretch, suspects)


_warmed = [False]


def warm(run: Runner) -> None:
    """Call, once in a process and before the first baseline, the code that the measuring loop
    reaches only on some timings or some rows. On Python 3.10 a code object's first call keeps
    a frame for it, a block that stays (the collection before each row empties the free list
    of frames that would lend one), so each such first call was a step in a clean test's
    blocks: one slow run of a quick test (its wait read, the slowdown watch) stepped them by 5,
    then by 1 (the screen's own tests, reached for the first time by that growth), and the
    test was made a suspect. The opcode cache is turned off then too
    (:func:`measuring.settle_interpreter`)."""
    if _warmed[0]:
        return
    _warmed[0] = True
    measuring.settle_interpreter()
    run.warm()
    for values in ([0.0, 0.0, 0.0], [0.0, 1.0, 2.0]):  # a screen that clears, one that suspects
        deciding.screen_state({"blocks": values}, {"blocks": 0.0}, 1, 2)


def _cache() -> float:
    """What a thread's allocator cache may hold that the allocator's bytes count (glibc's
    tcache); 0 where they leave the caches out (jemalloc's, :func:`allocator.allocated_bytes`)."""
    return deciding.ALLOCATOR_CACHE if allocator.caches_counted() else 0.0


@dataclass
class ClassHistory:
    """Where the C allocator counts an object by size classes far apart (jemalloc), the steps of
    its bytes, (runs, growth) oldest first, from the screen's on; ``noise``: what a step's walk of
    pymalloc's arenas swings by, where the heap column walks them."""

    steps: list[tuple[float, float]]
    noise: float = 0.0
    traced: bool = False  # its windows read the heap from tracemalloc (1 frame): see below_size_class()

    @classmethod
    def of_screen(cls, counters: measuring.Counters, walked: bool) -> ClassHistory | None:
        """The screen's steps after its warm-up row, or None where the allocator's count is fine."""
        if not allocator.size_classed():
            return None
        heap, at = counters.values("heap")[1:], counters.runs_at()[1:]
        return cls(list(zip(deciding.steps(at), deciding.steps(heap), strict=True)), deciding.WALK_NOISE if walked else 0.0)


@contextlib.contextmanager
def traced_heap(run: Runner, on: bool) -> Iterator[None]:
    """tracemalloc at one frame for the windows inside (``on``; where it runs already, as it
    is), after a run under it: what each run replaces is traced from then on, so the traced
    bytes rise by what the runs keep."""
    started = on and not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(1)
    try:
        if on:
            run.repeat(1)
        yield
    finally:
        if started:
            tracemalloc.stop()


def below_size_class(run: Runner, settings: TestSettings, stretch: int) -> ClassHistory | None:
    """Where the allocator counts by size classes (jemalloc), a test marked ``memleak`` whose
    screen was clean gets one more short window, its heap read from tracemalloc, exact to the byte: one object that
    grows by less than its size class over the screen (a 40 KiB string 100 B a run: jemalloc's
    classes there are 8 KiB apart) moved nothing the screen reads. Growth in every step makes it
    a suspect, whose windows then read the traced heap too (None: no such growth)."""
    if not allocator.size_classed():
        return None
    with traced_heap(run, True):
        counters = _window(run, stretch, full=False, walk=False, traced=True, steps=FINE_STEPS)
    heap = counters.values("heap")
    if not deciding.persists(heap, noise=settings.retained * stretch):
        return None
    return ClassHistory([(float(stretch), d) for d in deciding.steps(heap)], traced=True)


def _screen_allowances(settings: TestSettings, counters: Sequence[Counter] = ()) -> dict[str, float]:
    # RSS moves in pages and creeps from fragmentation while the heap is flat: only a step
    # beyond the page noise counts here; small native growth shows in the malloc statistics.
    # Where those are missing, RSS (read after a trim) stands in for them, at the native budget.
    allowed = {"blocks": 0.0, "heap": float(settings.retained), "fds": float(settings.fds), "threads": float(settings.threads)}
    allowed.update({c.name: float(c.budget) for c in counters})
    if settings.native is not None:
        stand_in = measuring.heap_meter().missing is not None
        allowed["rss"] = float(settings.native if stand_in else max(settings.native, deciding.RSS_NOISE))
    return allowed


def persistence(
    run: Runner,
    settings: TestSettings,
    earlier: int,
    stretch: int,
    heap_only: bool,
    handover: float,
    counted: Sequence[str] = (),
    classed: ClassHistory | None = None,
) -> tuple[bool, str, int, list[float]]:
    """Untraced windows, runs per step doubling, while growth persists and until ``PERSIST_RUNS``
    or the ``handover`` time (a slow test's traced window needs the rest of its bound).

    ``heap_only``: only pymalloc's bytes grew in the screen, and a walk swings by more than a
    small object grows in a few runs, so no growth clears it only once the steps are long
    enough (:func:`deciding.heap_settled`). Steps are at least the screen's ``stretch``, over
    which the growth showed (growth every few runs is in every step). ``counted``: exact counts
    (descriptors, threads, a project's counters) that grew in the screen, judged here with the
    heap: an ``os.open`` that keeps no object grows no heap; and RSS, when it grew where it
    stands in for malloc's missing statistics. ``classed``: where the allocator counts by size
    classes far apart (jemalloc), the steps of its bytes so far, to which each window's are
    added; flat within what a size class can hide (:func:`deciding.within_size_class`), they
    still grow. Returns (still growing, what was judged, runs per step, the last window's steps).
    """
    # a slow test gets short steps: its windows stay within a few of its runs; the screen's
    # stretch, as far as a window of such steps fits in half the time left before the handover
    seconds = max(run.seconds, 1e-9)
    fit = int((handover - time.perf_counter()) / (2 * STEPS * seconds))
    per_step = max(1, min(stretch, fit), min(FIRST_STEP, int(SLOW_RUN / seconds)))
    runs = earlier
    allowed = _screen_allowances(settings, run.counters)
    metrics = ("blocks", "heap", *counted)
    traced = classed is not None and classed.traced
    what, deltas = "blocks", list[float]()  # (the last whole window's)
    while True:
        try:
            counters = _window(run, per_step, full=False, walk=heap_only, traced=traced)  # a walk's swing is noise to the rest
        except OutOfTime:
            if runs == earlier:
                raise
            # a window of twice the runs ran slower than the runs before it foretold (a loaded machine,
            # a slower Python): the growth persisted over the last whole one
            return True, what, per_step // 2, deltas
        runs += STEPS * per_step
        held = counters.values("heap")[-1] - counters.values("heap")[0]
        growing = [m for m in metrics if deciding.still_grows(counters.values(m), per_step, allowed[m])]
        if classed is not None:
            classed.steps.extend((per_step, d) for d in deciding.steps(counters.values("heap")))
            if "heap" not in growing and deciding.within_size_class(classed.steps, allowed["heap"], classed.noise):
                growing.append("heap")  # flat, but no longer than one object's next size class takes
        what = growing[0] if growing else "blocks"
        deltas = deciding.steps(counters.values(what))
        if (not growing and (not heap_only or deciding.heap_settled(per_step))) or (
            growing and (runs >= PERSIST_RUNS or 2 * held > MAX_WINDOW_GROWTH or time.perf_counter() + 2 * STEPS * per_step * run.seconds >= handover)
        ):  # (the next window, of twice the runs, would hold too much or end past the handover)
            return bool(growing), what, per_step, deltas
        per_step *= 2


def _window(run: Runner, per_step: int, full: bool, walk: bool = True, traced: bool = False, steps: int = STEPS) -> measuring.Counters:
    """``steps`` steps of ``per_step`` runs, a checkpoint before and after each (``walk``: pymalloc's
    bytes in the heap column; ``full``: after a collection of the frozen heap too; ``traced``: the
    traced bytes in the heap column instead, with tracemalloc running)."""
    counters = measuring.Counters(steps + 1, run.counters, run.counter_errors, traced=traced)
    each = iter(range(steps))  # (made before the first row: a loop's iterator is alive through it)
    run.drain()
    counters.measure(full=full, walk=walk)
    for _ in each:
        run.repeat(per_step)
        run.drain()
        counters.measure(full=full, walk=walk)
    return counters


def attribution_window(run: Runner, classifier: sites.Classifier, per_step: int) -> Checkpoints:
    """The traced window: a checkpoint, then STEPS times ``per_step`` runs and a checkpoint."""
    from pytest_memleak.evidence import resources

    cps = Checkpoints(extra=run.counters, errors=run.counter_errors)
    run.drain()
    cps.take(classifier)
    for step in range(STEPS):
        run.repeat(per_step)
        if step == STEPS - 1:  # a thread or process that is finishing is not a leak
            resources.settle(cps.resources, resources.GRACE)
        run.drain()
        cps.take(classifier)
    run.resources_before = cps.resources
    return cps


def judged(
    run: Runner,
    settings: TestSettings,
    classifier: sites.Classifier,
    tracing_owner: TracingOwner,
    nodeid: str,
    screen_runs: int,
    stretch: int = 1,
    heap_only: bool = False,
    thorough: bool = False,
    counted: Sequence[str] = (),
    unseen: str | None = None,
    classed: ClassHistory | None = None,
) -> LeakResult:
    """A suspect: a check for module state re-patched per run, persistence windows, then a traced
    attribution window, then long windows (``counted``: the exact counts that grew in the screen;
    ``unseen``: why growth of the heap the screen saw cannot be followed past pymalloc;
    ``classed``: the screen's steps of the allocator's bytes, where it counts by size classes)."""
    # enough for a quick test's persistence and attribution windows, whatever confirm_seconds says
    bound = max(MIN_SUSPECT_SECONDS, min(settings.confirm_seconds, SUSPECT_FACTOR * run.seconds))
    if stretch > 1:  # its windows step by the screen's stretch: the time of SETTLE_RUNS stretches at the
        # least, which is at most 32 of its own runs (a stretch costs two of them at the most); short of it,
        # a leak of a few ms a run (a 2 MiB numpy buffer) ran out of time on a slower Python
        bound = max(bound, SETTLE_RUNS * stretch * run.seconds)
    if thorough:  # a test marked for checking gets all of confirm_seconds
        bound = max(bound, settings.confirm_seconds)
    # the cost budget's credit, when it is shorter: a suspect goes on to a verdict, but one that
    # turns out a fill must not spend the checks of hundreds of tests after it
    bound, budgeted = run.within_credit(bound, time.perf_counter())
    limit = f"the {bound:.1f} s {'that the cost budget left' if budgeted else 'bound'}"
    runs_bound = not budgeted and not thorough and bound < settings.confirm_seconds  # its runs', not confirm_seconds

    def advice(purpose: str) -> str:
        if budgeted:
            return f"raise memleak_budget or confirm_seconds {purpose}"
        if runs_bound:
            return f"mark the test memleak {purpose}: unmarked, a suspect gets {SUSPECT_FACTOR} of its runs, marked, all of confirm_seconds"
        return f"raise confirm_seconds {purpose}"

    seen = f"{screen_runs} screening runs"
    least = SETTLE_RUNS * run.seconds
    if budgeted and not thorough and least > bound:  # (a slow test: a hypothesis test, a server round trip)
        return deciding.unsettled(
            nodeid,
            f"the screen saw growth, and settling it takes {SETTLE_RUNS} runs of {run.seconds:.2f} s at the least, more "
            f"than {limit} ({advice('to settle it')})",
            seen,
        )
    from pytest_memleak.evidence import hygiene

    # first: such a chain of wrappers grows on every run and slows down, so persistence windows
    # would only spend runs on it, and it traces slowly (a scan of every module: outside the
    # bound, which is the test's runs')
    rebound = hygiene.rebound_globals(run)
    if rebound:  # the growth is the test patching module state again on every run
        return deciding.patches_every_run(deciding.inconclusive(nodeid, seen), rebound)
    began = time.perf_counter()  # the suspect's time bound runs from here, for all its windows
    run.deadline = began + bound
    # a busy machine's wait is not the check's cost: the bound runs on by it, up to twice its
    # length, as a soak does (not beyond the session's credit, which it would spend)
    run.waits, run.wait_cap, run.credited = Contention(), 0.0 if budgeted else bound, 0.0
    run.waits.begin()
    try:
        # a marked test's screen walked pymalloc's arenas (an object growing below 512 B shows
        # nowhere else): its windows walk them too, whatever else the screen saw grow (under
        # load, a block that came and went made a growing string's windows judge blocks alone)
        walk = heap_only or thorough
        with traced_heap(run, classed is not None and classed.traced):
            growing, what, per_step, deltas = persistence(
                run, settings, screen_runs, stretch, walk, began + bound * (1 - TRACED_SHARE), counted, classed
            )
    except OutOfTime:
        return deciding.unsettled(nodeid, f"the screen saw growth, and {limit} ran out before it settled", seen)
    runs = run.runs
    if not growing:
        if unseen is not None:
            return deciding.stopped_unseen(nodeid, runs, what, deltas, per_step, unseen)
        return deciding.stopped_growing(nodeid, runs, what, deltas, per_step)
    seen = f"{what} grew {deltas} every {per_step} runs, {runs} runs in all"
    run.credit_wait()  # (on a loaded machine the persistence windows took that much longer)
    left = run.deadline - time.perf_counter()
    longest = max(run.durations(STEPS))  # a run with its setup and teardown, not a bare call
    # a traced run to learn that would itself not fit (in what is left; a quick test's, in the overrun
    # of as much as its bound again that the traced window allows, where persistence left no time)
    if STEPS * TRACED_SLOWDOWN * longest > max(TRACED_SHARE * left, MIN_SUSPECT_SECONDS):
        return deciding.unsettled(
            nodeid,
            f"growth persisted untraced, but {STEPS} runs of {longest:.2f} s, {TRACED_SLOWDOWN}x slower traced at the "
            f"least, do not fit in what is left of {limit} ({advice('to attribute it')})",
            seen,
        )
    census_before, census_from = measuring.full_collect(census), run.runs
    started = tracing_owner.owned or not tracemalloc.is_tracing()
    if started:  # deeper stacks than the screen's
        tracemalloc.stop()
        tracemalloc.start(settings.trace_frames)
    from pytest_memleak.evidence import resources

    try:
        run.watch_slowing = False
        with resources.track_task_origins():
            deadline, traced_began = run.deadline, time.perf_counter()
            waited = run.waits.read()
            run.deadline = max(deadline, min(traced_began + bound, run.hard_until))  # (within the overrun allowed below)
            try:
                run()  # warm-up under tracing
            except OutOfTime:
                return deciding.unsettled(nodeid, "growth persisted untraced, and the time bound ran out before it was traced", seen)
            finally:
                run.deadline = deadline
            traced_run = time.perf_counter() - traced_began
            # its cost: a busy machine's wait for a CPU is not (the kernel's count is exact; an
            # estimate leaves a third of the time at the least)
            spent = traced_run - (run.waits.read() - waited)
            traced_run = max(spent, 1e-6) if run.waits.exact else max(spent, traced_run / 3)
            affordable = int(TRACED_SHARE * (run.deadline - time.perf_counter()) / max(traced_run, 1e-6)) // STEPS
            # steps shorter than the screen's stretch, over which it grew, can miss growth every few runs
            # (a step without it would read as growth that stopped): when some steps fit, steps of the
            # stretch may overrun the bound by as much as the bound again (a loaded machine), never
            # pytest-timeout's: also when the persistence windows left no time for even one run a step (a
            # bare call of 0.2 ms, 10 ms traced: 4 steps of 10 overran a 0.5 s bound by 0.4 s), as long
            # as the steps take no longer than the bound. (When they do, the test is too slow to settle.)
            least = max(1, min(per_step, stretch))
            overrun = STEPS * least * traced_run
            run.credit_wait()
            overran = affordable < least and overrun <= bound + run.credited and time.perf_counter() + overrun < run.hard_until
            if overran:
                affordable = least
            if affordable < least:
                return deciding.unsettled(
                    nodeid,
                    f"growth persisted untraced, but one traced run takes {traced_run:.2f} s: {STEPS} steps of {least} "
                    f"do not fit in {limit} ({advice('to attribute it')})",
                    seen,
                )
            traced_step = max(1, min(per_step, affordable, settings.confirm_runs // STEPS))
            run.deadline = float("inf")  # the window was sized to fit
            cps = attribution_window(run, classifier, traced_step)
    finally:
        run.watch_slowing, run.watch_slowing_from = True, 0
        if started:
            tracemalloc.stop()
            tracing_owner.owned = False
    with measuring.thawed():  # (the last checkpoint has just collected the whole heap)
        cps.types = [census_before, census()]
    cps.census_runs = run.runs - census_from
    result = _confirm(nodeid, settings, cps, traced_step, classifier)
    if not result.leaked:
        return result
    native = deciding.allocator_native_only(result) if overran else None  # (the overrun is for the heap's evidence)
    if native is not None and native.per_run * STEPS * traced_step < _cache() * measuring.live_threads():
        return deciding.unsettled(
            nodeid,
            f"growth persisted untraced, and the traced window, which overran {limit}, saw only the C allocator's bytes "
            f"grow: too few runs to tell native memory from what each thread's allocator cache holds ({advice('to settle it')})",
            seen,
        )
    return long_windows(run, settings, began, result, per_step, classed)


def long_windows(
    run: Runner, settings: TestSettings, began: float, result: LeakResult, per_step: int, classed: ClassHistory | None = None
) -> LeakResult:
    """Untraced windows, doubling, until growth stops (a bounded cache) or outlasts MIN_LEAK_RUNS
    (``classed``: the steps of the allocator's bytes so far, where it counts by size classes)."""
    big_blocks = sum(g.total_bytes for g in result.sites) > deciding.SMALL_BLOCK * max(1, sum(g.total_blocks for g in result.sites))
    # The allocators' bytes for a leak of big blocks or of one growing object; blocks otherwise.
    # A native leak the allocators count, and nothing of the heap: their total, at its rate.
    native = deciding.allocator_native_only(result)
    what = "heap bytes" if native is not None or big_blocks or all(g.total_blocks <= 0 for g in result.sites) else "allocated blocks"
    reference = native.per_run if native is not None else result.retained_per_run if what == "heap bytes" else sum(g.blocks_per_run for g in result.sites)
    missing = measuring.heap_meter().missing
    if what == "heap bytes" and missing is not None and any(f.kind in ("heap", "site", "native") for f in result.findings):
        # malloc's bytes are missing: the blocks, or RSS, stand in for them
        # (RSS first: blocks weigh a dict's or a list's small block as much as a big one, and such
        # growth goes on for a while after a cache of big blocks is full)
        blocks = sum(g.blocks_per_run for g in result.sites)
        reference += sum(f.per_run for f in result.findings if f.kind == "native")
        if allocator.can_trim() and reference * MAX_LONG_STEP >= deciding.RSS_NOISE:
            # (untrimmed, RSS keeps freed memory, which growth can fill unseen; its steps must
            # hold enough growth to stand out of its page noise)
            what, per_step = "RSS", min(MAX_LONG_STEP, max(per_step, math.ceil(deciding.RSS_NOISE / reference)))
        elif blocks > 0:
            what, reference = "allocated blocks", blocks
        else:
            unable = allocator.trim_missing() or f"RSS moves in pages: {format_size(reference)}/run is below its noise"
            deciding.not_followed(result, f"{missing}, and {unable}")
            return result
    # The sites already show a leak: what is left of confirm_seconds goes to telling it from
    # a bounded cache that is still filling.
    seconds, budgeted = run.within_credit(settings.confirm_seconds, began)
    run.deadline = began + seconds + run.credited
    if budgeted:
        run.wait_cap = run.credited  # (no more of the session's credit)
    traced = classed is not None and classed.traced and what == "heap bytes"
    try:
        with traced_heap(run, traced):
            return _outlasted(run, result, per_step, what, reference, classed, traced)
    except OutOfTime:
        deciding.not_outlasted(result, run.runs, budgeted, measuring.live_threads(), _cache())
        return result


def _outlasted(run: Runner, result: LeakResult, per_step: int, what: str, reference: float, classed: ClassHistory | None, traced: bool) -> LeakResult:
    """long_windows()'s windows (``traced``: the heap read from tracemalloc, which runs)."""
    while run.runs < deciding.MIN_LEAK_RUNS:
        if result.retained_per_run * STEPS * per_step > MAX_WINDOW_GROWTH:
            break  # waiting longer for a plateau would itself cost too much memory
        counters = _window(run, per_step, full=True, traced=traced)
        signal = counters.values({"heap bytes": "heap", "RSS": "rss"}.get(what, "blocks"))
        deltas = deciding.steps(signal)
        stopped = not deciding.still_grows(signal, per_step, earlier_rate=reference)
        if classed is not None and what == "heap bytes":  # (a walked window: pymalloc's swing is no rise)
            classed.steps.extend((per_step, d) for d in deltas)
            stopped = stopped and not deciding.within_size_class(classed.steps, noise=deciding.WALK_NOISE, rate=reference)
        if stopped or deciding.gave_back(deltas):
            deciding.cleared_by_long_window(result, run.runs, what, deltas, per_step)
            return result
        per_step = min(2 * per_step, MAX_LONG_STEP)
    result.details.append(f"confirmation: growth persisted in every window, {run.runs} runs in all")
    return result


def _confirm(nodeid: str, settings: TestSettings, cps: Checkpoints, per_step: int, classifier: sites.Classifier) -> LeakResult:
    """Gather the attribution window's evidence and have it judged."""
    window_runs = per_step * (len(cps.totals) - 1)
    site_series = cps.site_series()
    site_counts = cps.site_series(counts=True)
    labels = {k: f"{classifier.relpath(k[0])}:{k[1]}" for k in site_series}
    ignored = sites.ignored(site_series, cps.totals[-1].stacks, settings.ignore, classifier) if settings.ignore else set()
    for key in ignored:  # memleak_ignore: their growth is not counted, and said
        del site_series[key], site_counts[key]
    evidence = deciding.Evidence(
        per_step=per_step,
        site_bytes={labels[k]: v for k, v in site_series.items()},
        site_counts={labels[k]: v for k, v in site_counts.items()},
        real_blocks=cps.blocks,
        traced=cps.traced,
        untraced_heap=cps.untraced,
        rss=cps.rss,
        counts=cps.counts,
        types=cps.type_series(),
        census_runs=cps.census_runs,
        counters=cps.extra,
        heap_missing=measuring.heap_meter().missing,
        untrimmed=allocator.trim_missing(),
    )
    result, heap = deciding.confirm(nodeid, settings, evidence)
    grown = sites.growth(cps.totals[0], cps.totals[-1], window_runs, classifier)
    if ignored:
        ignored_labels = {labels[k] for k in ignored}
        result.ignored_per_run = sum(max(0.0, g.bytes_per_run) for g in grown if g.site in ignored_labels)
        grown = [g for g in grown if g.site not in ignored_labels]
        result.details.append(
            f"memleak_ignore: growth at {len(ignored)} site(s) not counted, {result.ignored_per_run:.0f} B/run "
            f"(patterns {', '.join(settings.ignore or ())})"
        )
    persistent = [g for g in grown if g.site in heap.persistent_sites]
    for g in persistent:  # the latest-half rate is the one judged
        g.bytes_per_run = heap.persistent_sites[g.site]
    result.sites = persistent[: settings.top] or grown[: settings.top]
    result.series.update(
        {
            "heap": [float(t.total_bytes) for t in cps.totals],
            "blocks": cps.blocks,
            "traced": cps.traced,
            "untraced": cps.untraced,
            "rss": cps.rss,
            **{k: v for k, v in cps.counts.items() if k not in cps.errors},
        }
    )
    return result


def _counted_before_stop(run: Runner, settings: TestSettings, counters: measuring.Counters, first: int, result: LeakResult) -> LeakResult:
    """The runs stopped before a traced window settled them (in the screen or after it): descriptors or
    threads whose growth persisted in the screen and that are still alive now, once finishing
    threads had time to end, are a leak all the same. Stopped within the screen's second stretch,
    the stop is a row of its own (once finishing threads had time to end): a test that slows down
    as fast as its threads pile up stops there (seen under load in CI)."""
    from pytest_memleak.evidence import resources

    stop_row = counters.n == 2  # (the screen's counters hold a row per stretch and more)
    if stop_row:
        measuring.settled_threads(int(counters.values("threads")[0]), resources.GRACE)
        run.drain()
        counters.measure(at=run.runs - first)
    if counters.n < 3:
        return result
    extra = {c.name: c for c in run.counters}
    suspects = deciding.suspect_metrics(counters.series(run.counted), _screen_allowances(settings, run.counters), counters.runs_at())
    if not suspects:
        return result
    counts = {}
    for m in suspects:
        baseline = counters.values(m)[0]
        if stop_row:  # the row just taken
            now = counters.values(m)[-1]
        elif m in extra:
            now = read_counter(extra[m], run.counter_errors)
        else:
            now = measuring.settled_threads(int(baseline), resources.GRACE) if m == "threads" else measuring.open_fds()
        counts[m] = [float(baseline), float(now)]
    return deciding.counted_before_stop(result, settings, counts, run.runs - first, run.counters)


def measure_item(
    item: pytest.Item,
    settings: TestSettings,
    classifier: sites.Classifier,
    before_measuring: Callable[[], None],
    tracing_owner: TracingOwner,
    after_run: Callable[[pytest.Item, list[Any]], None] | None = None,
    own_seconds: float = 0.0,
    credit: float = float("inf"),
    hard: float = float("inf"),
    counters: Sequence[Counter] = (),
) -> tuple[LeakResult, Runner]:
    """The repeated-run check of one test whose own run has passed (``credit``: the seconds the
    session's cost budget has left, which bound a suspect's windows, at MIN_SUSPECT_SECONDS the least;
    ``hard``: seconds no window outlasts, that least included; ``counters``: the project's)."""
    started = time.perf_counter()
    run = Runner(item, after_run, credit_until=started + credit, hard_until=started + hard, counters=tuple(counters))
    try:
        return _measure(run, item, settings, classifier, before_measuring, tracing_owner, own_seconds, started)
    except BaseException:
        run.close()
        raise


def _measure(
    run: Runner,
    item: pytest.Item,
    settings: TestSettings,
    classifier: sites.Classifier,
    before_measuring: Callable[[], None],
    tracing_owner: TracingOwner,
    own_seconds: float,
    started: float,
) -> tuple[LeakResult, Runner]:
    # the screen's, kept for a stop before its end
    counters = measuring.Counters(max(SCREEN_STRETCHES, settings.runs) + 1, run.counters, run.counter_errors)
    first = 0
    thorough = item.get_closest_marker("memleak") is not None  # screened for all its runs, pymalloc walked
    with run.measuring():
        try:
            for _ in range(settings.warmup - 1):
                run()
            warm(run)
            before_measuring()
            first = run.runs
            screened = screen(run, settings, own_seconds, thorough, counters)
            counted = [m for m in screened.suspects if m in run.counted]
            missing = counters.heap.missing  # malloc's statistics: where missing, RSS stands in for them
            if counted:
                from pytest_memleak.evidence import resources

                run.resources_before = resources.ResourceSnapshot.take()  # to name what is still alive at a stop
            measured = run.runs - first
            # (where the allocator counts by size classes, a marked test's clean screen is checked once
            # more, traced: for every test, it cut the tests that a cost budget reaches by half or more)
            classed = below_size_class(run, settings, screened.stretch) if thorough and screened.state in ("clean", "settled") else None
            if screened.state in ("clean", "settled") and classed is None:
                result = deciding.clean_screen(item.nodeid, measured, min(screened.stretch, measured), screened.state == "settled")
            elif (
                screened.suspects == ["heap"]
                and not thorough
                and run.seconds >= SLOW_RUN
                and deciding.allocator_creep(counters.values("blocks"), counters.values("heap"), _cache())
            ):
                grown = counters.values("heap")[-1] - counters.values("heap")[0]
                result = deciding.allocator_cache_or_in_place(item.nodeid, grown, measured)
            else:
                # only pymalloc's bytes grew, and steadily (not a swing): one object growing
                # below 512 bytes, which a short window's walk noise could hide
                heap, spans = deciding.steps(counters.values("heap")), deciding.steps(counters.runs_at())
                steady = all(d > settings.retained * r for d, r in list(zip(heap, spans, strict=True))[len(heap) // 2 :])
                heap_only = thorough and screened.suspects == ["heap"] and steady
                followed = [*counted, *(["rss"] if missing is not None and "rss" in screened.suspects else [])]
                unseen = missing if "heap" in screened.suspects else None
                classed = classed or ClassHistory.of_screen(counters, thorough)
                try:
                    result = judged(
                        run, settings, classifier, tracing_owner, item.nodeid, measured, screened.stretch, heap_only, thorough, followed, unseen, classed
                    )
                finally:
                    waits, run.waits = run.waits, None  # (what follows the verdict, a memray capture, has its own bound)
                waited = waits.read() if waits is not None else 0.0
                if run.credited > 0.0 or waited >= WAIT_SHARE * max(run.wait_cap, MIN_SUSPECT_SECONDS):
                    # (said also when the bound did not need to run on: a busy machine is context for the verdict)
                    about = "" if waits.exact else "about "
                    ran_on = "their time bound ran on by that" if run.credited > 0.0 else "their time bound did not need to run on"
                    result.details.append(f"a busy machine: the checks waited for a CPU {about}{max(waited, run.credited):.2f} s, and {ran_on}")
                if result.status == INCONCLUSIVE:  # stopped before a traced window could settle it
                    result = _counted_before_stop(run, settings, counters, first, result)
        except NotRepeatable as exc:
            result = deciding.inconclusive(item.nodeid, str(exc))
        except SlowingDown:
            n = deciding.SLOWING_RUNS + 1  # (each run less its wait for a CPU, as the slowdown was judged)
            result = deciding.slowed_down(item.nodeid, min(run.busy(0, n)), max(run.busy(run.runs - n, run.runs)), run.runs)
            result = _counted_before_stop(run, settings, counters, first, result)
        except OutOfTime as exc:
            result = deciding.unsettled(item.nodeid, f"the screen did not settle within its bound ({exc})", f"{run.runs} runs")
            result = _counted_before_stop(run, settings, counters, first, result)
    # (a counter that failed to read has NaN in its column: it is said, not charted)
    series = {f"screen.{m}": [float(v) for v in counters.values(m)] for m in counters.metrics() if m not in run.counter_errors}
    result.problems.extend(run.counter_errors.values())
    result.series = {**series, **{f"confirm.{k}": v for k, v in result.series.items()}}
    result.runs = run.runs + 1
    result.measured_runs = max(0, run.runs - (settings.warmup - 1))
    result.seconds = time.perf_counter() - started
    result.own_seconds = own_seconds
    result.settings = settings.as_dict()
    if not run.light:
        result.details.append("runs went through pytest's full protocol (a light run was not possible)")
    return result, run
