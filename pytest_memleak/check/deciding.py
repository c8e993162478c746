"""Where a verdict is made: pure functions over measured series (no pytest, no I/O).

Every status a checked test can end in (clean, leak, inconclusive, no verdict) is set here,
and nowhere else; the modules that measure only gather the series these functions judge.
The evidence grows in cost, and each stage is entered only when the cheaper one before it
saw growth that persists:

1. **Screen** (exact untraced counters after each run): clean once no counter has grown for
   ``quiet`` runs in a row; *suspect* when growth keeps coming back (a leak that grows only
   every few runs included).
2. **Persistence windows** (the same counters, a checkpoint every few runs, the runs per
   step doubling): a fill that stops is clean, and only growth that persists in the latest
   half of a window goes on.
3. **Attribution** (tracemalloc, a checkpoint every few runs): the sites in user code whose
   retained bytes rise in every step, judged against the budgets.
4. **Long windows** (untraced): a bounded cache fills for hundreds of runs; a leak is called
   only when growth still persists after ``MIN_LEAK_RUNS`` runs.

Time is bounded at every stage; a suspect that cannot be settled within its bound ends
*inconclusive*, with what was seen.
"""

from __future__ import annotations

import fnmatch
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pytest_memleak.config.units import format_size
from pytest_memleak.results import CLEAN, INCONCLUSIVE, LEAK, NO_VERDICT, Finding, LeakResult

if TYPE_CHECKING:
    from pytest_memleak.check.counters import Counter

SMALL_BLOCK = 512  # pymalloc serves requests up to this size; larger ones go to malloc
SIZE_CLASS = 16  # pymalloc's size classes are this far apart
WALK_NOISE = 512  # bytes pymalloc's total swings by between two checkpoints (free lists, buffers)
RSS_NOISE = 64 * 1024  # RSS moves in pages: a single run's step below this is page noise
STOPPED_FRACTION = 0.1  # growth under this share of the earlier rate means a fill has stopped
MIN_LEAK_RUNS = 600  # bounded caches of 128-256 entries (typing's, functools') grow for up to twice that: a leak outlasts them
# bytes glibc's per-thread cache (tcache: up to 7 freed chunks of each of 64 sizes up to about
# 1 KiB) can hold; mallinfo counts them as in use, so the allocator's bytes creep while it fills
ALLOCATOR_CACHE = 256 * 1024
# jemalloc counts an object by its size class, four to each power of two: one object growing in
# place reads as a jump of a class every few runs (a string growing 1 KiB a run at 20 KiB, +4 KiB
# every fourth run; past 32 KiB, +8 KiB every eighth). Its bytes flat for fewer than this many
# times the runs the largest jump took, at the rate they grew before, are no stop.
CLASS_WAIT = 3
SLOWING_RUNS = 4  # consecutive runs, each slower than the one before, that mean a test slows down
SLOWING_STEP = 1.3
SLOWING_TOTAL = 4.0
# seconds: a slowdown smaller than this costs nothing worth stopping for (the time bounds cap
# it), and a loaded machine makes one of a few milliseconds out of a thread's hand-off alone
SLOWING_FLOOR = 0.02

EXACT = ("blocks", "fds", "threads")  # counts without noise: one that falls gave something back

ScreenState = Literal["clean", "open", "suspect", "settled"]  # settled: clean at the cap, growth did not persist


def screen_state(
    series: Mapping[str, Sequence[float]],
    allowed: Mapping[str, float],
    quiet: int,
    cap: int,
    at: Sequence[int] | None = None,
    exact: Collection[str] = EXACT,
) -> ScreenState:
    """The screen after each row of measurements (values after each row, the baseline first;
    ``at``: the runs made by each row, one per row by default; allowances are per run).

    *Clean* once no counter has grown beyond its allowance in the latest rows that hold
    ``quiet`` runs: a leak that grows at least every ``quiet`` runs cannot pass. A row in
    which an exact count fell counts for none of them (what it gave back could hide growth,
    as a test's first repeated run often frees what its own run left; ``exact``: such
    counts, a project's counters among them). At ``cap``
    runs, *suspect* when a counter grew overall and either in two rows or in a row after the
    first (a first row that grows once is a warm-up), its latest half grew too, and less than
    half of what grew was given back (noise swings both ways); otherwise clean.
    """
    n = min(len(v) for v in series.values()) - 1
    if n < 1:
        return "open"
    at = _runs_at(at, n)
    quiet, covered, i = max(1, quiet), 0, n
    while i >= 1 and covered < quiet:
        span = at[i] - at[i - 1]
        if any(values[i] - values[i - 1] > allowed.get(m, 0.0) * span for m, values in series.items()):
            break
        if not any(m in exact and values[i] < values[i - 1] for m, values in series.items()):
            covered += span  # (what an exact count gave back could hide growth: such a row clears nothing)
        i -= 1
    if covered >= quiet:
        return "clean"
    if at[n] < cap:
        return "open"
    return "suspect" if suspect_metrics(series, allowed, at) else "settled"


def _runs_at(at: Sequence[int] | None, n: int) -> Sequence[int]:
    return range(n + 1) if at is None else at


def suspect_metrics(series: Mapping[str, Sequence[float]], allowed: Mapping[str, float], at: Sequence[int] | None = None) -> list[str]:
    """The counters whose growth persists: grown overall and either in two rows or in a row
    after the first (a first row that grows once is a warm-up), grown in the latest half
    too, with under half of what grew given back (noise swings both ways). ``at``: the runs
    made by each row (one per row by default); allowances are per run."""
    out = []
    for m, values in series.items():
        runs = _runs_at(at, len(values) - 1)
        warm = len(values) > 2  # the first row is a warm-up: what it gave back hides nothing
        if warm:
            values, runs = values[1:], runs[1:]
        n = len(values) - 1
        allow = allowed.get(m, 0.0)
        deltas = steps(values)
        allows = [allow * step for step in steps(runs)]
        grew = [i for i, (d, a) in enumerate(zip(deltas, allows, strict=True), 1) if d > a]
        if not (n >= 1 and values[n] - values[0] > sum(allows) and (len(grew) >= 2 or (grew and (warm or grew[-1] > 1)))):
            continue
        latest = deltas[n // 2 :]
        given_back = -sum(d for d in deltas if d < 0)
        if sum(latest) > sum(allows[n // 2 :]) and given_back * 2 < sum(d for d in deltas if d > 0):
            out.append(m)
    return out


def within_size_class(
    history: Sequence[tuple[float, float]], allowed_per_run: float = 0.0, noise: float = 0.0, rate: float | None = None
) -> bool:
    """Whether the C allocator's bytes, flat since they last rose, may still be one object growing
    toward its next size class, where the allocator counts by classes far apart (jemalloc):
    fewer runs have passed since that rise than ``CLASS_WAIT`` times the runs the largest rise
    took at the rate of growth up to it (``rate``, when a traced window measured it).
    ``history``: (runs, growth) of each step, oldest first; a rise is growth beyond the
    allowance and beyond ``noise`` (what a walk of pymalloc's arenas swings by, when walked)."""
    rises = [i for i, (runs, grown) in enumerate(history) if grown > max(allowed_per_run * runs, noise)]
    if not rises:
        return False
    last = rises[-1]
    flat = sum(runs for runs, _ in history[last + 1 :])
    before = history[: last + 1]
    rate = rate if rate is not None else sum(g for _, g in before) / max(1.0, sum(r for r, _ in before))
    return flat > 0 and rate > 0 and flat < CLASS_WAIT * max(g for _, g in before) / rate


def heap_settled(runs_per_step: int) -> bool:
    """Whether a window's steps are long enough for pymalloc's bytes to tell the smallest
    persistent growth (one size class, 16 bytes a run) from what a walk swings by."""
    return runs_per_step * SIZE_CLASS >= WALK_NOISE


def still_grows(values: Sequence[float], runs_per_step: int, allowed_per_run: float = 0.0, earlier_rate: float | None = None) -> bool:
    """Whether growth persists in the latest half of a window of checkpoints.

    A fill has stopped when the latest half grows by no more than the allowance, or (given
    the rate seen earlier) by under a tenth of it: one flat step is not enough to clear.
    """
    rate = latest_rate(values, runs_per_step)
    floor = allowed_per_run
    if earlier_rate is not None and earlier_rate > 0:
        floor = max(floor, STOPPED_FRACTION * earlier_rate)
    return rate > floor


def gave_back(ds: Sequence[float]) -> bool:
    """Whether a window's steps gave back half or more of what they grew: a fill that is
    cleared now and then (a sawtooth), not a leak. Python 3.11's sqlite3 keeps a weak reference
    to each cursor and drops the dead ones every 200 cursors: +88 B/run, steady for 199 runs."""
    back = -sum(d for d in ds if d < 0)
    return back > 0 and 2 * back >= sum(d for d in ds if d > 0)


def slowed(first: Sequence[float], latest: Sequence[float]) -> bool:
    """A test whose runs have become several times slower than its first repeated runs (a
    slowdown that creeps, run by run, as state accumulates)."""
    if len(first) < SLOWING_RUNS + 1 or len(latest) < SLOWING_RUNS + 1:
        return False
    before, now = sorted(first)[len(first) // 2], sorted(latest)[len(latest) // 2]
    return now >= SLOWING_TOTAL * before and now - before >= SLOWING_FLOOR


def slowing(durations: Sequence[float]) -> bool:
    """A test whose every run takes longer than the one before: it accumulates state per run."""
    if len(durations) < SLOWING_RUNS + 1:
        return False
    tail = durations[-(SLOWING_RUNS + 1) :]
    rising = all(b >= SLOWING_STEP * a for a, b in zip(tail[:-1], tail[1:], strict=True))
    least = min(durations)
    return rising and durations[-1] >= SLOWING_TOTAL * max(least, 1e-9) and durations[-1] - least >= SLOWING_FLOOR


def steps(values: Sequence[float]) -> list[float]:
    """How much each value moved from the one before it (every series is judged in these)."""
    return [values[i] - values[i - 1] for i in range(1, len(values))]


def persists(values: Sequence[float], noise: float = 0.0) -> bool:
    """True when every step of a checkpoint series rises by more than ``noise``."""
    ds = steps(values)
    return len(ds) >= 2 and all(d > noise for d in ds)


def latest_rate(values: Sequence[float], runs_per_step: int) -> float:
    """Growth per run over the latest half of the steps (at least one step)."""
    ds = steps(values)
    if not ds:
        return 0.0
    latest = ds[len(ds) // 2 :]
    return sum(latest) / (len(latest) * max(1, runs_per_step))


def steady_rate(values: Sequence[float], runs_per_step: int) -> float:
    """Growth per run that one jump does not inflate: the latest half's rate, or the median
    step's when that is lower. A container that keeps what leaks grows its buffer in jumps
    (a list's by an eighth of its length): a jump in a short window's latest half read as
    1.2 KiB/run for a 24 B/run leak, which then looked stopped at its true rate."""
    ds = steps(values)
    if not ds:
        return 0.0
    return min(latest_rate(values, runs_per_step), statistics.median(ds) / max(1, runs_per_step))


@dataclass(frozen=True)
class HeapVerdict:
    leaking: bool
    retained_per_run: float  # bytes per run retained by sites whose growth persists
    persistent_sites: dict[str, float] = field(default_factory=dict)  # site -> bytes per run
    over_site_budget: dict[str, float] = field(default_factory=dict)


def decide_heap(
    site_bytes: Mapping[str, Sequence[float]],
    runs_per_step: int,
    retained_budget: float,
    per_site_budget: float | None = None,
    noise: float = 0.0,
    site_counts: Mapping[str, Sequence[float]] | None = None,
    real_blocks: Sequence[float] | None = None,
) -> HeapVerdict:
    """Heap verdict from traced bytes (and block counts) per site at each checkpoint.

    A site retains when its bytes rise in every step. Tracing starts while the test's objects
    are alive, and objects recycled through CPython's free lists never reach the allocator, so
    a steady population becomes *traced* one allocation at a time: the traced count rises while
    memory is flat. A site whose traced count rises therefore counts only when the
    allocator's real block count (``real_blocks``) rises in every step too; a site whose bytes
    rise at a steady count (a string or buffer that keeps growing) needs no such proof.
    What the retaining sites keep per run (over the latest half, without a jump:
    :func:`steady_rate`) is judged against the budget.
    """
    real = real_blocks is None or persists(real_blocks)
    persistent: dict[str, float] = {}
    for site, values in site_bytes.items():
        if not persists(values, noise):
            continue
        counts = site_counts.get(site) if site_counts is not None else None
        if counts is not None and counts[-1] > counts[0] and not real:
            # The free-list artifact concerns small objects only; big buffers (numpy arrays,
            # anything malloc'd past pymalloc's 512-byte limit) never raise the block count.
            grown_bytes, grown_blocks = values[-1] - values[0], counts[-1] - counts[0]
            if grown_bytes <= SMALL_BLOCK * grown_blocks:
                continue
        rate = steady_rate(values, runs_per_step)
        if rate > 0:
            persistent[site] = rate
    retained = sum(persistent.values())
    over = {} if per_site_budget is None else {s: r for s, r in persistent.items() if r > per_site_budget}
    leaking = bool(persistent) and (retained > retained_budget or bool(over))
    return HeapVerdict(leaking, retained, persistent, over)


def decide_count(values: Sequence[float], runs: int, allowed_per_run: float) -> tuple[bool, float]:
    """Resource counters (descriptors, threads, processes, tasks): leaking on net growth above the allowance."""
    if len(values) < 2:
        return False, 0.0
    grown = values[-1] - values[0]
    per_run = grown / max(1, runs)
    return grown > allowed_per_run * max(1, runs), per_run


def decide_native(
    total_values: Sequence[float], heap_values: Sequence[float], runs_per_step: int, budget: float | None, noise_per_step: float = 0.0
) -> tuple[bool, float]:
    """Native memory: growth of a total (RSS, or the allocators' own statistics) not explained by
    the traced Python heap. It must rise in every step by more than the noise, and its latest
    rate must exceed the budget. Page noise is a per-step floor, so a small native leak shows
    once a step holds enough runs."""
    if budget is None or len(total_values) != len(heap_values) or len(total_values) < 3:
        return False, 0.0
    native = [r - h for r, h in zip(total_values, heap_values, strict=True)]
    if not persists(native, noise=noise_per_step):
        return False, 0.0
    rate = latest_rate(native, runs_per_step)
    return rate > budget, rate


def grown_types(type_series: Mapping[str, Sequence[float]], runs: int, least: float) -> dict[str, float]:
    """Object types whose instance count rose from a window's first census to its last by
    ``least`` at the least (one per step), with instances per run, most first."""
    out = {name: (v[-1] - v[0]) / max(1, runs) for name, v in type_series.items() if len(v) >= 2 and v[-1] - v[0] >= least}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# -- statuses: every one a checked test can end in is set by these functions --------------


def no_verdict(nodeid: str, why: str) -> LeakResult:
    """The test's own outcome stands (it did not pass, or the session is stopping)."""
    return LeakResult(nodeid, NO_VERDICT, why)


def inconclusive(nodeid: str, why: str, details: Sequence[str] = ()) -> LeakResult:
    """Measured, but not settled: the reason says what was seen and why it stopped."""
    return LeakResult(nodeid, INCONCLUSIVE, why, details=list(details))


def clean_screen(nodeid: str, measured: int, quiet: int, settled: bool = False) -> LeakResult:
    if settled:
        return LeakResult(nodeid, CLEAN, f"growth came and went over {measured} measured runs without persisting")
    return LeakResult(nodeid, CLEAN, f"no growth in the last {quiet} of {measured} measured run(s)")


def _stopped(runs: int, what: str, deltas: Sequence[float], per_step: int) -> str:
    seen = f"({what} every {per_step} runs: {[int(d) for d in deltas]})"
    if gave_back(deltas):
        return f"growth was given back after {runs} runs: a fill that is cleared now and then, not a leak {seen}"
    return f"growth stopped after {runs} runs: a fill that plateaus, not a leak {seen}"


def stopped_growing(nodeid: str, runs: int, what: str, deltas: Sequence[float], per_step: int) -> LeakResult:
    """Growth the screen saw stopped within a persistence window: a fill, not a leak."""
    return LeakResult(nodeid, CLEAN, _stopped(runs, what, deltas, per_step))


def stopped_unseen(nodeid: str, runs: int, what: str, deltas: Sequence[float], per_step: int, missing: str) -> LeakResult:
    """Growth of pymalloc's bytes that the screen saw, then no growth: with malloc's statistics
    missing, an object that grew past pymalloc's 512 bytes went where nothing measures it."""
    return LeakResult(
        nodeid,
        INCONCLUSIVE,
        f"{missing}: pymalloc's bytes grew, then stopped after {runs} runs ({what} every {per_step} runs: "
        f"{[int(d) for d in deltas]}), but an object that grows past {SMALL_BLOCK} bytes moves to malloc, whose bytes "
        "are not measured: a fill that stopped cannot be told from a buffer still growing",
    )


def unsettled(nodeid: str, why: str, seen: str) -> LeakResult:
    """A suspect whose time bound ran out before its growth stopped or outlasted a bounded cache."""
    return LeakResult(nodeid, INCONCLUSIVE, f"{why}; seen: {seen}")


def not_reached(nodeid: str, budget: str, credit: float, needed: float | None = None, drawn: float | None = None) -> LeakResult:
    """A test the session's cost budget did not reach: unchecked, its own outcome stands
    (``needed``: what its check would have needed; None, when the credit was spent before it ran;
    ``drawn``: its place in the day's draw, which raised what it needs)."""
    why = f"had {max(credit, 0.0):.3f} s left, and its check needs {needed:.3f} s" if needed is not None else "was spent when it began"
    if drawn is not None:
        why += f" (drawn {drawn:.2f} of 1 today: a session without the rotation's history in pytest's cache gives the credit to the tests drawn first)"
    return LeakResult(nodeid, NO_VERDICT, f"not checked: {budget} {why}", over_budget=True)


def rested(nodeid: str, ago: int, rest: int) -> LeakResult:
    """A test checked clean ``ago`` sessions before this one, left to rest (``memleak_rotate``)."""
    return LeakResult(
        nodeid,
        NO_VERDICT,
        f"not checked: rested, checked clean {ago} session(s) ago; under the cost budget a clean test rests for {rest} "
        "sessions, so that the credit reaches the others (memleak_rotate false, or --memleak-budget=none, checks it)",
        over_budget=True,
    )


def allocator_creep(blocks: Sequence[float], heap: Sequence[float], cache: float = ALLOCATOR_CACHE) -> bool:
    """The screen's growth could be the C allocator's caches filling: no Python block more
    after the warm-up run, and the allocator's bytes grew by less than its caches hold and it
    counts (``cache``: 0 where its count leaves them out, as jemalloc's does here)."""
    if len(blocks) < 3 or len(heap) < 3:
        return False
    return blocks[-1] - blocks[1] <= 0 and 0 < heap[-1] - heap[0] < cache


def allocator_cache_or_in_place(nodeid: str, grown: float, runs: int) -> LeakResult:
    """A slow test whose only growth could be the allocator's caches filling: telling that from
    a buffer growing in place or native memory would take more of its runs than it may cost."""
    return LeakResult(
        nodeid,
        INCONCLUSIVE,
        f"the C allocator's bytes grew {format_size(grown)} over {runs} runs with no new Python block: glibc's "
        f"per-thread caches hold up to {format_size(ALLOCATOR_CACHE)} that way, and telling them from a buffer "
        "growing in place or native memory takes more runs than a slow test is given (mark it memleak for that)",
    )


def slowed_down(nodeid: str, first: float, last: float, runs: int) -> LeakResult:
    """A test whose runs kept getting slower: repeating it further would cost without bound."""
    return LeakResult(
        nodeid,
        INCONCLUSIVE,
        f"the runs got slower, from {first * 1e3:.1f} ms to {last * 1e3:.1f} ms a run over {runs} runs: the test "
        "accumulates state on every run (repeating it does what one run never does), so repeating it was stopped",
    )


def cleared_by_long_window(result: LeakResult, runs: int, what: str, deltas: Sequence[float], per_step: int) -> None:
    """A confirmed heap leak whose growth then stopped: a bounded cache that filled slowly.

    When what stopped is the allocators' total (``what`` is heap bytes), native memory they
    count stopped with it: a per-thread allocator cache that filled, not a leak; when it is RSS
    (standing in for malloc's statistics where they are missing), all native memory did.
    Findings of other kinds (descriptors, threads, native memory seen by RSS alone) still stand.
    """

    def stopped(f: Finding) -> bool:
        return f.kind in ("heap", "site") or (f.kind == "native" and (what == "RSS" or (what == "heap bytes" and f.in_allocators)))

    findings = [f for f in result.findings if not stopped(f)]
    result.findings = findings
    if findings:
        result.status, result.reason = LEAK, findings[0].message
        return
    result.status, result.reason = CLEAN, _stopped(runs, what, deltas, per_step)


def allocator_native_only(result: LeakResult) -> Finding | None:
    """The native finding the C allocator's statistics count, when nothing of the Python heap grew
    with it (such growth could be the allocator's own caches filling)."""
    if any(f.kind in ("heap", "site") for f in result.findings):
        return None
    return next((f for f in result.findings if f.kind == "native" and f.in_allocators), None)


def not_outlasted(result: LeakResult, runs: int, budgeted: bool = False, threads: int = 1, cache: float = ALLOCATOR_CACHE) -> None:
    """A leak confirmed at its sites whose time bound (confirm_seconds, or what the session's cost
    budget had left: ``budgeted``) ran out before ``MIN_LEAK_RUNS``: the verdict stands on the
    evidence it has, and says what it could not rule out. Unless all it has is the allocator's
    bytes, grown by less than the per-thread caches of the ``threads`` alive hold: that is no
    evidence of a leak (each thread that runs the test's code fills a cache of its own), so
    inconclusive (``cache``: what one thread's holds that the allocator's bytes count; 0 where
    they leave the caches out, as jemalloc's do here)."""
    limit, raise_it = ("the cost budget's credit", "memleak_budget") if budgeted else ("confirm_seconds", "confirm_seconds")
    native = allocator_native_only(result)
    grown = native.per_run * runs if native is not None else 0.0
    alive = max(1, threads)
    if native is not None and grown < cache * alive:
        result.details.append(f"measured: {result.reason}")
        result.status, result.findings = INCONCLUSIVE, []
        result.reason = (
            f"the C allocator's bytes grew about {format_size(grown)} over {runs} runs with no Python growth: glibc's "
            f"per-thread caches hold up to {format_size(ALLOCATOR_CACHE)} per thread that way ({alive} alive), and "
            f"{limit} ran out before the growth outgrew them (raise {raise_it}, or mark the test memleak, to settle it)"
        )
        return
    result.details.append(
        f"confirmation: growth persisted over all {runs} runs made; {limit} ran out before {MIN_LEAK_RUNS} runs, "
        f"so a bounded cache of more entries than that is not ruled out (raise {raise_it} to settle it)"
    )


def not_followed(result: LeakResult, why: str) -> None:
    """A leak confirmed at its sites whose growth no untraced counter can follow (``why``): the
    verdict stands on the evidence it has, and says that a bounded cache is not ruled out."""
    result.details.append(
        f"confirmation: not followed past the traced window ({why}), so a bounded cache that fills for more runs "
        "is not ruled out"
    )


def patches_every_run(result: LeakResult, rebound: Sequence[str]) -> LeakResult:
    """Growth that comes from the test rebinding module state to a wrapper of itself on every
    run: repeating such a test stacks its patches, which a single run never does. Not
    repeatable, so not judged; the growth it caused is kept in the details."""
    names = ", ".join(rebound[:3]) + (f" and {len(rebound) - 3} more" if len(rebound) > 3 else "")
    result.details.append(f"measured: {result.reason}")
    result.findings = []
    result.status = INCONCLUSIVE
    result.reason = (
        f"the test rebinds {names} to a wrapper of its previous value on every run: repeated runs stack its patches "
        "(test hygiene of the re-run, not a leak of the code under test)"
    )
    return result


def distrust(result: LeakResult, reasons: Sequence[str]) -> None:
    """A measurement made while the test changed what measuring relies on is not a clean bill."""
    if not reasons:
        return
    why = "; ".join(reasons)
    if result.status == CLEAN:
        result.details.append(f"measured: {result.reason}")
        result.status, result.reason = INCONCLUSIVE, f"{why}: the measurement cannot be trusted"
    else:
        result.problems.append(why)


def over_peak(result: LeakResult, peak: float | None, budget: float | None, sites: Sequence[str]) -> None:
    """The peak of the test's own call against its budget: over it, ``peak_over`` says so (the test
    fails, whatever its leak verdict)."""
    result.peak, result.peak_budget, result.peak_sites = peak, budget, list(sites)
    if peak is not None and budget is not None and peak > budget:
        where = f"; at the peak: {sites[0]}" if sites else ""
        result.peak_over = f"peak memory {format_size(peak)} during the test's call exceeds its budget {format_size(budget)} (memleak_peak){where}"


BASELINE_TOLERANCE = 0.5  # a known leak's rate may exceed its recorded rate by this share (rates vary between runs)
BASELINE_SLACK = {"B": 64.0, "": 0.5}  # ... and by this much (bytes, counts): a rate near zero varies by whole blocks


def against_baseline(result: LeakResult, known: Mapping[str, float] | None) -> None:
    """A leak the baseline lists stays a leak; it is *known* (its test passes) when each of its
    findings is of a kind the baseline lists, at a rate within the tolerance. Either way a
    detail line says how it compares."""
    if not result.leaked or known is None:
        return
    beyond = []
    for finding in result.findings:
        recorded = known.get(finding.kind)
        if recorded is None:
            beyond.append(f"{finding.kind} (not in the baseline)")
            continue
        allowed = recorded * (1 + BASELINE_TOLERANCE) + BASELINE_SLACK.get(finding.unit, BASELINE_SLACK[""])
        if finding.per_run > allowed:
            beyond.append(f"{finding.kind} {finding.per_run:.1f}{finding.unit}/run, recorded {recorded:.1f}{finding.unit}/run")
    recorded_text = ", ".join(f"{kind} {rate:.1f}/run" for kind, rate in sorted(known.items()))
    if beyond:
        result.details.append(f"baseline: this leak is new or grew beyond the baseline ({'; '.join(beyond)}; tolerance +{BASELINE_TOLERANCE:.0%})")
    else:
        result.known = True
        result.details.append(f"baseline: a known leak, within its recorded rates ({recorded_text}; tolerance +{BASELINE_TOLERANCE:.0%})")


def ignore_group(result: LeakResult, patterns: Sequence[str], prefix: str) -> None:
    """A leak whose group a memleak_ignore pattern names (``<prefix><glob>``) is not counted: the
    test is clean, its findings become detail lines, and its retained rate is said as ignored."""
    if not result.leaked or not result.group:
        return
    pattern = next((p for p in patterns if p.startswith(prefix) and fnmatch.fnmatchcase(result.group, p[len(prefix) :])), None)
    if pattern is None:
        return
    result.ignored_per_run += result.retained_per_run
    result.details[:0] = [f"memleak_ignore {pattern}: not counted: {f.message}" for f in result.findings]
    result.findings = []
    result.status, result.reason = CLEAN, f"its leak is not counted: memleak_ignore {pattern} names its group ({result.group})"


NOUNS = {"fds": "open file descriptors", "threads": "live threads", "processes": "child processes", "tasks": "pending asyncio tasks"}


@dataclass
class Evidence:
    """What the traced attribution window measured, one value per checkpoint."""

    per_step: int
    site_bytes: Mapping[str, Sequence[float]]
    site_counts: Mapping[str, Sequence[float]]
    real_blocks: Sequence[float]
    traced: Sequence[float]
    untraced_heap: Sequence[float]  # the allocators' own statistics (pymalloc + malloc), or RSS where malloc's are missing
    rss: Sequence[float]
    counts: Mapping[str, Sequence[float]]  # fds, threads, processes, tasks, and the project's counters by name
    types: Mapping[str, Sequence[float]]  # a census before tracing began and after it ended, ...
    census_runs: int = 0  # ... this many runs apart
    counters: Sequence[Counter] = ()  # the project's counters (their budgets and units)
    heap_missing: str | None = None  # why malloc's statistics are missing (RSS stands in for them in untraced_heap)
    untrimmed: str | None = None  # why RSS was read without giving freed memory back first


class Budgets(Protocol):
    """What a test may retain per run (a TestSettings has these)."""

    @property
    def retained(self) -> int: ...
    @property
    def per_site(self) -> int | None: ...
    @property
    def native(self) -> int | None: ...
    @property
    def fds(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def processes(self) -> int: ...
    @property
    def tasks(self) -> int: ...


def _count_finding(
    kind: str, values: Sequence[float], runs: int, budgets: Budgets, counters: Sequence[Counter], note: str = ""
) -> Finding | None:
    """A count (``kind``: one of NOUNS, or a project's counter by name) that grew beyond its budget per run."""
    counter = next((c for c in counters if c.name == kind), None)
    allowed = float(counter.budget if counter is not None else getattr(budgets, kind))
    leaking, per_run = decide_count(values, runs, allowed)
    if not leaking:
        return None
    grown = values[-1] - values[0]
    if counter is not None and counter.unit == "B":
        sized = f"{format_size(grown)} over {runs} runs ({format_size(per_run, signed=True)}/run, allowed {format_size(allowed)}/run)"
        return Finding(kind, per_run, allowed, "B", f"{kind} grew by {sized}{note}")
    noun = NOUNS.get(kind, kind)
    count = f"{grown:.0f}" if float(grown).is_integer() else f"{grown:.2f}"
    return Finding(kind, per_run, allowed, "", f"{noun} grew by {count} over {runs} runs ({per_run:+.2f}/run, allowed {allowed:g}/run){note}")


def counted_before_stop(
    result: LeakResult, budgets: Budgets, counts: Mapping[str, Sequence[float]], runs: int, counters: Sequence[Counter] = ()
) -> LeakResult:
    """A check stopped before its traced window (the runs slowed down, or its time ran out)
    still fails on what exact counters saw: descriptors or threads that grew on the screen's
    runs and are still alive when the runs stop, after finishing ones had time to end
    (``counts``: the screen's growing ones, baseline first, the count at the stop last).
    A leak of threads is what slows the runs down in the first place."""
    findings = [
        f
        for kind, values in counts.items()
        if (f := _count_finding(kind, values, runs, budgets, counters, ", still alive when the runs stopped")) is not None
    ]
    if not findings:
        return result
    return LeakResult(result.nodeid, LEAK, findings[0].message, findings=findings, details=[f"repeating stopped early: {result.reason}"])


def confirm(nodeid: str, budgets: Budgets, ev: Evidence) -> tuple[LeakResult, HeapVerdict]:
    """The verdict of the attribution window: every budget exceeded by growth that persists."""
    window_runs = ev.per_step * (len(ev.real_blocks) - 1)
    retained = float(budgets.retained)
    per_site = budgets.per_site
    native_budget = budgets.native
    heap = decide_heap(ev.site_bytes, ev.per_step, retained, per_site, site_counts=ev.site_counts, real_blocks=ev.real_blocks)
    findings: list[Finding] = []
    if heap.leaking:
        top = max(heap.persistent_sites.items(), key=lambda kv: kv[1])
        where = f"; top site {top[0]} {format_size(top[1], signed=True)}/run"
        if heap.retained_per_run > retained:
            findings.append(
                Finding(
                    "heap",
                    heap.retained_per_run,
                    retained,
                    "B",
                    f"retained {format_size(heap.retained_per_run)}/run of Python heap (budget {format_size(retained)}/run){where}",
                )
            )
        for site, rate in heap.over_site_budget.items():
            findings.append(
                Finding("site", rate, float(per_site or 0), "B", f"site {site} retained {format_size(rate)}/run (per-site budget {format_size(per_site or 0)}/run)")
            )
    for kind, values in ev.counts.items():
        found = _count_finding(kind, values, window_runs, budgets, ev.counters)
        if found is not None:
            findings.append(found)
    # RSS also moves with fragmentation of pymalloc's arenas: only growth past a page-noise
    # budget of its own counts there (native memory that malloc does not see: mmap)
    rss_budget = None if native_budget is None else max(native_budget, RSS_NOISE)
    unsure = ""
    if ev.heap_missing is None:
        native_leak, native_rate = decide_native(ev.untraced_heap, ev.traced, ev.per_step, native_budget, noise_per_step=SMALL_BLOCK)
        source = "the C allocator's statistics minus the traced heap"
        if not native_leak and native_budget is not None:
            native_leak, native_rate = decide_native(ev.rss, ev.untraced_heap, ev.per_step, rss_budget, noise_per_step=RSS_NOISE)
            source = "RSS minus the allocators' statistics"
    else:  # RSS stands in for malloc's statistics: its page noise, and what lies below it is unsure
        source = "RSS minus the traced heap"
        native_leak, native_rate = decide_native(ev.untraced_heap, ev.traced, ev.per_step, rss_budget, noise_per_step=RSS_NOISE)
        below, below_rate = decide_native(ev.untraced_heap, ev.traced, ev.per_step, native_budget)
        if below and not native_leak:
            unsure = (
                f"{ev.heap_missing}: native memory grew about {format_size(below_rate)}/run ({source}), "
                f"less than RSS tells from page noise ({format_size(RSS_NOISE)}/run)"
            )
    if native_leak:
        untrimmed = f"; {ev.untrimmed}: RSS was read with freed memory still resident" if ev.untrimmed and source.startswith("RSS") else ""
        findings.append(
            Finding(
                "native",
                native_rate,
                float(native_budget or 0),
                "B",
                f"native memory grew {format_size(native_rate)}/run outside Python's allocator "
                f"({source}; budget {format_size(native_budget or 0)}/run); tracemalloc cannot attribute it{untrimmed}",
                in_allocators=source.startswith("the C allocator"),
            )
        )
    if findings:
        status, reason = LEAK, findings[0].message
    elif unsure:
        status, reason = INCONCLUSIVE, unsure
    else:
        status, reason = CLEAN, "no growth of the test's own persisted while traced: what grew was pytest's or a plugin's"
    result = LeakResult(
        nodeid=nodeid,
        status=status,
        reason=reason,
        retained_per_run=heap.retained_per_run,
        findings=findings,
        grown_types=dict(list(grown_types(ev.types, ev.census_runs or window_runs, len(ev.real_blocks) - 1).items())[:10]),
        runs_per_step=ev.per_step,
    )
    return result, heap
