"""Adopting the plugin in an existing suite: nothing changes until it is asked for.

With the plugin installed and not enabled, a suite runs as it does with the plugin left out
(``-p no:memleak``): its own markers stay its own, its tests run once, no file is written.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

# A suite with a `soak` marker of its own, positional arguments and keywords of its own, under
# --strict-markers: the plugin's soak marker is `memleak_soak`, so this one is left alone.
OWN_SOAK_INI = """
[pytest]
addopts = --strict-markers
markers =
    soak(kind, hours=1): a long test of this project's own
"""

OWN_SOAK_TESTS = """
import os

import pytest

def _count(name):
    with open(os.path.join(os.environ["RUNS_DIR"], name), "a") as f:
        f.write("x")

@pytest.mark.soak("nightly")
def test_nightly():
    _count("nightly")

@pytest.mark.soak("weekly", hours=12)
def test_weekly():
    _count("weekly")

def test_plain():
    _count("plain")
"""


PYTESTERS_OWN = ("runs", "stdout", "stderr", "__pycache__")  # (pytester's subprocess files, the tests' run counts)


def _tree(root: pathlib.Path) -> set[str]:
    """Every path under root but pytester's own."""
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if not any(part in PYTESTERS_OWN or part.startswith("runpytest-") for part in path.relative_to(root).parts)
    }


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, *args: str) -> tuple[pytest.RunResult, dict[str, int]]:
    runs = pytester.path / "runs" / name
    runs.mkdir(parents=True)
    monkeypatch.setenv("RUNS_DIR", str(runs))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    return result, {p.name: len(p.read_text()) for p in runs.iterdir()}


def test_a_suites_own_soak_marker_is_left_alone(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini(OWN_SOAK_INI)
    pytester.makepyfile(test_own=OWN_SOAK_TESTS)
    before = _tree(pytester.path)

    without, runs_without = _run(pytester, monkeypatch, "without", "-p", "no:memleak")
    installed, runs_installed = _run(pytester, monkeypatch, "installed")
    for result in (without, installed):
        assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
        result.assert_outcomes(passed=3)
    # each test ran once, as a test: not as a soak of ours
    assert runs_without == runs_installed == {"nightly": 1, "weekly": 1, "plain": 1}
    # and nothing was written: no reports, no soak samples
    assert _tree(pytester.path) == before

    checked, runs_checked = _run(pytester, monkeypatch, "checked", "--memleak", "--memleak-report-dir=out")
    assert checked.ret == pytest.ExitCode.OK, checked.stdout.str() + checked.stderr.str()
    checked.assert_outcomes(passed=3)
    report = json.loads((pytester.path / "out" / "memleak.json").read_text())
    # under --memleak the project's soak tests are checked as any other test, repeated, and no soak ran
    assert {t["nodeid"]: t["status"] for t in report["tests"]} == {
        "test_own.py::test_nightly": "clean",
        "test_own.py::test_weekly": "clean",
        "test_own.py::test_plain": "clean",
    }
    assert report["soaks"] == [] and not (pytester.path / "out" / "soak").exists()
    assert runs_checked["nightly"] > 1 and runs_checked["weekly"] > 1


def test_an_unregistered_soak_marker_fails_as_it_would_without_the_plugin(pytester: pytest.Pytester) -> None:
    """The plugin registers no `soak` marker, so --strict-markers says of it what it says without the plugin."""
    pytester.makepyfile(test_s="import pytest\n\n@pytest.mark.soak\ndef test_s():\n    pass\n")
    outputs = []
    for args in (["-p", "no:memleak"], []):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers", *args)
        assert result.ret == pytest.ExitCode.INTERRUPTED
        result.stdout.fnmatch_lines(["*'soak' not found in `markers` configuration option*"])
        outputs.append(result.ret)
    assert outputs[0] == outputs[1]


def test_our_soak_marker_still_runs_without_memleak(pytester: pytest.Pytester) -> None:
    """`memleak_soak` was asked for by name: it runs as a soak without --memleak, and its keywords are validated."""
    pytester.makepyfile(
        test_s="""
        import pytest

        @pytest.mark.memleak_soak(duration="0.5s", sample_every="0.05s", expect_leak=False)
        def test_idle():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak-report-dir=out")
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "out" / "memleak.json").read_text())
    assert [s["nodeid"] for s in report["soaks"]] == ["test_s.py::test_idle"]
    assert list((pytester.path / "out" / "soak").glob("*.jsonl"))

    pytester.makepyfile(test_s="import pytest\n\n@pytest.mark.memleak_soak('nightly')\ndef test_idle():\n    pass\n")
    bad = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "memleak_soak" in bad.stderr.str() and "Traceback" not in bad.stderr.str()


def test_no_file_is_written_when_no_test_is_checked(pytester: pytest.Pytester) -> None:
    """--memleak with every test left out (no_memleak), and a run without --memleak: no reports."""
    pytester.makepyfile(
        test_n="""
        import pytest

        @pytest.mark.no_memleak(reason="warms a cache")
        def test_n():
            pass

        def test_m():
            pass
        """
    )
    before = _tree(pytester.path)
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=2)
    assert _tree(pytester.path) == before
    none_checked = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "test_n.py::test_n")
    none_checked.assert_outcomes(passed=1)
    assert _tree(pytester.path) == before, sorted(_tree(pytester.path) - before)
    assert not os.path.exists(pytester.path / "reports")


WARN_SUITE = """
KEPT = []

def test_leaks():
    KEPT.append(object())

def test_clean():
    pass
"""


@pytest.mark.parametrize("where", ["cli", "env", "ini"])
def test_warn_only_reports_a_leak_and_fails_no_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    pytester.makepyfile(test_w=WARN_SUITE)
    args = ["-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", "--junitxml=junit.xml"]
    if where == "cli":
        args.append("--memleak-warn")
    elif where == "env":
        monkeypatch.setenv("MEMLEAK_WARN", "true")
    else:
        pytester.makeini("[pytest]\nmemleak_warn = true\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*memleak summary*",
            "2 checked: 1 leaking, 1 clean, 0 inconclusive, 0 without verdict (not passed)",
            "warn-only (memleak_warn): 1 leak(s) reported, and no test failed because of them",
            "LEAK (warn-only) test_w.py::test_leaks - retained *",
        ]
    )
    report = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    by_id = {t["nodeid"]: t for t in report["tests"]}
    assert by_id["test_w.py::test_leaks"]["status"] == "leak" and by_id["test_w.py::test_leaks"]["warned"] is True
    assert by_id["test_w.py::test_clean"]["warned"] is False
    assert by_id["test_w.py::test_leaks"]["settings"]["warn"] is True
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="memleak_status" value="leak"' in junit and "<failure" not in junit
    html = (pytester.path / "reports" / "memleak.html").read_text()
    assert "warn-only, the test passed: retained" in html


def test_without_warn_the_same_leak_fails(pytester: pytest.Pytester) -> None:
    """The control: the suite above, its leak failing its test, and a marker turning warn-only on for one test."""
    pytester.makepyfile(
        test_w=WARN_SUITE
        + """
import pytest

@pytest.mark.memleak(warn=True)
def test_known_leak():
    KEPT.append(object())
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["LEAK test_w.py::test_leaks - retained *", "LEAK (warn-only) test_w.py::test_known_leak - retained *"])


def test_warn_only_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_w=WARN_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--memleak", "--memleak-warn", "--memleak-flamegraph=none")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["LEAK (warn-only) test_w.py::test_leaks - retained *"])
