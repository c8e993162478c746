"""A soak's samples: streamed to a JSON-lines file as they are taken, and kept for the fit in columns allocated once."""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path
from typing import Any

from pytest_memleak.results import (
    jsonable,
)

MAX_KEPT_SAMPLES = 16384  # in memory for the fit (all samples go to the file); halved when full


CHART_POINTS = 300  # points in SoakResult.t/rss/heap


class SampleFile:
    """Append-only JSON lines, one write(2) per line: a kill leaves only whole lines."""

    def __init__(self, path: Path) -> None:
        self.fd: int | None = None
        self.error: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as exc:  # the soak still runs and judges; it just keeps nothing on disk
            self.error = str(exc)

    def write(self, record: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(jsonable(record), separators=(",", ":")) + "\n").encode()
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError as exc:  # disk full...: stop writing, keep soaking
            self.error = str(exc)
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Series:
    """Fixed-capacity columns for the fit: allocated once, so keeping them leaks nothing.

    When full, every other sample is dropped and only every 2nd (4th, ...) later sample is
    kept; the file keeps them all.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(64, capacity + capacity % 2)
        zeros = bytes(8 * self.capacity)
        self.t = array("d", zeros)
        self.iterations = array("d", zeros)
        self.rss = array("d", zeros)
        self.heap = array("d", zeros)
        self.blocks = array("d", zeros)  # allocated blocks (sys.getallocatedblocks), beside a heap in bytes
        self.count = 0
        self.stride = 1
        self.seen = 0

    def add(self, t: float, iterations: float, rss: float, heap: float, blocks: float, force: bool = False) -> None:
        index = self.seen
        self.seen += 1
        if index % self.stride and not force:
            return
        if self.count == self.capacity:
            for column in (self.t, self.iterations, self.rss, self.heap, self.blocks):
                column[: self.capacity // 2] = column[::2]
            self.count = self.capacity // 2
            self.stride *= 2
        n = self.count
        self.t[n], self.iterations[n], self.rss[n], self.heap[n], self.blocks[n] = t, iterations, rss, heap, blocks
        self.count = n + 1

    def columns(self) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
        n = self.count
        return (
            self.t[:n].tolist(),
            self.iterations[:n].tolist(),
            self.rss[:n].tolist(),
            self.heap[:n].tolist(),
            self.blocks[:n].tolist(),
        )


def chart_indices(n: int, points: int = CHART_POINTS) -> list[int]:
    if n <= points:
        return list(range(n))
    return sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
