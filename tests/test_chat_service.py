"""Behaviour of the simulated chat service in ``scenarios/chat`` (not of the plugin).

Each leak pattern is checked in its LEAKY and its FIXED form with real parts: a sqlite file in
a temp dir, real threads, numpy arrays, C ``malloc``/``free`` and real file descriptors.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
from pathlib import Path

import psutil
import pytest

from pytest_memleak.probe import allocator
from scenarios.chat import (
    PATTERNS,
    ChatConfig,
    ChatService,
    LoadRejected,
    MemoryManager,
    SimulatedClock,
    Workload,
)
from scenarios.chat.connections import ConnectionProvider
from scenarios.chat.consumer import JobBroker, QueueConsumer
from scenarios.chat.conversations import ConversationRegistry
from scenarios.chat.embeddings import Embedder
from scenarios.chat.sessions import SessionStore
from scenarios.chat.store import Message, MessageStore
from scenarios.chat.tenants import TenantConfigCache, load_tenant_config
from scenarios.chat.vectors import VectorStore

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path):
    s = MessageStore(tmp_path / "chat.db")
    yield s
    s.close()


def message(
    store: MessageStore, conversation: str, user: str, now: float, text: str = "hi"
) -> Message:
    return Message(store.next_id(), conversation, user, "t0", "user", now, text)


def wait_until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def rss() -> int:
    return psutil.Process().memory_info().rss


# --- configuration ------------------------------------------------------------------------


def test_config_selects_leaky_and_fixed_per_pattern():
    assert ChatConfig.fixed().leaks == ()
    assert ChatConfig.leaky().leaks == PATTERNS
    assert ChatConfig.leaky_only("queue", "embeddings").leaks == ("queue", "embeddings")
    assert ChatConfig.leaky().with_fixes("registry").leaks == PATTERNS[1:]
    assert ChatConfig.fixed().describe() == "fixed"
    with pytest.raises(ValueError, match="unknown leak pattern 'nope'"):
        ChatConfig.leaky_only("nope")
    with pytest.raises(ValueError, match="history_limit must be > 0"):
        ChatConfig(history_limit=0)


# --- 1. conversation registry -------------------------------------------------------------


def test_ttl_sweep_evicts_idle_and_keeps_refreshed_conversations(store):
    registry = ConversationRegistry(store, ttl=100, history_limit=50)
    idle = registry.touch("idle", "u1", "t0", now=0)
    registry.append(idle, message(store, "idle", "u1", 0))
    registry.touch("active", "u2", "t0", now=0)
    registry.touch("active", "u2", "t0", now=60)  # used again: refreshed

    assert registry.sweep(now=150) == 1
    assert "idle" not in registry and "active" in registry
    assert store.count(conversation_id="idle") == 1  # evicted messages are persisted first
    assert registry.sweep(now=161) == 1  # 101 s after its last use
    assert len(registry) == 0


def test_leaky_registry_keeps_every_conversation_forever(store):
    registry = ConversationRegistry(store, ttl=None, history_limit=50)
    for i in range(20):
        registry.touch(f"c{i}", "u", "t0", now=i)
    assert registry.sweep(now=10**9) == 0
    assert len(registry) == 20


def test_cleanup_timer_thread_sweeps_with_the_injected_clock(store):
    clock = SimulatedClock()
    registry = ConversationRegistry(store, ttl=10, history_limit=50, clock=clock)
    registry.touch("c", "u", "t0", now=clock())
    registry.start_cleanup_timer(0.01)
    try:
        assert wait_until(lambda: registry.timer is not None and registry.timer.runs >= 2)
        assert "c" in registry  # real time passes, clock time does not: nothing expires
        clock.advance(11)
        assert wait_until(lambda: "c" not in registry)
    finally:
        registry.stop_cleanup_timer()
    assert not registry.timer.running


# --- 2. message history -------------------------------------------------------------------


def test_history_limit_keeps_last_n_in_memory_and_the_rest_in_sqlite(store):
    registry = ConversationRegistry(store, ttl=3600, history_limit=5)
    conv = registry.touch("c", "u", "t0", now=0)
    sent = [message(store, "c", "u", i, f"m{i}") for i in range(12)]
    for m in sent:
        registry.append(conv, m)
    assert [m.text for m in conv.messages] == [f"m{i}" for i in range(7, 12)]
    assert store.ids(conversation_id="c") == [m.id for m in sent[:7]]
    assert [m.text for m in registry.older("c", limit=3)] == ["m4", "m5", "m6"]


def test_leaky_history_is_unbounded(store):
    registry = ConversationRegistry(store, ttl=3600, history_limit=None)
    conv = registry.touch("c", "u", "t0", now=0)
    for i in range(300):
        registry.append(conv, message(store, "c", "u", i))
    assert len(conv.messages) == 300
    assert store.count() == 0


# --- 3. sessions ----------------------------------------------------------------------------


def test_sessions_are_synced_to_sqlite_before_they_are_dropped(store):
    sessions = SessionStore(store, idle_timeout=60, max_sessions=3, sync_batch=1000)
    sent: dict[str, int] = {}
    for i, user in enumerate(["a", "b", "c", "a", "d", "e", "a"]):
        sessions.record(user, "t0", float(i), message(store, f"conv-{user}", user, i))
        sent[user] = sent.get(user, 0) + 1
    # max 3 sessions: the least recently used (b, then c) were dropped, after a sync
    assert {u for u in sent if u in sessions} == {"a", "d", "e"}
    assert sessions.dropped == 2
    for user in ("b", "c"):
        assert store.count(user=user) == sent[user]
    for user in ("a", "d", "e"):  # live sessions are not synced yet (write-behind)
        assert store.count(user=user) == 0
    assert sessions.evict_idle(now=6 + 61) == 3
    assert len(sessions) == 0
    assert store.count() == sum(sent.values()) == 7


def test_session_idle_timeout_shrinks_under_memory_pressure(store):
    sessions = SessionStore(
        store, idle_timeout=60, max_sessions=10, sync_batch=10, pressure_factor=0.25
    )
    sessions.record("u", "t0", 0.0, message(store, "c", "u", 0))
    assert sessions.evict_idle(now=20) == 0  # 20 s idle < 60 s
    assert sessions.evict_idle(now=20, pressure=True) == 1  # 20 s idle > 15 s
    assert store.count(user="u") == 1


def test_service_session_sync_loses_no_message(tmp_path):
    workload = Workload(seed=3)
    config = ChatConfig.fixed(max_sessions=40)
    with ChatService(config, tmp_path / "chat.db", clock=workload.clock) as service:
        for _ in range(30):
            workload.step(service, 50)
        assert service.sessions.dropped > 0
        assert len(service.sessions) <= 40
        service.flush()
        assert service.store.count() == 2 * 30 * 50  # every user message and every reply


def test_leaky_sessions_pile_up_and_hold_messages_until_close(tmp_path):
    workload = Workload(seed=3)
    service = ChatService(
        ChatConfig.leaky_only("sessions"), tmp_path / "chat.db", clock=workload.clock
    )
    for _ in range(20):
        workload.step(service, 50)
    assert service.sessions.dropped == 0
    assert service.stats().pending_messages == 2 * 20 * 50
    seen = {r.user for r in Workload(seed=3).requests(20 * 50)}  # same seed, same requests
    assert len(service.sessions) == len(seen)  # one session per user ever seen
    service.close()
    with sqlite3.connect(tmp_path / "chat.db") as conn:
        (rows,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    assert rows == 2 * 20 * 50  # synced at graceful shutdown only


# --- 4. tenant config cache --------------------------------------------------------------


def tenant_loader(store: MessageStore):
    def load(tenant: str, now: float):
        store.ensure_tenant(tenant, now)
        return load_tenant_config(store.connection, tenant, now)

    return load


def test_fixed_tenant_cache_expires_and_invalidates(store):
    cache = TenantConfigCache(tenant_loader(store), ttl=300)
    first = cache.get("acme", now=0)
    assert 2000 <= len(first.system_prompt) <= 5000  # seed 002: a config is ~2-5 KB
    assert cache.get("acme", now=299) is first
    renewed = cache.get("acme", now=300)
    assert renewed is not first and cache.loads == 2
    cache.get("other", now=300)
    assert cache.sweep(now=650) == 2 and len(cache) == 0
    cache.get("acme", now=700)
    assert cache.invalidate("acme") and "acme" not in cache
    assert cache.get("acme", now=701).loaded_at == 701


def test_leaky_tenant_cache_never_expires(store):
    cache = TenantConfigCache(tenant_loader(store), ttl=None)
    first = cache.get("acme", now=0)
    for i in range(50):
        cache.get(f"t{i}", now=i)
    assert cache.sweep(now=10**9) == 0
    assert cache.get("acme", now=10**9) is first
    assert len(cache) == 51


# --- 5. vector store ------------------------------------------------------------------------


def test_vector_store_cached_once_vs_reloaded_and_kept(tmp_path):
    path = tmp_path / "vectors.f32"
    fixed = VectorStore(path, rows=16, dim=32, cache=True)
    leaky = VectorStore(path, rows=16, dim=32, cache=False)
    for i in range(25):
        assert fixed.search(f"query {i}") == leaky.search(f"query {i}")
    assert fixed.loads == 1 and fixed.retained_bytes() == 16 * 32 * 4
    assert leaky.loads == 25 and leaky.retained_bytes() == 25 * 16 * 32 * 4


# --- 6. queue consumer ----------------------------------------------------------------------


@pytest.mark.parametrize("prefetch", [5, 1])
def test_prefetch_bound_holds_the_buffer_when_the_producer_is_faster(store, prefetch):
    broker = JobBroker(store)
    consumer = QueueConsumer(broker, prefetch=prefetch, rate=0.5)
    for i in range(1000):
        broker.publish(f"job {i}")
        consumer.tick()
        assert len(consumer.buffer) <= prefetch
    assert consumer.max_buffered == prefetch
    assert consumer.processed == 500
    assert broker.backlog() == 500  # the backlog waits in the broker (on disk)


def test_unbounded_consumer_buffers_the_whole_backlog(store):
    broker = JobBroker(store)
    consumer = QueueConsumer(broker, prefetch=None, rate=0.5)
    for i in range(1000):
        broker.publish(f"job {i}")
        consumer.tick()
    assert consumer.processed == 500
    assert len(consumer.buffer) == 500


# --- 7. embeddings ----------------------------------------------------------------------


def run_batches(embedder: Embedder, batches: int) -> int:
    gc.collect()
    # free memory the worker's earlier tests left resident would take the buffers without
    # growing RSS (seen: 29 of 40 MiB): handed back to the system first, each buffer shows
    allocator.trim()
    before = rss()
    for b in range(batches):
        outputs = embedder.embed_batch([f"chunk {b}-{i}" for i in range(4)])
        assert outputs is not None and len(outputs) == 4
    return rss() - before


def test_fixed_embedding_frees_native_buffers_and_leaky_keeps_them():
    chunk = 256 * 1024  # 4 chunks: 1 MiB of native memory per batch
    fixed = Embedder(dim=384, native_bytes=chunk, sequential=True)
    fixed_growth = run_batches(fixed, 40)
    assert fixed.native_allocated == 40 * MiB and fixed.native_live == 0
    assert fixed_growth < 8 * MiB

    leaky = Embedder(dim=384, native_bytes=chunk, sequential=False)
    leaky_growth = run_batches(leaky, 40)
    try:
        assert leaky.native_live == 40 * MiB and len(leaky.kept) == 160
        assert leaky_growth > 30 * MiB
        assert leaky_growth > fixed_growth + 25 * MiB
    finally:
        assert leaky.release() == 40 * MiB
    assert leaky.native_live == 0


def test_embeddings_are_deterministic_unit_vectors():
    a = Embedder(dim=64, native_bytes=4096, sequential=True).embed_batch(["x", "y"])
    b = Embedder(dim=64, native_bytes=4096, sequential=False).embed_batch(["x", "y"])
    assert a is not None and b is not None
    for u, v in zip(a, b, strict=True):
        assert u.shape == (64,) and abs(float(u @ u) - 1.0) < 1e-5
        assert (u == v).all()


# --- 8. database connections ------------------------------------------------------------


def test_leaky_connections_grow_open_fds_and_fixed_reuses_one(tmp_path):
    MessageStore(tmp_path / "chat.db").close()
    proc = psutil.Process()

    fixed = ConnectionProvider(tmp_path / "chat.db", reuse=True)
    before = proc.num_fds()
    for _ in range(40):
        fixed.acquire().execute("SELECT count(*) FROM tenants").fetchall()
    assert proc.num_fds() - before <= 1 and fixed.open_connections == 1
    fixed.close()

    leaky = ConnectionProvider(tmp_path / "chat.db", reuse=False, every=2)
    before = proc.num_fds()
    for _ in range(40):
        leaky.acquire().execute("SELECT count(*) FROM tenants").fetchall()
    assert leaky.open_connections == 20
    assert proc.num_fds() - before >= 20
    leaky.close()
    assert proc.num_fds() - before <= 0


# --- 9. memory manager ----------------------------------------------------------------------


class Gauge:
    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


def test_memory_manager_levels_hooks_admission_and_recovery():
    gauge = Gauge(100 * MiB)
    manager = MemoryManager(warning=50 * MiB, critical=70 * MiB, sample=gauge)
    calls: list[str] = []
    manager.add_cleanup_hook(lambda: calls.append("trim"))
    manager.add_cleanup_hook(gc.collect)  # a hook is called without arguments
    assert manager.baseline == 100 * MiB
    assert manager.warning_threshold == 150 * MiB and manager.critical_threshold == 170 * MiB

    gauge.value = 149 * MiB
    assert manager.check() == "normal" and calls == []
    gauge.value = 150 * MiB
    assert manager.check() == "warning" and calls == ["trim"]
    assert manager.admit("model")  # warning cleans up but still admits
    gauge.value = 171 * MiB
    assert manager.check() == "critical" and calls == ["trim", "trim"]
    assert not manager.admit("model") and not manager.admit("batch")
    with pytest.raises(LoadRejected, match="batch load rejected: memory is critical") as info:
        manager.require_admission("batch")
    assert info.value.kind == "batch" and info.value.usage == 171 * MiB

    gauge.value = 120 * MiB
    assert manager.check() == "normal"
    assert manager.admit("model")
    manager.require_admission("batch")
    assert calls == ["trim", "trim"]
    assert manager.levels() == ["normal", "warning", "critical", "normal"]
    assert [e.detail for e in manager.events("rejected")] == ["model", "batch", "batch"]
    assert [e.detail for e in manager.events("recovered")] == ["critical"]


def test_memory_manager_fractions_of_a_limit():
    gauge = Gauge(0)
    manager = MemoryManager(limit=1000, warning_fraction=0.5, critical_fraction=0.9, sample=gauge)
    for value, level in [
        (499, "normal"),
        (500, "warning"),
        (899, "warning"),
        (900, "critical"),
        (10, "normal"),
    ]:
        gauge.value = value
        assert manager.check() == level, value
    defaults = MemoryManager(limit=1000, sample=gauge)  # seed 004 conservative: 60 % / 80 %
    assert (defaults.warning_threshold, defaults.critical_threshold) == (600, 800)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warning": -1}, "warning must be >= 0"),
        ({"critical": -5}, "critical must be >= 0"),
        ({"warning": 70, "critical": 50}, "warning .* must be below critical"),
        ({"warning": 60, "critical": 60}, "warning .* must be below critical"),
        (
            {"limit": 1000, "warning_fraction": 0.0},
            r"warning_fraction must be a fraction in \(0, 1\]",
        ),
        (
            {"limit": 1000, "critical_fraction": 1.5},
            r"critical_fraction must be a fraction in \(0, 1\]",
        ),
        ({"limit": 1000, "warning_fraction": -0.1}, "warning_fraction must be a fraction"),
        (
            {"limit": 1000, "warning_fraction": 0.9, "critical_fraction": 0.8},
            "must be below critical_fraction",
        ),
        ({"warning_fraction": 0.5, "critical_fraction": 0.8}, "give limit too"),
        ({"limit": -1}, "limit must be >= 0"),
        ({"limit": 0}, "limit must be > 0"),
        ({"interval": 0}, "interval must be a positive number"),
    ],
)
def test_memory_manager_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MemoryManager(sample=Gauge(0), **kwargs)


def test_memory_manager_survives_a_broken_hook_and_keeps_a_bounded_history():
    gauge = Gauge(0)
    manager = MemoryManager(warning=10, critical=20, sample=gauge, history=5)
    called = []

    def broken() -> None:
        raise RuntimeError("boom")

    manager.add_cleanup_hook(broken)
    manager.add_cleanup_hook(lambda: called.append(1))
    gauge.value = 15
    manager.check()
    assert called == [1]
    assert "boom" in manager.events("hook_error")[0].detail
    for _ in range(20):
        manager.check()
    assert len(manager.history) == 5 and manager.checks == 21


def test_memory_manager_monitors_on_a_daemon_thread():
    gauge = Gauge(0)
    hooked = threading.Event()
    manager = MemoryManager(warning=10, critical=20, sample=gauge, interval=0.01)
    manager.add_cleanup_hook(hooked.set)
    manager.start()
    try:
        assert manager.running and manager.thread is not None and manager.thread.daemon
        assert wait_until(lambda: manager.checks >= 2)
        assert not hooked.is_set()
        gauge.value = 25
        assert hooked.wait(3.0)
        assert wait_until(lambda: not manager.admit("model"))
        gauge.value = 0
        assert wait_until(lambda: manager.admit("model"))
    finally:
        manager.stop()
    assert not manager.running


def test_service_obeys_the_memory_manager(tmp_path):
    gauge = Gauge(0)
    manager = MemoryManager(warning=10, critical=20, sample=gauge)
    workload = Workload(seed=5)
    config = ChatConfig.leaky_only("vector_store", history_limit=10)
    with ChatService(config, tmp_path / "chat.db", clock=workload.clock, memory=manager) as service:
        workload.step(service, 40)
        assert service.vectors.loads == 40 and service.embeddings_skipped == 0
        gauge.value = 25
        assert manager.check() == "critical"  # hook ran: histories trimmed to limit // 2
        assert max(len(c.messages) for c in service.registry.conversations()) <= 5
        workload.step(service, 40)
        assert service.vectors.loads == 40 and service.vectors.rejected == 40
        assert service.embeddings_skipped >= 32
        gauge.value = 0
        assert manager.check() == "normal"
        workload.step(service, 40)
        assert service.vectors.loads == 80
    assert manager.events("cleanup") and not manager.hooks  # close() unregistered its hook


# --- 10. workload ---------------------------------------------------------------------------


def test_workload_is_deterministic_for_a_seed():
    assert Workload(seed=7).requests(500) == Workload(seed=7).requests(500)
    assert Workload(seed=7).requests(50) != Workload(seed=8).requests(50)


def test_workload_is_uneven_churns_and_varies_sizes():
    workload = Workload(seed=1, users=200)
    requests = workload.requests(5000)
    per_user: dict[str, int] = {}
    for r in requests:
        per_user[r.user] = per_user.get(r.user, 0) + 1
    counts = sorted(per_user.values(), reverse=True)
    assert counts[0] > 10 * counts[len(counts) // 2]  # Zipf-like: a few heavy users
    assert len(per_user) > 300  # churn brought new users in
    assert len({r.tenant for r in requests}) > 50  # and new tenants
    sizes = [len(r.text) for r in requests]
    assert min(sizes) < 100 < 1000 < max(sizes)


def test_workload_step_drives_a_service_and_the_clock(tmp_path):
    workload = Workload(seed=2, seconds_per_request=5.0)
    with ChatService(ChatConfig.fixed(), tmp_path / "chat.db", clock=workload.clock) as service:
        counts = workload.step(service, 50)
        assert counts.requests == 50 and service.requests == 50
        assert workload.clock() == 250.0
        assert counts.bytes == sum(
            len(m.text)
            for c in service.registry.conversations()
            for m in c.messages
            if m.role == "user"
        )


# --- 11. the service --------------------------------------------------------------------


def test_handle_message_replies_and_close_releases_everything(tmp_path):
    proc = psutil.Process()
    fds = proc.num_fds()
    clock = SimulatedClock()
    service = ChatService(ChatConfig.leaky(connection_every=1), tmp_path / "chat.db", clock=clock)
    for i in range(40):
        clock.advance(1)
        reply = service.handle_message(f"u{i % 3}", "acme", f"c{i % 2}", f"hello {i}")
        assert reply.conversation_id == f"c{i % 2}" and f"hello {i}" in reply.text
        assert len(reply.retrieved) == 3
    stats = service.stats()
    assert stats.open_connections >= 40 and stats.native_live_bytes > 0
    assert proc.num_fds() - fds >= 40
    service.close()
    assert proc.num_fds() <= fds
    assert service.embedder.native_live == 0
    with pytest.raises(RuntimeError, match="closed"):
        service.handle_message("u", "acme", "c", "late")
    service.close()  # idempotent


# (pattern, stats field that the leak makes grow)
GROWTH = [
    ("registry", "conversations"),
    ("history", "messages_in_memory"),
    ("sessions", "pending_messages"),
    ("tenant_cache", "tenant_configs"),
    ("vector_store", "vectors_retained_bytes"),
    ("queue", "queue_buffered"),
    ("embeddings", "native_live_bytes"),
    ("connections", "open_connections"),
]


@pytest.mark.parametrize(("pattern", "field"), GROWTH, ids=[p for p, _ in GROWTH])
def test_each_leaky_pattern_grows_where_its_fix_plateaus(tmp_path, pattern, field):
    # short TTLs so that FIXED fills up within a few steps (250 clock s per step)
    short = {
        "conversation_ttl": 750,
        "cleanup_interval": 250,
        "session_idle_timeout": 500,
        "history_limit": 20,  # seed 002's limit: fills sooner than seed 001's 50
    }

    def run(config: ChatConfig, name: str) -> list[int]:
        workload = Workload(seed=11)
        values = []
        with ChatService(config, tmp_path / f"{name}.db", clock=workload.clock) as service:
            for _ in range(3):
                for _ in range(10):
                    workload.step(service, 50)
                values.append(getattr(service.stats(), field))
        return values

    leaky = run(ChatConfig.leaky_only(pattern, **short), "leaky")
    fixed = run(ChatConfig.fixed(**short), "fixed")
    assert leaky[0] < leaky[1] < leaky[2], leaky
    assert leaky[2] - leaky[1] > 0.5 * (leaky[1] - leaky[0]) > 0, leaky  # still growing
    assert fixed[2] <= 1.3 * fixed[1] + 5, fixed  # bounded
    assert leaky[2] > 1.5 * fixed[2], (leaky, fixed)
