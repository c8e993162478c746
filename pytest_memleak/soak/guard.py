"""The memory limit a process lives under, and a guard that stops a soak before the kernel kills it.

A soak that leaks keeps growing until something stops it. When that something is the kernel's
OOM killer (a container's cgroup limit), the process dies by ``SIGKILL``: no verdict, no
report, only the samples written so far. :class:`MemoryGuard` lets the soak loop stop itself
first, at a safety margin below the limit, and fail the test with the trend it measured.

Two limits are watched:

* an explicit one (``@pytest.mark.memleak_soak(memory_limit=...)``), compared with the process's RSS;
* the container's: the cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``,
  the tightest on the way up to the mount), compared with the cgroup's working set: its
  usage (``memory.current``, v1 ``memory.usage_in_bytes``) less the inactive file cache that
  the kernel reclaims before it kills anything (as ``docker stats`` and the kubelet count).

Nothing here raises for a missing or unreadable cgroup file: no limit is found, or a
reading is ``None``. Pure standard library; no pytest.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_memleak.config.units import format_size, parse_percent, parse_size

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
# cgroup v1 reports "no limit" as the page counter's maximum (0x7FFFFFFFFFFFF000 with 4 KiB
# pages); anything this large is no limit.
UNLIMITED = 1 << 60
DEFAULT_MARGIN = "10%"
MAX_MARGIN_FRACTION = 0.9


# -- cgroups -----------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_limit(path: Path) -> int | None:
    """A limit file's value in bytes; None for "max", a huge v1 value, or nothing readable."""
    text = _read_text(path)
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < UNLIMITED else None


def _read_stat(path: Path) -> dict[str, int]:
    text = _read_text(path) or ""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def _own_paths(proc_cgroup: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """This process's cgroup path on the v2 hierarchy and on the v1 memory hierarchy."""
    v2 = v1 = None
    for line in (_read_text(Path(proc_cgroup)) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _chain(mount: Path, own: str | None) -> list[Path]:
    """The process's cgroup directory under ``mount`` and its ancestors up to the mount.

    Inside a container the mount usually *is* the container's cgroup while
    ``/proc/self/cgroup`` names the path on the host; then only the mount itself is there.
    """
    directories: list[Path] = []
    if own:
        relative = Path(own.lstrip("/"))
        if relative.parts and ".." not in relative.parts:
            here = mount / relative
            if here.is_dir():
                while here != mount and mount in here.parents:
                    directories.append(here)
                    here = here.parent
    directories.append(mount)
    return directories


@dataclass(frozen=True)
class CgroupMemory:
    """The memory limit of the cgroup this process is in, and how to read the cgroup's usage."""

    version: int  # 1 or 2
    directory: Path  # where the (tightest) limit was found
    limit: int  # bytes
    usage_directory: Path  # the process's own cgroup: its usage counts against the limit

    @property
    def limit_file(self) -> Path:
        return self.directory / ("memory.max" if self.version == 2 else "memory.limit_in_bytes")

    def usage(self) -> int | None:
        """The working set in bytes: usage less the inactive file cache; None when unreadable."""
        directory = self.usage_directory
        if self.version == 2:
            current = _read_text(directory / "memory.current")
            inactive = _read_stat(directory / "memory.stat").get("inactive_file", 0)
        else:
            current = _read_text(directory / "memory.usage_in_bytes")
            inactive = _read_stat(directory / "memory.stat").get("total_inactive_file", 0)
        try:
            used = int(current) if current is not None else None
        except ValueError:
            used = None
        if used is None:
            return None
        return max(0, used - inactive)

    def describe(self) -> str:
        return f"cgroup v{self.version} memory limit {format_size(self.limit)} ({self.limit_file})"

    @property
    def source(self) -> str:
        return f"cgroup v{self.version} limit"


def read_cgroup_memory(
    root: str | os.PathLike[str] = CGROUP_ROOT,
    proc_cgroup: str | os.PathLike[str] = PROC_SELF_CGROUP,
) -> CgroupMemory | None:
    """The cgroup memory limit of this process, or None when there is none (or none can be read).

    ``root`` is where the cgroup file systems are mounted: v2 (unified) directly at ``root``,
    v1's memory controller at ``root/memory``. The tightest limit on the way from the
    process's cgroup up to the mount wins; v1's ``hierarchical_memory_limit`` (in
    ``memory.stat``) already includes the ancestors.
    """
    mount = Path(root)
    v2_path, v1_path = _own_paths(proc_cgroup)
    if (mount / "cgroup.controllers").exists():
        chain = _chain(mount, v2_path)
        found = [(limit, d) for d in chain if (limit := _read_limit(d / "memory.max")) is not None]
        if found:
            limit, directory = min(found, key=lambda pair: pair[0])
            return CgroupMemory(2, directory, limit, chain[0])
        if any((d / "memory.max").exists() for d in chain):
            return None  # v2 with the memory controller, and no limit
    v1_mount = mount / "memory"
    if (v1_mount / "memory.limit_in_bytes").exists() or v1_path is not None and v1_mount.is_dir():
        chain = _chain(v1_mount, v1_path)
        found = []
        for d in chain:
            limit = _read_limit(d / "memory.limit_in_bytes")
            hierarchical = _read_stat(d / "memory.stat").get("hierarchical_memory_limit")
            if hierarchical is not None and 0 < hierarchical < UNLIMITED:
                limit = hierarchical if limit is None else min(limit, hierarchical)
            if limit is not None:
                found.append((limit, d))
        if found:
            limit, directory = min(found, key=lambda pair: pair[0])
            return CgroupMemory(1, directory, limit, chain[0])
    return None


# -- margins -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Margin:
    """How far below a limit a guard stops: a fixed size, or a fraction of the limit."""

    size: int | None = None
    fraction: float | None = None

    def of(self, limit: float) -> int:
        if self.size is not None:
            return self.size
        return int(limit * (self.fraction or 0.0))

    def describe(self) -> str:
        if self.size is not None:
            return format_size(self.size)
        return f"{(self.fraction or 0.0) * 100:g}%"

    def spec(self) -> str:
        """Exact text that :func:`parse_margin` reads back as this margin."""
        if self.size is not None:
            return str(self.size)
        return f"{(self.fraction or 0.0) * 100!r}%"


def parse_margin(value: object) -> Margin:
    """``'10%'`` (of the limit), a size (``'64 MiB'``, bytes) or None / ``'none'`` (no margin).

    Raises ValueError for anything else or a fraction above 90%.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return Margin(size=0)
    if isinstance(value, str) and value.strip().endswith("%"):
        return Margin(fraction=parse_percent(value, MAX_MARGIN_FRACTION))
    return Margin(size=parse_size(value))


# -- the guard ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trip:
    """Why a guard stopped the soak."""

    source: str  # "memory_limit" or "cgroup v2 limit"
    metric: str  # what was compared: "RSS" or "cgroup working set"
    used: float  # bytes, the reading that tripped the guard
    limit: int
    margin: int
    stop_at: int
    predicted: bool  # stopped because the next step would cross the limit itself
    where: str = ""  # the file the limit was read from

    def message(self) -> str:
        why = (
            f"{self.metric} {format_size(self.used)} would pass the limit by the next check"
            if self.predicted and self.used < self.stop_at
            else f"{self.metric} {format_size(self.used)} reached {format_size(self.stop_at)}"
        )
        where = f" ({self.where})" if self.where else ""
        return f"{why}: {self.source} {format_size(self.limit)}{where} less a safety margin of {format_size(self.margin)}"

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "metric": self.metric,
            "used": self.used,
            "limit": self.limit,
            "margin": self.margin,
            "stop_at": self.stop_at,
            "predicted": self.predicted,
            "where": self.where,
        }


class MemoryGuard:
    """Decides, one reading at a time, when a soak must stop: at ``limit - margin``.

    ``check(used)`` is cheap (no allocation that survives) and may be called per sample and
    between samples. It also stops one step early when the growth since the previous reading,
    repeated once more, would reach the limit itself: a body that allocates in big steps must
    not jump over the margin into the OOM killer.
    """

    def __init__(
        self,
        limit: int,
        margin: int | Margin = 0,
        *,
        source: str = "memory_limit",
        metric: str = "RSS",
        read: Callable[[], float | None] | None = None,
        where: str = "",
    ) -> None:
        if not limit > 0:
            raise ValueError(f"limit {limit!r} is not a positive number of bytes")
        size = margin.of(limit) if isinstance(margin, Margin) else int(margin)
        if not 0 <= size < limit:
            raise ValueError(f"margin {size!r} is not between 0 and the limit {limit}")
        self.limit = int(limit)
        self.margin = size
        self.stop_at = self.limit - size
        self.source = source
        self.where = where
        self.metric = metric
        self.read = read
        self.previous: float | None = None
        self.last: float | None = None
        self.trip: Trip | None = None

    def check(self, used: float | None = None) -> bool:
        """True (and :attr:`trip` set) when ``used`` -- or the guard's own reading -- must stop the soak."""
        if self.trip is not None:
            return True
        if used is None and self.read is not None:
            used = self.read()
        if used is None or not math.isfinite(used) or used < 0:
            return False
        step = used - self.previous if self.previous is not None else 0.0
        self.previous, self.last = used, used
        predicted = step > 0 and used + step >= self.limit
        if used >= self.stop_at or predicted:
            self.trip = Trip(
                self.source,
                self.metric,
                used,
                self.limit,
                self.margin,
                self.stop_at,
                predicted and used < self.stop_at,
                self.where,
            )
            return True
        return False

    def describe(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return (
            f"{self.metric} against {self.source} {format_size(self.limit)}{where}, "
            f"stopping at {format_size(self.stop_at)} (margin {format_size(self.margin)})"
        )


def cgroup_guard(
    margin: Margin,
    root: str | os.PathLike[str] = CGROUP_ROOT,
    proc_cgroup: str | os.PathLike[str] = PROC_SELF_CGROUP,
) -> MemoryGuard | None:
    """A guard on the container's cgroup limit, reading the cgroup's working set; None without a limit."""
    cgroup = read_cgroup_memory(root, proc_cgroup)
    if cgroup is None:
        return None
    size = min(
        margin.of(cgroup.limit), int(cgroup.limit * MAX_MARGIN_FRACTION)
    )  # a margin never hides the limit
    return MemoryGuard(
        cgroup.limit,
        size,
        source=cgroup.source,
        metric="cgroup working set",
        read=cgroup.usage,
        where=str(cgroup.limit_file),
    )
