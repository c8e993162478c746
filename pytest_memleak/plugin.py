"""pytest-memleak entry point: options, ini keys and markers; the session object does the work.

Kept thin and cheap to import: nothing heavy (memray, objgraph, psutil, HTML) is imported
here. The session's hooks see every item, and leave a test the plugin does not check (no
``--memleak``, no marker) to pytest's own protocol; the heavy parts are imported only when
a test is measured or a report is written.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_memleak.check.session import MemleakSession


def _unmark_for_rewrite(package: str = __package__ or "pytest_memleak") -> bool:
    """Take this package out of pytest's assertion rewriting, which pytest turns on for every
    module of a plugin installed with an entry point. A rewritten module is compiled from its
    source and cached apart, and not cached at all under PYTHONDONTWRITEBYTECODE (common in
    containers): every session then compiled ours again, ~0.2 s, more than a small suite's own
    tests. The plugin's modules hold no test asserts. Private to pytest: anything unexpected
    leaves rewriting as it was. True when the package was marked."""
    for finder in sys.meta_path:
        marked, cache = getattr(finder, "_must_rewrite", None), getattr(finder, "_marked_for_rewrite_cache", None)
        if isinstance(marked, set) and package in marked and isinstance(cache, dict):
            marked.discard(package)
            cache.clear()
            return True
    return False


_unmark_for_rewrite()  # (before the imports below: they and all the rest then load from their bytecode)

from pytest_memleak.config import options  # noqa: E402

SESSION_KEY: pytest.StashKey[MemleakSession] = pytest.StashKey()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_memleak.check.counters import CounterSpecs

    pluginmanager.add_hookspecs(CounterSpecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memleak", "memory and resource leak checks (pytest-memleak)")
    for setting in options.SETTINGS:
        help_text = f"{setting.help} [{setting.form}; env {setting.env if setting.name != 'enabled' else options.ENABLE_ENV}]"
        if setting.name == "enabled":
            group.addoption(options.ENABLE_CLI, action="store_const", const="true", default=None, dest="memleak", help=help_text)
            parser.addini(options.ENABLE_INI, help=help_text, type="string", default=None)
            continue
        if setting.flag:
            group.addoption(setting.cli, action="store_const", const="true", default=None, dest=setting.dest, help=help_text)
        else:
            group.addoption(setting.cli, action="store", default=None, dest=setting.dest, metavar="VALUE", help=help_text)
        parser.addini(setting.ini, help=help_text, type="string", default=None)


def pytest_configure(config: pytest.Config) -> None:
    for marker in options.MARKERS:
        config.addinivalue_line("markers", f"{marker.signature}: {marker.help}")
    sources = options.resolve_session(config)
    from pytest_memleak.check.session import MemleakSession

    session = MemleakSession(config, sources)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "memleak-session")
    from pytest_memleak.explicit import fixtures, watch

    for module, name in ((fixtures, "memleak-fixtures"), (watch, "memleak-watch")):
        if not config.pluginmanager.is_registered(module):
            config.pluginmanager.register(module, name)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        config.pluginmanager.unregister(session)
