"""Where the plugin's own code lives: frames, files and objects of the plugin are never a test's."""

from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # pytest_memleak/, with its separator
PACKAGE = __name__.split(".")[0]


def own_file(*parts: str) -> str:
    """The path of a file of the plugin, e.g. ``own_file("evidence", "retention.py")``."""
    return os.path.join(PACKAGE_DIR, *parts)
