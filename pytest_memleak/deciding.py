"""Where a verdict is made: pure functions over measured series (no pytest, no I/O).

Two phases, as the plugin runs them:

1. **Screen** (cheap counters, each run): a counter is *suspect* only if it grew in every
   measured run, as in CPython's ``regrtest -R``; descriptors, threads, processes and tasks
   are suspect on any growth. Nothing suspect: the test is clean.
2. **Confirm** (tracemalloc, a checkpoint every few runs): growth must persist in *every*
   step of the window, the latest included, so a cache that fills during the first runs and
   then plateaus passes, while a leak that persists fails. The retained rate is measured over
   the latest half of the window, not averaged over the fill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SMALL_BLOCK = 512  # pymalloc serves requests up to this size; larger ones go to malloc
RSS_NOISE = 64 * 1024  # RSS steps below this per run are fragmentation and page noise, not leaks


def screen_suspect(values: Sequence[float], any_growth: bool = False, allowed_per_run: float = 0) -> bool:
    """The screen's gate over values measured after each run (baseline first).

    A counter is suspect when it grew overall and in most runs (regrtest's "every delta
    positive", tolerant of the one run in which capture buffers or a dict resize give a block
    back and would hide a leak). The confirmation window then demands growth in every step.
    Resources (descriptors, threads) are suspect on any growth.
    """
    deltas = [values[i] - values[i - 1] for i in range(1, len(values))]
    if not deltas:
        return False
    if any_growth:
        return values[-1] - values[0] > allowed_per_run * len(deltas) or any(d > allowed_per_run for d in deltas)
    grew = sum(1 for d in deltas if d > allowed_per_run)
    return values[-1] - values[0] > allowed_per_run * len(deltas) and grew * 2 > len(deltas)


def screen_open(values: Sequence[float], allowed_per_run: float = 0) -> bool:
    """Whether more screening runs could still make a counter suspect: it has grown so far."""
    return len(values) < 2 or values[-1] - values[0] > allowed_per_run * (len(values) - 1)


def steps(values: Sequence[float]) -> list[float]:
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


@dataclass(frozen=True)
class HeapVerdict:
    leaking: bool
    retained_per_run: float  # bytes per run retained by sites whose growth persists
    persistent_sites: dict[str, float] = field(default_factory=dict)  # site -> bytes per run
    over_site_budget: dict[str, float] = field(default_factory=dict)
    real_growth: bool = True  # the allocator's own block count rose in every step


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
    What the retaining sites keep per run (over the latest half) is judged against the budget.
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
        rate = latest_rate(values, runs_per_step)
        if rate > 0:
            persistent[site] = rate
    retained = sum(persistent.values())
    over = {} if per_site_budget is None else {s: r for s, r in persistent.items() if r > per_site_budget}
    leaking = bool(persistent) and (retained > retained_budget or bool(over))
    return HeapVerdict(leaking, retained, persistent, over, real)


def decide_count(values: Sequence[float], runs: int, allowed_per_run: float) -> tuple[bool, float]:
    """Resource counters (descriptors, threads, processes, tasks): leaking on net growth above the allowance."""
    if len(values) < 2:
        return False, 0.0
    grown = values[-1] - values[0]
    per_run = grown / max(1, runs)
    return grown > allowed_per_run * max(1, runs), per_run


def decide_native(
    rss_values: Sequence[float], heap_values: Sequence[float], runs_per_step: int, budget: float | None
) -> tuple[bool, float]:
    """Native memory (RSS growth not explained by the Python heap) must persist and exceed its budget."""
    if budget is None or len(rss_values) != len(heap_values) or len(rss_values) < 3:
        return False, 0.0
    native = [r - h for r, h in zip(rss_values, heap_values, strict=True)]
    # RSS moves in pages and creeps from fragmentation: a step must exceed the noise floor.
    if not persists(native, noise=RSS_NOISE * runs_per_step):
        return False, 0.0
    rate = latest_rate(native, runs_per_step)
    return rate > budget, rate


def grown_types(type_series: Mapping[str, Sequence[float]], runs_per_step: int) -> dict[str, float]:
    """Object types whose instance count rises in every step, with instances per run."""
    out = {}
    for name, values in type_series.items():
        if persists(values):
            out[name] = latest_rate(values, runs_per_step)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
