"""Objects a test says must be gone by its end: ``mem_watch(obj, "why")``.

A :class:`Watcher` holds weak references only, so watching changes nothing. At the end
(:meth:`Watcher.survivors`, after a full collection) every watched object still alive is
reported with its reason and the reference path that keeps it alive. The ``mem_watch``
fixture (this module is a pytest plugin) fails the test at teardown when one survives::

    def test_close_releases_session(mem_watch):
        session = open_session()
        mem_watch(session, "closed sessions must be released")
        session.close()
        del session

The fixture checks at its own teardown: objects held by fixtures set up *before* it (that
is, requested earlier or with a wider scope) are still alive then. When the test itself
failed, the check is skipped (the traceback keeps the test's locals alive).
"""

from __future__ import annotations

import weakref
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from pytest_memleak.check import measuring
from pytest_memleak.evidence import retention

T = TypeVar("T")


@dataclass(frozen=True)
class Survivor:
    why: str
    type: str
    path: str  # the reference path that keeps it alive, or a note when none was found
    description: str  # a short repr of the object

    def line(self) -> str:
        return f"{self.type} {self.description} ({self.why}) is still alive, kept by: {self.path}"


class Watcher:
    """Weak watch list: ``watch(obj, why)`` now, ``survivors()`` at the end."""

    def __init__(self) -> None:
        self._watched: list[tuple[weakref.ref[Any], str, str, str]] = []

    def watch(self, obj: T, why: str = "") -> T:
        """Watch ``obj``: it must be collected by the end. Returns ``obj`` for chaining."""
        try:
            ref = weakref.ref(obj)
        except TypeError:
            raise TypeError(
                f"mem_watch cannot watch a {type(obj).__qualname__}: it does not support weak references "
                f"(built-in values such as list, dict, tuple, int and str, and classes with __slots__ "
                f"without '__weakref__'); watch the object that owns it, or a subclass instance"
            ) from None
        self._watched.append((ref, why or "watched", retention.type_name(obj), _describe(obj)))
        return obj

    __call__ = watch

    def __len__(self) -> int:
        return len(self._watched)

    def alive(self) -> int:
        """Watched objects alive now (no collection first)."""
        return sum(1 for ref, *_ in self._watched if ref() is not None)

    def survivors(self) -> list[Survivor]:
        """Watched objects still alive after a full collection, each with its retention path."""
        measuring.collect()
        alive: list[Any] = []
        meta: list[tuple[str, str, str]] = []
        for ref, why, name, text in self._watched:
            obj = ref()
            if obj is not None:
                alive.append(obj)
                meta.append((why, name, text))
        obj = None
        if not alive:
            return []
        try:
            paths = retention.paths_for(alive)
        except Exception as exc:  # a path is a help, never a reason to lose the verdict
            paths = [f"(no path: {type(exc).__name__}: {exc})"] * len(alive)
        alive.clear()
        return [
            Survivor(why, name, path or "no path from a module global, class attribute, live frame or context variable found", text)
            for (why, name, text), path in zip(meta, paths, strict=True)
        ]

    def message(self, survivors: list[Survivor]) -> str:
        lines = [f"mem_watch: {len(survivors)} of {len(self._watched)} watched object(s) survived the test:"]
        lines += [f"  {s.line()}" for s in survivors]
        return "\n".join(lines)

    def assert_collected(self) -> None:
        """Raise AssertionError listing every survivor (for use outside the fixture)."""
        survivors = self.survivors()
        if survivors:
            raise AssertionError(self.message(survivors))

    def clear(self) -> None:
        self._watched.clear()


def _describe(obj: Any) -> str:
    try:
        text = object.__repr__(obj)  # never the object's own __repr__: it could be anything
    except Exception:
        text = f"<{type(obj).__qualname__}>"
    return text


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report: Any = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def mem_watch(request: pytest.FixtureRequest) -> Iterator[Watcher]:
    """Watch objects that must be collected by the end of the test: ``mem_watch(obj, "why")``.

    At teardown, a watched object still alive after a full garbage collection fails the test
    with its reason and the reference path that keeps it alive.
    """
    watcher = Watcher()
    request.node.stash[_FAILED] = False
    yield watcher
    if request.node.stash.get(_FAILED, False):
        return  # the test failed: its traceback holds its locals, and its own failure stands
    survivors = watcher.survivors()
    message = watcher.message(survivors) if survivors else ""
    watcher.clear()
    if survivors:
        pytest.fail(message, pytrace=False)
