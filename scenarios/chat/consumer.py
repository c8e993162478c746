"""Pattern 6: a queue consumer fed by a producer faster than itself.

The broker is a durable job table in the sqlite file (RabbitMQ's role: the backlog lives in
the broker, on disk, not in the worker). Each request publishes one job; the consumer
processes ``rate`` jobs per tick (0.5: half as fast as the producer) in a deterministic step
loop.

LEAKY: no prefetch limit: every tick the consumer pulls the whole backlog into its in-memory
buffer, which then grows without bound. FIXED (seed 002: prefetch 5): at most ``prefetch``
unacknowledged jobs are held; the rest waits in the broker.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .store import MessageStore

JOB_SCHEMA = "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"
PAYLOAD_CHARS = 256  # a job carries a (truncated) copy of the message


class JobBroker:
    def __init__(self, store: MessageStore) -> None:
        self._store = store
        with store.lock:
            store.connection.execute(JOB_SCHEMA)
            store.connection.commit()
        self.published = 0

    def publish(self, payload: str) -> int:
        with self._store.lock:
            cur = self._store.connection.execute(
                "INSERT INTO jobs (payload) VALUES (?)", (payload,)
            )
            self._store.wrote(1)
            self.published += 1
            return int(cur.lastrowid or 0)

    def fetch(self, after_id: int, limit: int | None) -> list[tuple[int, str]]:
        sql = "SELECT id, payload FROM jobs WHERE id > ? ORDER BY id"
        args: tuple[int, ...] = (after_id,)
        if limit is not None:
            sql += " LIMIT ?"
            args = (after_id, limit)
        with self._store.lock:
            return self._store.connection.execute(sql, args).fetchall()

    def ack(self, job_id: int) -> None:
        with self._store.lock:
            self._store.connection.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._store.wrote(1)

    def backlog(self) -> int:
        with self._store.lock:
            (n,) = self._store.connection.execute("SELECT count(*) FROM jobs").fetchone()
        return int(n)


class QueueConsumer:
    def __init__(
        self,
        broker: JobBroker,
        *,
        prefetch: int | None,
        rate: float = 0.5,
        handler: Callable[[str], object] | None = None,
    ) -> None:
        if prefetch is not None and prefetch <= 0:
            raise ValueError(f"prefetch must be > 0 or None, got {prefetch!r}")
        if not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rate!r}")
        self.broker = broker
        self.prefetch = prefetch
        self.rate = rate
        self._handler = handler or len
        self._lock = threading.Lock()
        self.buffer: deque[tuple[int, str]] = deque()  # delivered, not yet acknowledged
        self._last_delivered = 0
        self._credit = 0.0
        self.processed = 0
        self.max_buffered = 0

    def tick(self) -> int:
        """Fetch (up to the prefetch bound), then process this tick's share; returns jobs done."""
        with self._lock:
            room = None if self.prefetch is None else self.prefetch - len(self.buffer)
            if room is None or room > 0:
                jobs = self.broker.fetch(self._last_delivered, room)
                if jobs:
                    self.buffer.extend(jobs)
                    self._last_delivered = jobs[-1][0]
            self.max_buffered = max(self.max_buffered, len(self.buffer))
            self._credit += self.rate
            done = 0
            while self._credit >= 1.0 and self.buffer:
                self._credit -= 1.0
                job_id, payload = self.buffer.popleft()
                self._handler(payload)
                self.broker.ack(job_id)
                done += 1
            self._credit = min(self._credit, 1.0)
            self.processed += done
            return done

    def close(self) -> None:
        with self._lock:
            self.buffer.clear()  # unacknowledged: they stay in the broker for redelivery
