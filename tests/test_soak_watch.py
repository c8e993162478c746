"""Soaks that watch another process (``memleak_soak(watch=...)``), and soaks on a busy machine.

Every watched process here is real: a Python child started by a fixture, which allocates,
spawns a child of its own, exits or is killed. The busy machine is real too: busy loops in
processes of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_memleak.probe import contention as contention_mod
from pytest_memleak.probe.contention import Contention
from pytest_memleak.results import INCONCLUSIVE, LEAK, SoakResult
from pytest_memleak.soak import run as soak
from tests.test_soak import reports, run

# A service stand-in: it grows by ``rate`` bytes a second (written, so resident) until it is
# killed, or exits as told.
SERVICE = r'''
import os, signal, sys, time

rate, exit_after, how = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
kept = []
start = time.monotonic()
print("ready", flush=True)
while True:
    kept.append(b"x" * int(rate / 50))  # the leaking line
    time.sleep(0.02)
    if exit_after and time.monotonic() - start > exit_after:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(3)
'''

# The fixtures of the inner suites: a service per test, stopped at teardown.
FIXTURES = '''
import os, subprocess, sys, time
import psutil
import pytest

SERVICE = os.path.join(os.path.dirname(__file__), "service.py")


def start(rate=0, exit_after=0, how="exit"):
    process = subprocess.Popen([sys.executable, SERVICE, str(rate), str(exit_after), how], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def stop(process):
    if process.poll() is None:
        process.kill()
    process.wait()
    process.stdout.close()


@pytest.fixture
def leaking():
    process = start(rate=4 * 1024**2)
    yield process
    stop(process)


@pytest.fixture
def flat_pid():
    process = start()
    yield process.pid
    stop(process)


@pytest.fixture
def flat_psutil():
    process = start()
    yield psutil.Process(process.pid)
    stop(process)


@pytest.fixture
def exiting():
    process = start(exit_after=1.0)
    yield process
    stop(process)


@pytest.fixture
def killed():
    process = start(exit_after=1.0, how="kill")
    yield process
    stop(process)


@pytest.fixture
def parent():
    """A process whose child holds 48 MiB: the tree's RSS counts both."""
    code = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(48 * 1024**2); time.sleep(120)']); "
        "print('ready', flush=True); time.sleep(120)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # the child allocates its buffer
    yield process
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    stop(process)


def request(process):
    """What a request to a dead service does: it fails."""
    if process.poll() is not None:
        raise ConnectionRefusedError(111, "Connection refused")
    time.sleep(0.02)
'''


def inner(pytester: pytest.Pytester, tests: str) -> None:
    pytester.makefile(".py", service=SERVICE)
    pytester.makepyfile(helpers=FIXTURES, test_watch="import pytest, time\nfrom helpers import *\n\n" + tests)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def lines(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def soak_of(pytester: pytest.Pytester, name: str) -> SoakResult:
    return SoakResult.from_dict(reports(pytester)[name]["memleak_soak"])


def samples_of(res: SoakResult) -> list[dict]:
    return [r for r in lines(res.samples_path or "") if r["kind"] == "sample"]


def test_a_watched_service_is_judged_on_its_own_memory_and_its_samples_say_whose(pytester: pytest.Pytester) -> None:
    inner(
        pytester,
        """
@pytest.mark.memleak_soak(duration="2s", watch="leaking", expect_leak=True, memory_limit="2 GiB")
def test_leaking(leaking):
    request(leaking)


@pytest.mark.memleak_soak(duration="2s", watch="flat_pid", expect_leak=False)
def test_flat_by_pid(flat_pid):
    time.sleep(0.02)


@pytest.mark.memleak_soak(duration="2s", watch="flat_psutil", expect_leak=False)
def test_flat_by_psutil(flat_psutil):
    time.sleep(0.02)
""",
    )
    result = run(pytester, "--memleak-flamegraph=none")
    result.assert_outcomes(passed=3)
    leaking = soak_of(pytester, "test_leaking")
    assert leaking.status == LEAK and leaking.leaked_metrics == ["rss"]
    assert leaking.reason.startswith(f"watched RSS (pid {leaking.watched_pid} and children) grows")
    assert "from fixture 'leaking'" in leaking.watched and leaking.heap == []
    meta = lines(leaking.samples_path or "")[0]
    assert meta["watched_pid"] == leaking.watched_pid != meta["pid"]
    samples = samples_of(leaking)
    assert all(r["watched_pid"] == leaking.watched_pid for r in samples)
    assert samples[-1]["rss"] - samples[0]["rss"] > 4 * 1024**2  # the service's ~8 MiB, not pytest's
    assert all(r["uss"] is None or 0 < r["uss"] <= r["rss"] for r in samples)
    for name in ("test_flat_by_pid", "test_flat_by_psutil"):
        flat = soak_of(pytester, name)
        assert flat.status == "clean" and flat.watched_pid not in (None, leaking.watched_pid)


def test_the_watched_tree_counts_the_children(pytester: pytest.Pytester) -> None:
    inner(
        pytester,
        """
@pytest.mark.memleak_soak(duration="1s", watch="parent")
def test_parent(parent):
    time.sleep(0.02)
""",
    )
    run(pytester, "--memleak-flamegraph=none").assert_outcomes(passed=1)
    res = soak_of(pytester, "test_parent")
    samples = samples_of(res)
    assert all(r["children"] == 1 for r in samples)
    assert min(r["rss"] for r in samples) > 48 * 1024**2  # the child's buffer is in the tree's RSS


@pytest.mark.slow
def test_the_guard_stops_the_soak_before_the_watched_service_reaches_its_limit(pytester: pytest.Pytester) -> None:
    inner(
        pytester,
        """
@pytest.mark.memleak_soak(duration="60s", sample_every="0.1s", watch="leaking", memory_limit="60 MiB", memory_margin="10 MiB")
def test_leaking(leaking):
    request(leaking)
""",
    )
    result = run(pytester, "--memleak-flamegraph=none")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*memory leak in soak test_leaking: stopped by the memory guard after * s of 60 s*watched RSS * reached *"])
    res = soak_of(pytester, "test_leaking")
    guard = next(r for r in lines(res.samples_path or "") if r["kind"] == "guard")
    assert guard["metric"] == "watched RSS" and guard["used"] < 60 * 1024**2
    assert res.duration < 30  # stopped, not soaked for its 60 s


@pytest.mark.parametrize(("fixture", "how"), [("exiting", "code 3"), ("killed", "signal SIGKILL")])
def test_a_service_that_exits_ends_the_soak_with_that_finding_and_its_samples(
    pytester: pytest.Pytester, fixture: str, how: str
) -> None:
    inner(
        pytester,
        f"""
@pytest.mark.memleak_soak(duration="30s", sample_every="0.1s", watch="{fixture}")
def test_service({fixture}):
    request({fixture})  # fails once the service is gone: the exit is the finding, not this error
""",
    )
    result = run(pytester, "--memleak-flamegraph=none")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*service exited in soak test_service: the service exited with {how} after * s of 30 s (* iterations)*"])
    assert "ConnectionRefusedError" not in result.stdout.str()
    res = soak_of(pytester, "test_service")
    # ended by the exit (about 1 s in, by the service's own clock), not by its 30 s: no bound on speed
    assert res.exit == how and res.status == INCONCLUSIVE and res.duration < 30
    records = lines(res.samples_path or "")
    assert len([r for r in records if r["kind"] == "sample"]) >= 5
    assert [r["status"] for r in records if r["kind"] == "exit"] == [how]
    assert records[-1]["kind"] == "verdict" and records[-1]["stopped_by"] == "exit"


@pytest.mark.parametrize(
    ("watch", "fixture", "message"),
    [
        ("nope", "", "*memleak_soak(watch=...) from @pytest.mark.memleak_soak on test_watch.py::test_it (the test does not use a fixture 'nope'*"),
        ("text", "text", "*memleak_soak(watch='text') in @pytest.mark.memleak_soak on test_watch.py::test_it: the fixture 'text' returned str 'hello'; accepted form: a pid (int), a subprocess.Popen or a psutil.Process*"),
        ("gone", "gone", "*the fixture 'gone' returned pid *, which cannot be read (NoSuchProcess*"),
    ],
)
def test_a_watch_that_names_no_process_is_a_usage_error_after_the_teardown(
    pytester: pytest.Pytester, watch: str, fixture: str, message: str
) -> None:
    inner(
        pytester,
        f"""
import pathlib, subprocess, sys


@pytest.fixture
def text():
    yield "hello"
    pathlib.Path("torn-down").write_text("yes")


@pytest.fixture
def gone():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    yield process.pid
    pathlib.Path("torn-down").write_text("yes")


@pytest.mark.memleak_soak(duration="1s", watch="{watch}")
def test_it({fixture}):
    pass
""",
    )
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert (pytester.path / "torn-down").exists() == bool(fixture)


needs_attach = pytest.mark.skipif(shutil.which("gdb") is None, reason="memray attach needs gdb")


@needs_attach
def test_a_leaking_service_gets_a_live_flamegraph_that_names_its_leaking_line(pytester: pytest.Pytester) -> None:
    from memray import FileReader

    inner(
        pytester,
        """
@pytest.mark.memleak_soak(duration="2s", watch="leaking", memory_limit="2 GiB")
def test_leaking(leaking):
    request(leaking)
""",
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*live flamegraph: *-live.html (what pid * allocated in 3 s of the same traffic and still holds*"])
    res = soak_of(pytester, "test_leaking")
    assert res.flamegraph is not None and Path(res.flamegraph).stat().st_size > 0
    capture = Path(res.flamegraph[: -len(".html")] + ".bin")
    by_line: dict[int, int] = {}
    for record in FileReader(capture).get_leaked_allocation_records(merge_threads=True):
        frames = [f for f in record.stack_trace() if f[1].endswith("service.py")]
        if frames:
            by_line[frames[0][2]] = by_line.get(frames[0][2], 0) + record.size
    source = (pytester.path / "service.py").read_text().splitlines()
    leak_line = next(n for n, text in enumerate(source, 1) if "the leaking line" in text)
    assert max(by_line, key=lambda line: by_line[line]) == leak_line
    assert by_line[leak_line] >= 0.5 * sum(by_line.values())


def test_no_live_flamegraph_for_a_process_that_is_not_python_says_why(pytester: pytest.Pytester) -> None:
    inner(
        pytester,
        """
import subprocess


@pytest.fixture
def sleeper():
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.memleak_soak(duration="1s", watch="sleeper")
def test_sleeper(sleeper):
    time.sleep(0.02)
""",
    )
    run(pytester, "--memleak-flamegraph=all").assert_outcomes(passed=1)
    res = soak_of(pytester, "test_sleeper")
    assert res.status == "clean" and res.flamegraph is None
    [problem] = [p for p in res.problems if "flamegraph" in p]
    assert problem.startswith("no live flamegraph: ") and "\n" not in problem


# -- a busy machine ----------------------------------------------------------------------


@pytest.fixture
def busy_machine() -> Iterator[int]:
    """Two busy loops, as the issue measured ("two busy loops held both cores"): with this
    process, more runnable tasks than this machine's CPUs. (Beside five or six runnable tasks
    the estimate of the wait falls short; see the contention class.)"""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    time.sleep(0.2)
    try:
        yield len(loops)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


needs_contention = pytest.mark.skipif(Contention().source is None, reason="no /proc/thread-self/schedstat or /proc/loadavg")


@pytest.mark.parametrize("source", [contention_mod.SCHEDSTAT, contention_mod.LOADAVG])
def test_contention_counts_the_time_a_busy_machine_kept_a_cpu_bound_loop_waiting(busy_machine: int, source: str) -> None:
    """The kernel's exact count, and the estimate where it is missing."""
    if not os.access(source, os.R_OK):
        pytest.skip(f"no {source}")
    contention = Contention()
    contention.source = source
    contention.begin()
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        sum(range(10_000))
        contention.read()
    # beside two busy loops on at most two CPUs, each second of CPU time waited at least half as long again
    assert contention.cpus > 2 or contention.lost > 0.2


RING = """
import collections

# A ring that fills in about half the soak's own work: its size is what the first half second
# of the soak did, times three (the rest of a 3 s soak at that pace, halved), so that it fills
# halfway through on any machine, however busy (what the soak can tell of its wait falls short
# beside more than the two loops: see Contention).
STATE = {"began": None, "count": 0, "ring": None}


@pytest.mark.memleak_soak(duration="3s")
def test_ring():
    sum(range(3_000))
    if STATE["ring"] is None:
        STATE["began"] = STATE["began"] or time.monotonic()
        STATE["count"] += 1
        if time.monotonic() - STATE["began"] >= 0.5:
            STATE["ring"] = collections.deque(maxlen=STATE["count"] * 3)
        return
    STATE["ring"].append(bytearray(2_000))
"""


@needs_contention
def test_a_busy_machine_makes_a_soak_run_on_and_never_turns_a_fill_into_a_leak(
    pytester: pytest.Pytester, busy_machine: int
) -> None:
    inner(pytester, RING)
    result = run(pytester, "--memleak-flamegraph=none")
    result.assert_outcomes(passed=1)
    res = soak_of(pytester, "test_ring")
    assert res.status != LEAK
    assert res.cpu_waited is not None and res.cpu_waited > 0
    # it ran on by the time it waited, up to twice its duration (a check every 10 ms)
    assert res.duration - res.cpu_waited >= 3.0 - 0.1 or res.duration >= soak.MAX_STRETCH * 3.0 - 0.1


def test_growth_that_goes_on_through_a_collapse_of_throughput_is_a_leak_and_a_fill_that_ends_there_is_not(
    pytester: pytest.Pytester,
) -> None:
    """Throughput collapses after 1.5 s (an iteration in 100 ms, however busy the machine). Memory that
    still rises then, by what each iteration keeps, plateaus per second only as the work does: a leak
    (judged per iteration where seconds alone read a plateau). Memory that stops rising there was a
    fill (by time): no leak."""
    inner(
        pytester,
        """
KEPT = []
START = {}


def collapse(name, keep):
    START.setdefault(name, time.monotonic())
    fast = time.monotonic() - START[name] < 1.5
    if keep or fast:
        KEPT.append(b"x" * 65536)
    time.sleep(0.001 if fast else 0.1)


@pytest.mark.memleak_soak(duration="3s")
def test_collapse():
    collapse("leak", keep=True)  # the same growth every iteration


@pytest.mark.memleak_soak(duration="3s")
def test_fill_ends_at_collapse():
    collapse("fill", keep=False)  # growth only before the collapse
""",
    )
    result = run(pytester, "--memleak-flamegraph=none")
    result.assert_outcomes(passed=1, failed=1)
    leak, fill = soak_of(pytester, "test_collapse"), soak_of(pytester, "test_fill_ends_at_collapse")
    for res in (leak, fill):
        assert any(p.startswith("throughput ranged from ") for p in res.problems), res.problems
    # (the heap's exact bytes: RSS rises by malloc's steps, a few in the collapse's last second, and may not show it;
    # judged per iteration, or per second where a busy machine slowed the fast part too)
    assert leak.status == LEAK and "heap" in leak.leaked_metrics, leak.reason
    assert fill.status != LEAK and not fill.leaked_metrics, fill.reason
