"""A soak's progress line: what a long soak has done so far, on the terminal."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

PROGRESS_MIN_SECONDS = 5.0  # non-verbose runs show progress for soaks at least this long


PROGRESS_TTY_EVERY = 0.5


PROGRESS_PIPE_EVERY = 5.0


class Progress:
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
