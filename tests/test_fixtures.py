"""The fixtures mem_snapshot, mem_compare, mem_allocate and mem_cleanup, in real pytest runs.

tracemalloc and RSS are process-wide, so each inner run is a subprocess
(``runpytest_subprocess``); inner tests print ``FIGURE name value`` lines for the figures.
"""

from __future__ import annotations

import re
import sys
import textwrap

import pytest

MiB = 1024 * 1024


def line_of(source: str, needle: str) -> int:
    """The line of the inner test file (as makepyfile writes it: stripped) holding needle."""
    lines = source.strip().splitlines()
    return next(n for n, text in enumerate(lines, 1) if needle in text)


DETECT = textwrap.dedent(
    """
    import tracemalloc

    import pytest

    KEPT = []


    class Conversation:
        def __init__(self, i, kept):
            self.text = f"message {i:05d} " * 200  # ~3 KiB each, distinct
            self.kept = kept


    def drive(n, keep):
        for i in range(n):
            conversation = Conversation(i, keep)
            if keep:
                KEPT.append(conversation)


    def test_retained_memory_fails_naming_the_line(mem_snapshot, mem_compare):
        baseline = mem_snapshot()
        drive(1000, keep=True)
        mem_compare(baseline).assert_within(retained="2 MiB", per_site="256 KiB",
                                            objects={"Conversation": 0})


    def test_nothing_retained_passes(mem_snapshot, mem_compare):
        assert not tracemalloc.is_tracing()  # the previous test's tracing was stopped
        baseline = mem_snapshot()
        drive(1000, keep=False)
        diff = mem_compare(baseline)
        assert diff.traced and diff.retained < 256 * 1024, str(diff)
        diff.assert_within(retained="2 MiB", per_site="256 KiB", objects={"Conversation": 0})


    def test_tracing_stopped_at_teardown():
        assert not tracemalloc.is_tracing()


    def test_trace_false_opts_out(mem_snapshot, mem_compare):
        baseline = mem_snapshot(trace=False)
        assert not tracemalloc.is_tracing() and baseline.heap_bytes is None
        later = mem_snapshot()  # the first call decided
        assert not tracemalloc.is_tracing()
        diff = mem_compare(baseline, later)
        with pytest.raises(ValueError, match="retained= needs snapshots taken while tracemalloc"):
            diff.assert_within(retained="1 MiB")
        diff.assert_within(rss="32 MiB", threads=0)


    def test_tracing_started_elsewhere_is_left_running(mem_snapshot):
        tracemalloc.start(4)
        snap = mem_snapshot()
        assert snap.frames == 4


    def test_and_is_still_running():
        assert tracemalloc.is_tracing()
        tracemalloc.stop()
    """
)

BAD_INPUT = textwrap.dedent(
    """
    import pickle
    import subprocess
    import sys

    import pytest


    @pytest.mark.parametrize("size", [-1, "-2 MiB", "lots", "12 parsecs", None, float("inf")])
    def test_bad_sizes(mem_allocate, size):
        with pytest.raises(ValueError, match="expected a size such as"):
            mem_allocate(size)


    def test_bad_kind(mem_allocate):
        with pytest.raises(ValueError, match="kind must be 'python' or 'native'"):
            mem_allocate("1 MiB", kind="cuda")


    def test_wrong_order(mem_snapshot, mem_compare):
        first = mem_snapshot()
        second = mem_snapshot()
        with pytest.raises(ValueError, match=r"baseline was taken after current"):
            mem_compare(second, first)


    def test_not_a_snapshot(mem_compare):
        with pytest.raises(TypeError, match="baseline must be a Snapshot"):
            mem_compare(12)


    def test_baseline_from_another_process(mem_compare):
        code = ("import pickle, sys; from pytest_memleak import snapshot;"
                " sys.stdout.buffer.write(pickle.dumps(snapshot()))")
        foreign = pickle.loads(subprocess.run([sys.executable, "-c", code],
                                              capture_output=True, check=True).stdout)
        with pytest.raises(ValueError, match="baseline was taken in another process"):
            mem_compare(foreign)


    def test_bad_budget(mem_snapshot, mem_compare):
        diff = mem_compare(mem_snapshot())
        with pytest.raises(ValueError, match="per_site: 'a bit' is not a size"):
            diff.assert_within(per_site="a bit")
    """
)


def test_retained_memory_is_detected_and_budgets_checked(pytester: pytest.Pytester):
    pytester.makepyfile(test_detect=DETECT, test_bad_input=BAD_INPUT)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--durations=5"
    )
    result.assert_outcomes(passed=16, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    line = line_of(DETECT, "~3 KiB each")
    # The line's blocks per conversation: its text; Python 3.10 also allocates the instance's
    # __dict__ and its keys there, at the first attribute (3.11 keeps the attributes inline).
    blocks = 1000 if sys.version_info >= (3, 11) else 3000
    result.stdout.fnmatch_lines(
        [
            "*_ test_retained_memory_fails_naming_the_line _*",
            "E*AssertionError: memory grew beyond its budget between snapshot #* and #* (* s apart):",
            "E*  retained: +*MiB stayed on the traced Python heap, budget 2.0 MiB",
            f"E*  per site: test_detect.py:{line} kept +*MiB in +{blocks} blocks, budget 256.0 KiB per site",
            "E*  objects: Conversation +1000 instances, budget 0",
            "E*where it was allocated (user code first, then by growth):",
            f"E*  test_detect.py:{line} *+*MiB*+{blocks} blocks",
            "E*      called from test_detect.py:*",
            "E*types that grew: test_detect.Conversation +1000*",
            "E*measured: heap +*MiB (+* blocks), retained +*MiB, RSS +*, USS +*, threads +0, fds +0 in * s",
            "FAILED test_detect.py::test_retained_memory_fails_naming_the_line - *",
        ]
    )
    # the retained figure is what 1000 conversations of ~3 KiB hold, not more, not less
    retained = re.search(r"retained: \+(\d+\.\d) MiB stayed", result.stdout.str())
    assert retained is not None and 2.5 <= float(retained.group(1)) <= 4.5


ALLOCATE = textwrap.dedent(
    """
    import tracemalloc

    import pytest

    from pytest_memleak.check import measuring

    MiB = 1024 * 1024
    SIZE = 64 * MiB
    HELD = {}
    ALLOC_LINE = {alloc_line}


    def figure(name, value):
        print(f"FIGURE {name} {value}")


    @pytest.mark.parametrize("kind", ["python", "native"])
    def test_allocation_shows_in_rss(mem_snapshot, mem_compare, mem_allocate, kind):
        baseline = mem_snapshot()
        holder = mem_allocate("64 MiB", kind=kind)  # THE-ALLOCATION
        diff = mem_compare(baseline)
        figure(f"rss_{kind}", diff.rss)
        figure(f"heap_{kind}", diff.heap_bytes)
        assert abs(diff.rss - SIZE) <= 0.10 * SIZE, str(diff)
        if kind == "native":
            assert abs(diff.heap_bytes) < MiB and abs(diff.retained) < MiB, str(diff)
        else:
            assert diff.heap_bytes >= SIZE and diff.retained >= 0.99 * SIZE, str(diff)
            assert diff.sites[0].site == f"test_allocate.py:{ALLOC_LINE}", str(diff)
        assert holder.nbytes == SIZE


    @pytest.mark.parametrize("kind", ["python", "native"])
    def test_cleanup_recovers_the_allocation(mem_allocate, mem_cleanup, kind):
        holder = mem_allocate(SIZE, kind=kind)
        before = measuring.rss()
        recovered = mem_cleanup(holder)
        figure(f"recovered_{kind}", recovered.rss)
        assert recovered.rss >= 0.90 * SIZE, str(recovered)
        assert before - measuring.rss() >= 0.90 * SIZE
        assert recovered.released == SIZE and holder.nbytes == 0


    def test_cleanup_without_holder_frees_everything_this_test_made(mem_allocate, mem_cleanup):
        mem_allocate("16 MiB")
        mem_allocate("16 MiB", kind="native")  # the holders are not kept by the test
        shared = mem_allocate("32 MiB", kind="native")
        recovered = mem_cleanup()
        figure("recovered_all", recovered.rss)
        assert recovered.released == SIZE and recovered.rss >= 0.90 * SIZE
        assert shared.nbytes == 0


    def test_holder_kept_between_allocations(mem_allocate):
        holder = mem_allocate("8 MiB")
        assert mem_allocate("8 MiB", holder, kind="native") is holder
        assert (holder.python_bytes, holder.native_bytes) == (8 * MiB, 8 * MiB)


    def test_teardown_releases_what_is_still_held(mem_allocate):
        HELD["holder"] = mem_allocate(SIZE, kind="native")
        mem_allocate(SIZE)
        HELD["rss"] = measuring.rss()


    def test_after_teardown():
        fell = HELD["rss"] - measuring.rss()
        figure("teardown_released", fell)
        assert HELD["holder"].nbytes == 0
        assert fell >= 0.90 * 2 * SIZE
    """
)


def test_allocations_are_resident_and_cleanup_recovers_them(pytester: pytest.Pytester):
    source = ALLOCATE.replace("{alloc_line}", str(line_of(ALLOCATE, "# THE-ALLOCATION")))
    pytester.makepyfile(test_allocate=source)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-s", "--durations=5"
    )
    result.assert_outcomes(passed=8)
    figures = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"FIGURE (\w+) (-?\d+)", result.stdout.str())
    }
    size = 64 * MiB
    assert set(figures) >= {"rss_python", "rss_native", "recovered_python", "recovered_native"}
    for kind in ("python", "native"):
        assert abs(figures[f"rss_{kind}"] - size) <= 0.10 * size
        assert figures[f"recovered_{kind}"] >= 0.90 * size
    assert figures["heap_python"] >= size and abs(figures["heap_native"]) < MiB
    assert figures["teardown_released"] >= 0.9 * 2 * size
    for name, value in sorted(figures.items()):
        print(f"{name}: {value / MiB:.2f} MiB")


def test_fixtures_are_listed_with_their_help(pytester: pytest.Pytester):
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines_random(
        [
            "mem_snapshot -- *",
            "*mem_snapshot(trace=None, label=*) -> Snapshot*",
            "mem_compare -- *",
            "mem_allocate -- *",
            "mem_cleanup -- *",
        ]
    )
