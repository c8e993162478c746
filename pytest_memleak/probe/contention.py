"""How long a busy machine kept this thread waiting for a CPU: the kernel's count where it keeps
one, an estimate from the load elsewhere. A check's or a soak's time bound runs on by it, so that
it does the work a quiet machine would."""

from __future__ import annotations

import os
import time

LOADAVG = "/proc/loadavg"
SCHEDSTAT = "/proc/thread-self/schedstat"


class Contention:
    """The time a busy machine kept this thread waiting for a CPU, since :meth:`begin`.

    Where the kernel keeps it (``/proc/thread-self/schedstat``, Linux 3.17 and later), the
    count is exact: the time the calling thread was runnable and waited on a run queue (measured
    here beside two busy loops on two cores: 2.00 s of wall time were 1.29 s on a CPU and 0.71 s
    of waiting). :meth:`begin` and :meth:`read` must then be called from the same thread.

    Elsewhere it is an estimate: at each :meth:`read`, the tasks runnable on the machine
    (``/proc/loadavg``'s fourth field, this process included) are compared with the CPUs this
    process may use: with ``n`` runnable on ``c`` CPUs a task runs ``c/n`` of the time it wants
    to, so each second of CPU time it got since the last reading cost it ``n/c - 1`` seconds of
    waiting. The count is a snapshot at each reading, so a crowded machine is undercounted (a
    soak there lost about 4 s of 6.1 s and this estimated 3.6 s).
    ``source`` is None where the kernel tells neither (then nothing is counted).
    """

    def __init__(self) -> None:
        self.source = next((path for path in (SCHEDSTAT, LOADAVG) if os.access(path, os.R_OK)), None)
        try:
            self.cpus = max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            self.cpus = max(1, os.cpu_count() or 1)
        self.begin()

    @property
    def exact(self) -> bool:
        """The kernel's own count, not an estimate."""
        return self.source == SCHEDSTAT

    def begin(self) -> None:
        self.lost = 0.0
        self._cpu = time.process_time()
        self._delay = self._run_delay()

    def _read(self) -> bytes:
        assert self.source is not None
        # os-level: an open() per reading left a block behind now and then, a leak of the soak's own
        fd = os.open(self.source, os.O_RDONLY)
        try:
            return os.read(fd, 256)
        finally:
            os.close(fd)

    def _run_delay(self) -> int:
        """The nanoseconds the calling thread has waited on a run queue (0 where not counted)."""
        if not self.exact:
            return 0
        try:
            # (the second field, cut out without a list: a check reads this at every run of a test, and a
            # list made and dropped there can stay in its free list, a block the screen counted as growth)
            data = self._read()
            start = data.index(b" ") + 1
            return int(data[start : data.index(b" ", start)])
        except (OSError, ValueError, IndexError):
            return 0

    def mark(self) -> int:
        """The thread's wait so far, for :meth:`since` (exact counts only; 0 elsewhere)."""
        return self._run_delay()

    def since(self, mark: int) -> float:
        """The seconds the thread waited for a CPU since ``mark`` (0.0 where not counted exactly)."""
        return max(0, self._run_delay() - mark) / 1e9

    def read(self) -> float:
        """The seconds lost since :meth:`begin` (an estimate adds the waiting since the last reading)."""
        if self.source is None:
            return 0.0
        if self.exact:
            self.lost = max(self.lost, (self._run_delay() - self._delay) / 1e9)
            return self.lost
        cpu = time.process_time()
        try:
            runnable = int(self._read().split()[3].split(b"/", 1)[0])
        except (OSError, ValueError, IndexError):
            return self.lost
        self.lost += max(0.0, cpu - self._cpu) * max(0.0, runnable / self.cpus - 1.0)
        self._cpu = cpu
        return self.lost
