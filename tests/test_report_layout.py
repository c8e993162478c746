"""The HTML report as a reader sees it: laid out by headless Chromium at 1280 px, with every
<details> opened, no two pieces of text overlap, nothing is clipped, and the page does not scroll
sideways. Chromium is Debian's (``.ci/run`` installs it); without it these tests skip."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tempfile

import pytest

from pytest_memleak.report import write_html
from pytest_memleak.results import (
    CLEAN,
    INCONCLUSIVE,
    LEAK,
    NO_VERDICT,
    Finding,
    LeakResult,
    SiteGrowth,
    SoakResult,
)

CHROMIUM = "/usr/bin/chromium"
CHECK = pathlib.Path(__file__).with_name("layout") / "check_layout.js"
MiB = 1024 * 1024
WIDTH = 1280

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"headless Chromium is not installed at {CHROMIUM}")


def layout(html: pathlib.Path, width: int = WIDTH) -> dict:
    """What check_layout.js measured in ``html`` at ``width`` px."""
    page = html.with_name("layout-" + html.name)
    text = html.read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", f"<script>{CHECK.read_text(encoding='utf-8')}</script></body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="memleak-chromium-") as profile:
        done = subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={width},900", "--dump-dom", page.resolve().as_uri(),
            ],
            capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )
    marker = '<pre id="layout-result">'
    assert marker in done.stdout, f"Chromium gave no layout (exit {done.returncode}): {done.stderr[-800:]}"
    import html as html_module

    return json.loads(html_module.unescape(done.stdout.rsplit(marker, 1)[1].split("</pre>", 1)[0]))


def rich_results() -> tuple[list[LeakResult], list[SoakResult]]:
    """A page with every part a report can have, and the long names real suites have."""
    long_module = "services/conversation_store/backends/postgres_with_a_very_long_package_name/registry.py"
    leak = LeakResult(
        nodeid="tests/integration/test_conversation_store.py::TestRegistry::test_register_keeps_every_conversation[postgres-async-pool-size-32]",
        status=LEAK,
        reason=f"retained 96.0 KiB/run of Python heap (budget 0 B/run); top site {long_module}:142 +90.0 KiB/run",
        runs=120, measured_runs=119, runs_per_step=12, retained_per_run=96 * 1024,
        findings=[
            Finding("heap", 96 * 1024, 0, "B", f"retained 96.0 KiB/run of Python heap at {long_module}:142", [f"{long_module}:142 +90.0 KiB/run"]),
            Finding("fds", 1, 0, "", "1 file descriptor per run stays open", ["/tmp/pytest-of-root/pytest-12/test_register0/conversation-0001.sqlite3-journal (fd 17)"]),
        ],
        sites=[
            SiteGrowth(f"{long_module}:{142 + k}", 90 * 1024 / (k + 1), 3.0 / (k + 1), 24 * 90 * 1024, 72,
                       [f"{long_module}:{142 + k}", "services/conversation_store/api.py:17", "tests/integration/test_conversation_store.py:9"])
            for k in range(5)
        ],
        grown_types={
            "services.conversation_store.backends.postgres_with_a_very_long_package_name.registry.ConversationRecord": 1.0,
            "collections.OrderedDict": 2.0, "dict": 3.0, "weakref.ReferenceType": 0.6,
            **{f"services.models.Model{k}WithAVeryLongClassNameThatDoesNotWrapNicely": 0.1 * k for k in range(1, 12)},
        },
        series={
            "screen.blocks": [412_000.0 + 310 * i for i in range(40)],
            "screen.rss": [88.0 * MiB + i * 120 * 1024 for i in range(40)],
            "confirm.heap": [50.0 * MiB + i * 3 * 96 * 1024 for i in range(10)],
            "confirm.traced": [52.0 * MiB + i * 96 * 1024 for i in range(10)],
            "confirm.rss": [90.0 * MiB + i * 300 * 1024 for i in range(10)],
            "confirm.fds": [12.0 + i for i in range(10)],
            "confirm.threads": [1.0] * 10,
        },
        retention=[
            "services.conversation_store.backends.postgres_with_a_very_long_package_name.registry.ConversationRecord: 50 sampled of 120 instance(s), 6.6 KiB shallow",
            "  50 × ConversationRecord (6.6 KiB): services.conversation_store.backends.postgres_with_a_very_long_package_name.registry._REGISTRY"
            "['a-very-long-key-without-any-spaces-at-all-0123456789abcdef0123456789abcdef'] -> Registry._by_id[…] -> ConversationRecord",
        ],
        details=[f"confirmation: growth persisted in every window, 119 runs in all; the longest path component is {'x' * 180}"],
        problems=["the screen's RSS reading failed once: [Errno 2] No such file or directory: '/proc/self/statm'"],
        capture="reports/flamegraphs/tests_integration_test_conversation_store.py_TestRegistry_test_register_keeps_every_conversation-0a1b2c3d4e5f.bin",
        seconds=3.4,
        settings={"retained": 0},
    )
    inconclusive = LeakResult("tests/test_io.py::test_flaky_socket", INCONCLUSIVE, "run 3 failed in call: the test is not repeatable " * 3)
    tests = [leak, inconclusive, LeakResult("tests/test_io.py::test_skipped", NO_VERDICT, "the test was skipped")]
    tests += [
        LeakResult(f"tests/unit/test_parser.py::test_parse_roundtrip[case-{i}-{'long' * (i % 5)}]", CLEAN, "no growth in the last 3 of 3 measured run(s)",
                   runs=4, measured_runs=3, series={"screen.blocks": [300_120.0, 300_120.0, 300_122.0, 300_120.0]}, settings={"retained": 0})
        for i in range(30)
    ]
    t = [k * 0.25 for k in range(33)]
    slope = 11 * 1024 * MiB / 3600
    soaks = [
        SoakResult(
            nodeid=f"scenarios/test_chat_soak.py::test_{name}[leaky]", status=LEAK,
            reason=f"RSS grows 11.0 GiB/h (95% lower bound 10.9 GiB/h), persists in the last third; reaches 500.0 MiB in {ttl:.0f} s",
            scenario=name, variant="leaky", expect_leak=True, duration=8.1, iterations=319, memory_limit=500 * MiB,
            slope_per_hour=slope * 3600, slope_lower=0.95 * slope * 3600, slope_upper=1.05 * slope * 3600, slope_per_iteration=80 * 1024,
            time_to_limit=ttl, throughput=39.4, t=t, rss=[120 * MiB + slope * x for x in t], heap=[80 * MiB + 0.8 * slope * x for x in t],
            heap_unit=unit, fit_intercept=120 * MiB, fit_slope_per_second=slope, fit_start=2.4, fit_end=8.0,
            samples_path=f"reports/soak/scenarios_test_chat_soak.py_test_{name}_leaky-d5ca3cc1df1e.jsonl",
            details=["RSS: +11.0 GiB/h (95% CI 10.9 GiB/h .. 11.3 GiB/h), +80.9 KiB per iteration; growth persists in the last half and the last third"] * 3,
        )
        for name, ttl, unit in (("connections", 60.0, "B"), ("all_patterns", 12.0, "B"), ("history", 240.0, "blocks"))
    ]
    soaks.append(SoakResult("scenarios/test_chat_soak.py::test_history[fixed]", CLEAN, "RSS flat: +0 B/h", t=t, rss=[60 * MiB] * len(t),
                            memory_limit=500 * MiB, expect_leak=False))
    return tests, soaks


def test_the_report_has_no_overlapping_text_and_no_sideways_scroll_at_1280_px(tmp_path: pathlib.Path) -> None:
    tests, soaks = rich_results()
    html = tmp_path / "memleak.html"
    write_html(html, tests, soaks, {"settings": {"retained": "0 B", "runs": 3}})
    found = layout(html)
    assert found["texts"] > 500  # the page was laid out, with its text
    assert found["overlaps"] == [], found["overlaps"][:10]
    assert found["clipped"] == [], found["clipped"][:10]
    assert found["scrollWidth"] <= found["innerWidth"], found


def test_the_check_sees_overlapping_text_and_a_page_too_wide(tmp_path: pathlib.Path) -> None:
    """The check itself, on a page made to fail it: without this, a check that saw nothing would pass."""
    html = tmp_path / "bad.html"
    html.write_text(
        "<!doctype html><html><body style='margin:0'>"
        "<div style='position:absolute;top:10px;left:10px'>first piece of text</div>"
        "<div style='position:absolute;top:12px;left:20px'>second piece of text</div>"
        "<div style='margin-top:60px;width:120px;overflow:hidden;white-space:nowrap'>this line is far too long for its box</div>"
        f"<div style='width:{WIDTH + 400}px'>wide</div></body></html>",
        encoding="utf-8",
    )
    found = layout(html)
    assert [o[:2] for o in found["overlaps"]] == [["first piece of text", "second piece of text"]]
    assert len(found["clipped"]) == 1 and "far too long" in found["clipped"][0]
    assert found["scrollWidth"] > found["innerWidth"]
