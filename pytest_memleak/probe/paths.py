"""Paths: where the plugin's own code lives (its frames, files and objects are never a test's),
and a file name shortened for people."""

from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # pytest_memleak/, with its separator
PACKAGE = __name__.split(".")[0]


def own_file(*parts: str) -> str:
    """The path of a file of the plugin, e.g. ``own_file("evidence", "retention.py")``."""
    return os.path.join(PACKAGE_DIR, *parts)


_STDLIB_PREFIX = os.path.dirname(os.__file__) + os.sep
_LIB_MARKERS = ("site-packages" + os.sep, "dist-packages" + os.sep)


def short_path(filename: str) -> str:
    """A file name (or a ``file:line`` site) for people: relative to the standard library,
    site-packages or the working directory, else as it is."""
    if filename.startswith(_STDLIB_PREFIX):
        return filename[len(_STDLIB_PREFIX) :]
    for marker in _LIB_MARKERS:
        if marker in filename:
            return filename.split(marker, 1)[1]
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel
