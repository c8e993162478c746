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
from typing import Any

import pytest

from pytest_memleak.probe import contention as contention_mod
from pytest_memleak.probe.contention import Contention
from pytest_memleak.results import INCONCLUSIVE, LEAK, SoakResult
from pytest_memleak.soak import config as soak_cfg
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


def test_growth_per_second_and_per_iteration_that_disagree_when_throughput_collapses_leave_it_open(
    pytester: pytest.Pytester,
) -> None:
    inner(
        pytester,
        """
KEPT = []


START = []


@pytest.mark.memleak_soak(duration="3s")
def test_collapse():
    KEPT.append(b"x" * 65536)  # the same growth every iteration
    if not START:
        START.append(time.monotonic())
    # then one iteration in 100 ms: throughput collapses (after 1.5 s, however busy the machine)
    time.sleep(0.001 if time.monotonic() - START[0] < 1.5 else 0.1)
""",
    )
    result = run(pytester, "--memleak-flamegraph=none")
    result.assert_outcomes(passed=1)
    res = soak_of(pytester, "test_collapse")
    assert any(p.startswith("throughput fell from ") for p in res.problems)
    assert res.status == INCONCLUSIVE, res.reason
    assert "grows per iteration but not per second" in res.reason


# A loaded CI run's soak of `OBJECTS.append(object())` and a 5 ms sleep an iteration (tests/test_soak.py,
# objects_small), 2.5 s beside two busy loops: seconds, iterations, and the growth of the allocated
# blocks and of the heap's bytes since the first sample. RSS did not move.
OBJECTS_T = [0.017, 0.093, 0.155, 0.225, 0.291, 0.354, 0.424, 0.491, 0.56, 0.631, 0.692, 0.757, 0.827, 0.901, 0.965, 1.029, 1.089, 1.16, 1.22, 1.29, 1.36, 1.426, 1.486, 1.559, 1.619, 1.692, 1.758, 1.824, 1.888, 1.96, 2.018, 2.091, 2.159, 2.215, 2.29, 2.361, 2.422, 2.489, 2.52]
OBJECTS_ITERATIONS = [0, 9, 16, 24, 31, 39, 47, 55, 63, 71, 78, 86, 94, 102, 108, 114, 121, 129, 136, 145, 153, 161, 168, 177, 185, 194, 202, 210, 218, 227, 234, 243, 251, 258, 267, 275, 282, 289, 291]
OBJECTS_BLOCKS = [0, 20, 30, 38, 45, 53, 61, 69, 77, 85, 92, 100, 108, 116, 122, 128, 135, 143, 150, 159, 167, 175, 182, 191, 199, 208, 216, 224, 232, 241, 248, 257, 265, 273, 283, 291, 298, 305, 307]
OBJECTS_BYTES = [0, 1360, 2144, 2336, 2512, 2704, 2928, 3152, 3280, 2896, 3760, 4480, 4736, 5696, 6784, 7760, 7872, 8160, 9280, 9424, 9744, 9872, 9984, 10352, 10480, 10624, 11008, 11136, 11264, 11408, 11808, 11952, 12080, 12224, 12400, 12848, 12960, 13616, 13648]


@pytest.mark.parametrize("leaking", [True, False], ids=["an object an iteration", "the same bytes, no blocks kept"])
def test_a_heap_whose_bytes_rise_unevenly_is_judged_on_its_allocated_blocks(tmp_path: Path, leaking: bool) -> None:
    """The bytes rose 47 B an iteration, faster early on (pools and arenas coming), so their trend's
    lower bound was below zero and the soak read "ok": the allocated blocks, an exact count, rose one
    an iteration throughout. The heap leaks on them, in the bytes' unit; flat blocks leave it clean."""
    from pytest_memleak.results import CLEAN
    from pytest_memleak.soak import verdict
    from tests.test_guard import MarkedItem

    runner = soak._Runner(None, soak_cfg.soak_config(MarkedItem(duration="2s")), tmp_path / "x.jsonl", lambda: None)  # type: ignore[arg-type]
    m = runner.measured
    m.elapsed, m.waited, m.iterations, m.samples, m.heap_unit = 2.52, 0.0, 291, len(OBJECTS_T), "B"
    m.heap_name = "Python heap (the allocators' bytes: pymalloc's and malloc's)"
    for t, n, blocks, heap in zip(OBJECTS_T, OBJECTS_ITERATIONS, OBJECTS_BLOCKS, OBJECTS_BYTES, strict=True):
        m.series.add(t, float(n), 99164160.0, 76032592.0 + heap, 226488.0 + (blocks if leaking else blocks % 3))
    result = verdict.judge_soak(m)
    blocks = [d for d in result.details if d.startswith("allocated blocks: ")]
    assert len(blocks) == 1, result.details  # (judged: the bytes rose)
    if not leaking:
        assert result.status == CLEAN and "persists" not in blocks[0], (result.reason, blocks)
        return
    assert result.status == LEAK and result.leaked_metrics == ["heap"], result.reason
    assert "Python heap grows " in result.reason and "B/h; allocated blocks: grows " in result.reason, result.reason
    assert "persists in the last third" in blocks[0], blocks


# A loaded CI run's 8 s soak of the fixed connections scenario (scenarios/test_chat_soak.py, a sqlite connection
# opened and closed every 100 requests), beside two busy loops, waiting for a CPU 5.0 s of its 13.0 s: seconds,
# iterations, RSS in KiB, the heap's bytes and its allocated blocks. Nothing leaks: the blocks wander by 2,800.
FIXED_T = [0.069, 0.34, 0.601, 0.843, 1.092, 1.341, 1.591, 1.841, 2.083, 2.319, 2.572, 2.861, 3.066, 3.327, 3.574, 3.826, 4.066, 4.356, 4.562, 4.85, 5.082, 5.347, 5.595, 5.819, 6.082, 6.341, 6.589, 6.833, 7.075, 7.326, 7.583, 7.835, 8.089, 8.355, 8.565, 8.819, 9.08, 9.355, 9.584, 9.817, 10.072, 10.321, 10.573, 10.827, 11.075, 11.328, 11.6, 11.819, 12.084, 12.33, 12.563, 12.819, 13.017]
FIXED_ITERATIONS = [0, 7, 17, 27, 37, 47, 57, 67, 77, 87, 97, 107, 117, 127, 137, 147, 157, 167, 177, 187, 197, 207, 217, 227, 237, 247, 257, 267, 277, 287, 297, 307, 317, 327, 335, 347, 357, 367, 377, 387, 397, 407, 417, 427, 437, 447, 457, 467, 477, 487, 497, 507, 514]
FIXED_RSS_KIB = [73748] + [74172] * 2 + [74180] + [74184] * 24 + [74188] * 19 + [74192] * 6
FIXED_BYTES = [43212400, 43150720, 43397600, 43041744, 43306400, 43364704, 43101680, 43309104, 43044832, 43138240, 43324512, 43080992, 43281168, 43004048, 43161456, 43257504, 43032448, 43208000, 42847248, 43068720, 43238672, 42955728, 43049200, 43360736, 42964608, 43053296, 42787360, 43005824, 43264816, 43160976, 43339728, 42916816, 43190640, 43331584, 43352400, 43151680, 42778000, 43094016, 43230368, 42895744, 43050416, 43267040, 43088080, 43300736, 42952624, 43167312, 43308336, 43069184, 43278032, 42973696, 43120496, 43389984, 43362576]
FIXED_BLOCKS = [289669, 289323, 290479, 289045, 290063, 290109, 289173, 289974, 288983, 289111, 289496, 288723, 289422, 288636, 289143, 289553, 288564, 289259, 287989, 288840, 289257, 288569, 288616, 289841, 288225, 288531, 287721, 288513, 289551, 289377, 290230, 288575, 289301, 289807, 289875, 289073, 287774, 289084, 289487, 288355, 288914, 289372, 289141, 289678, 288783, 289298, 289961, 289322, 289914, 289029, 289394, 290464, 290154]


def _judge_chat_soak(tmp_path: Path, elapsed: float, waited: float, *columns: list[Any]) -> SoakResult:
    """The verdict on a recorded 8 s chat scenario soak (warm-up 30%, memory_limit 500 MiB): its
    seconds, iterations, RSS in KiB, heap bytes and allocated blocks, one list each."""
    from pytest_memleak.soak import verdict
    from tests.test_guard import MarkedItem

    runner = soak._Runner(None, soak_cfg.soak_config(MarkedItem(duration="8s", warmup="30%", memory_limit="500 MiB")), tmp_path / "x.jsonl", lambda: None)  # type: ignore[arg-type]
    m = runner.measured
    m.elapsed, m.waited, m.iterations, m.samples, m.heap_unit = elapsed, waited, int(columns[1][-1]), len(columns[0]), "B"
    m.heap_name = "Python heap (the allocators' bytes: pymalloc's and malloc's)"
    for t, n, rss_kib, heap, blocks in zip(*columns, strict=True):
        m.series.add(t, float(n), 1024.0 * rss_kib, float(heap), float(blocks))
    return verdict.judge_soak(m)


def test_blocks_that_wander_up_within_their_noise_do_not_make_a_clean_heap_leak(tmp_path: Path) -> None:
    """The heap's bytes rose over the window but unsurely, so its blocks were judged too: they rose
    1,078 over the 9 s window against noise of 664, and each part of the window's lower bound was above
    zero at 95%, so the fixed scenario read "LEAK (expected ok)" and failed a loaded CI run. A second
    look at the heap asks its blocks for a plain rise; the object() an iteration above rose 75 to 378
    times its noise, and is still a leak (the test above)."""
    from pytest_memleak.results import CLEAN
    from pytest_memleak.soak import verdict

    result = _judge_chat_soak(tmp_path, 13.03, 4.99, FIXED_T, FIXED_ITERATIONS, FIXED_RSS_KIB, FIXED_BYTES, FIXED_BLOCKS)
    blocks = [d for d in result.details if d.startswith("allocated blocks: ")]
    assert len(blocks) == 1, result.details  # (judged: the bytes rose)
    assert result.status == CLEAN and not result.leaked_metrics, (result.reason, blocks)
    assert "persists" not in blocks[0] and f"within {verdict.BLOCKS_CLEAR_OF_NOISE:g} times its noise" in blocks[0], blocks


# The same soak of the leaky variant (a sqlite connection opened every 100 requests, never closed) in the same
# kind of run, on a machine loaded past the two busy loops: it waited for a CPU 9.8 s of its 17.8 s, and its
# throughput fell from 40 iterations a second to about 13 in mid-window, then came back. RSS rose 46 MiB.
LEAKY_T = [0.039, 0.363, 0.627, 0.852, 1.098, 1.351, 1.624, 1.859, 2.105, 2.346, 2.595, 2.854, 3.097, 3.347, 3.603, 3.856, 4.105, 4.361, 4.613, 4.854, 5.11, 5.35, 5.599, 5.863, 6.114, 6.367, 6.61, 6.815, 7.078, 7.419, 7.724, 8.335, 8.749, 9.212, 9.488, 9.75, 10.199, 10.79, 11.206, 11.531, 12.024, 12.499, 12.927, 13.136, 13.394, 13.651, 13.89, 14.124, 14.388, 14.609, 14.868, 15.091, 15.368, 15.547, 15.852, 16.125, 16.36, 16.644, 16.813, 17.113, 17.378, 17.774]
LEAKY_ITERATIONS = [0, 8, 17, 26, 38, 48, 58, 68, 78, 88, 98, 108, 118, 128, 138, 148, 158, 168, 178, 188, 198, 208, 218, 228, 238, 248, 258, 267, 278, 288, 293, 302, 309, 318, 320, 321, 333, 343, 349, 351, 357, 364, 372, 376, 386, 393, 398, 404, 412, 423, 437, 444, 458, 468, 488, 503, 513, 523, 533, 543, 553, 559]
LEAKY_RSS_KIB = [110748, 111588, 112204, 113128, 114172, 115056, 115772, 116056, 117236, 117908, 119188, 119880, 120444, 121436, 121852, 123272, 123864, 124456, 125460, 126212, 126740, 127796, 128232, 129584, 130460, 131104, 131564, 132116, 133696, 134604, 134724, 135496, 136096, 136616, 136616, 137372, 138024, 138928, 138952, 139592, 140024, 140716, 141896, 142120, 143020, 143600, 143988, 144028, 144372, 145584, 147288, 147976, 149036, 149848, 151804, 152484, 153732, 154492, 154708, 155964, 156572, 157572]
LEAKY_BYTES = [79611104, 80394976, 81312368, 81795488, 83190128, 83662416, 84765392, 85955024, 86598272, 87579344, 88176384, 89299376, 90338240, 91038864, 92049712, 92659872, 93807456, 94824688, 95393456, 96505584, 97548128, 98142128, 99146736, 99892928, 100935680, 101908912, 102553440, 103462160, 104354480, 105714400, 105868304, 106925744, 107413264, 108388784, 108783152, 108264016, 109725472, 110294656, 111329376, 111110880, 111456448, 112182976, 112900736, 113556688, 114167664, 114729456, 115386656, 116013264, 116660880, 117671456, 118948752, 119437104, 120846928, 121921536, 123613712, 125042656, 126097376, 126644000, 127772848, 128920688, 129503360, 129867728]
LEAKY_BLOCKS = [306175, 306882, 308577, 307921, 310278, 309613, 311279, 313056, 312964, 314123, 313768, 315578, 317001, 317596, 318906, 318651, 320305, 321646, 321453, 323298, 324613, 324689, 325991, 326055, 327298, 328603, 328684, 330196, 331173, 333489, 333217, 334336, 334675, 336175, 336890, 335121, 337279, 337056, 339020, 338056, 337981, 339326, 339780, 341257, 341066, 341524, 342948, 343347, 344335, 345148, 346473, 346951, 348772, 350156, 351784, 353393, 354728, 354638, 356318, 358111, 358100, 358162]


@pytest.mark.xfail(
    strict=True,
    reason="known limit, the next step of issue 15: a soak judges growth over time, and a throughput that dips "
    "mid-window bends the leak into a curve whose residuals' autocorrelation widens Sen's interval to 0 (per "
    "iteration the series is a line)",
)
def test_a_leak_whose_throughput_dipped_mid_window_is_still_a_leak(tmp_path: Path) -> None:
    """RSS rose from 108 to 154 MiB in 17.8 s, and the soak read "no persistent growth: +7.5 GiB/h (95% CI
    0 B/h .. 22.6 GiB/h)": the fixed 500 MiB limit was "never" reached, the brief's own complaint."""
    result = _judge_chat_soak(tmp_path, 17.82, 9.78, LEAKY_T, LEAKY_ITERATIONS, LEAKY_RSS_KIB, LEAKY_BYTES, LEAKY_BLOCKS)
    assert result.status == LEAK and result.time_to_limit is not None, result.reason


def _settling_service(tmp_path: Path, page_every: float) -> SoakResult:
    """The verdict on an 8 s soak of a service whose heap is flat and whose RSS settles: 400 KiB in
    the warm-up, then a 4 KiB page every ``page_every`` seconds (a 3.13 CI run's fixed connections
    service: sqlite's 512 KiB page cache filling, and pymalloc's pools)."""
    from pytest_memleak.soak import verdict
    from tests.test_guard import MarkedItem

    runner = soak._Runner(None, soak_cfg.soak_config(MarkedItem(duration="8s", warmup="30%", memory_limit="500 MiB")), tmp_path / "x.jsonl", lambda: None)  # type: ignore[arg-type]
    m = runner.measured
    m.elapsed, m.waited, m.iterations, m.samples, m.heap_unit = 8.25, 0.0, 330, 34, "B"
    m.heap_name = "Python heap (the allocators' bytes: pymalloc's and malloc's)"
    for i in range(34):
        t = 0.25 * i
        settled = 4096 * (50 * min(t, 2.0) // 1) + (4096 * ((t - 2.5) // page_every) if t > 2.5 else 0)
        wobble = (i * 7919) % 13 - 6  # the heap churns around a flat level
        m.series.add(t, 40.0 * t, 72.3 * 2**20 + settled, 43.4e6 + 20_000 * wobble, 291_500.0 + 80 * wobble)
    return verdict.judge_soak(m)


def test_rss_that_settles_a_few_pages_is_not_a_leak_and_growth_past_its_resolution_is(tmp_path: Path) -> None:
    """A fixed service failed a 3.13 CI run: its RSS rose 30 KiB in the 5.7 s window, a page at a
    time, so surely and persistently that "grows 18.8 MiB/h, reaches 500 MiB in 22 h 46 min" fell
    inside the 24 h horizon. A soak resolves RSS to a mebibyte (an arena, a heap-top step, a page
    cache): the same staircase reads ok, saying why, and RSS past that in the window is a leak."""
    from pytest_memleak.results import CLEAN
    from pytest_memleak.soak.trend import fit_level
    from pytest_memleak.soak.verdict import RSS_RESOLUTION

    settling = _settling_service(tmp_path, page_every=0.3)
    assert fit_level(settling.t, settling.rss, warmup_fraction=0.3).trend.persistent  # (what the old verdict judged)
    assert settling.status == CLEAN and settling.time_to_limit is None, settling.reason
    assert "grows only " in settling.reason and "within its resolution of 1.0 MiB" in settling.reason, settling.reason
    assert any("within its resolution of 1.0 MiB" in d for d in settling.details if d.startswith("RSS: ")), settling.details
    leaking = _settling_service(tmp_path, page_every=0.0134)  # 430 pages, 1.7 MiB, in the window
    assert RSS_RESOLUTION < 430 * 4096
    assert leaking.status == LEAK and leaking.leaked_metrics == ["rss"], leaking.reason
    assert leaking.time_to_limit is not None and "persists in the last third" in leaking.reason, leaking.reason


def test_a_leak_per_iteration_stands_when_throughput_collapses(tmp_path: Path) -> None:
    """Under load, a registry that leaks 37 KiB an iteration slowed from 43 to 16 iterations a
    second: RSS grew per second to the end, the heap's rate per second fell with the throughput
    ("plateaued"), and both grew per iteration. The leak stands; a clean verdict there would not."""
    from pytest_memleak.soak import verdict
    from pytest_memleak.soak.trend import fit_level
    from tests.test_guard import MarkedItem

    runner = soak._Runner(None, soak_cfg.soak_config(MarkedItem(duration="3s")), tmp_path / "x.jsonl", lambda: None)  # type: ignore[arg-type]
    measured = runner.measured
    measured.elapsed, measured.waited = 3.0, 0.0
    t = [i * 0.05 for i in range(61)]
    iterations = [43.0 * x if x < 1.5 else 43.0 * 1.5 + 16.0 * (x - 1.5) for x in t]
    per_iteration = 37 * 1024
    rss = [75 * 2**20 + per_iteration * n + (4096 if i % 3 == 0 else 0) for i, n in enumerate(iterations)]
    heap = [40 * 2**20 + 0.9 * per_iteration * n for n in iterations]
    trend = fit_level(t, rss, warmup_fraction=0.3).trend
    series = {"rss": rss, "heap": heap}
    problems: list[str] = []
    assert verdict._doubt(measured, t, iterations, series, ["rss"], trend, problems) is None
    assert any(p.startswith("throughput fell from ") for p in problems), problems
    doubt = verdict._doubt(measured, t, iterations, series, [], trend, problems)
    assert doubt is not None and doubt.endswith("grows per iteration but not per second"), doubt
