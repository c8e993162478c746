"""What a check found, as plain dataclasses that turn into JSON and back.

Results travel on the test report (``report.memleak`` is ``result.to_dict()``), so they
survive pytest-xdist's serialisation and reach the controller, which aggregates them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class Status(str, Enum):
    """How a checked test ends. Every change of status is made in :mod:`pytest_memleak.deciding`."""

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
    def from_dict(cls, data: dict[str, Any]) -> SiteGrowth:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


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
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


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
    details: list[str] = field(default_factory=list)  # extra lines for the detail section
    problems: list[str] = field(default_factory=list)  # measurement problems worth reporting
    flamegraph: str | None = None
    capture: str | None = None
    seconds: float = 0.0
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
    group: str | None = None  # a leak's innermost frame outside the test files, which its group shares (grouping.py)

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
    def from_dict(cls, data: dict[str, Any]) -> LeakResult:
        kwargs = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        kwargs["status"] = Status(data["status"])
        kwargs["findings"] = [Finding.from_dict(d) for d in data.get("findings", [])]
        kwargs["sites"] = [SiteGrowth.from_dict(d) for d in data.get("sites", [])]
        return cls(**kwargs)


@dataclass
class SoakResult:
    """A soak run: its trend verdict and a summary of its samples (the full samples are on disk)."""

    nodeid: str
    status: str  # CLEAN or LEAK (or INCONCLUSIVE, NO_VERDICT)
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
    # added by the soak runner (pytest_memleak.soak)
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
    def from_dict(cls, data: dict[str, Any]) -> SoakResult:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
