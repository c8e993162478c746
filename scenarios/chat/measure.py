"""Measure what each variant retains per step: ``python -m scenarios.chat.measure``.

Each variant runs in its own subprocess (so one variant's freed-but-kept heap cannot blur the
next), drives ``steps`` steps of ``requests`` after ``warmup`` steps, and reports the slope
(least squares over a sample every 10 steps) of RSS, of the traced Python heap (tracemalloc,
which also sees numpy buffers but not C ``malloc``) and of open file descriptors, plus the
CPU time per step (measured in a pass without tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from .config import PATTERNS, ChatConfig
from .service import ChatService
from .workload import Workload

KiB = 1024


@dataclass
class Measurement:
    variant: str
    steps: int
    ms_per_step: float
    rss_kib_per_step: float
    heap_kib_per_step: float
    fds_per_step: float


def config_for(variant: str) -> ChatConfig:
    if variant == "fixed":
        return ChatConfig.fixed()
    if variant == "leaky":
        return ChatConfig.leaky()
    return ChatConfig.leaky_only(*variant.split("+"))


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _run(
    variant: str, steps: int, warmup: int, requests: int, seed: int, traced: bool
) -> dict[str, float]:
    proc = psutil.Process()
    if traced:  # from the start: objects allocated before tracing would look like growth
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        workload = Workload(seed)
        service = ChatService(config_for(variant), Path(tmp) / "chat.db", clock=workload.clock)
        try:
            for _ in range(warmup):
                workload.step(service, requests)
            gc.collect()
            xs: list[float] = []
            rss: list[float] = []
            heap: list[float] = []
            fds: list[float] = []
            cpu = time.process_time()
            for i in range(steps + 1):
                if i % 10 == 0:
                    xs.append(i)
                    rss.append(proc.memory_info().rss)
                    fds.append(proc.num_fds())
                    heap.append(tracemalloc.get_traced_memory()[0] if traced else 0)
                if i < steps:
                    workload.step(service, requests)
            cpu = time.process_time() - cpu
            if traced:
                tracemalloc.stop()
        finally:
            service.close()
    return {
        "ms": cpu / steps * 1e3,
        "rss": slope(xs, rss) / KiB,
        "heap": slope(xs, heap) / KiB,
        "fds": slope(xs, fds),
    }


def measure(
    variant: str, steps: int = 400, warmup: int = 100, requests: int = 50, seed: int = 0
) -> Measurement:
    plain = _run(variant, steps, warmup, requests, seed, traced=False)
    traced = _run(variant, steps, warmup, requests, seed, traced=True)
    return Measurement(variant, steps, plain["ms"], plain["rss"], traced["heap"], plain["fds"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "variants", nargs="*", help="fixed, leaky, or pattern[+pattern]; default: all"
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", action="store_true", help="run in this process, print JSON")
    args = parser.parse_args(argv)
    if args.one:
        (variant,) = args.variants
        print(
            json.dumps(asdict(measure(variant, args.steps, args.warmup, args.requests, args.seed)))
        )
        return
    variants = args.variants or ["fixed", *PATTERNS, "leaky"]
    print(
        f"{'variant':<14} {'ms/step':>8} {'RSS KiB/step':>13} {'heap KiB/step':>14} {'fds/step':>9}"
    )
    for variant in variants:
        cmd = [sys.executable, "-m", "scenarios.chat.measure", "--one", variant]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--requests", str(args.requests), "--seed", str(args.seed)]
        m = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"{variant:<14} {m['ms_per_step']:>8.2f} {m['rss_kib_per_step']:>13.1f}"
            f" {m['heap_kib_per_step']:>14.1f} {m['fds_per_step']:>9.2f}"
        )


if __name__ == "__main__":
    main()
