"""Two runs compared: ``python -m pytest_memleak compare OLD.json NEW.json`` (main's run and a pull request's)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_memleak.explicit import comparing

SUITE = """
import os

KEPT = [None]  # a chain, not a list: a list's buffer reallocates every few runs, and the rate a window
               # measures then depends on where in that cycle it falls (up to 85 % more for a 157 B leak)

def _keep(name, default):
    KEPT[0] = (bytearray(int(os.environ.get(name, default))), KEPT[0])

def test_steady():
    _keep("STEADY", "100")

def test_grows():
    _keep("GROWS", "100")

def test_fixed():
    if not os.environ.get("FIXED"):
        _keep("X", "100")

def test_new():
    if os.environ.get("NEW"):
        _keep("X", "100")

def test_clean():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, **env: str) -> Path:
    for key in ("GROWS", "FIXED", "NEW"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", "--memleak-budget=none", f"--memleak-report-dir={name}")
    return pytester.path / name / "memleak.json"


def _compare(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_memleak", "compare", *map(str, args)], capture_output=True, text=True, timeout=60)


def test_a_pull_requests_run_against_mains(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_c=textwrap.dedent(SUITE))
    main = _run(pytester, monkeypatch, "main")
    pull = _run(pytester, monkeypatch, "pull", GROWS="4000", FIXED="1", NEW="1")
    done = _compare(main, pull)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"memleak compare: {main} -> {pull}"
    assert any(line.startswith("NEW LEAK  test_c.py::test_new: ") and "retained" in line for line in lines), lines
    assert any(line.startswith("GREW      test_c.py::test_grows: ") and " KiB/run (+" in line for line in lines), lines
    assert any(line.startswith("FIXED     test_c.py::test_fixed: was ") for line in lines), lines
    assert not any("test_steady" in line or "test_clean" in line for line in lines)  # unchanged: not listed
    assert lines[-1] == "regression: 1 new leak(s), 1 leak(s) grew by more than 25%"

    same = _compare(main, main)
    assert same.returncode == 0 and same.stdout.splitlines()[-1].startswith("no regression: 0 fixed")
    better = _compare(pull, main)  # the other way round: the new leak is fixed, the grown one shrank
    assert better.returncode == 1  # test_fixed leaks again
    assert "FIXED     test_c.py::test_new" in better.stdout and "SHRANK    test_c.py::test_grows" in better.stdout
    assert _compare(main, pull, "--grew", "100000%").stdout.count("GREW") == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"schema": "other/1", "tests": []}', 'not a memleak.json report (expected "schema": "pytest-memleak/1"'),
        ('{"schema": "pytest-memleak/1", "tests": [{"status": "leak"}]}', "tests[0] is not a test result with a nodeid and a status"),
    ],
    ids=["missing", "not-json", "schema", "entry"],
)
def test_bad_input_is_named_without_a_traceback(tmp_path: Path, content: str | None, message: str) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    good = tmp_path / "good.json"
    good.write_text('{"schema": "pytest-memleak/1", "tests": []}')
    done = _compare(good, bad)
    assert done.returncode == 2
    assert message in done.stderr and str(bad) in done.stderr and "Traceback" not in done.stderr
    assert _compare(good, good, "--grew", "lots").returncode == 2
    assert _compare().returncode == 2


RATES = st.one_of(st.none(), st.floats(0, 1e6))


@given(old=st.dictionaries(st.sampled_from("abcdef"), RATES), new=st.dictionaries(st.sampled_from("abcdef"), RATES))
def test_every_leak_lands_in_one_list_and_a_regression_is_a_new_or_grown_one(old: dict[str, float | None], new: dict[str, float | None]) -> None:
    def tests(rates: dict[str, float | None]) -> dict[str, dict[str, object]]:
        return {k: {"nodeid": k, "status": "clean" if v is None else "leak", "retained_per_run": v} for k, v in rates.items()}

    result = comparing.compare(tests(old), tests(new))
    listed = [c.nodeid for group in (result.new_leaks, result.grew, result.fixed, result.shrank, result.unchecked) for c in group]
    assert len(listed) == len(set(listed))
    assert {c.nodeid for c in result.new_leaks} == {k for k, v in new.items() if v is not None and old.get(k) is None}
    assert {c.nodeid for c in result.fixed} == {k for k, v in old.items() if v is not None and k in new and new[k] is None}
    assert {c.nodeid for c in result.unchecked} == {k for k, v in old.items() if v is not None and k not in new}
    assert result.regression == bool(result.new_leaks or result.grew)
    assert all(c.new is not None and c.old is not None and c.new > c.old for c in result.grew)
    # a rate that moved by less than the margin either way (run-to-run noise) is not listed
    assert all(c.new is not None and c.old is not None and c.old - c.new > comparing.GREW_BYTES for c in result.shrank)
    assert json.dumps([c.line("X") for c in result.grew])  # every line renders
