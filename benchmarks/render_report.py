"""Render a sample pytest-memleak HTML report from synthetic results, and screenshot it.

    python benchmarks/render_report.py                 # reports/sample.html (+ sample.png)
    python benchmarks/render_report.py --out-dir /tmp/r --extra-clean 5000 --no-screenshot

The screenshot uses headless Chromium when ``/usr/bin/chromium`` (or ``--chromium``) exists;
the script prints the render time, the file size and where the PNG went.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

from pytest_memleak.evidence.flamegraph import capture_run, safe_name
from pytest_memleak.report import write_html, write_json
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

MiB = 1024 * 1024
CHROMIUM = "/usr/bin/chromium"
_KEPT: list[bytearray] = []


def keep_memory() -> None:
    _KEPT.append(bytearray(4 * MiB))


def leak_result() -> LeakResult:
    traced = [52.0 * MiB + i * 96 * 1024 + random.uniform(-4000, 4000) for i in range(8)]
    return LeakResult(
        nodeid="tests/test_cache.py::test_lookup_caches_forever[<script>alert('x')</script>]",
        status=LEAK,
        reason="heap retained 96.0 KiB/run (budget 0 B/run), mostly at app/cache.py:42",
        runs=29,
        measured_runs=27,
        retained_per_run=96 * 1024,
        findings=[
            Finding("heap", 96 * 1024, 0, "B", "heap retained 96.0 KiB/run (budget 0 B/run) at app/cache.py:42",
                    ["app/cache.py:42 +96.0 KiB/run"]),
            Finding("objects", 3, 0, "", "3 dict instances per run stay alive"),
        ],
        sites=[
            SiteGrowth("app/cache.py:42", 90 * 1024, 3.0, 24 * 90 * 1024, 72,
                       ["app/cache.py:42", "app/service.py:17", "tests/test_cache.py:9"]),
            SiteGrowth("app/service.py:88", 6 * 1024, 1.0, 24 * 6 * 1024, 24, ["app/service.py:88"]),
        ],
        grown_types={"dict": 3.0, "app.cache.Entry": 1.0},
        series={
            "screen.blocks": [412_000 + 310 * i for i in range(4)],
            "screen.rss": [88 * MiB + i * 120 * 1024 for i in range(4)],
            "screen.fds": [12, 12, 12, 12],
            "confirm.heap": [50 * MiB + i * 3 * 96 * 1024 for i in range(8)],
            "confirm.traced": traced,
            "confirm.rss": [90 * MiB + i * 300 * 1024 for i in range(8)],
            "confirm.threads": [1] * 8,
        },
        retention=["module app.cache -> _CACHE (dict) -> ['user-1'] -> Entry"],
        details=["confirmation: 24 runs in 8 checkpoints of 3 runs"],
        flamegraph=None,
        seconds=1.8,
        settings={"retained": 0, "runs": 3, "confirm_runs": 24},
    )


def clean_result(i: int = 0) -> LeakResult:
    return LeakResult(
        nodeid=f"tests/test_parser.py::test_parse_roundtrip[case-{i}]",
        status=CLEAN,
        reason="no growth over 3 measured run(s)",
        runs=4,
        measured_runs=3,
        series={"screen.blocks": [300_120.0 + random.choice((0, 0, 2)) for _ in range(4)],
                "screen.rss": [70 * MiB] * 4},
        seconds=0.05,
        settings={"retained": 0},
    )


def soak_result() -> SoakResult:
    duration = 1800.0
    n = 240
    t = [duration * k / (n - 1) for k in range(n)]
    slope = 40 * MiB / 3600  # 40 MiB per hour
    rss = [180 * MiB + slope * x + 2 * MiB * math.sin(x / 40) + random.uniform(-MiB, MiB) for x in t]
    heap = [60 * MiB + 0.6 * slope * x + random.uniform(-0.3 * MiB, 0.3 * MiB) for x in t]
    limit = 256 * MiB
    intercept = 180 * MiB
    return SoakResult(
        nodeid="tests/soak/test_server.py::test_soak_requests[keepalive]",
        status=LEAK,
        reason="RSS grows 40.0 MiB/h (95% CI 36.1 MiB … 43.8 MiB/h); projected to reach the 256 MiB limit in 1 h 24 min",
        scenario="requests",
        variant="keepalive",
        expect_leak=True,
        duration=duration,
        iterations=90_000,
        memory_limit=limit,
        metric="rss",
        slope_per_iteration=slope * duration / 90_000,
        slope_per_hour=40 * MiB,
        slope_lower=36.1 * MiB,
        slope_upper=43.8 * MiB,
        time_to_limit=(limit - (intercept + slope * duration)) / slope,
        throughput=50.0,
        t=t,
        rss=rss,
        heap=heap,
        fit_intercept=intercept,
        fit_slope_per_second=slope,
    )


def sample(extra_clean: int = 0) -> tuple[list[dict], list[dict]]:
    random.seed(7)
    tests = [
        clean_result(0).to_dict(),
        leak_result().to_dict(),
        LeakResult("tests/test_io.py::test_flaky_socket", INCONCLUSIVE,
                   "run 3 failed in call: the test is not repeatable").to_dict(),
        LeakResult("tests/test_io.py::test_skipped_on_ci", NO_VERDICT, "the test was skipped").to_dict(),
    ]
    tests += [clean_result(i).to_dict() for i in range(1, 1 + extra_clean)]
    return tests, [soak_result().to_dict()]


def screenshot(html: pathlib.Path, png: pathlib.Path, chromium: str = CHROMIUM, size: str = "1280,2000") -> str | None:
    """Screenshot ``html`` into ``png`` with headless Chromium; return a problem or None."""
    if not (os.path.exists(chromium) or shutil.which(chromium)):
        return f"no chromium at {chromium}"
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="memleak-chromium-") as profile:
        args = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size}",
            html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"chromium failed: {exc}"
    if not png.is_file() or png.stat().st_size == 0:
        return f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-500:]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default="reports", type=pathlib.Path)
    parser.add_argument("--extra-clean", type=int, default=0, help="add this many clean tests")
    parser.add_argument("--no-screenshot", action="store_true")
    parser.add_argument("--no-flamegraph", action="store_true", help="skip the real memray capture")
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--window-size", default="1280,2000")
    args = parser.parse_args(argv)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    tests, soaks = sample(args.extra_clean)
    if not args.no_flamegraph:
        # a real memray capture of a function that keeps memory, linked from the leak's row
        outcome = capture_run(keep_memory, args.out_dir / "flamegraphs" / safe_name(tests[1]["nodeid"]))
        print(f"flamegraph: {outcome.html} in {outcome.capture_seconds + outcome.render_seconds:.2f} s"
              + (f" ({outcome.problem})" if outcome.problem else ""))
        tests[1]["flamegraph"] = str(outcome.html) if outcome.html else None
        tests[1]["capture"] = str(outcome.capture) if outcome.capture else None
    meta = {"started": time.time() - 1900, "duration": 1900.0, "settings": {"retained": "0 B", "runs": 3}}
    html = args.out_dir / "sample.html"
    started = time.perf_counter()
    write_html(html, tests, soaks, meta)
    took = time.perf_counter() - started
    write_json(args.out_dir / "sample.json", tests, soaks, meta)
    print(f"{html}: {len(tests)} tests, {html.stat().st_size / 1024:.0f} KiB in {took:.2f} s")
    if args.no_screenshot:
        return 0
    png = args.out_dir / "sample.png"
    problem = screenshot(html, png, args.chromium, args.window_size)
    print(problem or f"screenshot: {png} ({png.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
