"""memray leak flamegraphs for one test, and safe file names for any test id.

The plugin imports this module only when it writes a flamegraph or names a file for a test,
and it stays cheap even then: memray is imported only inside :func:`capture_run`, and
:func:`safe_name` is pure.

Nothing here raises for a capture that cannot be made: memray missing, another tracker
already active, an unwritable directory, a render that fails. The problem is returned as
text in :class:`FlamegraphOutcome` so that a test suite never breaks because of a report.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CAPTURE_SUFFIX = ".bin"
HTML_SUFFIX = ".html"
RENDER_TIMEOUT = 600.0  # seconds for `memray flamegraph` on one capture

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_HASH_LEN = 12  # hex digits of sha256: 48 bits, collisions are not a practical concern
_MIN_LEN = 32  # max_len below this is raised to it: room for a hash and a suffix


def safe_name(nodeid: str, suffix: str = "", max_len: int = 120) -> str:
    """A file name for a test id: ``[A-Za-z0-9._-]`` only, at most ``max_len`` characters.

    The name is a readable slug of the id followed by ``-`` and a hash of the *full* id, so
    distinct ids get distinct names even when their slugs are equal or truncated. The name
    never starts with a dot or a dash, never contains ``..`` and has no separator, so
    ``directory / safe_name(anything)`` stays inside ``directory``. ``suffix`` (such as
    ``".html"``) is sanitised the same way and kept at the end.
    """
    max_len = max(int(max_len), _MIN_LEN)
    digest = hashlib.sha256(str(nodeid).encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    suffix = _DOTS.sub(".", _UNSAFE.sub("_", str(suffix)))[: max_len // 4].rstrip(".")
    if suffix and not suffix.startswith((".", "-", "_")):
        suffix = "." + suffix
    slug = _DOTS.sub(".", _UNSAFE.sub("_", str(nodeid)[: 4 * max_len])).strip("._-")
    room = max_len - len(digest) - len(suffix) - 1  # the dash between slug and hash
    slug = slug[: max(0, room)].rstrip("._-")
    return f"{slug}-{digest}{suffix}" if slug else f"{digest}{suffix}"


@dataclass
class FlamegraphOutcome:
    """What :func:`capture_run` produced: paths that exist, and a problem when something failed."""

    html: pathlib.Path | None = None  # memray's leaks flamegraph, a standalone HTML file
    capture: pathlib.Path | None = None  # the memray capture (.bin): `memray stats/tree/...` work on it
    problem: str | None = None  # one line saying what went wrong; None when all went well
    capture_seconds: float = 0.0  # time spent running under the tracker
    render_seconds: float = 0.0  # time spent rendering the flamegraph
    pending: Render | None = None  # a render still under way (``background``): html is where it will be

    @property
    def ok(self) -> bool:
        return self.problem is None and self.html is not None


def _with_suffix(base: pathlib.Path, suffix: str) -> pathlib.Path:
    # base names made by safe_name contain dots: never use Path.with_suffix here.
    return base.parent / (base.name + suffix)


def _tail(text: str | None, limit: int = 400) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else "..." + text[-limit:]


def _memray_command() -> list[str] | None:
    if sys.executable:
        return [sys.executable, "-m", "memray"]
    found = shutil.which("memray")
    return [found] if found else None


# Renders the leaks flamegraph through memray's reporter directly, as `memray flamegraph --leaks`
# does: about half the time of the CLI, whose start-up imports memray's TUI. memray's reporter
# is not a stable API, so keyword arguments it does not take are dropped and any failure falls
# back to the CLI.
#
# The picture starts at the test's own call path: the frames outside it (pytest, pluggy, this
# plugin, the runner plugins and the standard library that call the test) are cut from every
# stack and stand as one frame, HIDDEN; a stack with no frame of its own (pytest's own
# objects still alive when the capture ended) is that frame alone. The capture keeps every frame.
_RENDER_SCRIPT = """
import inspect, sys, sysconfig
from memray import FileReader
from memray.reporters.flamegraph import FlameGraphReporter
capture, html, no_web = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
HIDDEN = ("pytest and its plugins (their frames hidden)", "pytest", 0)
OUTSIDE = ("/_pytest/", "/pluggy/", "/pytest/", "/pytest_memleak/", "/xdist/", "/execnet/", "/pytest_asyncio/",
           "/pytest_timeout", "/pytest_rerunfailures", "<frozen ", "/bin/pytest", "/bin/py.test")
STDLIB = tuple(sysconfig.get_paths()[k] + "/" for k in ("stdlib", "platstdlib"))
def outside(frame):
    name = frame[1]
    return any(part in name for part in OUTSIDE) or name.startswith(STDLIB)
def own(stack):
    stack = list(stack)  # innermost first
    keep = len(stack)
    while keep and outside(stack[keep - 1]):
        keep -= 1
    return [*stack[:keep], HIDDEN] if keep < len(stack) else stack
class Trimmed:
    def __init__(self, record):
        self._record = record
    def __getattr__(self, name):
        return getattr(self._record, name)
    def stack_trace(self, *args, **kwargs):
        return own(self._record.stack_trace(*args, **kwargs))
    def hybrid_stack_trace(self, *args, **kwargs):
        return own(self._record.hybrid_stack_trace(*args, **kwargs))
def call(function, *args, **kwargs):
    taken = inspect.signature(function).parameters
    return function(*args, **{k: v for k, v in kwargs.items() if k in taken})
reader = FileReader(capture)
reporter = call(
    FlameGraphReporter.from_snapshot,
    map(Trimmed, reader.get_leaked_allocation_records(merge_threads=True)),
    memory_records=tuple(reader.get_memory_snapshots()),
    native_traces=reader.metadata.has_native_traces,
    merge_threads=True,
    inverted=False,
)
with open(html, "w") as out:
    call(reporter.render, outfile=out, metadata=reader.metadata, show_memory_leaks=True,
         merge_threads=True, inverted=False, no_web=no_web)
"""


class Render:
    """memray's leaks flamegraph of one capture, rendered in a process of its own: started,
    then finished (waited for) when its result is needed, so a session can go on meanwhile."""

    def __init__(self, capture: pathlib.Path, html: pathlib.Path, offline: bool = True) -> None:
        self.capture, self.html = capture, html
        # no_web / --no-web embeds memray's JS/CSS (about 4.5 MB a file) so the flamegraph opens
        # offline; without it the file is about 120 KB and loads its assets from a CDN. Each
        # attempt is tried when the one before it fails: the reporter directly, then the CLI,
        # then (an older memray without --no-web) the CLI with CDN assets.
        cli = _memray_command()
        attempts: list[list[str] | None] = [
            [sys.executable, "-c", _RENDER_SCRIPT, str(capture), str(html), "1" if offline else "0"]
            if sys.executable
            else None
        ]
        for extra in (["--no-web"], []) if offline else ([],):
            attempts.append(
                None if cli is None else [*cli, "flamegraph", "--leaks", "-f", *extra, "-o", str(html), str(capture)]
            )
        self._attempts = [args for args in attempts if args is not None]
        self._process: subprocess.Popen[str] | None = None
        self.problem: str | None = None
        if not self._attempts:
            self.problem = "memray flamegraph could not be rendered: no Python executable or memray command found"
        else:
            self._start()

    def _start(self) -> None:
        args = self._attempts.pop(0)
        try:
            self._process = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            self.problem = f"memray flamegraph could not be started: {exc}"

    def finish(self, timeout: float = RENDER_TIMEOUT) -> str | None:
        """Wait for the render (``timeout`` seconds at most); return a problem or None."""
        while self._process is not None:
            process, self._process = self._process, None
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop(process)
                self.problem = f"memray flamegraph timed out after {timeout:.0f} s"
                break
            if process.returncode == 0 and self.html.is_file():
                # (a page that cannot share its assets is left whole: it works, at its full size;
                # the render did not fail, so it is not reported as failed)
                with contextlib.suppress(Exception):
                    share_assets(self.html)
                break
            if self._attempts:
                self._start()
                continue
            self.problem = f"memray flamegraph failed (exit {process.returncode}): {_tail(output) or 'no output'}"
        return self.problem

    def stop(self, process: subprocess.Popen[str] | None = None) -> None:
        """End the render now (the session is ending without waiting for it)."""
        process = process or self._process
        if process is not None and process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=5)


ASSETS = "assets"  # beside the flamegraphs: memray's scripts and styles, one file each, shared by every page
ASSET_MIN = 4096  # characters: smaller inline blocks stay in the page
_INLINE = re.compile(r"<(script|style)(\s[^>]*)?>", re.IGNORECASE)


def share_assets(html: pathlib.Path) -> None:
    """Move the big inline scripts and styles of a memray page (about 4.4 MB of JavaScript
    and CSS libraries, the same in every page) into ``assets/`` beside it, named by their
    content, and link them from the page; the page's own data stays inline. A flamegraph
    then takes tens of KiB and still opens offline."""
    from .report.files import atomic_write_text

    text = html.read_text(encoding="utf-8")
    parts, pos = [], 0
    while (tag := _INLINE.search(text, pos)) is not None:
        name, attrs = tag.group(1).lower(), tag.group(2) or ""
        close = text.find(f"</{name}>", tag.end())
        if close < 0:
            break
        end = close + len(name) + 3
        body = text[tag.end() : close]
        if len(body) < ASSET_MIN or "src=" in attrs.lower() or "packed_data" in body:
            parts.append(text[pos:end])  # (a page's own data, or a small block, stays)
        else:
            digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
            asset = f"memray-{digest}.{'js' if name == 'script' else 'css'}"
            shared = html.parent / ASSETS / asset
            if not shared.exists():  # (named by its content: an asset written once is the same for every page)
                shared.parent.mkdir(exist_ok=True)
                atomic_write_text(shared, body)
            link = f'<script{attrs} src="{ASSETS}/{asset}"></script>' if name == "script" else f'<link rel="stylesheet" href="{ASSETS}/{asset}">'
            parts.append(text[pos : tag.start()] + link)
        pos = end
    parts.append(text[pos:])
    atomic_write_text(html, "".join(parts))


def capture_run(
    run: Callable[[], object],
    base: pathlib.Path,
    *,
    native: bool = False,
    aggregated: bool = False,
    render: bool = True,
    offline: bool = True,
    timeout: float = RENDER_TIMEOUT,
    background: bool = False,
) -> FlamegraphOutcome:
    """Call ``run()`` under memray and render its leaks flamegraph beside the capture.

    Writes ``<base>.bin`` (the capture, kept so that ``memray stats``, ``memray tree`` and
    friends work on it) and ``<base>.html`` (``memray flamegraph --leaks``). Never raises for
    a capture problem: the outcome's ``problem`` says what went wrong. An exception raised by
    ``run()`` itself is swallowed and reported as a problem too (the capture is still
    rendered); KeyboardInterrupt and SystemExit propagate.

    ``native`` records native (C) stacks too. ``aggregated`` keeps a capture of tens of KiB
    (memray's aggregated format: ``summary``, ``tree``, ``table`` and ``flamegraph`` read it)
    instead of every allocation (megabytes for a few hundred runs; ``stats`` and
    ``flamegraph --temporal`` need it). ``offline`` embeds memray's assets in the HTML
    (about 4.5 MB a file, opens without network) instead of loading them from a CDN (about
    120 KB). ``render=False`` keeps only the capture. ``timeout`` bounds the render, seconds.
    ``background``: the render is started and left running (``pending``; finish it with
    :meth:`Render.finish`), its problems are known then, and ``html`` is where it will be.
    """
    base = pathlib.Path(base)
    capture = _with_suffix(base, CAPTURE_SUFFIX)
    html = _with_suffix(base, HTML_SUFFIX)
    outcome = FlamegraphOutcome()
    try:
        capture.parent.mkdir(parents=True, exist_ok=True)
        capture.unlink(missing_ok=True)  # memray refuses to overwrite a capture
        html.unlink(missing_ok=True)  # never leave last session's flamegraph looking current
    except OSError as exc:
        outcome.problem = f"no flamegraph: cannot write to {capture.parent}: {exc}"
        return outcome
    try:
        import memray  # lazily: the plugin must stay cheap to import
    except Exception as exc:  # ImportError, or a broken native extension
        outcome.problem = f"no flamegraph: memray is not available ({type(exc).__name__}: {exc})"
        return outcome

    try:
        form = memray.FileFormat.AGGREGATED_ALLOCATIONS if aggregated else memray.FileFormat.ALL_ALLOCATIONS
        tracker = memray.Tracker(
            str(capture),
            native_traces=native,
            follow_fork=False,
            trace_python_allocators=True,
            file_format=form,
        )
    except Exception as exc:
        outcome.problem = f"no flamegraph: memray could not set up a tracker: {type(exc).__name__}: {exc}"
        return outcome

    raised: str | None = None
    started = time.perf_counter()
    try:
        tracker.__enter__()
    except Exception as exc:  # another tracker active, unwritable file, unsupported platform
        outcome.problem = f"no flamegraph: memray could not attach: {type(exc).__name__}: {exc}"
        _unlink_quietly(capture)
        return outcome
    try:
        run()
        gc.collect()  # the runs' cyclic garbage is not what they leaked
    except (KeyboardInterrupt, SystemExit):
        raise  # the finally clause below still stops the tracker
    except BaseException as exc:  # pytest's outcomes (skip, fail) are BaseExceptions
        raised = f"the run under memray raised {type(exc).__name__}: {_tail(str(exc), 200)}"
    finally:
        exit_problem = _exit_tracker(tracker)
        outcome.capture_seconds = time.perf_counter() - started
    if exit_problem:
        outcome.problem = f"no flamegraph: memray failed to finish the capture: {exit_problem}"
        _unlink_quietly(capture)
        return outcome
    if not capture.is_file():
        outcome.problem = f"no flamegraph: memray wrote no capture at {capture}"
        return outcome
    outcome.capture = capture

    problems = [raised] if raised else []
    if render:
        started = time.perf_counter()
        rendering = Render(capture, html, offline)
        if background and rendering.problem is None:
            outcome.pending, outcome.html = rendering, html
            outcome.problem = "; ".join(problems) or None
            return outcome
        render_problem = rendering.finish(timeout)
        outcome.render_seconds = time.perf_counter() - started
        if render_problem:
            problems.append(render_problem)
            _unlink_quietly(html)
        else:
            outcome.html = html
    outcome.problem = "; ".join(problems) or None
    return outcome


def _exit_tracker(tracker: object) -> str | None:
    try:
        tracker.__exit__(None, None, None)  # type: ignore[attr-defined]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _unlink_quietly(path: pathlib.Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# How many warmed-up runs a capture covers (capture_runs): what pytest and the plugins still hold
# when a capture ends is tens of KiB whatever the runs (measured here: 4-51 KiB for one run),
# what the test retains grows with the runs; a capture of one run showed the leaking line at 3-14%
# of the leaked bytes.
NOISE_BYTES = 64 * 1024
LEAK_SHARE = 4  # runs until the leak is this many times the noise: four fifths of the leaked bytes
CAPTURE_SECONDS = 0.5  # at most, for the runs under the tracker
TRACKED_SLOWDOWN = 3.0  # a run under memray's tracker (Python allocators traced) takes about this much longer
MAX_CAPTURE_RUNS = 2000
PACE_RUNS = 9  # the latest runs whose median time (run_time) plans a capture


def run_time(durations: Sequence[float]) -> float:
    """What a run takes, to plan a capture by: the median of the latest runs (0.0 for none). One
    preempted run is not the pace: beside two busy loops, the latest run's 5 ms (its work, 0.2 ms)
    planned 33 runs of a 450 B leak, which then held 49% of what the capture leaked."""
    return statistics.median(durations) if durations else 0.0


def capture_runs(per_run: float, run_seconds: float, seconds: float = CAPTURE_SECONDS) -> int:
    """Runs for a capture in which a leak of ``per_run`` bytes a run outweighs pytest's own noise
    (:data:`LEAK_SHARE` times :data:`NOISE_BYTES`), as many as fit in ``seconds`` at the
    tracker's pace; one at the least."""
    wanted = math.ceil(min(float(MAX_CAPTURE_RUNS), LEAK_SHARE * NOISE_BYTES / per_run)) if per_run > 0 else 1
    affordable = int(seconds / max(run_seconds * TRACKED_SLOWDOWN, 1e-6))
    return max(1, min(wanted, affordable, MAX_CAPTURE_RUNS))


ATTACH_TIMEOUT = 60.0  # seconds for `memray attach` to inject its tracker
SETTLED = 0.5  # seconds a live capture's size must stay the same to count as written


def attach_run(
    pid: int,
    python: str | None,
    run: Callable[[], object],
    base: pathlib.Path,
    *,
    seconds: float,
    offline: bool = True,
    timeout: float = RENDER_TIMEOUT,
) -> FlamegraphOutcome:
    """Capture another, running process's allocations for ``seconds`` with ``memray attach``
    (gdb injects the tracker) while ``run()`` is called over and over (the traffic that makes
    it allocate), then render the leaks flamegraph of the capture: what was allocated in
    those seconds and is still alive at their end.

    ``python`` is the interpreter the process runs: it must be able to import memray, which
    is checked first (an injection into an interpreter without memray can kill it). Writes
    ``<base>.bin`` (aggregated, small) and ``<base>.html``. Never raises: ``problem`` says, in
    one line, why there is no flamegraph.
    """
    base = pathlib.Path(base)
    capture, html = _with_suffix(base, CAPTURE_SUFFIX), _with_suffix(base, HTML_SUFFIX)
    outcome = FlamegraphOutcome()
    cli = _memray_command()
    why = None
    if cli is None:
        why = "memray is not installed"
    elif shutil.which("gdb") is None and shutil.which("lldb") is None:
        why = "memray attach needs gdb or lldb, and neither is installed"
    elif python and _run([python, "-c", "import memray"]).returncode != 0:
        why = f"the service's Python ({python}) cannot import memray; install memray where the service runs"
    if why is None:
        try:
            capture.parent.mkdir(parents=True, exist_ok=True)
            capture.unlink(missing_ok=True)
            html.unlink(missing_ok=True)
        except OSError as exc:
            why = f"cannot write to {capture.parent}: {exc}"
    if why is None:
        assert cli is not None
        args = [*cli, "attach", "--aggregate", "--trace-python-allocators", "-f", "-o", str(capture)]
        attached = _run([*args, "--duration", str(max(1, math.ceil(seconds))), str(pid)])
        if attached.returncode != 0:
            why = f"memray attach to pid {pid} failed (exit {attached.returncode}): {_tail(attached.stdout) or 'no output'}"
    if why is not None:
        outcome.problem = f"no live flamegraph: {why}"
        return outcome
    started = time.perf_counter()
    problems = []
    try:
        while time.perf_counter() - started < seconds:
            run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the traffic failed: the capture is still what it is
        problems.append(f"the traffic during the capture raised {type(exc).__name__}: {_tail(str(exc), 200)}")
    if not _settled(capture, started + seconds + ATTACH_TIMEOUT):
        outcome.problem = f"no live flamegraph: memray wrote no capture at {capture} (pid {pid})"
        return outcome
    outcome.capture = capture
    outcome.capture_seconds = time.perf_counter() - started
    started = time.perf_counter()
    render_problem = Render(capture, html, offline).finish(timeout)
    outcome.render_seconds = time.perf_counter() - started
    if render_problem:
        problems.append(render_problem)
    else:
        outcome.html = html
    outcome.problem = "; ".join(problems) or None
    return outcome


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, timeout=ATTACH_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(args, -1, f"{type(exc).__name__}: {exc}")


def _settled(path: pathlib.Path, deadline: float) -> bool:
    """Wait until ``path`` exists and its size has not changed for :data:`SETTLED` seconds."""
    last, since = -1, time.perf_counter()
    while time.perf_counter() < deadline:
        size = path.stat().st_size if path.is_file() else -1
        now = time.perf_counter()
        if size != last:
            last, since = size, now
        elif size > 0 and now - since >= SETTLED:
            return True
        time.sleep(0.05)
    return False
