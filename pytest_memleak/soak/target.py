"""What a soak samples: the pytest process itself, or a watched service and its children.

``@pytest.mark.memleak_soak(watch="server")`` names a fixture of the test that returns the
service's process: a pid, a :class:`subprocess.Popen` or a :class:`psutil.Process`
(:func:`resolve`). The soak then samples that process and its children (:class:`Watched`):
RSS (summed over the tree), USS and PSS where ``/proc`` lets them be read, descriptors,
threads and the number of children. The trend, the projection and the memory guard all use
the watched RSS. When the watched process exits, :meth:`Watched.exit_text` says how.

Without ``watch`` the soak samples its own process (:class:`OwnProcess`).

psutil is imported here lazily; nothing raises for a reading that fails (it is NaN or None).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from pytest_memleak.config import options
from pytest_memleak.probe import process

ACCEPTED = options.WATCH_ACCEPTED
NOT_OURS = "an exit status pytest cannot read (not its child)"
TREE_EVERY = 1.0  # seconds between walks for new children (the tree is re-read at every sample)


class OwnProcess:
    """Cheap readings of the pytest process: RSS, descriptors, OS threads (:mod:`pytest_memleak.probe.process`)."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def rss(self) -> float:
        value = process.rss()
        return float(value) if value >= 0 else math.nan

    def fds(self) -> int | None:
        value = process.open_fds()
        return value if value >= 0 else None

    def os_threads(self) -> int | None:
        return process.os_threads()

    def alive(self) -> bool:
        return True


class Watched:
    """A watched process and its children (re-read at every sample): RSS, USS/PSS, fds, threads."""

    def __init__(self, process: Any, popen: subprocess.Popen[Any] | None, fixture: str) -> None:
        self.process = process  # psutil.Process
        self.popen = popen
        self.fixture = fixture
        self.pid: int = process.pid
        self.children: list[Any] = []
        self._tree_at = -math.inf
        self._exit: str | None = None
        self.name = ""
        with contextlib.suppress(Exception):
            self.name = process.name()

    def describe(self) -> str:
        name = f" ({self.name})" if self.name else ""
        return f"pid {self.pid}{name} from fixture {self.fixture!r}, and its children"

    def _tree(self, refresh: bool = False) -> list[Any]:
        now = time.monotonic()
        if refresh or now - self._tree_at >= TREE_EVERY:
            self._tree_at = now
            try:
                self.children = self.process.children(recursive=True)
            except Exception:
                self.children = []
        return [self.process, *self.children]

    def _sum(self, read: Any, refresh: bool = False) -> float:
        total, seen = 0.0, False
        for proc in self._tree(refresh):
            try:
                total += float(read(proc))
                seen = True
            except Exception:  # a child that exited between the walk and the read
                continue
        return total if seen else math.nan

    def rss(self) -> float:
        if not self.alive():
            return math.nan
        return self._sum(lambda p: p.memory_info().rss)

    def sample(self) -> dict[str, Any]:
        """Everything a sample records of the tree (the tree is walked again first)."""
        rss = self._sum(lambda p: p.memory_info().rss, refresh=True) if self.alive() else math.nan
        uss = pss = math.nan
        with contextlib.suppress(Exception):  # smaps_rollup: readable for our own user's processes
            full = [p.memory_full_info() for p in self._tree()]
            uss = float(sum(f.uss for f in full))
            pss = float(sum(getattr(f, "pss", 0) for f in full)) if all(hasattr(f, "pss") for f in full) else math.nan
        return {
            "watched_pid": self.pid,
            "children": len(self.children),
            "rss": rss,
            "uss": uss,
            "pss": pss,
        }

    def fds(self) -> int | None:
        value = self._sum(lambda p: p.num_fds())
        return int(value) if math.isfinite(value) else None

    def os_threads(self) -> int | None:
        value = self._sum(lambda p: p.num_threads())
        return int(value) if math.isfinite(value) else None

    def alive(self) -> bool:
        if self._exit is not None:
            return False
        if self.popen is not None:
            code = self.popen.poll()
            if code is not None:
                self._exit = _code_text(code)
                return False
            return True
        try:
            import psutil

            if self.process.status() != psutil.STATUS_ZOMBIE:
                return True
        except Exception:  # NoSuchProcess: gone and reaped by its parent
            self._exit = NOT_OURS
            return False
        with contextlib.suppress(Exception):  # a zombie child of ours: reap it for its status
            code = self.process.wait(timeout=0)
            if code is not None:
                self._exit = _code_text(code)
                return False
        self._exit = NOT_OURS
        return False

    def gone(self, grace: float) -> bool:
        """Whether the process has exited, or does within ``grace`` seconds (it may be dying)."""
        deadline = time.monotonic() + grace
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def exit_text(self) -> str:
        """How the process ended, once :meth:`alive` said it did: ``code 1`` or ``signal SIGKILL``."""
        return self._exit or "an unknown status"

    def python(self) -> str | None:
        """The Python interpreter the process runs, as it was started (a venv's ``bin/python``);
        None when it does not look like one."""
        with contextlib.suppress(Exception):
            first = self.process.cmdline()[0]
            if "python" in os.path.basename(first) and os.access(first, os.X_OK):
                return str(first)
        with contextlib.suppress(Exception):
            exe = str(self.process.exe())
            if "python" in os.path.basename(exe):
                return exe
        return None

    def cgroup_file(self) -> str:
        return f"/proc/{self.pid}/cgroup"


def _code_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def resolve(value: Any, fixture: str, where: str) -> Watched:
    """The :class:`Watched` process for a fixture's value; UsageError for anything else."""
    popen = value if isinstance(value, subprocess.Popen) else None
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        raise pytest.UsageError(f"pytest-memleak: memleak_soak(watch=...) in {where} needs psutil") from None
    if isinstance(value, bool):
        pid = None
    elif popen is not None:
        pid = popen.pid
    elif isinstance(value, psutil.Process):
        pid = value.pid
    elif isinstance(value, int):
        pid = value
    else:
        pid = None
    if pid is None:
        raise pytest.UsageError(
            f"pytest-memleak: memleak_soak(watch={fixture!r}) in {where}: the fixture {fixture!r} returned "
            f"{type(value).__name__} {_short_repr(value)}; accepted form: {ACCEPTED}"
        )
    try:
        process = value if isinstance(value, psutil.Process) else psutil.Process(pid)
        process.memory_info()
    except Exception as exc:
        raise pytest.UsageError(
            f"pytest-memleak: memleak_soak(watch={fixture!r}) in {where}: the fixture {fixture!r} returned "
            f"pid {pid}, which cannot be read ({type(exc).__name__}: {exc}); accepted form: {ACCEPTED}"
        ) from None
    return Watched(process, popen, fixture)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


