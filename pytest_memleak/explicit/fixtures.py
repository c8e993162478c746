"""Fixtures of pytest-memleak: ``mem_snapshot``, ``mem_compare``, ``mem_allocate``, ``mem_cleanup``.

Explicit memory checks inside a test: take a baseline, drive a workload, compare, and
assert a budget; or allocate memory on purpose (Python or native) and release it::

    def test_chat_does_not_keep_messages(mem_snapshot, mem_compare, service):
        baseline = mem_snapshot()
        for message in messages(1000):
            service.handle(message)
        mem_compare(baseline).assert_within(retained="2 MiB", per_site="256 KiB",
                                            objects={"Conversation": 0})

The first ``mem_snapshot()`` of a test starts tracemalloc (16 frames) unless it is already
tracing or the call says ``mem_snapshot(trace=False)``; tracing the fixture started stops at
teardown. Whatever ``mem_allocate`` made in the test and still holds is freed at teardown.

This module stays cheap to import: :mod:`pytest_memleak.explicit.snapshots` is imported by the
fixtures when a test first uses one.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_memleak.explicit.snapshots import Diff, Holder, Recovered, Snapshot, _Allocation

TRACE_FRAMES = 16


class _State:
    """One test's use of the fixtures: tracing it owns, what it allocated, its classifier."""

    def __init__(self, rootdir: str) -> None:
        self.rootdir = rootdir
        self.trace_decided = False
        self.owns_tracing = False
        self.allocations: list[tuple[Holder, _Allocation]] = []

    def snapshot(self, trace: bool | None, label: str) -> Snapshot:
        from pytest_memleak.explicit import snapshots

        if trace is not None and not isinstance(trace, bool):
            raise TypeError(f"trace must be True, False or None, got {trace!r}")
        if not self.trace_decided or trace:
            self.trace_decided = True
            if trace is not False and not tracemalloc.is_tracing():
                snapshots.prepare()  # imports and first calls outside the traced window
                tracemalloc.start(TRACE_FRAMES)
                self.owns_tracing = True
        return snapshots.snapshot(label)

    def compare(self, baseline: Snapshot, current: Snapshot | None) -> Diff:
        from pytest_memleak.explicit import snapshots

        return snapshots.compare(baseline, current, rootdir=self.rootdir)

    def allocate(self, size: Any, holder: Holder | None, kind: Any) -> Holder:
        from pytest_memleak.explicit import snapshots

        snapshots._check_holder(holder)
        item = snapshots._new_allocation(size, kind)
        if holder is None:
            holder = snapshots.Holder()
        holder._add(item)
        self.allocations.append((holder, item))
        return holder

    def cleanup(self, holder: Holder | None) -> Recovered:
        from pytest_memleak.explicit import snapshots

        snapshots._check_holder(holder)
        if holder is None:
            mine, self.allocations = self.allocations, []
            items = [item for _, item in mine]
            for owner, item in mine:
                owner._take([item])
        else:
            items = holder._take()
            taken = {id(i) for i in items}
            self.allocations = [(h, i) for h, i in self.allocations if id(i) not in taken]
        return snapshots._release(items)

    def close(self) -> None:
        try:
            if self.allocations:
                self.cleanup(None)
        finally:
            if self.owns_tracing and tracemalloc.is_tracing():
                tracemalloc.stop()
            self.owns_tracing = False


@pytest.fixture
def _memleak_fixture_state(request: pytest.FixtureRequest) -> Iterator[_State]:
    state = _State(os.fspath(request.config.rootpath))
    yield state
    state.close()


@pytest.fixture
def mem_snapshot(_memleak_fixture_state: _State) -> Callable[..., Snapshot]:
    """mem_snapshot(trace=None, label="") -> Snapshot: collect garbage and record memory.

    An immutable pytest_memleak.Snapshot: time, Python heap bytes and blocks, RSS, USS, gc
    object counts by type, threads, open descriptors and a tracemalloc snapshot. The first
    call starts tracemalloc (16 frames) for the rest of the test unless it is already
    tracing or the call passes trace=False; tracing the fixture started stops at teardown.
    """

    def take(trace: bool | None = None, label: str = "") -> Snapshot:
        return _memleak_fixture_state.snapshot(trace, label)

    return take


@pytest.fixture
def mem_compare(_memleak_fixture_state: _State) -> Callable[..., Diff]:
    """mem_compare(baseline, current=None) -> Diff: what changed since baseline.

    current defaults to a snapshot taken now. Diff has every delta, the allocation sites
    that grew (file:line, bytes, blocks; the project's own code first), grown_types, and
    assert_within(retained=, per_site=, objects=, rss=, fds=, threads=).
    """

    def diff(baseline: Snapshot, current: Snapshot | None = None) -> Diff:
        return _memleak_fixture_state.compare(baseline, current)

    return diff


@pytest.fixture
def mem_allocate(_memleak_fixture_state: _State) -> Callable[..., Holder]:
    """mem_allocate(size, holder=None, kind="python") -> Holder: allocate and touch memory.

    size: bytes or "64 MiB". kind="python": a bytearray (seen by tracemalloc);
    kind="native": C malloc memory (seen by RSS only). Every page is written, so RSS shows
    it at once. Kept in holder (a new one when None) until mem_cleanup or teardown.
    """

    def allocate(
        size: int | float | str, holder: Holder | None = None, kind: str = "python"
    ) -> Holder:
        return _memleak_fixture_state.allocate(size, holder, kind)

    return allocate


@pytest.fixture
def mem_cleanup(_memleak_fixture_state: _State) -> Callable[..., Recovered]:
    """mem_cleanup(holder=None) -> Recovered: free, collect garbage, measure what came back.

    Frees what holder keeps (everything mem_allocate made in this test when None), collects
    garbage, trims the C heap and returns Recovered(rss=, heap=, released=) in bytes.
    """

    def cleanup(holder: Holder | None = None) -> Recovered:
        return _memleak_fixture_state.cleanup(holder)

    return cleanup
