"""Peak budgets (``memleak_peak``, as pytest-memray's ``limit_memory``): the high-water mark of a test's own call."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("memray", reason="memray is not installed (not available on Windows)")

SUITE = """
import os

import pytest

def make(n):
    return [bytearray(1024 * 1024) for _ in range(n)]

@pytest.mark.memleak(peak="10 MiB")
def test_big():
    data = make(int(os.environ.get("BIG", "30")))
    assert data

@pytest.mark.memleak(peak="10 MiB")
def test_small():
    data = make(2)
    assert data

def test_unmarked():
    make(30)
"""
ARGS = ("-p", "no:cacheprovider", "--memleak-flamegraph=none")
# The frame of line 6: the list comprehension's own before Python 3.12; PEP 709 (3.12) inlines
# comprehensions into the function that holds them.
LINE6 = "test_p.py:6 (<listcomp>)" if sys.version_info < (3, 12) else "test_p.py:6 (make)"


def _report(pytester: pytest.Pytester) -> dict[str, dict]:
    return {t["nodeid"].split("::")[1]: t for t in json.loads((pytester.path / "reports" / "memleak.json").read_text())["tests"]}


def test_a_call_over_its_peak_budget_fails_naming_what_was_alive_at_the_peak(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_p=SUITE)
    result = pytester.runpytest_subprocess(*ARGS)  # without --memleak: the marked tests are checked
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            # (the peak may hold a MiB or so beside the list: the interpreter's own, with no Python frame)
            f"memleak: peak memory 3?.* MiB during the test's call exceeds its budget 10.0 MiB (memleak_peak); at the peak: {LINE6}: 30.0 MiB",
            "  alive at the peak, largest first:",
            f"    {LINE6}: 30.0 MiB",
            "  memray capture of the call: *test_p.py_test_big-*.bin (memray flamegraph on it shows the peak)",
            "PEAK test_p.py::test_big - peak memory 3?.* MiB *",
            "FAILED test_p.py::test_big - memleak: peak memory 3?.* MiB *",
        ]
    )
    report = _report(pytester)
    big, small = report["test_big"], report["test_small"]
    assert big["peak"] > 30 * 2**20 and big["peak_budget"] == 10 * 2**20 and big["peak_over"]
    # no leak: the peak is a budget of its own (on a loaded machine, or Python 3.10, a test that
    # allocates 30 MiB a run may not settle a stray block within its bound: it says so)
    assert big["status"] == "clean" or (big["status"] == "inconclusive" and " bound (" in big["reason"]), big["reason"]
    assert 2 * 2**20 <= small["peak"] < 10 * 2**20 and small["peak_over"] is None
    assert "test_unmarked" not in report  # not asked for: not measured
    # the capture is memray's: its flamegraph shows the peak
    html = pytester.path / "peak.html"
    drawn = subprocess.run([sys.executable, "-m", "memray", "flamegraph", "-o", str(html), big["peak_capture"]], capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    assert "test_p.py" in html.read_text(errors="replace")
    assert "peak_over" not in (pytester.path / "reports" / "memleak.html").read_text() and "exceeds its budget 10.0 MiB" in (
        pytester.path / "reports" / "memleak.html"
    ).read_text()


def test_the_peak_budget_from_the_command_line_and_warn_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_p=SUITE.replace('@pytest.mark.memleak(peak="10 MiB")\n', ""))
    everywhere = pytester.runpytest_subprocess(*ARGS, "--memleak", "--memleak-peak=20 MiB")
    everywhere.assert_outcomes(passed=1, failed=2)  # test_big and test_unmarked: 30 MiB each
    warned = pytester.runpytest_subprocess(*ARGS, "--memleak", "--memleak-peak=20 MiB", "--memleak-warn")
    warned.assert_outcomes(passed=3)
    warned.stdout.fnmatch_lines(["PEAK test_p.py::test_big - *", "PEAK test_p.py::test_unmarked - *"])
    shutil.rmtree(pytester.path / "reports")
    plain = pytester.runpytest_subprocess(*ARGS, "--memleak-peak=20 MiB")  # without --memleak nothing is asked for
    plain.assert_outcomes(passed=3)
    assert not (pytester.path / "reports").exists()


def test_compare_reports_a_peak_that_grew(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_p=SUITE.replace('peak="10 MiB"', 'peak="1 GiB"'))
    monkeypatch.setenv("BIG", "5")
    pytester.runpytest_subprocess(*ARGS, "--memleak-report-dir=old")
    monkeypatch.setenv("BIG", "40")
    pytester.runpytest_subprocess(*ARGS, "--memleak-report-dir=new")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_memleak", "compare", "old/memleak.json", "new/memleak.json"],
        capture_output=True, text=True, timeout=60, cwd=pytester.path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert any(line.startswith("PEAK      test_p.py::test_big: 5.") and "-> 40." in line for line in done.stdout.splitlines()), done.stdout
    assert done.stdout.splitlines()[-1].endswith("1 peak(s) grew by more than 25%")
