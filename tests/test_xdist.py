"""`pytest --memleak -n 2` (pytest-xdist): the verdicts of a serial run, one aggregated report.

Each worker checks its own tests (tracemalloc, the frozen heap and the counters are per
process); the controller receives every report, writes one summary, one memleak.json and one
memleak.html. Soak tests are spread across the workers and their table appears once.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("xdist")

# Several kinds of leak, each on its own line, and several kinds of clean code, over four
# files so that both workers get some of each. A failing, a skipped and a non-repeatable test
# give the other verdicts.
SUITE = {
    "test_leaks_heap": """
        import functools
        REGISTRY = {}
        HISTORY = []
        LOG = [""]
        class Conversation:
            def __init__(self, cid):
                self.cid = cid
                self.messages = []
        class Service:
            @functools.lru_cache(maxsize=None)
            def lookup(self, key):
                return [key] * 4
        def test_dict_registry():
            REGISTRY[len(REGISTRY)] = Conversation(len(REGISTRY))
        def test_list_grows():
            HISTORY.append({"role": "user", "text": "hi"})
        def test_lru_cache_method():
            Service().lookup("k")
        import pytest
        @pytest.mark.memleak  # below 512 B only a walk of pymalloc's arenas sees it: affordable when marked
        def test_growing_string():
            LOG[0] = LOG[0] + "request handled;"
    """,
    "test_leaks_resources": """
        import os
        import threading
        import pytest
        FILES = []
        STOP = threading.Event()
        ACTIVE = []
        class Session:
            pass
        @pytest.fixture
        def session():
            s = Session()
            ACTIVE.append(s)
            yield s
        def test_fixture_registers_global(session):
            assert session in ACTIVE
        def test_file_left_open():
            FILES.append(open(os.devnull, "rb"))
        def test_thread_left_running():
            threading.Thread(target=STOP.wait, daemon=True).start()
    """,
    "test_clean_a": """
        import collections
        import functools
        import pytest
        TABLE = None
        HISTORY = collections.deque(maxlen=8)
        def table():
            global TABLE
            if TABLE is None:
                TABLE = {i: str(i) for i in range(1000)}
            return TABLE
        @functools.lru_cache(maxsize=3)
        def render(i):
            return {"i": i, "payload": [i] * 10}
        N = [0]
        def test_lazy_table():
            assert table()[10] == "10"
        def test_bounded_lru():
            N[0] += 1
            render(N[0])
        def test_deque_history():
            HISTORY.append({"role": "user", "text": "x" * 100})
        @pytest.mark.parametrize("n", range(6))
        def test_parametrized(n):
            assert sum(range(n)) == n * (n - 1) // 2
        def test_fails():
            assert False, "own failure"
        def test_skips():
            pytest.skip("not here")
    """,
    "test_clean_b": """
        import pytest
        ACTIVE = []
        SEEN = set()
        class Node:
            def __init__(self):
                self.other = None
        @pytest.fixture
        def session():
            s = object()
            ACTIVE.append(s)
            yield s
            ACTIVE.remove(s)
        @pytest.fixture(scope="module")
        def database():
            return {"rows": list(range(100))}
        def test_garbage_cycles():
            a, b = Node(), Node()
            a.other, b.other = b, a
        def test_fixture_releases_at_teardown(session):
            assert session in ACTIVE
        def test_module_fixture(database):
            assert len(database["rows"]) == 100
        class TestGrouped:
            def test_one(self):
                assert "x".upper() == "X"
            def test_two(self, tmp_path):
                (tmp_path / "f.txt").write_text("data")
        def test_only_once():
            assert "x" not in SEEN
            SEEN.add("x")
    """,
}

LEAKING = {
    "test_leaks_heap.py::test_dict_registry",
    "test_leaks_heap.py::test_list_grows",
    "test_leaks_heap.py::test_lru_cache_method",
    "test_leaks_heap.py::test_growing_string",
    "test_leaks_resources.py::test_fixture_registers_global",
    "test_leaks_resources.py::test_file_left_open",
    "test_leaks_resources.py::test_thread_left_running",
}
ALL_CHECKED = 7 + 3 + 6 + 2 + 5 + 1  # every test of the suite
COUNTS_LINE = f"{ALL_CHECKED} checked: 7 leaking, 14 clean, 1 inconclusive, 2 without verdict (not passed)"
ARGS = ("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")


def _run(pytester: pytest.Pytester, report_dir: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*ARGS, f"--memleak-report-dir={report_dir}", *args)


def _report(pytester: pytest.Pytester, report_dir: str) -> dict[str, Any]:
    return json.loads((pytester.path / report_dir / "memleak.json").read_text())


def _verdicts(report: dict[str, Any]) -> dict[str, str]:
    ids = [t["nodeid"] for t in report["tests"]]
    assert len(ids) == len(set(ids)), f"a test appears more than once: {sorted(ids)}"
    return {t["nodeid"]: t["status"] for t in report["tests"]}


def _workers_by_test(stdout: str) -> dict[str, str]:
    """`[gw0] [ 10%] PASSED test_x.py::test_y` lines of a verbose xdist run."""
    found = {}
    for match in re.finditer(r"^\[(gw\d+)\] \[\s*\d+%\] \w+ (\S+)", stdout, re.MULTILINE):
        found[match.group(2)] = match.group(1)
    return found


@pytest.mark.slow
def test_verdicts_under_n2_equal_serial_and_one_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**SUITE)

    # every test checked in both runs: what the cost budget reaches is timing (beside a loaded .ci/run, the
    # serial run's budget once left a leak unchecked), and the budget under -n 2 has a test of its own below
    serial = _run(pytester, "serial", "--memleak-budget=none")
    serial.assert_outcomes(passed=15, failed=8, skipped=1)
    parallel = _run(pytester, "parallel", "--memleak-budget=none", "-n", "2", "-v")
    parallel.assert_outcomes(passed=15, failed=8, skipped=1)

    serial_report, parallel_report = _report(pytester, "serial"), _report(pytester, "parallel")
    serial_verdicts, parallel_verdicts = _verdicts(serial_report), _verdicts(parallel_report)
    # every test exactly once, and the same verdict for each as in the serial run
    assert len(parallel_verdicts) == ALL_CHECKED
    assert parallel_verdicts == serial_verdicts
    assert {n for n, s in parallel_verdicts.items() if s == "leak"} == LEAKING
    assert parallel_verdicts["test_clean_b.py::test_only_once"] == "inconclusive"
    assert parallel_verdicts["test_clean_a.py::test_fails"] == parallel_verdicts["test_clean_a.py::test_skips"] == "no-verdict"
    # the leak is found at the same line either way (where both runs traced it: on a loaded
    # machine a thread leak can slow its runs down first, and then the thread count is the verdict)
    def top_sites(report: dict[str, Any]) -> dict[str, str]:
        return {t["nodeid"]: t["sites"][0]["site"] for t in report["tests"] if t["status"] == "leak" and t["sites"]}

    serial_sites, parallel_sites = top_sites(serial_report), top_sites(parallel_report)
    both = set(serial_sites) & set(parallel_sites)
    assert both >= LEAKING - {"test_leaks_resources.py::test_thread_left_running"}
    assert {n: parallel_sites[n] for n in both} == {n: serial_sites[n] for n in both}
    assert parallel_report["summary"]["tests"] == ALL_CHECKED
    assert parallel_report["summary"]["by_status"] == serial_report["summary"]["by_status"]
    assert sorted(parallel_report["summary"]["leaking"]) == sorted(LEAKING)

    # each worker checked its own share of the tests
    workers = _workers_by_test(parallel.stdout.str())
    assert set(workers) == set(parallel_verdicts)
    assert set(workers.values()) == {"gw0", "gw1"}

    # the controller alone writes the summary and the report files, once for the whole run
    for result in (serial, parallel):
        out = result.stdout.str()
        assert out.count("memleak summary") == 1
        result.stdout.fnmatch_lines(["*= memleak summary =*", COUNTS_LINE])
        listed = [line.split(" ")[1] for line in result.stdout.lines if line.startswith("LEAK ")]
        assert sorted(listed) == sorted(LEAKING)
    # native/ holds memray captures of native findings (a leaked thread keeps its stack), retention/ reference graphs; no flamegraphs
    assert sorted(p.name for p in (pytester.path / "parallel").iterdir() if p.name not in ("native", "retention")) == ["memleak.html", "memleak.json"]
    html = (pytester.path / "parallel" / "memleak.html").read_text()
    for nodeid in LEAKING:
        assert nodeid in html
    # and no worker wrote a report of its own anywhere
    written = sorted(str(p.relative_to(pytester.path)) for p in pytester.path.rglob("memleak*.*"))
    assert written == ["parallel/memleak.html", "parallel/memleak.json", "serial/memleak.html", "serial/memleak.json"]


def test_soak_tests_spread_across_workers_and_one_table(pytester: pytest.Pytester) -> None:
    # Three items on two workers are sent round-robin: the two soaks go to different workers.
    pytester.makepyfile(
        test_soaks="""
        import collections
        import time
        import pytest
        LEAKED = []
        RING = collections.deque(maxlen=16)
        @pytest.mark.memleak_soak(duration="2s", scenario="append", variant="leak")
        def test_append_leak():
            LEAKED.append(b"x" * (100 * 1024))  # written, so it is resident
            time.sleep(0.005)
        @pytest.mark.memleak_soak(duration="2s", scenario="ring", variant="bounded")
        def test_ring_bounded():
            RING.append(b"x" * (100 * 1024))
            time.sleep(0.005)
        def test_quick():
            assert [1] * 3 == [1, 1, 1]
        """
    )
    result = _run(pytester, "reports", "-n", "2", "-v")
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=1)

    workers = _workers_by_test(out)
    assert workers["test_soaks.py::test_append_leak"] != workers["test_soaks.py::test_ring_bounded"]
    # ...and so they ran in two processes, each writing its own samples file
    pids = {}
    for path in (pytester.path / "reports" / "soak").glob("*.jsonl"):
        meta = json.loads(path.read_text().splitlines()[0])
        pids[meta["nodeid"]] = meta["pid"]
    assert set(pids) == {"test_soaks.py::test_append_leak", "test_soaks.py::test_ring_bounded"}
    assert len(set(pids.values())) == 2

    assert out.count("= memleak soak =") == 1
    assert out.count("memleak summary") == 1
    result.stdout.fnmatch_lines(
        [
            "*= memleak summary =*",
            "1 checked: 0 leaking, 1 clean, 0 inconclusive, 0 without verdict (not passed)",
            "*= memleak soak =*",
            "scenario*variant*verdict*growth*to memory limit*iterations",
        ]
    )
    table = out.split("= memleak soak =", 1)[1]
    assert len(re.findall(r"^append\s+leak\s+LEAK\s", table, re.MULTILINE)) == 1
    assert len(re.findall(r"^ring\s+bounded\s+ok\s", table, re.MULTILINE)) == 1

    report = _report(pytester, "reports")
    assert sorted(s["nodeid"] for s in report["soaks"]) == ["test_soaks.py::test_append_leak", "test_soaks.py::test_ring_bounded"]
    assert {s["nodeid"]: s["status"] for s in report["soaks"]} == {
        "test_soaks.py::test_append_leak": "leak",
        "test_soaks.py::test_ring_bounded": "clean",
    }
    assert [t["nodeid"] for t in report["tests"]] == ["test_soaks.py::test_quick"]
    assert (pytester.path / "reports" / "memleak.html").is_file()


@pytest.mark.slow
def test_budgeted_rotation_under_n2_and_the_summary_names_the_workers_floor(pytester: pytest.Pytester) -> None:
    """With -n 2 each worker keeps the budget for its tests; the controller's summary names the floor of
    the session's 120 tests (it collects none itself), and saves the rotation the workers read next time."""
    pytester.makepyfile(
        test_rot="""
        import time
        import pytest

        @pytest.mark.parametrize("n", range(8))
        def test_slow(n):
            time.sleep(0.15)

        @pytest.mark.parametrize("n", range(112))
        def test_filler(n):
            pass
        """
    )
    args = ("--memleak", "--memleak-flamegraph=none", "--memleak-budget=0", "-n", "2")
    first = pytester.runpytest_subprocess(*args)
    first.assert_outcomes(passed=120)
    first.stdout.fnmatch_lines(["*memleak_budget 0: checking takes 0 of the suite's own time, plus 0.14 s*"])
    checked = {t["nodeid"] for t in _report(pytester, "reports")["tests"] if t["status"] == "clean"}
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=120)
    rested = {t["nodeid"] for t in _report(pytester, "reports")["tests"] if t["reason"].startswith("not checked: rested")}
    assert checked and rested == checked
