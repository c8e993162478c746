"""A simulated chat service that reproduces, LEAKY or FIXED, the memory leaks of five
OOM-killed Node.js chat/indexing services (the seed write-ups ``000_f66e5d738d8e2a3e.txt`` to
``004_d099ed56d036631f.txt``).

    from scenarios.chat import ChatConfig, ChatService, Workload

    workload = Workload(seed=1)
    with ChatService(ChatConfig.leaky_only("sessions"), tmp / "chat.db", clock=workload.clock) as svc:
        for _ in range(1000):
            workload.step(svc, 50)
"""

from .clock import PeriodicTimer, SimulatedClock
from .config import PATTERNS, ChatConfig
from .memory import LoadRejected, MemoryEvent, MemoryManager
from .service import ChatService, Reply, ServiceStats
from .workload import Request, StepCounts, Workload

__all__ = [
    "PATTERNS",
    "ChatConfig",
    "ChatService",
    "LoadRejected",
    "MemoryEvent",
    "MemoryManager",
    "PeriodicTimer",
    "Reply",
    "Request",
    "ServiceStats",
    "SimulatedClock",
    "StepCounts",
    "Workload",
]
