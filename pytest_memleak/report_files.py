"""The session's report files: ``memleak.json``, ``memleak.html`` and the GitHub step summary.

Inputs are iterables of result dicts (``LeakResult.to_dict()`` / ``SoakResult.to_dict()``,
usually streamed from a JSON-lines file); each is materialised once. Rendering is defensive:
a missing or odd field renders as a dash rather than failing the report.

Writing is atomic: the file is written to a temporary file in the same directory, fsynced
and moved over the target with :func:`os.replace`, so a crash or a serialisation error
never leaves a half-written report (the previous one stays intact). The writers return
None on success and raise :class:`OSError` otherwise (:class:`ReportWriteError`, a subclass,
for anything that is not an I/O error), so one ``except OSError`` is enough for the caller.

The HTML is one self-contained file: inline CSS and inline SVG charts, no JavaScript, no
external URL. Every test id and message is HTML-escaped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import hashlib
import html
import json
import math
import os
import pathlib
import platform
import re
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from . import __version__
from .grouping import groups
from .results import CLEAN, INCONCLUSIVE, LEAK, NO_VERDICT
from .units import format_duration, format_size

SCHEMA = "pytest-memleak/1"
STATUSES: tuple[str, ...] = (LEAK.value, INCONCLUSIVE.value, NO_VERDICT.value, CLEAN.value)
MAX_DETAILED = 300  # leaking/inconclusive tests with a full detail section and charts
MAX_CHARTED_OTHERS = 200  # other tests that get a sparkline in the table
MAX_CHART_POINTS = 600  # points per line in a chart; longer series are downsampled
MAX_SUMMARY_ROWS = 50  # rows per table in the GitHub step summary
MAX_SUMMARY_BYTES = 900_000  # GitHub refuses step summaries over 1 MiB

_ORDER: dict[str, int] = {LEAK.value: 0, INCONCLUSIVE.value: 1, NO_VERDICT.value: 3, CLEAN.value: 4}  # unknown statuses sort at 2


class ReportWriteError(OSError):
    """A report could not be produced for a reason other than I/O (e.g. a value JSON cannot hold)."""


# --------------------------------------------------------------------------- files


def ensure_dir(path: str | os.PathLike[str]) -> str | None:
    """Create ``path`` (a directory) if needed and check that files can be written in it.

    Returns None when the directory is usable, or a one-line problem; never raises.
    """
    try:
        directory = os.fspath(path)
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".memleak-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except (OSError, TypeError, ValueError) as exc:
        return f"cannot write reports to {path}: {exc}"
    return None


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path`` and move it into place.

    Raises OSError; any other exception from ``write`` becomes :class:`ReportWriteError`.
    Either way the temporary file is removed and a previous ``path`` is left untouched.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a report is an ordinary file
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) or not isinstance(exc, Exception):
            raise
        raise ReportWriteError(f"could not write {target}: {type(exc).__name__}: {exc}") from exc
    _fsync_dir(directory)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    def write(handle: IO[str]) -> None:
        handle.write(text)

    atomic_write(path, write)


def _fsync_dir(directory: str) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- data


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    to_dict = getattr(item, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    raise TypeError(f"a result must be a dict, not {type(item).__name__}")


def _materialise(items: Iterable[Any] | None) -> list[dict[str, Any]]:
    return [_as_dict(item) for item in (items or ())]


def _inputs(
    path: Any, tests: Iterable[Any] | None, soaks: Iterable[Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Materialise both inputs once; a failing input (a corrupt results file) is a ReportWriteError."""
    try:
        return _materialise(tests), _materialise(soaks)
    except OSError:
        raise
    except Exception as exc:
        raise ReportWriteError(f"could not write {path}: reading the results failed: {type(exc).__name__}: {exc}") from exc


def _num(value: Any, default: float | None = None) -> float | None:
    """A finite float, or ``default``."""
    if isinstance(value, bool) or value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become None; unknown types raise TypeError."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_plain(v) for v in sorted(value, key=repr)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if callable(tolist) and hasattr(value, "dtype"):
        return _plain(tolist())
    raise TypeError(f"{type(value).__name__} value {value!r:.80} is not JSON serialisable")


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def default_meta() -> dict[str, Any]:
    """Versions and platform, for ``meta``; the caller's keys are added on top."""
    return {
        "plugin_version": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "pytest": _version("pytest"),
        "memray": _version("memray"),
        "platform": sys.platform,
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _status(result: Mapping[str, Any]) -> str:
    return _text(result.get("status")) or "unknown"


def _expectation_mismatch(soak: Mapping[str, Any]) -> bool:
    expect = soak.get("expect_leak")
    status = _status(soak)
    if not isinstance(expect, bool) or status not in (LEAK, CLEAN):
        return False
    return (status == LEAK) != expect


def summarize(tests: Iterable[Mapping[str, Any]], soaks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by status and the ids that need attention (the ``summary`` object of the JSON)."""
    tests = list(tests)
    soaks = list(soaks)
    by_status: dict[str, int] = {s: 0 for s in STATUSES}
    for t in tests:
        by_status[_status(t)] = by_status.get(_status(t), 0) + 1
    soaks_by_status: dict[str, int] = {s: 0 for s in STATUSES}
    for s in soaks:
        soaks_by_status[_status(s)] = soaks_by_status.get(_status(s), 0) + 1
    return {
        "tests": len(tests),
        "by_status": by_status,
        "leaking": [_text(t.get("nodeid")) for t in tests if _status(t) == LEAK],
        "inconclusive": [_text(t.get("nodeid")) for t in tests if _status(t) == INCONCLUSIVE],
        "retained_per_run_leaking": sum(
            _num(t.get("retained_per_run"), 0.0) or 0.0 for t in tests if _status(t) == LEAK
        ),
        "with_problems": sum(1 for t in tests if t.get("problems")),
        "groups": groups(tests),
        "soaks": len(soaks),
        "soaks_by_status": soaks_by_status,
        "soaks_leaking": [_text(s.get("nodeid")) for s in soaks if _status(s) == LEAK],
        "soaks_unexpected": [_text(s.get("nodeid")) for s in soaks if _expectation_mismatch(s)],
    }


# --------------------------------------------------------------------------- JSON


def write_json(
    path: str | os.PathLike[str],
    tests: Iterable[Mapping[str, Any]],
    soaks: Iterable[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write ``memleak.json`` (schema ``pytest-memleak/1``, see docs/report-schema.md) atomically.

    One test or soak per line inside the ``tests`` and ``soaks`` arrays, so the file is both
    valid JSON and easy to grep. Raises OSError.
    """
    test_list, soak_list = _inputs(path, tests, soaks)
    full_meta = {**default_meta(), **dict(meta or {})}

    def write(out: IO[str]) -> None:
        def dump(value: Any, indent: int | None = None) -> str:
            return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False, indent=indent)

        out.write("{\n")
        out.write(f'"schema": {json.dumps(SCHEMA)},\n')
        out.write(f'"meta": {dump(full_meta, 1)},\n')
        out.write(f'"summary": {dump(summarize(test_list, soak_list), 1)},\n')
        for key, items, last in (("tests", test_list, False), ("soaks", soak_list, True)):
            out.write(f'"{key}": [')
            for i, item in enumerate(items):
                out.write(",\n" if i else "\n")
                out.write(dump(item))
            out.write("\n]" if items else "]")
            out.write("\n" if last else ",\n")
        out.write("}\n")

    atomic_write(path, write)


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _anchor(nodeid: str, prefix: str = "t") -> str:
    return f"{prefix}-" + hashlib.sha256(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:12]


_BYTE_WORDS = {"traced", "heap", "rss", "uss", "pss", "native", "bytes", "memory", "vms", "size", "peak"}


def _metric_is_bytes(name: str) -> bool:
    last = name.rsplit(".", 1)[-1].lower()
    return last in _BYTE_WORDS or last.endswith("bytes")


def _fmt_count(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _fmt_value(value: float, is_bytes: bool, signed: bool = False) -> str:
    if is_bytes:
        return format_size(value, signed=signed)
    text = _fmt_count(abs(value) if signed else value)
    return ("+" if value >= 0 else "-") + text if signed else text


def _fmt_budget(amount: Any, unit: Any) -> str:
    number = _num(amount)
    if number is None:
        return "—"
    return (format_size(number) if unit == "B" else _fmt_count(number)) + "/run"


def _fmt_time(value: Any) -> str:
    number = _num(value)
    if number is not None and number > 1e8:  # an epoch timestamp
        return _dt.datetime.fromtimestamp(number, _dt.timezone.utc).isoformat(timespec="seconds")
    return _text(value)


def _href(target: str, html_dir: str) -> str:
    """A link from the HTML file to ``target`` (a relative target is taken from the cwd)."""
    absolute = os.path.abspath(target)
    try:
        relative = os.path.relpath(absolute, html_dir)
    except ValueError:  # another drive on Windows
        return pathlib.Path(absolute).as_uri()
    return urllib.parse.quote(relative.replace(os.sep, "/"), safe="/")


# --------------------------------------------------------------------------- SVG charts

_BLUE, _PURPLE, _ORANGE, _RED, _GREY = "#1f6feb", "#8250df", "#d4700a", "#c62828", "#59636e"
_AXIS = "#8c959f"
_GRID = "#e6e9ed"


def _finite_points(xs: Iterable[Any], ys: Iterable[Any]) -> list[tuple[float, float]]:
    points = []
    for x, y in zip(xs, ys, strict=False):
        fx, fy = _num(x), _num(y)
        if fx is not None and fy is not None:
            points.append((fx, fy))
    return points


def _downsample(points: list[tuple[float, float]], limit: int = MAX_CHART_POINTS) -> list[tuple[float, float]]:
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
    return ticks, lambda v: _fmt_count(round(v, 6))


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
class _Line:
    label: str
    points: list[tuple[float, float]]
    color: str
    dash: str | None = None
    width: float = 1.8
    dots: bool = False


@dataclasses.dataclass
class _HLine:
    value: float
    label: str
    color: str


def _chart(
    lines: list[_Line],
    *,
    width: int,
    height: int,
    is_bytes: bool,
    x_time: bool,
    hlines: list[_HLine] = (),  # type: ignore[assignment]
    x_label: str = "",
    css_class: str = "chart",
    label: str = "chart",
) -> str:
    """A line chart with labelled axes, as inline SVG."""
    all_points = [p for line in lines for p in line.points]
    if not all_points:
        return ""
    xs = [p[0] for p in all_points]
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
        out.append(
            f'<text x="{width - right - 4:.1f}" y="{label_y:.1f}" text-anchor="end" fill="{h.color}" '
            f'style="fill:{h.color};font-weight:600">{_e(h.label)}</text>'
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


def _sparkline(values: list[float], is_bytes: bool, color: str = _GREY, width: int = 120, height: int = 28) -> str:
    """A tiny trend line. Changes under 0.5% of the level are drawn nearly flat: noise is not growth."""
    points = _downsample(_finite_points(range(len(values)), values), 200)
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
    tip = f"{_fmt_value(ys[0], is_bytes)} → {_fmt_value(ys[-1], is_bytes)} ({_fmt_value(growth, is_bytes, signed=True)})"
    return (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(tip)}"><title>{_e(tip)}</title>'
        f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/></svg>'
    )


# --------------------------------------------------------------------------- HTML pieces

_CSS = """
:root{--leak:#c62828;--inconclusive:#a35f00;--clean:#2e7d32;--nv:#616161;--fg:#1f2328;--muted:#59636e;
--border:#d1d9e0;--panel:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
margin:0;background:#fff}
header{padding:18px 28px 16px;border-bottom:1px solid var(--border);background:var(--panel)}
main{padding:4px 28px 40px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:18px;margin:26px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--border)}
h3{font-size:15px;margin:0 0 6px;display:flex;gap:8px;align-items:baseline;flex-wrap:wrap}
h4{font-size:13px;margin:10px 0 4px;color:var(--muted)}
a{color:#0969da}
.meta{color:var(--muted);font-size:13px;margin:0}
.counts{display:flex;gap:10px;flex-wrap:wrap;margin-top:12px}
.count{border:1px solid var(--border);border-radius:6px;padding:5px 12px;background:#fff;text-decoration:none;color:var(--fg)}
.count b{font-size:20px;margin-right:5px;font-variant-numeric:tabular-nums}
.count.leak b{color:var(--leak)}.count.inconclusive b{color:var(--inconclusive)}.count.clean b{color:var(--clean)}
.count.no-verdict b{color:var(--nv)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
white-space:nowrap;background:#57606a}
.badge.leak{background:var(--leak)}.badge.inconclusive{background:var(--inconclusive)}
.badge.clean{background:var(--clean)}.badge.no-verdict{background:var(--nv)}
.badge.ok{background:#fff;color:var(--clean);border:1px solid var(--clean)}
.badge.bad{background:#fff;color:var(--leak);border:1px solid var(--leak)}
table{border-collapse:collapse}
table.tests{width:100%;min-width:960px}
td.test{min-width:300px}
table.tests th{text-align:left;font-size:12px;color:var(--muted);font-weight:600;border-bottom:2px solid var(--border);
padding:6px 8px;position:sticky;top:0;background:#fff;z-index:1;white-space:nowrap}
table.tests td{border-bottom:1px solid var(--border);padding:6px 8px;vertical-align:top}
table.tests tr.leak>td:first-child{box-shadow:inset 3px 0 var(--leak)}
table.tests tr.inconclusive>td:first-child{box-shadow:inset 3px 0 var(--inconclusive)}
td.num,th.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.site{min-width:150px;max-width:280px;overflow-wrap:anywhere}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono",monospace}
code.id{overflow-wrap:anywhere}
.reason{color:var(--muted);font-size:12.5px;overflow-wrap:anywhere}
.small{font-size:12px;color:var(--muted)}
.problem{color:var(--inconclusive)}
tr.detail>td{background:var(--panel);padding:10px 12px 14px}
.detail-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:4px 28px}
.facts-line{margin-top:6px}
ul.plain{margin:2px 0;padding-left:18px}
table.kv td,table.kv th{padding:2px 10px 2px 0;font-size:12.5px;text-align:left;vertical-align:top}
table.kv th{color:var(--muted);font-weight:600}
pre{margin:4px 0;white-space:pre-wrap;overflow-wrap:anywhere;background:#fff;border:1px solid var(--border);
border-radius:4px;padding:6px 8px}
.charts{display:flex;flex-wrap:wrap;gap:10px;margin-top:6px}
figure{margin:0;background:#fff;border:1px solid var(--border);border-radius:6px;padding:6px 8px 4px;max-width:100%;
min-width:0}
figure.small-chart{width:320px}
svg.chart{max-width:100%;height:auto}
figcaption{font-size:12px;color:var(--muted);margin-bottom:2px}
figcaption b{color:var(--fg);font-weight:600}
svg{display:block;overflow:visible}
svg text{font-size:11px;font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#59636e}
svg.spark{display:inline-block;vertical-align:middle}
.card{border:1px solid var(--border);border-radius:8px;padding:14px 16px;margin:12px 0;background:#fff}
.card.leak{border-left:4px solid var(--leak)}
.soak-body{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
dl.facts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:3px 14px;margin:4px 0;font-size:13px;min-width:300px;max-width:460px}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;font-variant-numeric:tabular-nums}
.projection{font-weight:600}
.legend{display:flex;gap:14px;font-size:12px;color:var(--muted);margin:2px 0 4px;flex-wrap:wrap}
.legend i{display:inline-block;width:18px;height:0;border-top:2px solid;vertical-align:middle;margin-right:5px}
.legend i.dash{border-top-style:dashed}
.note{background:#fff8c5;border:1px solid #d4a72c66;border-radius:6px;padding:6px 10px;font-size:13px}
footer{padding:12px 28px 30px;color:var(--muted);font-size:12px;border-top:1px solid var(--border)}
"""


def _badge(status: str) -> str:
    known = status if status in STATUSES else "other"
    return f'<span class="badge {known}">{_e(status)}</span>'


def _series_values(series: Any, name: str) -> list[float]:
    if not isinstance(series, Mapping):
        return []
    values = series.get(name)
    if not isinstance(values, (list, tuple)):
        return []
    return [v for v in (_num(x) for x in values) if v is not None]


_PRIMARY = ("confirm.heap", "confirm.traced", "heap", "traced", "screen.blocks", "blocks", "confirm.rss", "screen.rss", "rss")


def _primary_metric(series: Any) -> str | None:
    if not isinstance(series, Mapping):
        return None
    for name in _PRIMARY:
        if len(_series_values(series, name)) >= 2:
            return name
    for name in series:
        if len(_series_values(series, str(name))) >= 2:
            return str(name)
    return None


def _ordered_metrics(series: Mapping[str, Any]) -> list[str]:
    names = [str(n) for n in series]
    first = [n for n in _PRIMARY if n in series]
    return first + [n for n in names if n not in first]


def _budget_cell(test: Mapping[str, Any]) -> str:
    findings = test.get("findings") or []
    if findings and isinstance(findings[0], Mapping):
        f = findings[0]
        return f'{_e(_fmt_budget(f.get("budget"), f.get("unit")))}<div class="small">{_e(f.get("kind"))}</div>'
    settings = test.get("settings")
    if isinstance(settings, Mapping) and _num(settings.get("retained")) is not None:
        return _e(_fmt_budget(settings.get("retained"), "B"))
    return "—"


def _top_site_cell(test: Mapping[str, Any]) -> str:
    sites = test.get("sites") or []
    if not sites or not isinstance(sites[0], Mapping):
        return "—"
    site = sites[0]
    rate = _num(site.get("bytes_per_run"))
    rate_text = f'<div class="small">{_e(format_size(rate))}/run</div>' if rate is not None else ""
    return f"<code>{_e(site.get('site'))}</code>{rate_text}"


def _link_cell(test: Mapping[str, Any], html_dir: str) -> str:
    target = test.get("flamegraph")
    if not target or not isinstance(target, (str, os.PathLike)):
        return "—"
    target = os.fspath(target)
    if not os.path.exists(target):
        return f'<span class="small" title="{_e(target)}">missing</span>'
    return f'<a href="{_e(_href(target, html_dir))}">flamegraph</a>'


def _test_row(test: Mapping[str, Any], html_dir: str, spark: bool, detail_id: str | None) -> str:
    status = _status(test)
    nodeid = _text(test.get("nodeid"))
    retained = _num(test.get("retained_per_run"))
    measured = status in (LEAK, CLEAN) and retained is not None
    retained_text = f"{_e(format_size(retained))}/run" if measured and retained is not None else "—"
    spark_svg = ""
    if spark:
        metric = _primary_metric(test.get("series"))
        if metric:
            color = _RED if status == LEAK else "#a35f00" if status == INCONCLUSIVE else _GREY
            spark_svg = _sparkline(_series_values(test.get("series"), metric), _metric_is_bytes(metric), color)
            spark_svg += f'<div class="small">{_e(metric)}</div>' if spark_svg else ""
    name = f'<code class="id">{_e(nodeid)}</code>'
    reason = _text(test.get("reason"))
    if test.get("peak_over"):
        reason = f"{_text(test.get('peak_over'))}; {reason}" if reason else _text(test.get("peak_over"))
    if test.get("known") is True:
        reason = f"known leak (baseline), the test passed: {reason}"
    elif test.get("warned") is True:
        reason = f"warn-only, the test passed: {reason}"
    reason_html = f'<div class="reason">{_e(reason)}</div>' if reason else ""
    css = status if status in STATUSES else "other"
    return (
        f'<tr class="{css}" id="{_anchor(nodeid, "row")}"><td>{_badge(status)}</td><td class="test">{name}{reason_html}</td>'
        f'<td class="num">{retained_text}</td><td class="site">{_top_site_cell(test)}</td>'
        f'<td class="num">{_budget_cell(test)}</td><td>{spark_svg}</td><td>{_link_cell(test, html_dir)}</td></tr>\n'
    )


def _list_section(title: str, items: Any, css: str = "") -> str:
    if not items or not isinstance(items, (list, tuple)):
        return ""
    klass = f' class="plain {css}"' if css else ' class="plain"'
    return f"<h4>{_e(title)}</h4><ul{klass}>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _detail_row(test: Mapping[str, Any], detail_id: str) -> str:
    """Findings, charts of the measured series, sites, types, retention: "" when there is nothing."""
    head: list[str] = []
    parts: list[str] = []
    findings = [f for f in test.get("findings") or [] if isinstance(f, Mapping)]
    if findings:
        head.append("<h4>Findings</h4><ul class=\"plain\">")
        for f in findings:
            per_run = _num(f.get("per_run"))
            unit = f.get("unit")
            amount = (format_size(per_run) if unit == "B" else _fmt_count(per_run)) + "/run" if per_run is not None else ""
            evidence = "".join(f"<li><code>{_e(x)}</code></li>" for x in f.get("evidence") or [])
            # the message already states the amount and the budget; say them only when it is empty
            message = _text(f.get("message")) or f"{amount} (budget {_fmt_budget(f.get('budget'), unit)})"
            head.append(
                f"<li><b>{_e(f.get('kind'))}</b>: {_e(message)}"
                + (f'<ul class="plain">{evidence}</ul>' if evidence else "")
                + "</li>"
            )
        head.append("</ul>")
    sites = [s for s in test.get("sites") or [] if isinstance(s, Mapping)]
    if sites:
        rows = []
        for s in sites:
            bpr, blk = _num(s.get("bytes_per_run")), _num(s.get("blocks_per_run"))
            total = _num(s.get("total_bytes"))
            stack = s.get("stack") or []
            stack_html = (
                "<details><summary class=\"small\">stack</summary><pre>" + _e("\n".join(map(str, stack))) + "</pre></details>"
                if stack
                else ""
            )
            rows.append(
                f"<tr><td><code>{_e(s.get('site'))}</code>{stack_html}</td>"
                f'<td class="num">{_e(format_size(bpr)) + "/run" if bpr is not None else "—"}</td>'
                f'<td class="num">{_e(_fmt_count(round(blk, 1))) + "/run" if blk is not None else "—"}</td>'
                f'<td class="num">{_e(format_size(total)) if total is not None else "—"}</td></tr>'
            )
        parts.append(
            '<h4>Allocation sites</h4><table class="kv"><tr><th>site</th><th>bytes</th><th>blocks</th><th>total</th></tr>'
            + "".join(rows)
            + "</table>"
        )
    types = test.get("grown_types")
    if isinstance(types, Mapping) and types:
        type_rows = "".join(
            f'<tr><td><code>{_e(k)}</code></td><td class="num">+{_e(_fmt_count(round(_num(v, 0.0) or 0.0, 1)))}/run</td></tr>'
            for k, v in list(types.items())[:20]
        )
        parts.append(f'<h4>Object types that grew</h4><table class="kv">{type_rows}</table>')
    retention = test.get("retention")
    if isinstance(retention, (list, tuple)) and retention:
        parts.append("<h4>Kept alive by</h4><pre>" + _e("\n".join(map(str, retention))) + "</pre>")
    parts.append(_list_section("Details", test.get("details")))
    parts.append(_list_section("Measurement problems", test.get("problems"), "problem"))
    capture = test.get("capture")
    if isinstance(capture, str) and capture:
        parts.append(
            f'<h4>memray capture</h4><div class="small"><code>{_e(capture)}</code> — '
            f"open with <code>memray stats</code>, <code>memray tree</code> or <code>memray flamegraph --leaks</code></div>"
        )
    charts = _series_charts(test.get("series"), _num(test.get("runs_per_step")))
    parts = [p for p in parts if p]
    if not head and not parts and not charts:
        return ""
    runs = _num(test.get("runs"), 0.0) or 0.0
    measured = _num(test.get("measured_runs"), 0.0) or 0.0
    seconds = _num(test.get("seconds"), 0.0) or 0.0
    facts = []
    if runs:
        facts.append(f"{int(runs)} runs, {int(measured)} measured")
    if seconds > 0:
        facts.append(f"checked in {format_duration(seconds)}")
    if facts:
        parts.append(f'<div class="small facts-line">{_e(", ".join(facts))}</div>')
    grid = "".join(f"<div>{p}</div>" for p in parts)
    return (
        f'<tr class="detail" id="{detail_id}"><td></td><td colspan="6">{"".join(head)}{charts}'
        f'<div class="detail-grid">{grid}</div></td></tr>\n'
    )


def _series_charts(series: Any, runs_per_step: float | None = None) -> str:
    if not isinstance(series, Mapping) or not series:
        return ""
    figures: list[str] = []
    constant: list[str] = []
    for name in _ordered_metrics(series):
        values = _series_values(series, name)
        if not values:
            continue
        is_bytes = _metric_is_bytes(name)
        if len(values) < 2 or max(values) == min(values):
            constant.append(f"{name} = {_fmt_value(values[0], is_bytes)}")
            continue
        step = "run" if name.startswith("screen.") else "checkpoint" if name.startswith("confirm.") else "sample"
        points = _downsample([(i + 1.0, v) for i, v in enumerate(values)])
        growth = values[-1] - values[0]
        svg = _chart(
            [_Line(name, points, _RED if growth > 0 else _BLUE, dots=True)],
            width=300,
            height=130,
            is_bytes=is_bytes,
            x_time=False,
            x_label=step,
            css_class="chart series-chart",
            label=f"{name} over {len(values)} {step}s",
        )
        unit = "bytes" if is_bytes else "count"
        every = f" of {int(runs_per_step)} runs" if step == "checkpoint" and runs_per_step and runs_per_step > 1 else ""
        figures.append(
            f'<figure class="small-chart"><figcaption><b>{_e(name)}</b> ({unit}) · {_e(_fmt_value(growth, is_bytes, signed=True))} '
            f"over {len(values)} {step}s{every}</figcaption>{svg}</figure>"
        )
    out = ""
    if figures:
        out += '<h4>Measured series</h4><div class="charts">' + "".join(figures) + "</div>"
    if constant:
        out += f'<div class="small" style="margin-top:6px">Unchanged: {_e(", ".join(constant))}</div>'
    return out


def _soak_card(soak: Mapping[str, Any], html_dir: str) -> str:
    status = _status(soak)
    nodeid = _text(soak.get("nodeid"))
    facts: list[tuple[str, str]] = []
    scenario = " / ".join(x for x in (_text(soak.get("scenario")), _text(soak.get("variant"))) if x)
    if scenario:
        facts.append(("scenario", _e(scenario)))
    duration, iterations = _num(soak.get("duration")), _num(soak.get("iterations"))
    if duration is not None:
        facts.append(("duration", _e(format_duration(duration))))
    if iterations is not None:
        throughput = _num(soak.get("throughput"))
        rate = f" ({throughput:,.1f}/s)" if throughput else ""
        facts.append(("iterations", _e(f"{_fmt_count(iterations)}{rate}")))
    metric = _text(soak.get("metric")) or "rss"
    slope_h = _num(soak.get("slope_per_hour"))
    if slope_h is not None:
        lower, upper = _num(soak.get("slope_lower")), _num(soak.get("slope_upper"))
        confidence = _num(soak.get("confidence"))
        pct = f"{confidence * 100:g}% " if confidence and 0 < confidence < 1 else ""
        interval = (
            f" ({pct}CI {format_size(lower, signed=True)} … {format_size(upper, signed=True)})"
            if lower is not None and upper is not None and (lower or upper)
            else ""
        )
        facts.append((f"{metric} trend", _e(f"{format_size(slope_h, signed=True)}/h{interval}")))
    slope_it = _num(soak.get("slope_per_iteration"))
    if slope_it:
        facts.append(("per iteration", _e(f"{format_size(slope_it, signed=True)}")))
    if soak.get("plateaued"):
        facts.append(("plateau", "memory levelled off"))
    limit = _num(soak.get("memory_limit"))
    ttl = _num(soak.get("time_to_limit"))
    if limit is not None and limit > 0:
        facts.append(("memory limit", _e(format_size(limit))))
        if ttl is None:
            projection = f"does not reach the {format_size(limit)} limit at the fitted rate"
        elif ttl <= 0:
            projection = f"already at or above the {format_size(limit)} limit"
        else:
            projection = f"projected to reach the {format_size(limit)} limit in {format_duration(ttl)}"
        facts.append(("projection", f'<span class="projection">{_e(projection)}</span>'))
    else:
        facts.append(("memory limit", "none set"))
    expect = soak.get("expect_leak")
    if isinstance(expect, bool):
        wanted = "expected to leak" if expect else "expected not to leak"
        if status in (LEAK, CLEAN):
            ok = (status == LEAK) == expect
            mark = '<span class="badge ok">as expected</span>' if ok else '<span class="badge bad">unexpected</span>'
        else:
            mark = ""
        facts.append(("expectation", f"{_e(wanted)} {mark}"))
    if soak.get("watched"):
        facts.append(("watched", _e(_text(soak.get("watched")))))
    if soak.get("exit"):
        facts.append(("exit", _e(f"the service exited with {_text(soak.get('exit'))}")))
    for key, name in (("samples_path", "samples"), ("flamegraph", "live flamegraph")):
        path = soak.get(key)
        if isinstance(path, str) and path:
            facts.append((name, f'<a href="{_e(_href(path, html_dir))}">{_e(os.path.basename(path))}</a>'))
    facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    chart = _soak_chart(soak)
    reason = _text(soak.get("reason"))
    extra = _list_section("Details", soak.get("details")) + _list_section(
        "Measurement problems", soak.get("problems"), "problem"
    )
    css = "card soak leak" if status == LEAK else "card soak"
    return (
        f'<article class="{css}" id="{_anchor(nodeid, "soak")}"><h3>{_badge(status)} <code class="id">{_e(nodeid)}</code></h3>'
        + (f'<div class="reason">{_e(reason)}</div>' if reason else "")
        + f'<div class="soak-body"><dl class="facts">{facts_html}</dl>{chart}</div>{extra}</article>\n'
    )


def _soak_chart(soak: Mapping[str, Any]) -> str:
    raw_t = soak.get("t")
    t: list[Any] = list(raw_t) if isinstance(raw_t, (list, tuple)) else []
    lines: list[_Line] = []
    legend: list[str] = []
    rss_label = f"RSS of pid {soak['watched_pid']} and children" if soak.get("watched_pid") else "RSS"
    for key, label, color in (("rss", rss_label, _BLUE), ("heap", "Python heap", _PURPLE)):
        values = soak.get(key)
        if isinstance(values, (list, tuple)):
            points = _downsample(_finite_points(t, values))
            if points:
                lines.append(_Line(label, points, color))
                legend.append(f'<span><i style="border-color:{color}"></i>{_e(label)}</span>')
    if not lines:
        return '<p class="small">No samples to chart.</p>'
    xs = [p[0] for line in lines for p in line.points]
    intercept, slope = _num(soak.get("fit_intercept")), _num(soak.get("fit_slope_per_second"))
    if intercept is not None and slope is not None and (intercept or slope):
        x0, x1 = min(xs), max(xs)
        lines.append(_Line("trend", [(x0, intercept + slope * x0), (x1, intercept + slope * x1)], _ORANGE, dash="8 5", width=1.6))
        per_hour = format_size(slope * 3600, signed=True)
        legend.append(f'<span><i class="dash" style="border-color:{_ORANGE}"></i>fitted trend ({_e(per_hour)}/h)</span>')
    hlines: list[_HLine] = []
    limit = _num(soak.get("memory_limit"))
    if limit is not None and limit > 0:
        data_hi = max(p[1] for line in lines for p in line.points)
        data_lo = min(p[1] for line in lines for p in line.points)
        # draw the limit inside the chart unless it would squash the data into a flat line
        if limit <= data_hi + 4 * max(data_hi - data_lo, 0.05 * data_hi):
            hlines.append(_HLine(limit, f"limit {format_size(limit)}", _RED))
            legend.append(f'<span><i class="dash" style="border-color:{_RED}"></i>memory limit</span>')
        else:
            legend.append(f'<span style="color:{_RED}">memory limit {_e(format_size(limit))}: above the chart</span>')
    label = f"memory over time for {_text(soak.get('nodeid'))}"
    svg = _chart(
        lines, width=640, height=260, is_bytes=True, x_time=True, hlines=hlines,
        x_label="time since start", css_class="chart soak-chart", label=label,
    )
    return f'<figure><div class="legend">{"".join(legend)}</div>{svg}</figure>'


def _groups_section(leak_groups: list[dict[str, Any]]) -> str:
    """Leaks that share a frame outside the tests, each group once, its tests listed under it."""
    rows = []
    for group in leak_groups:
        tests = "".join(f'<li><a href="#{_anchor(t, "row")}"><code class="id">{_e(t)}</code></a></li>' for t in group["tests"][:50])
        more = f'<li class="small">and {group["count"] - 50:,} more</li>' if group["count"] > 50 else ""
        rows.append(
            f'<tr class="leak"><td class="num">{group["count"]:,}</td><td class="site"><code>{_e(group["site"])}</code></td>'
            f'<td class="num">{_e(format_size(group["retained_per_run"]))}/run</td>'
            f"<td><details><summary>tests</summary><ul>{tests}{more}</ul></details></td></tr>"
        )
    return (
        f'<section id="groups"><h2>Leak groups ({len(leak_groups):,})</h2>\n'
        '<p class="small">Leaking tests whose retained memory was allocated through the same line outside the tests: '
        "one cause, most likely, counted once.</p>\n"
        '<table><thead><tr><th>tests</th><th>through</th><th>retained, all of them</th><th></th></tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></section>\n"
    )


def _meta_line(meta: Mapping[str, Any]) -> str:
    parts = []
    if meta.get("started"):
        parts.append(f"started {_fmt_time(meta.get('started'))}")
    duration = _num(meta.get("duration"))
    if duration is not None:
        parts.append(f"session {format_duration(duration)}")
    versions = [
        f"{name} {meta.get(key)}"
        for key, name in (("python", "Python"), ("pytest", "pytest"), ("memray", "memray"), ("plugin_version", "pytest-memleak"))
        if meta.get(key)
    ]
    parts.extend(versions)
    if meta.get("platform"):
        parts.append(_text(meta.get("platform")))
    return " · ".join(parts)


def _settings_footer(meta: Mapping[str, Any]) -> str:
    settings = meta.get("settings")
    if not isinstance(settings, Mapping) or not settings:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in settings.items())
    return f'<details><summary>Settings</summary><table class="kv">{rows}</table></details>'


def _html_chunks(
    tests: list[dict[str, Any]], soaks: list[dict[str, Any]], meta: Mapping[str, Any], html_dir: str
) -> Iterator[str]:
    summary = summarize(tests, soaks)
    by_status = summary["by_status"]
    title = "pytest-memleak report"
    yield (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="generator" content="pytest-memleak {_e(__version__)}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
    )
    counts = [
        f'<a class="count {s}" href="#tests"><b>{by_status.get(s, 0):,}</b>{label}</a>'
        for s, label in ((LEAK, "leaking"), (INCONCLUSIVE, "inconclusive"), (CLEAN, "clean"), (NO_VERDICT, "no verdict"))
    ]
    others = sum(v for k, v in by_status.items() if k not in STATUSES)
    if others:
        counts.append(f'<a class="count" href="#tests"><b>{others:,}</b>other</a>')
    if soaks:
        soak_leaks = summary["soaks_by_status"].get(LEAK, 0)
        counts.append(
            f'<a class="count{" leak" if soak_leaks else ""}" href="#soaks"><b>{len(soaks):,}</b>'
            f'soak run{"s" if len(soaks) != 1 else ""}'
            + (f", {soak_leaks:,} leaking" if soak_leaks else "")
            + "</a>"
        )
    headline = (
        f"{by_status.get(LEAK, 0):,} of {len(tests):,} checked tests leak"
        if by_status.get(LEAK, 0)
        else f"No leaks in {len(tests):,} checked test{'s' if len(tests) != 1 else ''}"
    )
    yield (
        f"<header><h1>{_e(title)}</h1><p class=\"meta\"><b>{_e(headline)}</b> · {_e(_meta_line(meta))}</p>"
        f'<div class="counts">{"".join(counts)}</div></header>\n<main>\n'
    )

    if soaks:
        ordered_soaks = sorted(soaks, key=lambda s: (_ORDER.get(_status(s), 2), _text(s.get("nodeid"))))
        yield f'<section id="soaks"><h2>Soak runs ({len(soaks):,})</h2>\n'
        for soak in ordered_soaks:
            yield _soak_card(soak, html_dir)
        yield "</section>\n"

    if summary["groups"]:
        yield _groups_section(summary["groups"])

    yield f'<section id="tests"><h2>Checked tests ({len(tests):,})</h2>\n'
    if not tests:
        yield '<p class="small">No test was checked for leaks.</p></section>\n'
    else:
        ordered = sorted(
            tests,
            key=lambda t: (
                _ORDER.get(_status(t), 2),
                -(_num(t.get("retained_per_run"), 0.0) or 0.0) if _status(t) == LEAK else 0.0,
                _text(t.get("nodeid")),
            ),
        )
        attention = [t for t in ordered if _status(t) not in (CLEAN, NO_VERDICT)]
        rest = len(ordered) - len(attention)
        notes = []
        if len(attention) > MAX_DETAILED:
            notes.append(
                f"Detail sections with charts are shown for the first {MAX_DETAILED:,} of "
                f"{len(attention):,} leaking or inconclusive tests; the JSON report has them all."
            )
        if rest > MAX_CHARTED_OTHERS:
            notes.append(
                f"Sparklines are shown for the first {MAX_CHARTED_OTHERS:,} of {rest:,} other tests; "
                "the rest are listed without charts."
            )
        for note in notes:
            yield f'<p class="note">{_e(note)}</p>\n'
        yield (
            '<table class="tests"><thead><tr><th>Verdict</th><th>Test</th><th class="num">Retained / run</th>'
            '<th>Top site</th><th class="num">Budget</th><th>Trend</th><th>Flamegraph</th></tr></thead><tbody>\n'
        )
        detailed = charted = 0
        for test in ordered:
            needs_attention = _status(test) not in (CLEAN, NO_VERDICT)
            detail_id = None
            if needs_attention and detailed < MAX_DETAILED:
                detailed += 1
                detail_id = _anchor(_text(test.get("nodeid")))
                spark = True
            elif not needs_attention and charted < MAX_CHARTED_OTHERS:
                charted += 1
                spark = True
            else:
                spark = False
            yield _test_row(test, html_dir, spark, detail_id)
            if detail_id:
                yield _detail_row(test, detail_id)
        yield "</tbody></table></section>\n"

    yield (
        f"</main><footer>Written by pytest-memleak {_e(__version__)} · schema {_e(SCHEMA)} · "
        f"generated {_e(_fmt_time(meta.get('generated')))} · the JSON report holds every field"
        f"{_settings_footer(meta)}</footer>\n</body></html>\n"
    )


def write_html(
    path: str | os.PathLike[str],
    tests: Iterable[Mapping[str, Any]],
    soaks: Iterable[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write ``memleak.html``: one self-contained page (inline CSS and SVG, no scripts). Raises OSError.

    Links to flamegraphs and sample files are relative to the HTML file; a relative path in a
    result is taken relative to the current working directory.
    """
    test_list, soak_list = _inputs(path, tests, soaks)
    full_meta = {**default_meta(), **dict(meta or {})}
    html_dir = os.path.dirname(os.path.abspath(os.fspath(path)))

    def write(out: IO[str]) -> None:
        for chunk in _html_chunks(test_list, soak_list, full_meta, html_dir):
            out.write(chunk)

    atomic_write(path, write)


# --------------------------------------------------------------------------- GitHub summary


_MD_ESCAPES = {ord(c): f"&#{ord(c)};" for c in "\\|`*_[]~@"}
_AUTOLINK = re.compile(r"(?i)(://|www\.)")


def _md_cell(value: Any, code: bool = False) -> str:
    """Table-cell text for GitHub Markdown: HTML-escaped, pipes and newlines neutralised."""
    text = html.escape(" ".join(_text(value).split()), quote=False)
    # Markdown still applies inside inline HTML: neutralise every character that could start
    # a table cell, code span, emphasis, strikethrough, link or autolink.
    text = _AUTOLINK.sub(lambda m: "&#58;//" if m.group(1) == "://" else m.group(1)[:3] + "&#46;", text.translate(_MD_ESCAPES))
    return f"<code>{text}</code>" if code and text else text


def github_summary(
    tests: Iterable[Mapping[str, Any]],
    soaks: Iterable[Mapping[str, Any]],
    *,
    max_rows: int = MAX_SUMMARY_ROWS,
    report: str | None = None,
) -> str:
    """A Markdown summary for ``$GITHUB_STEP_SUMMARY``: leaks, inconclusive tests and soak verdicts.

    ``report`` (optional) names the HTML report, mentioned at the end.
    """
    test_list = _materialise(tests)
    soak_list = _materialise(soaks)
    summary = summarize(test_list, soak_list)
    by_status = summary["by_status"]
    leaks = sorted(
        (t for t in test_list if _status(t) == LEAK),
        key=lambda t: (-(_num(t.get("retained_per_run"), 0.0) or 0.0), _text(t.get("nodeid"))),
    )
    inconclusive = [t for t in test_list if _status(t) == INCONCLUSIVE]
    lines = ["## pytest-memleak", ""]
    if leaks:
        lines.append(f"**{len(leaks):,} of {len(test_list):,} checked tests leak.**")
    else:
        lines.append(f"No leaks in {len(test_list):,} checked test{'s' if len(test_list) != 1 else ''}.")
    lines.append(
        f"{by_status.get(CLEAN, 0):,} clean · {by_status.get(LEAK, 0):,} leaking · "
        f"{by_status.get(INCONCLUSIVE, 0):,} inconclusive · {by_status.get(NO_VERDICT, 0):,} no verdict"
    )
    lines.append("")
    if leaks:
        lines += ["| Test | Retained / run | Top site | Why |", "|---|---:|---|---|"]
        for t in leaks[:max_rows]:
            sites = t.get("sites") or []
            site = sites[0].get("site") if sites and isinstance(sites[0], Mapping) else ""
            retained = _num(t.get("retained_per_run"))
            lines.append(
                f"| {_md_cell(t.get('nodeid'), code=True)} | {format_size(retained) + '/run' if retained is not None else '—'} "
                f"| {_md_cell(site, code=True) or '—'} | {_md_cell(t.get('reason'))} |"
            )
        if len(leaks) > max_rows:
            lines.append(f"| … and {len(leaks) - max_rows:,} more | | | |")
        lines.append("")
    if inconclusive:
        lines += ["<details><summary>Inconclusive tests</summary>", "", "| Test | Why |", "|---|---|"]
        for t in inconclusive[:max_rows]:
            lines.append(f"| {_md_cell(t.get('nodeid'), code=True)} | {_md_cell(t.get('reason'))} |")
        if len(inconclusive) > max_rows:
            lines.append(f"| … and {len(inconclusive) - max_rows:,} more | |")
        lines += ["", "</details>", ""]
    if soak_list:
        lines += ["| Soak | Verdict | Trend | Time to limit | Expected |", "|---|---|---:|---|---|"]
        ordered = sorted(soak_list, key=lambda s: (_ORDER.get(_status(s), 2), _text(s.get("nodeid"))))
        for s in ordered[:max_rows]:
            slope = _num(s.get("slope_per_hour"))
            limit = _num(s.get("memory_limit"))
            ttl = _num(s.get("time_to_limit"))
            if not limit:
                to_limit = "no limit"
            elif ttl is None:
                to_limit = "never"
            else:
                to_limit = f"{format_duration(ttl)} to {format_size(limit)}"
            expect = s.get("expect_leak")
            expected = "—"
            if isinstance(expect, bool):
                expected = ("leak" if expect else "no leak") + (" ⚠️ mismatch" if _expectation_mismatch(s) else " ✓")
            verdict = {LEAK.value: "🔴 leak", CLEAN.value: "🟢 clean", INCONCLUSIVE.value: "🟡 inconclusive"}.get(_status(s), _status(s))
            lines.append(
                f"| {_md_cell(s.get('nodeid'), code=True)} | {_md_cell(verdict)} | "
                f"{format_size(slope, signed=True) + '/h' if slope is not None else '—'} | {_md_cell(to_limit)} | {expected} |"
            )
        if len(ordered) > max_rows:
            lines.append(f"| … and {len(ordered) - max_rows:,} more | | | | |")
        lines.append("")
    if report:
        lines += [f"Full report: {_md_cell(report, code=True)}", ""]
    return "\n".join(lines)


def append_github_summary(text: str, env: Mapping[str, str] = os.environ) -> str | None:
    """Append ``text`` to the file named by ``$GITHUB_STEP_SUMMARY``, when that is set.

    Returns None on success (or when the variable is unset), else a one-line problem.
    """
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    data = text if text.endswith("\n") else text + "\n"
    encoded = data.encode("utf-8", "replace")
    if len(encoded) > MAX_SUMMARY_BYTES:
        cut = encoded[:MAX_SUMMARY_BYTES].decode("utf-8", "ignore")
        data = cut[: cut.rfind("\n") + 1] + "\n… (summary truncated; see the HTML report)\n"
    try:
        with open(target, "a", encoding="utf-8", errors="replace") as handle:
            handle.write("\n" + data)
    except OSError as exc:
        return f"could not append to $GITHUB_STEP_SUMMARY ({target}): {exc}"
    return None
