"""The session's results: every checked test's streamed to a temporary JSON-lines file as it
ends (a suite of thousands keeps none in memory), and what the end-of-run summary lists."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from pytest_memleak.results import INCONCLUSIVE, LEAK, LeakResult


class ResultStore:
    """Streams every result to a temporary JSON-lines file; keeps in memory only what the summary lists."""

    def __init__(self) -> None:
        self._file: Any = None
        self.counts: dict[str, int] = {}
        self.over_budget = 0  # tests the cost budget did not reach
        self.ignored = [0, 0.0]  # tests with growth memleak_ignore left out, and its bytes per run in all
        self.notable: list[LeakResult] = []  # leaking and inconclusive (what the summary needs of them): listed at the end
        self.soaks: list[dict[str, Any]] = []

    def add(self, data: dict[str, Any], kind: str = "test") -> None:
        if kind == "soak":
            self.soaks.append(data)
        else:
            status = data.get("status", "")
            self.counts[status] = self.counts.get(status, 0) + 1
            self.over_budget += bool(data.get("over_budget"))
            if data.get("ignored_per_run"):
                self.ignored[0] += 1
                self.ignored[1] += float(data["ignored_per_run"])
            if status in (LEAK, INCONCLUSIVE) or data.get("peak_over"):
                self.notable.append(
                    LeakResult.from_dict({k: data.get(k) for k in ("nodeid", "status", "reason", "warned", "known", "group", "peak_over")})
                )
        if self._file is None:
            # open for the whole session: results stream here, closed in pytest_unconfigure
            self._file = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="memleak-results-")  # noqa: SIM115
        self._file.write(json.dumps({"kind": kind, "data": data}) + "\n")

    def iter(self, kind: str) -> Any:
        if self._file is None:
            return
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            record = json.loads(line)
            if record["kind"] == kind:
                yield record["data"]
        self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
