"""Soak tests: run a test body over and over for a duration, sample memory, judge the trend.

``@pytest.mark.memleak_soak(duration='30s', sample_every='0.5s', memory_limit='700 MiB',
max_growth='0 B', horizon='24h', warmup='10%', expect_leak=None, watch=None)``

With ``watch="<fixture>"`` the samples, the trend, the projection and the guard are those of
another process and its children (:mod:`pytest_memleak.soak_target`): a service the test's
fixture started. Its exit ends the soak with that finding; a watched service judged leaking
gets a live flamegraph (``memray attach``) while the body goes on driving it.

A busy machine keeps the loop waiting for a CPU (:class:`~pytest_memleak.soak_target.Contention`):
the loop runs on by that time, up to :data:`MAX_STRETCH` times its duration, so that it does
the work a quiet machine would; a leak found in too little work, or where throughput collapsed
and growth per second and per iteration disagree, is inconclusive (``_Runner._doubt``).

The protocol of a soak test (:func:`run_soak_protocol`): setup once, then the body
(``item.runtest()``) repeatedly inside the *call* phase until the duration has elapsed, then
teardown once. After each iteration the clock is checked; when a sample is due, the runner
calls ``gc.collect()`` and records elapsed seconds, iterations, RSS, the Python heap, open
descriptors, threads and throughput, streamed as JSON lines to
``<report_dir>/soak/<safe name>.jsonl`` (one ``os.write`` per line, so an interrupted or killed
soak keeps every sample written so far).

Lines of the JSONL file, each an object with a ``kind``:

* ``meta`` -- first line: nodeid, pid, start time, the soak settings;
* ``sample`` -- ``i, t`` (seconds since the loop started), ``iterations``, ``rss`` (bytes),
  ``heap_blocks`` (``sys.getallocatedblocks()``), ``heap_bytes`` (the allocators' bytes:
  pymalloc's blocks and malloc's, when tracemalloc is not tracing), ``traced`` (tracemalloc's
  current bytes when it was already tracing, else null), ``objects`` (``len(gc.get_objects())``, only every
  Nth sample, else null), ``fds``, ``threads`` (Python), ``os_threads``, ``throughput``
  (iterations per second since the previous sample), ``gc_ms`` (time of the collection);
* ``end`` -- the body stopped the soak: ``outcome`` is failed, skipped or interrupted;
* ``guard`` -- the memory guard stopped the soak early (see below): what it read and its limit;
* ``verdict`` -- last line of a completed soak: status, reason, rates.

The verdict fits :func:`pytest_memleak.trend.fit_level` to RSS and to the Python heap in bytes
(traced bytes when tracemalloc was already tracing, else the allocators' bytes; allocated blocks
only where neither can be read, a block then counting as at least :data:`MIN_BLOCK_BYTES` bytes
when compared with ``max_growth``): a trend of every sample, or of
the troughs (memory after each clean-up) of a series that saws, from which the time to the
memory limit is projected. A leak on either series counts, and ``SoakResult.leaked_metrics``
says which.

The memory guard (:mod:`pytest_memleak.guard`): with an explicit ``memory_limit`` the loop
compares RSS with it, and under a container's cgroup memory limit it compares the cgroup's
working set with that limit, per sample and at most every :data:`GUARD_EVERY` seconds between
samples. At ``limit - memory_margin`` (default 10% of the limit) the loop stops, takes a last
sample, and judges the trend it has: the test fails with that evidence ("stopped by the memory
guard"), and the verdict line is written, instead of the process being killed.

Scenario and variant (for the summary table) are the marker's ``scenario`` and ``variant``
when given; otherwise the test function's name without ``test_`` and the callspec id of a
parametrized test (none for another). Parts of a name are never guessed at:
``test_service_with_leak`` is scenario ``service_with_leak``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import sys
import threading
import time
import tracemalloc
import warnings
from array import array
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from . import compat, measuring, options, soak_target
from . import guard as memory_guard
from .results import CLEAN, INCONCLUSIVE, LEAK, NO_VERDICT, SoakResult, Status
from .trend import Level, Trend, fit_level, judge
from .units import (
    DURATION_FORM,
    SIZE_FORM,
    format_duration,
    format_size,
    parse_duration,
    parse_percent,
    parse_size,
)

DEFAULTS = options.SOAK_DEFAULTS
GUARD_EVERY = 0.01  # seconds between the memory guard's readings between samples
WATCH_EVERY = 0.05  # ...and between readings of a watched process tree (a walk of /proc)
EXIT_GRACE = 2.0  # seconds a watched process may take to die after a request to it failed
LIVE_SECONDS = 3.0  # seconds of a watched service's allocations that memray attach captures
MAX_STRETCH = 3.0  # a busy machine's soak runs on by the time it was contended, up to this times its duration
# (beside two busy loops and a second xdist worker a soak waited 63% of its time: at 2x, 6.0 s of 8 s of work)
WORK_SHORT = 0.75  # ...and a leak found in less work than this share of its duration is inconclusive
COLLAPSE = 0.5  # throughput of the window's last third below this share of its first third: a collapse
MIN_SAMPLES = 20  # below this many samples, a default or overridden sample_every scales down
TARGET_SAMPLES = 30  # ...to give this many
MAX_KEPT_SAMPLES = 16384  # in memory for the fit (all samples go to the file); halved when full
CHART_POINTS = 300  # points in SoakResult.t/rss/heap
MIN_BLOCK_BYTES = 32  # a pymalloc block holding an object is at least this big
MAX_WARMUP_FRACTION = 0.9
CONFIDENCE = 0.95
PROGRESS_MIN_SECONDS = 5.0  # non-verbose runs show progress for soaks at least this long
PROGRESS_TTY_EVERY = 0.5
PROGRESS_PIPE_EVERY = 5.0
SAFE_NAME_LENGTH = 80

_FORMS = {
    "duration": DURATION_FORM,
    "sample_every": DURATION_FORM + ", shorter than the duration",
    "memory_limit": SIZE_FORM + ", or None for no limit",
    "max_growth": "a growth per hour such as '0 B', '512 KiB' or '2 MiB/h'",
    "horizon": DURATION_FORM + ", or None for no projection",
    "warmup": "a fraction of the duration such as '10%', or a duration such as '5s', shorter than the duration",
    "expect_leak": "True, False or None",
    "memory_margin": "a size such as '64 MiB', or a percentage of the limit such as '10%', smaller than memory_limit",
    "scenario": "a name for the summary table's scenario column, or None (the test function's name)",
    "variant": "a name for the summary table's variant column, or None (the parameter id)",
    "watch": f"the name of a fixture of the test that returns {soak_target.ACCEPTED}, or None (this process)",
}


# -- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakConfig:
    """The settings of one soak test, validated, after --memleak-soak-duration had its say."""

    duration: float  # seconds the body loops
    sample_every: float  # seconds between samples
    memory_limit: int | None  # bytes
    max_growth: int  # bytes per hour
    horizon: float | None  # seconds
    warmup_fraction: float  # of the duration, left out of the fit
    expect_leak: bool | None
    marker_duration: float
    overridden: bool  # the duration came from --memleak-soak-duration
    sample_scaled: bool  # sample_every was scaled down to give enough samples
    memory_limit_given: bool = False  # memory_limit came from the marker: the guard watches RSS against it
    memory_margin: str = memory_guard.DEFAULT_MARGIN  # how far below a limit the guard stops the soak
    scenario: str | None = None  # the summary table's names, when given (scenario_variant)
    variant: str | None = None
    watch: str | None = None  # a fixture of the test that returns the process to sample (soak_target)
    flamegraph: str = "failed"  # --memleak-flamegraph: a live flamegraph of a watched service that leaks (or all)

    def margin(self) -> memory_guard.Margin:
        return memory_guard.parse_margin(self.memory_margin)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def soak_config(item: pytest.Item, sources: options.Sources | None = None) -> SoakConfig:
    """Validate the soak marker(s) of ``item`` and resolve its settings.

    Raises :class:`pytest.UsageError` naming the keyword, ``@pytest.mark.memleak_soak on <nodeid>`` and
    the accepted form. Call it at collection time to fail early; :func:`run_soak_protocol`
    calls it again before the test starts.
    """
    where = f"@pytest.mark.memleak_soak on {item.nodeid}"
    signature = options.MARKERS_BY_NAME["memleak_soak"].signature
    given: dict[str, Any] = {}
    for mark in item.iter_markers("memleak_soak"):  # closest first: function > class > module
        if mark.args:
            raise pytest.UsageError(
                f"pytest-memleak: {where} takes keywords only, got positional {mark.args!r}; "
                f"accepted form: @pytest.mark.{signature}"
            )
        for key, value in mark.kwargs.items():
            if key not in DEFAULTS:
                raise pytest.UsageError(
                    f"pytest-memleak: unknown keyword {key!r} in {where}; accepted form: @pytest.mark.{signature}"
                )
            given.setdefault(key, value)
    raw = {**DEFAULTS, **given}

    def parsed(key: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(raw[key])
        except (ValueError, TypeError) as exc:
            raise options.usage_error(f"memleak_soak({key}=...)", where, raw[key], _FORMS[key], str(exc)) from None

    def bad(key: str, why: str) -> pytest.UsageError:
        return options.usage_error(f"memleak_soak({key}=...)", where, raw[key], _FORMS[key], why)

    marker_duration = parsed("duration", parse_duration)
    sample_every = parsed("sample_every", parse_duration)
    if sample_every >= marker_duration:
        raise bad("sample_every", f"not shorter than the duration {format_duration(marker_duration)}")
    memory_limit = parsed("memory_limit", _optional(parse_size))
    if memory_limit == 0:
        raise bad("memory_limit", "a limit of 0 B is always exceeded")
    margin = parsed("memory_margin", memory_guard.parse_margin)
    if memory_limit is not None and margin.size is not None and margin.size >= memory_limit:
        raise bad("memory_margin", f"not smaller than memory_limit {format_size(memory_limit)}")
    max_growth = parsed("max_growth", _parse_rate)
    horizon = parsed("horizon", _optional(parse_duration))
    warmup_fraction = parsed("warmup", lambda v: _parse_warmup(v, marker_duration))
    expect_leak = raw["expect_leak"]
    if expect_leak is not None and not isinstance(expect_leak, bool):
        raise bad("expect_leak", "not a bool")
    for key in ("scenario", "variant", "watch"):
        if raw[key] is not None and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise bad(key, "not a name")
    fixturenames = getattr(item, "fixturenames", None)
    if raw["watch"] is not None and fixturenames is not None and raw["watch"] not in fixturenames:
        raise bad(
            "watch",
            f"the test does not use a fixture {raw['watch']!r}: request it as an argument of the test or of a "
            f"fixture it uses (its fixtures: {', '.join(fixturenames) or 'none'})",
        )

    override = sources.values.get("soak_duration") if sources is not None else None
    duration = float(override) if override else marker_duration
    scaled = False
    if (override or "sample_every" not in given) and duration / sample_every < MIN_SAMPLES:
        sample_every = duration / TARGET_SAMPLES
        scaled = True
    return SoakConfig(
        duration=duration,
        sample_every=sample_every,
        memory_limit=memory_limit,
        max_growth=max_growth,
        horizon=horizon,
        warmup_fraction=warmup_fraction,
        expect_leak=expect_leak,
        marker_duration=marker_duration,
        overridden=bool(override),
        sample_scaled=scaled,
        memory_limit_given="memory_limit" in given and memory_limit is not None,
        memory_margin=margin.spec(),
        scenario=raw["scenario"],
        variant=raw["variant"],
        watch=raw["watch"],
        flamegraph=str(sources.values.get("flamegraph") or "failed") if sources is not None else "failed",
    )


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
            return None
        return parse(value)

    return wrapped


_PER_HOUR = re.compile(r"\s*(/\s*(h|hr|hour)|per\s+hour)\s*$", re.IGNORECASE)


def _parse_rate(value: Any) -> int:
    if isinstance(value, str):
        value = _PER_HOUR.sub("", value)
    return parse_size(value)


def _parse_warmup(value: Any, duration: float) -> float:
    """A fraction of the duration: '10%' is 0.1; a duration ('5s', 5) is divided by it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a warm-up")
    if isinstance(value, str) and value.strip().endswith("%"):
        return parse_percent(value, MAX_WARMUP_FRACTION)
    if isinstance(value, (int, float)) and value == 0:
        return 0.0
    seconds = parse_duration(value)
    if seconds >= duration:
        raise ValueError(f"not shorter than the duration {format_duration(duration)}")
    return min(seconds / duration, MAX_WARMUP_FRACTION)


# -- names -------------------------------------------------------------------------------


def safe_name(nodeid: str, max_length: int = SAFE_NAME_LENGTH) -> str:
    """A file name for a nodeid (see :func:`pytest_memleak.flamegraph.safe_name`)."""
    from .flamegraph import safe_name as file_name

    return file_name(nodeid, max_len=max_length + 13)


def samples_path(report_dir: Path, nodeid: str) -> Path:
    return Path(report_dir) / "soak" / (safe_name(nodeid) + ".jsonl")


def scenario_variant(item: pytest.Item, config: SoakConfig | None = None) -> tuple[str, str]:
    """``(scenario, variant)`` for the summary table: the marker's ``scenario`` and ``variant``
    when given, else the test function's name without ``test_`` and the parameter id. Nothing is
    guessed from parts of a name: ``test_service_with_leak`` is scenario ``service_with_leak``."""
    name = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    base = name[5:] if name.startswith("test_") else name
    callspec = getattr(item, "callspec", None)
    scenario = config.scenario if config is not None and config.scenario else base
    variant = config.variant if config is not None and config.variant else (callspec.id if callspec is not None else "")
    return scenario, variant


# -- the protocol ------------------------------------------------------------------------


def run_soak_protocol(
    item: pytest.Item,
    nextitem: pytest.Item | None,
    sources: options.Sources | None,
    report_dir: Path,
) -> SoakResult | None:
    """Run a soak test's whole protocol, like ``_pytest.runner.pytest_runtest_protocol``.

    logstart, setup, call (the body loops inside it), teardown, logfinish; the reports are
    logged. The call report gets ``memleak_soak`` (``SoakResult.to_dict()``); a failed
    verdict fails it. Returns the result, or None when the item has no soak marker or the
    call phase did not run (setup failed or was skipped, --setup-only). A bad marker raises
    :class:`pytest.UsageError` before anything runs.
    """
    if item.get_closest_marker("memleak_soak") is None:
        return None
    config = soak_config(item, sources)
    path = samples_path(report_dir, item.nodeid)
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    has_request = compat.start_request(item)
    result: SoakResult | None = None
    usage: pytest.UsageError | None = None
    rep = compat.call_and_report(item, "setup", True)
    if rep.passed:
        setup_only = item.config.getoption("setuponly", False)
        if item.config.getoption("setupshow", False):
            compat.show_test_item(item, add_space=not setup_only)
        if not setup_only:
            try:
                target = _target(item, config)
            except pytest.UsageError as exc:  # raised after teardown: the fixtures stop what they started
                usage = exc
            else:
                result = _call_phase(item, config, path, target)
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    compat.call_and_report(item, "teardown", True, nextitem=nextitem)
    if has_request:
        compat.end_request(item)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    if usage is not None:
        raise usage
    return result


def _target(item: pytest.Item, config: SoakConfig) -> soak_target.Watched | None:
    """The process named by ``watch=``, from its fixture's value (set up by now); None without one."""
    if config.watch is None:
        return None
    value = getattr(item, "funcargs", {}).get(config.watch)
    return soak_target.resolve(value, config.watch, f"@pytest.mark.memleak_soak on {item.nodeid}")


class _AttachResult:
    """A plugin registered for one call phase: puts the result on the call report before it is logged."""

    def __init__(self, item: pytest.Item, runner: _Runner) -> None:
        self.item = item
        self.runner = runner

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if item is self.item and call.when == "call" and self.runner.result is not None:
            report.memleak_soak = self.runner.result.to_dict()
        return report


_MISSING = object()


def _call_phase(
    item: pytest.Item, config: SoakConfig, path: Path, target: soak_target.Watched | None
) -> SoakResult | None:
    runner = _Runner(item, config, path, item.runtest, target)
    attach = _AttachResult(item, runner)
    manager = item.config.pluginmanager
    manager.register(attach, f"memleak-soak-{id(attach)}")
    previous = item.__dict__.get("runtest", _MISSING)
    item.runtest = runner.loop  # type: ignore[method-assign]
    try:
        compat.call_and_report(item, "call", True)
    finally:
        if previous is _MISSING:
            item.__dict__.pop("runtest", None)
        else:
            item.runtest = previous  # type: ignore[method-assign]
        manager.unregister(attach)
    return runner.result


# -- measuring ---------------------------------------------------------------------------


class _JsonLines:
    """Append-only JSON lines, one write(2) per line: a kill leaves only whole lines."""

    def __init__(self, path: Path) -> None:
        self.fd: int | None = None
        self.error: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as exc:  # the soak still runs and judges; it just keeps nothing on disk
            self.error = str(exc)

    def write(self, record: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(_json_safe(record), separators=(",", ":")) + "\n").encode()
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError as exc:  # disk full...: stop writing, keep soaking
            self.error = str(exc)
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class _Series:
    """Fixed-capacity columns for the fit: allocated once, so keeping them leaks nothing.

    When full, every other sample is dropped and only every 2nd (4th, ...) later sample is
    kept; the file keeps them all.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(64, capacity + capacity % 2)
        zeros = bytes(8 * self.capacity)
        self.t = array("d", zeros)
        self.iterations = array("d", zeros)
        self.rss = array("d", zeros)
        self.heap = array("d", zeros)
        self.blocks = array("d", zeros)  # allocated blocks (sys.getallocatedblocks), beside a heap in bytes
        self.count = 0
        self.stride = 1
        self.seen = 0

    def add(self, t: float, iterations: float, rss: float, heap: float, blocks: float, force: bool = False) -> None:
        index = self.seen
        self.seen += 1
        if index % self.stride and not force:
            return
        if self.count == self.capacity:
            for column in (self.t, self.iterations, self.rss, self.heap, self.blocks):
                column[: self.capacity // 2] = column[::2]
            self.count = self.capacity // 2
            self.stride *= 2
        n = self.count
        self.t[n], self.iterations[n], self.rss[n], self.heap[n], self.blocks[n] = t, iterations, rss, heap, blocks
        self.count = n + 1

    def columns(self) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
        n = self.count
        return (
            self.t[:n].tolist(),
            self.iterations[:n].tolist(),
            self.rss[:n].tolist(),
            self.heap[:n].tolist(),
            self.blocks[:n].tolist(),
        )


class _Progress:
    """One line of progress on the terminal: rewritten on a TTY, a line every ~5 s otherwise."""

    def __init__(self, item: pytest.Item, duration: float) -> None:
        manager = item.config.pluginmanager
        self.reporter: Any = manager.get_plugin("terminalreporter")
        self.capture: Any = manager.get_plugin("capturemanager")
        self.nodeid = item.nodeid
        verbose = self.reporter is not None and self.reporter.verbosity > 0
        self.enabled = self.reporter is not None and (verbose or duration >= PROGRESS_MIN_SECONDS)
        self.tty = bool(self.reporter is not None and self.reporter.isatty)
        self.every = PROGRESS_TTY_EVERY if self.tty else PROGRESS_PIPE_EVERY
        self.last = time.monotonic()
        self.shown = False

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[None]:
        if self.capture is not None:
            with self.capture.global_and_fixture_disabled():
                yield
        else:
            yield

    def update(self, now: float, text: Callable[[], str], final: bool = False) -> None:
        if not self.enabled or (not final and now - self.last < self.every):
            return
        self.last = now
        reporter = self.reporter
        with self._uncaptured():
            if not self.shown:
                reporter.ensure_newline()  # a line of our own; pytest resumes on the next one
            if self.tty:
                reporter.rewrite(text(), erase=True)
            else:
                reporter.write(("\n" if self.shown else "") + text())
            reporter.flush()
        self.shown = True

    def close(self) -> None:
        """Leave the terminal where pytest expects it: the result letter or word comes next."""
        if not self.shown:
            return
        reporter = self.reporter
        with self._uncaptured():
            if reporter.verbosity <= 0 and reporter.showfspath:
                reporter.write_fspath_result(self.nodeid, "")  # starts a fresh "path " line
            elif reporter.verbosity <= 0:
                reporter.write("\n")
            reporter.flush()


class _Runner:
    """The loop that replaces ``item.runtest`` for the call phase, and its verdict."""

    def __init__(
        self,
        item: pytest.Item,
        config: SoakConfig,
        path: Path,
        body: Callable[[], Any],
        target: soak_target.OwnProcess | soak_target.Watched | None = None,
    ) -> None:
        self.item = item
        self.config = config
        self.path = path
        self.body = body
        self.target = target if target is not None else soak_target.OwnProcess()
        self.watched = isinstance(self.target, soak_target.Watched)
        self.result: SoakResult | None = None
        expected = int(math.ceil(config.duration / config.sample_every)) + 16
        self.series = _Series(min(expected, MAX_KEPT_SAMPLES))
        self.traced = False
        self.heap_meter: measuring.HeapMeter | None = None
        self.heap_unit = "B"
        self.problems: list[str] = []
        self.samples = 0
        self.iterations = 0
        self.objects_every = 1
        self.first_rss = self.first_heap_blocks = math.nan
        self.last_rss = math.nan
        self.last_heap_blocks = 0
        self.slow_iteration = 0.0
        self.guards: list[memory_guard.MemoryGuard] = []
        self.trip: memory_guard.Trip | None = None
        self.exited: str | None = None  # how the watched process ended, when it did
        self.dropped_log_records = 0
        self.start = 0.0
        self.elapsed = 0.0
        self.contention = soak_target.Contention()
        self.waited = 0.0  # seconds the busy machine kept the soak waiting for a CPU (an estimate)

    # The measuring loop. Everything it keeps is allocated before the first iteration.
    def loop(self) -> None:
        config = self.config
        item = self.item
        target = self.target
        watched = self.watched
        series = self.series
        self.traced = tracemalloc.is_tracing() and not watched
        # the heap in bytes: tracemalloc's when it is tracing, else the allocators' own (pymalloc's
        # blocks and malloc's), a walk of ~1 ms a sample; allocated blocks where neither is readable.
        # A watched service's heap is not ours to read: its RSS is the series.
        meter = measuring.heap_meter()
        self.heap_meter = meter if not self.traced and meter.available and not watched else None
        self.heap_unit = "B" if self.traced or self.heap_meter is not None or watched else "blocks"
        progress = _Progress(item, config.duration)
        out = _JsonLines(self.path)
        if out.error:
            self.problems.append(f"cannot write the samples to {self.path}: {out.error}")
        last_sample_t, last_sample_iterations = 0.0, 0
        self.guards = self._guards()
        contention = self.contention

        log_handlers = _log_capture_handlers(item)

        def take(force_objects: bool = False, force_keep: bool = False) -> None:
            nonlocal last_sample_t, last_sample_iterations
            self.dropped_log_records += _clear_captured_logs(log_handlers)
            gc_start = time.perf_counter()
            gc.collect()
            gc_ms = (time.perf_counter() - gc_start) * 1000.0
            t = time.monotonic() - start
            reading = target.sample() if isinstance(target, soak_target.Watched) else None
            rss = reading["rss"] if reading is not None else target.rss()
            blocks = sys.getallocatedblocks()
            traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
            heap_bytes = self.heap_meter(full=True) if self.heap_meter is not None else None
            objects = None
            if force_objects or self.samples % self.objects_every == 0:
                o_start = time.perf_counter()
                objects = len(gc.get_objects())
                cost = time.perf_counter() - o_start
                # keep the object census under ~2% of the sampling interval
                self.objects_every = max(1, int(math.ceil(cost / (0.02 * config.sample_every))))
            dt = t - last_sample_t
            throughput = (self.iterations - last_sample_iterations) / dt if dt > 0 else 0.0
            record = {
                "kind": "sample",
                "i": self.samples,
                "t": round(t, 6),
                "iterations": self.iterations,
                "rss": rss,
                "heap_blocks": blocks,
                "heap_bytes": heap_bytes,
                "traced": traced,
                "objects": objects,
                "fds": target.fds(),
                "threads": threading.active_count(),
                "os_threads": target.os_threads(),
                "throughput": round(throughput, 3),
                "gc_ms": round(gc_ms, 3),
                "cpu_lost": round(contention.read(), 6),
            }
            if reading is not None:  # the watched tree's: rss above, and pid, children, uss, pss
                record.update(reading)
            out.write(record)
            if watched:
                heap = math.nan
            elif self.traced:
                heap = float(traced) if traced is not None else math.nan
            else:
                heap = float(heap_bytes) if heap_bytes is not None else float(blocks)
            series.add(t, float(self.iterations), rss, heap, math.nan if watched else float(blocks), force=force_keep)
            if self.samples == 0 or not math.isfinite(self.first_rss):
                self.first_rss, self.first_heap_blocks = rss, blocks
            if math.isfinite(rss):  # a watched process may die between its check and its reading
                self.last_rss, self.last_heap_blocks = rss, blocks
            self.samples += 1
            last_sample_t, last_sample_iterations = t, self.iterations
            if self.guards:
                self._check_guards(rss)
            progress.update(time.monotonic(), lambda: self._progress_text(t, rss), final=False)

        out.write(
            {
                "kind": "meta",
                "nodeid": item.nodeid,
                "pid": os.getpid(),
                "watched_pid": target.pid if watched else None,
                "watched": target.describe() if isinstance(target, soak_target.Watched) else None,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "python": sys.version.split()[0],
                "heap_unit": None if watched else self.heap_unit,
                "settings": config.as_dict(),
                "guards": [g.describe() for g in self.guards],
                "cpu_lost_source": contention.source,
            }
        )
        start = time.monotonic()
        self.start = start
        contention.begin()
        outcome = "interrupted"
        try:
            running = target.alive()  # (a watched service may be gone already; then it is read every check)
            if running:
                take(force_objects=True, force_keep=True)
            end = start + config.duration
            next_sample = start + config.sample_every
            check_every = WATCH_EVERY if watched else GUARD_EVERY
            next_check = start + check_every
            guards = self.guards
            while running and self.trip is None:  # the guard may stop the soak, the service may exit
                before = time.monotonic()
                try:
                    self.body()
                except Exception:
                    if isinstance(target, soak_target.Watched) and target.gone(EXIT_GRACE):
                        break  # the request failed because the service died: that is the finding
                    raise
                self.iterations += 1
                now = time.monotonic()
                self.slow_iteration = max(self.slow_iteration, now - before)
                if now >= end and not self._owes_work(now):
                    break
                if now >= next_check:  # between samples too: a fast leak fills a margin quickly
                    next_check = now + check_every
                    contention.read()
                    if watched and not target.alive():
                        break
                    if guards and self._check_guards(target.rss()):
                        break
                if now >= next_sample:
                    take()
                    next_sample += config.sample_every
                    after = time.monotonic()
                    if next_sample <= after:  # fell behind: the next slot on the grid
                        next_sample = start + (math.floor((after - start) / config.sample_every) + 1) * config.sample_every
            if target.alive():
                take(force_objects=True, force_keep=True)
            elif isinstance(target, soak_target.Watched):
                self.exited = target.exit_text()
            self.elapsed = time.monotonic() - start
            self.waited = contention.read()
            outcome = "completed"
            if self.trip is not None:
                out.write({"kind": "guard", "t": round(self.elapsed, 6), "iterations": self.iterations, **self.trip.as_dict()})
            if self.exited is not None:
                out.write({"kind": "exit", "t": round(self.elapsed, 6), "iterations": self.iterations, "status": self.exited})
            if out.error and not any(p.startswith("cannot write the samples") for p in self.problems):
                self.problems.append(f"cannot write the samples to {self.path}: {out.error}")
        except BaseException as exc:
            self.elapsed = time.monotonic() - start
            if isinstance(exc, pytest.skip.Exception):
                outcome = "skipped"
            elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
                outcome = "interrupted"
            else:
                outcome = "failed"
            self.result = self._no_verdict(outcome, exc)
            out.write({"kind": "end", "outcome": outcome, "iterations": self.iterations, "t": self.elapsed})
            raise
        finally:
            if outcome != "completed":
                out.close()
                progress.close()
        try:
            result = self._verdict()
            if self.trip is not None:
                self._stopped_by_guard(result, self.trip)
            if self.exited is not None:
                self._stopped_by_exit(result)
            self._live_flamegraph(result)
            self.result = result
            out.write(
                {
                    "kind": "verdict",
                    **{
                        k: v
                        for k, v in result.to_dict().items()
                        if k not in ("t", "rss", "heap")
                    },
                    "stopped_by": "memory guard" if self.trip is not None else "exit" if self.exited else None,
                    "guard": self.trip.as_dict() if self.trip is not None else None,
                }
            )
        finally:
            out.close()
            progress.update(time.monotonic(), lambda: self._progress_text(self.elapsed, self.last_rss), final=True)
            progress.close()
        failure = self._failure(result)
        if failure:
            pytest.fail(failure, pytrace=False)
        if result.status == INCONCLUSIVE:
            lineno = item.location[1]
            warnings.warn_explicit(
                pytest.PytestWarning(f"soak {item.name} is inconclusive: {result.reason}"),
                category=None,
                filename=str(item.path),
                lineno=lineno + 1 if lineno is not None else 0,
            )

    def _live_flamegraph(self, result: SoakResult) -> None:
        """A leaks flamegraph of the watched service, captured live with ``memray attach`` while
        the body goes on driving it for :data:`LIVE_SECONDS` (``--memleak-flamegraph``: failed
        soaks, all, or none)."""
        target, wanted = self.target, self.config.flamegraph
        if not isinstance(target, soak_target.Watched) or wanted == "none":
            return
        if wanted != "all" and result.status != LEAK:
            return
        if self.exited is not None:
            result.problems.append("no live flamegraph: the service is no longer running")
            return
        if self.trip is not None:
            result.problems.append("no live flamegraph: the memory guard stopped the soak near the limit")
            return
        from . import flamegraph

        base = self.path.parent / (safe_name(self.item.nodeid) + "-live")
        outcome = flamegraph.attach_run(target.pid, target.python(), self.body, base, seconds=LIVE_SECONDS)
        if outcome.html is not None:
            result.flamegraph = str(outcome.html)
            result.details.append(
                f"live flamegraph: {outcome.html} (what pid {target.pid} allocated in {LIVE_SECONDS:g} s of the "
                f"same traffic and still holds; `memray summary` and `memray tree` read {outcome.capture})"
            )
        if outcome.problem:
            result.problems.append(outcome.problem)

    def _owes_work(self, now: float) -> bool:
        """Whether the soak runs on past its duration: by the time a busy machine kept it waiting
        for a CPU (:class:`~pytest_memleak.soak_target.Contention`, read at every check), up to
        :data:`MAX_STRETCH` times its duration, so that it does the work a quiet machine would
        have done (a structure that fills by iterations is not still filling because of the load)."""
        elapsed = now - self.start
        return elapsed < MAX_STRETCH * self.config.duration and elapsed - self.contention.lost < self.config.duration

    # -- the memory guard -------------------------------------------------------------------

    def _guards(self) -> list[memory_guard.MemoryGuard]:
        """The explicit memory_limit against RSS, and the container's cgroup limit against its working set."""
        config = self.config
        margin = config.margin()
        guards = []
        limit = config.memory_limit
        if config.memory_limit_given and limit is not None:
            size = min(margin.of(limit), int(limit * memory_guard.MAX_MARGIN_FRACTION))
            metric = "watched RSS" if self.watched else "RSS"
            guards.append(memory_guard.MemoryGuard(limit, size, source="memory_limit", metric=metric))
        # the cgroup of the watched process, else our own; read where the module says at run time
        # (a test may point it at a fake cgroup tree)
        own = memory_guard.PROC_SELF_CGROUP
        proc_cgroup = self.target.cgroup_file() if isinstance(self.target, soak_target.Watched) else own
        try:
            cgroup = memory_guard.cgroup_guard(margin, memory_guard.CGROUP_ROOT, proc_cgroup)
        except Exception as exc:  # the guard must never be what breaks the soak
            self.problems.append(f"memory guard: cannot read the cgroup memory limit: {type(exc).__name__}: {exc}")
            cgroup = None
        if cgroup is not None:
            guards.append(cgroup)
        return guards

    def _check_guards(self, rss: float) -> bool:
        for guard in self.guards:
            if guard.check(rss if guard.read is None else None):
                self.trip = guard.trip
                return True
        return False

    def _stopped_by_guard(self, result: SoakResult, trip: memory_guard.Trip) -> None:
        """A soak the guard stopped fails with the trend it measured, whatever the trend says."""
        stopped = (
            f"stopped by the memory guard after {result.duration:.1f} s of {self.config.duration:g} s "
            f"({result.iterations:,} iterations): {trip.message()}"
        )
        _stopped_early(result, stopped, f"memory guard: {trip.message()}")

    def _stopped_by_exit(self, result: SoakResult) -> None:
        """A watched service that exited fails the soak, with the trend of the samples it left."""
        died = (
            f"the service exited with {self.exited} after {result.duration:.1f} s of {self.config.duration:g} s "
            f"({result.iterations:,} iterations)"
        )
        result.exit = self.exited
        _stopped_early(result, died, f"exit: {died}")

    def _progress_text(self, t: float, rss: float) -> str:
        name = self.item.name
        delta = rss - self.first_rss
        delta_text = format_size(delta, signed=True) if math.isfinite(delta) else "?"
        rss_text = format_size(rss) if math.isfinite(rss) else "?"
        whose = f"pid {self.target.pid} RSS" if self.watched else "RSS"
        return (
            f"soak {name}: {t:.1f}/{self.config.duration:g} s, {self.iterations:,} iterations, "
            f"{whose} {rss_text} ({delta_text})"
        )

    # -- results ---------------------------------------------------------------------------

    def _base_result(self, status: Status, reason: str) -> SoakResult:
        config = self.config
        scenario, variant = scenario_variant(self.item, self.config)
        elapsed = self.elapsed
        return SoakResult(
            nodeid=self.item.nodeid,
            status=status,
            reason=reason,
            scenario=scenario,
            variant=variant,
            expect_leak=config.expect_leak,
            duration=elapsed,
            iterations=self.iterations,
            samples_path=str(self.path),
            memory_limit=config.memory_limit,
            throughput=self.iterations / elapsed if elapsed > 0 else 0.0,
            samples=self.samples,
            sample_every=config.sample_every,
            warmup_seconds=config.warmup_fraction * elapsed,
            max_growth=config.max_growth,
            horizon=config.horizon,
            duration_overridden=config.overridden,
            heap_unit=self.heap_unit,
            problems=list(self.problems),
            watched_pid=self.target.pid if self.watched else None,
            watched=self.target.describe() if isinstance(self.target, soak_target.Watched) else "",
            exit=self.exited,
            cpu_waited=self.waited if self.contention.source is not None else None,
        )

    def _no_verdict(self, outcome: str, exc: BaseException) -> SoakResult:
        reason = f"the test body {outcome} after {self.iterations:,} iterations: no verdict"
        result = self._base_result(NO_VERDICT, reason)
        result.details = [f"{type(exc).__name__}: {exc}".strip(), f"samples: {self.path}"]
        return result

    def _verdict(self) -> SoakResult:
        config = self.config
        t, iterations, rss, heap, blocks = self.series.columns()
        # a series that saws is judged, and projected, on its troughs (memory after each clean-up)
        rss_level = fit_level(t, rss, warmup_fraction=config.warmup_fraction, confidence=CONFIDENCE)
        heap_level = fit_level(t, heap, warmup_fraction=config.warmup_fraction, confidence=CONFIDENCE)
        rss_trend, heap_trend = rss_level.trend, heap_level.trend
        current_rss = rss[-1] if rss else math.nan
        rss_leak, rss_reason = judge(
            rss_trend,
            max_growth_per_hour=config.max_growth,
            memory_limit=config.memory_limit,
            horizon_seconds=config.horizon,
            current=rss_level.now,
        )
        heap_budget = config.max_growth if self.heap_unit == "B" else config.max_growth / MIN_BLOCK_BYTES
        heap_leak, heap_reason = judge(
            heap_trend,
            max_growth_per_hour=heap_budget,
            memory_limit=None,
            horizon_seconds=None,
            current=heap_level.now if math.isfinite(heap_level.now) else 0.0,
            unit=self.heap_unit,
        )
        blocks_reason = None
        if self.heap_unit == "B" and not heap_leak and not self.watched and heap_trend.slope * 3600.0 > heap_budget:
            # the heap's bytes rise, but too unevenly to show it surely (a few bytes an iteration, beside
            # pymalloc's pools and arenas coming and going): its allocated blocks are an exact count, in
            # which a leak of small objects persists plainly (an object() an iteration, under load)
            blocks_level = fit_level(t, blocks, warmup_fraction=config.warmup_fraction, confidence=CONFIDENCE)
            blocks_leak, blocks_reason = judge(
                blocks_level.trend,
                max_growth_per_hour=heap_budget / MIN_BLOCK_BYTES,
                memory_limit=None,
                horizon_seconds=None,
                current=blocks_level.now,
                unit="blocks",
            )
            if blocks_leak:
                heap_leak, heap_reason = True, f"grows {_rate(heap_trend.slope * 3600.0, 'B')}; allocated blocks: {blocks_reason}"
        if self.watched:  # a watched service's heap is not read: its RSS is the verdict
            heap_leak, heap_reason = False, "not read (the soak watches another process)"
        rss_label = f"watched RSS (pid {self.target.pid} and children)" if self.watched else "RSS"
        rss_name, heap_name = (_saw_label(name, level) for name, level in ((rss_label, rss_level), ("Python heap", heap_level)))
        if self.dropped_log_records:
            self.problems.append(
                f"{self.dropped_log_records:,} captured log records were dropped at the samples (pytest keeps "
                "them in memory for the whole call phase); the report shows those since the last sample"
            )
        if self.traced and not tracemalloc.is_tracing():
            self.problems.append("tracemalloc stopped tracing during the soak; the heap series is cut short")
        if self.slow_iteration > config.sample_every:
            self.problems.append(
                f"an iteration took {format_duration(self.slow_iteration)}, longer than sample_every "
                f"{format_duration(config.sample_every)}: samples are one per iteration"
            )
        if config.memory_limit is not None and current_rss >= config.memory_limit:
            self.problems.append(
                f"RSS {format_size(current_rss)} is above memory_limit {format_size(config.memory_limit)}"
            )

        leaked = [name for name, flag in (("rss", rss_leak), ("heap", heap_leak)) if flag]
        if not rss_trend.sufficient:
            status = INCONCLUSIVE
            reason = f"RSS: {rss_reason} (sample_every {format_duration(config.sample_every)}, {self.samples} samples)"
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
        doubt = self._doubt(t, iterations, {"rss": rss, "heap": heap}, leaked, rss_trend)
        if doubt and status != INCONCLUSIVE:
            status = INCONCLUSIVE
            reason = f"{doubt}; {reason}"

        result = self._base_result(status, reason)
        result.metric = "+".join(leaked) if leaked else "rss"
        result.leaked_metrics = leaked
        result.persistent = rss_trend.persistent
        result.plateaued = rss_trend.plateaued
        result.slope_per_hour = _finite(rss_trend.slope * 3600.0)
        result.slope_lower = _finite(rss_trend.lower * 3600.0)
        result.slope_upper = _finite(rss_trend.upper * 3600.0)
        window_rate = _window_throughput(t, iterations, rss_trend)
        result.slope_per_iteration = _finite(rss_trend.slope / window_rate) if window_rate > 0 else 0.0
        if config.memory_limit is not None and rss_trend.sufficient:
            result.time_to_limit = rss_level.time_to(config.memory_limit)
        tail = rss_trend.tail
        result.tail_slope_per_hour = _finite(tail.slope * 3600.0) if tail is not None else 0.0
        result.heap_slope_per_hour = _finite(heap_trend.slope * 3600.0)
        result.heap_slope_lower = _finite(heap_trend.lower * 3600.0)
        result.heap_slope_upper = _finite(heap_trend.upper * 3600.0)
        result.heap_plateaued = heap_trend.plateaued
        result.fit_intercept = _finite(rss_trend.intercept)
        result.fit_slope_per_second = _finite(rss_trend.slope)
        result.fit_start = rss_trend.window_start
        result.fit_end = rss_trend.window_end
        pick = _chart_indices(len(t))
        result.t = [round(t[i], 4) for i in pick]
        result.rss = [rss[i] for i in pick]
        result.heap = [] if self.watched else [heap[i] if math.isfinite(heap[i]) else 0.0 for i in pick]
        result.problems = list(self.problems)
        result.details = self._details(result, rss_trend, heap_trend, window_rate)
        if blocks_reason is not None:
            result.details.insert(2, f"allocated blocks: {blocks_reason}")
        return result

    def _doubt(
        self, t: list[float], iterations: list[float], series: dict[str, list[float]], leaked: list[str], trend: Trend
    ) -> str | None:
        """Why a busy machine leaves the verdict open, or None.

        Growth is judged against time, and a machine that starves the soak of CPU changes how
        much work a second holds: a structure that fills by iterations is still filling when a
        starved soak ends. So a leak needs the work a quiet machine would have done (the loop ran
        on for the time the CPUs were contended, up to :data:`MAX_STRETCH` times the duration);
        and where throughput collapsed within the window, growth per second and per iteration
        must agree: a leak per second that is none per iteration is in doubt, and so is a clean
        verdict where a series grows per iteration. A leak confirmed per iteration stands though
        the other series grows per iteration only (its rate per second fell with the throughput:
        a registry leaking 34 KiB an iteration read "plateaued" per second under load).
        """
        config = self.config
        stopped = self.trip is not None or self.exited is not None  # the limit or an exit: no fill ends that way
        if leaked and not stopped and self.contention.source is not None:
            work = self.elapsed - self.waited
            if work < WORK_SHORT * config.duration:
                return (
                    f"the machine was too busy to tell a fill from a leak: the soak waited for a CPU about "
                    f"{self.waited:.1f} s of its {self.elapsed:.1f} s, which leaves {max(work, 0.0):.1f} s of the "
                    f"{config.duration:g} s of work asked for"
                )
        first, last = _thirds_throughput(t, iterations, trend)
        if not (first > 0 and last < COLLAPSE * first):
            return None
        self.problems.append(f"throughput fell from {first:,.1f}/s to {last:,.1f}/s within the fitted window")
        by_work: dict[str, bool] = {}
        for name, values in series.items():
            if self.watched and name == "heap":
                continue
            trend_by_work = fit_level(iterations, values, warmup_fraction=config.warmup_fraction, confidence=CONFIDENCE).trend
            by_work[name] = trend_by_work.sufficient and trend_by_work.lower > 0 and (trend_by_work.persistent or trend_by_work.rising)
        fell = f"throughput fell from {first:,.1f}/s to {last:,.1f}/s"
        for name, grows in by_work.items():
            if name in leaked and not grows:
                return f"{fell}: {name} grows per second but not per iteration"
        for name, grows in by_work.items():
            if grows and not leaked:
                return f"{fell}: {name} grows per iteration but not per second"
        return None

    def _details(self, result: SoakResult, rss_trend: Trend, heap_trend: Trend, window_rate: float) -> list[str]:
        config = self.config
        pct = f"{CONFIDENCE:.0%}"
        lines = []
        per_iteration = format_size(result.slope_per_iteration, signed=True)
        lines.append(
            f"{'watched RSS' if self.watched else 'RSS'}: {_rate(rss_trend.slope * 3600, 'B', True)} ({pct} CI {_rate(rss_trend.lower * 3600, 'B')} .. "
            f"{_rate(rss_trend.upper * 3600, 'B')}), {per_iteration} per iteration; {_state(rss_trend, 'B')}"
        )
        heap_name = self._heap_name()
        heap_per_iteration = (
            heap_trend.slope / window_rate if window_rate > 0 and math.isfinite(heap_trend.slope) else 0.0
        )
        heap_step = (
            format_size(heap_per_iteration, signed=True)
            if self.heap_unit == "B"
            else f"{heap_per_iteration:+,.2f} {self.heap_unit}"
        )
        lines.append(
            f"{heap_name}: not read (the soak watches another process)"
            if self.watched
            else f"{heap_name}: {_rate(heap_trend.slope * 3600, self.heap_unit, True)} ({pct} CI "
            f"{_rate(heap_trend.lower * 3600, self.heap_unit)} .. {_rate(heap_trend.upper * 3600, self.heap_unit)}), "
            f"{heap_step} per iteration; {_state(heap_trend, self.heap_unit)}"
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
        if result.rss and math.isfinite(self.first_rss) and math.isfinite(self.last_rss):
            heap = "" if self.watched else (
                f"; Python heap {self.first_heap_blocks:,} -> {self.last_heap_blocks:,} blocks"
            )
            lines.append(
                f"RSS {format_size(self.first_rss)} -> {format_size(self.last_rss)} "
                f"({format_size(self.last_rss - self.first_rss, signed=True)}){heap}"
            )
        if self.watched:
            lines.append(f"watched: {result.watched}; its heap is not read, its RSS is the verdict")
        if result.cpu_waited is not None and result.cpu_waited > 0.05 * result.duration:
            exact = self.contention.exact
            how = "the kernel's count" if exact else f"tasks runnable beyond the {self.contention.cpus} CPUs"
            lines.append(
                f"a busy machine: the soak waited for a CPU {'' if exact else 'about '}{result.cpu_waited:.1f} s of its "
                f"{result.duration:.1f} s ({how}, {self.contention.source}); it ran on by that time, up to {MAX_STRETCH:g}x its duration"
            )
        lines.append(f"samples: {self.path}")
        return lines

    def _heap_name(self) -> str:
        """Where the heap series comes from."""
        if self.watched:
            return "Python heap"
        if self.traced:
            return "Python heap (tracemalloc)"
        if self.heap_meter is None:
            return "Python heap (allocated blocks)"
        if self.heap_meter.missing is not None:  # malloc's bytes cannot be read: RSS shows them
            return f"Python heap (pymalloc's bytes: {self.heap_meter.missing})"
        return "Python heap (the allocators' bytes: pymalloc's and malloc's)"

    def _failure(self, result: SoakResult) -> str | None:
        """The failure message for a verdict that fails the test, or None."""
        expect = self.config.expect_leak
        body = "\n".join(["  " + line for line in result.details + result.problems])
        name = self.item.name
        if (self.exited is not None or self.trip is not None) and not (expect is True and result.status == LEAK):
            stop = "service exited" if self.exited is not None else "memory limit"
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


def _stopped_early(result: SoakResult, why: str, detail: str) -> None:
    """A soak that ended before its duration (the guard, the service's exit) keeps the trend it
    measured, leads its reason with why, and is inconclusive unless that trend is a leak."""
    if result.status != LEAK:
        result.status = INCONCLUSIVE  # too close to the limit, or no service left, to go on
    result.reason = f"{why}; {result.reason}"
    result.details.insert(0, detail)


def _log_capture_handlers(item: pytest.Item) -> list[Any]:
    """pytest's in-memory log capture for the running phase: records pile up over a soak."""
    plugin = item.config.pluginmanager.get_plugin("logging-plugin")
    handlers = [getattr(plugin, name, None) for name in ("caplog_handler", "report_handler")]
    return [h for h in handlers if isinstance(getattr(h, "records", None), list) and hasattr(h, "clear")]


def _clear_captured_logs(handlers: list[Any]) -> int:
    """Empty the capture handlers in place (caplog.clear() does the same); how many records went."""
    dropped = 0
    for handler in handlers:  # the caplog and the report handler hold the same records
        with contextlib.suppress(Exception):
            count = len(handler.records)
            if count:
                handler.clear()
                dropped = max(dropped, count)
    return dropped


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _rate(per_hour: float, unit: str, signed: bool = False) -> str:
    if not math.isfinite(per_hour):
        return "unbounded"
    if unit == "B":
        return format_size(per_hour, signed=signed) + "/h"
    return (f"{per_hour:+,.0f}" if signed else f"{per_hour:,.0f}") + f" {unit}/h"


def _state(trend: Trend, unit: str) -> str:
    if not trend.sufficient:
        return "too few samples"
    if trend.persistent:
        return "growth persists in the last half and the last third"
    tail = trend.tail
    tail_rate = _rate(tail.slope * 3600, unit, True) if tail is not None else "?"
    if trend.plateaued:
        return f"plateaued (last third {tail_rate})"
    return f"no persistent growth (last third {tail_rate})"


def _window_throughput(t: list[float], iterations: list[float], trend: Trend) -> float:
    """Iterations per second over the fitted window."""
    return _throughput(t, iterations, trend.window_start, math.inf)


def _thirds_throughput(t: list[float], iterations: list[float], trend: Trend) -> tuple[float, float]:
    """Iterations per second in the first and the last third of the fitted window."""
    start, end = trend.window_start, max(t, default=0.0)
    span = (end - start) / 3.0
    if span <= 0:
        return 0.0, 0.0
    return _throughput(t, iterations, start, start + span), _throughput(t, iterations, end - span, end)


def _throughput(t: list[float], iterations: list[float], a: float, b: float) -> float:
    """Iterations per second between the samples at ``a`` and ``b`` seconds."""
    pairs = [(x, n) for x, n in zip(t, iterations, strict=True) if a <= x <= b]
    if len(pairs) < 2 or pairs[-1][0] <= pairs[0][0]:
        return 0.0
    return (pairs[-1][1] - pairs[0][1]) / (pairs[-1][0] - pairs[0][0])


def _chart_indices(n: int, points: int = CHART_POINTS) -> list[int]:
    if n <= points:
        return list(range(n))
    return sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})


# -- summary -----------------------------------------------------------------------------


def _verdict_word(result: SoakResult) -> str:
    expect = result.expect_leak
    if result.status == LEAK:
        return {True: "LEAK (expected)", False: "LEAK (expected ok)", None: "LEAK"}[expect]
    if result.status == CLEAN:
        return {True: "ok (expected LEAK)", False: "ok (expected)", None: "ok"}[expect]
    if result.status == INCONCLUSIVE:
        return "inconclusive (expected LEAK)" if expect else "inconclusive"
    return "no verdict"


def summary_lines(results: list[SoakResult]) -> list[str]:
    """A table for the terminal summary: one row per soak test, header first; [] for none.

    Columns: scenario, variant, verdict (LEAK/ok and whether it matched its expectation),
    growth per hour of RSS over the window (", then <rate>" over the last third when it
    plateaued; the Python heap's rate when only the heap leaked), projected time to the
    memory limit, iterations.
    """
    if not results:
        return []
    header = ("scenario", "variant", "verdict", "growth", "to memory limit", "iterations")
    rows = [header]
    for r in results:
        judged = r.status in (LEAK, CLEAN)
        growth = format_size(r.slope_per_hour, signed=True) + "/h" if judged else "-"
        if judged and r.plateaued and r.slope_per_hour > 0:
            growth += f", then {format_size(r.tail_slope_per_hour, signed=True)}/h"
        if r.leaked_metrics == ["heap"]:
            growth = "heap " + _rate(r.heap_slope_per_hour, r.heap_unit, True)
        if not judged or r.memory_limit is None:
            to_limit = "-"
        elif r.time_to_limit is None:
            to_limit = "never"
        else:
            to_limit = f"{format_duration(r.time_to_limit)} ({format_size(r.memory_limit)})"
        rows.append((r.scenario or r.nodeid, r.variant or "-", _verdict_word(r), growth, to_limit, f"{r.iterations:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths[:-1], strict=True)]
        cells.append(row[-1].rjust(widths[-1]))
        return "  ".join(cells).rstrip()

    return [line(rows[0]), line(tuple("-" * w for w in widths)), *(line(row) for row in rows[1:])]


def _saw_label(name: str, level: Level) -> str:
    """What a verdict's trend is of: the series, or its troughs when it saws."""
    return f"{name} troughs (after each of {level.troughs} clean-ups)" if level.troughs else name
