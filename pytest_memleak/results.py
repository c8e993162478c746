"""What a check found, as plain dataclasses that turn into JSON and back.

Results travel on the test report (``report.memleak`` is ``result.to_dict()``), so they
survive pytest-xdist's serialisation and reach the controller, which aggregates them.
``from_dict`` reads them back typed, whatever the dict holds (:func:`typed`), and every report
is drawn from these types.
"""

from __future__ import annotations

import math
import os
import types
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class Status(str, Enum):
    """How a checked test ends. Every change of status is made in :mod:`pytest_memleak.check.deciding`."""

    CLEAN = "clean"  # measured; nothing grew beyond its budget
    LEAK = "leak"  # measured; growth persisted beyond a budget: the test fails
    NO_VERDICT = "no-verdict"  # the test failed, errored, skipped or xfailed: its own outcome stands
    INCONCLUSIVE = "inconclusive"  # the measurement could not settle it (the reason says why)

    def __str__(self) -> str:
        return self.value


CLEAN, LEAK, NO_VERDICT, INCONCLUSIVE = Status.CLEAN, Status.LEAK, Status.NO_VERDICT, Status.INCONCLUSIVE


@dataclass
class SiteGrowth:
    """One allocation site (file:line in user code) and what it retained."""

    site: str
    bytes_per_run: float
    blocks_per_run: float
    total_bytes: int
    total_blocks: int
    stack: list[str] = field(default_factory=list)  # innermost first, "file:line"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SiteGrowth:
        return typed(cls, data)


@dataclass
class Finding:
    """One budget that was exceeded: kind is heap, site, native, fds, threads, processes, tasks, objects, watch."""

    kind: str
    per_run: float
    budget: float
    unit: str  # "B" or "" for counts
    message: str
    evidence: list[str] = field(default_factory=list)
    in_allocators: bool = False  # native memory the allocators' own statistics count (not RSS alone)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return typed(cls, data)


@dataclass
class LeakResult:
    nodeid: str
    status: Status
    reason: str  # one line, for the summary
    runs: int = 0  # runs made, the test's own run included
    measured_runs: int = 0
    runs_per_step: int = 0  # runs between two checkpoints of the confirmation window
    retained_per_run: float = 0.0  # heap bytes per run attributed to user code (confirm phase)
    findings: list[Finding] = field(default_factory=list)
    sites: list[SiteGrowth] = field(default_factory=list)
    grown_types: dict[str, float] = field(default_factory=dict)  # type name -> instances per run
    series: dict[str, list[float]] = field(default_factory=dict)  # metric -> values after each run
    retention: list[str] = field(default_factory=list)  # reference paths to leaked objects
    retention_graph: str | None = None  # an SVG of the first path, drawn by objgraph and graphviz (evidence/diagnose.py)
    details: list[str] = field(default_factory=list)  # extra lines for the detail section
    problems: list[str] = field(default_factory=list)  # measurement problems worth reporting
    flamegraph: str | None = None
    capture: str | None = None
    seconds: float = 0.0
    own_seconds: float = 0.0  # the test's own run, less its wait for a CPU: what the screen's stretches are sized by
    settings: dict[str, Any] = field(default_factory=dict)
    over_budget: bool = False  # the session's cost budget did not reach it: unchecked
    warned: bool = False  # a leak reported only (memleak_warn): the test's own outcome stands
    known: bool = False  # a leak the baseline lists, within its rates: the test's own outcome stands
    peak: float | None = None  # bytes alive at the high-water mark of the test's own call (memleak_peak)
    peak_budget: float | None = None
    peak_sites: list[str] = field(default_factory=list)  # "file:line (function): size" alive at the peak
    peak_capture: str | None = None  # memray capture of the call: `memray flamegraph` shows the peak
    peak_over: str | None = None  # one line when the peak exceeded its budget: the test fails
    ignored_per_run: float = 0.0  # heap bytes per run at sites memleak_ignore left out
    group: str | None = None  # a leak's innermost frame outside the test files, which its group shares (evidence/grouping.py)

    @property
    def excused(self) -> bool:
        """A leak that does not fail its test (warn-only, or known to the baseline)."""
        return self.leaked and (self.warned or self.known)

    @property
    def leaked(self) -> bool:
        return self.status == LEAK

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON (one level of copying: ``asdict``'s deep copy cost more than a quick test)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["status"] = self.status.value
        data["findings"] = [asdict(f) for f in self.findings]
        data["sites"] = [asdict(g) for g in self.sites]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeakResult:
        return typed(cls, data)


@dataclass
class SoakResult:
    """A soak run: its trend verdict and a summary of its samples (the full samples are on disk)."""

    nodeid: str
    status: Status  # CLEAN or LEAK (or INCONCLUSIVE, NO_VERDICT)
    reason: str
    scenario: str = ""
    variant: str = ""
    expect_leak: bool | None = None
    duration: float = 0.0
    iterations: int = 0
    samples_path: str | None = None
    memory_limit: int | None = None
    metric: str = "rss"
    # trend over the post-warm-up window
    slope_per_iteration: float = 0.0  # bytes per iteration (Theil-Sen)
    slope_per_hour: float = 0.0  # bytes per hour
    slope_lower: float = 0.0  # lower confidence bound, bytes per hour
    slope_upper: float = 0.0
    plateaued: bool = False
    time_to_limit: float | None = None  # seconds until memory_limit at the fitted rate; None: never
    throughput: float = 0.0  # iterations per second
    # a downsampled view of the samples, for charts: seconds since start and values
    t: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    heap: list[float] = field(default_factory=list)
    fit_intercept: float = 0.0  # bytes at t=0 of the fitted line, for drawing it
    fit_slope_per_second: float = 0.0
    details: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # added by the soak runner (pytest_memleak.soak.run)
    samples: int = 0  # samples taken (all of them are in samples_path)
    sample_every: float = 0.0  # seconds, after scaling for a short (overridden) duration
    warmup_seconds: float = 0.0  # the first seconds left out of the fit
    max_growth: int = 0  # bytes per hour that still pass
    horizon: float | None = None  # seconds: fail when memory_limit would be reached within it
    duration_overridden: bool = False  # --memleak-soak-duration replaced the marker's duration
    persistent: bool = False  # RSS growth persists over the window and its last half and third
    leaked_metrics: list[str] = field(default_factory=list)  # "rss" and/or "heap": which series leaked
    heap_unit: str = "blocks"  # "B" when tracemalloc was already tracing, else pymalloc blocks
    heap_slope_per_hour: float = 0.0  # in heap_unit per hour
    heap_slope_lower: float = 0.0
    heap_slope_upper: float = 0.0
    heap_plateaued: bool = False
    tail_slope_per_hour: float = 0.0  # RSS bytes per hour over the last third of the window
    fit_start: float = 0.0  # seconds: the fitted (post-warm-up) window, for drawing the line
    fit_end: float = 0.0
    watched_pid: int | None = None  # the process the soak sampled (watch=), with its children; None: pytest's own
    watched: str = ""  # which process that is: "pid 123 (python) from fixture 'server', and its children"
    exit: str | None = None  # how the watched process ended during the soak ("signal SIGKILL"), when it did
    cpu_waited: float | None = None  # seconds a busy machine kept the soak waiting for a CPU (estimate); None: unknown
    flamegraph: str | None = None  # a leaks flamegraph of the watched service, captured live (memray attach)

    @property
    def matches_expectation(self) -> bool | None:
        if self.expect_leak is None:
            return None
        return (self.status == LEAK) == self.expect_leak

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)  # a Status is plain text on the wire (xdist, JSON)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoakResult:
        return typed(cls, data)


# --------------------------------------------------------------------------- as JSON, and back


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become None; unknown types raise TypeError."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in sorted(value, key=repr)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if callable(tolist) and hasattr(value, "dtype"):
        return jsonable(tolist())
    raise TypeError(f"{type(value).__name__} value {value!r:.80} is not JSON serialisable")


# --------------------------------------------------------------------------- reading back

_MISSING = object()
# what a required field reads as when a dict lacks it or holds something else
_FALLBACK: dict[type, Any] = {str: "", Status: INCONCLUSIVE}


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


def _fit(hint: Any, value: Any) -> Any:
    """``value`` as type ``hint``, or ``_MISSING`` when it is not one (a list or dict keeps the
    items that are)."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in get_args(hint):
            got = _fit(arg, value)
            if got is not _MISSING:
                return got
        return _MISSING
    if hint is type(None):
        return None if value is None else _MISSING
    if isinstance(value, bool) and hint is not bool:
        return _MISSING
    if hint is bool or hint is str:
        return value if isinstance(value, hint) else _MISSING
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else _MISSING
    if hint is float:
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else _MISSING
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except (ValueError, TypeError):
            return _MISSING
    if isinstance(hint, type) and is_dataclass(hint):
        return typed(hint, value) if isinstance(value, Mapping) else _MISSING
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return _MISSING
        (item,) = get_args(hint)
        return [got for got in (_fit(item, v) for v in value) if got is not _MISSING]
    if origin is dict:
        if not isinstance(value, Mapping):
            return _MISSING
        _, item = get_args(hint)
        return {str(k): got for k, v in value.items() if (got := _fit(item, v)) is not _MISSING}
    return value


def typed(cls: type[T], data: Mapping[str, Any]) -> T:
    """A result dataclass from a dict: each field as its type, a value of another type read as
    the field's default (a required one as ``""`` or INCONCLUSIVE), keys it does not know left
    out. A report drawn from it never meets a missing or odd field."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        got = _fit(hints[f.name], data[f.name]) if f.name in data else _MISSING
        if got is not _MISSING:
            kwargs[f.name] = got
        elif f.default is MISSING and f.default_factory is MISSING:
            kwargs[f.name] = _FALLBACK.get(hints[f.name], "")
    return cls(**kwargs)
