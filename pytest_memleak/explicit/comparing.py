"""Two runs compared: ``python -m pytest_memleak compare OLD.json NEW.json``.

Both files are ``memleak.json`` reports, such as main's CI artifact and a pull request's. The
comparison lists new leaks, leaks that grew beyond a threshold, fixed and shrunk leaks, and says
whether NEW is a regression: a new leak, or a known one that grew. Pure functions over the two
reports' ``tests``; the command in ``__main__`` prints them and exits 1 on a regression.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_memleak.config.units import format_size

SCHEMA = "pytest-memleak/1"
GREW_SHARE = 0.25  # a leak grew when its rate rose by more than this share ...
GREW_BYTES = 64.0  # ... and by more than this many bytes per run
PEAK_BYTES = 64 * 1024.0  # a peak grew when it rose by more than the share and by this many bytes


class BadReport(Exception):
    """A file that is not a memleak.json report: the message names the file and what is wrong."""


@dataclass
class Change:
    nodeid: str
    old: float | None  # retained bytes per run, None when it did not leak
    new: float | None
    reason: str = ""
    unit: str = "/run"  # "" for a peak

    def line(self, label: str) -> str:
        def rate(value: float | None) -> str:
            return "-" if value is None else f"{format_size(value)}{self.unit}"

        if self.old is not None and self.new is not None:
            share = f" ({(self.new - self.old) / self.old:+.0%})" if self.old > 0 else ""
            return f"{label:<9} {self.nodeid}: {rate(self.old)} -> {rate(self.new)}{share}"
        if self.new is not None:
            return f"{label:<9} {self.nodeid}: {rate(self.new)} - {self.reason}"
        return f"{label:<9} {self.nodeid}: was {rate(self.old)}"


@dataclass
class Comparison:
    new_leaks: list[Change] = field(default_factory=list)
    grew: list[Change] = field(default_factory=list)
    fixed: list[Change] = field(default_factory=list)
    shrank: list[Change] = field(default_factory=list)
    unchecked: list[Change] = field(default_factory=list)  # leaked in OLD, not checked in NEW
    peaks: list[Change] = field(default_factory=list)  # the peak of a test's call grew (memleak_peak)

    @property
    def regression(self) -> bool:
        return bool(self.new_leaks or self.grew or self.peaks)

    def lines(self, old_name: str, new_name: str, grew_share: float) -> list[str]:
        out = [f"memleak compare: {old_name} -> {new_name}"]
        for label, changes in (("NEW LEAK", self.new_leaks), ("GREW", self.grew), ("PEAK", self.peaks), ("FIXED", self.fixed), ("SHRANK", self.shrank), ("UNCHECKED", self.unchecked)):
            out.extend(change.line(label) for change in changes)
        if self.regression:
            peaks = f", {len(self.peaks)} peak(s) grew by more than {grew_share:.0%}" if self.peaks else ""
            out.append(f"regression: {len(self.new_leaks)} new leak(s), {len(self.grew)} leak(s) grew by more than {grew_share:.0%}{peaks}")
        else:
            out.append(f"no regression: {len(self.fixed)} fixed, {len(self.shrank)} shrank, {len(self.unchecked)} leak(s) not checked in {new_name}")
        return out


def load(path: Path) -> dict[str, Mapping[str, Any]]:
    """The tests of a memleak.json report by node id; BadReport when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadReport(f"{path}: no such file") from None
    except OSError as exc:
        raise BadReport(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BadReport(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("tests"), list):
        raise BadReport(f'{path}: not a memleak.json report (expected "schema": "{SCHEMA}" and a "tests" list)')
    tests: dict[str, Mapping[str, Any]] = {}
    for i, test in enumerate(data["tests"]):
        if not isinstance(test, dict) or not isinstance(test.get("nodeid"), str) or not isinstance(test.get("status"), str):
            raise BadReport(f"{path}: tests[{i}] is not a test result with a nodeid and a status")
        tests[test["nodeid"]] = test
    return tests


def _rate(test: Mapping[str, Any] | None) -> float | None:
    if test is None or test.get("status") != "leak":
        return None
    value = test.get("retained_per_run")
    return float(value) if isinstance(value, (int, float)) else 0.0


def compare(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]], grew_share: float = GREW_SHARE, grew_bytes: float = GREW_BYTES) -> Comparison:
    """What changed from ``old`` to ``new`` (tests by node id)."""
    result = Comparison()
    for nodeid in sorted(set(old) | set(new)):
        before, after = _rate(old.get(nodeid)), _rate(new.get(nodeid))
        reason = str((new.get(nodeid) or {}).get("reason", ""))
        if after is not None and before is None:
            result.new_leaks.append(Change(nodeid, None, after, reason))
        elif after is not None and before is not None:
            if after > before * (1 + grew_share) and after - before > grew_bytes:
                result.grew.append(Change(nodeid, before, after))
            elif after < before * (1 - grew_share) and before - after > grew_bytes:  # (the same margin: rates vary)
                result.shrank.append(Change(nodeid, before, after))
        elif before is not None:
            status = (new.get(nodeid) or {}).get("status")
            (result.fixed if status == "clean" else result.unchecked).append(Change(nodeid, before, None))
        old_peak, new_peak = _peak(old.get(nodeid)), _peak(new.get(nodeid))
        if old_peak is not None and new_peak is not None and new_peak > old_peak * (1 + grew_share) and new_peak - old_peak > PEAK_BYTES:
            result.peaks.append(Change(nodeid, old_peak, new_peak, unit=""))
    return result


def _peak(test: Mapping[str, Any] | None) -> float | None:
    value = (test or {}).get("peak")
    return float(value) if isinstance(value, (int, float)) else None


def main(argv: Sequence[str]) -> int:
    """``compare OLD NEW [--grew SHARE]``: print the comparison; 1 on a regression, 2 on bad input."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pytest_memleak compare", description="Compare two memleak.json reports.")
    parser.add_argument("old", type=Path, help="the earlier run's memleak.json (main's, say)")
    parser.add_argument("new", type=Path, help="the later run's memleak.json (a pull request's, say)")
    parser.add_argument(
        "--grew",
        default=f"{GREW_SHARE:.0%}",
        help=f"a leak that was already there is a regression when its rate rose by more than this share (default {GREW_SHARE:.0%}) and by more than {GREW_BYTES:.0f} B/run",
    )
    args = parser.parse_args(list(argv))
    text = str(args.grew).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        if not 0 <= share < float("inf"):
            raise ValueError
    except ValueError:
        parser.error(f"invalid value {args.grew!r} for --grew: expected a share such as 25% or 0.25")
    try:
        old, new = load(args.old), load(args.new)
    except BadReport as exc:
        parser.error(str(exc))
    comparison = compare(old, new, share)
    print("\n".join(comparison.lines(str(args.old), str(args.new), share)))
    return 1 if comparison.regression else 0
