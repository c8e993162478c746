"""One root cause, one finding: leaks grouped by the allocation site they share outside the tests.

A library's cache that keeps something per call leaks in every test that calls it: a thousand
failing tests with one cause. Each leak's *group* is its top allocation site that is not in a
test file (the collected test modules and ``conftest.py`` files), looked for in each site's
stack, innermost frame first: a library's line that a test calls, though the site the report
names is the test's own line; a leak whose frames are all in test files is its own. The summary, the JSON and the HTML show a group once, with its tests
counted, and a baseline entry ``group:<site>`` covers every test of the group.
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any

BASELINE_PREFIX = "group:"  # a baseline entry for a whole group: "group:<file>:<function>()"


def leak_group(sites: Iterable[Any], test_files: Collection[str], root: str = "") -> str | None:
    """Where a leak's group meets: the function (``file:qualname()``, else ``file:line``) of
    the innermost frame that is neither in a test file nor in the standard library, in the
    stacks of its sites (largest growth first); None when every frame is the tests' own.
    A function, not a line: one cause allocates on several lines (a key, then its value)."""
    from .sites import _stdlib_dirs, short_path

    stdlib = _stdlib_dirs()
    for site in sites:
        stack = list(getattr(site, "stack", None) or []) or [str(getattr(site, "site", ""))]
        for frame in stack:
            path, _, line = frame.rpartition(":")
            if not path or path in test_files or path.endswith("conftest.py") or path.startswith(stdlib):
                continue
            function = _function_at(os.path.join(root, path), int(line)) if line.isdigit() else None
            return f"{short_path(path)}:{function}()" if function else frame
    return None


@functools.lru_cache(maxsize=256)
def _functions(path: str) -> tuple[tuple[int, int, str], ...]:
    """(first line, last line, qualified name) of every function in a source file; () when unreadable."""
    try:
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return ()
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return tuple(found)


def _function_at(path: str, line: int) -> str | None:
    """The innermost function of ``path`` whose lines hold ``line``."""
    inside = [(last - first, name) for first, last, name in _functions(path) if first <= line <= last]
    return min(inside)[1] if inside else None


def groups(results: Iterable[Mapping[str, Any]], least: int = 2) -> list[dict[str, Any]]:
    """Leaks that share a group, ``least`` tests or more a group, largest first:
    ``{"site", "count", "tests", "retained_per_run"}`` (the tests' retained bytes per run, summed)."""
    found: dict[str, dict[str, Any]] = {}
    for result in results:
        site = result.get("group")
        if result.get("status") != "leak" or not site:
            continue
        group = found.setdefault(site, {"site": site, "count": 0, "tests": [], "retained_per_run": 0.0})
        group["count"] += 1
        group["tests"].append(str(result.get("nodeid")))
        group["retained_per_run"] += float(result.get("retained_per_run") or 0.0)
    return sorted((g for g in found.values() if g["count"] >= least), key=lambda g: (-g["count"], g["site"]))
