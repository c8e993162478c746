"""Resources a test leaves behind: snapshots, the grace period, and descriptions of each kind."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from pytest_memleak.evidence import resources
from pytest_memleak.evidence.resources import ResourceSnapshot, diff

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")


# -- threads --------------------------------------------------------------------------------


def _park(event: threading.Event) -> None:
    event.wait(30)


def test_a_thread_left_running_is_described_with_name_target_and_stack():
    before = ResourceSnapshot.take()
    stop = threading.Event()
    t = threading.Thread(target=_park, args=(stop,), name="poller-7", daemon=True)
    t.start()
    try:
        found = diff(before, grace=0.05)
        assert found.counts()["threads"] == 1
        (line,) = found.describe("threads")
        assert "thread 'poller-7' (daemon)" in line
        assert "running tests.test_resources._park" in line or "running test_resources._park" in line
        assert re.search(r"test_resources\.py:\d+ in _park", line), line  # the current stack
        assert found.waited >= 0.04  # it waited for the thread before calling it leaked
    finally:
        stop.set()
        t.join()
    assert diff(before, grace=0).counts()["threads"] == 0


def test_a_joined_thread_passes_without_waiting():
    before = ResourceSnapshot.take()
    t = threading.Thread(target=time.sleep, args=(0.001,))
    t.start()
    t.join()
    found = diff(before, grace=30.0)
    assert found.counts() == {"fds": 0, "threads": 0, "processes": 0, "tasks": 0}
    assert found.waited < 30.0  # it did not wait out the grace (that would take 30 s on any machine)


def test_a_finishing_thread_gets_its_grace_period():
    before = ResourceSnapshot.take()
    threading.Thread(target=time.sleep, args=(0.15,)).start()
    found = diff(before, grace=30.0)
    assert found.counts()["threads"] == 0
    assert 0.1 <= found.waited < 30.0  # waited for the thread to end, and no longer


def test_grace_ends_for_a_thread_that_does_not_finish(monkeypatch: pytest.MonkeyPatch):
    before = ResourceSnapshot.take()
    stop = threading.Event()
    t = threading.Thread(target=_park, args=(stop,), daemon=True)
    t.start()
    try:
        started = time.monotonic()
        waited = resources.settle(before, grace=0.2)
        assert 0.19 <= waited <= time.monotonic() - started + 0.01
        naps: list[float] = []
        real_sleep = time.sleep
        monkeypatch.setattr(resources.time, "sleep", lambda s: naps.append(s) or real_sleep(s))
        resources.settle(before, grace=0)
        assert naps == []  # no grace: one look, no waiting
    finally:
        stop.set()
        t.join()


def test_alike_threads_are_grouped():
    before = ResourceSnapshot.take()
    stop = threading.Event()
    threads = [threading.Thread(target=_park, args=(stop,), name=f"worker-{i}", daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    try:
        lines = diff(before, grace=0).describe("threads")
        assert len(lines) == 1
        assert lines[0].startswith("3 × thread 'worker-0', 'worker-1', 'worker-2' (daemon)")
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_a_snapshot_keeps_no_thread_alive():
    t = threading.Thread(target=time.sleep, args=(0.01,))
    t.start()
    snap = ResourceSnapshot.take()
    ref = weakref.ref(t)
    t.join()
    del t
    gc.collect()
    assert ref() is None
    assert len(snap.threads) >= 1  # the main thread at least


# -- descriptors --------------------------------------------------------------------------


@linux
def test_an_open_file_is_described_with_path_mode_and_owner(tmp_path: Path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    before = ResourceSnapshot.take()
    with open(path) as f:
        found = diff(before, grace=0)
        assert found.counts()["fds"] == 1
        (line,) = found.describe("fds")
        assert f"fd {f.fileno()} -> {path} (read)" in line
        assert "held by <_io.TextIOWrapper" in line
    assert diff(before, grace=0).counts()["fds"] == 0  # a closed file passes


@linux
def test_a_pipe_and_a_socket_say_what_they_are():
    before = ResourceSnapshot.take()
    r, w = os.pipe()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        lines = diff(before, grace=0).describe("fds")
        text = "\n".join(lines)
        assert re.search(rf"2 × fd ({r}, {w}|{w}, {r}) -> pipe \[\d+\], no Python object owns it", text), text
        port = s.getsockname()[1]
        assert f"INET/STREAM socket 127.0.0.1:{port} (LISTEN), held by <socket.socket" in text, text
    finally:
        os.close(r)
        os.close(w)
        s.close()


# -- processes ----------------------------------------------------------------------------


@linux
def test_a_child_process_is_described_with_its_command_line():
    before = ResourceSnapshot.take()
    p = subprocess.Popen(["sleep", "30"])
    try:
        found = diff(before, grace=0.05)
        assert found.counts()["processes"] == 1
        (line,) = found.describe("processes")
        assert line == f"child process pid {p.pid}: 'sleep 30' (sleeping)"
        assert resources.count_children() >= 1
    finally:
        p.kill()
        p.wait()
    assert diff(before, grace=0).counts()["processes"] == 0


@linux
def test_a_process_never_waited_for_is_a_zombie():
    before = ResourceSnapshot.take()
    p = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "zombie" not in str(resources._children().values()):
        time.sleep(0.01)
    try:
        (line,) = diff(before, grace=0.5).describe("processes")
        assert "(zombie: exited but never waited for)" in line
    finally:
        p.wait()


# -- asyncio tasks ------------------------------------------------------------------------


async def _sleeper() -> None:
    await asyncio.sleep(3600)


async def _start(keep: list[asyncio.Task[None]]) -> None:
    keep.append(asyncio.ensure_future(_sleeper()))


def test_a_pending_task_is_described_with_coroutine_and_creation_site():
    loop = asyncio.new_event_loop()
    keep: list[asyncio.Task[None]] = []
    before = ResourceSnapshot.take()
    try:
        with resources.track_task_origins():
            loop.run_until_complete(_start(keep))
        found = diff(before, grace=0)
        assert found.counts()["tasks"] == 1
        (line,) = found.describe("tasks")
        assert "coroutine tests.test_resources._sleeper()" in line or "coroutine test_resources._sleeper()" in line
        assert re.search(r"suspended at \S*test_resources\.py:\d+ awaiting asyncio\.tasks\.sleep\(\)", line), line
        assert re.search(r"created at \S*test_resources\.py:\d+ in _start", line), line
        assert "its event loop is not running" in line
        assert resources.count_pending_tasks() >= 1
    finally:
        keep[0].cancel()
        loop.run_until_complete(asyncio.gather(*keep, return_exceptions=True))
        loop.close()
    assert diff(before, grace=0).counts()["tasks"] == 0  # a finished task passes


def test_without_origin_tracking_the_creation_site_is_unknown_or_from_debug_mode():
    loop = asyncio.new_event_loop()
    keep: list[asyncio.Task[None]] = []
    before = ResourceSnapshot.take()
    try:
        loop.run_until_complete(_start(keep))
        (line,) = diff(before, grace=0).describe("tasks")
        assert "created at unknown (turn on asyncio debug mode" in line
        loop.set_debug(True)  # asyncio's own record of the creation site
        loop.run_until_complete(_start(keep))
        lines = diff(before, grace=0).describe("tasks")
        assert any(re.search(r"created at \S*test_resources\.py:\d+ in _start", x) for x in lines), lines
    finally:
        for task in keep:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*keep, return_exceptions=True))
        loop.close()


def test_a_task_on_a_closed_loop_will_never_finish():
    loop = asyncio.new_event_loop()
    keep: list[asyncio.Task[None]] = []
    before = ResourceSnapshot.take()
    loop.run_until_complete(_start(keep))
    loop.close()
    try:
        (line,) = diff(before, grace=0).describe("tasks")
        assert "its event loop is closed: it will never finish" in line
    finally:
        keep.clear()
        gc.collect()


# -- the diff itself ----------------------------------------------------------------------


def test_counts_and_kinds():
    before = ResourceSnapshot.take()
    found = diff(before, grace=0)
    assert not found
    assert found.lines() == []
    assert set(before.counts()) == set(resources.KINDS)
    assert before.counts()["threads"] >= 1
    with pytest.raises(ValueError, match="unknown resource kind 'sockets'"):
        found.describe("sockets")


def test_describe_caps_the_groups():
    found = resources.ResourceDiff(fds=[resources.FdInfo(i, f"/tmp/f{i}") for i in range(8)])
    lines = found.describe("fds", limit=3)
    assert len(lines) == 4
    assert lines[-1] == "... and 5 more in 5 other group(s)"


# -- end to end with --memleak: one pytest subprocess, each test reads its section -----------

E2E_SOURCE = '''
import asyncio, threading, time

STOP = threading.Event()
FILES = []
TASKS = []
LOOP = asyncio.new_event_loop()

def test_thread_leak():
    threading.Thread(target=STOP.wait, name="poller", daemon=True).start()

def test_fd_leak():
    FILES.append(open(__file__))

async def worker():
    await asyncio.sleep(3600)

async def start():
    TASKS.append(asyncio.ensure_future(worker()))

def test_task_leak():
    LOOP.run_until_complete(start())

def test_joined_thread():
    t = threading.Thread(target=time.sleep, args=(0.001,))
    t.start()
    t.join()

def test_closed_file():
    with open(__file__) as f:
        f.read()
'''

FAST = (
    "--memleak",
    "-p",
    "no:cacheprovider",
    "--memleak-flamegraph=none",
    "--memleak-confirm-runs=12",
    "--memleak-confirm-seconds=0.01",  # one confirmation window: enough for a steady leak
)


def run_pytest(directory: Path, source: str, *args: str) -> str:
    (directory / "test_e2e.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rN", *args, "test_e2e.py"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


def section(out: str, test: str) -> str:
    match = re.search(rf"_+ {re.escape(test)} _+\n(.*?)(?=\n_{{3,}} \w|\n={{3,}} )", out, re.S)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> str:
    return run_pytest(tmp_path_factory.mktemp("resources_e2e"), E2E_SOURCE, *FAST)


def test_a_leaked_thread_is_caught(e2e: str):
    out = section(e2e, "test_thread_leak")
    assert re.search(r"live threads grew by \d+ over \d+ runs \(\+1\.00/run, allowed 0/run\)", out), e2e


@linux
def test_a_leaked_descriptor_is_caught(e2e: str):
    out = section(e2e, "test_fd_leak")
    assert re.search(r"open file descriptors grew by \d+ over \d+ runs \(\+1\.00/run", out), e2e


def test_joined_threads_and_closed_files_pass(e2e: str):
    assert "LEAK test_e2e.py::test_joined_thread" not in e2e
    assert "LEAK test_e2e.py::test_closed_file" not in e2e
    assert re.search(r"\d+ checked: 3 leaking, 2 clean", e2e), e2e
    assert "3 failed, 2 passed" in e2e


def test_a_leaked_thread_is_described(e2e: str):
    out = section(e2e, "test_thread_leak")
    assert re.search(r"\d+ × thread 'poller' \(daemon\) running threading\.Event\.wait, now at threading\.py:\d+ in wait", out), out


def test_a_leaked_descriptor_is_described(e2e: str):
    out = section(e2e, "test_fd_leak")
    assert re.search(r"\d+ × fd [\d, .]+.* -> \S+test_e2e\.py \(read\), held by <_io\.TextIOWrapper", out), out


def test_a_pending_task_is_caught_and_described(e2e: str):
    out = section(e2e, "test_task_leak")
    assert re.search(r"tasks? .*grew by \d+", out), out
    assert re.search(r"pending task .*coroutine test_e2e\.worker\(\), suspended at test_e2e\.py:\d+", out), out
    assert re.search(r"created at test_e2e\.py:\d+ in start", out), out
