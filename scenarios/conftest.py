"""Fixtures of the chat soaks: one ``ChatService`` per soak, driven at a paced request rate.

A soak test asks for the ``chat`` fixture and names its leak pattern(s) with the ``chat``
marker; this conftest parametrizes it into a LEAKY and a FIXED variant (the variant is the
callspec id, so ``soak_cfg.scenario_variant`` reports scenario = the test's name, variant =
leaky/fixed) and sets ``expect_leak`` on each::

    @pytest.mark.chat("registry")
    def test_registry(chat):
        chat.step()

``chat.step()`` is one ``workload.step(service, chat.requests)`` followed by a pause that holds
the soak to its request rate. The service lives in the test's own ``tmp_path``, on the
workload's simulated clock, and is closed at teardown.

**Paced traffic.** Unpaced, a LEAKY variant grows as fast as the CPU serves requests (the
all-patterns soak would take ~700 MiB in 10 s, gigabytes in the nightly 5-minute soak), and
its growth per second follows every change of throughput, which a time-based trend reads as
acceleration or plateau. So each soak serves a steady :data:`MAX_RATE` requests per second
(~20 % of a core, so that a busy machine can still keep up; one that cannot simply runs flat
out). A LEAKY variant's rate (``rate=`` on the marker may raise it) is capped so that, at the
retention per request measured by ``python -m scenarios.chat.measure``
(:data:`LEAK_PER_REQUEST`), it gathers at most :data:`MEMORY_BUDGET` over the soak's
effective duration (``--memleak-soak-duration`` included): below the 500 MiB
``memory_limit``, so the time to it stays a projection. FIXED variants always serve
:data:`MAX_RATE`: a longer soak serves them more traffic.

**Steady state first.** A FIXED service's TTL windows fill within ~30 steps, but its RSS keeps
climbing for a few hundred more: conversation histories fill towards their 50-message cap at
the pace of each user's activity and slot churn (a relaxation time of ~100 steps), and RSS
ratchets up with each new high of the fluctuating heap (measured: a fresh service in a fresh
process adds ~250 KiB between steps 150 and 500, then ~50 B per step, allocator noise; the
Python heap and sqlite's own memory are flat by then). A LEAKY service fills the same way
under its leak, and a fill that tails off inside the fit looks like a leak slowing down. So
every service serves :data:`PREWARM_STEPS` steps in the fixture before its soak starts (a
LEAKY one fewer when its head start would pass :data:`PREWARM_BUDGET`; the managed one none,
its climb to the manager's thresholds is the point), and the soak's own warm-up (30 %)
absorbs the rest: the fit sees a plateau or a straight leak.

**Order.** A soak inherits the heap its predecessors freed, so FIXED soaks run first, then the
managed one and the LEAKY ones from the smallest expected growth to the biggest (see
:func:`pytest_collection_modifyitems`).

**Time is compressed**: a request advances the simulated clock by 5 s, so at 2,000 requests
per second one wall second is ~2.8 simulated hours; the growth per hour and the time to the
memory limit in the summary are wall-clock figures of that accelerated service.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pytest_memleak.check import measuring
from pytest_memleak.config import options
from pytest_memleak.explicit.snapshots import trim
from pytest_memleak.soak import config as soak_cfg
from scenarios.chat import PATTERNS, ChatConfig, ChatService, MemoryManager, Workload

KiB = 1024
MiB = 1024 * KiB

MAX_RATE = 2000.0  # requests per second: 40 steps of ~5 ms, ~20 % of a core
REQUESTS_PER_STEP = 50
MEMORY_BUDGET = 200 * MiB  # what a LEAKY variant may gather over one soak
MAX_LAG = 1.0  # seconds behind schedule that the pace still makes up
PREWARM_STEPS = 500  # steps a service serves before its soak starts (25,000 requests)
PREWARM_BUDGET = 50 * MiB  # ...or fewer, so that a LEAKY service's head start stays below this
PROCESS_WARMUP_SERVICES = 2  # throwaway FIXED services served once per session, before any soak
DEFAULT_DURATION = 10.0  # for a chat test run without a soak marker

#: RSS retained per request by each LEAKY pattern, long run (``python -m scenarios.chat.measure
#: --steps 1500 --warmup 100``, 50 requests per step, divided by 50, rounded up).
LEAK_PER_REQUEST: dict[str, int] = {
    "registry": 850,
    "history": 950,
    "sessions": 1550,
    "tenant_cache": 230,
    "vector_store": 2600,
    "queue": 360,
    "embeddings": 4000,
    "connections": 1800,
}

#: The managed variant's MemoryManager: seed 003's progressive thresholds above the baseline
#: (+50/+70 MB there), scaled down so that a short soak reaches them early.
MANAGED_WARNING = 20 * MiB
MANAGED_CRITICAL = 30 * MiB
MANAGED_INTERVAL = 0.05  # seconds between checks (seed 000's MEMORY_MONITOR_INTERVAL; no value given)

VARIANTS = ("leaky", "fixed")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chat(*patterns, variants=('leaky', 'fixed'), requests=50, rate=None, max_rate=2000, seed=1, "
        "workload={}): a chat-service soak over the named leak patterns (all of "
        "scenarios.chat.PATTERNS when none is named), built by the chat fixture; each variant "
        "becomes a parameter: leaky (expect_leak=True), fixed (expect_leak=False) or managed "
        "(leaky under a MemoryManager, expect_leak=False); rate= raises the leaky variant's "
        "requests per second, max_rate= sets the fixed variant's (and the default), workload= passes "
        "keywords to Workload",
    )


@dataclass(frozen=True)
class ChatScenario:
    """What the ``chat`` fixture builds for one parameter of a ``chat``-marked test."""

    patterns: tuple[str, ...]
    variant: str  # "leaky", "fixed" or "managed"
    requests: int = REQUESTS_PER_STEP
    rate: float | None = None  # requests per second of the LEAKY (and managed) variant; None: max_rate
    max_rate: float = MAX_RATE  # requests per second of the FIXED variant, and the default of the others
    seed: int = 1
    workload: tuple[tuple[str, object], ...] = ()  # keyword arguments of Workload

    def __post_init__(self) -> None:
        if self.variant not in ("leaky", "fixed", "managed"):
            raise ValueError(f"unknown chat variant {self.variant!r}: leaky, fixed or managed")

    @property
    def expect_leak(self) -> bool:
        return self.variant == "leaky"

    def config(self) -> ChatConfig:
        return ChatConfig.fixed() if self.variant == "fixed" else ChatConfig.leaky_only(*self.patterns)

    @property
    def leak_per_request(self) -> int:
        return sum(LEAK_PER_REQUEST[p] for p in self.patterns)

    def paced_rate(self, duration: float) -> float:
        """Requests per second for a soak of ``duration`` seconds (see the module docstring)."""
        if self.variant == "fixed":
            return self.max_rate
        return min(float(self.rate or self.max_rate), MEMORY_BUDGET / (self.leak_per_request * duration))

    @property
    def prewarm_steps(self) -> int:
        """Steps served before the soak: :data:`PREWARM_STEPS`, fewer for a big leak, none managed."""
        if self.variant == "fixed":
            return PREWARM_STEPS
        if self.variant == "managed":
            return 0  # the climb to the manager's thresholds is part of what the soak shows
        return min(PREWARM_STEPS, int(PREWARM_BUDGET / (self.leak_per_request * self.requests)))

    def make_workload(self) -> Workload:
        return Workload(seed=self.seed, **dict(self.workload))

    def expected_growth(self, duration: float) -> float:
        """Bytes the soak is expected to take: none FIXED, up to the critical threshold managed."""
        if self.variant == "fixed":
            return 0.0
        if self.variant == "managed":
            return float(MANAGED_CRITICAL)
        return self.leak_per_request * self.paced_rate(duration) * duration


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("chat")
    if marker is None or "chat_scenario" not in metafunc.fixturenames:
        return
    patterns = tuple(marker.args) or PATTERNS
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.chat on {metafunc.definition.nodeid}: unknown pattern(s) {unknown}; "
            f"expected some of {', '.join(PATTERNS)}"
        )
    kwargs = dict(marker.kwargs)
    variants = tuple(kwargs.pop("variants", VARIANTS))
    kwargs["workload"] = tuple(sorted(kwargs.pop("workload", {}).items()))
    params = []
    for variant in variants:
        scenario = ChatScenario(patterns, variant, **kwargs)
        marks = [pytest.mark.memleak_soak(expect_leak=scenario.expect_leak)]
        params.append(pytest.param(scenario, id=variant, marks=marks))
    metafunc.parametrize("chat_scenario", params)


def soak_duration(item: pytest.Item) -> float:
    """The duration the soak runner will use for ``item``: its marker's, or the override."""
    if item.get_closest_marker("memleak_soak") is None:
        return DEFAULT_DURATION
    return soak_cfg.soak_config(item, options.resolve_session(item.config)).duration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the chat soaks in the order of the memory they are expected to take: FIXED ones
    first, then the managed one and the LEAKY ones from the smallest leak to the biggest.

    A soak inherits the heap its predecessors freed. After a big LEAKY soak that heap is
    hundreds of MiB wide and fragmented: a FIXED service keeps faulting freed pages back in as
    its allocations wander over it (a creep of megabytes that is not the service's), and a
    small leak is served from freed-but-resident memory, so RSS understates it. In this order
    each soak only inherits what smaller ones left. The sort is stable: the file's order holds
    among equals, and other tests keep their place at the front.
    """

    def key(item: pytest.Item) -> float:
        callspec = getattr(item, "callspec", None)
        scenario = callspec.params.get("chat_scenario") if callspec is not None else None
        if not isinstance(scenario, ChatScenario):
            return -1.0
        return scenario.expected_growth(soak_duration(item))

    items.sort(key=key)


class Pace:
    """Holds a soak to ``rate`` steps of ``requests`` requests a second.

    Short stalls (the soak's samples collect garbage) are made up by running the next steps
    without a pause; a machine more than :data:`MAX_LAG` behind restarts the schedule from
    now instead of bursting.
    """

    def __init__(self, requests: int, rate: float) -> None:
        self.period = requests / rate  # seconds per step
        self._next: float | None = None

    def wait(self) -> None:
        """Wait for the next step's slot."""
        now = time.perf_counter()
        if self._next is None or self._next < now - MAX_LAG:
            self._next = now
        self._next += self.period
        delay = self._next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class ChatSoak:
    """A running service, its workload and the pace of one soak (the test body's handle)."""

    def __init__(
        self,
        scenario: ChatScenario,
        service: ChatService,
        workload: Workload,
        rate: float,
        memory: MemoryManager | None = None,
    ) -> None:
        self.scenario = scenario
        self.service = service
        self.workload = workload
        self.requests = scenario.requests
        self.rate = rate
        self.memory = memory
        self.pace = Pace(scenario.requests, rate)

    def step(self) -> None:
        """One step of the workload, then wait for this step's slot at the soak's rate."""
        self.workload.step(self.service, self.requests)
        self.pace.wait()


@pytest.fixture
def chat_scenario() -> ChatScenario:  # replaced by the parametrization of the chat marker
    raise pytest.UsageError("the chat fixture needs @pytest.mark.chat(pattern, ...) on the test")


@pytest.fixture(scope="session")
def warm_process(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Serve :data:`PROCESS_WARMUP_SERVICES` throwaway FIXED services before the first soak.

    In a young process RSS keeps ratcheting up under a FIXED service after the service itself
    is flat (new highs of the allocators' footprint): the first chat soak of a run shows a
    staircase of single pages that later ones show far less of. Throwaway services first, and
    the idle control soak of ``test_chat_soak.py`` (the runner's own first-soak warm-up),
    flatten it.
    """
    for lifetime in range(PROCESS_WARMUP_SERVICES):
        workload = Workload(seed=100 + lifetime)
        path = tmp_path_factory.mktemp("warm-process") / "chat.db"
        with ChatService(ChatConfig.fixed(), path, clock=workload.clock) as service:
            for _ in range(PREWARM_STEPS):
                workload.step(service, REQUESTS_PER_STEP)
        measuring.collect()
        trim()


@pytest.fixture
def chat(
    request: pytest.FixtureRequest, chat_scenario: ChatScenario, tmp_path: Path, warm_process: None
) -> Iterator[ChatSoak]:
    scenario = chat_scenario
    rate = scenario.paced_rate(soak_duration(request.node))
    # Start from a settled process: the previous soak's freed memory goes back to the OS first,
    # so this soak's RSS shows its own fill or growth, not a reuse of what was freed.
    measuring.collect()
    trim()
    memory = None
    if scenario.variant == "managed":
        memory = MemoryManager(warning=MANAGED_WARNING, critical=MANAGED_CRITICAL, interval=MANAGED_INTERVAL)
    workload = scenario.make_workload()
    service = ChatService(scenario.config(), tmp_path / "chat.db", clock=workload.clock, memory=memory)
    try:
        for _ in range(scenario.prewarm_steps):
            workload.step(service, scenario.requests)
        if memory is not None:
            memory.start()
        yield ChatSoak(scenario, service, workload, rate, memory)
    finally:
        if memory is not None:
            memory.stop()
        service.close()
        measuring.collect()
        trim()
    if memory is not None:
        check_managed(memory)


def check_managed(memory: MemoryManager) -> None:
    """A managed soak only counts if the manager really acted: cleaned up, then refused loads."""
    over = (memory.peak - memory.baseline) / MiB
    assert memory.cleanups > 0, f"the memory manager never ran its cleanup hooks (peak +{over:.1f} MiB)"
    assert memory.rejections > 0, (
        f"the memory manager never refused a load (peak +{over:.1f} MiB over its baseline, critical "
        f"at +{memory.critical / MiB:.0f} MiB): the soak never reached memory pressure"
    )


# -- the chat service behind a real HTTP server, in a process of its own -----------------

HTTP_WARMUP_REQUESTS = 5000  # over HTTP, unpaced, before the soak: the server's RSS settles over its first ~10 s of traffic
READY_TIMEOUT = 60.0  # seconds for the server to pre-warm, listen and answer /health
STOP_TIMEOUT = 10.0  # seconds the server has to exit after SIGTERM at teardown
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ChatServer:
    """A running ``python -m scenarios.chat.server`` and the port the OS gave it."""

    process: subprocess.Popen[str]
    port: int
    log: Path  # the server's stderr


@pytest.fixture
def chat_server(chat_scenario: ChatScenario, tmp_path: Path) -> Iterator[ChatServer]:
    """Start the scenario's service behind aiohttp on a free port, wait until it answers, and
    stop it at teardown: SIGTERM, then a check that it exited and left no process behind."""
    scenario = chat_scenario
    which = ["--fixed"] if scenario.variant == "fixed" else ["--leaks", ",".join(scenario.patterns)]
    log = tmp_path / "server.log"
    args = [sys.executable, "-m", "scenarios.chat.server", "--db", str(tmp_path / "chat.db"), *which]
    args += ["--prewarm", str(scenario.prewarm_steps), "--requests-per-step", str(scenario.requests)]
    args += ["--seed", str(scenario.seed), "--workload", json.dumps(dict(scenario.workload))]
    with open(log, "w") as err:
        process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    children: list[psutil.Process] = []
    try:
        port = _listening_port(process, log)
        _wait_healthy(port, process, log)
        children = psutil.Process(process.pid).children(recursive=True)
        yield ChatServer(process, port, log)
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the chat server (pid {process.pid}) did not exit within {STOP_TIMEOUT:g} s of SIGTERM")
        finally:
            if process.stdout is not None:
                process.stdout.close()
    left = [child.pid for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"the chat server left processes running: {left}"


@pytest.fixture
def chat_server_process(chat_server: ChatServer) -> subprocess.Popen[str]:
    """The server's process: what ``memleak_soak(watch=...)`` samples."""
    return chat_server.process


def _listening_port(process: subprocess.Popen[str], log: Path) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            if line.startswith("listening on "):
                return int(line.split()[-1])
            if not line and process.poll() is not None:
                break
    raise RuntimeError(f"the chat server did not start listening (exit {process.poll()}): {log.read_text()[-2000:]}")


def _wait_healthy(port: int, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            finally:
                connection.close()
        time.sleep(0.05)
    raise RuntimeError(f"the chat server did not answer /health (exit {process.poll()}): {log.read_text()[-2000:]}")


class HttpChat:
    """The soak body's handle on a chat server: steps of real HTTP requests, paced."""

    def __init__(self, server: ChatServer, workload: Workload, requests: int, rate: float) -> None:
        self.server = server
        self.workload = workload
        self.requests = requests
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.pace = Pace(requests, rate)
        self.headers = {"Content-Type": "application/json"}

    def step(self) -> None:
        """``requests`` POSTs of the workload's next messages on one kept-alive connection, then the pace."""
        self.send(self.requests)
        self.pace.wait()

    def send(self, requests: int) -> None:
        """``requests`` POSTs of the workload's next messages, as fast as the server answers."""
        for _ in range(requests):
            request = self.workload.next_request()
            body = json.dumps(
                {"user": request.user, "tenant": request.tenant, "conversation_id": request.conversation_id, "text": request.text}
            )
            self.connection.request("POST", "/message", body=body, headers=self.headers)
            response = self.connection.getresponse()
            response.read()
            if response.status != 200:
                raise AssertionError(f"POST /message answered {response.status}")

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def chat_http(request: pytest.FixtureRequest, chat_scenario: ChatScenario, chat_server: ChatServer) -> Iterator[HttpChat]:
    scenario = chat_scenario
    rate = scenario.paced_rate(soak_duration(request.node))
    workload = scenario.make_workload()
    for _ in range(scenario.prewarm_steps * scenario.requests):  # what the server served before it listened
        workload.next_request()
    client = HttpChat(chat_server, workload, scenario.requests, rate)
    try:
        client.send(HTTP_WARMUP_REQUESTS)
        yield client
    finally:
        client.close()
