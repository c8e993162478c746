"""Soak tests: run a test body over and over for a duration, sample memory, judge the trend.

``@pytest.mark.memleak_soak(duration='30s', sample_every='0.5s', memory_limit='700 MiB',
max_growth='0 B', horizon='24h', warmup='10%', expect_leak=None, watch=None)``

With ``watch="<fixture>"`` the samples, the trend, the projection and the guard are those of
another process and its children (:mod:`pytest_memleak.soak.target`): a service the test's
fixture started. Its exit ends the soak with that finding; a watched service judged leaking
gets a live flamegraph (``memray attach``) while the body goes on driving it.

A busy machine keeps the loop waiting for a CPU (:class:`~pytest_memleak.probe.contention.Contention`):
the loop runs on by that time, up to :data:`MAX_STRETCH` times its duration, so that it does
the work a quiet machine would; a leak found in too little work, or where throughput collapsed
and growth per second and per iteration disagree, is inconclusive (:mod:`pytest_memleak.soak.verdict`).

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

The verdict (:func:`pytest_memleak.soak.verdict.judge_soak`) fits :func:`pytest_memleak.soak.trend.fit_level` to RSS and to the Python heap in bytes
(traced bytes when tracemalloc was already tracing, else the allocators' bytes; allocated blocks
only where neither can be read, a block then counting as at least :data:`MIN_BLOCK_BYTES` bytes
when compared with ``max_growth``): a trend of every sample, or of
the troughs (memory after each clean-up) of a series that saws, from which the time to the
memory limit is projected. A leak on either series counts, and ``SoakResult.leaked_metrics``
says which.

The memory guard (:mod:`pytest_memleak.soak.guard`): with an explicit ``memory_limit`` the loop
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
import math
import os
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pytest_memleak import compat
from pytest_memleak.check import measuring
from pytest_memleak.config import options
from pytest_memleak.config.units import format_size
from pytest_memleak.probe.contention import Contention
from pytest_memleak.results import INCONCLUSIVE, LEAK, SoakResult
from pytest_memleak.soak import guard as memory_guard
from pytest_memleak.soak import target as soak_target
from pytest_memleak.soak.config import (
    SoakConfig,
    safe_name,
    samples_path,
    scenario_variant,
    soak_config,
)
from pytest_memleak.soak.progress import Progress
from pytest_memleak.soak.samples import MAX_KEPT_SAMPLES, SampleFile, Series
from pytest_memleak.soak.verdict import MAX_STRETCH, Measured, failure, judge_soak, no_verdict

GUARD_EVERY = 0.01  # seconds between the memory guard's readings between samples
WATCH_EVERY = 0.05  # ...and between readings of a watched process tree (a walk of /proc)
EXIT_GRACE = 2.0  # seconds a watched process may take to die after a request to it failed
LIVE_SECONDS = 3.0  # seconds of a watched service's allocations that memray attach captures


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


class _Runner:
    """The loop that replaces ``item.runtest`` for the call phase; what it measures goes into
    :attr:`measured`, and :func:`pytest_memleak.soak.verdict.judge_soak` judges it."""

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
        self.series = Series(min(expected, MAX_KEPT_SAMPLES))
        self.contention = Contention()
        scenario, variant = scenario_variant(item, config) if item is not None else ("", "")
        self.measured = Measured(
            nodeid=item.nodeid if item is not None else "",
            name=item.name if item is not None else "",
            scenario=scenario,
            variant=variant,
            config=config,
            path=path,
            series=self.series,
            contention=self.contention,
            watched_pid=self.target.pid if self.watched else None,
            watched=self.target.describe() if isinstance(self.target, soak_target.Watched) else "",
        )
        self.problems = self.measured.problems
        self.heap_meter: measuring.HeapMeter | None = None
        self.objects_every = 1
        self.guards: list[memory_guard.MemoryGuard] = []
        self.start = 0.0

    # The measuring loop. Everything it keeps is allocated before the first iteration.
    def loop(self) -> None:
        config = self.config
        item = self.item
        target = self.target
        watched = self.watched
        series = self.series
        m = self.measured
        m.traced = tracemalloc.is_tracing() and not watched
        # the heap in bytes: tracemalloc's when it is tracing, else the allocators' own (pymalloc's
        # blocks and malloc's), a walk of ~1 ms a sample; allocated blocks where neither is readable.
        # A watched service's heap is not ours to read: its RSS is the series.
        measuring.settle_interpreter()
        meter = measuring.heap_meter()
        self.heap_meter = meter if not m.traced and meter.available and not watched else None
        m.heap_unit = "B" if m.traced or self.heap_meter is not None or watched else "blocks"
        m.heap_name = _heap_name(m, self.heap_meter)
        progress = Progress(item, config.duration)
        out = SampleFile(self.path)
        if out.error:
            m.problems.append(f"cannot write the samples to {self.path}: {out.error}")
        last_sample_t, last_sample_iterations = 0.0, 0
        self.guards = self._guards()
        contention = self.contention

        log_handlers = _log_capture_handlers(item)

        def take(force_objects: bool = False, force_keep: bool = False) -> None:
            nonlocal last_sample_t, last_sample_iterations
            m.dropped_log_records += _clear_captured_logs(log_handlers)
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
            if force_objects or m.samples % self.objects_every == 0:
                o_start = time.perf_counter()
                objects = len(gc.get_objects())
                cost = time.perf_counter() - o_start
                # keep the object census under ~2% of the sampling interval
                self.objects_every = max(1, int(math.ceil(cost / (0.02 * config.sample_every))))
            dt = t - last_sample_t
            throughput = (m.iterations - last_sample_iterations) / dt if dt > 0 else 0.0
            record = {
                "kind": "sample",
                "i": m.samples,
                "t": round(t, 6),
                "iterations": m.iterations,
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
            elif m.traced:
                heap = float(traced) if traced is not None else math.nan
            else:
                heap = float(heap_bytes) if heap_bytes is not None else float(blocks)
            series.add(t, float(m.iterations), rss, heap, math.nan if watched else float(blocks), force=force_keep)
            if m.samples == 0 or not math.isfinite(m.first_rss):
                m.first_rss, m.first_heap_blocks = rss, blocks
            if math.isfinite(rss):  # a watched process may die between its check and its reading
                m.last_rss, m.last_heap_blocks = rss, blocks
            m.samples += 1
            last_sample_t, last_sample_iterations = t, m.iterations
            if self.guards:
                self._check_guards(rss)
            progress.update(time.monotonic(), lambda: self._progress_text(t, rss), final=False)

        out.write(
            {
                "kind": "meta",
                "nodeid": item.nodeid,
                "pid": os.getpid(),
                "watched_pid": m.watched_pid,
                "watched": target.describe() if isinstance(target, soak_target.Watched) else None,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "python": sys.version.split()[0],
                "heap_unit": None if watched else m.heap_unit,
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
            while running and m.trip is None:  # the guard may stop the soak, the service may exit
                before = time.monotonic()
                try:
                    self.body()
                except Exception:
                    if isinstance(target, soak_target.Watched) and target.gone(EXIT_GRACE):
                        break  # the request failed because the service died: that is the finding
                    raise
                m.iterations += 1
                now = time.monotonic()
                m.slow_iteration = max(m.slow_iteration, now - before)
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
                m.exited = target.exit_text()
            m.elapsed = time.monotonic() - start
            m.waited = contention.read()
            m.tracing_lost = m.traced and not tracemalloc.is_tracing()
            outcome = "completed"
            if m.trip is not None:
                out.write({"kind": "guard", "t": round(m.elapsed, 6), "iterations": m.iterations, **m.trip.as_dict()})
            if m.exited is not None:
                out.write({"kind": "exit", "t": round(m.elapsed, 6), "iterations": m.iterations, "status": m.exited})
            if out.error and not any(p.startswith("cannot write the samples") for p in m.problems):
                m.problems.append(f"cannot write the samples to {self.path}: {out.error}")
        except BaseException as exc:
            m.elapsed = time.monotonic() - start
            if isinstance(exc, pytest.skip.Exception):
                outcome = "skipped"
            elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
                outcome = "interrupted"
            else:
                outcome = "failed"
            self.result = no_verdict(m, outcome, exc)
            out.write({"kind": "end", "outcome": outcome, "iterations": m.iterations, "t": m.elapsed})
            raise
        finally:
            if outcome != "completed":
                out.close()
                progress.close()
        try:
            result = judge_soak(m)
            self._live_flamegraph(result)
            self.result = result
            out.write(
                {
                    "kind": "verdict",
                    **{k: v for k, v in result.to_dict().items() if k not in ("t", "rss", "heap")},
                    "stopped_by": "memory guard" if m.trip is not None else "exit" if m.exited else None,
                    "guard": m.trip.as_dict() if m.trip is not None else None,
                }
            )
        finally:
            out.close()
            progress.update(time.monotonic(), lambda: self._progress_text(m.elapsed, m.last_rss), final=True)
            progress.close()
        message = failure(m, result)
        if message:
            pytest.fail(message, pytrace=False)
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
        target, wanted, m = self.target, self.config.flamegraph, self.measured
        if not isinstance(target, soak_target.Watched) or wanted == "none":
            return
        if wanted != "all" and result.status != LEAK:
            return
        if m.exited is not None:
            result.problems.append("no live flamegraph: the service is no longer running")
            return
        if m.trip is not None:
            result.problems.append("no live flamegraph: the memory guard stopped the soak near the limit")
            return
        from pytest_memleak.evidence import flamegraph

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
        for a CPU (:class:`~pytest_memleak.probe.contention.Contention`, read at every check), up to
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
                self.measured.trip = guard.trip
                return True
        return False

    def _progress_text(self, t: float, rss: float) -> str:
        m = self.measured
        delta = rss - m.first_rss
        delta_text = format_size(delta, signed=True) if math.isfinite(delta) else "?"
        rss_text = format_size(rss) if math.isfinite(rss) else "?"
        whose = f"pid {self.target.pid} RSS" if self.watched else "RSS"
        return (
            f"soak {m.name}: {t:.1f}/{self.config.duration:g} s, {m.iterations:,} iterations, "
            f"{whose} {rss_text} ({delta_text})"
        )


def _heap_name(m: Measured, meter: measuring.HeapMeter | None) -> str:
    """Where the heap series comes from."""
    if m.is_watched:
        return "Python heap"
    if m.traced:
        return "Python heap (tracemalloc)"
    if meter is None:
        return "Python heap (allocated blocks)"
    if meter.missing is not None:  # malloc's bytes cannot be read: RSS shows them
        return f"Python heap (pymalloc's bytes: {meter.missing})"
    return "Python heap (the allocators' bytes: pymalloc's and malloc's)"


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
