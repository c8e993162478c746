"""The plugin does not leak: over a long `--memleak` session its own memory stays flat.

``benchmarks/self_leak.py`` at a smaller scale: 1,500 generated quick clean tests, sampled every
250 tests by a conftest (``gc.collect()``, then ``sys.getallocatedblocks()`` and RSS, from
``pytest_runtest_logfinish``). pytest keeps per-test state of its own in both runs (its items and
the reports the terminal reporter holds), so the plugin's growth is the slope with
``--memleak`` less the slope without it.

A plugin that kept even a small dict per test would add about 3 blocks per test (the control
run shows that the measure sees it); the results must stream to disk instead, and nothing the
plugin attaches to pytest's reports may outlive the report hooks.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TESTS = 1500
EVERY = 250
MAX_BLOCKS_PER_TEST = 2.0  # a 4-key dict kept per test is about 3
MAX_RSS_PER_TEST = 1024.0  # bytes; RSS moves by pages, so the bound is looser than the blocks'

pytestmark = pytest.mark.slow  # a session of 1,500 tests, plain and with --memleak


def _self_leak() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "self_leak.py"
    spec = importlib.util.spec_from_file_location("memleak_self_leak_benchmark", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured() -> tuple[ModuleType, dict]:
    bench = _self_leak()
    return bench, bench.measure(TESTS, EVERY, rounds=1, memleak_args=[], control=True)


def test_every_run_checked_every_test_and_sampled_throughout(measured: tuple[ModuleType, dict]) -> None:
    _, results = measured
    for label in ("plain", "memleak", "control"):
        (series,) = results[label]
        assert series.summary.startswith(f"{TESTS} passed"), (label, series.summary)
        assert series.tests == list(range(EVERY, TESTS + 1, EVERY)), label
    assert results["memleak"][0].memleak_line == f"{TESTS} checked: 0 leaking, {TESTS} clean, 0 inconclusive, 0 without verdict (not passed)"


def test_the_measure_sees_a_small_dict_kept_per_test(measured: tuple[ModuleType, dict]) -> None:
    bench, results = measured
    kept = bench.growth_per_test(results, "control", "blocks")
    assert kept > MAX_BLOCKS_PER_TEST, f"the control kept a dict per test but grew only {kept:.2f} blocks/test"


def test_plugin_memory_stays_flat_over_a_long_session(measured: tuple[ModuleType, dict]) -> None:
    bench, results = measured
    blocks = bench.growth_per_test(results, "memleak", "blocks")
    rss = bench.growth_per_test(results, "memleak", "rss")
    plain, memleak = results["plain"][0], results["memleak"][0]
    detail = (
        f"--memleak grew {blocks:+.2f} blocks and {rss:+.0f} B of RSS per test more than plain pytest "
        f"over {TESTS} tests (blocks every {EVERY} tests: plain {[int(b) for b in plain.blocks]}, "
        f"--memleak {[int(b) for b in memleak.blocks]})"
    )
    assert blocks < MAX_BLOCKS_PER_TEST, detail
    assert rss < MAX_RSS_PER_TEST, detail
