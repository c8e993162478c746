"""Resources a test leaves behind: threads, file descriptors, child processes, asyncio tasks.

:meth:`ResourceSnapshot.take` records what is alive (cheaply, and without keeping anything
alive: threads and tasks are held by weak reference); :func:`diff` waits a short grace period
for threads and processes that are finishing, then describes what is new and still there:

* threads with their name, target and current stack (``sys._current_frames()``),
* descriptors with what they point to (path and mode, socket addresses, pipe, epoll) and the
  Python object that owns them when one does,
* child processes with their command line and state,
* pending asyncio tasks with their coroutine, where each is suspended and where it was
  created (``sys.set_coroutine_origin_tracking_depth``, see :func:`track_task_origins`, or
  asyncio debug mode's ``_source_traceback``).

No pytest here; psutil is imported on first use.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pytest_memleak.probe.paths import PACKAGE_DIR, short_path

KINDS = ("fds", "threads", "processes", "tasks")
GRACE = 0.5  # seconds to wait for threads and processes that are finishing
SHOWN = 5  # groups described per kind; the rest is counted
STACK_FRAMES = 4  # frames of a thread's stack shown, innermost first

_HAVE_PROC = os.path.isdir("/proc/self/fd")
_INODE = re.compile(r"\[\d+\]")
_ASYNCIO_DIR = os.sep + "asyncio" + os.sep
_STDLIB = os.path.dirname(os.__file__) + os.sep


# -- what is alive ------------------------------------------------------------------------


def _fd_targets() -> dict[int, str]:
    """Open descriptors and what each points to (on Linux; psutil's view elsewhere)."""
    if _HAVE_PROC:
        out: dict[int, str] = {}
        dirfd = os.open("/proc/self/fd", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            names = os.listdir(dirfd)
        finally:
            os.close(dirfd)
        for name in names:
            fd = int(name)
            if fd == dirfd:
                continue
            try:
                out[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # closed meanwhile
                continue
        return out
    try:
        import psutil

        proc = psutil.Process()
        found = {f.fd: f.path for f in proc.open_files()}
        with contextlib.suppress(Exception):
            for c in proc.net_connections(kind="all"):
                found.setdefault(c.fd, "socket")
        return found
    except Exception:
        return {}


def _children() -> dict[tuple[int, float], tuple[str, str]]:
    """Child processes (recursive): (pid, create time) -> (command line, status)."""
    try:
        import psutil

        kids = psutil.Process().children(recursive=True)
    except Exception:
        return {}
    out: dict[tuple[int, float], tuple[str, str]] = {}
    for p in kids:
        try:
            with p.oneshot():
                key = (p.pid, p.create_time())
                status = p.status()
                try:
                    cmd = " ".join(p.cmdline()) or p.name()
                except Exception:  # zombies have no command line left
                    cmd = p.name()
        except Exception:  # gone meanwhile
            continue
        out[key] = (cmd, status)
    return out


def count_children() -> int:
    """Direct child processes, cheaply (``/proc/self/task/*/children`` on Linux), or -1."""
    if os.path.exists("/proc/self/task"):
        try:
            total = 0
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/children", "rb") as f:
                    total += len(f.read().split())
            return total
        except OSError:
            pass
    try:
        import psutil

        return len(psutil.Process().children())
    except Exception:
        return -1


def _all_tasks() -> list[Any]:
    """Every asyncio task that is not done, on any event loop, open or closed, running or not."""
    if "asyncio" not in sys.modules:
        return []  # no test has used asyncio: no task can exist
    import asyncio

    found: dict[int, Any] = {}
    registries = [getattr(asyncio.tasks, n, None) for n in ("_all_tasks", "_scheduled_tasks", "_eager_tasks")]
    for registry in registries:
        if registry:
            for task in list(registry):
                with contextlib.suppress(Exception):
                    if not task.done():
                        found[id(task)] = task
    if getattr(asyncio.tasks, "_all_tasks", None) is None:
        # Python 3.14+ keeps native tasks out of any Python registry: scan the heap (only
        # objects made since a gc.freeze(), which is what a leak check compares anyway).
        task_type = asyncio.Task
        for obj in gc.get_objects():
            if isinstance(obj, task_type) and id(obj) not in found:
                with contextlib.suppress(Exception):
                    if not obj.done():
                        found[id(obj)] = obj
    return list(found.values())


def count_pending_tasks() -> int:
    """asyncio tasks not done, on any loop (cheap on Python < 3.14: a registry, no heap scan)."""
    return len(_all_tasks())


def prepare() -> None:
    """Import and first-call what a snapshot needs (psutil), outside any traced window."""
    with contextlib.suppress(Exception):
        _children()
        count_children()


@contextlib.contextmanager
def track_task_origins(depth: int = 8) -> Iterator[None]:
    """Record where coroutines are created (``sys.set_coroutine_origin_tracking_depth``).

    With it on, a pending task's description says where its coroutine was made (the line that
    called ``create_task(worker())``); without it only asyncio debug mode tells. The cost is a
    few frames recorded per coroutine created while it is on.
    """
    previous = sys.get_coroutine_origin_tracking_depth()
    sys.set_coroutine_origin_tracking_depth(max(previous, depth))
    try:
        yield
    finally:
        sys.set_coroutine_origin_tracking_depth(previous)


@dataclass
class ResourceSnapshot:
    """What was alive at one moment. Holds threads and tasks weakly: it keeps nothing alive."""

    threads: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    thread_idents: frozenset[int] = frozenset()  # every thread with a Python frame, _thread ones too
    fds: dict[int, str] = field(default_factory=dict)
    processes: dict[tuple[int, float], tuple[str, str]] = field(default_factory=dict)
    tasks: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    taken: float = 0.0  # time.monotonic()

    @classmethod
    def take(cls) -> ResourceSnapshot:
        snap = cls()
        for t in threading.enumerate():
            snap.threads.add(t)
        snap.thread_idents = frozenset(sys._current_frames())
        snap.fds = _fd_targets()
        snap.processes = _children()
        for task in _all_tasks():
            with contextlib.suppress(TypeError):
                snap.tasks.add(task)
        snap.taken = time.monotonic()
        return snap

    def counts(self) -> dict[str, int]:
        return {
            "fds": len(self.fds),
            "threads": len(self.thread_idents),
            "processes": len(self.processes),
            "tasks": len(self.tasks),
        }


# -- what is new --------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadInfo:
    ident: int
    name: str
    daemon: bool
    target: str  # the callable the thread runs, or its class
    stack: tuple[str, ...]  # innermost first, "file:line in function"


@dataclass(frozen=True)
class FdInfo:
    fd: int
    target: str  # what /proc/self/fd/N points to, made readable
    owner: str = ""  # the Python object that owns the descriptor, when one was found


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    cmdline: str
    status: str


@dataclass(frozen=True)
class TaskInfo:
    name: str
    coro: str  # the coroutine's qualified name
    suspended: str  # "file:line" where the task's own coroutine waits, and what it awaits
    created: str  # where the coroutine was created, or why that is unknown
    loop: str  # the state of the task's loop (a task on a loop that no longer runs stays pending)


@dataclass
class ResourceDiff:
    """What is new since ``before`` and still alive after the grace period."""

    threads: list[ThreadInfo] = field(default_factory=list)
    fds: list[FdInfo] = field(default_factory=list)
    processes: list[ProcessInfo] = field(default_factory=list)
    tasks: list[TaskInfo] = field(default_factory=list)
    waited: float = 0.0  # seconds spent waiting for threads and processes to finish

    def counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in KINDS}

    def __bool__(self) -> bool:
        return any(self.counts().values())

    def describe(self, kind: str, limit: int = SHOWN) -> list[str]:
        """Readable lines for one kind; alike items are grouped (``24 × ...``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown resource kind {kind!r}; expected one of {', '.join(KINDS)}")
        items = getattr(self, kind)
        if not items:
            return []
        groups: dict[str, list[Any]] = {}
        for item in items:
            groups.setdefault(_group_key(kind, item), []).append(item)
        ordered = sorted(groups.values(), key=len, reverse=True)
        lines = [_describe_group(kind, g) for g in ordered[:limit]]
        rest = ordered[limit:]
        if rest:
            lines.append(f"... and {sum(len(g) for g in rest)} more in {len(rest)} other group(s)")
        return lines

    def lines(self) -> list[str]:
        return [line for kind in KINDS for line in self.describe(kind)]


def _group_key(kind: str, item: Any) -> str:
    if kind == "threads":
        return f"{item.target}|{item.daemon}|{'|'.join(item.stack)}"
    if kind == "fds":
        return _INODE.sub("[]", item.target) + "|" + _owner_type(item.owner)
    if kind == "processes":
        return f"{item.cmdline}|{item.status}"
    return f"{item.coro}|{item.suspended}|{item.created}|{item.loop}"


def _owner_type(owner: str) -> str:
    m = re.match(r"<([\w.]+)", owner)
    return m.group(1) if m else owner


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _natural(item: Any) -> tuple[Any, ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", item.name))


def _listed(values: list[str], limit: int = 4) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _describe_group(kind: str, group: list[Any]) -> str:
    first = group[0]
    n = len(group)
    many = f"{n} × " if n > 1 else ""
    if kind == "threads":
        names = _listed(_unique([repr(t.name) for t in group]))
        daemon = "daemon" if first.daemon else "non-daemon"
        stack = " <- ".join(first.stack) if first.stack else "no Python frame"
        return f"{many}thread {names} ({daemon}) running {first.target}, now at {stack}"
    if kind == "fds":
        fds = _listed([str(f.fd) for f in group])
        owner = f", held by {first.owner}" if first.owner else ", no Python object owns it (os.open, or a C library)"
        return f"{many}fd {fds} -> {first.target}{owner}"
    if kind == "processes":
        pids = _listed([str(p.pid) for p in group])
        state = "zombie: exited but never waited for" if first.status == "zombie" else first.status
        return f"{many}child process pid {pids}: {first.cmdline!r} ({state})"
    names = _listed(_unique([repr(t.name) for t in sorted(group, key=_natural)]))
    return (
        f"{many}pending task {names}: coroutine {first.coro}, suspended at {first.suspended}; "
        f"created at {first.created}; {first.loop}"
    )


def _frame_line(filename: str, lineno: int, func: str) -> str:
    return f"{short_path(filename)}:{lineno} in {func}"


def _stack_of(frame: Any, limit: int = STACK_FRAMES) -> tuple[str, ...]:
    """Where a thread is: its innermost frame, then the callers outside the standard library."""
    out: list[str] = []
    first = True
    while frame is not None and len(out) < limit:
        code = frame.f_code
        if first or not code.co_filename.startswith(_STDLIB):
            out.append(_frame_line(code.co_filename, frame.f_lineno, code.co_name))
        first = False
        frame = frame.f_back
    return tuple(out)


def _callable_name(fn: Any) -> str:
    if fn is None:
        return ""
    name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", repr(fn))
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module not in ("builtins", "__main__") else str(name)


def _thread_infos(before: ResourceSnapshot, frames: dict[int, Any]) -> list[ThreadInfo]:
    out = []
    known = set()
    for t in threading.enumerate():
        ident = t.ident
        known.add(ident)
        if t in before.threads or ident is None or not t.is_alive():
            continue
        target = _callable_name(getattr(t, "_target", None)) or f"{_callable_name(type(t))}.run"
        out.append(ThreadInfo(ident, t.name, t.daemon, target, _stack_of(frames.get(ident))))
    for ident, frame in frames.items():  # threads started with _thread, unknown to threading
        if ident in known or ident in before.thread_idents:
            continue
        out.append(ThreadInfo(ident, f"<_thread {ident}>", True, "a _thread.start_new_thread function", _stack_of(frame)))
    return out


def _fd_owners(fds: set[int]) -> dict[int, str]:
    """The Python objects (files, sockets, selectors) that own descriptors, outermost wrapper first."""
    if not fds:
        return {}
    import socket

    rank = {io.TextIOWrapper: 3, io.BufferedReader: 2, io.BufferedWriter: 2, io.BufferedRandom: 2, io.FileIO: 1}
    found: dict[int, tuple[int, str]] = {}
    from pytest_memleak.check import measuring

    with measuring.thawed():
        everything = gc.get_objects()
    for obj in everything:
        cls = type(obj)
        level = rank.get(cls)  # type: ignore[call-overload]
        if level is None and isinstance(obj, socket.socket):
            level = 2
        if level is None:
            continue
        try:
            fd = obj.fileno()
            if fd not in fds or (fd in found and found[fd][0] >= level):
                continue
            text = repr(obj)
        except Exception:  # closed, detached
            continue
        found[fd] = (level, text if len(text) <= 160 else text[:157] + "...")
    return {fd: text for fd, (_, text) in found.items()}


def _fd_mode(fd: int) -> str:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("flags:"):
                    flags = int(line.split()[1], 8)
                    return {os.O_RDONLY: "read", os.O_WRONLY: "write", os.O_RDWR: "read/write"}.get(flags & 3, "")
    except (OSError, ValueError):
        pass
    return ""


def _sockets() -> dict[int, str]:
    try:
        import psutil

        conns = psutil.Process().net_connections(kind="all")
    except Exception:
        return {}
    out = {}
    for c in conns:
        family = getattr(c.family, "name", str(c.family)).replace("AF_", "")
        kind = getattr(c.type, "name", str(c.type)).replace("SOCK_", "")
        laddr = _addr(c.laddr)
        raddr = _addr(c.raddr)
        text = f"{family}/{kind} socket"
        if laddr:
            text += f" {laddr}"
        if raddr:
            text += f" -> {raddr}"
        if c.status and c.status != "NONE":
            text += f" ({c.status})"
        out[c.fd] = text
    return out


def _addr(addr: Any) -> str:
    if not addr:
        return ""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def _fd_infos(before: ResourceSnapshot, after: ResourceSnapshot) -> list[FdInfo]:
    new = {fd: t for fd, t in after.fds.items() if before.fds.get(fd) != t}
    if not new:
        return []
    owners = _fd_owners(set(new))
    sockets = _sockets() if any(t.startswith("socket:") for t in new.values()) else {}
    out = []
    for fd, target in sorted(new.items()):
        if target.startswith("socket:"):
            text = sockets.get(fd, f"socket {target[7:]}")
        elif target.startswith("pipe:"):
            text = f"pipe {target[5:]}"
        elif target.startswith("anon_inode:"):
            what = target[len("anon_inode:") :]
            text = f"{what} (anonymous inode{', an event loop or selector not closed' if 'eventpoll' in what else ''})"
        else:
            mode = _fd_mode(fd)
            text = f"{target} ({mode})" if mode else target
        out.append(FdInfo(fd, text, owners.get(fd, "")))
    return out


def _process_infos(before: ResourceSnapshot, after: ResourceSnapshot) -> list[ProcessInfo]:
    out = []
    for (pid, created), (cmd, status) in sorted(after.processes.items()):
        if (pid, created) in before.processes:
            continue
        out.append(ProcessInfo(pid, cmd if len(cmd) <= 200 else cmd[:197] + "...", status))
    return out


def _coro_name(coro: Any) -> str:
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    name = getattr(coro, "__qualname__", None) or (code.co_qualname if code is not None else type(coro).__qualname__)
    module = getattr(getattr(coro, "cr_frame", None), "f_globals", {}).get("__name__") if hasattr(coro, "cr_frame") else None
    return f"{module}.{name}()" if module and module != "__main__" else f"{name}()"


def _outside_asyncio(entries: Any) -> tuple[str, int, str] | None:
    """The innermost (filename, line, function) outside asyncio's own modules."""
    for filename, lineno, func in entries:
        if _ASYNCIO_DIR not in filename and not filename.startswith(PACKAGE_DIR):
            return filename, lineno, func
    return None


def _task_info(task: Any) -> TaskInfo:
    coro = task.get_coro()
    name = task.get_name() if hasattr(task, "get_name") else repr(task)
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is not None:
        suspended = f"{short_path(frame.f_code.co_filename)}:{frame.f_lineno}"
    else:
        suspended = "not started yet" if coro is not None else "unknown"
    inner = coro
    for _ in range(20):  # the innermost coroutine awaited
        nxt = getattr(inner, "cr_await", None) or getattr(inner, "gi_yieldfrom", None)
        if nxt is None or not (hasattr(nxt, "cr_code") or hasattr(nxt, "gi_code")):
            break
        inner = nxt
    if inner is not coro and inner is not None:
        suspended += f" awaiting {_coro_name(inner)}"
    created = "unknown (turn on asyncio debug mode, or pytest-memleak's task origin tracking, to record it)"
    origin = getattr(coro, "cr_origin", None)
    site = _outside_asyncio(origin) if origin else None  # innermost first
    if site is None:
        tb = getattr(task, "_source_traceback", None)  # asyncio debug mode: outermost first
        if tb:
            site = _outside_asyncio((fs.filename, fs.lineno, fs.name) for fs in reversed(tb))
    if site is not None:
        created = _frame_line(*site)
    try:
        loop = task.get_loop()
        if loop.is_closed():
            state = "its event loop is closed: it will never finish"
        elif loop.is_running():
            state = "its event loop is running"
        else:
            state = "its event loop is not running"
    except Exception:
        state = "its event loop is unknown"
    return TaskInfo(name, _coro_name(coro) if coro is not None else "?", suspended, created, state)


def _task_infos(before: ResourceSnapshot, after: ResourceSnapshot) -> list[TaskInfo]:
    out = []
    for task in list(after.tasks):
        if task in before.tasks:
            continue
        with contextlib.suppress(Exception):
            if task.done():
                continue
            out.append(_task_info(task))
    return out


def _new_live_threads(before: ResourceSnapshot) -> int:
    """Threads alive now that were not alive at ``before`` (``_thread`` ones included)."""
    count = 0
    known = set()
    for t in threading.enumerate():
        known.add(t.ident)
        if t not in before.threads and t.is_alive():
            count += 1
    for ident in sys._current_frames():
        if ident not in known and ident not in before.thread_idents:
            count += 1
    return count


def _new_live_processes(before: ResourceSnapshot) -> int:
    if not before.processes and count_children() == 0:
        return 0
    return sum(1 for k, v in _children().items() if k not in before.processes and v[1] != "zombie")


def settle(before: ResourceSnapshot, grace: float = GRACE) -> float:
    """Wait up to ``grace`` seconds for threads and processes started since ``before`` to end.

    Returns the seconds waited. Call it before the checkpoint whose counts are judged, so that
    a thread that is finishing as the test returns is not counted as leaked. Zombie processes
    (exited, never waited for) are not waited for: they stay until their parent reaps them.
    """
    started = time.monotonic()
    deadline = started + max(0.0, grace)
    while _new_live_threads(before) or _new_live_processes(before):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(0.02, remaining))
    return time.monotonic() - started


def diff(before: ResourceSnapshot, after: ResourceSnapshot | None = None, grace: float = GRACE) -> ResourceDiff:
    """What is new since ``before`` and still alive, after waiting up to ``grace`` seconds for
    new threads and processes to finish (descriptors and tasks are not waited for)."""
    waited = settle(before, grace) if grace > 0 else 0.0
    if after is None or waited > 0 or after.taken < before.taken:
        after = ResourceSnapshot.take()
    frames = sys._current_frames()
    try:
        result = ResourceDiff(
            threads=_thread_infos(before, frames),
            fds=_fd_infos(before, after),
            processes=_process_infos(before, after),
            tasks=_task_infos(before, after),
            waited=waited,
        )
    finally:
        del frames
    return result
