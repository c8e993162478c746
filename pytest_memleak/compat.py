"""Every pytest internal the plugin uses, in one place, with the pytest versions it works with.

Running an item again, as CPython's ``regrtest -R`` runs a test again, needs parts of pytest's
runner that its public API does not offer. They are reached through this module and nowhere
else: a pytest release that moves one breaks one function here, and the table says what was
checked. ``.ci/run`` runs the whole suite on pytest 8.0.0 (the declared minimum, on Python 3.10)
and on the newest pytest (9.2.0 when this was written, on Python 3.11 to 3.13).

================================  =====================================================  =========
what the plugin needs             pytest internal                                        works on
================================  =====================================================  =========
a whole protocol, unlogged        ``_pytest.runner.runtestprotocol``                     8.0-9.2
one phase, reported               ``_pytest.runner.call_and_report``                     8.0-9.2
the ``--setup-show`` line         ``_pytest.runner.show_test_item`` (``add_space``       8.0-9.2
                                  argument from 9.1 on)
setup and teardown of one item    ``Session._setupstate`` (``setup``,                    8.0-9.2
                                  ``teardown_exact``, ``stack``)
a fresh fixture request per run   ``Function._initrequest``, ``Function._request``       8.0-9.2
fixtures a run finished           ``FixtureDef._finalizers``, ``FixtureDef.cached_result``  8.0-9.2
a wider fixture's finish, again   ``FixtureRequest._schedule_finalizers`` (present in    8.0
                                  8.0 only: see :func:`drop_repeated_finishes`)
the fixtures an item uses         ``Function._fixtureinfo.name2fixturedefs``             8.0-9.2
fixtures a call requested         ``FixtureRequest._fixture_defs``                       8.0-9.2
captured output per run           ``Item._report_sections``                              8.0-9.2
a unittest case's failure         ``TestCaseFunction._excinfo``                          8.0-9.2
subtest reports dropped           ``Session.gethookproxy`` (patched on the instance)     8.0-9.2
tmp_path's view of the outcome    ``_pytest.tmpdir.tmppath_result_key``                  8.0-9.2
unraisable/thread exceptions      ``_pytest.unraisableexception.unraisable_exceptions``  8.4-9.2
                                  (absent before 8.4: nothing to drain)
the junitxml writer               ``_pytest.junitxml.xml_key``                           8.0-9.2
where an ini value came from      ``Config._inicfg`` (9.0 on: entries with ``value`` and  8.0-9.2
                                  ``origin``), ``Config._override_ini`` (before 9.0)
the failure's terminal form       ``_pytest._code.code.TerminalRepr``,                   8.0-9.2
                                  ``ReprFileLocation``, ``_pytest._io.TerminalWriter``
a test's stop and skip exceptions ``_pytest.outcomes.Exit``, ``OutcomeException``        8.0-9.2
================================  =====================================================  =========
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _pytest._code.code import ReprFileLocation, TerminalRepr
from _pytest._io import TerminalWriter
from _pytest.outcomes import Exit, OutcomeException
from _pytest.runner import call_and_report, runtestprotocol
from _pytest.runner import show_test_item as _show_test_item
from _pytest.tmpdir import tmppath_result_key as TMP_RESULT_KEY

__all__ = [
    "TMP_RESULT_KEY",
    "Exit",
    "OutcomeException",
    "ReprFileLocation",
    "TerminalRepr",
    "TerminalWriter",
    "call_and_report",
    "drop_repeated_finishes",
    "end_request",
    "has_unittest_failure",
    "exception_queues",
    "fixture_chains",
    "finished_fixture",
    "fixture_finalizers",
    "ini_entry",
    "junit_xml",
    "new_request",
    "pop_unittest_failure",
    "report_sections",
    "requested_fixtures",
    "runtestprotocol",
    "setup",
    "setup_stack",
    "show_test_item",
    "start_request",
    "teardown_exact",
    "wrapped_hook_proxy",
]

_ADD_SPACE = "add_space" in inspect.signature(_show_test_item).parameters


def show_test_item(item: pytest.Item, add_space: bool) -> None:
    """pytest's ``--setup-show`` line (pytest 9.1 added ``add_space``; older ones do not take it)."""
    if _ADD_SPACE:
        _show_test_item(item, add_space=add_space)
    else:
        _show_test_item(item)  # type: ignore[call-arg]


# -- an item's setup state and fixture request -----------------------------------------


def setup(item: pytest.Item) -> None:
    """Set up the item's fixtures and nodes, as pytest's setup phase does."""
    item.session._setupstate.setup(item)


def teardown_exact(item: pytest.Item, nextitem: pytest.Item | pytest.Collector | None) -> None:
    """Tear down what ``nextitem`` does not share (its parent: the function level alone)."""
    item.session._setupstate.teardown_exact(nextitem)  # type: ignore[arg-type]


def setup_stack(session: pytest.Session) -> dict[Any, Any]:
    """The set-up nodes and their finalizers (empty where pytest does not say)."""
    stack = getattr(session._setupstate, "stack", {})
    return stack if isinstance(stack, dict) else {}


def new_request(item: pytest.Item) -> None:
    """Give the item a fresh fixture request (pytest makes one per protocol)."""
    item._initrequest()  # type: ignore[attr-defined]


def start_request(item: pytest.Item) -> bool:
    """A fresh request unless the item has one, as pytest's protocol starts; returns whether
    the item has requests at all (a non-Python item has none), for :func:`end_request`."""
    has_request = hasattr(item, "_request")
    if has_request and not item._request:  # type: ignore[attr-defined]
        new_request(item)
    return has_request


def end_request(item: pytest.Item) -> None:
    """Drop the item's request and fixture values, as pytest's protocol ends (they would keep
    every fixture value of the run alive)."""
    item._request = False  # type: ignore[attr-defined]
    item.funcargs = None  # type: ignore[attr-defined]


def requested_fixtures(item: pytest.Item) -> dict[str, Any] | None:
    """The fixture definitions the item's current request has set up, or None where pytest
    does not say."""
    used = getattr(getattr(item, "_request", None), "_fixture_defs", None)
    return used if isinstance(used, dict) else None


def fixture_chains(item: pytest.Item) -> dict[str, Any] | None:
    """Each fixture name the item uses, with its chain of definitions (the last one wins)."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", None)
    return defs if isinstance(defs, dict) else None


def fixture_finalizers(fixturedef: Any) -> list[Any] | None:
    """The finalizers a fixture definition holds until it finishes (None if it has none)."""
    finalizers = getattr(fixturedef, "_finalizers", None)
    return finalizers if isinstance(finalizers, list) else None


# pytest 8.0 appends ``partial(FixtureDef.finish, request=...)`` to the scope node of a wider
# fixture at every request of it, cached or not; 8.1 registers the finish once, when the fixture
# runs. Each re-run of a test then left one finalizer (a request, and the test's request with it)
# on the session node until the session ended.
_FINISH_AT_EVERY_REQUEST = hasattr(pytest.FixtureRequest, "_schedule_finalizers")


def drop_repeated_finishes(session: pytest.Session) -> None:
    """Keep one finish per fixture on each set-up node (pytest 8.0; nothing to do on 8.1 on).

    At teardown the node's finalizers run last first, so the latest finish of a fixture is the
    one that finishes it and the earlier ones do nothing: keeping the latest keeps the order.
    """
    if not _FINISH_AT_EVERY_REQUEST:
        return
    for finalizers, _ in setup_stack(session).values():
        seen: set[int] = set()
        keep: list[Any] = []
        for finalizer in reversed(finalizers):
            fixturedef = finished_fixture(finalizer)
            if fixturedef is not None:
                if id(fixturedef) in seen:
                    continue
                seen.add(id(fixturedef))
            keep.append(finalizer)
        if len(keep) != len(finalizers):
            finalizers[:] = keep[::-1]


def finished_fixture(finalizer: object) -> Any:
    """The fixture definition a ``partial(FixtureDef.finish, request=...)`` finishes, or None."""
    if not isinstance(finalizer, functools.partial) or getattr(finalizer.func, "__name__", "") != "finish":
        return None
    return getattr(finalizer.func, "__self__", None)


def report_sections(item: pytest.Item) -> list[tuple[str, str, str]]:
    """Captured output and log sections the item's reports will carry."""
    return item._report_sections


def pop_unittest_failure(item: pytest.Item) -> Any:
    """The failure a unittest case recorded in its run (pytest keeps it on the item), removed."""
    return item.__dict__.pop("_excinfo", None)


def has_unittest_failure(item: pytest.Item) -> bool:
    return "_excinfo" in item.__dict__


# -- hooks and stashes -------------------------------------------------------------------


@contextlib.contextmanager
def wrapped_hook_proxy(session: pytest.Session, wrap: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, every node's hook relay (``session.gethookproxy(path)``) is ``wrap(relay)``."""
    real = type(session).gethookproxy

    def gethookproxy(fspath: Any) -> Any:
        return wrap(real(session, fspath))

    session.gethookproxy = gethookproxy  # type: ignore[method-assign]
    try:
        yield
    finally:
        del session.gethookproxy


def exception_queues(config: pytest.Config) -> list[Any]:
    """pytest's queues of unraisable and thread exceptions (pytest 8.4 on), which its per-phase
    hooks empty into warnings."""
    queues = []
    for module, name in (("_pytest.unraisableexception", "unraisable_exceptions"), ("_pytest.threadexception", "thread_exceptions")):
        key = getattr(sys.modules.get(module), name, None)
        queue = config.stash.get(key, None) if key is not None else None
        if queue is not None:
            queues.append(queue)
    return queues


def junit_xml(config: pytest.Config) -> Any:
    """pytest's junitxml writer of this session, or None."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - a pytest without it
        return None
    return config.stash.get(xml_key, None)


def ini_entry(config: pytest.Config, key: str) -> tuple[Any, bool]:
    """An ini key's value as the file wrote it (pytest 9 keeps TOML types; None before 9, or
    when unset), and whether it came from ``-o``/``--override-ini``."""
    entry = getattr(config, "_inicfg", {}).get(key)
    overrides = getattr(config, "_override_ini", ()) or ()  # pytest < 9
    overridden = getattr(entry, "origin", None) == "override" or any(o.split("=", 1)[0].strip() == key for o in overrides)
    return getattr(entry, "value", None), overridden
