"""The per-run session object: decides which tests are checked, runs the check, reports."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import compat, deciding, options, reporting, sites
from .budget import START_MIN, CostBudget
from .results import CLEAN, INCONCLUSIVE, LEAK, LeakResult
from .units import format_size

SETTINGS_KEY = pytest.StashKey[options.TestSettings]()
COUNTERS_KEY = pytest.StashKey["tuple[Any, ...]"]()  # the project's counters (pytest_memleak_counters) for a checked test
PEAK_KEY = pytest.StashKey[Any]()  # the peak.PeakMeasure of the test's own call
STARTED_KEY = pytest.StashKey[float]()  # when the test's protocol began (perf_counter)
RERUNS_KEY = pytest.StashKey[bool]()  # a test left to pytest-rerunfailures' protocol
TIMEOUT_SHARE = 0.5  # of a pytest-timeout timeout that the test and its windows may use (the rest: evidence, teardown)
UNREACHED_KEY = pytest.StashKey[list[Any]]()  # [credit, passed so far, sessions ago when rested] of a test run as if the plugin were not there
REFREEZE_GROWTH = 1.5  # the heap grown by this factor since the last full collection: collect it whole
# the session's SIGTERM handler while it is installed, and the one it replaced
_sigterm: dict[str, Any] = {"ours": None, "previous": None}
_fork_hook_registered = [False]


def _default_sigterm_in_child() -> None:
    """A child forked while the session handles SIGTERM gets the handler it would have without
    the plugin: multiprocessing's Pool.terminate() relies on SIGTERM ending its workers at once
    (a worker that raised KeyboardInterrupt instead ran its exit handlers and could wait forever
    on a lock the killed workers held)."""
    with contextlib.suppress(ValueError, OSError, TypeError):  # (not the main thread; no signals here)
        if _sigterm["ours"] is not None and signal.getsignal(signal.SIGTERM) is _sigterm["ours"]:
            signal.signal(signal.SIGTERM, _sigterm["previous"] or signal.SIG_DFL)


_SLIM: dict[str, dict[str, str]] = {}  # the status-only dict left on reports, one per status


class ResultStore:
    """Streams every result to a temporary JSON-lines file; keeps in memory only what the summary lists."""

    def __init__(self) -> None:
        self._file: Any = None
        self.counts: dict[str, int] = {}
        self.over_budget = 0  # tests the cost budget did not reach
        self.ignored = [0, 0.0]  # tests with growth memleak_ignore left out, and its bytes per run in all
        self.notable: list[LeakResult] = []  # leaking and inconclusive (what the summary needs of them): listed at the end
        self.soaks: list[dict[str, Any]] = []

    def add(self, data: dict[str, Any], kind: str = "test") -> None:
        if kind == "soak":
            self.soaks.append(data)
        else:
            status = data.get("status", "")
            self.counts[status] = self.counts.get(status, 0) + 1
            self.over_budget += bool(data.get("over_budget"))
            if data.get("ignored_per_run"):
                self.ignored[0] += 1
                self.ignored[1] += float(data["ignored_per_run"])
            if status in (LEAK, INCONCLUSIVE) or data.get("peak_over"):
                self.notable.append(
                    LeakResult.from_dict({k: data.get(k) for k in ("nodeid", "status", "reason", "warned", "known", "group", "peak_over")})
                )
        if self._file is None:
            # open for the whole session: results stream here, closed in pytest_unconfigure
            self._file = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="memleak-results-")  # noqa: SIM115
        self._file.write(json.dumps({"kind": kind, "data": data}) + "\n")

    def iter(self, kind: str) -> Any:
        if self._file is None:
            return
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            record = json.loads(line)
            if record["kind"] == kind:
                yield record["data"]
        self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MemleakSession:
    def __init__(self, config: pytest.Config, sources: options.Sources) -> None:
        self.config = config
        self.sources = sources
        self.enabled: bool = sources.get("enabled")
        self.classifier = sites.Classifier(str(config.rootpath))
        self.store = ResultStore()
        self.budget = CostBudget(sources.get("budget"))
        self.rotation = self._rotation()
        self.draw_day = self._draw_day()
        self.baseline_path, self.baseline = self._baseline()
        self.baseline_lines: list[str] = []  # what the baseline made of this run, for the summary
        self.test_files: set[str] = set()  # the collected test modules, relative to the rootdir
        self.left_to_reruns: set[str] = set()  # tests pytest-rerunfailures reruns: run by its protocol, unchecked
        self.renders: list[tuple[str, Any]] = []  # (nodeid, flamegraph.Render) under way while the tests go on
        self._counters_by_file: dict[Path, tuple[Any, ...]] = {}
        self.is_worker = hasattr(config, "workerinput")
        self.froze = False
        self.frozen_before = 0  # objects the session had frozen before the plugin first froze the heap
        self.measured = 0
        self.blocks_at_full = 0  # allocated blocks right after the last collection of the whole heap
        self.problems: list[str] = []
        self.pid = os.getpid()
        self.report_dir_problem: str | None = None
        self.report_dir_checked = False
        self.terminated = False
        self._previous_sigterm: Any = None
        self._fork_r = self._fork_w = -1  # made at the first checked test or soak (see _arm)
        report_dir = Path(sources.get("report_dir"))
        self.report_dir = report_dir if report_dir.is_absolute() else Path(config.rootpath) / report_dir
        self.skip_all = bool(
            config.getoption("collectonly", False)
            or config.getoption("setuponly", False)
            or config.getoption("setupplan", False)
        )

    def _baseline(self) -> tuple[Path | None, Any]:
        """The known leaks (``baseline.Baseline``) from memleak_baseline; a usage error when the file is not one."""
        value = self.sources.get("baseline")
        if value is None:
            if self.sources.get("baseline_write"):
                raise pytest.UsageError(
                    f"pytest-memleak: {self.sources.origin['baseline_write']} writes a baseline, but no file is given: "
                    "set memleak_baseline (--memleak-baseline=PATH, MEMLEAK_BASELINE or the ini key) to the file to write"
                )
            return None, None
        from . import baseline

        path = Path(value)
        path = path if path.is_absolute() else Path(self.config.rootpath) / path
        return path, baseline.load(path, self.sources.origin["baseline"], missing_ok=bool(self.sources.get("baseline_write")))

    # -- which tests ----------------------------------------------------------------------
    def _draw_day(self) -> int | None:
        """The day whose draw orders the credit (``rotation.draw``): budgeted, rotating, and
        without the rotation's history; None otherwise."""
        if self.budget.share is None or not self.sources.get("rotate") or (self.rotation is not None and not self.rotation.fresh):
            return None
        from . import rotation

        return rotation.today()

    def _rotation(self) -> Any:
        """The tests that rest this session (``rotation.Rotation``), when a budget and the cache allow it."""
        cache = getattr(self.config, "cache", None)
        if not self.enabled or self.budget.share is None or cache is None or not self.sources.get("rotate"):
            return None
        from . import rotation

        return rotation.Rotation.load(cache)

    def _timeout_left(self, item: pytest.Item) -> tuple[float, float] | None:
        """pytest-timeout's timeout for the whole protocol, and what is left of TIMEOUT_SHARE of it."""
        plugin = self.config.pluginmanager.get_plugin("timeout")
        get = getattr(plugin, "_get_item_settings", None)
        if get is None:
            return None
        try:
            settings = get(item)
            timeout, func_only = float(settings.timeout or 0), bool(settings.func_only)
        except Exception:  # another pytest-timeout: no bound known
            return None
        if timeout <= 0 or func_only:  # (func_only: a timer per call, which the re-runs' calls get each)
            return None
        return timeout, TIMEOUT_SHARE * timeout - (time.perf_counter() - item.stash.get(STARTED_KEY, time.perf_counter()))

    def _reruns(self, item: pytest.Item) -> bool:
        """Whether pytest-rerunfailures would rerun this test when it fails (``--reruns``, ``flaky``)."""
        plugin = self.config.pluginmanager.get_plugin("rerunfailures")
        count = getattr(plugin, "get_reruns_count", None)
        if count is None:
            return False
        try:
            return bool(count(item))
        except Exception:  # another pytest-rerunfailures
            return False

    def _relapse(self, item: pytest.Item) -> bool:
        """A test an earlier session found leaking: checked whatever the credit (and charged), so
        that its leak keeps failing it until it is checked clean."""
        return self.rotation is not None and self.rotation.relapse(item.nodeid)

    def is_checked(self, item: pytest.Item) -> bool:
        if self.skip_all or item.get_closest_marker("no_memleak") or item.get_closest_marker("memleak_soak"):
            return False
        return self.enabled or item.get_closest_marker("memleak") is not None

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing: its summary names the workers' floor."""
        self.budget.tests = max(self.budget.tests, len(ids))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Validate every marker at collection, so a typo fails the run before any test runs."""
        self.budget.tests = len(items)
        self.test_files = {item.nodeid.split("::", 1)[0] for item in items}
        for item in items:
            options.validate_simple_marker(item, "no_memleak")
            if item.get_closest_marker("memleak_soak") is not None:
                from . import soak

                soak.soak_config(item, self.sources)
            if item.get_closest_marker("memleak") is not None or self.enabled:
                item.stash[SETTINGS_KEY] = options.settings_for(item, self.sources)
                item.stash[COUNTERS_KEY] = self._counters(item)

    def _counters(self, item: pytest.Item) -> tuple[Any, ...]:
        """The project's counters for the tests of ``item``'s file (its conftests' hook), once a file."""
        found = self._counters_by_file.get(item.path)
        if found is None:
            from . import counters

            found = self._counters_by_file[item.path] = counters.for_item(item)
        return found

    # -- the protocol ---------------------------------------------------------------------
    def _arm(self) -> None:
        """Before the first checked test or soak: the fork channel and the SIGTERM handler (a run that checks nothing gets neither)."""
        if self._fork_r >= 0:
            return
        # a forked child that returns into pytest says so here before it ends (see _child_returned)
        self._fork_r, self._fork_w = os.pipe()
        os.set_blocking(self._fork_r, False)
        self._install_sigterm()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if (item.get_closest_marker("memleak_soak") is not None and not self.skip_all) or self.is_checked(item):
            self._arm()
        if item.get_closest_marker("memleak_soak") is not None and not self.skip_all:
            from . import soak

            soak.run_soak_protocol(item, nextitem, self.sources, self.report_dir)
            return True
        if not self.is_checked(item):
            return None
        item.stash[STARTED_KEY] = time.perf_counter()  # (pytest-timeout's timer covers the protocol from about here)
        if self._reruns(item):  # pytest-rerunfailures reruns a failed test: its protocol, not ours
            item.stash[RERUNS_KEY] = True  # (counted from its last teardown report: under xdist, by the controller)
            return None
        if item.get_closest_marker("memleak") is None and not self._relapse(item):
            credit = self.budget.credit()
            ago = self.rotation.resting(item.nodeid) if self.rotation is not None else None
            if credit < START_MIN or ago is not None:  # no check: pytest runs the test, as without the plugin
                item.stash[UNREACHED_KEY] = [credit, True, ago]
                return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        try:
            self._run_checked(item, nextitem)
        finally:
            item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _run_checked(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        from .repeating import TracingOwner

        settings = item.stash.get(SETTINGS_KEY, None) or options.settings_for(item, self.sources)
        tracing = TracingOwner()  # started for the screen, after the test's own (untraced) run
        try:
            self._run_primary(item, nextitem, settings, tracing)
        finally:
            tracing.stop()

    def _run_primary(self, item: pytest.Item, nextitem: pytest.Item | None, settings: options.TestSettings, tracing: Any) -> None:
        from .repeating import exact_wait

        gc_before = gc.isenabled()
        waits = exact_wait()
        waited_from = waits.mark() if waits is not None else None
        began = time.perf_counter()
        primary = compat.runtestprotocol(item, log=False, nextitem=item.parent)  # type: ignore[arg-type]
        own_seconds = time.perf_counter() - began
        if waited_from is not None:  # what the check may spend is measured by the test's own run: a busy machine's
            # wait for a CPU is not its cost (under load a 0.2 s sleep's own run took 1 s, so ten of its calls
            # read as cheap, and a clean test got 21 runs where its bound allows 9)
            own_seconds = max(own_seconds - waits.since(waited_from), 1e-6)
        self.exit_if_forked_child(item, primary)
        setup, teardown = primary[0], primary[-1]
        call = primary[1] if len(primary) == 3 else None
        passed = call is not None and all(r.passed for r in primary) and not hasattr(call, "wasxfail")
        session = item.session
        interrupted: BaseException | None = None
        if not passed:
            result = deciding.no_verdict(item.nodeid, "the test did not pass: its own outcome stands")
        elif session.shouldfail or session.shouldstop:
            result = deciding.no_verdict(item.nodeid, "the session is stopping")
        else:
            try:
                result = self._measure(item, settings, tracing, own_seconds)
            except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or the test: its own outcome is still reported
                interrupted = exc
                result = deciding.inconclusive(item.nodeid, "interrupted during the repeated runs: no verdict")
            else:
                self._distrust(result, gc_before)
        final = self._final_teardown(item, nextitem)
        if final.failed or not teardown.failed:
            teardown = final
        self._attach(item, call or setup, teardown, result, settings.warn)
        for report in (setup, call, teardown):
            if report is not None:
                item.ihook.pytest_runtest_logreport(report=report)
        if interrupted is not None:
            raise interrupted

    def _distrust(self, result: LeakResult, gc_before: bool) -> None:
        """A measurement made while the test changed what the measuring relies on is not a clean bill."""
        reasons = []
        if gc.isenabled() != gc_before:
            reasons.append(f"the test {'disabled' if gc_before else 'enabled'} the garbage collector")
        if self._child_returned():
            reasons.append("the test forked and the child process returned into pytest (it was ended there)")
        deciding.distrust(result, reasons)

    # -- forks ------------------------------------------------------------------------------
    def exit_if_forked_child(self, item: pytest.Item, reports: list[pytest.TestReport]) -> None:
        """In the child of a fork the test made, back in pytest: end it before it runs the session again."""
        if os.getpid() == self.pid:
            return
        with contextlib.suppress(OSError):
            os.write(self._fork_w, (item.nodeid + "\n").encode())
        os._exit(0 if all(r.passed for r in reports) else 1)

    def _child_returned(self) -> bool:
        try:
            return bool(os.read(self._fork_r, 65536))
        except (BlockingIOError, OSError):
            return False

    # -- SIGTERM --------------------------------------------------------------------------
    def _install_sigterm(self) -> None:
        """SIGTERM ends the run like Ctrl-C (reports written), then the process dies by SIGTERM all the same."""
        if self.is_worker or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # someone else handles it
        _sigterm["ours"] = self._on_sigterm  # (the object signal.getsignal returns while it is installed)
        self._previous_sigterm = _sigterm["previous"] = signal.signal(signal.SIGTERM, _sigterm["ours"])
        if not _fork_hook_registered[0] and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_default_sigterm_in_child)
            _fork_hook_registered[0] = True

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        __tracebackhide__ = True  # pytest shows where the run was, not this handler
        if self.terminated or os.getpid() != self.pid:  # a second SIGTERM (no more cleaning up), or a forked child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.terminated = True
        raise KeyboardInterrupt("SIGTERM")

    @staticmethod
    def _final_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> pytest.TestReport:
        """Tear down the scopes the next test does not need (the runs kept module and class scope up).

        The teardown hooks already ran once for this item, so only the setup state is unwound
        here; the report is made the ordinary way.
        """
        reraise = (pytest.exit.Exception,) if item.config.getoption("usepdb", False) else (pytest.exit.Exception, KeyboardInterrupt)
        call = pytest.CallInfo.from_call(lambda: compat.teardown_exact(item, nextitem), when="teardown", reraise=reraise)
        has_request = compat.start_request(item)  # report hooks may read item.funcargs
        try:
            report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
            return report
        finally:
            if has_request:
                compat.end_request(item)

    def _measure(self, item: pytest.Item, settings: options.TestSettings, tracing: Any, own_seconds: float) -> LeakResult:
        """The check, charged to the session's cost budget (a test marked memleak is exempt)."""
        marked = item.get_closest_marker("memleak") is not None
        credit = float("inf") if marked or self._relapse(item) else self.budget.credit()
        needed = self.budget.needed(own_seconds)
        timeout = self._timeout_left(item)
        hard = float("inf")
        if timeout is not None:  # pytest-timeout's timer covers the test's protocol: its re-runs too
            if timeout[1] < 2 * needed:
                return deciding.no_verdict(
                    item.nodeid,
                    f"not checked: pytest-timeout's timeout of {timeout[0]:g} s covers the test and its re-runs, and leaves "
                    f"{max(timeout[1], 0.0):.2f} s of its {TIMEOUT_SHARE:.0%}, less than a check needs ({2 * needed:.2f} s)",
                )
            credit, hard = min(credit, timeout[1]), timeout[1]
        drawn = None
        if self.draw_day is not None and credit < float("inf"):
            from .rotation import DRAW_SPREAD, draw

            drawn = draw(item.nodeid, self.draw_day)
            needed *= 1 + DRAW_SPREAD * drawn
        if credit < needed:
            return deciding.not_reached(item.nodeid, self.budget.describe(), credit, needed, drawn)
        began = time.perf_counter()
        try:
            return self._check(item, settings, tracing, own_seconds, credit, hard)
        finally:
            self.budget.book(time.perf_counter() - began, exempt=marked)

    def _check(
        self, item: pytest.Item, settings: options.TestSettings, tracing: Any, own_seconds: float, credit: float, hard: float
    ) -> LeakResult:
        from . import repeating

        counters: tuple[Any, ...] = item.stash.get(COUNTERS_KEY, ())
        try:
            result, run = repeating.measure_item(
                item,
                settings,
                self.classifier,
                self._before_measuring,
                tracing,
                self.exit_if_forked_child,
                own_seconds,
                credit,
                hard,
                counters,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except pytest.fail.Exception:
            raise
        except Exception as exc:  # the plugin must never break the suite
            return deciding.inconclusive(item.nodeid, f"measurement failed: {type(exc).__name__}: {exc}")
        try:
            if time.perf_counter() >= run.hard_until:  # (the evidence below takes a run or more, and a walk of the heap)
                if result.leaked:
                    result.problems.append("no retention paths and no flamegraph: pytest-timeout's timeout left no time for them")
                return result
            if result.leaked:
                from . import diagnose

                diagnose.explain(result, run, self.report_dir, run.resources_before, None, draw=self._report_dir_unusable() is None)
                self._hygiene(item, result)
            if result.leaked and settings.flamegraph != "none" or settings.flamegraph == "all" and result.status == CLEAN:
                self._flamegraph(item, result, run, settings)
        finally:
            run.close()
        return result

    @staticmethod
    def _hygiene(item: pytest.Item, result: LeakResult) -> None:
        """Say so when the growth holds a fresh temporary path per run (the re-run's own doing)."""
        from . import hygiene

        base = hygiene.basetemp(item.config)
        if base is None:
            return
        try:
            result.details.extend(hygiene.per_run_paths(base))
        except Exception as exc:  # evidence only: never the verdict
            result.problems.append(f"temporary-path scan failed: {type(exc).__name__}: {exc}")

    def _before_measuring(self) -> None:
        """Collect the session's garbage once, then freeze the heap so each run's collection is cheap."""
        from . import measuring, resources

        self.measured += 1
        if self.measured == 1:
            resources.prepare()  # psutil imported now, not inside a measured window
            measuring.rss()  # first reads (psutil's caches) before any baseline
            measuring.open_fds()
        if not self.froze:
            self.frozen_before = gc.get_freeze_count()
        # A collection of the whole heap, frozen part included, only once the heap has grown by
        # half since the last (objects frozen alive that became cyclic garbage since are freed
        # then): its cost, proportional to the heap, is paid once per such growth. (The block
        # count is read in constant time; gc.get_freeze_count() walks the frozen heap.)
        if self.froze and sys.getallocatedblocks() > REFREEZE_GROWTH * self.blocks_at_full:
            measuring.unfreeze()
            self.blocks_at_full = 0
        gc.collect()  # the test's own run's garbage (the young heap only, when frozen)
        measuring.freeze()
        self.blocks_at_full = self.blocks_at_full or sys.getallocatedblocks()
        self.froze = True

    def _flamegraph(self, item: pytest.Item, result: LeakResult, run: Any, settings: options.TestSettings) -> None:
        try:
            from . import flamegraph
        except ImportError as exc:  # pragma: no cover - a partial install
            result.problems.append(f"no flamegraph: {exc}")
            return
        if self._report_dir_unusable():
            return  # said once, at the end: "reports not written"
        base = self.report_dir / "flamegraphs" / flamegraph.safe_name(item.nodeid)
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            result.problems.append(f"no flamegraph: cannot create {base.parent}: {exc.strerror or exc}")
            return
        per_run = max([result.retained_per_run, *(f.per_run for f in result.findings if f.unit == "B")])
        wanted = flamegraph.capture_runs(per_run, flamegraph.run_time(run.durations(flamegraph.PACE_RUNS)) or run.seconds)
        until = time.perf_counter() + flamegraph.CAPTURE_SECONDS
        first, made = run.runs + 1, 0

        def runs() -> None:
            nonlocal made
            made = run.repeat_for_capture(wanted, until)

        aggregated = settings.capture == "aggregated"
        outcome = flamegraph.capture_run(runs, base, native=settings.native_stacks, aggregated=aggregated, background=True)
        if made:
            held = f", {format_size(made * per_run)} of the leak at its rate" if per_run > 0 else ""
            result.details.append(f"flamegraph: {made:,} runs under memray (runs {first:,}-{first + made - 1:,}){held}")
        if outcome.pending is not None:  # rendered beside the next tests, on another core; finished at the end
            self.renders.append((item.nodeid, outcome.pending))
        result.flamegraph = str(outcome.html) if outcome.html else None
        result.capture = str(outcome.capture) if outcome.capture else None
        if outcome.problem and outcome.problem.startswith("no flamegraph: memray"):
            if outcome.problem not in self.problems:  # the same gap for every test: said once
                self.problems.append(outcome.problem)
        elif outcome.problem:
            result.problems.append(outcome.problem)

    def _report_dir_unusable(self) -> str | None:
        if not self.report_dir_checked:
            from .report import ensure_dir

            self.report_dir_checked = True
            self.report_dir_problem = ensure_dir(self.report_dir)
        return self.report_dir_problem

    def _attach(self, item: pytest.Item, call: pytest.TestReport, teardown: pytest.TestReport, result: LeakResult, warn: bool) -> None:
        if result.leaked:
            from . import grouping

            result.group = grouping.group_of(result.retention, result.sites, self.test_files, self.classifier)
            settings = item.stash.get(SETTINGS_KEY, None)
            if settings is not None and settings.ignore:
                deciding.ignore_group(result, settings.ignore, grouping.GROUP_PREFIX)
        if self.baseline is not None:
            from .grouping import GROUP_PREFIX

            known = self.baseline.get(item.nodeid)
            if known is None and result.group:
                known = self.baseline.get(GROUP_PREFIX + result.group)
            deciding.against_baseline(result, known)
        result.warned = result.leaked and warn  # warn-only: reported, and the test's outcome stands
        self._peak(item, result)
        data = result.to_dict()
        call.memleak = data  # type: ignore[attr-defined]
        teardown.user_properties.extend(
            [
                ("memleak_status", str(result.status)),
                ("memleak_retained_per_run", f"{result.retained_per_run:.1f}"),
                ("memleak_runs", str(result.runs)),
            ]
        )
        if (result.leaked and not result.excused) or (result.peak_over and not warn):
            path, lineno, _ = item.location
            call.outcome = "failed"
            call.longrepr = reporting.LeakRepr(result, path, (lineno or 0) + 1)

    # -- the peak of a test's own call (memleak_peak) ---------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        """The test's own call under memray when it has a peak budget (once: not its re-runs)."""
        settings = item.stash.get(SETTINGS_KEY, None)
        if settings is None or settings.peak is None or PEAK_KEY in item.stash or self.skip_all:
            return (yield)
        from . import peak
        from .flamegraph import safe_name

        tracking = peak.Tracking(self.report_dir / "peak" / safe_name(item.nodeid, ".bin"), self.classifier)
        tracking.start()
        try:
            return (yield)
        finally:
            item.stash[PEAK_KEY] = tracking.stop()

    @staticmethod
    def _peak(item: pytest.Item, result: LeakResult) -> None:
        measured = item.stash.get(PEAK_KEY, None)
        settings = item.stash.get(SETTINGS_KEY, None)
        if measured is None or settings is None:
            return
        deciding.over_peak(result, measured.peak, settings.peak, measured.sites)
        result.peak_capture = measured.capture
        if measured.problem:
            result.problems.append(measured.problem)

    # -- reporting ------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        """A test the cost budget did not reach gets its (no) verdict on its teardown report (one
        per test: a subtest makes call reports of its own)."""
        report = yield
        if call.when == "teardown" and item.stash.get(RERUNS_KEY, False):
            report.memleak_left_to_reruns = True
        unreached = item.stash.get(UNREACHED_KEY, None)
        if unreached is not None:
            unreached[1] = unreached[1] and report.passed and not hasattr(report, "wasxfail")
            if call.when == "teardown":
                if unreached[1] and unreached[2] is not None:
                    result = deciding.rested(item.nodeid, unreached[2], self.rotation.rest)
                elif unreached[1]:
                    result = deciding.not_reached(item.nodeid, self.budget.describe(), unreached[0])
                else:
                    result = deciding.no_verdict(item.nodeid, "the test did not pass: its own outcome stands")
                self._peak(item, result)
                report.memleak = result.to_dict()
            elif call.when == "call" and report.passed:  # pytest ran it (unchecked): its peak is judged all the same
                result = deciding.no_verdict(item.nodeid, "not checked")
                self._peak(item, result)
                settings = item.stash.get(SETTINGS_KEY, None)
                if result.peak_over and settings is not None and not settings.warn:
                    path, lineno, _ = item.location
                    report.outcome = "failed"
                    report.longrepr = reporting.LeakRepr(result, path, (lineno or 0) + 1)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Any:
        """Store the verdict; once every plugin has seen the report, drop what it carried.

        pytest keeps every report until the session ends (the terminal reporter's stats), so a
        full result left on it would pile up per test. The store has it on disk; the report
        keeps only its status (for the status letter), in a dict shared by all reports.
        """
        data = getattr(report, "memleak", None)
        if isinstance(data, dict):
            self.store.add(data)
        if report.when == "teardown":
            self._xunit2_properties(report)
            if getattr(report, "memleak_left_to_reruns", False):
                self.left_to_reruns.add(report.nodeid)  # (once per test: a rerun makes teardown reports of its own)
        soak_data = getattr(report, "memleak_soak", None)
        if report.when == "call" and isinstance(soak_data, dict):
            self.store.add(soak_data, kind="soak")
        try:
            return (yield)
        finally:
            if isinstance(data, dict):
                status = data.get("status", "")
                report.memleak = _SLIM.setdefault(status, {"status": status})  # type: ignore[attr-defined]
            props = report.user_properties
            if report.when == "teardown" and any(isinstance(p, tuple) and str(p[0]).startswith("memleak_") for p in props):
                # junitxml and xdist have read them by now
                report.user_properties = [p for p in props if not (isinstance(p, tuple) and str(p[0]).startswith("memleak_"))]

    @functools.cached_property
    def _xunit2_xml(self) -> Any:
        """pytest's junitxml writer when it writes the xunit2 family, else None (looked up once:
        every test's teardown report asks)."""
        xml = compat.junit_xml(self.config)
        return None if xml is None or getattr(xml, "family", "xunit2") in ("xunit1", "legacy") else xml

    def _xunit2_properties(self, report: pytest.TestReport) -> None:
        """JUnit's xunit2 family (pytest's default) allows no properties in a testcase: there the
        verdict's properties go to the testsuite, named ``memleak_status[<node id>]``."""
        xml = self._xunit2_xml
        if xml is None:
            return
        ours = [p for p in report.user_properties if isinstance(p, tuple) and str(p[0]).startswith("memleak_")]
        if ours:
            report.user_properties = [p for p in report.user_properties if p not in ours]
            for name, value in ours:
                xml.add_global_property(f"{name}[{report.nodeid}]", value)

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, Any] | None:
        data = getattr(report, "memleak", None)
        if isinstance(data, dict) and data.get("status") == LEAK and report.failed:
            return "failed", "L", ("LEAKED", {"red": True})
        if isinstance(data, dict) and (data.get("warned") or data.get("known")) and report.passed and report.when == "call":
            why = "known leak: baseline" if data.get("known") else "leak reported: warn-only"
            return "passed", "l", (f"PASSED ({why})", {"yellow": True})
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        store = self.store
        if store.counts:
            terminalreporter.write_sep("=", "memleak summary", yellow=True)
            for line in reporting.summary_lines(store.notable, store.counts, store.over_budget, self.budget.describe(), store.ignored):
                warned = line.startswith(("LEAK (", "warn-only", "baseline"))
                terminalreporter.write_line(line, red=line.startswith(("LEAK", "PEAK")) and not warned, yellow=warned)
        for line in self.baseline_lines:
            terminalreporter.write_line(line, yellow=True)
        if self.left_to_reruns:
            terminalreporter.write_line(
                f"memleak: {len(self.left_to_reruns)} test(s) not checked: pytest-rerunfailures reruns them when they fail "
                "(--reruns or the flaky marker), and their reruns are its to make",
                yellow=True,
            )
        if store.soaks:
            from . import soak
            from .results import SoakResult

            terminalreporter.write_sep("=", "memleak soak", yellow=True)
            for line in soak.summary_lines([SoakResult.from_dict(d) for d in store.soaks]):
                terminalreporter.write_line(line)
        from . import measuring

        for problem in [*self.problems, *measuring.problems()]:
            terminalreporter.write_line(f"memleak: {problem}", yellow=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if os.getpid() != self.pid:
            return  # a forked child that got this far: the parent reports
        if self.terminated:
            session.exitstatus = 128 + signal.SIGTERM  # 143: what a shell reports for a process ended by SIGTERM
        if self.froze:
            from . import measuring

            if not self.frozen_before:  # a heap the session had frozen stays frozen
                measuring.unfreeze()
            self.froze = False
        self._finish_renders()
        if self.is_worker or not (self.store.counts or self.store.soaks):
            return
        if self.baseline_path is not None:
            self._settle_baseline()
        if self.rotation is not None:
            try:
                self.rotation.save(self.config.cache, self.store.iter("test"))
            except Exception as exc:  # a convenience: never the run's verdicts
                self.problems.append(f"rotation not saved in pytest's cache: {type(exc).__name__}: {exc}")
        self._write_reports(session)

    def _settle_baseline(self) -> None:
        """Name the baseline's entries this run found fixed; write the file when asked to."""
        from . import baseline

        assert self.baseline_path is not None and self.baseline is not None
        fixed = sorted(d["nodeid"] for d in self.store.iter("test") if d["nodeid"] in self.baseline and d["status"] == CLEAN)
        self.baseline_lines = [f"FIXED {nodeid} - in the baseline {self.baseline_path.name}, now clean: its entry can go" for nodeid in fixed]
        if not self.sources.get("baseline_write"):
            return
        known = baseline.merged(self.baseline, self.store.iter("test"))
        try:
            baseline.write(self.baseline_path, known)
        except OSError as exc:  # the run's verdicts stand; the file is as it was
            self.problems.append(f"baseline not written to {self.baseline_path}: {exc.strerror or exc}")
            return
        self.baseline_lines.append(f"baseline written to {self.baseline_path}: {len(known)} known leak(s)")

    def _finish_renders(self) -> None:
        """Wait for the flamegraphs still rendering; a failed one is said (and left out of the reports)."""
        renders, self.renders = self.renders, []
        for nodeid, render in renders:
            problem = render.finish()
            if problem:
                self.problems.append(f"flamegraph of {nodeid} not rendered: {problem}")

    def _write_reports(self, session: pytest.Session) -> None:
        try:
            from . import report
        except ImportError:
            return
        problem = self._report_dir_unusable()
        if problem:
            self.problems.append(f"reports not written: {problem}")
            return
        meta = {
            "rootdir": str(self.config.rootpath),
            "exitstatus": int(session.exitstatus) if session.exitstatus is not None else None,
            "settings": {k: v for k, v in self.sources.values.items()},
            "origin": dict(self.sources.origin),
        }
        try:  # read once, typed, for every writer
            tests = report.tests_of("the reports", self._rendered(self.store.iter("test")))
            soaks = report.soaks_of("the reports", self.store.soaks)
        except Exception as exc:  # never lose the run's verdicts over a report
            self.problems.append(f"reports not written: {type(exc).__name__}: {exc}")
            return
        for name, writer in (("memleak.json", report.write_json), ("memleak.html", report.write_html)):
            try:
                writer(self.report_dir / name, tests, soaks, meta)
            except Exception as exc:  # never lose the run's verdicts over a report
                self.problems.append(f"{name} not written: {type(exc).__name__}: {exc}")
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            text = report.github_summary(tests, soaks)
            problem = report.append_github_summary(text)
            if problem:
                self.problems.append(problem)

    @staticmethod
    def _rendered(results: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Results whose flamegraph is on disk name it (a render may have failed, here or in a worker)."""
        for data in results:
            if data.get("flamegraph") and not os.path.isfile(data["flamegraph"]):
                data["flamegraph"] = None
            yield data

    def pytest_unconfigure(self) -> None:
        for _, render in self.renders:  # the session ended before they were waited for
            render.stop()
        self.store.close()
        measuring = sys.modules.get(f"{__package__}.measuring")  # (not imported unless something was measured)
        if measuring is not None:
            measuring.close_heap_meter()
        for fd in (self._fork_r, self._fork_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            _sigterm["ours"] = _sigterm["previous"] = None

