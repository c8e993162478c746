"""`pytest --memleak` end to end, through pytester in a subprocess (tracemalloc is process-wide)."""

from __future__ import annotations

import json

import pytest
from verdicts import assert_outcomes

LEAKS = {
    "dict_registry": """
        REGISTRY = {}
        class Conversation:
            def __init__(self, cid):
                self.cid = cid
                self.messages = []
        def test_leak():
            cid = len(REGISTRY)
            REGISTRY[cid] = Conversation(cid)  # LEAK-LINE
    """,
    "list_grows": """
        HISTORY = []
        def test_leak():
            HISTORY.append({"role": "user", "text": "hi"})  # LEAK-LINE
    """,
    "listener_per_call": """
        class Bus:
            def __init__(self):
                self.listeners = []
            def on(self, fn):
                self.listeners.append(fn)
        BUS = Bus()
        def handle(payload):
            return payload
        def test_leak():
            BUS.on(lambda payload: handle(payload))  # LEAK-LINE
    """,
    "lru_cache_method": """
        import functools
        class Service:
            @functools.lru_cache(maxsize=None)
            def lookup(self, key):
                return [key] * 4  # LEAK-LINE
        def test_leak():
            Service().lookup("k")
    """,
    "growing_string": """
        import pytest
        LOG = [""]
        @pytest.mark.memleak  # below 512 B only a walk of pymalloc's arenas sees it: affordable for a quick test when marked
        def test_leak():
            LOG[0] = LOG[0] + "request handled;"  # LEAK-LINE
    """,
    "fixture_registers_global": """
        import pytest
        ACTIVE = []
        class Session:
            pass
        @pytest.fixture
        def session():
            s = Session()  # LEAK-LINE
            ACTIVE.append(s)
            yield s
        def test_leak(session):
            assert session in ACTIVE
    """,
    "one_object_per_run": """
        KEEP = []
        def test_leak():
            KEEP.append(object())  # LEAK-LINE
    """,
}

CLEAN = {
    "lazy_table": """
        TABLE = None
        def table():
            global TABLE
            if TABLE is None:
                TABLE = {i: str(i) for i in range(1000)}
            return TABLE
        def test_clean():
            assert table()[10] == "10"
    """,
    "bounded_lru": """
        import functools
        N = [0]
        @functools.lru_cache(maxsize=3)
        def render(i):
            return {"i": i, "payload": [i] * 10}
        def test_clean():
            N[0] += 1
            render(N[0])
    """,
    "garbage_cycles": """
        class Node:
            def __init__(self):
                self.other = None
        def test_clean():
            a, b = Node(), Node()
            a.other, b.other = b, a
            d = {}
            d["self"] = d
    """,
    "big_temporary_buffer": """
        def test_clean():
            buf = bytearray(40 * 1024 * 1024)
            buf[::4096] = b"x" * len(buf[::4096])
            assert len(buf) == 40 * 1024 * 1024
    """,
    "deque_history": """
        import collections
        HISTORY = collections.deque(maxlen=8)
        def test_clean():
            HISTORY.append({"role": "user", "text": "x" * 100})
    """,
    "idempotent_setup": """
        import pytest
        CONFIG = {}
        @pytest.fixture
        def config():
            CONFIG.setdefault("db", {"url": "sqlite://", "pool": 4})
            yield CONFIG
        def test_clean(config):
            assert config["db"]["pool"] == 4
    """,
    "fixture_releases_at_teardown": """
        import pytest
        ACTIVE = []
        @pytest.fixture
        def session():
            s = object()
            ACTIVE.append(s)
            yield s
            ACTIVE.remove(s)
        def test_clean(session):
            assert session in ACTIVE
    """,
}


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_case=source)
    # a generous time bound: the suite must pass on a loaded machine
    return pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "--memleak-confirm-seconds=120", "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_leak_is_caught_with_its_line(pytester: pytest.Pytester, name: str) -> None:
    source = LEAKS[name]
    result = _run(pytester, source)
    assert_outcomes(result, pytester, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    line = next(i for i, text in enumerate(source.strip("\n").splitlines(), 1) if "LEAK-LINE" in text)
    result.stdout.fnmatch_lines(
        [
            "*memleak: retained *B/run of Python heap (budget 0 B/run)*",
            f"*test_case.py:{line} *",
            "*memleak summary*",
            "*1 checked: 1 leaking*",
            "LEAK test_case.py::test_leak - *",
        ]
    )


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_clean_code_passes(pytester: pytest.Pytester, name: str) -> None:
    result = _run(pytester, CLEAN[name])
    assert_outcomes(result, pytester, passed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 checked: 0 leaking, 1 clean*"])


def test_status_letter_and_verbose_word(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mix="""
        KEEP = []
        def test_ok():
            pass
        def test_leak():
            KEEP.append(object())
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["test_mix.py .L*"])
    verbose = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider", "-v")
    verbose.stdout.fnmatch_lines(["*test_mix.py::test_ok PASSED*", "*test_mix.py::test_leak LEAKED*"])


def test_failing_skipped_and_xfail_tests_keep_their_outcome(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_outcomes="""
        import pytest
        KEEP = []
        def test_fails():
            KEEP.append(object())
            assert False, "own failure"
        def test_skips():
            KEEP.append(object())
            pytest.skip("not here")
        @pytest.mark.xfail(reason="known")
        def test_xfails():
            KEEP.append(object())
            assert False
        def test_errors_in_setup(missing_fixture):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, failed=1, skipped=1, xfailed=1, errors=1)
    result.stdout.fnmatch_lines(["*own failure*", "*0 leaking, 0 clean, 0 inconclusive, 4 without verdict*"])
    assert "LEAK test_outcomes" not in result.stdout.str()


def test_not_repeatable_test_is_inconclusive_not_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_once="""
        SEEN = set()
        def test_only_once():
            assert "x" not in SEEN
            SEEN.add("x")
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, passed=1)
    result.stdout.fnmatch_lines(["*1 inconclusive*", "INCONCLUSIVE test_once.py::test_only_once - run 2 failed in call*"])


def test_function_fixtures_are_set_up_per_run_and_module_fixtures_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_scopes="""
        import pytest
        CALLS = {"module": 0, "function": 0, "teardown": 0}
        @pytest.fixture(scope="module")
        def mod():
            CALLS["module"] += 1
            yield
        @pytest.fixture
        def fn():
            CALLS["function"] += 1
            yield
            CALLS["teardown"] += 1
        def test_a(mod, fn):
            pass
        def test_after():
            assert CALLS["module"] == 1
            assert CALLS["function"] == CALLS["teardown"] >= 2
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, passed=2)


def test_runs_under_one_setup_give_each_unittest_run_a_fresh_instance(pytester: pytest.Pytester) -> None:
    """A quick test without function fixtures makes its runs under one setup; a unittest case
    still gets a fresh instance per run (state kept on the instance would fail the second run)."""
    pytester.makepyfile(
        test_case="""
        import unittest
        class Case(unittest.TestCase):
            def bump(self):
                self.count = getattr(self, "count", -1) + 1
                return self.count
            def test_fresh_instance(self):
                self.assertEqual(self.bump(), 0)
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, passed=1)
    test = json.loads((pytester.path / "reports" / "memleak.json").read_text())["tests"][0]
    assert test["status"] == "clean", test["reason"]
    assert test["runs"] >= 3, test  # more than one run under the shared setup


def test_a_function_fixture_requested_in_the_call_is_made_for_every_run(pytester: pytest.Pytester) -> None:
    """``request.getfixturevalue`` of a function fixture ends the calls under one setup: every
    run gets its own fixture, so a fixture filled by the test is not a leak."""
    pytester.makepyfile(
        test_dynamic="""
        import pytest
        MADE = []
        @pytest.fixture
        def bucket():
            MADE.append(1)
            return []
        def test_fills_its_bucket(request):
            request.getfixturevalue("bucket").append(bytearray(2000))
        def test_one_bucket_per_run():
            import pathlib
            pathlib.Path("made.txt").write_text(str(len(MADE)))
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, passed=2)
    tests = {t["nodeid"]: t for t in json.loads((pytester.path / "reports" / "memleak.json").read_text())["tests"]}
    filled = tests["test_dynamic.py::test_fills_its_bucket"]
    assert filled["status"] == "clean", filled["reason"]
    assert int((pytester.path / "made.txt").read_text()) == filled["runs"]  # one bucket per run, the own run included


def test_captured_output_is_not_repeated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_out="""
        KEEP = []
        def test_prints():
            print("hello-from-test")
            KEEP.append(object())
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, failed=1)
    assert result.stdout.str().count("hello-from-test") == 1


def test_marker_checks_without_flag_and_no_memleak_opts_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_markers="""
        import pytest
        KEEP = []
        @pytest.mark.memleak
        def test_marked():
            KEEP.append(object())
        def test_unmarked():
            KEEP.append(object())
        """
    )
    result = pytester.runpytest_subprocess("--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, failed=1, passed=1)
    result.stdout.fnmatch_lines(["*test_marked*memleak: retained*"])
    pytester.makepyfile(
        test_markers="""
        import pytest
        KEEP = []
        @pytest.mark.no_memleak(reason="caches by design")
        def test_opted_out():
            KEEP.append(object())
        """
    )
    result = pytester.runpytest_subprocess("--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, passed=1)


def test_budget_from_marker_class_and_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_budgets="""
        import pytest
        pytestmark = pytest.mark.memleak(retained="1 KiB")
        KEEP = []
        def test_small_leak_within_module_budget():
            KEEP.append(object())
        @pytest.mark.memleak(retained="0 B")
        def test_function_marker_wins():
            KEEP.append(object())
        @pytest.mark.memleak(retained="2 KiB")
        class TestCls:
            def test_big_leak_over_class_budget(self):
                KEEP.append(bytearray(4096))
        """
    )
    result = pytester.runpytest_subprocess("--memleak-flamegraph=none", "-p", "no:cacheprovider", "-v")
    assert_outcomes(result, pytester, passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_small_leak_within_module_budget PASSED*",
            "*test_function_marker_wins LEAKED*",
            "*test_big_leak_over_class_budget LEAKED*",
        ]
    )


def test_per_site_budget(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_site="""
        import pytest
        KEEP = []
        @pytest.mark.memleak(retained="1 MiB", per_site="512 B")
        def test_site_over_budget():
            KEEP.append(bytearray(2000))
        """
    )
    result = pytester.runpytest_subprocess("--memleak-flamegraph=none", "-p", "no:cacheprovider")
    assert_outcomes(result, pytester, failed=1)
    result.stdout.fnmatch_lines(["*site test_site.py:5 retained * KiB/run (per-site budget 512 B/run)*"])


def test_resolution_order_marker_cli_env_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        test_order="""
        KEEP = []
        def test_leak_1kib():
            KEEP.append(bytearray(1000))
        """
    )
    pytester.makeini("[pytest]\nmemleak = true\nmemleak_retained = 64 KiB\nmemleak_flamegraph = none\n")
    # ini alone: enabled by ini, within the ini budget
    assert_outcomes(pytester.runpytest_subprocess("-p", "no:cacheprovider"), pytester, passed=1)
    # env beats ini
    monkeypatch.setenv("MEMLEAK_RETAINED", "16 B")
    assert_outcomes(pytester.runpytest_subprocess("-p", "no:cacheprovider"), pytester, failed=1)
    # CLI beats env
    assert_outcomes(pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak-retained=1 MiB"), pytester, passed=1)


def test_ini_in_pyproject_takes_effect(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        memleak = "true"
        memleak_runs = "2"
        memleak_flamegraph = "none"
        """
    )
    pytester.makepyfile(test_p="KEEP = []\ndef test_leak():\n    KEEP.append(object())\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert_outcomes(result, pytester, failed=1)


@pytest.mark.parametrize(
    ("where", "args", "message"),
    [
        ("cli", ["--memleak-retained=lots"], "*invalid value 'lots' for --memleak-retained from the command line*expected a size such as*"),
        ("cli", ["--memleak-runs=0"], "*invalid value '0' for --memleak-runs from the command line*expected a whole number from 2 to 1000*"),
        ("cli", ["--memleak-retained=-5 KiB"], "*invalid value '-5 KiB' for --memleak-retained*"),
        ("cli", ["--memleak-flamegraph=sometimes"], "*--memleak-flamegraph from the command line*expected failed, all or none*"),
        ("env", ["MEMLEAK_WARMUP", "two"], "*invalid value 'two' for MEMLEAK_WARMUP from the environment*"),
        ("ini", ["memleak_per_site", "12 parsecs"], "*invalid value '12 parsecs' for memleak_per_site from the ini file*"),
        ("ini", ["memleak", "perhaps"], "*invalid value 'perhaps' for memleak from the ini file*expected true or false*"),
        ("marker", ["retained='1 XB'"], "*invalid value '1 XB' for memleak(retained=...) from @pytest.mark.memleak on test_bad.py::test_a*"),
        ("marker", ["retaind='1 KiB'"], "*unknown keyword 'retaind' in @pytest.mark.memleak on test_bad.py::test_a; accepted: warmup, runs*"),
        ("marker", ["'1 KiB'"], "*takes keywords only*"),
    ],
)
def test_bad_input_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, args: list[str], message: str
) -> None:
    marker_args = args[0] if where == "marker" else ""
    pytester.makepyfile(
        test_bad=f"""
        import pytest
        @pytest.mark.memleak({marker_args})
        def test_a():
            pass
        """
    )
    cli: list[str] = []
    if where == "cli":
        cli = args
    elif where == "env":
        monkeypatch.setenv(args[0], args[1])
    elif where == "ini":
        pytester.makeini(f"[pytest]\n{args[0]} = {args[1]}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *cli)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_help_and_markers_list_every_setting(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        ["*--memleak *check every test for leaks*", "*--memleak-retained=VALUE*", "*memleak_retained (string)*"]
    )
    markers = pytester.runpytest_subprocess("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.memleak(warmup=..., runs=...*", "@pytest.mark.no_memleak(reason=...)*", "@pytest.mark.memleak_soak(*"])


def test_plugin_off_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mods="""
        import sys
        def test_modules():
            heavy = [m for m in ("memray", "objgraph", "psutil", "pytest_memleak.report", "pytest_memleak.check.repeating") if m in sys.modules]
            assert heavy == []
        """
    )
    # pytest-memray, when installed, imports memray itself: leave it out of this check
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:memray")
    assert_outcomes(result, pytester, passed=1)


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_json_report_and_junit_properties(pytester: pytest.Pytester, family: str) -> None:
    """The verdict's properties are valid in either JUnit family: per testcase in xunit1; in
    xunit2 (pytest's default), whose schema has no testcase properties, on the testsuite."""
    import xml.etree.ElementTree as ET

    pytester.makepyfile(test_j="KEEP = []\ndef test_leak():\n    KEEP.append(object())\ndef test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--memleak", "--memleak-flamegraph=none", "-p", "no:cacheprovider", "--junitxml=junit.xml", "--memleak-report-dir=out",
        "-o", f"junit_family={family}",
    )
    assert_outcomes(result, pytester, failed=1, passed=1)
    data = json.loads((pytester.path / "out" / "memleak.json").read_text())
    by_id = {t["nodeid"]: t for t in data["tests"]}
    assert by_id["test_j.py::test_leak"]["status"] == "leak"
    assert by_id["test_j.py::test_ok"]["status"] == "clean"
    assert by_id["test_j.py::test_leak"]["sites"][0]["site"] == "test_j.py:3"
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    if family == "xunit1":
        props = {name: {p.get("name"): p.get("value") for p in case.iter("property")} for name, case in cases.items()}
        assert props["test_leak"]["memleak_status"] == "leak" and props["test_ok"]["memleak_status"] == "clean"
    else:
        assert all(case.find("properties") is None for case in cases.values())  # xunit2 has none there
        suite_props = {p.get("name"): p.get("value") for p in suite.find("properties").iter("property")}
        assert suite_props["memleak_status[test_j.py::test_leak]"] == "leak"
        assert suite_props["memleak_status[test_j.py::test_ok]"] == "clean"
        assert float(suite_props["memleak_retained_per_run[test_j.py::test_leak]"]) > 0


def test_collection_frees_cycles_that_a_finalizer_makes() -> None:
    """measuring.collect(): one collection of the heap, then young ones while they free something,
    so a cycle made by a finalizer during the first is gone too (the whole heap is not walked again)."""
    import gc
    import weakref

    from pytest_memleak.check import measuring

    made = []

    class Node:
        def __init__(self) -> None:
            self.me = self

    class Finalized:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            made.append(weakref.ref(Node()))  # a new cycle, garbage at once

    Finalized()
    gc.disable()  # no automatic collection between the two steps
    try:
        measuring.collect()
    finally:
        gc.enable()
    assert len(made) == 1
    assert made[0]() is None
