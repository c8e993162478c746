"""memray leak flamegraphs: capture_run writes a capture and memray's HTML, or says why not."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_memleak.flamegraph import (
    CAPTURE_SECONDS,
    LEAK_SHARE,
    MAX_CAPTURE_RUNS,
    NOISE_BYTES,
    TRACKED_SLOWDOWN,
    FlamegraphOutcome,
    capture_run,
    capture_runs,
    safe_name,
)

memray = pytest.importorskip("memray", reason="memray is not installed (not available on Windows)")

KEPT: list[bytearray] = []


def keep_ten_mebibytes_forever() -> None:
    KEPT.append(bytearray(10 * 1024 * 1024))


@pytest.fixture(autouse=True)
def _forget() -> None:
    yield
    KEPT.clear()


def test_capture_run_writes_a_flamegraph_and_a_readable_capture(tmp_path: pathlib.Path) -> None:
    base = tmp_path / "flamegraphs" / safe_name("tests/test_x.py::test_keeps[10MiB]")
    started = time.perf_counter()
    outcome = capture_run(keep_ten_mebibytes_forever, base)
    took = time.perf_counter() - started
    print(f"capture {outcome.capture_seconds:.2f} s, render {outcome.render_seconds:.2f} s, total {took:.2f} s")

    assert outcome.problem is None, outcome.problem
    assert outcome.ok
    assert outcome.html == base.parent / (base.name + ".html") and outcome.html.is_file()
    assert outcome.capture == base.parent / (base.name + ".bin") and outcome.capture.is_file()
    assert "keep_ten_mebibytes_forever" in outcome.html.read_text(encoding="utf-8", errors="replace")

    # the capture is a real memray file: the Python API and the CLI both read it
    reader = memray.FileReader(str(outcome.capture))
    leaked = sum(r.size for r in reader.get_leaked_allocation_records(merge_threads=True))
    assert leaked >= 10 * 1024 * 1024
    stats = subprocess.run(
        [sys.executable, "-m", "memray", "stats", str(outcome.capture)], capture_output=True, text=True, timeout=120
    )
    assert stats.returncode == 0, stats.stderr
    assert "Total memory allocated" in stats.stdout


def test_a_stale_capture_is_replaced(tmp_path: pathlib.Path) -> None:
    base = tmp_path / "stale"
    (tmp_path / "stale.bin").write_bytes(b"old capture")
    (tmp_path / "stale.html").write_text("old flamegraph")
    outcome = capture_run(keep_ten_mebibytes_forever, base)
    assert outcome.problem is None, outcome.problem
    assert outcome.capture.read_bytes() != b"old capture"
    assert "old flamegraph" not in outcome.html.read_text(encoding="utf-8", errors="replace")


def test_an_unwritable_directory_is_a_problem_not_an_exception(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the report directory should be")
    calls = []
    outcome = capture_run(lambda: calls.append(1), blocker / "flamegraphs" / "x")
    assert isinstance(outcome, FlamegraphOutcome)
    assert outcome.problem and "cannot write" in outcome.problem
    assert outcome.html is None and outcome.capture is None
    assert calls == []  # nothing ran: no point running without a capture


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only directories")
def test_a_read_only_directory_is_a_problem(tmp_path: pathlib.Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        outcome = capture_run(keep_ten_mebibytes_forever, locked / "x")
    finally:
        locked.chmod(0o700)
    assert outcome.problem and outcome.html is None and outcome.capture is None


def test_a_second_tracker_is_a_problem(tmp_path: pathlib.Path) -> None:
    with memray.Tracker(str(tmp_path / "outer.bin")):
        outcome = capture_run(keep_ten_mebibytes_forever, tmp_path / "inner")
    assert outcome.problem and "could not attach" in outcome.problem
    assert outcome.html is None and outcome.capture is None


def test_an_exception_in_the_run_is_reported_and_still_rendered(tmp_path: pathlib.Path) -> None:
    def fails() -> None:
        keep_ten_mebibytes_forever()
        raise ValueError("the test failed this time")

    outcome = capture_run(fails, tmp_path / "fails")
    assert outcome.problem and "ValueError: the test failed this time" in outcome.problem
    assert outcome.capture is not None and outcome.html is not None and outcome.html.is_file()


def test_pytest_outcomes_in_the_run_are_reported(tmp_path: pathlib.Path) -> None:
    def skips() -> None:
        pytest.skip("not here")

    outcome = capture_run(skips, tmp_path / "skips", render=False)
    assert outcome.problem and "Skipped" in outcome.problem
    assert outcome.capture is not None and outcome.html is None


def test_keyboard_interrupt_propagates_and_the_tracker_is_stopped(tmp_path: pathlib.Path) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        capture_run(interrupted, tmp_path / "ki", render=False)
    # the tracker was stopped: a new one can attach
    assert capture_run(keep_ten_mebibytes_forever, tmp_path / "after", render=False).problem is None


def test_a_failed_render_keeps_the_capture(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_memleak.flamegraph as fg

    monkeypatch.setattr(fg, "_RENDER_SCRIPT", "import sys; sys.exit('no reporter')")
    monkeypatch.setattr(fg, "_memray_command", lambda: [sys.executable, "-c", "import sys; sys.exit('no render')"])
    outcome = capture_run(keep_ten_mebibytes_forever, tmp_path / "norender")
    assert outcome.problem and "memray flamegraph failed" in outcome.problem and "no render" in outcome.problem
    assert outcome.capture is not None and outcome.capture.is_file()
    assert outcome.html is None and not (tmp_path / "norender.html").exists()


def test_the_cli_renders_when_the_reporter_cannot(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """memray's reporter is not a stable API: when rendering through it fails, `memray
    flamegraph` renders the same file."""
    import pytest_memleak.flamegraph as fg

    fast = capture_run(keep_ten_mebibytes_forever, tmp_path / "fast")
    monkeypatch.setattr(fg, "_RENDER_SCRIPT", "import sys; sys.exit('no reporter')")
    slow = capture_run(keep_ten_mebibytes_forever, tmp_path / "slow")
    assert fast.problem is None and slow.problem is None, (fast.problem, slow.problem)
    for outcome in (fast, slow):
        assert outcome.html is not None
        text = outcome.html.read_text(encoding="utf-8", errors="replace")
        assert "keep_ten_mebibytes_forever" in text
        assert_offline_page(outcome.html)


def test_memray_missing_is_a_problem(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "memray", None)  # import memray -> ImportError
    outcome = capture_run(keep_ten_mebibytes_forever, tmp_path / "x")
    assert outcome.problem and "memray is not available" in outcome.problem


def test_a_background_render_is_finished_later(tmp_path: pathlib.Path) -> None:
    outcome = capture_run(keep_ten_mebibytes_forever, tmp_path / "bg", background=True)
    assert outcome.problem is None and outcome.pending is not None
    assert outcome.html == tmp_path / "bg.html" and outcome.capture is not None and outcome.capture.is_file()
    assert outcome.pending.finish() is None
    assert outcome.html.is_file() and outcome.html.stat().st_size > 10_000


def test_a_failed_background_render_says_so_when_finished(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_memleak.flamegraph as fg

    monkeypatch.setattr(fg, "_RENDER_SCRIPT", "import sys; sys.exit('no reporter')")
    monkeypatch.setattr(fg, "_memray_command", lambda: [sys.executable, "-c", "import sys; sys.exit('no render')"])
    outcome = capture_run(keep_ten_mebibytes_forever, tmp_path / "bgfail", background=True)
    assert outcome.pending is not None
    problem = outcome.pending.finish()
    assert problem and "memray flamegraph failed (exit 1)" in problem and "no render" in problem
    assert not (tmp_path / "bgfail.html").exists()


def assert_offline_page(html: pathlib.Path) -> list[pathlib.Path]:
    """A page well under 1 MiB whose scripts and styles are local files beside it (it opens
    offline): the assets it links, which all exist."""
    text = html.read_text(encoding="utf-8")
    assert len(text.encode()) < 512 * 1024, len(text)
    assert not re.search(r"""<(script|link)[^>]+(src|href)=["']https?:""", text)  # no CDN
    linked = [html.parent / name for name in re.findall(r"""(?:src|href)=["'](assets/[^"']+)["']""", text)]
    assert len(linked) >= 5 and all(path.is_file() for path in linked), linked
    return linked


def test_pages_share_memrays_assets_and_keep_their_own_data(tmp_path: pathlib.Path) -> None:
    first = capture_run(keep_ten_mebibytes_forever, tmp_path / "first")
    second = capture_run(lambda: KEPT.append(bytearray(3 * 1024 * 1024)), tmp_path / "second")
    assert first.html is not None and second.html is not None, (first.problem, second.problem)
    assets = assert_offline_page(first.html)
    assert assets == assert_offline_page(second.html)  # the same files, written once
    assert sum(path.stat().st_size for path in assets) > 3_000_000  # memray's libraries, moved whole
    for outcome in (first, second):
        assert "packed_data" in outcome.html.read_text(encoding="utf-8")  # each page's own flamegraph stays inline
    assert len(list((tmp_path / "assets").iterdir())) == len(assets)


@given(
    per_run=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    seconds=st.floats(min_value=1e-7, max_value=10.0),
)
def test_a_capture_covers_enough_runs_for_the_leak_to_outweigh_pytests_noise(per_run: float, seconds: float) -> None:
    runs = capture_runs(per_run, seconds)
    assert 1 <= runs <= MAX_CAPTURE_RUNS
    fits = CAPTURE_SECONDS / (seconds * TRACKED_SLOWDOWN)
    assert runs <= max(1, fits)  # within the time a capture may take
    if per_run > 0 and runs < min(fits, MAX_CAPTURE_RUNS) - 1:
        assert runs * per_run >= LEAK_SHARE * NOISE_BYTES  # cut short only by time or the cap
    assert capture_runs(2 * per_run, seconds) <= runs  # a bigger leak needs no more runs


def test_one_preempted_run_does_not_cut_a_capture_short() -> None:
    """Beside two busy loops the latest run took 5 ms (its work 0.2 ms): planned by it, a capture
    of a 450 B leak got 33 runs, and its leaking line held 49% of what the capture leaked."""
    from pytest_memleak.flamegraph import run_time

    quiet = [0.0002] * 8
    preempted = [*quiet, 0.005]
    assert run_time(preempted) == 0.0002
    assert capture_runs(450, run_time(preempted)) == capture_runs(450, run_time(quiet)) > 500
    assert capture_runs(450, preempted[-1]) < 40  # the latest run alone
    assert run_time([]) == 0.0 and run_time([0.1, 0.3]) == pytest.approx(0.2)
