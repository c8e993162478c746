"""Pattern 11: the simulated chat service that ties every pattern together.

``ChatService(config, db_path)`` serves ``handle_message(user, tenant, conversation_id,
text)`` the way the seeds' chat servers did: tenant config lookup (4) and a per-request
database check (8), the user's session (3) and conversation (1, 2), retrieval from the vector
store (5), a reply, a job published for the worker whose consumer then ticks (6), and the
message queued for embedding in batches (7). Time comes from ``clock`` (inject a
:class:`~.clock.SimulatedClock` to make TTLs deterministic); periodic cleanup runs every
``config.cleanup_interval`` clock seconds from inside ``handle_message`` and, optionally, on a
real timer thread. With a :class:`~.memory.MemoryManager`, the service registers its cleanup
as a hook and asks for admission before model (vector store) and batch (embedding) loads.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .clock import Clock, PeriodicTimer
from .config import ChatConfig
from .connections import ConnectionProvider
from .consumer import PAYLOAD_CHARS, JobBroker, QueueConsumer
from .conversations import ConversationRegistry
from .embeddings import Embedder
from .memory import MemoryManager
from .sessions import SessionStore
from .store import Message, MessageStore
from .tenants import TenantConfig, TenantConfigCache, load_tenant_config
from .vectors import VectorStore

REPLY_CHARS = 512  # seed 002: an LLM reply is ~500 bytes - 2 KB


@dataclass(frozen=True, slots=True)
class Reply:
    conversation_id: str
    message_id: int
    text: str
    retrieved: tuple[int, ...]


@dataclass(frozen=True)
class ServiceStats:
    requests: int
    conversations: int
    messages_in_memory: int
    sessions: int
    pending_messages: int
    tenant_configs: int
    vector_loads: int
    vectors_retained_bytes: int
    queue_buffered: int
    native_live_bytes: int
    embeddings_kept: int
    open_connections: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChatService:
    def __init__(
        self,
        config: ChatConfig | None,
        db_path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        memory: MemoryManager | None = None,
        commit_every: int = 25,
    ) -> None:
        cfg = self.config = config if config is not None else ChatConfig.fixed()
        if commit_every <= 0:
            raise ValueError(f"commit_every must be > 0, got {commit_every!r}")
        self.clock: Clock = clock if clock is not None else time.monotonic
        self.db_path = os.fspath(db_path)
        self.commit_every = commit_every
        self.memory: MemoryManager | None = None
        self._lock = threading.RLock()
        self._closed = False

        self.store = MessageStore(self.db_path)
        self.connections = ConnectionProvider(
            self.db_path, reuse=not cfg.leaky_connections, every=cfg.connection_every
        )
        self.registry = ConversationRegistry(
            self.store,
            ttl=None if cfg.leaky_registry else cfg.conversation_ttl,
            history_limit=None if cfg.leaky_history else cfg.history_limit,
            clock=self.clock,
        )
        self.sessions = SessionStore(
            self.store,
            idle_timeout=None if cfg.leaky_sessions else cfg.session_idle_timeout,
            max_sessions=None if cfg.leaky_sessions else cfg.max_sessions,
            sync_batch=None if cfg.leaky_sessions else cfg.session_sync_batch,
            pressure_factor=cfg.pressure_timeout_factor,
        )
        self.tenants = TenantConfigCache(
            self._load_tenant, ttl=None if cfg.leaky_tenant_cache else cfg.tenant_ttl
        )
        path = Path(self.db_path)
        self.vectors = VectorStore(
            path.with_name(f"{path.name}.vectors-{cfg.vector_dim}.f32"),
            rows=cfg.vector_rows,
            dim=cfg.vector_dim,
            cache=not cfg.leaky_vector_store,
            admit=self._admit,
        )
        self.embedder = Embedder(
            dim=cfg.embedding_dim,
            native_bytes=cfg.embedding_native_bytes,
            sequential=not cfg.leaky_embeddings,
            admit=self._admit,
        )
        self.broker = JobBroker(self.store)
        self.consumer = QueueConsumer(
            self.broker, prefetch=None if cfg.leaky_queue else cfg.prefetch, rate=cfg.consumer_rate
        )
        self._embed_queue: list[tuple[str, str]] = []
        self._last_maintenance = self.clock()
        self.requests = 0
        self.embeddings_skipped = 0
        if memory is not None:
            self.attach_memory(memory)
        self._timer: PeriodicTimer | None = None
        if cfg.cleanup_timer is not None:  # the real-time twin of the in-request sweep
            self._timer = PeriodicTimer(cfg.cleanup_timer, self.maintain, name="chat-maintenance")
            self._timer.start()

    # --- the request path ----------------------------------------------------------------
    def handle_message(self, user: str, tenant: str, conversation_id: str, text: str) -> Reply:
        with self._lock:
            if self._closed:
                raise RuntimeError("ChatService is closed")
            now = self.clock()
            self.requests += 1
            if now - self._last_maintenance >= self.config.cleanup_interval:
                self.maintain(now)

            tenant_config = self.tenants.get(tenant, now)
            conn = self.connections.acquire()
            conn.execute("SELECT plan FROM tenants WHERE id = ?", (tenant,)).fetchall()

            conversation = self.registry.touch(conversation_id, user, tenant, now)
            incoming = Message(
                self.store.next_id(), conversation_id, user, tenant, "user", now, text
            )
            retrieved = self.vectors.search(text)
            answer = f"[{tenant_config.model}:{','.join(map(str, retrieved))}] {text[:REPLY_CHARS]}"
            outgoing = Message(
                self.store.next_id(), conversation_id, user, tenant, "assistant", now, answer
            )
            self.registry.append(conversation, incoming, outgoing)
            self.sessions.record(user, tenant, now, incoming, outgoing)

            self.broker.publish(text[:PAYLOAD_CHARS])
            self.consumer.tick()
            self._embed_queue.append((conversation_id, text))
            if len(self._embed_queue) >= self.config.embedding_batch_size:
                self._embed_pending()
            if self.requests % self.commit_every == 0:
                self.store.commit()
            return Reply(conversation_id, outgoing.id, answer, retrieved)

    def _load_tenant(self, tenant: str, now: float) -> TenantConfig:
        self.store.ensure_tenant(tenant, now)
        return load_tenant_config(self.connections.acquire(), tenant, now)

    def _embed_pending(self) -> None:
        batch, self._embed_queue = self._embed_queue, []
        outputs = self.embedder.embed_batch([text for _, text in batch])
        if outputs is None:  # refused by the memory manager: embeddings are derived data, skip
            self.embeddings_skipped += len(batch)
            return
        for (conversation_id, _), vector in zip(batch, outputs, strict=True):
            conversation = self.registry.get(conversation_id)
            if conversation is not None:
                conversation.add_embedding(vector)

    # --- cleanup ----------------------------------------------------------------------------
    def maintain(self, now: float | None = None) -> dict[str, int]:
        """The periodic sweep (seed 001's setInterval): evict idle conversations, idle
        sessions (shorter timeout under memory pressure) and expired tenant configs."""
        with self._lock:
            if self._closed:
                return {}
            now = self.clock() if now is None else now
            self._last_maintenance = now
            pressure = self.memory is not None and self.memory.pressure
            done = {
                "conversations": self.registry.sweep(now),
                "sessions": self.sessions.evict_idle(now, pressure=pressure),
                "tenant_configs": self.tenants.sweep(now),
            }
            self.store.commit()
            return done

    def relieve_pressure(self) -> dict[str, int]:
        """The memory manager's cleanup hook: trim histories to half the limit, drop idle
        sessions with the shortened timeout and sync the rest, expire configs, collect.
        Leaky components have no such code path and free nothing."""
        with self._lock:
            if self._closed:
                return {}
            now = self.clock()
            done = {
                "messages_trimmed": self.registry.trim(max(1, self.config.history_limit // 2)),
                "sessions": self.sessions.relieve(now),
                "tenant_configs": self.tenants.sweep(now),
            }
            self.store.commit()
        done["gc"] = gc.collect()
        return done

    def attach_memory(self, memory: MemoryManager) -> None:
        self.memory = memory
        memory.add_cleanup_hook(self.relieve_pressure)

    def _admit(self, kind: str) -> bool:
        return self.memory is None or self.memory.admit(kind)

    def flush(self) -> int:
        """Sync every session's buffered messages and commit; returns messages written."""
        with self._lock:
            written = self.sessions.sync_all()
            self.store.commit()
            return written

    # --- introspection and shutdown ------------------------------------------------------
    def stats(self) -> ServiceStats:
        with self._lock:
            return ServiceStats(
                requests=self.requests,
                conversations=len(self.registry),
                messages_in_memory=self.registry.messages_in_memory(),
                sessions=len(self.sessions),
                pending_messages=self.sessions.pending_messages(),
                tenant_configs=len(self.tenants),
                vector_loads=self.vectors.loads,
                vectors_retained_bytes=self.vectors.retained_bytes(),
                queue_buffered=len(self.consumer.buffer),
                native_live_bytes=self.embedder.native_live,
                embeddings_kept=len(self.embedder.kept),
                open_connections=self.connections.open_connections,
            )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Persist everything, free native buffers, close every connection and thread."""
        if self._timer is not None:  # before taking the lock: the timer may be waiting for it
            self._timer.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.memory is not None:
                with contextlib.suppress(ValueError):  # already removed
                    self.memory.remove_cleanup_hook(self.relieve_pressure)
            self.consumer.close()
            self.sessions.close()
            self.registry.close()
            self.embedder.close()
            self.vectors.close()
            self.tenants.clear()
            self._embed_queue.clear()
            self.connections.close()
            self.store.close()

    def __enter__(self) -> ChatService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
