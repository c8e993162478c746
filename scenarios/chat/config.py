"""One frozen dataclass selects, per leak pattern, the LEAKY or the FIXED behaviour.

``ChatConfig.fixed()`` turns every pattern's fix on, ``ChatConfig.leaky()`` reproduces every
leak, ``ChatConfig.leaky_only("embeddings")`` is fixed except for the named patterns. Defaults
are the numbers of the seed write-ups (``000_f66e5d738d8e2a3e.txt`` to ``004_d099ed56d036631f.txt``), cited per field:

* seed 000 — BambiSleep chat: session idle timeout / max sessions / shorter timeouts under
  memory pressure / database sync before session removal.
* seed 001 — dadnovin: 2 h conversation TTL swept every 30 min, 50 messages in memory,
  vector store cached instead of reloaded per request.
* seed 002 — Meta Chat Platform: 20-message history, tenant config cache TTL 5 min,
  RabbitMQ prefetch 5, one reused (pooled) database client.
* seed 003 — basic memory manager: warning baseline + 50 MB, critical baseline + 70 MB.
* seed 004 — 42Context: embedding batch size 16, sequential processing, tensor disposal,
  warning/critical at 60 %/80 % of a memory limit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

#: The leak patterns, in the order of the brief; each is a ``leaky_<name>`` flag.
PATTERNS: tuple[str, ...] = (
    "registry",
    "history",
    "sessions",
    "tenant_cache",
    "vector_store",
    "queue",
    "embeddings",
    "connections",
)


@dataclass(frozen=True)
class ChatConfig:
    # --- leak switches: True reproduces the seed's bug, False applies its fix -------------
    leaky_registry: bool = False  # 1. conversations kept forever (seed 001)
    leaky_history: bool = False  # 2. unbounded message history (seed 001)
    leaky_sessions: bool = False  # 3. sessions pile up, never synced/dropped (seed 000)
    leaky_tenant_cache: bool = False  # 4. tenant configs never expire (seed 002)
    leaky_vector_store: bool = False  # 5. vector store reloaded per request, kept (seed 001)
    leaky_queue: bool = False  # 6. consumer buffers the whole backlog (seed 002)
    leaky_embeddings: bool = False  # 7. all-at-once batches, native buffers kept (seed 004)
    leaky_connections: bool = (
        False  # 8. new db connection per request, never closed (seeds 001/002)
    )

    # --- 1. conversation registry ------------------------------------------------------
    conversation_ttl: float = 2 * 60 * 60  # seed 001: CONVERSATION_TTL = 2 hours
    cleanup_interval: float = 30 * 60  # seed 001: cleanup runs every 30 min (clock seconds)
    cleanup_timer: float | None = (
        None  # real seconds for a background sweep thread (off: deterministic)
    )
    # --- 2. message history ---------------------------------------------------------------
    history_limit: int = 50  # seed 001: MAX_MESSAGES_IN_MEMORY = 50 (seed 002 uses 20)
    # --- 3. sessions -----------------------------------------------------------------------
    # seed 000 names SESSION_IDLE_TIMEOUT and MAX_SESSIONS but gives no values: ours.
    session_idle_timeout: float = 30 * 60
    max_sessions: int = 500
    pressure_timeout_factor: float = 0.25  # seed 000: "more aggressive" timeout under pressure
    session_sync_batch: int = 20  # write-behind: sync once a session holds this many messages
    # --- 4. tenant config cache -------------------------------------------------------
    tenant_ttl: float = 5 * 60  # seed 002: TenantConfigCache ttlMs = 5 minutes
    # --- 5. vector store ------------------------------------------------------------------
    vector_rows: int = 16  # 16 x 32 float32 = 2 KiB per (re)load: ~100 KiB per 50 requests
    vector_dim: int = 32
    # --- 6. queue consumer ----------------------------------------------------------------
    prefetch: int = 5  # seed 002: RabbitMQ prefetch 5
    consumer_rate: float = 0.5  # jobs consumed per request; the producer publishes 1
    # --- 7. embeddings ----------------------------------------------------------------------
    embedding_batch_size: int = 16  # seed 004: conservative batchSize 16
    embedding_dim: int = 384  # MiniLM-sized output vector (float32)
    embedding_native_bytes: int = 2048  # native (malloc) activation buffer per chunk
    # --- 8. database connections --------------------------------------------------------
    connection_every: int = 100  # leaky: a new connection per 100 requests (ulimit -n 20000 here)

    def __post_init__(self) -> None:
        positive = (
            "conversation_ttl",
            "cleanup_interval",
            "history_limit",
            "session_idle_timeout",
            "max_sessions",
            "session_sync_batch",
            "tenant_ttl",
            "vector_rows",
            "vector_dim",
            "prefetch",
            "embedding_batch_size",
            "embedding_dim",
            "embedding_native_bytes",
            "connection_every",
        )
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"ChatConfig.{name} must be > 0, got {value!r}")
        if self.cleanup_timer is not None and not self.cleanup_timer > 0:
            raise ValueError(
                f"ChatConfig.cleanup_timer must be > 0 or None, got {self.cleanup_timer!r}"
            )
        if not 0 < self.pressure_timeout_factor <= 1:
            raise ValueError(
                f"ChatConfig.pressure_timeout_factor must be in (0, 1], got {self.pressure_timeout_factor!r}"
            )
        if not 0 < self.consumer_rate <= 1:
            raise ValueError(
                f"ChatConfig.consumer_rate must be in (0, 1], got {self.consumer_rate!r}"
            )

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def fixed(cls, **overrides: Any) -> ChatConfig:
        """Every fix applied."""
        return cls(**overrides)

    @classmethod
    def leaky(cls, **overrides: Any) -> ChatConfig:
        """Every leak reproduced."""
        return cls(**{**{_flag(p): True for p in PATTERNS}, **overrides})

    @classmethod
    def leaky_only(cls, *patterns: str, **overrides: Any) -> ChatConfig:
        """Fixed, except for the named patterns."""
        return cls.fixed(**overrides).with_leaks(*patterns)

    def with_leaks(self, *patterns: str) -> ChatConfig:
        return replace(self, **{_flag(p): True for p in patterns})

    def with_fixes(self, *patterns: str) -> ChatConfig:
        return replace(self, **{_flag(p): False for p in patterns})

    @property
    def leaks(self) -> tuple[str, ...]:
        """The patterns this configuration leaks, in :data:`PATTERNS` order."""
        return tuple(p for p in PATTERNS if getattr(self, _flag(p)))

    def describe(self) -> str:
        return "fixed" if not self.leaks else "leaky:" + "+".join(self.leaks)

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _flag(pattern: str) -> str:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown leak pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    return "leaky_" + pattern
