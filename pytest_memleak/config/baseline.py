"""A baseline of known leaks: read, and written from a run (``--memleak-baseline``).

The file is JSON a team reviews in pull requests: one entry per leaking test, in test-id order,
each the per-run rate of every kind of finding it had (the largest, where a kind was found
more than once, such as two sites)::

    {
      "schema": 1,
      "leaks": {
        "tests/test_cache.py::test_fill": {"heap": 3712.0},
        "tests/test_pool.py::test_connect": {"fds": 1.0, "heap": 240.0}
      }
    }

Whether a leak is still the known one is decided in :func:`pytest_memleak.check.deciding.against_baseline`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

SCHEMA = 1
FORM = '{"schema": 1, "leaks": {"<test id>": {"<finding kind>": <rate per run>, ...}, ...}}'

Baseline = dict[str, dict[str, float]]  # test id -> finding kind -> per-run rate


def _bad(path: Path, source: str, why: str) -> pytest.UsageError:
    return pytest.UsageError(
        f"pytest-memleak: the baseline {path} (from {source}) cannot be used: {why}; expected {FORM} "
        "(--memleak-baseline-write writes it from a run)"
    )


def load(path: Path, source: str, missing_ok: bool = False) -> Baseline:
    """The baseline at ``path``; a usage error naming the file and the entry when it is not one
    (``missing_ok``: a file not there yet, about to be written, is an empty baseline)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise _bad(path, source, "no such file") from None
    except OSError as exc:
        raise _bad(path, source, exc.strerror or str(exc)) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _bad(path, source, f"not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("leaks"), dict):
        raise _bad(path, source, 'no "leaks" object at the top level')
    if data.get("schema") != SCHEMA:
        raise _bad(path, source, f'"schema" is {data.get("schema")!r}, not {SCHEMA}')
    known: Baseline = {}
    for nodeid, entry in data["leaks"].items():
        if not isinstance(entry, dict) or not entry:
            raise _bad(path, source, f"the entry {nodeid!r} is {entry!r}, not an object of kinds and rates")
        rates: dict[str, float] = {}
        for kind, rate in entry.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
                raise _bad(path, source, f"the entry {nodeid!r} has {kind!r}: {rate!r}, not a rate per run of 0 or more")
            rates[str(kind)] = float(rate)
        known[str(nodeid)] = rates
    return known


def rates(result: Mapping[str, Any]) -> dict[str, float]:
    """A leaking result's findings, as a baseline entry: each kind's largest per-run rate."""
    out: dict[str, float] = {}
    for finding in result.get("findings") or []:
        kind, rate = str(finding.get("kind")), float(finding.get("per_run") or 0.0)
        out[kind] = max(out.get(kind, 0.0), round(rate, 1))
    return dict(sorted(out.items()))


def merged(old: Baseline, results: Iterable[Mapping[str, Any]]) -> Baseline:
    """The baseline after a run: this run's leaks; an old entry of a test checked clean dropped
    (fixed); an old entry of a test this run did not settle (unchecked, inconclusive) kept."""
    new = dict(old)
    for result in results:
        nodeid, status = str(result.get("nodeid")), result.get("status")
        if status == "leak":
            new[nodeid] = rates(result)
        elif status == "clean":
            new.pop(nodeid, None)
    return new


def write(path: Path, known: Baseline) -> None:
    """Write ``known`` to ``path``: sorted, one test per line, so that a diff shows each test's change."""
    lines = [f"    {json.dumps(nodeid)}: {json.dumps(known[nodeid], sort_keys=True)}" for nodeid in sorted(known)]
    body = ",\n".join(lines)
    text = f'{{\n  "schema": {SCHEMA},\n  "leaks": {{\n{body}\n  }}\n}}\n' if lines else f'{{\n  "schema": {SCHEMA},\n  "leaks": {{}}\n}}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # whole or not at all: an interrupted write leaves the old baseline
