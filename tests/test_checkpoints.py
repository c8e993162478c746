"""The traced window's block count (``Checkpoints.blocks``) counts the test's blocks exactly.

A checkpoint keeps what it measured (site totals, floats in its series), and counts those
blocks out of the next one. Until 2026-12-01 it counted as its own an int that it freed on
returning, so every step read one block short: a test of 20 ms keeping one ``object()`` a run,
traced one run a step, had a flat block count on Python 3.11 to 3.13 and read clean. On 3.10 a
young collection's leftovers read two blocks a step too many.

The checkpoints run in a subprocess: they collect the frozen heap, which must not happen in
the test session's own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys, tracemalloc
    from pytest_memleak.check import measuring
    from pytest_memleak.check.repeating import Checkpoints
    from pytest_memleak.evidence.sites import Classifier

    def steps(kept_per_step, takes=6):
        kept = [None] * (kept_per_step * takes)  # (sized up front: a list's growth frees blocks)
        checkpoints, classifier = Checkpoints(), Classifier()
        n = 0
        for _ in range(takes):
            for _ in range(kept_per_step):
                kept[n] = object()
                n += 1
            checkpoints.take(classifier)
        blocks = checkpoints.blocks
        return [int(b - a) for a, b in zip(blocks, blocks[1:])]

    measuring.settle_interpreter()
    measuring.freeze()  # as the plugin's own runs do
    tracemalloc.start(8)
    print(json.dumps({k: steps(k) for k in (0, 1, 3)}))
    """
)


def test_each_step_counts_exactly_the_blocks_kept_between_checkpoints() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    steps = {int(k): v for k, v in json.loads(out.stdout).items()}
    for kept, series in steps.items():
        # the first step also holds the lists that the first checkpoint started; from the second on, exact
        assert series[1:] == [kept] * (len(series) - 1), (kept, series, out.stderr)
