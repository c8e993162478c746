"""Issue 8: the plugin never breaks the run, never loses its evidence, and says what it could not do.

Every case runs a pytester suite with ``--memleak`` in a subprocess (tracemalloc, the garbage
collector and signals are process-wide) and checks, besides the case's own point:

* the tests' own outcomes stand (the same counts as a plain run, where that applies);
* no INTERNALERROR and no traceback frame from pytest_memleak in the output.

Faults that cannot be made real are injected in the suite's conftest: memray missing
(``sys.modules["memray"] = None``), memray refusing to attach, psutil denied or missing on a
platform without ``/proc``. A report directory that cannot be created is real: a path under a
regular file (root ignores ``chmod``, not ``ENOTDIR``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from verdicts import default_sigint

# Plugins this suite does not exercise, blocked so that each subprocess starts faster;
# pytest-memray is blocked so that it cannot import memray behind a test's back.
QUIET = (
    "-p", "no:cacheprovider",
    "-p", "no:benchmark",
    "-p", "no:xdist",
    "-p", "no:xdist.looponfail",
    "-p", "no:hypothesispytest",
    "-p", "no:memray",
)  # fmt: skip
# A leak is confirmed by its first window; no longer windows to wait for a plateau.
MEMLEAK = ("--memleak", "--memleak-confirm-seconds=0.1")
PLUGIN_FRAME = re.compile(r"pytest_memleak[\\/]\w+\.py")
# pytest's one-line account of a Ctrl-C or SIGTERM names the frame the signal landed in, which
# can be the plugin's loop between two runs: Python 3.12 and later deliver a signal at other
# bytecode boundaries than 3.11 (seen on 3.13: soak.py's loop). That line is not a crash.
INTERRUPTED_AT = re.compile(r"^.*pytest_memleak[\\/]\w+\.py:\d+: KeyboardInterrupt.*$", re.MULTILINE)


def run(pytester: pytest.Pytester, *args: str, timeout: float = 60) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*QUIET, *args, timeout=timeout)


def output(result: pytest.RunResult, root: Path | None = None) -> str:
    text = result.stdout.str() + "\n" + result.stderr.str()
    return text.replace(str(root), "<root>") if root is not None else text


def assert_no_crash(text: str) -> None:
    assert "INTERNALERROR" not in text, text
    frame = PLUGIN_FRAME.search(INTERRUPTED_AT.sub("", text))
    assert frame is None, f"a traceback frame from the plugin: {frame.group(0)}\n{text}"


def statuses(root: Path, report_dir: str = "reports") -> dict[str, dict]:
    data = json.loads((root / report_dir / "memleak.json").read_text())
    return {t["nodeid"].split("::")[-1]: t for t in data["tests"]}


def lines_with(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in needles)]


# -- 1. the measured code misbehaves ----------------------------------------------------

OUTCOMES = """
import pytest

CALLS = [0]


@pytest.fixture
def broken():
    raise RuntimeError("the fixture is broken")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("the teardown is broken")


def test_passes():
    pass


def test_fails():
    assert 1 == 2


def test_errors_in_setup(broken):
    pass


def test_errors_in_teardown(broken_teardown):
    pass


def test_skips():
    pytest.skip("not here")


@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False


@pytest.mark.xfail(reason="fixed meanwhile")
def test_xpasses():
    pass


@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpasses_strict():
    pass


def test_fails_when_repeated():
    CALLS[0] += 1
    assert CALLS[0] == 1
"""


def test_own_outcomes_stand(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outcomes=OUTCOMES)
    plain = run(pytester).parseoutcomes()
    result = run(pytester, *MEMLEAK, "--memleak-flamegraph=none")
    assert_no_crash(output(result))
    assert result.parseoutcomes() == plain
    assert plain == {
        "passed": 3,
        "failed": 2,
        "errors": 2,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 1,
    }
    found = {name: t["status"] for name, t in statuses(pytester.path).items()}
    assert found["test_passes"] == "clean"
    assert found["test_fails_when_repeated"] == "inconclusive"
    for name in (
        "test_fails",
        "test_errors_in_setup",
        "test_errors_in_teardown",
        "test_skips",
        "test_xfails",
        "test_xpasses_strict",
    ):
        assert found[name] == "no-verdict", (name, found)


def test_keyboard_interrupt_from_the_tests_own_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_kbd="""
        def test_a():
            pass

        def test_interrupts():
            raise KeyboardInterrupt

        def test_never_runs():
            pass
        """
    )
    plain = run(pytester)
    result = run(pytester, *MEMLEAK)
    text = output(result, pytester.path)
    assert_no_crash(text)
    assert result.ret == plain.ret == pytest.ExitCode.INTERRUPTED
    assert result.parseoutcomes() == plain.parseoutcomes() == {"passed": 1}
    assert "KeyboardInterrupt" in text
    assert statuses(pytester.path)["test_a"]["status"] == "clean"  # the report for what finished


def test_keyboard_interrupt_from_a_repeated_run(pytester: pytest.Pytester) -> None:
    """The test's own run passed: that outcome is reported, then the session stops as on Ctrl-C."""
    pytester.makepyfile(
        test_kbd="""
        CALLS = [0]

        def test_a():
            pass

        def test_interrupts_when_repeated():
            CALLS[0] += 1
            if CALLS[0] == 3:
                raise KeyboardInterrupt

        def test_never_runs():
            pass
        """
    )
    result = run(pytester, *MEMLEAK)
    text = output(result, pytester.path)
    assert_no_crash(text)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert result.parseoutcomes() == {"passed": 2}, text
    found = statuses(pytester.path)
    assert found["test_a"]["status"] == "clean"
    repeated = found["test_interrupts_when_repeated"]
    assert (
        repeated["status"] in ("inconclusive", "no-verdict")
        and "interrupt" in repeated["reason"].lower()
    )
    assert "test_never_runs" not in found


FORK_SUITE = """
import os

ORIGINAL = os.getpid()


def test_forks():
    if os.getpid() != ORIGINAL:  # an escaped child never forks again: no fork bomb, whatever happens
        return
    pid = os.fork()
    if pid == 0:
        {child}
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)


def test_after():
    with open("after.txt", "a") as f:
        f.write(f"{{os.getpid()}}\\n")
"""


def test_fork_whose_child_exits_cleanly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fork=FORK_SUITE.format(child="os._exit(0)"))
    result = run(pytester, *MEMLEAK)
    text = output(result, pytester.path)
    assert_no_crash(text)
    result.assert_outcomes(passed=2)
    assert len(lines_with(text, "memleak summary")) == 1
    assert (
        len(set((pytester.path / "after.txt").read_text().split())) == 1
    )  # one process ran it (its runs)
    forks = statuses(pytester.path)["test_forks"]
    assert forks["status"] != "leak", forks["reason"]


def test_fork_whose_child_returns_into_pytest(pytester: pytest.Pytester) -> None:
    """The child of a fork returns from the test: it must not run the session (and the plugin's reports) again."""
    pytester.makepyfile(
        test_fork=FORK_SUITE.format(child="return  # no os._exit: the child returns into pytest")
    )
    result = run(pytester, *MEMLEAK)
    text = output(result, pytester.path)
    assert_no_crash(text)
    assert len(lines_with(text, "memleak summary")) == 1, text
    assert len(re.findall(r"=+ .*\d+ passed.* in [\d.]+s", text)) == 1, text
    assert len(set((pytester.path / "after.txt").read_text().split())) == 1, (
        "test_after ran in more than one process"
    )
    result.assert_outcomes(passed=2)
    forks = statuses(pytester.path)["test_forks"]
    assert forks["status"] == "inconclusive" and "forked" in forks["reason"], forks["reason"]


STATE_PROBE = """
import gc
import json
import tracemalloc

{setup}


def _state(nodeid):
    tracing = tracemalloc.is_tracing()
    return {{
        "nodeid": nodeid,
        "tracing": tracing,
        "frames": tracemalloc.get_traceback_limit() if tracing else 0,
        "gc_enabled": gc.isenabled(),
        "frozen": gc.get_freeze_count(),
    }}


def pytest_runtest_logreport(report):
    if report.when == "teardown":  # logged once per test, after the plugin's runs
        with open("states.jsonl", "a") as f:
            f.write(json.dumps(_state(report.nodeid.split("::")[-1])) + "\\n")


def pytest_unconfigure(config):
    with open("states.jsonl", "a") as f:
        f.write(json.dumps(_state("<end>")) + "\\n")
"""


def states(pytester: pytest.Pytester) -> dict[str, dict]:
    path = pytester.path / "states.jsonl"
    found = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        found[record.pop("nodeid")] = record
    path.unlink()
    return found


TRACEMALLOC_SUITE = """
import tracemalloc

KEEP = []


def test_leaks_traced_by_the_plugin():
    KEEP.append([0] * 50)


def test_stops_tracemalloc_while_leaking():
    KEEP.append([0] * 50)
    tracemalloc.stop()


def test_starts_tracemalloc():
    tracemalloc.start(3)


def test_leaks_traced_by_the_test():
    KEEP.append([0] * 50)
"""


def test_tracemalloc_started_or_stopped_by_the_test(pytester: pytest.Pytester) -> None:
    # the session's heap is frozen before any test, as an application might do before forking workers
    pytester.makeconftest(STATE_PROBE.format(setup="gc.freeze()"))
    pytester.makepyfile(test_trace=TRACEMALLOC_SUITE)
    plain_result = run(pytester)
    plain = states(pytester)
    result = run(pytester, *MEMLEAK, "--memleak-flamegraph=none")
    text = output(result, pytester.path)
    assert_no_crash(text)
    checked = states(pytester)
    assert plain_result.parseoutcomes() == {"passed": 4}
    result.assert_outcomes(passed=2, failed=2)
    found = statuses(pytester.path)
    assert found["test_leaks_traced_by_the_plugin"]["status"] == "leak"
    stopped = found["test_stops_tracemalloc_while_leaking"]
    assert stopped["status"] == "inconclusive" and "stopped tracemalloc" in stopped["reason"], (
        stopped["reason"]
    )
    assert found["test_starts_tracemalloc"]["status"] == "clean", found["test_starts_tracemalloc"][
        "reason"
    ]
    assert (
        found["test_leaks_traced_by_the_test"]["status"] == "leak"
    )  # found with the test's own 3 frames
    # the plugin started tracing for its confirmation and stopped it; what the test started stays on
    for name in [*found, "<end>"]:
        for key in ("tracing", "frames", "gc_enabled"):
            assert checked[name][key] == plain[name][key], (name, key, checked[name], plain[name])
    assert plain["<end>"]["frozen"] > 0
    assert checked["<end>"]["frozen"] > 0, "the plugin unfroze the heap the session had frozen"


GC_SUITE = """
import gc

KEEP = []


def test_leaks_with_gc_on():
    KEEP.append([0] * 50)


def test_disables_gc_and_restores_it():
    gc.disable()
    try:
        [object() for _ in range(10)]
    finally:
        gc.enable()


def test_disables_gc():
    gc.disable()


def test_leaks_with_gc_off():
    KEEP.append([0] * 50)


class Node:
    def __init__(self):
        self.me = self


def test_freezes_the_heap_every_run():
    gc.freeze()


def test_unfreezes_the_heap_every_run():
    Node()  # cyclic garbage, collected by the plugin's collections
    gc.unfreeze()


def test_leaks_after_the_heap_was_unfrozen():
    KEEP.append([0] * 50)
"""


def test_garbage_collector_disabled_frozen_or_unfrozen_by_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(STATE_PROBE.format(setup=""))
    pytester.makepyfile(test_gc=GC_SUITE)
    plain_result = run(pytester)
    plain = states(pytester)
    result = run(pytester, *MEMLEAK, "--memleak-flamegraph=none")
    text = output(result, pytester.path)
    assert_no_crash(text)
    checked = states(pytester)
    assert plain_result.parseoutcomes() == {"passed": 7}
    result.assert_outcomes(passed=4, failed=3)
    found = statuses(pytester.path)
    for name in (
        "test_leaks_with_gc_on",
        "test_leaks_with_gc_off",
        "test_leaks_after_the_heap_was_unfrozen",
    ):
        assert found[name]["status"] == "leak", (name, found[name]["reason"])
    assert found["test_disables_gc_and_restores_it"]["status"] == "clean"
    disabled = found["test_disables_gc"]
    assert (
        disabled["status"] == "inconclusive"
        and "disabled the garbage collector" in disabled["reason"]
    ), disabled["reason"]
    for name, word in (
        ("test_freezes_the_heap_every_run", "froze"),
        ("test_unfreezes_the_heap_every_run", "unfroze"),
    ):
        status, reason = found[name]["status"], found[name]["reason"]
        assert status == "clean" or (status == "inconclusive" and word in reason), (
            name,
            status,
            reason,
        )
    # the garbage collector is left as the test left it, as without the plugin
    for name in [*found, "<end>"]:
        assert checked[name]["gc_enabled"] == plain[name]["gc_enabled"], (
            name,
            checked[name],
            plain[name],
        )


# -- 2. the tools misbehave -------------------------------------------------------------

LEAKS_AND_CLEAN = """
KEEP = []


def test_leak_one():
    KEEP.append([0] * 50)


def test_leak_two():
    KEEP.append({"k": [0] * 50})


def test_clean():
    [object() for _ in range(10)]
"""

MEMRAY_MISSING = """
import sys

sys.modules["memray"] = None  # `import memray` raises ImportError, as when it is not installed
"""

MEMRAY_REFUSES = """
import memray


class RefusingTracker:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        raise RuntimeError("attach refused: another tracker is active")

    def __exit__(self, *exc):
        return False


memray.Tracker = RefusingTracker
"""


@pytest.mark.parametrize(
    ("conftest", "problem"),
    [(MEMRAY_MISSING, "memray is not available"), (MEMRAY_REFUSES, "attach refused")],
    ids=["missing", "refuses-to-attach"],
)
def test_memray_missing_or_failing(pytester: pytest.Pytester, conftest: str, problem: str) -> None:
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_tools=LEAKS_AND_CLEAN)
    result = run(pytester, *MEMLEAK)  # flamegraphs for failed tests, the default
    text = output(result, pytester.path)
    assert_no_crash(text)
    result.assert_outcomes(passed=1, failed=2)
    found = statuses(pytester.path)
    assert [found[n]["status"] for n in ("test_leak_one", "test_leak_two", "test_clean")] == [
        "leak",
        "leak",
        "clean",
    ]
    told = lines_with(text, problem)
    assert len(told) == 1, f"the gap must be reported once, got {len(told)}:\n" + "\n".join(told)


RENDER_FAILS = """
import sys

import pytest_memleak.evidence.flamegraph

pytest_memleak.evidence.flamegraph._RENDER_SCRIPT = "import sys; sys.exit('no reporter')"
pytest_memleak.evidence.flamegraph._memray_command = lambda: [sys.executable, "-c", "import sys; sys.exit('cannot render')"]
"""


def test_a_flamegraph_that_fails_to_render_in_the_background_is_reported_and_left_out(pytester: pytest.Pytester) -> None:
    """Renders go on beside the next tests and are waited for at the end: one that fails is said
    there, per test, and the reports do not point at a file that is not there."""
    pytester.makeconftest(RENDER_FAILS)
    pytester.makepyfile(test_tools=LEAKS_AND_CLEAN)
    result = run(pytester, *MEMLEAK)
    text = output(result, pytester.path)
    assert_no_crash(text)
    result.assert_outcomes(passed=1, failed=2)
    found = statuses(pytester.path)
    for name in ("test_leak_one", "test_leak_two"):
        assert found[name]["status"] == "leak"
        assert found[name]["flamegraph"] is None
        assert found[name]["capture"] and os.path.isfile(found[name]["capture"])  # the capture is kept
        told = lines_with(text, f"flamegraph of test_tools.py::{name} not rendered: memray flamegraph failed (exit 1)")
        assert len(told) == 1 and "cannot render" in told[0], told


PSUTIL_DENIED = """
import psutil

import pytest_memleak.probe.process

pytest_memleak.probe.process._HAVE_PROC = False  # read through psutil, as on macOS or Windows


def denied(self, *args, **kwargs):
    raise psutil.AccessDenied(self.pid, "simulated")


for name in ("memory_info", "num_fds", "num_threads", "children", "open_files", "net_connections", "connections"):
    if hasattr(psutil.Process, name):
        setattr(psutil.Process, name, denied)
"""

PSUTIL_MISSING = """
import sys

import pytest_memleak.probe.process

sys.modules["psutil"] = None  # `import psutil` raises ImportError
pytest_memleak.probe.process._HAVE_PROC = False  # and no /proc to fall back on
"""


@pytest.mark.parametrize(
    "conftest", [PSUTIL_DENIED, PSUTIL_MISSING], ids=["access-denied", "missing"]
)
def test_psutil_cannot_read(pytester: pytest.Pytester, conftest: str) -> None:
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_tools=LEAKS_AND_CLEAN)
    result = run(pytester, *MEMLEAK, "--memleak-flamegraph=none")
    text = output(result, pytester.path)
    assert_no_crash(text)
    result.assert_outcomes(passed=1, failed=2)
    found = statuses(pytester.path)
    assert [found[n]["status"] for n in ("test_leak_one", "test_leak_two", "test_clean")] == [
        "leak",
        "leak",
        "clean",
    ]
    told = lines_with(text, "psutil")
    assert len(told) == 1, (
        "what psutil could not read (RSS, descriptors) must be reported once:\n" + text
    )


def test_report_directory_that_cannot_be_created(pytester: pytest.Pytester) -> None:
    (pytester.path / "blocker").write_text("a regular file where a directory is needed\n")
    pytester.makepyfile(
        test_tools=LEAKS_AND_CLEAN
        + """

import pytest


@pytest.mark.memleak_soak(duration="1s", sample_every="0.05s")
def test_soak_ring():
    KEEP[:] = KEEP[:3]
"""
    )
    result = run(pytester, *MEMLEAK, "--memleak-report-dir=blocker/sub")
    text = output(result, pytester.path)
    assert_no_crash(text)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        ["*memleak summary*", "LEAK *test_leak_one*", "*memleak soak*", "*soak*ring*ok*"]
    )
    told = lines_with(text, "blocker")
    assert len(told) == 1, (
        f"the unwritable report directory must be reported once, got {len(told)}:\n"
        + "\n".join(told)
    )
    assert "reports not written" in told[0]


# -- 3. interrupted runs ----------------------------------------------------------------

SLOW_SUITE = """
import os
import pathlib
import time

KEEP = []
CALLS = [0]


def test_a_clean():
    pass


def test_b_leaks():
    KEEP.append([0] * 50)


def test_c_slow():
    CALLS[0] += 1
    if CALLS[0] == {call}:
        pathlib.Path("slow-started").write_text(str(os.getpid()))
        time.sleep(60)
"""


def start(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *QUIET, "-q", *args],
        cwd=pytester.path,
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(pytester.path), os.environ.get("PYTHONPATH")])
            ),
        },
    )


def interrupt(proc: subprocess.Popen[bytes], ready: callable, signum: int) -> str:  # type: ignore[valid-type]
    try:
        deadline = time.monotonic() + 45
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.communicate()[0].decode(errors="replace")
                pytest.fail(f"the run never got there (exit {proc.returncode}):\n{out}")
            time.sleep(0.05)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=30)
        return out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SIGNALS = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)


@SIGNALS
@pytest.mark.parametrize("call", [1, 3], ids=["own-run", "repeated-run"])
def test_signal_during_memleak_writes_the_report_for_what_finished(
    pytester: pytest.Pytester, signum: int, call: int
) -> None:
    pytester.makepyfile(test_slow=SLOW_SUITE.format(call=call))
    proc = start(pytester, *MEMLEAK, "--memleak-flamegraph=none")
    text = interrupt(proc, (pytester.path / "slow-started").exists, signum)
    assert_no_crash(text)
    # SIGINT is pytest's "interrupted" (2); after SIGTERM the process may also end by the signal itself
    allowed = {pytest.ExitCode.INTERRUPTED} | (
        {-signal.SIGTERM, 128 + signal.SIGTERM} if signum == signal.SIGTERM else set()
    )
    assert proc.returncode in allowed, (proc.returncode, text)
    report = pytester.path / "reports" / "memleak.json"
    assert report.exists(), f"no report after {signal.Signals(signum).name}:\n{text}"
    found = statuses(pytester.path)
    assert found["test_a_clean"]["status"] == "clean"
    assert found["test_b_leaks"]["status"] == "leak"


SOAK_SUITE = """
import time

import pytest


def test_checked():
    pass


@pytest.mark.memleak_soak(duration="1s", sample_every="0.05s")
def test_soak_short_done():
    time.sleep(0.001)


@pytest.mark.memleak_soak(duration="60s", sample_every="0.05s")
def test_soak_long_forever():
    time.sleep(0.001)
"""


def soak_rows(folder: Path, name: str) -> list[dict]:
    files = [p for p in folder.glob("*.jsonl") if name in p.name] if folder.exists() else []
    if not files:
        return []
    with contextlib.suppress(ValueError):  # a line being written right now
        return [json.loads(line) for line in files[0].read_text().splitlines()]
    return []


@SIGNALS
def test_signal_during_a_soak_keeps_the_samples_and_writes_the_report(
    pytester: pytest.Pytester, signum: int
) -> None:
    pytester.makepyfile(test_soaks=SOAK_SUITE)
    folder = pytester.path / "reports" / "soak"

    def five_samples() -> bool:
        return sum(r["kind"] == "sample" for r in soak_rows(folder, "long_forever")) >= 5

    proc = start(pytester, *MEMLEAK, "--memleak-flamegraph=none")
    text = interrupt(proc, five_samples, signum)
    assert_no_crash(text)
    rows = soak_rows(folder, "long_forever")  # every line whole, valid JSON
    samples = [r for r in rows if r["kind"] == "sample"]
    assert len(samples) >= 5 and [r["i"] for r in samples] == list(range(len(samples)))
    assert rows[-1]["kind"] == "end" and rows[-1]["outcome"] == "interrupted", rows[-1]
    report = pytester.path / "reports" / "memleak.json"
    assert report.exists(), f"no report after {signal.Signals(signum).name}:\n{text}"
    data = json.loads(report.read_text())
    assert [t["nodeid"].split("::")[-1] for t in data["tests"]] == ["test_checked"]
    assert [s["nodeid"].split("::")[-1] for s in data["soaks"]] == ["test_soak_short_done"]


def test_nothing_is_left_open_at_exit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """In Python's development mode an unclosed file is a ResourceWarning printed after pytest's
    last line. The heap meter's scratch file once was one (seen under toolz's suite)."""
    pytester.makepyfile(
        test_open="""
        KEEP = []

        def test_clean():
            assert sum(range(10)) == 45

        def test_leaks():
            KEEP.append(object())
        """
    )
    monkeypatch.setenv("PYTHONDEVMODE", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none")
    result.assert_outcomes(passed=1, failed=1)
    assert "ResourceWarning" not in result.stderr.str() + result.stdout.str(), result.stderr.str()


def test_a_forked_child_dies_of_sigterm_as_without_the_plugin(pytester: pytest.Pytester) -> None:
    """The session handles SIGTERM (reports written, then exit 143). A child the test forks must
    not inherit that: multiprocessing's Pool.terminate() ends its workers with SIGTERM, and a
    worker that raised KeyboardInterrupt instead ran its exit handlers and could hang on a lock
    (seen in toolz's suite: its Pool test hung the run)."""
    pytester.makepyfile(
        test_fork="""
        import multiprocessing
        import signal
        import time

        def _wait():
            time.sleep(60)

        def test_terminate_ends_a_forked_child():
            child = multiprocessing.get_context("fork").Process(target=_wait)
            child.start()
            time.sleep(0.05)
            child.terminate()
            child.join(30)
            assert child.exitcode == -signal.SIGTERM
        """
    )
    for args in ((), ("--memleak", "--memleak-flamegraph=none")):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)
        result.assert_outcomes(passed=1)
