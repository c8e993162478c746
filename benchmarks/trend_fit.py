"""What a soak's trend fit costs on a long series against a short one.

A soak of hours keeps tens of thousands of samples, and its verdict fits them all:
``fit_trend`` first reduces a long series to ``MAX_FIT_POINTS`` bin medians, so a fit of 20,000
points should cost about what a fit of 200 does. Fits of the two (a leak of 500 B a sample under
1 MiB of noise, seed 7) alternate, ``--rounds`` times each; the script prints the best time of
each, their ratio, and the long fit against its target of 100 ms.

    python benchmarks/trend_fit.py
    python benchmarks/trend_fit.py --rounds 20

Takes a few seconds. (This was a test's wall-clock assert, which a loaded CI machine failed:
126 ms beside two busy loops.)
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_memleak.soak.trend import MAX_FIT_POINTS, fit_trend  # noqa: E402

TARGET = 0.1  # seconds for a fit of 20,000 points
MiB = 1024.0**2


def _series(n: int) -> tuple[list[float], list[float]]:
    rng = random.Random(7)
    return [0.1 * i for i in range(n)], [100 * MiB + 500.0 * i + rng.gauss(0, MiB) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    long, short = _series(20_000), _series(MAX_FIT_POINTS)
    best = {"20,000 points": math.inf, f"{MAX_FIT_POINTS} points": math.inf}
    for _ in range(args.rounds):  # A and B alternate
        for name, (t, y) in zip(best, (long, short), strict=True):
            start = time.perf_counter()
            fit_trend(t, y)
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"fit of {name}: best of {args.rounds}: {seconds * 1000:.1f} ms")
    a, b = best.values()
    print(f"ratio: {a / b:.2f}x the short fit")
    print(f"target: a fit of 20,000 points within {TARGET * 1000:.0f} ms: {'met' if a <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
