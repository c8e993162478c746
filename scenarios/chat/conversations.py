"""Patterns 1 and 2: the conversation registry and each conversation's message history.

LEAKY (seed 001 before the fix): ``ttl=None`` keeps every conversation forever and
``history_limit=None`` keeps every message of a conversation in memory.
FIXED: conversations idle for longer than ``ttl`` are evicted by :meth:`sweep` (called by a
real timer thread, by the service's maintenance, or directly with a ``now`` for tests); using
a conversation refreshes it; only the last ``history_limit`` messages stay in memory and the
older ones go to the sqlite store (from which :meth:`ConversationRegistry.older` pages them back).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

import numpy as np

from .clock import Clock, PeriodicTimer
from .store import Message, MessageStore


class Conversation:
    __slots__ = (
        "id",
        "user",
        "tenant",
        "created",
        "last_used",
        "messages",
        "summary",
        "summarized",
    )

    def __init__(self, conversation_id: str, user: str, tenant: str, now: float) -> None:
        self.id = conversation_id
        self.user = user
        self.tenant = tenant
        self.created = now
        self.last_used = now  # seed 001: refreshed whenever the conversation is used
        self.messages: deque[Message] = deque()
        self.summary: np.ndarray | None = None  # running mean of message embeddings
        self.summarized = 0

    def add_embedding(self, vector: np.ndarray) -> None:
        self.summarized += 1
        if self.summary is None:
            self.summary = vector.astype(np.float32, copy=True)
        else:
            self.summary += (vector - self.summary) / self.summarized


class ConversationRegistry:
    def __init__(
        self,
        store: MessageStore | None,
        *,
        ttl: float | None,
        history_limit: int | None,
        clock: Clock | None = None,
    ) -> None:
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds or None, got {ttl!r}")
        if history_limit is not None and not history_limit > 0:
            raise ValueError(f"history_limit must be > 0 or None, got {history_limit!r}")
        self.store = store
        self.ttl = ttl
        self.history_limit = history_limit
        self._clock = clock
        self._lock = threading.RLock()
        self._conversations: dict[str, Conversation] = {}
        self._timer: PeriodicTimer | None = None
        self.evicted = 0
        self.spilled = 0

    # --- use -------------------------------------------------------------------------------
    def touch(self, conversation_id: str, user: str, tenant: str, now: float) -> Conversation:
        """Get or create a conversation and refresh its last use."""
        with self._lock:
            conv = self._conversations.get(conversation_id)
            if conv is None:
                conv = self._conversations[conversation_id] = Conversation(
                    conversation_id, user, tenant, now
                )
            conv.last_used = now
            return conv

    def append(self, conversation: Conversation, *messages: Message) -> None:
        with self._lock:
            conversation.messages.extend(messages)
            conversation.last_used = max(conversation.last_used, messages[-1].ts)
            limit = self.history_limit
            if limit is not None and len(conversation.messages) > limit:
                overflow = [
                    conversation.messages.popleft()
                    for _ in range(len(conversation.messages) - limit)
                ]
                self._persist(overflow)

    def get(self, conversation_id: str) -> Conversation | None:
        return self._conversations.get(conversation_id)

    def older(self, conversation_id: str, limit: int = 20) -> list[Message]:
        """The messages just before those still in memory, read back from the store."""
        conv = self._conversations.get(conversation_id)
        if self.store is None:
            return []
        before = conv.messages[0].id if conv is not None and conv.messages else 2**62
        return self.store.older(conversation_id, before, limit)

    def conversations(self) -> list[Conversation]:
        with self._lock:
            return list(self._conversations.values())

    def __len__(self) -> int:
        return len(self._conversations)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._conversations

    def messages_in_memory(self) -> int:
        with self._lock:
            return sum(len(c.messages) for c in self._conversations.values())

    # --- cleanup ---------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """Evict conversations idle for longer than the TTL; 0 when kept forever (leaky)."""
        if self.ttl is None:
            return 0
        if now is None:
            now = self._now()
        with self._lock:
            stale = [c for c in self._conversations.values() if now - c.last_used > self.ttl]
            for conv in stale:
                self._persist(conv.messages)
                del self._conversations[conv.id]
            self.evicted += len(stale)
        return len(stale)

    def trim(self, keep: int) -> int:
        """Under memory pressure: keep only ``keep`` messages per conversation (fixed only)."""
        if self.history_limit is None:
            return 0
        moved = 0
        with self._lock:
            for conv in self._conversations.values():
                extra = len(conv.messages) - keep
                if extra > 0:
                    self._persist([conv.messages.popleft() for _ in range(extra)])
                    moved += extra
        return moved

    def start_cleanup_timer(self, interval: float) -> None:
        """Sweep every ``interval`` real seconds on a daemon thread (seed 001's setInterval)."""
        if self._timer is None:
            self._timer = PeriodicTimer(interval, self.sweep, name="conversation-sweep")
        self._timer.start()

    def stop_cleanup_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()

    @property
    def timer(self) -> PeriodicTimer | None:
        return self._timer

    def close(self) -> None:
        """Stop the timer and persist what is still in memory."""
        self.stop_cleanup_timer()
        with self._lock:
            for conv in self._conversations.values():
                self._persist(conv.messages)
            self._conversations.clear()

    def _persist(self, messages: Iterable[Message]) -> None:
        if self.store is not None:
            self.spilled += self.store.save(messages)

    def _now(self) -> float:
        if self._clock is None:
            raise ValueError("sweep() without now needs a registry built with a clock")
        return self._clock()
