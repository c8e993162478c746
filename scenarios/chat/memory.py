"""Pattern 9: a memory monitor/manager with progressive actions (seeds 000, 003, 004).

``MemoryManager`` takes a baseline when it is built, then each :meth:`check` samples the
process (RSS by default, or any ``sample`` callable returning bytes) and classifies it:

* thresholds in bytes *above the baseline* (seed 003: warning at baseline + 50 MB, critical
  at baseline + 70 MB), or, when ``limit`` is given, *fractions of that limit* compared with
  the absolute sample (seed 004: warning 60 % / critical 80 % of ``maxMemory``);
* ``"warning"``: every cleanup hook runs (trim histories, evict idle sessions, gc.collect);
* ``"critical"``: the hooks run and new model/batch loads are refused
  (:meth:`admit` is False, :meth:`require_admission` raises :class:`LoadRejected`);
* back to ``"normal"``: loads are admitted again (seed 003's "recovery").

:meth:`start`/:meth:`stop` run :meth:`check` every ``interval`` seconds on a daemon thread
(seed 000's ``MEMORY_MONITOR_INTERVAL``). A bounded deque, :attr:`history`, keeps the
latest events for assertions.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1024 * 1024
NORMAL, WARNING, CRITICAL = "normal", "warning", "critical"
LEVELS = (NORMAL, WARNING, CRITICAL)
DEFAULT_WARNING_FRACTION = 0.6  # seed 004: conservative profile, warning at 60 % of maxMemory
DEFAULT_CRITICAL_FRACTION = 0.8  # seed 004: critical at 80 %


class LoadRejected(RuntimeError):
    """A model or batch load refused because memory is critical."""

    def __init__(self, kind: str, level: str, usage: int, threshold: int) -> None:
        super().__init__(
            f"{kind} load rejected: memory is {level} ({usage / MiB:.1f} MiB used,"
            f" critical threshold {threshold / MiB:.1f} MiB)"
        )
        self.kind = kind
        self.level = level
        self.usage = usage
        self.threshold = threshold


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """``event`` is "check", "cleanup", "rejected", "recovered", "hook_error" or "error"."""

    time: float
    event: str
    level: str
    usage: int
    detail: str = ""


def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class MemoryManager:
    def __init__(
        self,
        warning: int = 50 * MiB,  # seed 003: warning at baseline + 50 MB
        critical: int = 70 * MiB,  # seed 003: critical at baseline + 70 MB
        limit: int | None = None,
        warning_fraction: float | None = None,
        critical_fraction: float | None = None,
        sample: Callable[[], int] | None = None,
        interval: float = 1.0,
        *,
        history: int = 100,
    ) -> None:
        _check_size("warning", warning)
        _check_size("critical", critical)
        if warning >= critical:
            raise ValueError(f"warning ({warning} bytes) must be below critical ({critical} bytes)")
        seconds = _number(interval)
        if seconds is None or seconds <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        if not (isinstance(history, int) and history > 0):
            raise ValueError(f"history must be a positive whole number, got {history!r}")
        if sample is not None and not callable(sample):
            raise ValueError(f"sample must be a callable returning bytes, got {sample!r}")
        if limit is None:
            if warning_fraction is not None or critical_fraction is not None:
                raise ValueError(
                    "warning_fraction/critical_fraction are fractions of limit: give limit too"
                )
        else:
            _check_size("limit", limit)
            if limit == 0:
                raise ValueError("limit must be > 0 bytes")
            warning_fraction = (
                DEFAULT_WARNING_FRACTION if warning_fraction is None else warning_fraction
            )
            critical_fraction = (
                DEFAULT_CRITICAL_FRACTION if critical_fraction is None else critical_fraction
            )
            _check_fraction("warning_fraction", warning_fraction)
            _check_fraction("critical_fraction", critical_fraction)
            if warning_fraction >= critical_fraction:
                raise ValueError(
                    f"warning_fraction ({warning_fraction}) must be below critical_fraction ({critical_fraction})"
                )

        self.warning = int(warning)
        self.critical = int(critical)
        self.limit = None if limit is None else int(limit)
        self.warning_fraction = warning_fraction
        self.critical_fraction = critical_fraction
        self.interval = float(interval)
        self._sample = sample or rss
        self._hooks: list[Callable[[], object]] = []
        self._lock = threading.RLock()  # state: level, usage, hooks, history
        self._check_lock = threading.RLock()  # one check (with its hooks) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.history: deque[MemoryEvent] = deque(maxlen=history)
        self.checks = 0
        self.cleanups = 0
        self.rejections = 0
        self.peak = 0
        self.baseline = self._read()
        self.usage = self.baseline
        self.level = NORMAL

    # --- thresholds ----------------------------------------------------------------------
    @property
    def warning_threshold(self) -> int:
        """Absolute bytes from which the level is "warning"."""
        if self.limit is not None:
            assert self.warning_fraction is not None
            return int(self.limit * self.warning_fraction)
        return self.baseline + self.warning

    @property
    def critical_threshold(self) -> int:
        if self.limit is not None:
            assert self.critical_fraction is not None
            return int(self.limit * self.critical_fraction)
        return self.baseline + self.critical

    def classify(self, usage: int) -> str:
        if usage >= self.critical_threshold:
            return CRITICAL
        if usage >= self.warning_threshold:
            return WARNING
        return NORMAL

    # --- acting --------------------------------------------------------------------------
    def add_cleanup_hook(self, fn: Callable[[], object]) -> None:
        """``fn()`` is called (no arguments) at every check that finds warning or critical."""
        if not callable(fn):
            raise ValueError(f"a cleanup hook must be callable, got {fn!r}")
        with self._lock:
            self._hooks.append(fn)

    @property
    def hooks(self) -> tuple[Callable[[], object], ...]:
        return tuple(self._hooks)

    @property
    def thread(self) -> threading.Thread | None:
        """The monitoring thread while :meth:`start` has it running."""
        return self._thread

    def remove_cleanup_hook(self, fn: Callable[[], object]) -> None:
        with self._lock:
            self._hooks.remove(fn)

    def check(self) -> str:
        """Sample, classify, act; returns the level.

        Hooks run without the state lock held, so a hook may call :meth:`admit` and a
        service may ask for admission (under its own lock) while a hook waits for it."""
        with self._check_lock:
            with self._lock:
                usage = self._read()
                previous, level = self.level, self.classify(usage)
                self.usage, self.level = usage, level
                self.peak = max(self.peak, usage)
                self.checks += 1
                self._record("check", detail=previous if previous != level else "")
                if level == NORMAL and previous != NORMAL:
                    self._record("recovered", detail=previous)
                hooks = list(self._hooks) if level != NORMAL else []
            if level != NORMAL:
                self._run_hooks(hooks)
            return level

    def admit(self, kind: str = "model") -> bool:
        """False while the last check found memory critical (the load should not happen)."""
        with self._lock:
            if self.level == CRITICAL:
                self.rejections += 1
                self._record("rejected", detail=kind)
                return False
            return True

    def require_admission(self, kind: str = "model") -> None:
        if not self.admit(kind):
            raise LoadRejected(kind, self.level, self.usage, self.critical_threshold)

    @property
    def pressure(self) -> bool:
        return self.level != NORMAL

    def levels(self) -> list[str]:
        """The level found by each check still in :attr:`history`, oldest first."""
        with self._lock:
            return [e.level for e in self.history if e.event == "check"]

    def events(self, event: str) -> list[MemoryEvent]:
        with self._lock:
            return [e for e in self.history if e.event == event]

    # --- background monitoring -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> MemoryManager:
        with self._lock:
            if not self.running:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._loop, name="memory-manager", daemon=True
                )
                self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> MemoryManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # a failing sample must not kill the monitor
                with self._lock:
                    self._record("error", detail=repr(exc))

    # --- internals -----------------------------------------------------------------------
    def _read(self) -> int:
        value = self._sample()
        number = _number(value)
        if number is None or number < 0:
            raise ValueError(f"sample() must return a byte count >= 0, got {value!r}")
        return int(number)

    def _run_hooks(self, hooks: list[Callable[[], object]]) -> None:
        ran = 0
        for hook in hooks:
            try:
                hook()
                ran += 1
            except Exception as exc:  # one broken hook must not stop the others
                with self._lock:
                    self._record(
                        "hook_error", detail=f"{getattr(hook, '__name__', hook)!s}: {exc!r}"
                    )
        with self._lock:
            self.cleanups += 1
            self._record("cleanup", detail=f"{ran} of {len(hooks)} hooks")

    def _record(self, event: str, detail: str = "") -> None:
        self.history.append(MemoryEvent(time.monotonic(), event, self.level, self.usage, detail))


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None when it is not a real number (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _check_size(name: str, value: object) -> None:
    number = _number(value)
    if number is None:
        raise ValueError(f"{name} must be a number of bytes, got {value!r}")
    if number < 0:
        raise ValueError(f"{name} must be >= 0 bytes, got {value!r}")


def _check_fraction(name: str, value: object) -> None:
    number = _number(value)
    if number is None or not 0 < number <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
