"""Pattern 3: per-user sessions, a write-behind buffer of their messages.

LEAKY (seed 000 before the fix): sessions are never dropped and their messages are only
written to the database at shutdown, so they pile up (and an OOM kill would lose them).
FIXED (seed 000's fix): a session is synced to sqlite when it holds ``sync_batch`` messages
and always *before* it is dropped ("database sync happens before session removal"); sessions
idle for ``idle_timeout`` are dropped, the least recently used go when there are more than
``max_sessions``, and under memory pressure the idle timeout shrinks by ``pressure_factor``
and the sessions holding the most messages are synced first.
"""

from __future__ import annotations

import threading

from .store import Message, MessageStore


class Session:
    __slots__ = ("user", "tenant", "created", "last_seen", "pending", "synced")

    def __init__(self, user: str, tenant: str, now: float) -> None:
        self.user = user
        self.tenant = tenant
        self.created = now
        self.last_seen = now
        self.pending: list[Message] = []
        self.synced = 0


class SessionStore:
    def __init__(
        self,
        store: MessageStore,
        *,
        idle_timeout: float | None,
        max_sessions: int | None,
        sync_batch: int | None,
        pressure_factor: float = 0.25,
    ) -> None:
        for name, value in (
            ("idle_timeout", idle_timeout),
            ("max_sessions", max_sessions),
            ("sync_batch", sync_batch),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        if not 0 < pressure_factor <= 1:
            raise ValueError(f"pressure_factor must be in (0, 1], got {pressure_factor!r}")
        self.store = store
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.sync_batch = sync_batch
        self.pressure_factor = pressure_factor
        self._lock = threading.RLock()
        self._sessions: dict[str, Session] = {}  # insertion order == least recently used first
        self.dropped = 0
        self.synced_messages = 0

    @property
    def leaky(self) -> bool:
        return self.idle_timeout is None and self.max_sessions is None and self.sync_batch is None

    def record(self, user: str, tenant: str, now: float, *messages: Message) -> Session:
        """Touch the user's session and buffer its new messages."""
        with self._lock:
            session = self._sessions.pop(user, None)
            if session is None:
                session = Session(user, tenant, now)
            self._sessions[user] = session  # (re)inserted last: most recently used
            session.last_seen = now
            session.pending.extend(messages)
            if self.sync_batch is not None and len(session.pending) >= self.sync_batch:
                self.sync(session)
            if self.max_sessions is not None:
                while len(self._sessions) > self.max_sessions:
                    self._drop(next(iter(self._sessions.values())))
            return session

    def sync(self, session: Session) -> int:
        """Write the session's buffered messages to sqlite, then release them."""
        with self._lock:
            n = self.store.save(session.pending)
            session.pending = []
            session.synced += n
            self.synced_messages += n
            return n

    def sync_all(self) -> int:
        with self._lock:
            return sum(self.sync(s) for s in list(self._sessions.values()))

    def evict_idle(self, now: float, pressure: bool = False) -> int:
        """Drop (after syncing) sessions idle for longer than the timeout; 0 when leaky."""
        if self.idle_timeout is None:
            return 0
        timeout = self.idle_timeout * (self.pressure_factor if pressure else 1.0)
        with self._lock:
            idle = [s for s in self._sessions.values() if now - s.last_seen > timeout]
            for session in idle:
                self._drop(session)
            return len(idle)

    def relieve(self, now: float) -> int:
        """Memory pressure (fixed only): shorter idle timeout, then sync the biggest sessions
        first. Returns how many sessions were dropped."""
        if self.leaky:
            return 0
        dropped = self.evict_idle(now, pressure=True)
        with self._lock:
            for session in sorted(
                self._sessions.values(), key=lambda s: len(s.pending), reverse=True
            ):
                if session.pending:
                    self.sync(session)
        return dropped

    def get(self, user: str) -> Session | None:
        return self._sessions.get(user)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, user: object) -> bool:
        return user in self._sessions

    def pending_messages(self) -> int:
        with self._lock:
            return sum(len(s.pending) for s in self._sessions.values())

    def close(self) -> int:
        """Sync every session (no message lost at shutdown) and drop them all."""
        with self._lock:
            synced = self.sync_all()
            self._sessions.clear()
            return synced

    def _drop(self, session: Session) -> None:
        self.sync(session)  # seed 000: database sync before removal, so no message is lost
        del self._sessions[session.user]
        self.dropped += 1
