"""Counters a project adds to the check: connections in a pool, a client's open sockets, rows
in a table, GPU memory. Each is read with the plugin's own exact counts (descriptors, threads)
and judged by the same rule against its budget per run.

A conftest adds them with the ``pytest_memleak_counters`` hook, for the tests under it::

    from pytest_memleak import Counter

    def pytest_memleak_counters(config):
        return [Counter("pool connections", lambda: POOL.open, budget=0)]

When PyTorch is imported and CUDA is available, each device's allocated memory
(``torch.cuda.memory_allocated``) is a built-in counter, as in PyTorch's own
``CudaMemoryLeakCheck``; elsewhere there is none.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pytest

# the plugin's own metrics and finding kinds: a counter of that name would be taken for one
RESERVED = frozenset({"blocks", "heap", "rss", "fds", "threads", "processes", "tasks", "site", "native", "objects", "watch", "peak"})
HOOK = "pytest_memleak_counters"


@dataclass(frozen=True)
class Counter:
    """A count the check reads before and after runs of a test (``read``: a number, any cost
    that a test's run can bear a few times over). Growth of more than ``budget`` per run that
    persists is a leak, reported by ``name``; ``unit`` is ``"B"`` for bytes, ``""`` for counts."""

    name: str
    read: Callable[[], float]
    budget: float = 0.0
    unit: Literal["", "B"] = ""


class CounterSpecs:
    @pytest.hookspec
    def pytest_memleak_counters(self, config: pytest.Config) -> Iterable[Counter] | None:
        """Counters to check for the tests under this conftest (``pytest_memleak.Counter``); the
        results of every conftest and plugin that implements it are combined."""


def problem(counter: Any, where: str) -> str | None:
    """What is wrong with what a ``pytest_memleak_counters`` returned, or None."""
    if not isinstance(counter, Counter):
        return f"{where} returned {counter!r}: expected pytest_memleak.Counter(name, read, budget=0, unit='')"
    if not isinstance(counter.name, str) or not counter.name.strip() or counter.name in RESERVED:
        return f"{where} returned a Counter named {counter.name!r}: expected a name of its own (not one of {', '.join(sorted(RESERVED))})"
    if not callable(counter.read):
        return f"{where} returned the Counter {counter.name!r} with read={counter.read!r}: expected a function of no arguments"
    budget = counter.budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
        return f"{where} returned the Counter {counter.name!r} with budget={budget!r}: expected a number of 0 or more per run"
    if counter.unit not in ("", "B"):
        return f"{where} returned the Counter {counter.name!r} with unit={counter.unit!r}: expected 'B' (bytes) or '' (a count)"
    return None


def for_item(item: pytest.Item) -> tuple[Counter, ...]:
    """The counters for ``item``: its conftests' and plugins' (the hook seen from its directory),
    then the built-in ones. Raises UsageError for anything but Counters, or one name twice."""
    found: list[Counter] = []
    for returned in item.ihook.pytest_memleak_counters(config=item.config):
        if isinstance(returned, Counter):
            returned = [returned]
        elif isinstance(returned, (str, bytes)) or not isinstance(returned, Iterable):
            raise pytest.UsageError(
                f"the hook {HOOK} (for {item.nodeid}) returned {returned!r}: expected a list of pytest_memleak.Counter"
            )
        for counter in returned:
            why = problem(counter, f"the hook {HOOK} (for {item.nodeid})")
            if why is not None:
                raise pytest.UsageError(why)
            found.append(counter)
    found.extend(builtin())
    names = [c.name for c in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise pytest.UsageError(f"the hook {HOOK} (for {item.nodeid}) returned more than one Counter named {', '.join(map(repr, twice))}")
    return tuple(found)


def builtin() -> Sequence[Counter]:
    """GPU memory allocated on each CUDA device, when the suite has imported PyTorch and CUDA is
    available (PyTorch is never imported here)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_available():
            return ()
        devices = int(cuda.device_count())
        read = cuda.memory_allocated
    except Exception:  # a broken or partial install: no GPU counter
        return ()
    return tuple(Counter(f"cuda:{i} allocated", functools.partial(read, i), unit="B") for i in range(devices))


def read(counter: Counter, errors: dict[str, str]) -> float:
    """The counter's value; NaN, which no rule takes for growth, when it fails (said once in ``errors``)."""
    try:
        value = float(counter.read())
    except Exception as exc:
        errors.setdefault(counter.name, f"the counter {counter.name!r} failed: {type(exc).__name__}: {exc}")
        return math.nan
    if not math.isfinite(value):
        errors.setdefault(counter.name, f"the counter {counter.name!r} read {value!r}, not a finite number")
        return math.nan
    return value
