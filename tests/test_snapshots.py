"""pytest_memleak.explicit.snapshots used directly, outside the fixtures: snapshot, compare, allocate, cleanup."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

import pytest_memleak
from pytest_memleak.check import measuring
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

MiB = 1024 * 1024
HERE = Path(__file__)


def _line_of(marker: str) -> int:
    for number, line in enumerate(HERE.read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(f"marker {marker} not found")


class Conversation:
    def __init__(self, i: int) -> None:
        self.text = f"message {i:06d} " * 150  # ~2.2 KiB, distinct per instance  # ALLOC-LINE


def make_conversations(n: int) -> list[Conversation]:
    return [Conversation(i) for i in range(n)]


@pytest.fixture
def tracing():
    """Trace with 16 frames for the test (tracemalloc is process-wide: stop it after)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(16)
    yield
    if started:
        tracemalloc.stop()


@pytest.fixture
def rootdir(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.rootpath)


# --------------------------------------------------------------------------------------
# snapshots


def test_untraced_snapshot_records_the_process():
    if tracemalloc.is_tracing():
        pytest.skip("another plugin is tracing")
    snap = snapshot("start")
    assert snap.pid == os.getpid()
    assert snap.rss == pytest.approx(measuring.rss(), rel=0.2)
    assert snap.uss is not None and 0 < snap.uss <= snap.rss
    assert snap.threads == threading.active_count()
    assert snap.fds > 0 and snap.heap_blocks > 1000
    assert snap.heap_bytes is None and snap.trace_snapshot is None and not snap.tracing
    assert snap.objects["dict"] > 100 and snap.object_count >= snap.objects["dict"]
    assert "start" in str(snap) and "untraced" in str(snap)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.rss = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.objects["dict"] = 0  # type: ignore[index]
    assert snapshot().seq > snap.seq


def test_traced_snapshot_carries_a_tracemalloc_snapshot(tracing):
    snap = snapshot()
    assert snap.tracing and snap.frames == 16
    assert isinstance(snap.trace_snapshot, tracemalloc.Snapshot)
    assert snap.heap_bytes is not None and snap.heap_bytes >= 0


def test_consecutive_snapshots_do_not_count_each_other(tracing, rootdir):
    """A snapshot's own data (its traces, its type counts) is not growth."""
    first, second, third = snapshot(), snapshot(), snapshot()
    for diff in (compare(first, second, rootdir=rootdir), compare(second, third, rootdir=rootdir)):
        assert diff.retained is not None and abs(diff.retained) < 4096
        assert abs(diff.heap_bytes or 0) < 16 * 1024
        assert all(n < 50 for n in diff.grown_types.values()), diff.grown_types
        assert diff.objects("Snapshot") == 0


def test_site_totals_match_the_sites_module(tracing, rootdir):
    """snapshots._totals groups by traceback for speed; it must attribute like sites.totals."""
    from pytest_memleak.evidence import sites
    from pytest_memleak.explicit.snapshots import _totals

    kept = make_conversations(300)
    trace = tracemalloc.take_snapshot()
    classifier = sites.Classifier(rootdir)
    fast, reference = _totals(trace, classifier), sites.totals(trace, classifier)
    assert fast.sizes == reference.sizes and fast.counts == reference.counts
    assert set(fast.stacks) == set(reference.stacks)
    assert (f"{HERE}", _line_of("ALLOC-LINE")) in fast.sizes
    del kept


# --------------------------------------------------------------------------------------
# compare


def test_compare_names_the_allocating_line_and_the_type(tracing, rootdir):
    began = time.monotonic()
    baseline = snapshot()
    kept = make_conversations(1000)
    diff = compare(baseline, rootdir=rootdir)
    took = time.monotonic() - began
    line = _line_of("ALLOC-LINE")
    top = diff.sites[0]
    assert top.site == f"tests/test_snapshots.py:{line}"
    assert top.total_blocks >= 1000 and top.total_bytes >= 2 * MiB
    assert top.site in diff.user_sites
    assert diff.retained is not None and diff.retained >= 2 * MiB
    assert diff.heap_bytes is not None and diff.heap_bytes >= diff.retained * 0.9
    assert diff.objects("Conversation") == 1000
    assert diff.objects(f"{Conversation.__module__}.Conversation") == 1000
    assert diff.grown_types[f"{Conversation.__module__}.Conversation"] == 1000
    assert 0 < diff.seconds <= took  # the time between the two snapshots
    summary = str(diff)
    assert "\n" not in summary and "RSS" in summary and f"test_snapshots.py:{line}" in summary
    del kept


def test_user_code_sites_come_first(tracing, rootdir):
    import json

    baseline = snapshot()
    text = [json.dumps({"k": [i, "x" * 200]}) for i in range(3000)]
    kept = [json.loads(t) for t in text]  # allocated in json's decoder, outside the project
    mine = make_conversations(10)
    diff = compare(baseline, rootdir=rootdir)
    assert diff.sites[0].site in diff.user_sites
    ranks = [s.site in diff.user_sites for s in diff.sites]
    assert ranks == sorted(ranks, reverse=True), "a project site after a site outside it"
    del kept, mine


def test_assert_within_fails_with_every_exceeded_budget(tracing, rootdir):
    baseline = snapshot()
    kept = make_conversations(1000)
    diff = compare(baseline, rootdir=rootdir)
    with pytest.raises(AssertionError) as info:
        diff.assert_within(retained="2 MiB", per_site="256 KiB", objects={"Conversation": 0})
    message = str(info.value)
    line = _line_of("ALLOC-LINE")
    assert message.startswith("memory grew beyond its budget")
    assert "retained: +" in message and "budget 2.0 MiB" in message
    assert f"per site: tests/test_snapshots.py:{line} kept +" in message
    assert "objects: Conversation +1000 instances, budget 0" in message
    assert "where it was allocated" in message and "measured: heap +" in message
    diff.assert_within(retained="64 MiB", per_site="32 MiB", objects={"Conversation": 1000}, fds=8)
    del kept


def test_assert_within_passes_when_nothing_stays(tracing, rootdir):
    baseline = snapshot()
    for _ in range(5):
        batch = make_conversations(500)
        del batch
    diff = compare(baseline, rootdir=rootdir)
    assert diff.retained is not None and diff.retained < 64 * 1024
    diff.assert_within(retained="256 KiB", per_site="64 KiB", objects={"Conversation": 0})
    assert diff.objects("Conversation") == 0


def test_threads_and_descriptors_are_compared(tmp_path):
    baseline = snapshot()
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    worker.start()
    handle = open(tmp_path / "held.txt", "w")  # noqa: SIM115 - held open on purpose
    try:
        diff = compare(baseline)
        assert (diff.threads, diff.fds) == (1, 1)
        with pytest.raises(AssertionError, match=r"fds: \+1, budget 0\n  threads: \+1, budget 0"):
            diff.assert_within(threads=0, fds=0)
        diff.assert_within(threads=1, fds=1)
    finally:
        handle.close()
        stop.set()
        worker.join()


def test_untraced_diff_checks_rss_and_refuses_heap_budgets():
    if tracemalloc.is_tracing():
        pytest.skip("another plugin is tracing")
    baseline = snapshot()
    holder = allocate("16 MiB")
    diff = compare(baseline)
    assert not diff.traced and diff.retained is None and diff.sites == []
    assert diff.heap_bytes is None and "untraced" in str(diff)
    with pytest.raises(ValueError, match="retained= needs snapshots taken while tracemalloc"):
        diff.assert_within(retained="1 MiB")
    with pytest.raises(ValueError, match="per_site= needs allocation sites"):
        diff.assert_within(per_site="1 MiB")
    with pytest.raises(AssertionError, match=r"rss: \+1\d\.\d MiB, budget 1.0 MiB") as info:
        diff.assert_within(rss="1 MiB")
    assert "not traced by tracemalloc" in str(info.value)
    diff.assert_within(rss="64 MiB")
    cleanup(holder)


@pytest.mark.parametrize(
    ("budgets", "match"),
    [
        ({}, "needs at least one budget"),
        ({"rss": "two MiB"}, r"rss: 'two MiB' is not a size; expected a size such as"),
        ({"rss": -5}, r"not a non-negative size; expected a size such as"),
        (
            {"objects": {"Conversation": -1}},
            r"objects\['Conversation'\] must be a whole number >= 0",
        ),
        ({"objects": ["Conversation"]}, "objects must map type names to counts"),
        ({"threads": 1.5}, "threads must be a whole number"),
    ],
)
def test_assert_within_rejects_bad_budgets(budgets, match):
    diff = compare(snapshot())
    with pytest.raises(ValueError, match=match):
        diff.assert_within(**budgets)


def test_compare_in_the_wrong_order_is_an_error():
    earlier, later = snapshot(), snapshot()
    with pytest.raises(
        ValueError, match=r"baseline was taken after current .*call compare\(baseline, current\)"
    ):
        compare(later, earlier)
    assert isinstance(compare(earlier, later), Diff)
    assert compare(earlier, earlier).rss == 0


def test_compare_needs_snapshots():
    with pytest.raises(TypeError, match="baseline must be a Snapshot"):
        compare("yesterday")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="current must be a Snapshot"):
        compare(snapshot(), {"rss": 1})  # type: ignore[arg-type]


def test_a_baseline_from_another_process_is_an_error():
    code = (
        "import pickle, sys; from pytest_memleak import snapshot;"
        " sys.stdout.buffer.write(pickle.dumps(snapshot()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    foreign = pickle.loads(out)
    assert isinstance(foreign, Snapshot) and foreign.pid != os.getpid()
    with pytest.raises(ValueError, match=r"baseline was taken in another process: pid \d+"):
        compare(foreign)
    local = snapshot()
    recycled = dataclasses.replace(local, started=local.started - 3600, seq=0)
    with pytest.raises(ValueError, match="a different process with the same pid"):
        compare(recycled, local)


def test_pickled_snapshot_drops_its_traces_but_still_compares(tracing, rootdir):
    baseline = snapshot("before")
    restored = pickle.loads(pickle.dumps(baseline))
    assert restored.trace_snapshot is None and baseline.trace_snapshot is not None
    assert (restored.seq, restored.rss, restored.heap_bytes, restored.label) == (
        baseline.seq,
        baseline.rss,
        baseline.heap_bytes,
        "before",
    )
    assert dict(restored.objects) == dict(baseline.objects)
    kept = make_conversations(1000)
    diff = compare(restored, rootdir=rootdir)
    assert diff.sites == [] and diff.retained is None and diff.heap_bytes is not None
    with pytest.raises(AssertionError, match=r"totals only"):
        diff.assert_within(retained="1 MiB")  # falls back on the traced heap totals
    del kept


# --------------------------------------------------------------------------------------
# allocate / cleanup


@pytest.mark.parametrize("kind", ["python", "native"])
def test_allocation_shows_in_rss_and_cleanup_gives_it_back(kind):
    before = measuring.rss()
    holder = allocate("64 MiB", kind=kind)
    grown = measuring.rss() - before
    assert abs(grown - 64 * MiB) <= 0.1 * 64 * MiB, f"RSS grew {grown / MiB:.1f} MiB"
    assert holder.nbytes == 64 * MiB and holder.allocations == 1
    assert (holder.python_bytes, holder.native_bytes) == (
        (64 * MiB, 0) if kind == "python" else (0, 64 * MiB)
    )
    assert "64.0 MiB" in repr(holder)
    recovered = cleanup(holder)
    assert isinstance(recovered, Recovered)
    assert recovered.released == 64 * MiB
    assert recovered.rss >= 0.9 * 64 * MiB, str(recovered)
    assert holder.nbytes == 0 and holder.allocations == 0
    assert cleanup(holder).released == 0  # nothing left: a second cleanup frees nothing


def test_native_memory_is_invisible_to_tracemalloc(tracing):
    traced = tracemalloc.get_traced_memory()[0]
    native = allocate("32 MiB", kind="native")
    assert tracemalloc.get_traced_memory()[0] - traced < MiB
    python = allocate("32 MiB", kind="python")
    assert tracemalloc.get_traced_memory()[0] - traced >= 32 * MiB
    recovered = cleanup(python)
    assert recovered.heap_measured and recovered.heap >= 0.99 * 32 * MiB
    cleanup(native)


def test_python_allocations_are_charged_to_the_caller(tracing, rootdir):
    baseline = snapshot()
    holder = allocate("8 MiB")  # CALLER-LINE
    diff = compare(baseline, rootdir=rootdir)
    assert diff.sites[0].site == f"tests/test_snapshots.py:{_line_of('CALLER-LINE')}"
    assert diff.sites[0].total_bytes >= 8 * MiB and diff.retained >= 0.99 * 8 * MiB
    cleanup(holder)


def test_several_allocations_in_one_holder():
    holder = Holder("cache")
    assert allocate(MiB, holder) is holder
    assert allocate("1.5 MiB", holder, kind="native") is holder
    assert allocate(0, holder) is holder
    assert holder.nbytes == MiB + MiB * 3 // 2 and "cache" in repr(holder)
    assert cleanup(holder).released == MiB + MiB * 3 // 2


def test_dropping_a_holder_frees_native_memory():
    holder = allocate("64 MiB", kind="native")
    held = measuring.rss()
    del holder
    measuring.collect()
    assert held - measuring.rss() >= 0.9 * 64 * MiB


def test_cleanup_without_a_holder_frees_every_holder():
    a, b = allocate(MiB), allocate(MiB, kind="native")
    recovered = cleanup()
    assert recovered.released >= 2 * MiB
    assert a.nbytes == b.nbytes == 0


@pytest.mark.parametrize(
    ("size", "match"),
    [
        (-1, "not a non-negative size"),
        ("-1 MiB", "is not a size"),
        ("lots", "is not a size"),
        ("3 parsecs", "unknown unit"),
        (True, "is not a size"),
        (None, "is not a size"),
        (float("nan"), "not a non-negative size"),
    ],
)
def test_allocate_rejects_bad_sizes(size, match):
    with pytest.raises(ValueError, match=match) as info:
        allocate(size)
    assert "expected a size such as 0, '512 B', '1.5 KiB'" in str(info.value)


def test_allocate_rejects_bad_kinds_and_holders():
    with pytest.raises(ValueError, match="kind must be 'python' or 'native', got 'gpu'"):
        allocate(MiB, kind="gpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="holder must be a Holder"):
        allocate(MiB, holder=[])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="holder must be a Holder"):
        cleanup("everything")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# the package


def test_public_names_are_exported_lazily():
    code = (
        "import sys, pytest_memleak, pytest_memleak.explicit.fixtures\n"
        "assert 'pytest_memleak.explicit.snapshots' not in sys.modules, 'snapshots imported eagerly'\n"
        "assert 'psutil' not in sys.modules and 'ctypes' not in sys.modules, 'heavy import'\n"
        "from pytest_memleak import snapshot, compare, allocate, cleanup, Snapshot, Diff, Holder\n"
        "from pytest_memleak import parse_size, format_size, Recovered\n"
        "assert 'pytest_memleak.explicit.snapshots' in sys.modules\n"
        "assert parse_size('2 MiB') == 2097152 and format_size(2097152) == '2.0 MiB'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert pytest_memleak.snapshot is snapshot and pytest_memleak.Diff is Diff
    assert {"snapshot", "compare", "allocate", "cleanup", "Holder"} <= set(dir(pytest_memleak))
    with pytest.raises(AttributeError, match="no attribute 'snapshots_of_everything'"):
        pytest_memleak.snapshots_of_everything  # noqa: B018
