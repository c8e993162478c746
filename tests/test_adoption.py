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
    assert 'name="memleak_status[test_w.py::test_leaks]" value="leak"' in junit and "<failure" not in junit
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


BASELINE_SUITE = """
import os

KEPT = [None]  # a chain, not a list: a list's buffer reallocates every few runs, which moves a small rate


def _keep(size):
    KEPT[0] = (bytearray(size), KEPT[0])

def test_known():
    _keep(100)

def test_grows():
    _keep(int(os.environ.get("GROWS_BY", "100")))

def test_new():
    if os.environ.get("NEW_LEAK"):
        _keep(100)

def test_fixed():
    if not os.environ.get("FIXED"):
        _keep(100)
"""
BASELINE_ARGS = ("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", "--memleak-budget=none", "--memleak-baseline=known-leaks.json")


@pytest.mark.slow
def test_a_baseline_passes_known_leaks_and_fails_new_and_grown_ones(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_b=BASELINE_SUITE)
    written = pytester.runpytest_subprocess(*BASELINE_ARGS, "--memleak-baseline-write")
    written.assert_outcomes(passed=1, failed=3)  # writing records the leaks, which fail as usual
    written.stdout.fnmatch_lines(["baseline written to *known-leaks.json: 3 known leak(s)"])
    path = pytester.path / "known-leaks.json"
    text = path.read_text()
    data = json.loads(text)
    assert data["schema"] == 1 and sorted(data["leaks"]) == ["test_b.py::test_fixed", "test_b.py::test_grows", "test_b.py::test_known"]
    assert all(set(entry) >= {"heap"} for entry in data["leaks"].values())
    lines = text.splitlines()
    assert [line.split('"')[1] for line in lines if line.startswith('    "')] == sorted(data["leaks"])  # one test a line

    monkeypatch.setenv("GROWS_BY", "2000")
    monkeypatch.setenv("NEW_LEAK", "1")
    monkeypatch.setenv("FIXED", "1")
    result = pytester.runpytest_subprocess(*BASELINE_ARGS)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=2)
    outcome = {t["nodeid"].split("::")[1]: t for t in json.loads((pytester.path / "reports" / "memleak.json").read_text())["tests"]}
    assert outcome["test_known"]["status"] == "leak" and outcome["test_known"]["known"] is True
    assert outcome["test_grows"]["status"] == "leak" and outcome["test_grows"]["known"] is False
    assert any("grew beyond the baseline" in line for line in outcome["test_grows"]["details"])
    assert outcome["test_new"]["status"] == "leak" and outcome["test_new"]["known"] is False
    assert outcome["test_fixed"]["status"] == "clean"
    result.stdout.fnmatch_lines(
        [
            "baseline (memleak_baseline): 1 known leak(s) within their recorded rates, and their tests passed",
            "LEAK (known) test_b.py::test_known - *",
            "LEAK test_b.py::test_grows - *",
            "LEAK test_b.py::test_new - *",
            "FIXED test_b.py::test_fixed - in the baseline known-leaks.json, now clean: its entry can go",
        ]
    )
    assert path.read_text() == text  # read, not written

    rewritten = pytester.runpytest_subprocess(*BASELINE_ARGS, "--memleak-baseline-write")
    rewritten.assert_outcomes(passed=2, failed=2)
    assert sorted(json.loads(path.read_text())["leaks"]) == ["test_b.py::test_grows", "test_b.py::test_known", "test_b.py::test_new"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "*the baseline *missing.json (from --memleak-baseline (the command line)) cannot be used: no such file*"),
        ("{not json", "*cannot be used: not JSON*"),
        ('{"schema": 1, "leaks": {"t.py::test_a": {"heap": "lots"}}}', "*the entry 't.py::test_a' has 'heap': 'lots', not a rate per run of 0 or more*"),
        ('{"schema": 1, "leaks": {"t.py::test_a": []}}', "*the entry 't.py::test_a' is [], not an object of kinds and rates*"),
        ('{"schema": 2, "leaks": {}}', '*"schema" is 2, not 1*'),
    ],
    ids=["missing", "not-json", "bad-rate", "bad-entry", "schema"],
)
def test_a_bad_baseline_is_a_usage_error(pytester: pytest.Pytester, content: str | None, message: str) -> None:
    pytester.makepyfile(test_b="def test_b():\n    pass\n")
    name = "missing.json" if content is None else "bad.json"
    if content is not None:
        (pytester.path / name).write_text(content)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", f"--memleak-baseline={name}", "--memleak-baseline-write" if content is not None else "--memleak")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()
    if content is not None:
        assert (pytester.path / name).read_text() == content  # a bad file is never overwritten


def test_writing_a_baseline_needs_its_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_b="def test_b():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "--memleak-baseline-write")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--memleak-baseline-write (the command line) writes a baseline, but no file is given: set memleak_baseline*"])


def test_a_hypothesis_test_in_a_unittest_case_is_checked(pytester: pytest.Pytester) -> None:
    """Each re-run calls the method on a new TestCase instance, which hypothesis's
    differing_executors health check fails ("called from multiple different executors"): the
    re-runs suppress it, as hypothesis's own plugin does for parametrized tests, and the test's
    own run keeps its settings. Seen in idna's suite: 15 such tests were "not repeatable"."""
    pytest.importorskip("hypothesis")
    pytester.makepyfile(
        test_h="""
        import unittest

        import pytest
        from hypothesis import given, settings
        from hypothesis import strategies as st

        KEPT = []

        class TestProps(unittest.TestCase):
            @pytest.mark.memleak(confirm_seconds="30s")  # (a traced hypothesis run is slow: on a loaded machine 0.25 s)
            @settings(database=None, max_examples=20)
            @given(st.integers())
            def test_roundtrip(self, n):
                self.assertEqual(int(str(n)), n)

            @pytest.mark.memleak(confirm_seconds="30s")  # (a traced hypothesis run is slow)
            @settings(database=None, max_examples=5)
            @given(st.integers())
            def test_keeps(self, n):
                KEPT.append(object())

        def test_settings_untouched():
            # (hypothesis's "ci" profile, loaded when CI is set, suppresses too_slow)
            from hypothesis import HealthCheck
            assert HealthCheck.differing_executors not in TestProps.test_roundtrip._hypothesis_internal_use_settings.suppress_health_check
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    report = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    found = {t["nodeid"].split("::")[-1]: t for t in report["tests"]}
    assert found["test_roundtrip"]["status"] == "clean", found["test_roundtrip"]["reason"]
    assert found["test_keeps"]["status"] == "leak", found["test_keeps"]["reason"]
    assert "test_h.py:20" in found["test_keeps"]["reason"]


def test_hypothesis_frames_are_machinery_though_only_a_test_file_imports_it(pytester: pytest.Pytester) -> None:
    """The session's classifier is made at configure, before the test files import hypothesis
    (its pytest plugin does not): its engine's bookkeeping, a ConjectureData kept now and then for
    a thousand runs, was charged to the test that called it (a clean hypothesis test read as a
    leak of 49 B a run, on 3.10 under load). Read from the packages' locations, not sys.modules."""
    pytest.importorskip("hypothesis")
    result = pytester.runpython_c(
        "import sys\n"
        "from pytest_memleak.sites import Classifier\n"
        "classifier = Classifier('.')\n"
        "assert 'hypothesis' not in sys.modules\n"
        "import hypothesis\n"
        "import hypothesis.internal.conjecture.data as data\n"
        "stack = [(data.__file__, 717), (hypothesis.__file__, 1), ('test_h.py', 11)]\n"
        "print('site', classifier.site_of(stack))\n"
    )
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["site None"])


THIRD_PARTY = """
_SEEN = []

def remember(value):
    _SEEN.append([value] * 4)
"""

IGNORE_SUITE = """
import thirdparty

OWN = []

def test_only_theirs():
    thirdparty.remember(1)

def test_theirs_and_ours():
    thirdparty.remember(2)
    OWN.append(bytearray(300))
"""


@pytest.mark.parametrize("where", ["ini", "marker"])
def test_ignored_sites_are_not_counted_and_said(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, where: str
) -> None:
    """memleak_ignore: a third-party leak you cannot fix. The library lives outside the rootdir, so
    the site the report names is the test's line, and the pattern matches the library's frame in
    its stack."""
    lib = tmp_path_factory.mktemp("outside") / "site_lib"  # outside the rootdir, as an installed library is
    lib.mkdir()
    (lib / "thirdparty.py").write_text(THIRD_PARTY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(lib), os.environ.get("PYTHONPATH")])))
    suite = IGNORE_SUITE
    if where == "ini":
        pytester.makeini("[pytest]\nmemleak_ignore = */site_lib/thirdparty.py:*, other/*\n")
    else:
        suite = "import pytest\npytestmark = pytest.mark.memleak(ignore='*/site_lib/thirdparty.py:*')\n" + IGNORE_SUITE
    pytester.makepyfile(test_i=suite)
    args = ("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", "--memleak-budget=none")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1, failed=1)
    report = {t["nodeid"].split("::")[1]: t for t in json.loads((pytester.path / "reports" / "memleak.json").read_text())["tests"]}
    assert report["test_only_theirs"]["status"] == "clean", report["test_only_theirs"]["reason"]
    assert report["test_only_theirs"]["ignored_per_run"] > 0
    assert any(d.startswith("memleak_ignore: growth at ") for d in report["test_only_theirs"]["details"])
    ours = report["test_theirs_and_ours"]
    written = (pytester.path / "test_i.py").read_text().splitlines()
    assert ours["status"] == "leak" and ours["sites"][0]["site"] == f"test_i.py:{written.index('    OWN.append(bytearray(300))') + 1}"
    assert all("site_lib" not in frame for site in ours["sites"] for frame in site["stack"])
    result.stdout.fnmatch_lines(["memleak_ignore: growth not counted in 2 test(s), * B/run in all"])
    if where == "ini":  # the control: the command line turns it off, and the library's growth is a leak again
        control = pytester.runpytest_subprocess(*args, "--memleak-ignore=none")
        control.assert_outcomes(failed=2)
        control.stdout.no_fnmatch_line("memleak_ignore:*")


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_pytest_timeouts_cover_the_reruns_and_are_never_spent_by_them(pytester: pytest.Pytester, method: str) -> None:
    """pytest-timeout times a test's whole protocol, and the re-runs happen inside it. A check that
    would not fit in half of the timeout is not made, and a check's windows end there: with the
    thread method the timeout ends the whole process, and with the signal method it fails a run of
    the check (or, in the evidence after the verdict, the session)."""
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(
        test_t="""
        import time

        KEPT = []

        def test_slow():
            time.sleep(1.2)

        def test_leaks():
            KEPT.append(object())
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", "--timeout=3", f"--timeout-method={method}"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.no_fnmatch_line("*Timeout*")
    report = {t["nodeid"].split("::")[1]: t for t in json.loads((pytester.path / "reports" / "memleak.json").read_text())["tests"]}
    assert report["test_slow"]["status"] == "no-verdict"
    assert report["test_slow"]["reason"].startswith("not checked: pytest-timeout's timeout of 3 s covers the test and its re-runs")
    assert report["test_leaks"]["status"] == "leak"


def test_pytest_rerunfailures_keeps_its_reruns(pytester: pytest.Pytester) -> None:
    """A test pytest-rerunfailures reruns when it fails is run by its protocol, as without the plugin,
    and the summary says it was not checked; without --reruns the same suite is checked."""
    pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile(
        test_r="""
        COUNT = [0]

        def test_flaky():
            COUNT[0] += 1
            assert COUNT[0] > 1
        """
    )
    args = ("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none")
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:memleak", "--reruns", "2")
    assert plain.parseoutcomes() == {"passed": 1, "rerun": 1}
    checked = pytester.runpytest_subprocess(*args, "--reruns", "2")
    assert checked.parseoutcomes() == {"passed": 1, "rerun": 1}
    checked.stdout.fnmatch_lines(["memleak: 1 test(s) not checked: pytest-rerunfailures reruns them when they fail*"])
    without = pytester.runpytest_subprocess(*args)
    without.assert_outcomes(failed=1)  # its first run fails, as without the plugin
    pytest.importorskip("xdist")
    parallel = pytester.runpytest_subprocess(*args, "--reruns", "2", "-n", "2")  # counted by the controller
    assert parallel.parseoutcomes() == {"passed": 1, "rerun": 1}
    parallel.stdout.fnmatch_lines(["memleak: 1 test(s) not checked: pytest-rerunfailures reruns them when they fail*"])


@pytest.mark.slow
def test_pytest_randomly_shuffles_and_the_verdicts_stand(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest-randomly shuffles the tests and reseeds ``random`` before each one: each order finds
    the same leaks, and a test that draws random numbers is clean in every order."""
    pytest.importorskip("pytest_randomly")
    monkeypatch.setenv("PYTEST_ADDOPTS", "")  # (the suite's conftest turns it off for the other inner runs)
    pytester.makepyfile(
        test_shuffled="""
        import random

        class Node:
            def __init__(self, nxt):
                self.nxt = nxt

        HEADS = {}

        def _keep(name):
            HEADS[name] = Node(HEADS.get(name))

        def test_leak_a():
            _keep("a")

        def test_leak_b():
            _keep("b")

        def test_draws_random():
            sample = [random.random() for _ in range(100)]
            assert len(set(sample)) == 100

        def test_sorted():
            assert sorted([3, 1, 2]) == [1, 2, 3]

        def test_dict():
            assert {i: i for i in range(50)}[49] == 49
        """
    )
    orders, verdicts = [], []
    for seed in ("1", "2", "3"):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none", f"--randomly-seed={seed}", "-v")
        result.assert_outcomes(passed=3, failed=2)
        result.stdout.fnmatch_lines([f"Using --randomly-seed={seed}"])
        orders.append([line.split()[0] for line in result.outlines if line.startswith("test_shuffled.py::") and " " in line])
        report = json.loads((pytester.path / "reports" / "memleak.json").read_text())
        verdicts.append({t["nodeid"].split("::")[-1]: t["status"] for t in report["tests"]})
    assert len({tuple(order) for order in orders}) > 1, orders  # the seeds gave different orders
    expected = {"test_leak_a": "leak", "test_leak_b": "leak", "test_draws_random": "clean", "test_sorted": "clean", "test_dict": "clean"}
    assert verdicts == [expected] * 3


def test_the_plugin_takes_itself_out_of_assertion_rewriting(pytester: pytest.Pytester) -> None:
    """pytest marks every module of an entry-point plugin for assertion rewriting, which compiles
    them from source at every session under PYTHONDONTWRITEBYTECODE (~0.2 s): the plugin unmarks
    its own package, and leaves another plugin's marks alone."""
    import sys

    from _pytest.assertion import assertstate_key
    from _pytest.assertion.rewrite import AssertionRewritingHook

    from pytest_memleak import plugin

    hook = AssertionRewritingHook(pytester.parseconfig())  # (the config installs a hook of its own too)
    hook.mark_rewrite("pytest_memleak", "another_plugin")
    assert hook._is_marked_for_rewrite("pytest_memleak.session", hook.config.stash[assertstate_key])
    sys.meta_path.insert(0, hook)
    try:
        assert plugin._unmark_for_rewrite()
        assert hook._must_rewrite == {"another_plugin"}
        assert not hook._is_marked_for_rewrite("pytest_memleak.session", hook.config.stash[assertstate_key])
    finally:
        sys.meta_path.remove(hook)
