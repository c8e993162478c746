"""The heap by type: how many live objects the collector tracks of each class, and the name a
type is counted under (``module.Qualname``; builtins and ``__main__`` by their bare name)."""

from __future__ import annotations

import collections
import gc
import tracemalloc
from collections.abc import Iterable
from typing import Any

from pytest_memleak.probe.paths import PACKAGE

_OWN_MODULES = (PACKAGE, "tracemalloc")  # the plugin's own objects are never counted


def class_name(cls: type) -> str:
    """The name a class is counted under."""
    module = getattr(cls, "__module__", None)
    if not isinstance(module, str):  # a class whose __module__ is a descriptor
        module = "builtins"
    qualname = getattr(cls, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = str(getattr(cls, "__name__", None) or repr(cls))
    return qualname if module in ("builtins", "__main__") else f"{module}.{qualname}"


def type_name(obj: Any) -> str:
    """The name ``obj``'s type is counted under."""
    return class_name(type(obj))


def census(exclude: Iterable[object] = ()) -> dict[str, int]:
    """Live objects the collector tracks, by type name, less ``exclude`` (the caller's own).

    Counted in C (``collections.Counter``: the heap may be large), except under tracemalloc,
    where every new int is a traced allocation (16 frames each) that made an int counter 20
    times slower: tallied there in lists of None.
    """
    by_type: dict[type, int]
    if not tracemalloc.is_tracing():
        by_type = dict(collections.Counter(map(type, gc.get_objects())))
    else:
        tallies: dict[type, list[None]] = {}
        for cls in map(type, gc.get_objects()):
            try:
                tallies[cls].append(None)
            except KeyError:
                tallies[cls] = [None]
        by_type = {cls: len(tally) for cls, tally in tallies.items()}
        del tallies
    for obj in exclude:
        if obj is not None and gc.is_tracked(obj):
            cls = type(obj)
            if by_type.get(cls, 0) > 0:
                by_type[cls] -= 1
    counts: dict[str, int] = {}
    for cls, n in by_type.items():
        module = getattr(cls, "__module__", None)
        if n <= 0 or (isinstance(module, str) and module.startswith(_OWN_MODULES)):
            continue
        name = class_name(cls)
        counts[name] = counts.get(name, 0) + n
    return counts
