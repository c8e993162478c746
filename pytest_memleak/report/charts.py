"""Inline SVG line charts for the HTML report: labelled axes, a limit line, a marked time.

Pure functions from numbers to SVG text; nothing here knows what a result is.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pytest_memleak.config.units import format_size

MAX_CHART_POINTS = 600  # points per line in a chart; longer series are downsampled


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_count(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def fmt_value(value: float, is_bytes: bool, signed: bool = False) -> str:
    if is_bytes:
        return format_size(value, signed=signed)
    text = fmt_count(abs(value) if signed else value)
    return ("+" if value >= 0 else "-") + text if signed else text


BLUE, PURPLE, ORANGE, RED, GREY = "#1f6feb", "#8250df", "#d4700a", "#c62828", "#59636e"
_AXIS = "#8c959f"
_GRID = "#e6e9ed"


def finite_points(xs: Iterable[Any], ys: Iterable[Any]) -> list[tuple[float, float]]:
    points = []
    for x, y in zip(xs, ys, strict=False):
        fx, fy = _num(x), _num(y)
        if fx is not None and fy is not None:
            points.append((fx, fy))
    return points


def downsample(points: list[tuple[float, float]], limit: int = MAX_CHART_POINTS) -> list[tuple[float, float]]:
    """Keep the minimum and the maximum of each bucket, so spikes survive downsampling."""
    if len(points) <= limit:
        return points
    buckets = max(1, limit // 2)
    size = len(points) / buckets
    kept: list[tuple[float, float]] = []
    for b in range(buckets):
        chunk = points[int(b * size) : max(int((b + 1) * size), int(b * size) + 1)]
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        kept.extend(sorted({lo, hi}))
    return kept


def _nice_step(raw: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * magnitude >= raw * 0.999:
            return m * magnitude
    return 10 * magnitude


def _ticks(lo: float, hi: float, count: int, scale: float = 1.0, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi], in multiples of a nice step of ``scale`` units."""
    if hi <= lo:
        pad = abs(lo) * 0.05 or scale
        lo, hi = lo - pad, hi + pad
    step = _nice_step((hi - lo) / scale / max(1, count))
    if integer:
        step = max(1.0, round(step))
    start = math.floor(lo / scale / step + 1e-9) * step
    end = math.ceil(hi / scale / step - 1e-9) * step
    n = int(round((end - start) / step))
    return [(start + i * step) * scale for i in range(n + 1)]


def _byte_scale(peak: float) -> tuple[float, str]:
    for unit, scale in (("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0)):
        if peak >= scale:
            return scale, unit
    return 1.0, "B"


def _y_axis(lo: float, hi: float, is_bytes: bool, count: int) -> tuple[list[float], Callable[[float], str]]:
    if is_bytes:
        scale, unit = _byte_scale(max(abs(lo), abs(hi)))
        ticks = _ticks(lo, hi, count, scale, integer=scale == 1.0)
        return ticks, lambda v: f"{round(v / scale, 6):g} {unit}"
    ticks = _ticks(lo, hi, count, 1.0, integer=True)
    return ticks, lambda v: fmt_count(round(v, 6))


_TIME_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _x_time_axis(lo: float, hi: float, count: int) -> tuple[list[float], Callable[[float], str]]:
    span = max(hi - lo, 1e-9)
    step = next((s for s in _TIME_STEPS if span / s <= count), 86400.0 * math.ceil(span / 86400 / count))
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = start
    while value <= hi + 1e-9 * step:
        if value >= lo - 1e-9 * step:
            ticks.append(value)
        value += step
    if step < 60:
        return ticks, lambda v: f"{round(v, 3):g} s"
    if step < 3600:
        return ticks, lambda v: f"{round(v / 60, 3):g} min"
    return ticks, lambda v: f"{round(v / 3600, 3):g} h"


def _x_index_axis(lo: float, hi: float, count: int) -> tuple[list[float], Callable[[float], str]]:
    """First and last index, and round values in between that keep clear of them."""
    inner = [t for t in _ticks(lo, hi, count, 1.0, integer=True) if lo < t < hi]
    gap = (hi - lo) / (2.5 * max(1, count))
    ticks = [lo] + [t for t in inner if t - lo >= gap and hi - t >= gap] + ([hi] if hi > lo else [])
    return ticks, lambda v: f"{int(round(v))}"


@dataclasses.dataclass
class Line:
    label: str
    points: list[tuple[float, float]]
    color: str
    dash: str | None = None
    width: float = 1.8
    dots: bool = False


@dataclasses.dataclass
class HLine:
    """A level across the chart (a memory limit)."""

    value: float
    label: str
    color: str


@dataclasses.dataclass
class VLine:
    """A time marked down the chart (when a projection reaches the limit)."""

    at: float
    label: str
    color: str


def chart(
    lines: list[Line],
    *,
    width: int,
    height: int,
    is_bytes: bool,
    x_time: bool,
    hlines: Sequence[HLine] = (),
    vlines: Sequence[VLine] = (),
    x_label: str = "",
    css_class: str = "chart",
    label: str = "chart",
) -> str:
    """A line chart with labelled axes, as inline SVG."""
    all_points = [p for line in lines for p in line.points]
    if not all_points:
        return ""
    xs = [p[0] for p in all_points] + [v.at for v in vlines]
    ys = [p[1] for p in all_points] + [h.value for h in hlines]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_ticks, y_fmt = _y_axis(min(ys), max(ys), is_bytes, 4 if height >= 160 else 3)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    if y_hi <= y_lo:
        y_hi = y_lo + 1
    x_ticks, x_fmt = (_x_time_axis if x_time else _x_index_axis)(x_lo, x_hi, max(2, width // 110))
    left = 12 + 6.6 * max(len(y_fmt(t)) for t in y_ticks)
    right, top, bottom = 16.0, 12.0, 34.0 if x_label else 22.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    out = [
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">',
        f"<title>{_e(label)}</title>",
    ]
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{width - right:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        out.append(f'<text x="{left - 6:.1f}" y="{y + 3.5:.1f}" text-anchor="end">{_e(y_fmt(t))}</text>')
    base = top + plot_h
    out.append(f'<line x1="{left:.1f}" y1="{base:.1f}" x2="{width - right:.1f}" y2="{base:.1f}" stroke="{_AXIS}"/>')
    out.append(f'<line x1="{left:.1f}" y1="{top:.1f}" x2="{left:.1f}" y2="{base:.1f}" stroke="{_AXIS}"/>')
    for i, t in enumerate(x_ticks):
        x = px(t)
        anchor = "start" if x - left < 12 and i == 0 else "end" if width - right - x < 12 else "middle"
        out.append(f'<line x1="{x:.1f}" y1="{base:.1f}" x2="{x:.1f}" y2="{base + 4:.1f}" stroke="{_AXIS}"/>')
        out.append(f'<text x="{x:.1f}" y="{base + 15:.1f}" text-anchor="{anchor}">{_e(x_fmt(t))}</text>')
    if x_label:
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4:.1f}" text-anchor="middle">{_e(x_label)}</text>')
    for h in hlines:
        y = py(h.value)
        out.append(
            f'<line class="limit" x1="{left:.1f}" y1="{y:.1f}" x2="{width - right:.1f}" y2="{y:.1f}" '
            f'stroke="{h.color}" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        label_y = y - 5 if y - 5 > top + 8 else y + 13
        # at the right end; at the left when a marked time may run down the right
        label_x, anchor = (left + 6, "start") if vlines else (width - right - 4, "end")
        out.append(
            f'<text x="{label_x:.1f}" y="{label_y:.1f}" text-anchor="{anchor}" fill="{h.color}" '
            f'style="fill:{h.color};font-weight:600">{_e(h.label)}</text>'
        )
    for v in vlines:
        x = px(v.at)
        out.append(
            f'<line class="marker" x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{base:.1f}" '
            f'stroke="{v.color}" stroke-width="1.2" stroke-dasharray="3 3"/>'
        )
        anchor = "end" if x - left > plot_w / 2 else "start"
        shift = -5 if anchor == "end" else 5
        out.append(
            f'<text x="{x + shift:.1f}" y="{base - 8:.1f}" text-anchor="{anchor}" '
            f'style="fill:{v.color};font-weight:600">{_e(v.label)}</text>'
        )
    for line in lines:
        if not line.points:
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line.points)
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        out.append(
            f'<polyline class="series" data-series="{_e(line.label)}" fill="none" stroke="{line.color}" '
            f'stroke-width="{line.width}" stroke-linejoin="round" stroke-linecap="round"{dash} points="{coords}"/>'
        )
        if line.dots and len(line.points) <= 40:
            out.extend(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{line.color}"/>' for x, y in line.points
            )
    out.append("</svg>")
    return "".join(out)


def sparkline(values: list[float], is_bytes: bool, color: str = GREY, width: int = 120, height: int = 28) -> str:
    """A tiny trend line. Changes under 0.5% of the level are drawn nearly flat: noise is not growth."""
    points = downsample(finite_points(range(len(values)), values), 200)
    if len(points) < 2:
        return ""
    ys = [p[1] for p in points]
    lo, hi = min(ys), max(ys)
    level = abs(sum(ys) / len(ys))
    span = max(hi - lo, 0.005 * level, 1e-9)
    if hi - lo < span:  # centre a small change vertically
        lo -= (span - (hi - lo)) / 2
    n = len(values) - 1 or 1
    coords = " ".join(f"{2 + x / n * (width - 4):.1f},{height - 3 - (y - lo) / span * (height - 6):.1f}" for x, y in points)
    if hi == lo:
        coords = f"2,{height / 2:.1f} {width - 2},{height / 2:.1f}"
    growth = ys[-1] - ys[0]
    tip = f"{fmt_value(ys[0], is_bytes)} → {fmt_value(ys[-1], is_bytes)} ({fmt_value(growth, is_bytes, signed=True)})"
    return (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(tip)}"><title>{_e(tip)}</title>'
        f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/></svg>'
    )


