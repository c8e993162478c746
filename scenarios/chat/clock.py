"""Injectable time and a real background timer.

Every component takes ``now`` explicitly or a ``Clock`` (a callable returning seconds), so TTL
behaviour is testable without sleeping: pass a :class:`SimulatedClock` and advance it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Clock = Callable[[], float]


class SimulatedClock:
    """A clock that only moves when told to; thread-safe, monotonic."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds!r} s)")
        with self._lock:
            self._now += seconds
            return self._now


class PeriodicTimer:
    """Call ``fn()`` every ``interval`` real seconds on a daemon thread until :meth:`stop`.

    An exception from ``fn`` is kept in :attr:`last_error` and the timer goes on, like a
    ``setInterval`` whose callback throws.
    """

    def __init__(self, interval: float, fn: Callable[[], object], name: str = "periodic") -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = float(interval)
        self._fn = fn
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.last_error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._fn()
            except Exception as exc:  # keep ticking, remember why
                self.last_error = exc
            self.runs += 1
