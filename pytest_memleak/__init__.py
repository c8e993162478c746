"""pytest-memleak: turn memory and resource leaks into failing tests."""

from __future__ import annotations

__version__ = "0.1.0"
