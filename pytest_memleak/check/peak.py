"""Peak budgets (``memleak_peak``): the high-water mark of memory a test's own call allocated.

The call runs under memray (Python and native allocations, aggregated: a small file), which
records what was alive at the peak. The capture is kept beside the reports, so that
``memray flamegraph`` shows the peak, and the largest sites alive at the peak name where it
came from. Whether the peak is over its budget is decided in :func:`deciding.over_peak`.

memray is imported here only, when a test has a peak budget. Nothing here raises: a peak that
cannot be measured (memray missing, another tracker active) is a problem reported, and the
test's own outcome stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_memleak.evidence.sites import Classifier

TOP = 5  # sites listed, largest first ...
MIN_SHARE = 0.01  # ... that hold this share of the peak at the least


@dataclass
class PeakMeasure:
    peak: float | None = None  # bytes allocated and alive at the high-water mark of the call
    sites: list[str] = field(default_factory=list)  # "file:line (function): size", largest first
    capture: str | None = None  # the memray capture (`memray flamegraph` on it shows the peak)
    problem: str | None = None


class Tracking:
    """memray tracking one call: :meth:`start` before it, :meth:`stop` after it."""

    def __init__(self, capture: Path, classifier: Classifier) -> None:
        self.capture, self.classifier = capture, classifier
        self._tracker: Any = None
        self.problem: str | None = None

    def start(self) -> None:
        try:
            import memray

            self.capture.parent.mkdir(parents=True, exist_ok=True)
            self.capture.unlink(missing_ok=True)  # memray refuses to overwrite a capture
            tracker = memray.Tracker(
                str(self.capture), native_traces=False, follow_fork=False, trace_python_allocators=False,
                file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS,
            )
            tracker.__enter__()
        except Exception as exc:  # memray missing or broken, another tracker active, an unwritable directory
            self.problem = f"peak not measured: memray could not track the call: {type(exc).__name__}: {exc}"
            return
        self._tracker = tracker

    def stop(self) -> PeakMeasure:
        if self._tracker is None:
            return PeakMeasure(problem=self.problem)
        try:
            self._tracker.__exit__(None, None, None)
            import memray

            reader = memray.FileReader(str(self.capture))
            sites: dict[str, float] = {}
            for record in reader.get_high_watermark_allocation_records(merge_threads=True):
                site = self._site(record.stack_trace())
                sites[site] = sites.get(site, 0.0) + record.size
            from pytest_memleak.config.units import format_size

            peak = float(reader.metadata.peak_memory)
            top = [(site, size) for site, size in sorted(sites.items(), key=lambda kv: -kv[1]) if size >= MIN_SHARE * peak][:TOP]
            return PeakMeasure(peak, [f"{site}: {format_size(size)}" for site, size in top], str(self.capture))
        except Exception as exc:
            from pytest_memleak.evidence.flamegraph import _unlink_quietly

            _unlink_quietly(self.capture)
            return PeakMeasure(problem=f"peak not measured: memray could not read the capture: {type(exc).__name__}: {exc}")

    def _site(self, stack: list[tuple[str, str, int]]) -> str:
        """The innermost frame in the project (the classifier's), else the innermost frame."""
        if not stack:  # (the interpreter's or a C library's own, or a thread's)
            return "no Python frame"
        chosen = next((frame for frame in stack if self.classifier.kind(frame[1]) == "project"), None)
        function, filename, line = chosen or stack[0]
        return f"{self.classifier.relpath(filename)}:{line} ({function})"
