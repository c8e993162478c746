"""The durable side: one real sqlite database file.

``messages`` is the message log (every message lands here once, whoever writes it first:
writes are ``INSERT OR IGNORE`` by message id, so history spills, conversation evictions and
session syncs can all persist the same message safely). ``tenants`` is the tenant directory.
The job queue of :mod:`.consumer` lives in the same file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    user TEXT NOT NULL,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    created REAL NOT NULL
);
"""

PLANS = ("free", "team", "business", "enterprise")


@dataclass(slots=True)
class Message:
    id: int
    conversation_id: str
    user: str
    tenant: str
    role: str  # "user" or "assistant"
    ts: float
    text: str
    persisted: bool = False  # set once the row is in sqlite: later saves skip it

    def row(self) -> tuple[int, str, str, str, str, float, str]:
        return (
            self.id,
            self.conversation_id,
            self.user,
            self.tenant,
            self.role,
            self.ts,
            self.text,
        )


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection tuned for a simulation: no fsync, a small page cache, the rollback journal
    in memory (so a connection holds exactly one file descriptor: the database file)."""
    conn = sqlite3.connect(os.fspath(path), check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode=MEMORY")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-512")  # 512 KiB page cache: a FIXED run plateaus early
    return conn


COMMIT_ROWS = 1000  # the writer commits at least this often, whoever forgets to


class MessageStore:
    """Thread-safe wrapper of the service's own (writer) connection."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        self._conn = connect(self.path)
        # Dirty pages stay in the writer's cache until commit instead of being spilled to the
        # file under an EXCLUSIVE lock, which would lock the request connections out.
        self._conn.execute("PRAGMA cache_spill=OFF")
        self._conn.executescript(SCHEMA)
        self._conn.commit()
        (last,) = self._conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        self._next_id = int(last) + 1
        self._uncommitted = 0
        self.writes = 0

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def next_id(self) -> int:
        with self._lock:
            value = self._next_id
            self._next_id += 1
            return value

    def save(self, messages: Iterable[Message]) -> int:
        """Persist the messages not persisted yet (idempotent); returns rows written."""
        with self._lock:
            fresh = [m for m in messages if not m.persisted]
            if not fresh:
                return 0
            self._conn.executemany(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                [m.row() for m in fresh],
            )
            for m in fresh:
                m.persisted = True
            self.writes += len(fresh)
            self.wrote(len(fresh))
        return len(fresh)

    def wrote(self, rows: int) -> None:
        """Account for rows written on :attr:`connection`; commits every ``COMMIT_ROWS``."""
        with self._lock:
            self._uncommitted += rows
            if self._uncommitted >= COMMIT_ROWS:
                self.commit()

    def count(self, *, conversation_id: str | None = None, user: str | None = None) -> int:
        sql, args = "SELECT count(*) FROM messages", []
        clauses = []
        if conversation_id is not None:
            clauses.append("conversation_id = ?")
            args.append(conversation_id)
        if user is not None:
            clauses.append("user = ?")
            args.append(user)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self._lock:
            (n,) = self._conn.execute(sql, args).fetchone()
        return int(n)

    def ids(self, *, conversation_id: str) -> list[int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def older(self, conversation_id: str, before_id: int, limit: int = 20) -> list[Message]:
        """Page back through a conversation (the part no longer held in memory)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, conversation_id, user, tenant, role, ts, body FROM messages"
                " WHERE conversation_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (conversation_id, before_id, limit),
            ).fetchall()
        return [Message(*row) for row in reversed(rows)]

    def ensure_tenant(self, tenant: str, now: float) -> bool:
        """Register a tenant in the directory; committed at once so that other connections
        (see :mod:`.connections`) can read it. Returns True when it was new."""
        plan = PLANS[sum(tenant.encode()) % len(PLANS)]
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO tenants VALUES (?, ?, ?, ?)",
                (tenant, tenant.title(), plan, now),
            )
            if cur.rowcount:
                self._conn.commit()
                return True
        return False

    def commit(self) -> None:
        with self._lock:
            self._conn.commit()
            self._uncommitted = 0

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.commit()
            finally:
                self._conn.close()
