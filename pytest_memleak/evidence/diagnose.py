"""Evidence for a leak that has been found: what leaked, natively and as resources, and who holds it.

:func:`explain` is called once per leaking test, after the verdict: it never changes the
verdict, only adds evidence lines to the findings and retention paths to the result. Each
part is guarded: a problem becomes a line in ``result.problems``, never an exception.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_memleak.evidence import native, resources, retention
from pytest_memleak.results import LeakResult

RESOURCE_KINDS = resources.KINDS
RETENTION_TYPES = 3  # grown types whose retention paths are searched
RETENTION_RUNS = 2  # runs made to tell new instances from old ones when the heap is not frozen

# Types that say little on their own: the machinery inside the objects that leaked.
PLUMBING = frozenset(
    {
        "cell", "method", "function", "builtin_function_or_method", "method-wrapper", "frame",
        "coroutine", "generator", "weakref.ReferenceType", "weakref", "weakref.ProxyType",
        "_thread.lock", "_thread.RLock", "_contextvars.Context", "_asyncio.FutureIter",
        "getset_descriptor", "member_descriptor", "wrapper_descriptor", "tuple",
        "encodings.utf_8.IncrementalDecoder", "codecs.IncrementalDecoder",
    }
)
CONTAINERS = frozenset({"dict", "list", "set", "frozenset", "collections.deque", "collections.OrderedDict"})
# What a resource finding is about, as the objects a test usually keeps.
KIND_TYPES = {
    "threads": ("threading.Thread",),
    "fds": ("_io.TextIOWrapper", "_io.BufferedReader", "_io.BufferedWriter", "_io.FileIO", "socket.socket"),
    "processes": ("subprocess.Popen", "multiprocessing.context.Process", "multiprocessing.process.BaseProcess"),
    "tasks": ("_asyncio.Task", "asyncio.tasks.Task"),
}


def retention_types(result: LeakResult, limit: int = RETENTION_TYPES) -> list[str]:
    """The grown types worth a retention path, most telling first.

    The test's own classes (and library classes such as ``threading.Thread``) say more than
    the containers they hold, and containers more than plumbing (cells, bound methods, locks).
    A resource finding adds the type that usually owns the resource (a file object, a Thread).
    """
    grown = list(result.grown_types)

    def rank(name: str) -> tuple[int, int]:
        tier = 2 if name in PLUMBING else 1 if name in CONTAINERS else 0
        return tier, grown.index(name)

    names = sorted(grown, key=rank)
    kinds = {f.kind for f in result.findings}
    first = [t for kind, ts in KIND_TYPES.items() if kind in kinds for t in ts]
    chosen = [n for n in names if rank(n)[0] < 2 and n not in first][: max(1, limit - len(first))]
    return first + (chosen or [n for n in names[:1] if n not in first])


def _new_instances(names: list[str], run: Callable[[], object] | None) -> dict[str, list[Any]] | None:
    """Instances of ``names`` that the test's runs leave behind.

    The test runs a few more times, and the instances those runs left are kept (None, with no
    runner: fall back to every instance). The heap is unfrozen for it, so that every instance
    is visible to the collector, and frozen again afterwards.
    """
    if run is None:
        return None
    from pytest_memleak.check import measuring

    with measuring.thawed():
        measuring.collect()
        before = {id(o) for o in gc.get_objects() if retention.type_name(o) in names}
        for _ in range(RETENTION_RUNS):
            run()
        measuring.collect()
        found = retention.find_instances(names)
        return {n: [o for o in found[n] if id(o) not in before] for n in names if found.get(n)}


def explain(
    result: LeakResult,
    item_run: Callable[[], object] | None,
    report_dir: Path,
    before: resources.ResourceSnapshot | None,
    after: resources.ResourceSnapshot | None,
    grace: float = 0.0,
    draw: bool = True,
) -> None:
    """Add evidence to a leaking result, in place.

    * ``fds``/``threads``/``processes``/``tasks`` findings get one line per group of what is
      new since ``before`` and still alive (needs ``before``; ``after`` is re-taken when None);
    * ``result.retention`` gets reference paths for the top grown types, and ``retention_graph``
      a picture of the first (in ``report_dir/retention/``, unless not ``draw``);
    * a ``native`` finding gets memray's native stacks from one more run of ``item_run``, or a
      note saying what memray could not see.
    """
    findings = {f.kind: f for f in result.findings}
    wanted = [k for k in RESOURCE_KINDS if k in findings]
    if wanted and before is not None:
        try:
            found = resources.diff(before, after, grace=grace)
            for kind in wanted:
                lines = found.describe(kind)
                findings[kind].evidence.extend(
                    lines or [f"no {kind} new since the first checkpoint are still open now"]
                )
        except Exception as exc:
            result.problems.append(f"resource description failed: {type(exc).__name__}: {exc}")
    names = retention_types(result)
    if names:
        try:
            instances = _new_instances(names, item_run)
            from pytest_memleak.evidence.flamegraph import safe_name

            drawing = Path(report_dir) / "retention" / safe_name(result.nodeid) if draw else None
            found_paths = retention.search(instances if instances is not None else names, draw_to=drawing)
            result.retention = found_paths.lines()
            result.retention_graph = found_paths.graph
            if found_paths.graph_note:
                result.details.append(found_paths.graph_note)
        except Exception as exc:
            result.problems.append(f"retention paths failed: {type(exc).__name__}: {exc}")
    native_finding = findings.get("native")
    if native_finding is not None and item_run is not None:
        from pytest_memleak.evidence.flamegraph import safe_name

        base = Path(report_dir) / "native" / safe_name(result.nodeid)
        try:
            lines, note = native.attribute_native(item_run, base, expected=native_finding.per_run)
        except Exception as exc:
            lines, note = [], f"no native attribution: {type(exc).__name__}: {exc}"
        native_finding.evidence.extend(lines)
        if note:
            native_finding.evidence.append(note)
