"""One root cause, one finding: leaks grouped by what keeps them alive, or where they are made,
outside the tests.

A library's cache that keeps something per call leaks in every test that calls it: a thousand
failing tests with one cause. Each leak's *group* is, first, the shape of its retention path
(``retention.py``) up to the container that grows, when the path starts outside the tests
(``kept by click._compat._default_text_stdout -> … -> WeakKeyDictionary.data[…]``): one cache
keeps what several functions made. Else it is the function of its innermost allocation frame
that is in neither a test file (the collected test modules and ``conftest.py`` files) nor the
standard library: a library's function that a test calls, though the site the report names is
the test's own line. A leak kept and made by the tests' own code is its own. The summary, the JSON and the HTML show a group once, with its tests
counted, and a baseline entry ``group:<site>`` covers every test of the group.
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_memleak.evidence.sites import Classifier
    from pytest_memleak.results import LeakResult

GROUP_PREFIX = "group:"  # a baseline entry or a memleak_ignore pattern for a whole group: "group:<the group>"
KEPT_BY = "kept by "  # a group named by its retention path
# roots in the test runner's own state (caplog's records, the plugin manager): what a run keeps
# there is the runner's, never a cause that tests share
RUNNER_ROOTS = ("_pytest.", "pytest.", "pluggy.", "pytest_memleak.", "xdist.", "execnet.")
# steps through the runner's own objects, from whatever root (a plugin module's ``__loader__``
# is pytest's assertion rewriter, which holds the session): pytest 8.0 keeps a fixture's finish
# per request on the session's setup state, and what a path through it reaches is the runner's
RUNNER_STEPS = ("AssertionRewritingHook.", "Session._setupstate", "SetupState.", "PytestPluginManager.")


def group_of(retention: Iterable[str], sites: Iterable[Any], test_files: Collection[str], classifier: Classifier | None = None) -> str | None:
    """A leak's group: what keeps it (:func:`retention_group`), else where it is made (:func:`leak_group`)."""
    return retention_group(retention, test_files) or leak_group(sites, test_files, classifier)


def retention_group(retention: Iterable[str], test_files: Collection[str]) -> str | None:
    """``kept by <path shape up to its last […]>`` of the first retention path whose root is
    outside the test modules, or None."""
    test_modules = set()
    for path in test_files:
        dotted = path[:-3].replace("/", ".") if path.endswith(".py") else path.replace("/", ".")
        test_modules.update({dotted, dotted.rsplit(".", 1)[-1]})
    for line in retention:
        if " × " not in line or "): " not in line:
            continue
        shape = line.split("): ", 1)[1].split("; e.g. ", 1)[0]
        steps = shape.split(" -> ")
        if len(steps) < 2 or not any(step.endswith("[…]") for step in steps):
            continue
        root = steps[0]
        if any(root == m or root.startswith(m + ".") for m in test_modules) or root.startswith(("conftest.", *RUNNER_ROOTS)):
            continue  # kept by the tests' own module state, or by the runner's
        if any(step.startswith(RUNNER_STEPS) for step in steps[1:]):
            continue
        last = max(i for i, step in enumerate(steps) if step.endswith("[…]"))
        return KEPT_BY + " -> ".join(steps[: last + 1])
    return None


def short(group: str) -> str:
    """A group for a summary line: a long retention path as its root and its growing container."""
    if not group.startswith(KEPT_BY):
        return group
    steps = group[len(KEPT_BY) :].split(" -> ")
    return group if len(steps) <= 3 else f"{KEPT_BY}{steps[0]} -> … -> {steps[-1]}"


def leak_group(sites: Iterable[Any], test_files: Collection[str], classifier: Classifier | None = None) -> str | None:
    """Where a leak's group meets: the function (``file:qualname()``, else ``file:line``) of
    the innermost frame that is neither in a test file nor in the standard library (as the
    session's ``classifier`` tells them), in the stacks of its sites (largest growth first);
    None when every frame is the tests' own. A function, not a line: one cause allocates on
    several lines (a key, then its value). Project files are named relative to its rootdir."""
    from pytest_memleak.evidence.sites import Classifier
    from pytest_memleak.probe.paths import short_path

    classifier = classifier or Classifier()
    for site in sites:
        stack = list(getattr(site, "stack", None) or []) or [str(getattr(site, "site", ""))]
        for frame in stack:
            path, _, line = frame.rpartition(":")
            if not path or path in test_files or path.endswith("conftest.py") or classifier.kind(path) == "stdlib":
                continue
            function = _function_at(os.path.join(classifier.rootdir, path), int(line)) if line.isdigit() else None
            return f"{short_path(path)}:{function}()" if function else f"{short_path(path)}:{line}"
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


def groups(results: Iterable[LeakResult], least: int = 2) -> list[dict[str, Any]]:
    """Leaks that share a group, ``least`` tests or more a group, largest first:
    ``{"site", "count", "tests", "retained_per_run"}`` (the tests' retained bytes per run, summed)."""
    found: dict[str, dict[str, Any]] = {}
    for result in results:
        site = result.group
        if result.status != "leak" or not site:
            continue
        group = found.setdefault(site, {"site": site, "count": 0, "tests": [], "retained_per_run": 0.0})
        group["count"] += 1
        group["tests"].append(result.nodeid)
        group["retained_per_run"] += result.retained_per_run
    return sorted((g for g in found.values() if g["count"] >= least), key=lambda g: (-g["count"], g["site"]))
