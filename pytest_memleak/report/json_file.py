"""``memleak.json``: every result as its dict, and the session's summary (schema ``pytest-memleak/1``,
see docs/report-schema.md)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from pytest_memleak import __version__
from pytest_memleak.report.files import atomic_write
from pytest_memleak.report.summary import as_dict, read, soaks_of, summarize, tests_of
from pytest_memleak.results import LeakResult, SoakResult, jsonable

SCHEMA = "pytest-memleak/1"


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def default_meta() -> dict[str, Any]:
    """Versions and platform, for ``meta``; the caller's keys are added on top."""
    return {
        "plugin_version": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "pytest": _version("pytest"),
        "memray": _version("memray"),
        "platform": sys.platform,
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(
    path: str | os.PathLike[str],
    tests: Iterable[Mapping[str, Any] | LeakResult],
    soaks: Iterable[Mapping[str, Any] | SoakResult],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write ``memleak.json`` atomically. Raises OSError.

    A result is written as its dict (fields a later version adds pass through), one test or
    soak per line inside the ``tests`` and ``soaks`` arrays, so the file is both valid JSON
    and easy to grep.
    """
    raw_tests, raw_soaks = read(path, tests, lambda item: item), read(path, soaks, lambda item: item)  # (a stream is read once)
    test_list, soak_list = read(path, raw_tests, as_dict), read(path, raw_soaks, as_dict)
    summary = summarize(tests_of(path, raw_tests), soaks_of(path, raw_soaks))  # (typed results are used as they are)
    full_meta = {**default_meta(), **dict(meta or {})}

    def write(out: IO[str]) -> None:
        def dump(value: Any, indent: int | None = None) -> str:
            return json.dumps(jsonable(value), ensure_ascii=False, allow_nan=False, indent=indent)

        out.write("{\n")
        out.write(f'"schema": {json.dumps(SCHEMA)},\n')
        out.write(f'"meta": {dump(full_meta, 1)},\n')
        out.write(f'"summary": {dump(summary.to_dict(), 1)},\n')
        for key, items, last in (("tests", test_list, False), ("soaks", soak_list, True)):
            out.write(f'"{key}": [')
            for i, item in enumerate(items):
                out.write(",\n" if i else "\n")
                out.write(dump(item))
            out.write("\n]" if items else "]")
            out.write("\n" if last else ",\n")
        out.write("}\n")

    atomic_write(path, write)
