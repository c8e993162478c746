"""The runs: a test run again and again under its own fixtures, timed, bounded and kept from
changing the session (a light run is its call and function-scoped setup, a bare run its call
alone). :mod:`pytest_memleak.check.repeating` makes the stages of a check from these runs."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import tracemalloc
import warnings
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from pytest_memleak import compat
from pytest_memleak.check import deciding
from pytest_memleak.check.counters import Counter

STRETCH_WAIT = 3.0  # a stretch bounded by time runs on by its wait for a CPU, up to this many times its span

COUNTED = ("fds", "threads")  # exact counts the screen reads, judged on their own if the runs stop early
MIN_SUSPECT_SECONDS = 0.5  # a suspect's persistence and attribution may always take this long, ...
WAIT_SHARE = 0.1  # a wait for a CPU below this share of a suspect's bound does not move it (a quiet machine's)
MAX_RUNS = 4096  # capacity of the per-run clock; no stage runs past it
WAIT_READ_MIN = 0.001  # a run after one this long reads the thread's wait for a CPU (a read costs ~10 us)


T = TypeVar("T")


@functools.cache
def exact_wait() -> Any:
    """The kernel's count of this thread's wait for a CPU (a probe.contention.Contention), made once:
    its mark() and since() keep no state, so every Runner shares it; None where there is no exact count."""
    from pytest_memleak.probe.contention import Contention

    waits = Contention()
    return waits if waits.exact else None


def less_wait(waits: Any, work: Callable[[], T]) -> tuple[T, float]:
    """``work()``'s result and its seconds less the thread's wait for a CPU meanwhile, where
    ``waits`` (an :func:`exact_wait`) counts it. The wait is read inside the clock's span (the clock
    first, then the wait; the wait, then the clock), so it never counts a preemption just outside
    it: a busy machine's preemption between the two readings could make a quick test's own run read
    1 us, and its screen, sized by that, clear it after one run."""
    began = time.perf_counter()
    mark = waits.mark() if waits is not None else None
    result = work()
    waited = waits.since(mark) if mark is not None else 0.0
    return result, max(time.perf_counter() - began - waited, 0.0)


@dataclass
class TracingOwner:
    """Whether the plugin started tracemalloc for this test (and so may restart or stop it)."""

    owned: bool = False

    def stop(self) -> None:
        if self.owned and tracemalloc.is_tracing():
            tracemalloc.stop()
        self.owned = False


class NotRepeatable(Exception):
    """A repeated run did not pass: the test cannot be measured by repetition."""


class OutOfTime(Exception):
    """The next run would not fit in the stage's time bound."""


class SlowingDown(Exception):
    """Every run takes longer than the one before."""


@dataclass
class Runner:
    """Runs an item once more, as a whole function-scoped cycle, and discards what it reports."""

    item: pytest.Item
    after_run: Callable[[pytest.Item, list[Any]], None] | None = None  # ends a forked child back in pytest
    runs: int = 0
    light: bool = True
    deadline: float = float("inf")  # perf_counter time the next run must end by
    credit_until: float = float("inf")  # when the session's cost budget runs out: a suspect's bound ends there at the latest
    hard_until: float = float("inf")  # a bound nothing outlasts, MIN_SUSPECT_SECONDS included (pytest-timeout's timer)
    waits: Any = None  # a suspect's probe.contention.Contention: its wait for a CPU moves the deadline on, ...
    wait_cap: float = 0.0  # ... by this much at the most
    credited: float = 0.0  # the wait the deadline has been moved on by
    _sections: int = 0
    _props: int = 0
    _log: list[Any] = field(default_factory=list)
    _inside: bool = False  # within measuring(): output captured, hook relay quiet
    _capman: Any = None
    clock: array[float] = field(default_factory=lambda: array("d", bytes(8 * MAX_RUNS)))
    waited: array[float] = field(default_factory=lambda: array("d", bytes(8 * MAX_RUNS)))  # each run's wait for a CPU (where read)
    # the thread's wait when the current run began (-1: not read), in place: an int kept is a block only when the
    # wait was read, and a test of about WAIT_READ_MIN a run then read [+2, 0] blocks for a block a run
    _run_mark: array[int] = field(default_factory=lambda: array("q", [-1]))
    resources_before: Any = None  # what was alive when the last attribution window began
    watch_slowing: bool = True  # off while traced: tracing itself slows the runs down
    watch_slowing_from: int = 0  # the run from which durations are comparable again (after tracing)
    _function: Any = None  # the test function, whose attributes each run starts from
    _function_state: dict[str, Any] = field(default_factory=dict)
    _exception_queues: list[Any] = field(default_factory=list)
    bare: bool = False  # runs may share one setup: the test uses no function-scoped fixture
    _call: array[float] = field(default_factory=lambda: array("d", [0.0]))  # in place: a float kept would be a block of growth
    counters: tuple[Counter, ...] = ()  # the project's counters (pytest_memleak_counters), read at every measurement
    counter_errors: dict[str, str] = field(default_factory=dict)  # a counter that failed to read, and why
    cpu_wait: Any = None  # a probe.contention.Contention that counts exactly (the kernel's), for repeat()'s time-bounded stretches
    call_wait: bool = False  # each light setup's first call is timed less its wait for a CPU (the screen's first stretch)

    def __post_init__(self) -> None:
        self._exception_queues = compat.exception_queues(self.item.config)
        self._sections = len(compat.report_sections(self.item))
        self._props = len(getattr(self.item, "user_properties", ()))
        # The test function's own attributes as its own run left them: plugins set some at every
        # setup (hypothesis chains a settings object onto the previous one), which a single run
        # never repeats; each repeated run starts from the same state.
        obj = self.item.__dict__.get("_obj")
        cls = getattr(self.item, "cls", None)
        if obj is None and cls is not None:  # a unittest case drops its bound method at teardown
            obj = getattr(cls, getattr(self.item, "originalname", None) or self.item.name, None)
        function = getattr(obj, "__func__", obj)
        self._function = function if isinstance(getattr(function, "__dict__", None), dict) else None
        self._function_state = dict(function.__dict__) if self._function is not None else {}
        self._hypothesis = _rerun_hypothesis_settings(self._function)
        if self._hypothesis is not None:  # for the re-runs only (until close()): each run's test instance is a new executor
            self._function.__dict__[_HYPOTHESIS_SETTINGS] = self._function_state[_HYPOTHESIS_SETTINGS] = self._hypothesis[1]
        fixturenames = getattr(self.item, "fixturenames", None)
        # caplog reads state that pytest's logging hooks set for each phase
        self.light = isinstance(self.item, pytest.Function) and fixturenames is not None and "caplog" not in fixturenames
        # (with --pdb, pytest's unittest support defers tearDown to the teardown of each setup)
        self.bare = self.light and _no_function_fixtures(self.item) and not self.item.config.getoption("usepdb", False)
        self.cpu_wait = exact_wait()

    @property
    def counted(self) -> tuple[str, ...]:
        """The exact counts judged on their own: descriptors, threads and the project's counters."""
        return (*COUNTED, *(c.name for c in self.counters))

    def close(self) -> None:
        """The re-runs are over: what the test function had for its own run is back."""
        if self._hypothesis is not None:
            self._function.__dict__[_HYPOTHESIS_SETTINGS] = self._function_state[_HYPOTHESIS_SETTINGS] = self._hypothesis[0]
            self._hypothesis = None

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Output captured and subtest reports dropped for all the runs; warnings recorded."""
        item = self.item
        session = item.session
        capman = item.config.pluginmanager.getplugin("capturemanager")
        self._capman = capman if capman is not None and capman.is_globally_capturing() else None
        compat.drop_repeated_finishes(session)  # the earlier tests' (pytest 8.0): none is freed mid-measure
        with compat.wrapped_hook_proxy(session, _QuietRelay), warnings.catch_warnings(record=True) as log:
            self._log = log
            self._inside = True
            self._resume()
            try:
                yield
            finally:
                self._inside = False
                if self._capman is not None:
                    self._capman.suspend_global_capture(in_=False)
                    self._capman.read_global_capture()
                self._log = []

    def _resume(self) -> None:
        if self._capman is not None:
            self._capman.resume_global_capture()

    def drain(self) -> None:
        """Drop output captured so far (with ``--capture=sys`` it is kept in memory)."""
        if self._capman is not None:
            self._capman.read_global_capture()
        self._log.clear()

    @property
    def call_seconds(self) -> float:
        """The test's call alone, without setup and teardown, in the latest light setup's first run
        (less the thread's wait for a CPU during it, where ``call_wait`` asked for it)."""
        return float(self._call[0])

    @property
    def seconds(self) -> float:
        """The latest run's duration."""
        return self.clock[self.runs - 1] if self.runs else 0.0

    def within_credit(self, bound: float, since: float) -> tuple[float, bool]:
        """A suspect's time ``bound`` from ``since``, cut where the session's cost budget runs out
        (MIN_SUSPECT_SECONDS at the least) and at the hard bound (whatever the least), and whether
        the budget or the hard bound was what cut it."""
        left, hard = self.credit_until - since, self.hard_until - since
        return min(max(MIN_SUSPECT_SECONDS, min(bound, left)), hard), left < bound or hard < bound

    def durations(self, last: int) -> list[float]:
        return list(self.clock[max(0, self.runs - last) : self.runs])

    def busy(self, start: int, stop: int) -> list[float]:
        """Runs ``start`` to ``stop``, each less its wait for a CPU where it was read: what a slowdown
        is judged on (beside two busy loops, a test keeping a 2 MiB numpy array a run read as slowing from 11.7 ms
        to 21.9 ms a run, its waits counted in, and its leak went unreported)."""
        stop = min(stop, self.runs, MAX_RUNS)
        return [c - w for c, w in zip(self.clock[max(0, start) : stop], self.waited[max(0, start) : stop], strict=True)]

    def _begin_run(self) -> float:
        """A run begins: its clock, then (after a run of WAIT_READ_MIN or more) the thread's wait."""
        began = time.perf_counter()
        mark = self._wait_mark() if self.seconds >= WAIT_READ_MIN else None
        self._run_mark[0] = -1 if mark is None else mark
        return began

    def __call__(self) -> None:
        """One run."""
        self.repeat(1)

    def repeat(self, n: int, until: float = float("inf")) -> int:
        """Up to ``n`` runs, and after the first only those that the latest run's time says end
        by ``until`` (a perf_counter time); returns the runs made. ``until`` moves on by the time
        the thread waited for a CPU meanwhile, where the kernel counts it: a stretch sized by time
        makes as many runs on a busy machine as on a quiet one.

        A test whose fixtures are all of a wider scope than the function makes them under one
        setup (a *bare* run is its call alone, a quarter of a light run for a quick test); any
        other test makes light runs (or full ones).
        """
        made = 0
        span, credited = until - time.perf_counter(), 0.0
        mark = self._wait_mark() if until != float("inf") else None
        while made < n:
            if made and time.perf_counter() + self.seconds > until:
                # a busy machine's wait for a CPU is not the stretch's cost (up to STRETCH_WAIT spans more)
                waited = 0.0 if mark is None else min(self.cpu_wait.since(mark), STRETCH_WAIT * span)
                if waited - credited < WAIT_SHARE * span:
                    break
                until, credited = until + waited - credited, waited
                continue
            if self.light and self._inside:
                made += self._light_runs(n - made if self.bare else 1, until)
            else:
                self._check_time()
                began = self._begin_run()
                failure = self._full_run()
                self._account(began, failure)
                made += 1
        return made

    def warm(self) -> None:
        """Call what a run reaches only on some timings: the wait read after a run of WAIT_READ_MIN
        or more, the slowdown watch after a run past its floor, the wait credited near a bound
        (see :func:`pytest_memleak.check.repeating.warm`). Changes nothing."""
        mark = self._wait_mark()
        if mark is not None:
            self.cpu_wait.since(mark)
        durations = self.busy(0, 0) + [1.0] * (deciding.SLOWING_RUNS + 1)
        deciding.slowing(durations)
        deciding.slowed(durations, durations)
        if self.waits is None:  # (returns at once: nothing to credit)
            self.credit_wait()

    def _wait_mark(self) -> int | None:
        """The thread's wait for a CPU so far (None: not counted exactly here)."""
        if self.cpu_wait is None:
            return None
        return int(self.cpu_wait.mark())

    def repeat_for_capture(self, n: int, until: float) -> int:
        """Up to ``n`` runs that end by ``until``, for a memray capture: the slow-down watch is off
        (the tracker slows the runs), and a stop (the time, the run limit, a failed run) ends them
        quietly. Returns the runs made."""
        saved = self.watch_slowing, self.deadline
        self.watch_slowing, self.deadline = False, min(until, self.hard_until)
        before = self.runs
        try:
            self.repeat(n, self.deadline)
        except (OutOfTime, SlowingDown, NotRepeatable):
            pass
        finally:
            self.watch_slowing, self.deadline = saved
        return self.runs - before

    def _check_time(self) -> None:
        if self._inside:
            if self.runs >= MAX_RUNS:
                raise OutOfTime(f"{MAX_RUNS} runs")
            if self.runs and time.perf_counter() + self.seconds > self.deadline:
                self.credit_wait()  # (read only where the bound would end the runs)
                if time.perf_counter() + self.seconds > self.deadline:
                    raise OutOfTime("time bound")

    def credit_wait(self) -> None:
        """Move the deadline on by the time this thread has waited for a CPU since the suspect
        began (``waits``), up to ``wait_cap`` in all: a busy machine's wait is not the check's
        cost, and its bounds would otherwise end a leak's windows before they show it. Never past
        the session's credit or ``hard_until``; a wait below WAIT_SHARE of the bound is a quiet
        machine's (0.00-0.02 s), and moving the bound by it changed what a slow test's windows did."""
        if self.waits is None:
            return
        waited = min(self.waits.read(), self.wait_cap)
        if waited > self.credited and waited >= WAIT_SHARE * self.wait_cap:
            self.deadline = min(self.deadline + waited - self.credited, max(self.deadline, min(self.hard_until, self.credit_until)))
            self.credited = waited

    def _account(self, began: float, failure: str | None, torn_down: bool = True) -> None:
        """Book a finished run: its time, tidying, then what it says (a failure, a slowdown)."""
        self._tidy(torn_down)
        if self.runs < MAX_RUNS:
            # (the wait, then the clock: a wait read inside the run's span)
            self.waited[self.runs] = self.cpu_wait.since(self._run_mark[0]) if self._run_mark[0] >= 0 else 0.0
            self.clock[self.runs] = time.perf_counter() - began
        self.runs += 1
        if failure is not None:
            raise NotRepeatable(f"run {self.runs + 1} {failure}: the test is not repeatable")
        if self._inside and self.watch_slowing:
            if not self.watch_slowing_from:
                self.watch_slowing_from = self.runs  # the first run of a stretch that is not traced
            latest = min(self.runs, MAX_RUNS) - 1
            if self.clock[latest] - self.waited[latest] < deciding.SLOWING_FLOOR:
                return  # a run quicker than the floor a slowdown must reach shows none
            recent = self.runs - self.watch_slowing_from
            if deciding.slowing(self.busy(self.runs - min(recent, deciding.SLOWING_RUNS + 1), self.runs)):
                raise SlowingDown
            n = deciding.SLOWING_RUNS + 1
            if self.runs % 8 == 0 and recent >= n and deciding.slowed(self.busy(0, n), self.busy(self.runs - n, self.runs)):
                raise SlowingDown

    def _light_runs(self, calls: int, until: float = float("inf")) -> int:
        """Set the test up, call it up to ``calls`` times, tear it down; returns the runs made.

        The first call's time is kept (``call_seconds``). A call that failed, or that requested
        a function-scoped fixture of its own (``request.getfixturevalue``), ends the calls under
        this setup: reused, such a fixture would outlive a run, so the test makes a setup per run
        from then on.
        """
        item = self.item
        self._check_time()
        began = self._begin_run()
        made = 0
        failure: str | None = None
        pending: Exception | None = None  # a stop (time bound, slowdown) raised once torn down
        compat.new_request(item)
        try:
            compat.setup(item)
            while True:
                made += 1
                if made == 1:  # (less its wait where asked: one preemption of a 1 ms call costs it 20-60 ms beside busy loops)
                    self._call[0] = less_wait(self.cpu_wait if self.call_wait else None, item.runtest)[1]
                else:
                    item.runtest()
                if made >= calls or time.perf_counter() + self.seconds > until:
                    break
                if compat.has_unittest_failure(item) or _function_scoped_request(item):
                    self.bare = False
                    break
                try:
                    self._account(began, None, torn_down=False)
                    self._check_time()
                except (OutOfTime, SlowingDown) as exc:
                    pending = exc
                    break
                began = self._begin_run()
                item.teardown()  # the item's own part of a teardown and a setup: a unittest case
                item.setup()  # gets a fresh instance, as pytest gives it for each run
        except compat.Exit:
            raise
        except (Exception, compat.OutcomeException) as exc:
            failure = f"raised {type(exc).__name__}"
        failure = self._teardown_light(failure)
        if failure is not None:  # once more through pytest's own protocol, which may be what it needs
            self.light = False
            failure = self._full_run()
        if pending is None or failure is not None:
            self._account(began, failure)
        if pending is not None:
            raise pending
        return made

    def _teardown_light(self, failure: str | None) -> str | None:
        item = self.item
        # tmp_path's teardown reads what pytest's report hook recorded (the test's own, passed
        # run's: replaced, it would free a block)
        item.stash.setdefault(compat.TMP_RESULT_KEY, {})
        try:
            compat.teardown_exact(item, item.parent)
        except compat.Exit:
            raise
        except (Exception, compat.OutcomeException) as exc:
            failure = failure or f"raised {type(exc).__name__} in teardown"
        finally:
            compat.end_request(item)
        excinfo = compat.pop_unittest_failure(item)
        if excinfo:
            failure = failure or "failed"
        if self.after_run is not None:  # a forked child that returned from the test ends here
            self.after_run(item, [])
        return failure

    def _full_run(self) -> str | None:
        item = self.item
        # nextitem=parent: teardown pops the function-level node only; module and class
        # fixtures stay set up across runs.
        reports = compat.runtestprotocol(item, log=False, nextitem=item.parent)  # type: ignore[arg-type]
        if self.after_run is not None:
            self.after_run(item, reports)
        if self._inside:
            self._resume()  # pytest's capture suspends itself after each phase
        failed = next((r for r in reports if not r.passed), None)
        if failed is None:
            return None
        return f"{'skipped' if failed.skipped else 'failed'} in {failed.when}{_why(failed)}"

    def _tidy(self, torn_down: bool = True) -> None:
        item = self.item
        if torn_down:  # (a call under a shared setup finished no fixture)
            self._drop_finished_dependants()
            compat.drop_repeated_finishes(item.session)
        if self._function is not None:
            state, saved = self._function.__dict__, self._function_state
            if len(state) != len(saved) or any(state.get(k, state) is not v for k, v in saved.items()):
                state.clear()
                state.update(self._function_state)
        # Repeated runs must not pile up captured output, properties or warnings.
        del compat.report_sections(item)[self._sections :]
        del item.user_properties[self._props :]
        self._log.clear()
        for queue in self._exception_queues:  # each holds a traceback, and with it the run's frames
            queue.clear()

    def _drop_finished_dependants(self) -> None:
        """Forget the finalizers a finished run left on higher-scoped fixtures.

        When a function fixture uses a session or module fixture (also one requested
        dynamically, as pytest-asyncio requests its event loop), pytest appends
        ``partial(FixtureDef.finish, request=...)`` to the higher fixture's finalizers at
        every setup, and that keeps every run's request alive until the session ends. Once
        the function fixture has finished, calling it again would do nothing, so after a
        repeated run those entries are pytest's bookkeeping, not the test's retention.
        """
        # The higher-scoped fixtures in use, dynamically requested ones included: each one
        # set up registered its own finish on the node of its scope.
        stack = compat.setup_stack(self.item.session)
        dependants: list[Any] = [
            fd
            for node_finalizers, _ in stack.values()
            for f in node_finalizers
            if getattr(fd := compat.finished_fixture(f), "scope", "function") != "function"
            and compat.fixture_finalizers(fd)
        ]
        for fixturedef in dependants:
            finalizers = compat.fixture_finalizers(fixturedef) or []
            keep = [f for f in finalizers if not _is_finished_dependant(f, self.item)]
            if len(keep) != len(finalizers):
                finalizers[:] = keep


_HYPOTHESIS_SETTINGS = "_hypothesis_internal_use_settings"  # where @given keeps a test's settings, read at each call


def _rerun_hypothesis_settings(function: Any) -> tuple[Any, Any] | None:
    """A hypothesis test's settings, and the same with ``HealthCheck.differing_executors``
    suppressed, for the re-runs: a test method is called on a new instance at each run (pytest
    makes one per setup), which that check fails as "called from multiple different executors"
    although a single run never is. None for any other test."""
    hypothesis = sys.modules.get("hypothesis")
    if hypothesis is None or function is None or not getattr(function, "is_hypothesis_test", False):
        return None
    check = getattr(getattr(hypothesis, "HealthCheck", None), "differing_executors", None)
    original = function.__dict__.get(_HYPOTHESIS_SETTINGS)
    if check is None or original is None:
        return None
    try:
        rerun = hypothesis.settings(original, suppress_health_check=[*original.suppress_health_check, check])
    except Exception:  # another hypothesis: its own check stands
        return None
    return original, rerun


def _why(report: pytest.TestReport, limit: int = 160) -> str:
    """The error line of a failed run's report, for the reason (`` (E: message)``), or nothing."""
    lines = [line[1:].strip() for line in report.longreprtext.splitlines() if line.startswith("E ")]
    text = next((line for line in lines if line), "")
    if not text:
        return ""
    return f" ({text[: limit - 3]}...)" if len(text) > limit else f" ({text})"


def _no_function_fixtures(item: pytest.Item) -> bool:
    """Whether every fixture the test uses (autouse ones included) is wider than the function
    scope, so that one setup serves several calls exactly as a setup per call would."""
    defs = compat.fixture_chains(item)
    if defs is None:
        return False
    return all(chain and getattr(chain[-1], "scope", "function") != "function" for chain in defs.values())


def _function_scoped_request(item: pytest.Item) -> bool:
    """Whether the test's call requested a function-scoped fixture itself (``getfixturevalue``)."""
    used = compat.requested_fixtures(item)
    if used is None:
        return True  # a pytest that does not say: no second call under the same setup
    return any(getattr(fd, "scope", "function") == "function" for fd in used.values())


class _QuietRelay:
    """A node's hook relay that drops subtest reports: pytest's ``subtests`` fixture and
    unittest's ``subTest`` log them themselves, whatever ``runtestprotocol(log=False)`` says."""

    def __init__(self, relay: Any) -> None:
        self._relay = relay

    def __getattr__(self, name: str) -> Any:
        caller = getattr(self._relay, name)
        if name != "pytest_runtest_logreport":
            return caller

        def logreport(*, report: Any) -> Any:
            if type(report).__name__ == "SubtestReport":
                return None
            return caller(report=report)

        return logreport


def _is_finished_dependant(finalizer: object, item: pytest.Item) -> bool:
    dependant = compat.finished_fixture(finalizer)
    if dependant is None:
        return False
    request = finalizer.keywords.get("request")  # type: ignore[attr-defined]  # (a partial: finished_fixture said so)
    return (
        getattr(dependant, "scope", None) == "function"
        and getattr(dependant, "cached_result", True) is None
        and getattr(request, "node", None) is item
    )
