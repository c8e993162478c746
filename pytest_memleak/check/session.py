"""The per-run session object: decides which tests are checked, runs the check, reports."""

from __future__ import annotations

import functools
import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_memleak import compat
from pytest_memleak.check import deciding, protocol
from pytest_memleak.check.budget import START_MIN, CostBudget
from pytest_memleak.check.guards import ProcessGuards
from pytest_memleak.check.store import ResultStore
from pytest_memleak.config import options
from pytest_memleak.evidence import sites
from pytest_memleak.results import CLEAN, LEAK, LeakResult

SETTINGS_KEY = pytest.StashKey[options.TestSettings]()
COUNTERS_KEY = pytest.StashKey["tuple[Any, ...]"]()  # the project's counters (pytest_memleak_counters) for a checked test
PEAK_KEY = pytest.StashKey[Any]()  # the peak.PeakMeasure of the test's own call
STARTED_KEY = pytest.StashKey[float]()  # when the test's protocol began (perf_counter)
RERUNS_KEY = pytest.StashKey[bool]()  # a test left to pytest-rerunfailures' protocol
TIMEOUT_SHARE = 0.5  # of a pytest-timeout timeout that the test and its windows may use (the rest: evidence, teardown)
UNREACHED_KEY = pytest.StashKey[list[Any]]()  # [credit, passed so far, sessions ago when rested] of a test run as if the plugin were not there

_SLIM: dict[str, dict[str, str]] = {}  # the status-only dict left on reports, one per status


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
        self.problems: list[str] = []
        self.report_dir_problem: str | None = None
        self.report_dir_checked = False
        self.guards = ProcessGuards(self.is_worker)  # forks, SIGTERM and the frozen heap
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
        from pytest_memleak.config import baseline

        path = Path(value)
        path = path if path.is_absolute() else Path(self.config.rootpath) / path
        return path, baseline.load(path, self.sources.origin["baseline"], missing_ok=bool(self.sources.get("baseline_write")))

    # -- which tests ----------------------------------------------------------------------
    def _draw_day(self) -> int | None:
        """The day whose draw orders the credit (``rotation.draw``): budgeted, rotating, and
        without the rotation's history; None otherwise."""
        if self.budget.share is None or not self.sources.get("rotate") or (self.rotation is not None and not self.rotation.fresh):
            return None
        from pytest_memleak.check import rotation

        return rotation.today()

    def _rotation(self) -> Any:
        """The tests that rest this session (``rotation.Rotation``), when a budget and the cache allow it."""
        cache = getattr(self.config, "cache", None)
        if not self.enabled or self.budget.share is None or cache is None or not self.sources.get("rotate"):
            return None
        from pytest_memleak.check import rotation

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
                from pytest_memleak.soak.config import soak_config

                soak_config(item, self.sources)
            if item.get_closest_marker("memleak") is not None or self.enabled:
                item.stash[SETTINGS_KEY] = options.settings_for(item, self.sources)
                item.stash[COUNTERS_KEY] = self._counters(item)

    def _counters(self, item: pytest.Item) -> tuple[Any, ...]:
        """The project's counters for the tests of ``item``'s file (its conftests' hook), once a file."""
        found = self._counters_by_file.get(item.path)
        if found is None:
            from pytest_memleak.check import counters

            found = self._counters_by_file[item.path] = counters.for_item(item)
        return found

    # -- the protocol ---------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if (item.get_closest_marker("memleak_soak") is not None and not self.skip_all) or self.is_checked(item):
            self.guards.arm()
        if item.get_closest_marker("memleak_soak") is not None and not self.skip_all:
            from pytest_memleak.soak import run as soak

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
        from pytest_memleak.check.runner import TracingOwner

        settings = item.stash.get(SETTINGS_KEY, None) or options.settings_for(item, self.sources)
        tracing = TracingOwner()  # started for the screen, after the test's own (untraced) run
        try:
            self._run_primary(item, nextitem, settings, tracing)
        finally:
            tracing.stop()

    def _run_primary(self, item: pytest.Item, nextitem: pytest.Item | None, settings: options.TestSettings, tracing: Any) -> None:
        gc_before = gc.isenabled()
        primary, own_seconds = protocol.run_once(item)
        self.guards.exit_if_forked_child(item, primary)
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
        final = protocol.final_teardown(item, nextitem)
        if final.failed or not teardown.failed:
            teardown = final
        self._attach(item, call or setup, teardown, result, settings.warn)
        protocol.log(item, (setup, call, teardown))
        if interrupted is not None:
            raise interrupted

    def _distrust(self, result: LeakResult, gc_before: bool) -> None:
        """A measurement made while the test changed what the measuring relies on is not a clean bill."""
        reasons = []
        if gc.isenabled() != gc_before:
            reasons.append(f"the test {'disabled' if gc_before else 'enabled'} the garbage collector")
        if self.guards.child_returned():
            reasons.append("the test forked and the child process returned into pytest (it was ended there)")
        deciding.distrust(result, reasons)

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
            from pytest_memleak.check.rotation import DRAW_SPREAD, draw

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
        from pytest_memleak.check import repeating

        counters: tuple[Any, ...] = item.stash.get(COUNTERS_KEY, ())
        try:
            result, run = repeating.measure_item(
                item,
                settings,
                self.classifier,
                self.guards.before_measuring,
                tracing,
                self.guards.exit_if_forked_child,
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
            from pytest_memleak.evidence import gather

            if result.leaked:
                from pytest_memleak.evidence import diagnose

                diagnose.explain(result, run, self.report_dir, run.resources_before, None, draw=self._report_dir_unusable() is None)
                gather.temporary_paths(item, result)
            wanted = result.leaked and settings.flamegraph != "none" or settings.flamegraph == "all" and result.status == CLEAN
            if wanted and not self._report_dir_unusable():  # (unusable: said once, at the end: "reports not written")
                pending, shared = gather.flamegraph(result, run, self.report_dir, settings.native_stacks, settings.capture == "aggregated")
                if pending is not None:  # rendered beside the next tests, on another core; finished at the end
                    self.renders.append((item.nodeid, pending))
                if shared is not None and shared not in self.problems:  # the same gap for every test: said once
                    self.problems.append(shared)
        finally:
            run.close()
        return result

    def _report_dir_unusable(self) -> str | None:
        if not self.report_dir_checked:
            from pytest_memleak.report import ensure_dir

            self.report_dir_checked = True
            self.report_dir_problem = ensure_dir(self.report_dir)
        return self.report_dir_problem

    def _attach(self, item: pytest.Item, call: pytest.TestReport, teardown: pytest.TestReport, result: LeakResult, warn: bool) -> None:
        if result.leaked:
            from pytest_memleak.evidence import grouping

            result.group = grouping.group_of(result.retention, result.sites, self.test_files, self.classifier)
            settings = item.stash.get(SETTINGS_KEY, None)
            if settings is not None and settings.ignore:
                deciding.ignore_group(result, settings.ignore, grouping.GROUP_PREFIX)
        if self.baseline is not None:
            from pytest_memleak.evidence.grouping import GROUP_PREFIX

            known = self.baseline.get(item.nodeid)
            if known is None and result.group:
                known = self.baseline.get(GROUP_PREFIX + result.group)
            deciding.against_baseline(result, known)
        result.warned = result.leaked and warn  # warn-only: reported, and the test's outcome stands
        self._peak(item, result)
        protocol.attach(call, teardown, result)
        if (result.leaked and not result.excused) or (result.peak_over and not warn):
            protocol.fail(call, item, result)

    # -- the peak of a test's own call (memleak_peak) ---------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        """The test's own call under memray when it has a peak budget (once: not its re-runs)."""
        settings = item.stash.get(SETTINGS_KEY, None)
        if settings is None or settings.peak is None or PEAK_KEY in item.stash or self.skip_all:
            return (yield)
        from pytest_memleak.check import peak
        from pytest_memleak.evidence.flamegraph import safe_name

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
                    protocol.fail(report, item, result)
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
        from pytest_memleak.check import measuring
        from pytest_memleak.report.session_end import write_summary

        problems = [*self.problems, *measuring.problems()]
        write_summary(terminalreporter, self.store, self.budget.describe(), self.baseline_lines, self.left_to_reruns, problems)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if os.getpid() != self.guards.pid:
            return  # a forked child that got this far: the parent reports
        if self.guards.terminated:
            session.exitstatus = 128 + signal.SIGTERM  # 143: what a shell reports for a process ended by SIGTERM
        self.guards.thaw()
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
        from pytest_memleak.config import baseline

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
            from pytest_memleak.report.session_end import write_files
        except ImportError:
            return
        problem = self._report_dir_unusable()
        if problem:
            self.problems.append(f"reports not written: {problem}")
            return
        meta = {
            "rootdir": str(self.config.rootpath),
            "exitstatus": int(session.exitstatus) if session.exitstatus is not None else None,
            "settings": dict(self.sources.values),
            "origin": dict(self.sources.origin),
        }
        self.problems.extend(write_files(self.report_dir, self.store, meta))

    def pytest_unconfigure(self) -> None:
        for _, render in self.renders:  # the session ended before they were waited for
            render.stop()
        self.store.close()
        measuring = sys.modules.get(f"{__package__}.measuring")  # (not imported unless something was measured)
        if measuring is not None:
            measuring.close_heap_meter()
        self.guards.close()

