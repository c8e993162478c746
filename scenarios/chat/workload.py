"""Pattern 10: a deterministic workload (one seeded ``random.Random``).

A fixed number of user *slots* with Zipf-like activity (slot ``k`` is picked with weight
``1 / k**zipf``). The top ``loyal_users`` slots never churn and keep one conversation going
for ever (the long conversations of seed 001); the others churn (``churn`` per request:
a tail slot gets a brand-new user, who with ``new_tenant_share`` brings a brand-new tenant)
and switch to a new conversation with probability ``switch_conversation``. Message sizes are
log-normal (median ``message_median`` characters, cut at ``max_message``), sliced from a
seeded corpus so every text is a fresh string. Each request advances :attr:`clock` by
``seconds_per_request``: build the service with ``clock=workload.clock``. At the default 5 s
a step of 50 requests is 250 clock seconds, so with the seeds' TTLs (2 h conversations, 30 min
sessions, 5 min tenant configs) a FIXED service fills up within ~30 steps and then stays flat.

The workload's own state is O(users): it does not grow, so it cannot hide or fake a leak.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, fields
from typing import Protocol

from .clock import SimulatedClock

_VOCABULARY = (
    "the model answer context token prompt user reply vector memory session tenant cache "
    "queue batch embed index search chunk stream retry timeout limit budget plan agent tool "
    "call result error warning critical baseline history summary document file code line"
)
_WORDS = _VOCABULARY.split()


class Service(Protocol):
    def handle_message(self, user: str, tenant: str, conversation_id: str, text: str) -> object: ...


@dataclass(frozen=True, slots=True)
class Request:
    user: str
    tenant: str
    conversation_id: str
    text: str


@dataclass
class StepCounts:
    requests: int = 0
    new_users: int = 0
    new_tenants: int = 0
    new_conversations: int = 0
    bytes: int = 0

    def __add__(self, other: StepCounts) -> StepCounts:
        return StepCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class _Slot:
    __slots__ = ("user", "tenant", "conversation")

    def __init__(self, user: str, tenant: str, conversation: str) -> None:
        self.user = user
        self.tenant = tenant
        self.conversation = conversation


class Workload:
    def __init__(
        self,
        seed: int = 0,
        *,
        users: int = 500,
        tenants: int = 20,
        zipf: float = 1.1,
        loyal_users: int = 20,
        churn: float = 0.1,
        new_tenant_share: float = 0.4,
        switch_conversation: float = 0.02,
        message_median: int = 400,
        message_sigma: float = 0.75,
        max_message: int = 4096,
        seconds_per_request: float = 5.0,
        clock: SimulatedClock | None = None,
    ) -> None:
        if users <= 0 or tenants <= 0:
            raise ValueError(f"users and tenants must be > 0, got {users!r}, {tenants!r}")
        if not 0 <= loyal_users < users:
            raise ValueError(f"loyal_users must be in [0, users), got {loyal_users!r}")
        for name, p in (
            ("churn", churn),
            ("new_tenant_share", new_tenant_share),
            ("switch_conversation", switch_conversation),
        ):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if not 0 < message_median <= max_message:
            raise ValueError(
                f"need 0 < message_median <= max_message, got {message_median!r}, {max_message!r}"
            )
        if seconds_per_request < 0:
            raise ValueError(f"seconds_per_request must be >= 0, got {seconds_per_request!r}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock if clock is not None else SimulatedClock()
        self.loyal_users = loyal_users
        self.churn = churn
        self.new_tenant_share = new_tenant_share
        self.switch_conversation = switch_conversation
        self.message_mu = math.log(message_median)
        self.message_sigma = message_sigma
        self.max_message = max_message
        self.seconds_per_request = seconds_per_request
        self._cum_weights = list(itertools.accumulate(1.0 / k**zipf for k in range(1, users + 1)))
        self._ranks = range(users)
        self._corpus = " ".join(self.rng.choice(_WORDS) for _ in range(4 * max_message // 5 + 1024))
        self._user_ids = itertools.count()
        self._tenant_ids = itertools.count(tenants)
        self._conversation_ids = itertools.count()
        self._slots = [
            _Slot(self._new_user(), f"t{self.rng.randrange(tenants)}", self._new_conversation())
            for _ in range(users)
        ]
        self.total = StepCounts()

    @property
    def users(self) -> int:
        return len(self._slots)

    def next_request(self, counts: StepCounts | None = None) -> Request:
        counts = counts if counts is not None else StepCounts()
        rng = self.rng
        if rng.random() < self.churn:
            self._churn(counts)
        (rank,) = rng.choices(self._ranks, cum_weights=self._cum_weights)
        slot = self._slots[rank]
        if rank >= self.loyal_users and rng.random() < self.switch_conversation:
            slot.conversation = self._new_conversation()
            counts.new_conversations += 1
        size = min(
            self.max_message, max(1, int(rng.lognormvariate(self.message_mu, self.message_sigma)))
        )
        start = rng.randrange(len(self._corpus) - size)
        text = self._corpus[start : start + size]
        counts.requests += 1
        counts.bytes += size
        return Request(slot.user, slot.tenant, slot.conversation, text)

    def requests(self, n: int) -> list[Request]:
        return [self.next_request() for _ in range(n)]

    def step(self, service: Service, n_requests: int = 50) -> StepCounts:
        """Drive ``service`` with ``n_requests`` requests, advancing the clock before each."""
        counts = StepCounts()
        for _ in range(n_requests):
            request = self.next_request(counts)
            self.clock.advance(self.seconds_per_request)
            service.handle_message(
                request.user, request.tenant, request.conversation_id, request.text
            )
        self.total = self.total + counts
        return counts

    def _churn(self, counts: StepCounts) -> None:
        rng = self.rng
        slot = self._slots[rng.randrange(self.loyal_users, len(self._slots))]
        if rng.random() < self.new_tenant_share:
            slot.tenant = f"t{next(self._tenant_ids)}"
            counts.new_tenants += 1
        else:  # join a tenant some current user belongs to (bounded state: no tenant list)
            slot.tenant = self._slots[rng.randrange(len(self._slots))].tenant
        slot.user = self._new_user()
        slot.conversation = self._new_conversation()
        counts.new_users += 1
        counts.new_conversations += 1

    def _new_user(self) -> str:
        return f"u{next(self._user_ids)}"

    def _new_conversation(self) -> str:
        return f"c{next(self._conversation_ids)}"
