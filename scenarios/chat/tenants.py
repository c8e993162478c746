"""Pattern 4: the tenant config cache (seed 002's ``TenantConfigCache``).

LEAKY: ``ttl=None``: a config, once loaded, stays forever, so every tenant ever seen costs
its ~2-5 KB config until the process dies. FIXED: entries expire after ``ttl`` (5 min in
seed 002): an expired entry is reloaded on access and removed by :meth:`sweep`;
:meth:`invalidate` drops one at once.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

_PROMPT = (
    "You are the assistant of {name}. Answer politely and concisely, cite the knowledge base "
    "when you use it, never reveal internal identifiers, escalate billing questions to a human, "
    "and keep answers under the plan's token budget. "
)
PROMPT_REPEAT = 12  # ~3 KB of system prompt per tenant: seed 002's "each tenant config ~2-5KB"


@dataclass(frozen=True, slots=True)
class TenantConfig:
    tenant: str
    name: str
    plan: str
    model: str
    system_prompt: str
    max_tokens: int
    loaded_at: float


def load_tenant_config(conn: sqlite3.Connection, tenant: str, now: float) -> TenantConfig:
    """Read a tenant's row and build its (deliberately few-KB) config object."""
    row = conn.execute("SELECT name, plan FROM tenants WHERE id = ?", (tenant,)).fetchone()
    name, plan = row if row is not None else (tenant.title(), "free")
    return TenantConfig(
        tenant=tenant,
        name=name,
        plan=plan,
        model="small" if plan == "free" else "large",
        system_prompt=_PROMPT.format(name=name) * PROMPT_REPEAT,
        max_tokens=2000,  # seed 002: max tokens 2000
        loaded_at=now,
    )


class TenantConfigCache:
    def __init__(self, loader: Callable[[str, float], TenantConfig], *, ttl: float | None) -> None:
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds or None, got {ttl!r}")
        self.ttl = ttl
        self._loader = loader
        self._lock = threading.RLock()
        self._entries: dict[str, TenantConfig] = {}
        self.loads = 0
        self.hits = 0

    def get(self, tenant: str, now: float) -> TenantConfig:
        with self._lock:
            entry = self._entries.get(tenant)
            if entry is not None and not self._expired(entry, now):
                self.hits += 1
                return entry
            entry = self._entries[tenant] = self._loader(tenant, now)
            self.loads += 1
            return entry

    def invalidate(self, tenant: str) -> bool:
        with self._lock:
            return self._entries.pop(tenant, None) is not None

    def sweep(self, now: float) -> int:
        """Remove expired entries; 0 when entries never expire (leaky)."""
        if self.ttl is None:
            return 0
        with self._lock:
            expired = [t for t, e in self._entries.items() if self._expired(e, now)]
            for tenant in expired:
                del self._entries[tenant]
            return len(expired)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._entries

    def _expired(self, entry: TenantConfig, now: float) -> bool:
        return self.ttl is not None and now - entry.loaded_at >= self.ttl
