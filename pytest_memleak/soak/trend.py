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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist, linear_regression

from pytest_memleak.config.units import format_duration, format_size

MAX_FIT_POINTS = 200  # longer series are reduced to this many bin medians before Theil-Sen
MIN_POINTS = 6  # points needed after the warm-up for any verdict
MIN_SEGMENT_POINTS = 3  # points needed in the last half / last third
PERSIST_RATIO = 0.5  # a late slope must be at least this fraction of the whole-window slope
EFFECT_FLOOR = 1.0  # growth over the window must exceed this many robust noise sds
MIN_RELATIVE_GROWTH = 1e-6  # growth under this share of the level is none (a byte or two of jitter)
RISING_REACH = 100.0  # a trend that rises but does not persist is projected at most this many windows ahead
MAX_AUTOCORRELATION = 0.95  # caps the variance inflation at (1 + 0.95) / (1 - 0.95) = 39
NOISE_POINTS = 2000  # raw points used (evenly strided) to estimate the noise band
HOUR = 3600.0
# A series saws (fills, then is cleared, as a heap between collections does) when it has at
# least MIN_DROPS drops, each a fall of DROP_STEPS typical steps and of DROP_SPAN of its range,
# and FILL_SHARE of its other steps rise (noise falls as often as it rises). Drops are partial
# when a sample lands mid-cycle (a loaded machine samples every few hundred ms).
MIN_DROPS = 3
DROP_STEPS = 2.0
DROP_SPAN = 0.02
FILL_SHARE = 0.75


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
    resolution: float = 0.0  # what a point is known to within (a trough: one sampling step)

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

    @property
    def rising(self) -> bool:
        """Growth significant over the window and beyond the noise, at half its rate or more in
        the last half, and the last third not surely slower: a projection holds though the later
        parts are too noisy to show persistence (a sawtooth's troughs, few in a short soak). A
        plateau is slower there, and what its last half rises by is within the noise (a plateau
        whose noise read as half the window's rate there, 58 KB against noise of 68 KB, projected
        a limit 7 s away: hypothesis's example). Points known only to within ``resolution`` (a
        sawtooth's troughs) must grow by more than it over the window, and the last half's rise
        may fall short of half the window's rate by as much."""
        grown = self.growth > max(EFFECT_FLOOR * self.noise, self.resolution, MIN_RELATIVE_GROWTH * abs(self.at(self.window_end)))
        late = self.segments[1:]
        # the last half's rate, and the last third not surely slower, than half the window's
        return (
            self.sufficient
            and self.lower > 0
            and grown
            and all(
                # (a point known to within ``resolution``: the last half's rise is known to within it)
                (s.slope - PERSIST_RATIO * self.slope) * (s.end - s.start) >= -self.resolution
                and s.slope * (s.end - s.start) > EFFECT_FLOOR * self.noise
                for s in late[:1]
            )
            and all(s.upper >= PERSIST_RATIO * self.slope for s in late)
        )

    @property
    def within_resolution(self) -> bool:
        """Growth sure over the window, but by no more than what a point is known to within:
        none, as far as the series can tell (RSS a few pages up as the allocators settle)."""
        return self.sufficient and self.lower > 0 and 0.0 < self.growth <= self.resolution

    def time_to(self, limit: float, now_value: float) -> float | None:
        """Units of t (seconds) until ``limit`` at the fitted rate; None when not growing
        (neither persistent nor :attr:`rising`), and when the trend only rises and the limit is
        more than :data:`RISING_REACH` windows ahead.

        0.0 when ``now_value`` is already at or above the limit while growing.

        A rise that is not shown to persist projects no further than a hundred times what it was
        seen over: RSS that climbed a few pages in a 2 s window (a staircase of 4 KiB steps and
        one 300 KiB step of malloc's heap top, in a bounded service) read as reaching 500 MiB in
        18 h, inside the 24 h horizon, and failed a soak of a fixed service.
        """
        if not (self.persistent or self.rising) or not self.slope > 0:
            return None
        if now_value >= limit:
            return 0.0
        ttl = (limit - now_value) / self.slope
        if not self.persistent and ttl > RISING_REACH * (self.window_end - self.window_start):
            return None
        return ttl


@dataclass(frozen=True)
class Level:
    """What a memory series is judged on: its trend, and the value a projection starts from."""

    trend: Trend
    now: float  # the last value; for a sawtooth, the troughs' line at the end plus how far above it the peaks rise
    troughs: int = 0  # clean-ups seen: the trend is of the troughs (0: of every point)

    def time_to(self, limit: float) -> float | None:
        """Seconds until the series reaches ``limit`` (its peaks, for a sawtooth); None when not growing."""
        return self.trend.time_to(limit, self.now)


def troughs(t: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float], float] | None:
    """The memory after each clean-up of a series that saws, as (t, y), and the typical step
    between samples (what a trough is known to within); None when it does not saw. The trend of
    the troughs is the leak signal of a sawtooth (as memory after GC is for a JVM heap): a slope
    over the raw points swings with where the last clean-up fell, and read "plateaued" for a
    process that died minutes later.

    Each trough is where the fill that follows a clean-up started: the line through that fill's
    samples, at the middle of the sampling step the clean-up fell in (:func:`_trough`). Its
    lowest sample is above that by where in the step the clean-up fell, up to a step, and by its
    own noise: troughs read from it did not show a leak of a few fill steps in a short soak."""
    pairs = sorted((float(a), float(b)) for a, b in zip(t, y, strict=True) if _finite(a) and _finite(b))
    if len(pairs) < 2 * MIN_DROPS + 2:
        return None
    ys = [b for _, b in pairs]
    steps = [ys[i] - ys[i - 1] for i in range(1, len(ys))]
    typical = _median([abs(d) for d in steps])
    floor = max(DROP_STEPS * typical, DROP_SPAN * (max(ys) - min(ys)))
    drops = [i for i, d in enumerate(steps, 1) if d < 0 and -d > floor]
    others = [d for d in steps if not (d < 0 and -d > floor)]
    if len(drops) < MIN_DROPS or floor <= 0 or sum(d > 0 for d in others) < FILL_SHARE * len(others):
        return None
    tt, ty = [], []
    for k, i in enumerate(drops):
        end = drops[k + 1] if k + 1 < len(drops) else len(pairs)
        j = min(range(i, end), key=lambda m: ys[m])  # (a clean-up can take more than one sample)
        at, value = _trough(pairs[j - 1 : end])
        tt.append(at)
        ty.append(value)
    return tt, ty, typical


def _trough(cycle: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Where a fill started: ``cycle`` is the sample before a clean-up's lowest one, then the
    fill's samples up to the next clean-up. The least-squares line through the fill (three
    samples at the least, rising), at the middle of the step before it; else its lowest sample."""
    (before, _), fill = cycle[0], cycle[1:]
    ts, ys = [a for a, _ in fill], [b for _, b in fill]
    if len(fill) < MIN_SEGMENT_POINTS or ts[-1] <= ts[0]:
        return fill[0]
    slope, intercept = linear_regression(ts, ys)
    if not slope > 0:
        return fill[0]
    at = (before + ts[0]) / 2
    return at, intercept + slope * at


def fit_level(
    t: Sequence[float],
    y: Sequence[float],
    *,
    warmup_fraction: float = 0.1,
    confidence: float = 0.95,
    resolution: float = 0.0,
) -> Level:
    """The trend of a memory series and where it stands: of its troughs when it saws and they are
    enough for a trend, with the peaks' rise above them, else of every point. ``resolution`` is
    what the series' level is known to within (in its unit): growth over the window within it is
    none (neither persistent nor rising, so never projected)."""
    saw = troughs(t, y)
    if saw is not None:
        trend = fit_trend(*saw[:2], warmup_fraction=warmup_fraction, confidence=confidence)
        if trend.sufficient:
            # a trough is known to within one sampling step (the clean-up fell somewhere in it):
            # growth of the troughs within that is none, and where in the step it fell is noise
            # (uniform over the step: its standard deviation is the step over the root of 12)
            trend = _resolved(replace(trend, noise=max(trend.noise, saw[2] / math.sqrt(12))), max(saw[2], resolution))
            pairs = [(float(a), float(b)) for a, b in zip(t, y, strict=True) if _finite(a) and _finite(b)]
            end = max(a for a, _ in pairs)
            later = [b - trend.at(a) for a, b in pairs if a >= (trend.window_start + end) / 2]
            return Level(trend, trend.at(end) + max([0.0, *later]), len(saw[0]))
    trend = _resolved(fit_trend(t, y, warmup_fraction=warmup_fraction, confidence=confidence), resolution)
    last = next((float(b) for b in reversed(y) if _finite(b)), math.nan)
    return Level(trend, last)


def _resolved(trend: Trend, resolution: float) -> Trend:
    """``trend`` of points known to within ``resolution``: growth within it does not persist."""
    if resolution <= 0.0 or not trend.sufficient:
        return trend
    return replace(trend, persistent=trend.persistent and trend.growth > resolution, resolution=resolution)


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
    clear_of_noise: float = EFFECT_FLOOR,
) -> tuple[bool, str]:
    """A verdict on a trend whose t is in seconds: ``(leak, one-line reason)``.

    A leak when growth persists and its lower confidence bound (and the slope over the last
    third) exceeds ``max_growth_per_hour``, or when growth persists and ``memory_limit``
    would be reached from ``current`` within ``horizon_seconds`` at the fitted rate.
    ``unit`` is "B" (sizes are formatted as KiB/MiB) or a count unit such as "blocks".
    Persisting growth must also rise over the window by more than ``clear_of_noise`` times the
    series' noise (a persistent trend already rose by more than :data:`EFFECT_FLOOR` times it):
    a second look at a question another series could not settle asks for a plain rise.
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
        elif trend.rising and trend.slope > 0:
            limit_part = (
                f"; not projected to {fmt(memory_limit)}: more than {RISING_REACH:g} windows ahead "
                "for a rise that does not persist"
            )

    if trend.persistent:
        over = trend.lower > threshold and tail is not None and tail.slope > threshold
        head = f"grows {fmt(rate)}/h ({pct} lower bound {fmt(lower)}/h)"
        if trend.growth <= clear_of_noise * trend.noise:
            within_noise = f"by {fmt(trend.growth)} over the window, within {clear_of_noise:g} times its noise ({fmt(trend.noise)})"
            return hits_limit, f"{head}, but {within_noise}{limit_part}"
        if over:
            return True, f"{head}, persists in the last third{limit_part}"
        within = f"within max_growth {fmt(max_growth_per_hour)}/h"
        return hits_limit, f"{head}, {within}{limit_part}"
    if hits_limit:  # rising, too noisy late in the window to show persistence, and the limit is near
        return True, f"rises {fmt(rate)}/h ({pct} lower bound {fmt(lower)}/h){limit_part}"
    if trend.within_resolution:
        return False, f"{within_resolution(trend, unit)}: {fmt(rate, True)}/h ({pct} CI {fmt(lower)}/h .. {fmt(upper)}/h)"
    if trend.plateaued and trend.slope > 0 and tail is not None and tail.slope < PERSIST_RATIO * trend.slope:
        return False, (
            f"plateaued: {fmt(rate, True)}/h over the window but {fmt(tail_rate, True)}/h "
            f"in the last third{limit_part}"
        )
    if trend.plateaued and trend.lower <= 0:
        return False, f"flat: {fmt(rate, True)}/h ({pct} CI {fmt(lower)}/h .. {fmt(upper)}/h){limit_part}"
    return False, (
        f"no persistent growth: {fmt(rate, True)}/h ({pct} CI {fmt(lower)}/h .. {fmt(upper)}/h), "
        f"{fmt(tail_rate, True)}/h in the last third{limit_part}"
    )


def within_resolution(trend: Trend, unit: str = "B") -> str:
    """How a trend's growth fell within its resolution (see :attr:`Trend.within_resolution`)."""
    fmt = _formatter(unit)
    return f"grows only {fmt(trend.growth)} over the window, within its resolution of {fmt(trend.resolution)}"


# -- internals ---------------------------------------------------------------------------


def _finite(v: object) -> bool:
    try:
        return math.isfinite(v)  # type: ignore[arg-type]
    except TypeError:
        return False


def _formatter(unit: str) -> Callable[..., str]:
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
