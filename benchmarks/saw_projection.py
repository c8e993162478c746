"""How well a soak projects a leak whose memory saws, and how often a sawtooth without a leak reads as growing.

Simulated series, the same for every tree measured (one seed): a process leaks ``rate`` B/s
beside a buffer that fills at a steady rate (linearly, or in a curve) and is cleared at
``amplitude``, sampled every twentieth of its period, exactly (the samples fall on the clean-ups)
or not (a sampling step that does not divide the period, finer or coarser), with noise of up to
2% of the amplitude. One in three leaks is of the hardest kind: 0.2-0.3 MiB/s beside a buffer
of 12-24 MiB. Each leak is soaked 15 s (a third of its time to the limit, when shorter), and is
*projected* when ``fit_level(...).time_to(limit)`` is within a fifth of when its peaks reach the
limit; each flat sawtooth (30 s) is *growing* when its trend persists or it is projected to a limit.

    python benchmarks/saw_projection.py                                # this tree
    python benchmarks/saw_projection.py --trees . /tmp/main-checkout   # two trees, same series

Each tree runs in a subprocess with its own ``pytest_memleak`` first on ``sys.path``. Takes
seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

MiB = 1024.0**2
SAMPLINGS = {"on the clean-ups": 1.0, "finer, not dividing": 0.77, "coarser, not dividing": 1.37}
FILLS: dict[str, Callable[[Any], Any]] = {"linear": lambda p: p, "curved": lambda p: p**0.5}


def _series(np: Any, rng: Any, rate: float, amplitude: float, period: float, warm: float, noise: float, spacing: float, fill: str, duration: float) -> tuple[Any, Any, Callable[[Any], Any]]:
    def at(t: Any) -> Any:
        return 80 * MiB + warm * (1 - np.exp(-t / 0.5)) + rate * t + amplitude * FILLS[fill]((t / period) % 1.0)

    t = np.arange(0.0, duration, period / 20 * spacing)
    return t, at(t) + rng.normal(0, noise * amplitude, len(t)), at


def _child(n: int, seed: int) -> dict[str, list[int]]:
    import numpy as np

    try:
        from pytest_memleak.soak.trend import fit_level
    except ImportError:  # (a tree from before the package was laid out by job)
        from pytest_memleak.trend import fit_level  # type: ignore[import-not-found,no-redef]

    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {}
    for k in range(n):
        spacing = list(SAMPLINGS.values())[k % len(SAMPLINGS)]
        name = f"leak, sampled {list(SAMPLINGS)[k % len(SAMPLINGS)]}"
        hard = k % 3 == 0
        rate = rng.uniform(0.2, 0.3 if hard else 4.0) * MiB
        amplitude = rng.uniform(12 if hard else 8, 24) * MiB
        period, warm, noise = rng.uniform(0.5, 1.2), rng.uniform(0, 40) * MiB, rng.uniform(0, 0.02)
        limit = 80 * MiB + warm + 170 * MiB
        _, _, at = _series(np, rng, rate, amplitude, period, warm, noise, spacing, "linear", 0.0)
        fine = np.arange(0.0, 4000.0, 0.01)
        reached = float(fine[np.argmax(at(fine) >= limit)])
        soak = min(15.0, reached / 3)
        t, y, _ = _series(np, rng, rate, amplitude, period, warm, noise, spacing, "linear", soak)
        ttl = fit_level(list(t), list(y), warmup_fraction=0.1).time_to(limit)
        counts = out.setdefault(name, [0, 0, 0])  # not projected, off by more than a fifth, within it
        counts[0 if ttl is None else 1 if abs(soak + ttl - reached) > 0.2 * reached else 2] += 1
    for k in range(n):
        fill = list(FILLS)[k % len(FILLS)]
        spacing = list(SAMPLINGS.values())[(k // len(FILLS)) % len(SAMPLINGS)]
        amplitude, period, noise = rng.uniform(8, 24) * MiB, rng.uniform(0.8, 2.0), rng.uniform(0, 0.02)
        t, y, _ = _series(np, rng, 0.0, amplitude, period, 10 * MiB, noise, spacing, fill, 30.0)
        level = fit_level(list(t), list(y), warmup_fraction=0.1)
        growing = level.trend.persistent or level.time_to(80 * MiB + 10 * MiB + 170 * MiB) is not None
        out.setdefault(f"no leak, {fill} fill", [0, 0])[0 if growing else 1] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))])
    parser.add_argument("--n", type=int, default=600, help="series of each kind (default 600)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.n, args.seed)))
        return
    results = {}
    for tree in args.trees:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "--n", str(args.n), "--seed", str(args.seed)],
            env=env, capture_output=True, text=True, check=False, cwd=os.path.abspath(tree),
        )
        if done.returncode != 0:
            sys.exit(f"{tree}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        results[tree] = json.loads(done.stdout)
    print(f"{args.n} leaking and {args.n} flat sawtooth series, seed {args.seed}")
    for tree, out in results.items():
        print(f"\n{tree}")
        for name, counts in out.items():
            if len(counts) == 3:
                print(f"  {name:40s} not projected {counts[0]:4d}   off by more than a fifth {counts[1]:4d}   within a fifth {counts[2]:4d}")
            else:
                print(f"  {name:40s} read as growing {counts[0]:4d}   flat {counts[1]:4d}")


if __name__ == "__main__":
    main()
