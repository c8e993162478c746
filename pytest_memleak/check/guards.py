"""What the plugin guards in the pytest process while it re-runs tests, so that a run cannot
change the session: a forked child that returns into pytest (ended before it runs the session
again), SIGTERM (the run ends like Ctrl-C, reports written), and the heap frozen between runs
(``gc.freeze()``: each run's collection is cheap) and thawed at the end."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from typing import Any

import pytest

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


class ProcessGuards:
    def __init__(self, is_worker: bool) -> None:
        self.is_worker = is_worker
        self.pid = os.getpid()
        self.terminated = False  # SIGTERM arrived: the run ends as if interrupted
        self._previous_sigterm: Any = None
        self._fork_r = self._fork_w = -1  # made at the first checked test or soak (see arm)
        self.froze = False
        self.frozen_before = 0  # objects the session had frozen before the plugin first froze the heap
        self.measured = 0
        self.blocks_at_full = 0  # allocated blocks right after the last collection of the whole heap

    def arm(self) -> None:
        """Before the first checked test or soak: the fork channel and the SIGTERM handler (a run that checks nothing gets neither)."""
        if self._fork_r >= 0:
            return
        # a forked child that returns into pytest says so here before it ends (see child_returned)
        self._fork_r, self._fork_w = os.pipe()
        os.set_blocking(self._fork_r, False)
        self._install_sigterm()

    # -- forks ------------------------------------------------------------------------------
    def exit_if_forked_child(self, item: pytest.Item, reports: list[pytest.TestReport]) -> None:
        """In the child of a fork the test made, back in pytest: end it before it runs the session again."""
        if os.getpid() == self.pid:
            return
        with contextlib.suppress(OSError):
            os.write(self._fork_w, (item.nodeid + "\n").encode())
        os._exit(0 if all(r.passed for r in reports) else 1)

    def child_returned(self) -> bool:
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

    def before_measuring(self) -> None:
        """Collect the session's garbage once, then freeze the heap so each run's collection is cheap."""
        from pytest_memleak.check import measuring
        from pytest_memleak.evidence import resources

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

    def thaw(self) -> None:
        """At the session's end: the heap unfrozen, unless the session had frozen it itself."""
        if self.froze:
            from pytest_memleak.check import measuring

            if not self.frozen_before:  # a heap the session had frozen stays frozen
                measuring.unfreeze()
            self.froze = False

    def close(self) -> None:
        """At unconfigure: the fork channel closed and the SIGTERM handler given back."""
        for fd in (self._fork_r, self._fork_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            _sigterm["ours"] = _sigterm["previous"] = None
