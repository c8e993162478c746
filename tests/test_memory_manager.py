"""The chat service's memory manager under real memory pressure.

No gauges here: every manager samples the real RSS of this process, and the pressure is
real memory from ``mem_allocate`` (Python buffers and C ``malloc``), touched page by page so
RSS shows it, and given back by ``mem_cleanup``. The manager's default thresholds are
used (warning at baseline + 50 MiB, critical at baseline + 70 MiB), so the allocations
sit 10 to 20 MiB clear of each threshold.
"""

from __future__ import annotations

import time

import pytest

from pytest_memleak.check import measuring
from pytest_memleak.explicit.snapshots import trim
from scenarios.chat import ChatConfig, ChatService, Workload
from scenarios.chat.memory import CRITICAL, NORMAL, WARNING, LoadRejected, MemoryManager

MiB = 1024 * 1024


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


@pytest.fixture
def settled() -> None:
    """Give freed memory back first, so the manager's baseline is the process at rest."""
    measuring.collect()
    trim()


@pytest.fixture
def manager(settled: None):
    manager = MemoryManager()  # real RSS; warning +50 MiB, critical +70 MiB over the baseline
    assert (manager.warning, manager.critical) == (50 * MiB, 70 * MiB)
    yield manager
    manager.stop()


def test_warning_runs_the_cleanup_hook_and_shedding_the_cache_recovers(
    manager, mem_allocate, mem_cleanup
):
    cache = mem_allocate("60 MiB")  # the service's cache: between warning and critical
    shed = []
    manager.add_cleanup_hook(lambda: shed.append(mem_cleanup(cache)))

    assert manager.check() == WARNING
    assert manager.usage - manager.baseline >= 55 * MiB
    assert len(shed) == 1 and shed[0].rss >= 0.9 * 60 * MiB, shed
    assert cache.nbytes == 0
    assert manager.admit("model")  # a warning sheds, it does not refuse loads

    assert manager.check() == NORMAL  # the hook's cleanup brought usage back down
    assert manager.usage - manager.baseline < 20 * MiB
    assert len(shed) == 1  # hooks run only under pressure
    assert manager.levels() == [WARNING, NORMAL]
    assert [e.detail for e in manager.events("recovered")] == [WARNING]


def test_critical_refuses_loads_until_cleanup(manager, mem_allocate, mem_cleanup):
    ran = []
    manager.add_cleanup_hook(lambda: ran.append(manager.level))  # a hook that frees nothing
    held = mem_allocate("60 MiB")

    assert manager.check() == WARNING
    assert ran == [WARNING] and manager.admit("model")

    mem_allocate("30 MiB", held, kind="native")  # 90 MiB over the baseline: past critical
    assert manager.check() == CRITICAL
    assert ran == [WARNING, CRITICAL]
    assert not manager.admit("model")
    with pytest.raises(LoadRejected, match="batch load rejected: memory is critical") as info:
        manager.require_admission("batch")
    assert info.value.usage >= manager.critical_threshold
    assert manager.rejections == 2
    assert [e.detail for e in manager.events("rejected")] == ["model", "batch"]

    recovered = mem_cleanup()
    assert recovered.released == 90 * MiB and recovered.rss >= 0.9 * 90 * MiB, recovered
    assert manager.check() == NORMAL
    assert manager.admit("model")
    manager.require_admission("batch")  # no longer raises
    assert manager.levels() == [WARNING, CRITICAL, NORMAL]
    assert manager.peak - manager.baseline >= 85 * MiB
    assert ran == [WARNING, CRITICAL]


def test_fractions_of_a_memory_limit(settled, mem_allocate, mem_cleanup):
    """Seed 004's profile: warning and critical as fractions of an absolute memory limit."""
    at_rest = measuring.rss()
    limit = at_rest + 200 * MiB
    manager = MemoryManager(
        limit=limit,
        warning_fraction=(at_rest + 40 * MiB) / limit,
        critical_fraction=(at_rest + 100 * MiB) / limit,
    )
    assert manager.check() == NORMAL
    holder = mem_allocate("70 MiB", kind="native")
    assert manager.check() == WARNING
    mem_allocate("60 MiB", holder)
    assert manager.check() == CRITICAL and not manager.admit("model")
    assert manager.usage >= manager.critical_threshold > manager.warning_threshold
    mem_cleanup(holder)
    assert manager.check() == NORMAL and manager.admit("model")


def test_the_monitor_thread_sees_pressure_come_and_go(manager, mem_allocate, mem_cleanup):
    manager.interval = 0.02
    hooks = []
    manager.add_cleanup_hook(lambda: hooks.append(1))
    manager.start()
    assert manager.running
    assert wait_until(lambda: manager.checks >= 2) and manager.level == NORMAL

    mem_allocate("90 MiB", kind="native")
    assert wait_until(lambda: manager.level == CRITICAL), manager.levels()
    assert not manager.admit("batch") and hooks

    mem_cleanup()
    assert wait_until(lambda: manager.level == NORMAL), manager.levels()
    assert manager.admit("batch")
    manager.stop()
    assert not manager.running
    assert not manager.events("error")


def test_the_chat_service_sheds_and_refuses_under_real_pressure(
    manager, mem_allocate, mem_cleanup, tmp_path
):
    workload = Workload(seed=5)
    config = ChatConfig.leaky_only("vector_store", history_limit=10)
    with ChatService(config, tmp_path / "chat.db", clock=workload.clock, memory=manager) as service:
        workload.step(service, 40)
        assert service.vectors.loads == 40 and service.vectors.rejected == 0
        assert max(len(c.messages) for c in service.registry.conversations()) > 5

        mem_allocate("90 MiB", kind="native")  # the rest of the process grows past critical
        assert manager.check() == CRITICAL
        # the service's hook ran: histories trimmed to half the limit
        assert max(len(c.messages) for c in service.registry.conversations()) <= 5
        workload.step(service, 40)
        assert service.vectors.loads == 40 and service.vectors.rejected == 40

        mem_cleanup()
        assert manager.check() == NORMAL
        workload.step(service, 40)
        assert service.vectors.loads == 80 and service.vectors.rejected == 40
    assert manager.events("cleanup") and not manager.hooks
