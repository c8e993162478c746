"""A soak's verdict: from what its loop measured (:class:`Measured`) to a :class:`SoakResult`.

:func:`judge_soak` fits RSS and the Python heap (:func:`pytest_memleak.soak.trend.fit_level`),
judges each (:func:`~pytest_memleak.soak.trend.judge`) over seconds, and over iterations too where
throughput varied (:func:`_per_iteration`), leaves the verdict open where a busy machine starved
the soak of work or the two disagree (:func:`_doubt`), and writes the reason and the details.
:func:`failure` says whether the verdict fails the test. Nothing here runs the test body or
reads the process: the loop in :mod:`pytest_memleak.soak.run` does, into a :class:`Measured`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from pytest_memleak.config.units import format_duration, format_size
from pytest_memleak.probe.contention import Contention
from pytest_memleak.results import CLEAN, INCONCLUSIVE, LEAK, NO_VERDICT, SoakResult, Status
from pytest_memleak.soak.config import SoakConfig
from pytest_memleak.soak.guard import Trip
from pytest_memleak.soak.samples import Series, chart_indices
from pytest_memleak.soak.table import rate, saw_label, state
from pytest_memleak.soak.trend import EFFECT_FLOOR, PERSIST_RATIO, Level, Trend, fit_level, judge

MAX_STRETCH = 3.0  # a busy machine's soak runs on by the time it was contended, up to this times its duration
# (beside two busy loops and a second xdist worker a soak waited 63% of its time: at 2x, 6.0 s of 8 s of work)
WORK_SHORT = 0.75  # ...and a leak found in less work than this share of its duration is inconclusive
UNSTEADY = 0.5  # throughput of a sixth of the window below this share of another's: it varied
THROUGHPUT_PARTS = 6  # (in thirds, a stop of 1.5 s in a 10 s window went unseen and a leak per iteration read ok)
RSS_RESOLUTION = 1024 * 1024  # what a soak resolves RSS to: a process settling climbs by up to this
# (pymalloc touches a 1 MiB arena a 16 KiB pool at a time, malloc grows its heap top in steps of
# 128 KiB and more, sqlite fills its page cache): a fixed service's RSS rose 30 KiB, persistently,
# in the 5.7 s window of an 8 s soak and read as reaching 500 MiB in 23 h
MIN_BLOCK_BYTES = 32  # a pymalloc block holding an object is at least this big
SECOND_LOOK_CLEAR_OF_NOISE = 3.0  # a second look at a question the first could not settle (the heap's blocks
# where its bytes rose unsurely, a series per iteration where throughput varied) asks for a rise of this many
# times the noise over the window, as a second test at the same strength doubles the false positives: an
# object() an iteration rose 75 to 378 times it beside two busy loops, while a fixed service's blocks (a
# sqlite connection opened and closed every 100 requests: 2,800 blocks in flight) wandered up 1.6 times it,
# surely at 95% in each part of the window, and failed a loaded CI run
CONFIDENCE = 0.95


@dataclass
class Measured:
    """What one soak measured. The loop fills it in as it runs; the verdict only reads it."""

    nodeid: str
    name: str  # the test's name, for messages
    scenario: str
    variant: str
    config: SoakConfig
    path: Path  # the samples file
    series: Series
    contention: Contention  # the wait for a CPU: its source, whether exact, the CPUs
    watched_pid: int | None = None  # the watched service's pid; None for this process
    watched: str = ""  # how the watched service was given
    traced: bool = False  # the heap series is tracemalloc's
    tracing_lost: bool = False  # ... and tracemalloc stopped during the soak
    heap_unit: str = "B"  # or "blocks", where no byte count can be read
    heap_name: str = "Python heap"  # where the heap series comes from
    problems: list[str] = field(default_factory=list)
    samples: int = 0
    iterations: int = 0
    first_rss: float = math.nan
    first_heap_blocks: float = math.nan
    last_rss: float = math.nan
    last_heap_blocks: int = 0
    slow_iteration: float = 0.0  # the longest iteration, seconds
    dropped_log_records: int = 0
    elapsed: float = 0.0
    waited: float = 0.0  # seconds the busy machine kept the soak waiting for a CPU
    trip: Trip | None = None  # the memory guard stopped the soak
    exited: str | None = None  # how the watched process ended, when it did

    @property
    def is_watched(self) -> bool:
        return self.watched_pid is not None


def base_result(m: Measured, status: Status, reason: str) -> SoakResult:
    """A result with what every soak has, whatever its verdict."""
    config, elapsed = m.config, m.elapsed
    return SoakResult(
        nodeid=m.nodeid,
        status=status,
        reason=reason,
        scenario=m.scenario,
        variant=m.variant,
        expect_leak=config.expect_leak,
        duration=elapsed,
        iterations=m.iterations,
        samples_path=str(m.path),
        memory_limit=config.memory_limit,
        throughput=m.iterations / elapsed if elapsed > 0 else 0.0,
        samples=m.samples,
        sample_every=config.sample_every,
        warmup_seconds=config.warmup_fraction * elapsed,
        max_growth=config.max_growth,
        horizon=config.horizon,
        duration_overridden=config.overridden,
        heap_unit=m.heap_unit,
        problems=list(m.problems),
        watched_pid=m.watched_pid,
        watched=m.watched,
        exit=m.exited,
        cpu_waited=m.waited if m.contention.source is not None else None,
    )


def no_verdict(m: Measured, outcome: str, exc: BaseException) -> SoakResult:
    """The body failed, was skipped or was interrupted: no verdict."""
    reason = f"the test body {outcome} after {m.iterations:,} iterations: no verdict"
    result = base_result(m, NO_VERDICT, reason)
    result.details = [f"{type(exc).__name__}: {exc}".strip(), f"samples: {m.path}"]
    return result


def judge_soak(m: Measured) -> SoakResult:
    """The verdict on a completed soak: RSS and the Python heap, each fitted and judged; a soak
    the memory guard or the service's exit stopped keeps its trend and leads with why."""
    config = m.config
    t, iterations, rss, heap, blocks = m.series.columns()
    by_time = _judge_memory(m, t, rss, heap, blocks)
    window_rate = _window_throughput(t, iterations, by_time.rss_level.trend)
    low, high = _throughput_range(t, iterations, by_time.rss_level.trend)
    by_work, varied = None, None
    if window_rate > 0 and low < UNSTEADY * high:  # the same growth per iteration is no line over seconds
        varied = f"throughput ranged from {low:,.1f}/s to {high:,.1f}/s over the sixths of the fitted window"
        work = [n / window_rate for n in iterations]
        by_work = _judge_memory(m, work, rss, heap, blocks, clear_of_noise=SECOND_LOOK_CLEAR_OF_NOISE)
    judged, per_iteration = _per_iteration(m, by_time, by_work, t, iterations, window_rate)
    rss_level, heap_level = judged.rss_level, judged.heap_level
    rss_trend, heap_trend = rss_level.trend, heap_level.trend
    rss_leak, rss_reason, heap_leak, heap_reason = judged.rss_leak, judged.rss_reason, judged.heap_leak, judged.heap_reason
    blocks_reason = judged.blocks_reason
    current_rss = rss[-1] if rss else math.nan
    if m.is_watched:  # a watched service's heap is not read: its RSS is the verdict
        heap_leak, heap_reason = False, "not read (the soak watches another process)"
    rss_label = f"watched RSS (pid {m.watched_pid} and children)" if m.is_watched else "RSS"
    rss_name, heap_name = (saw_label(name, level) for name, level in ((rss_label, rss_level), ("Python heap", heap_level)))
    problems = list(m.problems)
    if m.dropped_log_records:
        problems.append(
            f"{m.dropped_log_records:,} captured log records were dropped at the samples (pytest keeps "
            "them in memory for the whole call phase); the report shows those since the last sample"
        )
    if m.tracing_lost:
        problems.append("tracemalloc stopped tracing during the soak; the heap series is cut short")
    if m.slow_iteration > config.sample_every:
        problems.append(
            f"an iteration took {format_duration(m.slow_iteration)}, longer than sample_every "
            f"{format_duration(config.sample_every)}: samples are one per iteration"
        )
    if varied is not None:
        problems.append(varied)
    if config.memory_limit is not None and current_rss >= config.memory_limit:
        problems.append(f"RSS {format_size(current_rss)} is above memory_limit {format_size(config.memory_limit)}")

    leaked = [name for name, flag in (("rss", rss_leak), ("heap", heap_leak)) if flag]
    status: Status
    if not rss_trend.sufficient:
        status = INCONCLUSIVE
        reason = f"RSS: {rss_reason} (sample_every {format_duration(config.sample_every)}, {m.samples} samples)"
    elif leaked:
        status = LEAK
        parts = []
        if rss_leak:
            parts.append(f"{rss_name} {rss_reason}")
        if heap_leak:
            parts.append(f"{heap_name} {heap_reason}")
        reason = "; ".join(parts)
    else:
        status = CLEAN
        reason = f"{rss_name} {rss_reason}"
    doubt = _doubt(m, leaked, by_work, varied)
    if doubt and status != INCONCLUSIVE:
        status = INCONCLUSIVE
        reason = f"{doubt}; {reason}"

    result = base_result(m, status, reason)
    result.metric = "+".join(leaked) if leaked else "rss"
    result.leaked_metrics = leaked
    result.persistent = rss_trend.persistent
    result.plateaued = rss_trend.plateaued
    result.slope_per_hour = _finite(rss_trend.slope * 3600.0)
    result.slope_lower = _finite(rss_trend.lower * 3600.0)
    result.slope_upper = _finite(rss_trend.upper * 3600.0)
    result.slope_per_iteration = _finite(rss_trend.slope / window_rate) if window_rate > 0 else 0.0
    if config.memory_limit is not None and rss_trend.sufficient:
        result.time_to_limit = rss_level.time_to(config.memory_limit)
    tail = rss_trend.tail
    result.tail_slope_per_hour = _finite(tail.slope * 3600.0) if tail is not None else 0.0
    result.heap_slope_per_hour = _finite(heap_trend.slope * 3600.0)
    result.heap_slope_lower = _finite(heap_trend.lower * 3600.0)
    result.heap_slope_upper = _finite(heap_trend.upper * 3600.0)
    result.heap_plateaued = heap_trend.plateaued
    drawn = _drawn(rss_trend, t, judged.rss_clock)
    result.fit_intercept, result.fit_slope_per_second, result.fit_start, result.fit_end = (_finite(v) for v in drawn)
    pick = chart_indices(len(t))
    result.t = [round(t[i], 4) for i in pick]
    result.rss = [rss[i] for i in pick]
    result.heap = [] if m.is_watched else [heap[i] if math.isfinite(heap[i]) else 0.0 for i in pick]
    result.problems = problems
    result.details = _details(m, result, rss_trend, heap_trend, window_rate)
    if blocks_reason is not None:
        result.details.insert(2, f"allocated blocks: {blocks_reason}")
    if per_iteration is not None:
        result.details.insert(0, per_iteration)
    if m.trip is not None:  # a soak the guard stopped fails with the trend it measured, whatever the trend says
        stopped = (
            f"stopped by the memory guard after {result.duration:.1f} s of {config.duration:g} s "
            f"({result.iterations:,} iterations): {m.trip.message()}"
        )
        _stopped_early(result, stopped, f"memory guard: {m.trip.message()}")
    if m.exited is not None:  # a watched service that exited fails the soak, with the trend of its samples
        died = (
            f"the service exited with {m.exited} after {result.duration:.1f} s of {config.duration:g} s "
            f"({result.iterations:,} iterations)"
        )
        _stopped_early(result, died, f"exit: {died}")
    return result


def failure(m: Measured, result: SoakResult) -> str | None:
    """The failure message for a verdict that fails the test, or None."""
    expect = m.config.expect_leak
    body = "\n".join(["  " + line for line in result.details + result.problems])
    name = m.name
    if (m.exited is not None or m.trip is not None) and not (expect is True and result.status == LEAK):
        stop = "service exited" if m.exited is not None else "memory limit"
        kind = "memory leak" if result.status == LEAK else stop
        return f"{kind} in soak {name}: {result.reason}\n{body}"
    if result.status == LEAK and expect is not True:
        return f"memory leak in soak {name}: {result.reason}\n{body}"
    if expect is True and result.status == CLEAN:
        word = "plateaued" if result.plateaued else "did not grow persistently"
        return f"soak {name} expected a leak but memory {word}: {result.reason}\n{body}"
    if expect is True and result.status == INCONCLUSIVE:
        return f"soak {name} expected a leak but the soak could not tell: {result.reason}\n{body}"
    return None


# -- internals ---------------------------------------------------------------------------


def _doubt(m: Measured, leaked: list[str], by_work: _Judged | None, varied: str | None) -> str | None:
    """Why a busy machine, or a throughput that varied, leaves the verdict open, or None.

    Growth is judged against time, and a machine that starves the soak of CPU changes how
    much work a second holds: a structure that fills by iterations is still filling when a
    starved soak ends. So a leak needs the work a quiet machine would have done (the loop ran
    on for the time the CPUs were contended, up to :data:`MAX_STRETCH` times the duration).
    Where throughput varied within the window (``by_work`` is the verdict per iteration, and
    ``varied`` says how), growth per second and per iteration must agree: a leak per second
    that is none per iteration is in doubt, and so is a clean verdict where a series leaks per
    iteration (a fill the soak did too little work late to finish, or a leak). A leak confirmed
    per iteration stands though the other series grows per iteration only (its rate per second
    fell with the throughput: a registry leaking 34 KiB an iteration read "plateaued" per second
    under load).
    """
    config = m.config
    stopped = m.trip is not None or m.exited is not None  # the limit or an exit: no fill ends that way
    if leaked and not stopped and m.contention.source is not None:
        work = m.elapsed - m.waited
        if work < WORK_SHORT * config.duration:
            return (
                f"the machine was too busy to tell a fill from a leak: the soak waited for a CPU about "
                f"{m.waited:.1f} s of its {m.elapsed:.1f} s, which leaves {max(work, 0.0):.1f} s of the "
                f"{config.duration:g} s of work asked for"
            )
    if by_work is None or varied is None:
        return None
    names = ("rss",) if m.is_watched else ("rss", "heap")
    trends = {"rss": by_work.rss_level.trend, "heap": by_work.heap_level.trend}
    for name in names:
        trend = trends[name]
        if name in leaked and not (trend.sufficient and trend.lower > 0 and (trend.persistent or trend.rising)):
            return f"{varied}: {name} grows per second but not per iteration"
    # (a leak per iteration, as sure as a second look asks: beside two busy loops a bounded ring's heap, churning
    # 100 KiB an iteration, rose per iteration at 95% over a throughput that ranged 18.6 to 81.9/s, and its soak
    # read inconclusive)
    leaks = {"rss": by_work.rss_leak, "heap": by_work.heap_leak}
    for name in names:
        if leaks[name] and not leaked:
            return f"{varied}: {name} grows per iteration but not per second"
    return None


@dataclass(frozen=True)
class _Judged:
    """RSS and the Python heap, each fitted and judged on a clock: seconds, or iterations at a throughput."""

    rss_clock: list[float]  # what RSS was fitted over
    rss_level: Level
    rss_leak: bool
    rss_reason: str
    heap_level: Level
    heap_leak: bool
    heap_reason: str
    blocks_reason: str | None  # the heap's allocated blocks, where its bytes rose unsurely
    blocks_trend: Trend | None  # ...and their trend


def _judge_memory(
    m: Measured,
    clock: list[float],
    rss: list[float],
    heap: list[float],
    blocks: list[float],
    clear_of_noise: float = EFFECT_FLOOR,
) -> _Judged:
    """RSS and the heap fitted over ``clock`` (seconds of the soak, or of work) and judged."""
    config = m.config
    # a series that saws is judged, and projected, on its troughs (memory after each clean-up)
    rss_level = fit_level(
        clock, rss, warmup_fraction=config.warmup_fraction, confidence=CONFIDENCE, resolution=RSS_RESOLUTION
    )
    heap_level = fit_level(clock, heap, warmup_fraction=config.warmup_fraction, confidence=CONFIDENCE)
    heap_trend = heap_level.trend
    rss_leak, rss_reason = judge(
        rss_level.trend,
        max_growth_per_hour=config.max_growth,
        memory_limit=config.memory_limit,
        horizon_seconds=config.horizon,
        current=rss_level.now,
        clear_of_noise=clear_of_noise,
    )
    heap_budget = config.max_growth if m.heap_unit == "B" else config.max_growth / MIN_BLOCK_BYTES
    heap_leak, heap_reason = judge(
        heap_trend,
        max_growth_per_hour=heap_budget,
        memory_limit=None,
        horizon_seconds=None,
        current=heap_level.now if math.isfinite(heap_level.now) else 0.0,
        unit=m.heap_unit,
        clear_of_noise=clear_of_noise,
    )
    blocks_reason, blocks_trend = None, None
    if m.heap_unit == "B" and not heap_leak and not m.is_watched and heap_trend.slope * 3600.0 > heap_budget:
        # the heap's bytes rise, but too unevenly to show it surely (a few bytes an iteration, beside
        # pymalloc's pools and arenas coming and going): its allocated blocks are an exact count, in
        # which a leak of small objects persists plainly (an object() an iteration, under load)
        blocks_level = fit_level(clock, blocks, warmup_fraction=config.warmup_fraction, confidence=CONFIDENCE)
        blocks_leak, blocks_reason = judge(
            blocks_level.trend,
            max_growth_per_hour=heap_budget / MIN_BLOCK_BYTES,
            memory_limit=None,
            horizon_seconds=None,
            current=blocks_level.now,
            unit="blocks",
            clear_of_noise=SECOND_LOOK_CLEAR_OF_NOISE,
        )
        blocks_trend = blocks_level.trend
        if blocks_leak:
            heap_leak, heap_reason = True, f"grows {rate(heap_trend.slope * 3600.0, 'B')}; allocated blocks: {blocks_reason}"
    return _Judged(clock, rss_level, rss_leak, rss_reason, heap_level, heap_leak, heap_reason, blocks_reason, blocks_trend)


def _per_iteration(
    m: Measured, by_time: _Judged, by_work: _Judged | None, t: list[float], iterations: list[float], window_rate: float
) -> tuple[_Judged, str | None]:
    """The verdicts to give, and a line saying why where some are judged per iteration.

    A leak that is steady per iteration bends over seconds where throughput varies: a dip
    mid-window leaves a curve whose residuals' autocorrelation widens the trend's interval to
    zero (a sqlite connection an iteration under load: 46 MiB in 18 s read "no persistent
    growth", "never" reaching its limit). Where throughput varied (``by_work`` is the verdict per
    iteration, asking a rise of :data:`SECOND_LOOK_CLEAR_OF_NOISE` times the noise), a series that
    did not leak per second, and did not slow in the last third per second more than the work
    done there did (:func:`_slowed`; a plateau is left to :func:`_doubt`), leaks when it leaks
    per iteration."""
    if by_work is None:
        return by_time, None
    judged, names = by_time, []
    rss_slowed = _slowed(by_time.rss_level.trend, t, iterations)
    heap_slowed = _slowed(by_time.heap_level.trend, t, iterations) and (
        by_time.blocks_trend is None or _slowed(by_time.blocks_trend, t, iterations)
    )
    if by_work.rss_leak and not by_time.rss_leak and not rss_slowed:
        judged = replace(
            judged, rss_clock=by_work.rss_clock, rss_level=by_work.rss_level, rss_leak=True,
            rss_reason=f"{by_work.rss_reason} (judged per iteration)",
        )
        names.append("RSS")
    if by_work.heap_leak and not by_time.heap_leak and not heap_slowed and not m.is_watched:
        judged = replace(
            judged, heap_level=by_work.heap_level, heap_leak=True,
            heap_reason=f"{by_work.heap_reason} (judged per iteration)", blocks_reason=by_work.blocks_reason,
        )
        names.append("the Python heap")
    if not names:
        return by_time, None
    return judged, (
        f"judged per iteration: {' and '.join(names)}, as throughput varied within the window; rates are per "
        f"hour at the window's {window_rate:,.1f} iterations/s"
    )


def _slowed(trend: Trend, t: list[float], iterations: list[float]) -> bool:
    """Whether a trend over seconds plateaued more than the work done late in its window explains.

    A leak per iteration rises per second in the window's last third by the share of the
    window's throughput done there, times its rate over the window: a soak on a machine
    that grew busier read "plateaued" per second (its exact block count rose 24 blocks/s there
    against 51 over the window, at 26 iterations/s against 44) while it kept one ``object()`` an
    iteration. A plateau explained by the work is none: the last third still rises (its lower
    bound above zero), at least :data:`PERSIST_RATIO` times the window's rate scaled by that
    share. A fill that ended (by time, say, as the throughput fell) does not rise there.
    """
    tail = trend.tail
    if not trend.plateaued:
        return False
    window = _window_throughput(t, iterations, trend)
    if tail is None or tail.lower <= 0 or window <= 0:
        return True
    late_share = _throughput(t, iterations, tail.start, tail.end) / window
    return tail.slope < PERSIST_RATIO * late_share * trend.slope


def _drawn(trend: Trend, t: list[float], clock: list[float]) -> tuple[float, float, float, float]:
    """The fitted line as the report draws it over seconds: intercept, slope per second, start and
    end. A trend fitted per iteration is drawn from its value where its window starts to its value
    at the end."""
    if clock is t:  # (fitted over seconds: drawn as it is)
        return trend.intercept, trend.slope, trend.window_start, trend.window_end
    start = next((a for a, c in zip(t, clock, strict=True) if c >= trend.window_start), None)
    if start is None or t[-1] <= start:
        return trend.intercept, trend.slope, trend.window_start, trend.window_end
    end = t[-1]
    slope = (trend.at(trend.window_end) - trend.at(trend.window_start)) / (end - start)
    return trend.at(trend.window_start) - slope * start, slope, start, end


def _details(m: Measured, result: SoakResult, rss_trend: Trend, heap_trend: Trend, window_rate: float) -> list[str]:
    config = m.config
    pct = f"{CONFIDENCE:.0%}"
    lines = []
    per_iteration = format_size(result.slope_per_iteration, signed=True)
    lines.append(
        f"{'watched RSS' if m.is_watched else 'RSS'}: {rate(rss_trend.slope * 3600, 'B', True)} ({pct} CI {rate(rss_trend.lower * 3600, 'B')} .. "
        f"{rate(rss_trend.upper * 3600, 'B')}), {per_iteration} per iteration; {state(rss_trend, 'B')}"
    )
    heap_per_iteration = heap_trend.slope / window_rate if window_rate > 0 and math.isfinite(heap_trend.slope) else 0.0
    heap_step = (
        format_size(heap_per_iteration, signed=True) if m.heap_unit == "B" else f"{heap_per_iteration:+,.2f} {m.heap_unit}"
    )
    lines.append(
        f"{m.heap_name}: not read (the soak watches another process)"
        if m.is_watched
        else f"{m.heap_name}: {rate(heap_trend.slope * 3600, m.heap_unit, True)} ({pct} CI "
        f"{rate(heap_trend.lower * 3600, m.heap_unit)} .. {rate(heap_trend.upper * 3600, m.heap_unit)}), "
        f"{heap_step} per iteration; {state(heap_trend, m.heap_unit)}"
    )
    if config.memory_limit is None:
        lines.append("memory_limit: none")
    elif not rss_trend.sufficient:
        lines.append(f"memory_limit {format_size(config.memory_limit)}: no projection (too few samples)")
    elif result.time_to_limit is None:
        lines.append(f"memory_limit {format_size(config.memory_limit)}: not reached at this rate (no persistent growth)")
    else:
        horizon = f" (horizon {format_duration(config.horizon)})" if config.horizon is not None else ""
        lines.append(
            f"memory_limit {format_size(config.memory_limit)}: reaches it in "
            f"{format_duration(result.time_to_limit)} at this rate{horizon}"
        )
    overridden = " (duration from --memleak-soak-duration)" if config.overridden else ""
    lines.append(
        f"{result.iterations:,} iterations in {result.duration:.1f} s ({result.throughput:,.1f}/s), "
        f"{result.samples} samples every {format_duration(config.sample_every)}; the first "
        f"{format_duration(result.warmup_seconds)} left out as warm-up{overridden}"
    )
    if result.rss and math.isfinite(m.first_rss) and math.isfinite(m.last_rss):
        heap = "" if m.is_watched else f"; Python heap {m.first_heap_blocks:,} -> {m.last_heap_blocks:,} blocks"
        lines.append(
            f"RSS {format_size(m.first_rss)} -> {format_size(m.last_rss)} "
            f"({format_size(m.last_rss - m.first_rss, signed=True)}){heap}"
        )
    if m.is_watched:
        lines.append(f"watched: {result.watched}; its heap is not read, its RSS is the verdict")
    if result.cpu_waited is not None and result.cpu_waited > 0.05 * result.duration:
        exact = m.contention.exact
        how = "the kernel's count" if exact else f"tasks runnable beyond the {m.contention.cpus} CPUs"
        lines.append(
            f"a busy machine: the soak waited for a CPU {'' if exact else 'about '}{result.cpu_waited:.1f} s of its "
            f"{result.duration:.1f} s ({how}, {m.contention.source}); it ran on by that time, up to {MAX_STRETCH:g}x its duration"
        )
    lines.append(f"samples: {m.path}")
    return lines


def _stopped_early(result: SoakResult, why: str, detail: str) -> None:
    """A soak that ended before its duration (the guard, the service's exit) keeps the trend it
    measured, leads its reason with why, and is inconclusive unless that trend is a leak."""
    if result.status != LEAK:
        result.status = INCONCLUSIVE  # too close to the limit, or no service left, to go on
    result.reason = f"{why}; {result.reason}"
    result.details.insert(0, detail)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _window_throughput(t: list[float], iterations: list[float], trend: Trend) -> float:
    """Iterations per second over the fitted window."""
    return _throughput(t, iterations, trend.window_start, math.inf)


def _throughput_range(t: list[float], iterations: list[float], trend: Trend) -> tuple[float, float]:
    """The lowest and the highest throughput (iterations per second) of the parts of the fitted window."""
    start, end = trend.window_start, max(t, default=0.0)
    span = (end - start) / THROUGHPUT_PARTS
    if span <= 0:
        return 0.0, 0.0
    parts = [_throughput(t, iterations, start + k * span, start + (k + 1) * span) for k in range(THROUGHPUT_PARTS)]
    return min(parts), max(parts)


def _throughput(t: list[float], iterations: list[float], a: float, b: float) -> float:
    """Iterations per second between the samples at ``a`` and ``b`` seconds."""
    pairs = [(x, n) for x, n in zip(t, iterations, strict=True) if a <= x <= b]
    if len(pairs) < 2 or pairs[-1][0] <= pairs[0][0]:
        return 0.0
    return (pairs[-1][1] - pairs[0][1]) / (pairs[-1][0] - pairs[0][0])
