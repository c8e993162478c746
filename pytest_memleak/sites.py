"""Where retained memory was allocated: tracemalloc traces grouped by the line in user code.

A trace belongs to the *machinery* (and is ignored) when the nearest frame that is not the
standard library belongs to pytest, pluggy, importlib, tracemalloc, hypothesis or this plugin: pytest's
own call path grows for a while under some tests and that is not the test's leak.
Everything else is grouped by its *site*: the innermost frame under the project's root
directory if there is one, else the innermost frame outside the standard library, else the
innermost frame.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import sysconfig
import tracemalloc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from .results import SiteGrowth

RawFrames = Sequence[tuple[str, int]]  # innermost first, as tracemalloc stores them

_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


_MACHINERY = ("_pytest", "pluggy", "pytest", "xdist", "execnet", "pytest_memray", "memray", "hypothesis")


def _machinery_dirs() -> tuple[str, ...]:
    """The directories of the packages that run tests, found whether or not they are imported yet:
    the session's classifier is made at configure, and a suite's test files import hypothesis
    later (its pytest plugin does not), which left its engine's bookkeeping charged to the test
    that called it (a clean hypothesis test read as a leak on a loaded machine)."""
    from importlib.util import find_spec

    dirs = [_PLUGIN_DIR + os.sep]
    for name in _MACHINERY:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path:
            try:
                spec = find_spec(name)  # (a top-level name: nothing is imported)
            except (ImportError, ValueError):
                spec = None
            path = spec.origin if spec is not None and spec.has_location else None
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


def short_path(filename: str) -> str:
    """A file name for people: relative to the stdlib, site-packages or the working directory."""
    if filename.startswith(_STDLIB_PREFIX):
        return filename[len(_STDLIB_PREFIX) :]
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


_STDLIB_PREFIX = os.path.dirname(os.__file__) + os.sep


def _stdlib_dirs() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib")}
    return tuple(os.path.abspath(p) + os.sep for p in paths if p)


_MACHINERY_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", tracemalloc.__file__)
_SITE_PACKAGES = ("site-packages", "dist-packages")


@dataclass
class Classifier:
    """Classifies filenames as machinery / stdlib / project, with a cache per filename."""

    rootdir: str = ""
    machinery: tuple[str, ...] = field(default_factory=_machinery_dirs)
    stdlib: tuple[str, ...] = field(default_factory=_stdlib_dirs)

    def __post_init__(self) -> None:
        self.rootdir = os.path.abspath(self.rootdir) + os.sep if self.rootdir else ""
        self.kind = lru_cache(maxsize=4096)(self._kind)

    def _kind(self, filename: str) -> str:
        if filename in _MACHINERY_FILES or filename.startswith("<frozen importlib"):
            return "machinery"
        if filename.startswith("<"):  # <string> (exec'd code such as dataclass methods), <frozen ...>
            return "stdlib"
        path = os.path.abspath(filename) if not filename.startswith("<") else filename
        if path.startswith(self.machinery):
            return "machinery"
        in_site_packages = any(part in path for part in _SITE_PACKAGES)
        if path.startswith(self.stdlib) and not in_site_packages:
            return "stdlib"
        if self.rootdir and path.startswith(self.rootdir) and not in_site_packages:
            return "project"
        return "other"

    def site_of(self, frames: RawFrames) -> tuple[str, int] | None:
        """The site a trace is charged to, or None when the trace is the machinery's."""
        owner = None
        for filename, _ in frames:
            kind = self.kind(filename)
            if kind == "stdlib":
                continue
            if owner is None:
                owner = kind
                if kind != "other":
                    break
            elif kind != "other":  # who called the library: the plugin itself (psutil, reading RSS) makes it its own
                if filename.startswith(_PLUGIN_DIR + os.sep):
                    owner = "machinery"
                break
        if owner == "machinery":
            return None
        for frame in frames:
            if self.kind(frame[0]) == "project":
                return frame
        for frame in frames:
            if self.kind(frame[0]) == "other":
                return frame
        return frames[0] if frames else None

    def relpath(self, filename: str) -> str:
        if self.rootdir and filename.startswith(self.rootdir):
            return filename[len(self.rootdir):]
        return filename


@dataclass
class SiteTotals:
    """Bytes and blocks per site at one moment, plus one example stack per site."""

    sizes: dict[tuple[str, int], int] = field(default_factory=dict)
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    stacks: dict[tuple[str, int], RawFrames] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def total_blocks(self) -> int:
        return sum(self.counts.values())


def raw_traces(snapshot: tracemalloc.Snapshot) -> Iterable[tuple[int, RawFrames]]:
    """(size, frames innermost first) for each trace of a snapshot."""
    raw = getattr(snapshot.traces, "_traces", None)
    if raw is not None:
        for trace in raw:
            yield trace[1], trace[2]
        return
    for trace in snapshot.traces:  # public API: frames oldest first
        yield trace.size, tuple((f.filename, f.lineno) for f in reversed(trace.traceback))


def totals(
    snapshot: tracemalloc.Snapshot,
    classifier: Classifier,
    adjust: Callable[[RawFrames], RawFrames] | None = None,
) -> SiteTotals:
    """Bytes and blocks per site. Traces are grouped by their traceback first.

    The snapshots are taken while tracing, and under tracemalloc every int a loop creates is a
    traced allocation: charging each trace to its site one by one ran 50 to 100 times slower
    than untraced. Grouping costs a tuple hash and a list append per trace and makes no ints;
    the site is then found once per distinct traceback. ``adjust`` may rewrite a traceback
    before attribution (the fixtures charge their own buffers to the caller).
    """
    groups: dict[RawFrames, list[int]] = {}
    for size, frames in raw_traces(snapshot):
        try:
            groups[frames].append(size)
        except KeyError:
            groups[frames] = [size]
    out = SiteTotals()
    sizes, counts, stacks = out.sizes, out.counts, out.stacks
    for frames, group in groups.items():
        if adjust is not None:
            frames = adjust(frames)
        site = classifier.site_of(frames)
        if site is None:
            continue
        sizes[site] = sizes.get(site, 0) + sum(group)
        counts[site] = counts.get(site, 0) + len(group)
        if site not in stacks:
            stacks[site] = frames
    return out


def growth(
    before: SiteTotals, after: SiteTotals, runs: int, classifier: Classifier, limit: int | None = None
) -> list[SiteGrowth]:
    """Sites that grew from ``before`` to ``after``, largest growth first, as per-run figures."""
    runs = max(1, runs)
    grown: list[SiteGrowth] = []
    for site, size in after.sizes.items():
        delta = size - before.sizes.get(site, 0)
        blocks = after.counts.get(site, 0) - before.counts.get(site, 0)
        if delta <= 0 and blocks <= 0:
            continue
        stack = after.stacks.get(site, ())
        grown.append(
            SiteGrowth(
                site=f"{classifier.relpath(site[0])}:{site[1]}",
                bytes_per_run=delta / runs,
                blocks_per_run=blocks / runs,
                total_bytes=delta,
                total_blocks=blocks,
                stack=[f"{classifier.relpath(f)}:{n}" for f, n in stack if classifier.kind(f) != "machinery"][:8],
            )
        )
    grown.sort(key=lambda g: (-g.total_bytes, -g.total_blocks, g.site))
    return grown if limit is None else grown[:limit]


def ignored(
    series: Mapping[tuple[str, int], object],
    stacks: Mapping[tuple[str, int], RawFrames],
    patterns: Sequence[str],
    classifier: Classifier,
) -> set[tuple[str, int]]:
    """The sites ``memleak_ignore`` leaves out: those whose ``file:line``, or a frame of whose
    stack, matches a pattern (a file as the report names it: relative to the rootdir, else as
    :func:`short_path` shows it, else in full)."""

    def names(frame: tuple[str, int]) -> tuple[str, ...]:
        filename, line = frame
        files = {classifier.relpath(filename), short_path(filename), filename}
        return tuple(f"{name}:{line}" for name in files)

    out = set()
    for key in series:
        frames = [key, *stacks.get(key, ())]
        if any(fnmatch.fnmatchcase(name, pattern) for frame in frames for name in names(frame) for pattern in patterns):
            out.add(key)
    return out

