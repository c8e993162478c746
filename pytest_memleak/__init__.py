"""pytest-memleak: turn memory and resource leaks into failing tests.

The explicit-check API is importable from here and loaded on first use, so
``import pytest_memleak`` stays cheap::

    from pytest_memleak import allocate, cleanup, compare, snapshot
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pytest_memleak.check.counters import Counter
    from pytest_memleak.config.units import format_size, parse_size
    from pytest_memleak.explicit.snapshots import (
        Diff,
        Holder,
        Recovered,
        Snapshot,
        allocate,
        cleanup,
        compare,
        snapshot,
    )

_LAZY = {
    "Counter": "check.counters",
    "snapshot": "explicit.snapshots",
    "compare": "explicit.snapshots",
    "allocate": "explicit.snapshots",
    "cleanup": "explicit.snapshots",
    "Snapshot": "explicit.snapshots",
    "Diff": "explicit.snapshots",
    "Holder": "explicit.snapshots",
    "Recovered": "explicit.snapshots",
    "parse_size": "config.units",
    "format_size": "config.units",
}

__all__ = [
    "Counter",
    "Diff",
    "Holder",
    "Recovered",
    "Snapshot",
    "__version__",
    "allocate",
    "cleanup",
    "compare",
    "format_size",
    "parse_size",
    "snapshot",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
