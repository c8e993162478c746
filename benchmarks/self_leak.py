"""Does pytest-memleak itself leak? Memory of a long `pytest --memleak` session, sampled as it runs.

Generates a suite of quick, clean tests (5,000 by default), then runs it in a subprocess
twice, alternating the order over the rounds: plain ``pytest`` (the plugin installed but not
enabled) and ``pytest --memleak``. A tiny conftest plugin records, every ``--every`` tests
(from ``pytest_runtest_logfinish``, after a ``gc.collect()``), the process RSS and
``sys.getallocatedblocks()``. The script prints both series and their least-squares slope per
1,000 tests. pytest keeps per-test state of its own (the items, and the reports the terminal
reporter holds for its summary) in both runs, so the plugin's own growth is the difference
of the two slopes:

    python benchmarks/self_leak.py [--tests 5000] [--every 250] [--rounds 1] [--extra-args "..."]

Per-test results stream to a temporary JSON-lines file, so the difference should be a
few blocks per 1,000 tests, not the hundreds of blocks (and kilobytes) per test it would
be if a result dict were kept for every test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

TESTS_PER_FILE = 250

# Quick tests that allocate, use bounded caches and make cyclic garbage: clean, but not idle.
QUICK_TESTS = '''
import collections
import functools
import json

import pytest

HISTORY = collections.deque(maxlen=16)


@functools.lru_cache(maxsize=64)
def parse(n):
    return json.loads(json.dumps({{"n": n, "items": list(range(n % 9))}}))


class Node:
    def __init__(self):
        self.peer = None


@pytest.mark.parametrize("n", range({per_file}))
def test_quick(n):
    HISTORY.append(parse(n % 100))
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    rows = [{{"id": i, "name": str(i)}} for i in range(10)]
    assert len(rows) == 10
'''

# Loaded as a conftest: records memory every EVERY finished tests into the file RECORD_PATH.
RECORDER = '''
import gc
import json
import os
import sys

import psutil

_EVERY = int(os.environ["MEMLEAK_SELF_EVERY"])
_PATH = os.environ["MEMLEAK_SELF_RECORD"]
_PROCESS = psutil.Process()
_STATE = [0, None]  # tests finished, open record file
# The control: a stand-in for a plugin that keeps one small result per test in memory.
_KEPT = [] if os.environ.get("MEMLEAK_SELF_KEEP") else None


def _sample(n):
    gc.collect()
    line = json.dumps({"tests": n, "rss": _PROCESS.memory_info().rss, "blocks": sys.getallocatedblocks()})
    _STATE[1].write(line + "\\n")
    _STATE[1].flush()


def pytest_sessionstart(session):
    _STATE[1] = open(_PATH, "w", encoding="utf-8")  # opened before the first sample: not counted as growth


def pytest_runtest_logfinish(nodeid, location):
    _STATE[0] += 1
    if _KEPT is not None:
        _KEPT.append({"nodeid": nodeid, "status": "clean", "reason": f"no growth over {_STATE[0] % 3 + 1} run(s)", "seconds": _STATE[0] / 1e4})
    if _STATE[0] % _EVERY == 0:
        _sample(_STATE[0])


def pytest_sessionfinish(session):
    if _STATE[1] is not None:
        _STATE[1].close()
'''


def make_suite(root: Path, tests: int) -> None:
    """`tests` quick clean tests in files of TESTS_PER_FILE, and the recording conftest."""
    left, index = tests, 0
    while left > 0:
        per_file = min(TESTS_PER_FILE, left)
        (root / f"test_gen_{index:03d}.py").write_text(textwrap.dedent(QUICK_TESTS.format(per_file=per_file)))
        left -= per_file
        index += 1
    (root / "conftest.py").write_text(textwrap.dedent(RECORDER))
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")


@dataclass
class Series:
    label: str
    tests: list[int]
    rss: list[float]
    blocks: list[float]
    seconds: float
    summary: str
    memleak_line: str

    def slope(self, metric: str, skip: int = 1) -> float:
        """Least-squares growth per test of `metric`, leaving out the first `skip` samples and the
        last one: the last test's logfinish follows the session's teardown, which frees what the
        session's fixtures held (pytest 8.0 keeps one finalizer per test on the session until
        then, so plain pytest's last sample drops by a whole interval's growth)."""
        xs = [float(x) for x in self.tests[skip:-1]]
        ys = getattr(self, metric)[skip:-1]
        return least_squares_slope(xs, ys)


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


def run_suite(root: Path, label: str, args: list[str], every: int, keep: bool = False) -> Series:
    record = root / f"record-{label}.jsonl"
    env = {**os.environ, "MEMLEAK_SELF_EVERY": str(every), "MEMLEAK_SELF_RECORD": str(record)}
    if keep:
        env["MEMLEAK_SELF_KEEP"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("MEMLEAK", None)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args], cwd=root, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:])
        raise SystemExit(f"pytest {' '.join(args)} exited {proc.returncode}")
    samples = [json.loads(line) for line in record.read_text().splitlines()]
    memleak_line = next((line for line in lines if " checked: " in line), "")
    return Series(
        label=label,
        tests=[s["tests"] for s in samples],
        rss=[float(s["rss"]) for s in samples],
        blocks=[float(s["blocks"]) for s in samples],
        seconds=seconds,
        summary=lines[-1] if lines else proc.stderr[-300:],
        memleak_line=memleak_line,
    )


def measure(
    tests: int, every: int, rounds: int, memleak_args: list[str], control: bool = False
) -> dict[str, list[Series]]:
    """Both runs `rounds` times, alternating which goes first, on one generated suite.

    With `control`, also a plain run whose conftest keeps a small dict per test (what a
    plugin that kept its results in memory would do), to show the measure sees it.
    """
    plain_args: list[str] = []
    with_args = ["--memleak", "--memleak-budget=none", *memleak_args]  # every test checked, whatever it costs
    out: dict[str, list[Series]] = {"plain": [], "memleak": []}
    if control:
        out["control"] = []
    with tempfile.TemporaryDirectory(prefix="memleak-self-") as tmp:
        root = Path(tmp)
        make_suite(root, tests)
        for i in range(rounds):
            order = [(label, with_args if label == "memleak" else plain_args) for label in out]
            if i % 2:
                order.reverse()
            for label, args in order:
                out[label].append(run_suite(root, label, args, every, keep=label == "control"))
    return out


def growth_per_test(results: dict[str, list[Series]], label: str, metric: str) -> float:
    """Median slope of `label` less the median slope of plain, per test."""
    own = statistics.median(s.slope(metric) for s in results[label])
    plain = statistics.median(s.slope(metric) for s in results["plain"])
    return own - plain


def fmt_kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=5000)
    parser.add_argument("--every", type=int, default=250, help="tests between samples")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each mode (alternating order)")
    parser.add_argument("--extra-args", default="", help="extra arguments for the --memleak run")
    parser.add_argument("--control", action="store_true", help="also run plain with a conftest that keeps a small dict per test")
    opts = parser.parse_args()
    results = measure(opts.tests, opts.every, opts.rounds, shlex.split(opts.extra_args), opts.control)
    slopes: dict[str, dict[str, float]] = {}
    for label, runs in results.items():
        for r, series in enumerate(runs, 1):
            print(f"\n== {label} (round {r}): {series.summary}  [{series.seconds:.1f} s wall]")
            if series.memleak_line:
                print(f"   memleak: {series.memleak_line}")
            print(f"   {'tests':>6}  {'RSS':>14}  {'blocks':>10}  {'Δblocks':>8}")
            for j, (n, rss, blocks) in enumerate(zip(series.tests, series.rss, series.blocks, strict=True)):
                delta = f"{blocks - series.blocks[j - 1]:+.0f}" if j else ""
                print(f"   {n:>6}  {fmt_kib(rss):>14}  {blocks:>10.0f}  {delta:>8}")
        slopes[label] = {
            "blocks": statistics.median(s.slope("blocks") for s in runs) * 1000,
            "rss": statistics.median(s.slope("rss") for s in runs) * 1000,
        }
    print()
    for label, s in slopes.items():
        print(f"{label:>8}: {s['blocks']:+8.1f} blocks and {fmt_kib(s['rss']):>12} RSS per 1,000 tests (least squares, first sample left out)")
    own_blocks = slopes["memleak"]["blocks"] - slopes["plain"]["blocks"]
    own_rss = slopes["memleak"]["rss"] - slopes["plain"]["rss"]
    print(
        f"the plugin's own growth: {own_blocks:+.1f} blocks ({own_blocks / 1000:+.3f}/test) and "
        f"{fmt_kib(own_rss)} RSS per 1,000 tests, over {opts.tests:,} tests"
    )
    if "control" in slopes:
        c_blocks = slopes["control"]["blocks"] - slopes["plain"]["blocks"]
        c_rss = slopes["control"]["rss"] - slopes["plain"]["rss"]
        print(
            f"control (a conftest keeping a 4-key dict per test): {c_blocks:+.1f} blocks "
            f"({c_blocks / 1000:+.3f}/test) and {fmt_kib(c_rss)} RSS per 1,000 tests"
        )


if __name__ == "__main__":
    main()
