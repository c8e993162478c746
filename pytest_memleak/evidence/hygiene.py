"""Growth that re-running a test makes by itself: a fresh temporary path kept on every run.

pytest gives a test a new ``tmp_path`` on every run. A test that registers it somewhere global
(``sys.path_importer_cache`` keyed by a new zip path, a cache keyed on the directory) grows by
one entry per run, which a single run of the suite never does: a hygiene problem of the
re-run, which the report names so that it is not taken for a leak of the code under test.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from pytest_memleak.check import measuring

SCANNED = (dict, list, set)
MIN_PATHS = 3  # distinct temporary paths in one container before it is called per-run state


def _owner(container: Any) -> str:
    """A module global that is this container, or a short description of it."""
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is container:
                return f"{name}.{attr}"
    return f"a {type(container).__name__} of {len(container)} entries"


def _paths_in(container: Any, prefix: str) -> int:
    items = container.keys() if isinstance(container, dict) else container
    try:
        return sum(1 for x in items if isinstance(x, str) and x.startswith(prefix))
    except RuntimeError:  # changed size while read
        return 0


def per_run_paths(basetemp: str) -> list[str]:
    """Containers that hold several paths under pytest's temporary directory, described."""
    prefix = basetemp.rstrip("/") + "/"
    with measuring.thawed():
        everything = gc.get_objects()
    found = []
    for obj in everything:
        if type(obj) in SCANNED and len(obj) >= MIN_PATHS:
            n = _paths_in(obj, prefix)
            if n >= MIN_PATHS:
                found.append((n, obj))
    del everything
    found.sort(key=lambda pair: -pair[0])
    return [
        f"{_owner(obj)} holds {n} paths under pytest's temporary directory: the test keeps a fresh tmp_path on "
        "every run, so this growth comes from re-running the test (test hygiene), not necessarily from the code under test"
        for n, obj in found[:3]
    ]


def basetemp(config: Any) -> str | None:
    """pytest's temporary directory for this session, if the session made one."""
    factory = getattr(config, "_tmp_path_factory", None)
    base = getattr(factory, "_basetemp", None)
    return str(base) if base is not None else None


def _bindings() -> dict[tuple[str, str], Any]:
    """Every module global and every attribute of a module-level class, by (owner, name)."""
    out: dict[tuple[str, str], Any] = {}
    for modname, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            out[(modname, attr)] = value
            if isinstance(value, type) and getattr(value, "__module__", None) == modname:
                for cattr, cvalue in list(vars(value).items()):
                    out[(f"{modname}.{attr}", cattr)] = cvalue
    return out


def _holds(new: Any, old: Any) -> bool:
    """Whether ``new`` refers to ``old`` directly or through a wrapper's cell or ``__wrapped__``."""
    if new is old:
        return False
    seen = 0
    frontier = [new]
    for _ in range(3):
        nxt = []
        for obj in frontier:
            for ref in gc.get_referents(obj):
                if ref is old:
                    return True
                seen += 1
                if seen < 2000 and not isinstance(ref, (str, bytes, int, float, type)):
                    nxt.append(ref)
        frontier = nxt
    return False


def rebound_globals(run: Any) -> list[str]:
    """Globals and class attributes that one more run rebinds to a wrapper of their previous
    value: the test patches module state again on every run, and repeated runs stack it."""
    before = _bindings()
    run()
    found = []
    for (owner, name), old in before.items():
        module = sys.modules.get(owner)
        if module is not None:
            new = getattr(module, "__dict__", {}).get(name, old)
        else:
            modname, _, clsname = owner.rpartition(".")
            cls = getattr(sys.modules.get(modname), clsname, None)
            new = vars(cls).get(name, old) if isinstance(cls, type) else old
        if new is not old and _holds(new, old):
            found.append(f"{owner}.{name}")
    return found
