"""The flamegraph of a leaking test points at the leak: real leaks of several shapes, checked
through ``--memleak`` in a real inner pytest, read back with memray's own reader."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

memray = pytest.importorskip("memray", reason="memray is not installed (not available on Windows)")

SHAPES = '''
import numpy

REGISTRY = {}
ITEMS = []
LISTENERS = []
ARRAYS = []


class Conversation:
    def __init__(self, n):
        self.n = n
        self.buffer = bytearray(1500)  # leak: dict_registry


def test_dict_registry():
    REGISTRY[len(REGISTRY)] = Conversation(len(REGISTRY))


def test_list_append():
    ITEMS.append("x" * 400 + str(len(ITEMS)))  # leak: list_append


def test_listener_closure():
    state = {"seen": [0] * 50}  # leak: listener_closure

    def on_event(event):
        state["seen"].append(event)

    LISTENERS.append(on_event)


def test_native_buffer():
    ARRAYS.append(numpy.ones(4096))  # leak: native_buffer (32 KiB a run, malloc'd by numpy)
'''


def leaking_lines(source: str) -> dict[str, int]:
    return {m.group(1): n for n, line in enumerate(source.splitlines(), 1) if (m := re.search(r"# leak: (\w+)", line))}


def by_line(capture: Path, filename: str) -> tuple[dict[int, int], int]:
    """Leaked bytes by the innermost line of ``filename`` on their stack, and all leaked bytes."""
    lines: dict[int, int] = {}
    total = 0
    for record in memray.FileReader(str(capture)).get_leaked_allocation_records(merge_threads=True):
        total += record.size
        own = [frame for frame in record.stack_trace() if frame[1].endswith(filename)]
        if own:
            lines[own[0][2]] = lines.get(own[0][2], 0) + record.size
    return lines, total


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    pytest.importorskip("numpy")
    root = tmp_path_factory.mktemp("shapes")
    (root / "test_shapes.py").write_text(SHAPES)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--memleak", "-p", "no:cacheprovider", "-p", "no:randomly", "test_shapes.py"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tests = {t["nodeid"].split("::")[-1]: t for t in json.loads((root / "reports" / "memleak.json").read_text())["tests"]}
    return root, tests, proc.stdout


@pytest.mark.parametrize("shape", ["dict_registry", "list_append", "native_buffer"])
def test_the_leaking_line_holds_most_of_what_the_kept_capture_leaked(shapes: tuple[Path, dict, str], shape: str) -> None:
    root, tests, _ = shapes
    test = tests[f"test_{shape}"]
    assert test["status"] == "leak", test["reason"]
    lines, total = by_line(Path(test["capture"]), "test_shapes.py")
    line = leaking_lines(SHAPES)[shape]
    assert max(lines, key=lambda n: lines[n]) == line, (lines, total)
    assert lines[line] >= 0.5 * total, (lines, total)


def test_a_leaking_closure_is_the_top_line_of_its_own(shapes: tuple[Path, dict, str]) -> None:
    """A closure kept by a listener: its cells and frame objects are allocated as pytest calls the
    test, so part of it is counted under pytest's frames; of the test's own lines, the leaking
    one leads."""
    _, tests, _ = shapes
    test = tests["test_listener_closure"]
    assert test["status"] == "leak", test["reason"]
    lines, total = by_line(Path(test["capture"]), "test_shapes.py")
    line = leaking_lines(SHAPES)["listener_closure"]
    assert max(lines, key=lambda n: lines[n]) == line, (lines, total)
    assert sum(lines.values()) >= 0.5 * total, (lines, total)


def test_the_failure_says_which_runs_the_capture_covers_and_the_page_hides_pytest(shapes: tuple[Path, dict, str]) -> None:
    root, tests, stdout = shapes
    for name, test in tests.items():
        [line] = [d for d in test["details"] if d.startswith("flamegraph: ")]
        runs, first, last = (int(x.replace(",", "")) for x in re.findall(r"[\d,]+", line)[:3])
        assert last - first + 1 == runs and first > 100, line  # warmed-up runs, after the check's own
        assert re.search(r"[\d.]+ (KiB|MiB) of the leak at its rate$", line), line
        assert f"  {line}" in stdout  # in the failure's detail section
        page = Path(test["flamegraph"]).read_text(encoding="utf-8")
        assert "pytest and its plugins (their frames hidden)" in page
        assert "_multicall" not in page and "pytest_pyfunc_call" not in page, name
        assert len(page.encode()) < 512 * 1024
        assert Path(test["capture"]).stat().st_size < 256 * 1024  # aggregated: tens of KiB
    assert len(list((root / "reports" / "flamegraphs" / "assets").iterdir())) <= 12  # shared by all four pages


def test_a_full_capture_answers_memray_stats(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_full="ITEMS = []\n\ndef test_grows():\n    ITEMS.append('x' * 400 + str(len(ITEMS)))\n")
    result = pytester.runpytest_subprocess("--memleak", "--memleak-capture=full", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    [capture] = (pytester.path / "reports" / "flamegraphs").glob("*.bin")
    stats = subprocess.run([sys.executable, "-m", "memray", "stats", str(capture)], capture_output=True, text=True, timeout=120)
    assert stats.returncode == 0 and "Total memory allocated" in stats.stdout, stats.stderr
