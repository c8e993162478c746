"""Reports written by a real `pytest --memleak` run: flamegraphs, HTML, JSON, CI summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SUITE = """
import pytest
KEEP = []

def test_leaks():
    KEEP.append(bytearray(4096))

def test_clean():
    assert sum(range(10)) == 45

@pytest.mark.parametrize("case", ["a/../../escape", "<script>alert(1)</script>", "ünïcødé-" + "x" * 300, "q&\\"'"])
def test_hostile_ids(case):
    KEEP.append(object())
"""


@pytest.fixture(scope="module")
def run(pytester_module: tuple[pytest.RunResult, Path]) -> tuple[pytest.RunResult, Path]:
    return pytester_module


@pytest.fixture(scope="module")
def pytester_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[pytest.RunResult, Path]:
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("reports_e2e")
    (root / "test_suite.py").write_text(SUITE)
    (root / "pytest.ini").write_text("[pytest]\n")
    summary = root / "step_summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--memleak", "-p", "no:cacheprovider", "--memleak-report-dir=out/reports", "--junitxml=junit.xml"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = pytest.RunResult(proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines(), 0.0)
    return result, root


def test_leaking_tests_get_a_flamegraph_and_clean_ones_do_not(run: tuple[pytest.RunResult, Path]) -> None:
    result, root = run
    assert result.ret == 1, result.stdout.str()
    flamegraphs = root / "out" / "reports" / "flamegraphs"
    html = sorted(p.name for p in flamegraphs.glob("*.html"))
    captures = sorted(p.name for p in flamegraphs.glob("*.bin"))
    assert any(name.startswith("test_suite.py_test_leaks") for name in html), html
    assert not any("test_clean" in name for name in html), html
    assert len(captures) == len(html) == 5  # test_leaks and the four hostile ids, all leaking
    text = result.stdout.str()
    assert "flamegraph: " in text and "memray capture: " in text
    leaks_html = next(p for p in flamegraphs.glob("test_suite.py_test_leaks*.html"))
    assert "test_leaks" in leaks_html.read_text(errors="replace")


def test_hostile_ids_stay_inside_the_report_dir(run: tuple[pytest.RunResult, Path]) -> None:
    _, root = run
    reports = (root / "out" / "reports").resolve()
    for path in root.rglob("*"):
        if path.suffix in (".html", ".bin", ".json", ".jsonl") and "flamegraph" in str(path):
            assert reports in path.resolve().parents
            assert len(path.name) <= 130
    assert not (root / "escape").exists() and not (root.parent / "escape").exists()


def test_json_report_has_every_test_with_series_and_sites(run: tuple[pytest.RunResult, Path]) -> None:
    _, root = run
    data = json.loads((root / "out" / "reports" / "memleak.json").read_text())
    assert data["schema"] == "pytest-memleak/1"
    by_id = {t["nodeid"]: t for t in data["tests"]}
    assert len(by_id) == 6
    leak = by_id["test_suite.py::test_leaks"]
    assert leak["status"] == "leak"
    assert leak["sites"][0]["site"] == "test_suite.py:6"
    assert leak["sites"][0]["bytes_per_run"] >= 4096
    assert leak["series"]["confirm.heap"] and leak["settings"]["retained"] == 0
    assert leak["flamegraph"].endswith(".html")
    assert by_id["test_suite.py::test_clean"]["status"] == "clean"
    assert data["summary"]


def test_html_report_escapes_ids_and_links_flamegraphs(run: tuple[pytest.RunResult, Path]) -> None:
    _, root = run
    page = (root / "out" / "reports" / "memleak.html").read_text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="flamegraphs/test_suite.py_test_leaks' in page
    assert "<svg" in page  # charts of the measured series
    # self-contained, opens offline: nothing is loaded from elsewhere
    for attribute in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert attribute not in page


def test_junit_properties_and_github_summary(run: tuple[pytest.RunResult, Path]) -> None:
    _, root = run
    junit = (root / "junit.xml").read_text()
    # pytest's default family, xunit2: the suite's properties, one per test
    assert 'name="memleak_status[test_suite.py::test_leaks]" value="leak"' in junit and 'value="clean"' in junit
    summary = (root / "step_summary.md").read_text().replace("&#95;", "_")  # Markdown-escaped
    assert "test_suite.py::test_leaks" in summary and "| Test" in summary


def test_unwritable_report_dir_is_reported_and_verdicts_still_print(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="KEEP = []\ndef test_leak():\n    KEEP.append(object())\n")
    (pytester.path / "afile").write_text("not a directory")
    result = pytester.runpytest_subprocess("--memleak", "-p", "no:cacheprovider", "--memleak-report-dir=afile/reports")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LEAK test_x.py::test_leak*", "*memleak: reports not written:*afile*"])
    assert "Traceback" not in result.stdout.str()
