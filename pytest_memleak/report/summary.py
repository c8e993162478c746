"""What a session's results come to: counts by verdict, what needs attention, the headline.

Every report reads its results through :func:`tests_of` and :func:`soaks_of`, as the typed
:class:`~pytest_memleak.results.LeakResult` and :class:`~pytest_memleak.results.SoakResult`
(a dict from the results file or a worker is read back with ``from_dict``), and its counts
through :func:`summarize`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytest_memleak.evidence.grouping import groups
from pytest_memleak.report.files import ReportWriteError
from pytest_memleak.results import (
    CLEAN,
    INCONCLUSIVE,
    LEAK,
    NO_VERDICT,
    LeakResult,
    SoakResult,
    Status,
)

STATUSES: tuple[Status, ...] = (LEAK, INCONCLUSIVE, NO_VERDICT, CLEAN)
ORDER: dict[Status, int] = {LEAK: 0, INCONCLUSIVE: 1, NO_VERDICT: 2, CLEAN: 3}  # the order reports list them in

R = TypeVar("R", LeakResult, SoakResult)


def as_dict(item: Any) -> dict[str, Any]:
    """A result as the dict the JSON holds (a dict passes through: fields a later version adds stay)."""
    if isinstance(item, Mapping):
        return dict(item)
    to_dict = getattr(item, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    raise TypeError(f"a result must be a dict, not {type(item).__name__}")


def _typed(cls: type[R], item: Any) -> R:
    if isinstance(item, cls):
        return item
    return cls.from_dict(item if isinstance(item, Mapping) else as_dict(item))


def read(path: Any, items: Iterable[Any] | None, convert: Any) -> list[Any]:
    """``items`` materialised once through ``convert``; a failing input (a corrupt results
    file) is a :class:`ReportWriteError` that names ``path``."""
    try:
        return [convert(item) for item in (items or ())]
    except OSError:
        raise
    except Exception as exc:
        raise ReportWriteError(f"could not write {path}: reading the results failed: {type(exc).__name__}: {exc}") from exc


def tests_of(path: Any, items: Iterable[Any] | None) -> list[LeakResult]:
    return read(path, items, lambda item: _typed(LeakResult, item))


def soaks_of(path: Any, items: Iterable[Any] | None) -> list[SoakResult]:
    return read(path, items, lambda item: _typed(SoakResult, item))


def unexpected(soak: SoakResult) -> bool:
    """A soak whose clean-or-leak verdict is not the one its marker expected."""
    return soak.status in (LEAK, CLEAN) and soak.matches_expectation is False


@dataclass
class Summary:
    """The ``summary`` object of ``memleak.json``, and the HTML page's headline."""

    tests: int
    by_status: dict[str, int]
    leaking: list[str]
    inconclusive: list[str]
    retained_per_run_leaking: float
    with_problems: int
    groups: list[dict[str, Any]]
    soaks: int
    soaks_by_status: dict[str, int]
    soaks_leaking: list[str]
    soaks_unexpected: list[str]
    soaks_expected_leaks: int = field(default=0, metadata={"json": False})  # leaking soaks marked expect_leak

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("json", True)}

    @property
    def headline(self) -> str:
        """One line over tests and soaks: "3 of 120 checked tests leak; 1 of 4 soaks leaks"."""
        parts = []
        leaks = self.by_status[LEAK]
        if self.tests or not self.soaks:
            s = "s" if self.tests != 1 else ""
            parts.append(f"{leaks:,} of {self.tests:,} checked tests leak" if leaks else f"no leaks in {self.tests:,} checked test{s}")
        if self.soaks:
            n = len(self.soaks_leaking)
            s = "s" if self.soaks != 1 else ""
            text = f"{n:,} of {self.soaks:,} soak{s} leak{'s' if n == 1 else ''}" if n else f"no leaks in {self.soaks:,} soak{s}"
            if n and self.soaks_expected_leaks:
                every = "all" if self.soaks_expected_leaks == n else f"{self.soaks_expected_leaks:,}"
                text += f" ({every} expected to)"
            parts.append(text)
        line = "; ".join(parts)
        return line[:1].upper() + line[1:]


def summarize(tests: Iterable[LeakResult], soaks: Iterable[SoakResult]) -> Summary:
    tests, soaks = list(tests), list(soaks)

    def count(results: list[Any]) -> dict[str, int]:
        out = {s.value: 0 for s in STATUSES}
        for r in results:
            out[r.status.value] += 1
        return out

    leaking_soaks = [s for s in soaks if s.status == LEAK]
    return Summary(
        tests=len(tests),
        by_status=count(tests),
        leaking=[t.nodeid for t in tests if t.status == LEAK],
        inconclusive=[t.nodeid for t in tests if t.status == INCONCLUSIVE],
        retained_per_run_leaking=sum(t.retained_per_run for t in tests if t.status == LEAK),
        with_problems=sum(1 for t in tests if t.problems),
        groups=groups(tests),
        soaks=len(soaks),
        soaks_by_status=count(soaks),
        soaks_leaking=[s.nodeid for s in leaking_soaks],
        soaks_unexpected=[s.nodeid for s in soaks if unexpected(s)],
        soaks_expected_leaks=sum(1 for s in leaking_soaks if s.expect_leak is True),
    )


def ordered(results: Iterable[R]) -> list[R]:
    """Leaks first (the largest first), then inconclusive, no verdict and clean, each by id."""
    def key(r: Any) -> tuple[int, float, str]:
        size = -r.retained_per_run if isinstance(r, LeakResult) and r.status == LEAK else 0.0
        return ORDER.get(r.status, 2), size, r.nodeid

    return sorted(results, key=key)
