"""Pattern 8: database connections for request handling.

LEAKY: every ``every``-th request opens a brand-new sqlite3 connection to the file-backed
database and keeps it in a list, never closed, so open file descriptors (and each
connection's page cache) grow. Seed 001 connected and ``$disconnect()``-ed a client per
request (a CPU cost); forgetting the disconnect is the fd/memory form of the same mistake.
Opening one per ``every`` requests rather than per request keeps a 20 s soak far below
``ulimit -n`` (about 0.7 fd per step of 50 requests with the default 100).
FIXED (seed 002: one singleton client, reused): a single connection, opened lazily.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from .store import connect


class ConnectionProvider:
    def __init__(self, path: str | os.PathLike[str], *, reuse: bool, every: int = 100) -> None:
        if every <= 0:
            raise ValueError(f"every must be > 0, got {every!r}")
        self.path = os.fspath(path)
        self.reuse = reuse
        self.every = every
        self._lock = threading.Lock()
        self._current: sqlite3.Connection | None = None
        self.opened: list[sqlite3.Connection] = []  # leaky: all of them, never closed
        self.acquired = 0

    def acquire(self) -> sqlite3.Connection:
        with self._lock:
            new = self._current is None or (not self.reuse and self.acquired % self.every == 0)
            self.acquired += 1
            if new:
                self._current = connect(self.path)
                self.opened.append(self._current)
            assert self._current is not None
            return self._current

    @property
    def open_connections(self) -> int:
        return len(self.opened)

    def close(self) -> None:
        with self._lock:
            for conn in self.opened:
                conn.close()
            self.opened.clear()
            self._current = None
