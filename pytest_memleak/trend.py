"""Is a measured series still growing, and how fast? A robust trend over a soak's samples.

Pure functions, no pytest: :func:`fit_trend` fits a series, :func:`judge` turns the fit into
a verdict with a one-line reason.

How the fit resists what memory series do when nothing leaks:

* **warm-up** -- the first ``warmup_fraction`` of the time span is discarded (imports, caches
  and pools filling on the first iterations);
* **noise and spikes** -- the slope is the Theil-Sen estimator (median of pairwise slopes),
  which ignores up to ~29% of wild points; long series are first reduced to at most
  :data:`MAX_FIT_POINTS` points by taking the median of consecutive bins, so a fit over
  20,000 samples stays in the low milliseconds (pure Python, no numpy);
* **garbage-collector sawtooth, slow wander** -- the confidence interval is Sen's interval
  (inversion of Kendall's test) with its variance inflated by ``(1 + r1) / (1 - r1)``, where
  ``r1`` is the lag-1 autocorrelation of the residuals, so correlated wiggles widen the
  interval instead of passing for a trend;
* **one-time steps, plateaus** (a cache that fills, then stays full) -- growth must *persist*:
  the lower confidence bound must be above zero over the whole window, over its last half
  and over its last third, each late slope must be at least :data:`PERSIST_RATIO` of the
  whole-window slope, and the growth over the window must exceed the noise band of the
  series (:data:`EFFECT_FLOOR` robust standard deviations). A step early then flat, or a
  fill then flat, leaves the last third flat: not persistent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from .units import format_duration, format_size

MAX_FIT_POINTS = 200  # longer series are reduced to this many bin medians before Theil-Sen
MIN_POINTS = 6  # points needed after the warm-up for any verdict
MIN_SEGMENT_POINTS = 3  # points needed in the last half / last third
PERSIST_RATIO = 0.5  # a late slope must be at least this fraction of the whole-window slope
EFFECT_FLOOR = 1.0  # growth over the window must exceed this many robust noise sds
MAX_AUTOCORRELATION = 0.95  # caps the variance inflation at (1 + 0.95) / (1 - 0.95) = 39
NOISE_POINTS = 2000  # raw points used (evenly strided) to estimate the noise band
HOUR = 3600.0


@dataclass(frozen=True)
class Segment:
    """A Theil-Sen fit over one part of the window (slopes per unit of t)."""

    label: str  # "window", "last half", "last third"
    start: float
    end: float
    n: int  # points fitted (after binning)
    slope: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Trend:
    """A robust linear trend, ``y ~ intercept + slope * t``, over the post-warm-up window."""

    slope: float  # per unit of t (bytes per second when t is seconds)
    lower: float  # confidence bounds of the slope
    upper: float
    intercept: float  # fitted y at t = 0
    plateaued: bool  # the end of the window shows no (or much slower) growth
    persistent: bool  # growth is significant over the window and over its later parts
    n: int  # raw points in the window
    window_start: float
    window_end: float = 0.0
    confidence: float = 0.95
    noise: float = 0.0  # robust standard deviation of the residuals (raw points)
    sufficient: bool = True  # enough points for a verdict
    segments: tuple[Segment, ...] = field(default_factory=tuple)  # window, last half, last third

    def at(self, t: float) -> float:
        """The fitted value at t."""
        return self.intercept + self.slope * t

    @property
    def tail(self) -> Segment | None:
        """The fit over the last third of the window."""
        return self.segments[-1] if len(self.segments) == 3 else None

    @property
    def growth(self) -> float:
        """Fitted growth over the window."""
        return self.slope * (self.window_end - self.window_start)

    def time_to(self, limit: float, now_value: float) -> float | None:
        """Units of t (seconds) until ``limit`` at the fitted rate; None when not growing.

        0.0 when ``now_value`` is already at or above the limit while growing.
        """
        if not self.persistent or not self.slope > 0:
            return None
        if now_value >= limit:
            return 0.0
        return (limit - now_value) / self.slope


def fit_trend(
    t: Sequence[float],
    y: Sequence[float],
    *,
    warmup_fraction: float = 0.1,
    confidence: float = 0.95,
) -> Trend:
    """Fit a robust trend to ``y`` (bytes, blocks...) over ``t`` (seconds or iterations).

    Points where t or y is not finite are dropped; t need not be sorted. Raises ValueError
    for sequences of different lengths, a warm-up fraction outside [0, 1) or a confidence
    outside (0, 1).
    """
    if len(t) != len(y):
        raise ValueError(f"t and y differ in length ({len(t)} != {len(y)})")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction {warmup_fraction!r} is outside [0, 1)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence!r} is outside (0, 1)")
    pairs = [(float(a), float(b)) for a, b in zip(t, y, strict=True) if _finite(a) and _finite(b)]
    if any(pairs[i][0] > pairs[i + 1][0] for i in range(len(pairs) - 1)):
        pairs.sort(key=lambda p: p[0])
    if not pairs:
        return Trend(0.0, -math.inf, math.inf, 0.0, False, False, 0, 0.0, 0.0, confidence, sufficient=False)
    t0, t_end = pairs[0][0], pairs[-1][0]
    start = t0 + warmup_fraction * (t_end - t0)
    window = [p for p in pairs if p[0] >= start] if warmup_fraction > 0 else pairs
    ts = [p[0] for p in window]
    ys = [p[1] for p in window]
    n = len(ts)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    if n < MIN_POINTS or ts[-1] <= ts[0]:
        slope = _median(_pairwise_slopes(ts, ys)) if n >= 2 and ts[-1] > ts[0] else 0.0
        intercept = _median([b - slope * a for a, b in zip(ts, ys, strict=True)]) if n else 0.0
        return Trend(
            slope, -math.inf, math.inf, intercept, False, False, n, start, ts[-1] if n else start,
            confidence, sufficient=False,
        )

    bt, by = _binned(ts, ys, MAX_FIT_POINTS)
    w_start, w_end = ts[0], ts[-1]
    full_slope, full_lower, full_upper, intercept = _theil_sen(bt, by, z)
    segments = [Segment("window", w_start, w_end, len(bt), full_slope, full_lower, full_upper)]
    for label, fraction in (("last half", 0.5), ("last third", 1.0 / 3.0)):
        seg_start = w_end - fraction * (w_end - w_start)
        first = next(i for i, v in enumerate(bt) if v >= seg_start)
        # a short series: widen the tail back to the fewest points a slope can stand on,
        # rather than reading "too few points" as a plateau
        first = min(first, max(0, len(bt) - MIN_SEGMENT_POINTS))
        seg_start = bt[first]
        st, sy = bt[first:], by[first:]
        if len(st) >= MIN_SEGMENT_POINTS and st[-1] > st[0]:
            slope, lower, upper, _ = _theil_sen(st, sy, z)
        else:
            slope, lower, upper = 0.0, -math.inf, math.inf
        segments.append(Segment(label, seg_start, w_end, len(st), slope, lower, upper))

    noise = _noise(ts, ys, full_slope, intercept)
    growth = full_slope * (w_end - w_start)
    late = segments[1:]
    persistent = (
        full_lower > 0
        and all(s.lower > 0 and s.slope >= PERSIST_RATIO * full_slope for s in late)
        and growth > EFFECT_FLOOR * noise
    )
    tail = segments[-1]
    plateaued = not persistent and (tail.lower <= 0 or tail.slope < PERSIST_RATIO * full_slope)
    return Trend(
        slope=full_slope,
        lower=full_lower,
        upper=full_upper,
        intercept=intercept,
        plateaued=plateaued,
        persistent=persistent,
        n=n,
        window_start=w_start,
        window_end=w_end,
        confidence=confidence,
        noise=noise,
        sufficient=True,
        segments=tuple(segments),
    )


def judge(
    trend: Trend,
    *,
    max_growth_per_hour: float,
    memory_limit: float | None,
    horizon_seconds: float | None,
    current: float,
    unit: str = "B",
) -> tuple[bool, str]:
    """A verdict on a trend whose t is in seconds: ``(leak, one-line reason)``.

    A leak when growth persists and its lower confidence bound (and the slope over the last
    third) exceeds ``max_growth_per_hour``, or when growth persists and ``memory_limit``
    would be reached from ``current`` within ``horizon_seconds`` at the fitted rate.
    ``unit`` is "B" (sizes are formatted as KiB/MiB) or a count unit such as "blocks".
    """
    fmt = _formatter(unit)
    pct = f"{trend.confidence * 100:g}%"
    if not trend.sufficient:
        return False, (
            f"too few samples for a trend: {trend.n} after the warm-up, need at least {MIN_POINTS}"
        )
    threshold = max_growth_per_hour / HOUR
    rate, lower, upper = trend.slope * HOUR, trend.lower * HOUR, trend.upper * HOUR
    tail = trend.tail
    tail_rate = tail.slope * HOUR if tail is not None else 0.0

    limit_part, hits_limit = "", False
    if memory_limit is not None:
        ttl = trend.time_to(memory_limit, current)
        if ttl is not None:
            if ttl == 0.0:
                limit_part = f"; already at {fmt(current)}, above {fmt(memory_limit)}"
            else:
                limit_part = f"; reaches {fmt(memory_limit)} in {format_duration(ttl)}"
            if horizon_seconds is not None and ttl <= horizon_seconds:
                hits_limit = True
            elif horizon_seconds is not None:
                limit_part += f" (beyond the {format_duration(horizon_seconds)} horizon)"
        elif current >= memory_limit:
            limit_part = f"; at {fmt(current)}, above {fmt(memory_limit)} but not growing"

    if trend.persistent:
        over = trend.lower > threshold and tail is not None and tail.slope > threshold
        head = f"grows {fmt(rate)}/h ({pct} lower bound {fmt(lower)}/h)"
        if over:
            return True, f"{head}, persists in the last third{limit_part}"
        within = f"within max_growth {fmt(max_growth_per_hour)}/h"
        return hits_limit, f"{head}, {within}{limit_part}"
    if trend.plateaued and trend.slope > 0 and tail is not None and tail.slope < PERSIST_RATIO * trend.slope:
        return False, (
            f"plateaued: {fmt(rate, True)}/h over the window but {fmt(tail_rate, True)}/h "
            f"in the last third{limit_part}"
        )
    if trend.plateaued:
        return False, f"flat: {fmt(rate, True)}/h ({pct} CI {fmt(lower)}/h .. {fmt(upper)}/h){limit_part}"
    return False, (
        f"no persistent growth: {fmt(rate, True)}/h ({pct} CI {fmt(lower)}/h .. {fmt(upper)}/h), "
        f"{fmt(tail_rate, True)}/h in the last third{limit_part}"
    )


# -- internals ---------------------------------------------------------------------------


def _finite(v: object) -> bool:
    try:
        return math.isfinite(v)  # type: ignore[arg-type]
    except TypeError:
        return False


def _formatter(unit: str):
    if unit == "B":

        def fmt(value: float, signed: bool = False) -> str:
            if not math.isfinite(value):
                return "-inf" if value < 0 else "+inf"
            return format_size(value, signed=signed)

        return fmt

    def fmt_count(value: float, signed: bool = False) -> str:
        if not math.isfinite(value):
            return "-inf" if value < 0 else "+inf"
        text = f"{value:+,.0f}" if signed else f"{value:,.0f}"
        return f"{text} {unit}"

    return fmt_count


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return _median_sorted(s)


def _median_sorted(s: list[float]) -> float:
    m = len(s)
    mid = m // 2
    return s[mid] if m % 2 else (s[mid - 1] + s[mid]) / 2.0


def _binned(ts: list[float], ys: list[float], max_points: int) -> tuple[list[float], list[float]]:
    """At most max_points points: mean t and median y of consecutive, equal-count bins."""
    n = len(ts)
    if n <= max_points:
        return ts, ys
    bt: list[float] = []
    by: list[float] = []
    for k in range(max_points):
        lo, hi = k * n // max_points, (k + 1) * n // max_points
        bt.append(math.fsum(ts[lo:hi]) / (hi - lo))
        by.append(_median(ys[lo:hi]))
    return bt, by


def _pairwise_slopes(ts: list[float], ys: list[float]) -> list[float]:
    out: list[float] = []
    extend = out.extend
    n = len(ts)
    for i in range(n - 1):
        ti, yi = ts[i], ys[i]
        extend([(yj - yi) / (tj - ti) for tj, yj in zip(ts[i + 1 :], ys[i + 1 :], strict=True) if tj != ti])
    return out


def _theil_sen(ts: list[float], ys: list[float], z: float) -> tuple[float, float, float, float]:
    """Slope, lower, upper (Sen's interval, autocorrelation-inflated) and intercept."""
    slopes = _pairwise_slopes(ts, ys)
    slopes.sort()
    big = len(slopes)
    if not big:
        return 0.0, -math.inf, math.inf, _median(ys)
    slope = _median_sorted(slopes)
    intercept = _median([y - slope * t for t, y in zip(ts, ys, strict=True)])
    residuals = [y - intercept - slope * t for t, y in zip(ts, ys, strict=True)]
    r1 = min(max(_lag1(residuals), 0.0), MAX_AUTOCORRELATION)
    n = len(ts)
    variance = n * (n - 1) * (2 * n + 5) / 18.0 * (1.0 + r1) / (1.0 - r1)
    c = z * math.sqrt(variance)
    upper_rank = min(int(round((big + c) / 2.0)), big - 1)
    lower_rank = max(int(round((big - c) / 2.0)) - 1, 0)
    return slope, slopes[lower_rank], slopes[upper_rank], intercept


def _lag1(values: list[float]) -> float:
    n = len(values)
    if n < 3:
        return 0.0
    mean = math.fsum(values) / n
    d = [v - mean for v in values]
    denominator = math.fsum(x * x for x in d)
    if denominator <= 0:
        return 0.0
    return math.fsum(d[i] * d[i + 1] for i in range(n - 1)) / denominator


def _noise(ts: list[float], ys: list[float], slope: float, intercept: float) -> float:
    """Robust standard deviation (1.4826 MAD) of the raw residuals around the fitted line."""
    step = max(1, len(ts) // NOISE_POINTS)
    residuals = [ys[i] - intercept - slope * ts[i] for i in range(0, len(ts), step)]
    centre = _median(residuals)
    return 1.4826 * _median([abs(r - centre) for r in residuals])
