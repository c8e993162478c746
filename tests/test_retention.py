"""Retention paths: who holds a leaked object, from a module global, class attribute or frame."""

from __future__ import annotations

import base64
import contextvars
import gc
import json
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_memleak.evidence import diagnose, retention
from pytest_memleak.results import Finding, LeakResult

APP_SOURCE = """
class Conversation:
    def __init__(self, n):
        self.messages = [Message() for _ in range(n)]

class Message:
    pass

class Slotted:
    __slots__ = ("held",)

class Cache:
    items = []

REGISTRY = {}
"""


@pytest.fixture
def app() -> Iterator[types.ModuleType]:
    """A module ``myapp.registry`` registered in sys.modules, as an application's would be."""
    module = types.ModuleType("myapp.registry")
    sys.modules[module.__name__] = module
    exec(compile(APP_SOURCE, "myapp/registry.py", "exec"), module.__dict__)
    try:
        yield module
    finally:
        del sys.modules[module.__name__]
        module.__dict__.clear()
        gc.collect()


@pytest.fixture
def frozen() -> Iterator[None]:
    """The heap frozen, as the plugin freezes it while measuring."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_a_module_global_is_named_with_keys_and_attributes(app: types.ModuleType, frozen: None):
    for i in range(5):
        app.REGISTRY[f"3f2a{i:02d}deadbeef"] = app.Conversation(2)
    found = retention.search(["myapp.registry.Conversation", "list"])
    conv = [g for g in found.groups if g.type == "myapp.registry.Conversation"]
    assert len(conv) == 1
    assert conv[0].count == 5
    assert conv[0].shape == "myapp.registry.REGISTRY[…] -> Conversation"
    assert re.fullmatch(r"myapp\.registry\.REGISTRY\['3f2a0\d…'\] -> Conversation", conv[0].example)
    assert conv[0].size == 5 * sys.getsizeof(app.REGISTRY["3f2a00deadbeef"])
    lists = [g for g in found.groups if g.shape == "myapp.registry.REGISTRY[…] -> Conversation.messages -> list"]
    # every list in the heap is a candidate and 25 are sampled: how many of the five are depends on what else is alive
    assert lists and 1 <= lists[0].count <= 5, [g for g in found.groups if g.type == "list"]
    assert re.fullmatch(r"myapp\.registry\.REGISTRY\['3f2a0\d…'\] -> Conversation\.messages -> list", lists[0].example)


def test_search_lines_group_and_count(app: types.ModuleType):
    for i in range(3):
        app.REGISTRY[i] = app.Conversation(1)
    lines = retention.search(["myapp.registry.Message"]).lines()
    assert lines[0].startswith("myapp.registry.Message: 3 instance(s), ")
    assert re.fullmatch(
        r"  3 × myapp\.registry\.Message \(\d+ B\): myapp\.registry\.REGISTRY\[…\] -> Conversation\.messages\[…\] -> Message; "
        r"e\.g\. myapp\.registry\.REGISTRY\[0\] -> Conversation\.messages\[0\] -> Message",
        lines[1],
    ), lines


def test_paths_are_found_in_a_frozen_heap(app: types.ModuleType, frozen: None):
    for i in range(4):
        app.REGISTRY[i] = app.Conversation(1)  # REGISTRY itself is frozen: invisible to get_referrers
    count = gc.get_freeze_count()
    assert len(retention.find_instances(["myapp.registry.Conversation"])["myapp.registry.Conversation"]) == 4
    lines = retention.search(["myapp.registry.Conversation"]).lines()
    assert "myapp.registry.REGISTRY[…] -> Conversation" in "\n".join(lines), lines
    # frozen again afterwards, the new objects included: they are no longer "new"
    assert gc.get_freeze_count() > count
    assert retention.find_instances(["myapp.registry.Conversation"])["myapp.registry.Conversation"] == []


def test_a_class_attribute_and_a_slot_are_named(app: types.ModuleType):
    holder = app.Slotted()
    holder.held = app.Message()
    app.Cache.items.append(holder)
    app.Cache.items.append(app.Message())
    shapes = {g.example for g in retention.search(["myapp.registry.Message"]).groups}
    assert "myapp.registry.Cache.items[0] -> Slotted.held -> Message" in shapes
    assert "myapp.registry.Cache.items[1] -> Message" in shapes


def test_a_live_frame_local_is_a_root(app: types.ModuleType):
    local_message = app.Message()
    (path,) = retention.paths_for([local_message])
    assert path is not None
    assert re.fullmatch(
        r"\[frame test_a_live_frame_local_is_a_root at \S*test_retention\.py:\d+\] local_message -> Message", path
    ), path


def test_a_global_beats_a_frame_local(app: types.ModuleType):
    message = app.Message()
    app.REGISTRY["m"] = message
    assert retention.paths_for([message]) == ["myapp.registry.REGISTRY['m'] -> Message"]


def test_a_closure_and_a_default_argument_are_followed(app: types.ModuleType):
    def make() -> types.FunctionType:
        captured = app.Message()

        def use() -> object:
            return captured

        return use  # type: ignore[return-value]

    app.handler = make()
    exec("def f(x=[]): return x", app.__dict__)
    app.f().append(app.Message())
    paths = retention.paths_for([app.handler.__closure__[0].cell_contents, app.f()[0]])
    assert paths[0] == "myapp.registry.handler -> function.__closure__[0] -> cell.cell_contents -> Message"
    assert paths[1] == "myapp.registry.f -> function.__defaults__[0][0] -> Message"


def test_the_plugins_own_references_are_left_out(app: types.ModuleType):
    kept = [app.Message() for _ in range(3)]
    result = LeakResult("x::y", "leak", "r", details=kept)  # type: ignore[arg-type]  # only the plugin holds them
    del kept
    found = retention.search(["myapp.registry.Message"])
    assert found.groups == []
    assert found.plugin_held == {"myapp.registry.Message": 3}
    assert found.lines() == ["myapp.registry.Message: the 3 instance(s) sampled are pytest-memleak's own records"]
    assert len(result.details) == 3


def test_an_instance_held_only_by_c_code_says_so(app: types.ModuleType):
    import ctypes
    import weakref

    orphan = app.Message()
    ref = weakref.ref(orphan)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(orphan))  # a reference no Python object holds
    del orphan
    try:
        found = retention.search(["myapp.registry.Message"])
        (group,) = found.groups
        assert group.shape == "" and group.count == 1
        assert group.example.startswith("no path from a module global, class attribute, live frame or context variable within 12")
        assert group.line().startswith("1 × myapp.registry.Message (")
    finally:
        ctypes.pythonapi.Py_DecRef(ctypes.py_object(ref()))
    gc.collect()
    assert ref() is None


def test_long_keys_are_shortened_and_non_string_keys_named():
    assert retention._short_key("3f2a9b1c0d") == "'3f2a9b…'"
    assert retention._short_key("short") == "'short'"
    assert retention._short_key(12) == "12"
    assert retention._short_key((1, 2)) == "<tuple>"


def test_sampling_and_time_are_capped(app: types.ModuleType):
    ballast = [[i] for i in range(200_000)]  # a big heap: each get_referrers pass scans it
    for i in range(400):
        app.REGISTRY[i] = app.Message()
    found = retention.search(["myapp.registry.Message"], max_objects=50, budget=1.0)
    assert found.found["myapp.registry.Message"] == 400
    assert found.sampled["myapp.registry.Message"] == 50
    assert sum(g.count for g in found.groups) == 50
    assert found.groups[0].shape == "myapp.registry.REGISTRY[…] -> Message"
    spent = retention.search(["myapp.registry.Message"], max_objects=50, budget=0.0)
    assert not any(g.shape for g in spent.groups)  # no time: no path is climbed
    assert len(ballast) == 200_000


def test_unknown_types_give_nothing():
    assert retention.search(["no.such.Type"]).lines() == []


def test_explain_fills_retention_from_grown_types(app: types.ModuleType, tmp_path: Path, frozen: None):
    for i in range(6):
        app.REGISTRY[f"k{i}"] = app.Conversation(1)
    result = LeakResult(
        "t::x",
        "leak",
        "r",
        findings=[Finding("heap", 100.0, 0.0, "B", "retained")],
        grown_types={"list": 1.0, "myapp.registry.Conversation": 1.0, "cell": 3.0},
    )
    diagnose.explain(result, None, tmp_path, None, None)
    text = "\n".join(result.retention)
    assert result.retention[0].startswith("myapp.registry.Conversation: 6 instance(s)")
    assert "myapp.registry.REGISTRY[…] -> Conversation; e.g. myapp.registry.REGISTRY['k" in text
    assert "cell" not in text  # plumbing types are not searched when better ones grew
    assert result.problems == []


def test_retention_types_prefer_the_test_s_classes_and_the_resource_owner():
    result = LeakResult(
        "t::x",
        "leak",
        "r",
        findings=[Finding("threads", 1.0, 0.0, "", "threads")],
        grown_types={"cell": 5.0, "method": 3.0, "dict": 2.0, "app.Conversation": 1.0, "threading.Thread": 1.0},
    )
    names = diagnose.retention_types(result)
    assert names[0] == "threading.Thread"
    assert names.index("app.Conversation") < names.index("dict")
    assert "cell" not in names and "method" not in names


# -- end to end with --memleak -----------------------------------------------------------

E2E_SOURCE = '''
import os

class Conversation:
    def __init__(self):
        self.messages = [object()]

REGISTRY = {}

def test_registry_leak():
    REGISTRY[os.urandom(8).hex()] = Conversation()
'''


def test_a_retention_path_names_the_global(tmp_path: Path):
    (tmp_path / "test_e2e.py").write_text(E2E_SOURCE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none",
         "--memleak-confirm-runs=12", "--memleak-confirm-seconds=0.01", "test_e2e.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    out = done.stdout
    assert "LEAK test_e2e.py::test_registry_leak" in out, out
    assert "kept alive by:" in out
    assert re.search(r"\d+ × test_e2e\.Conversation \([^)]*\): test_e2e\.REGISTRY\[…\] -> Conversation; "
                     r"e\.g\. test_e2e\.REGISTRY\['[0-9a-f]{6}…'\] -> Conversation", out), out


def test_a_context_variable_of_this_thread_is_a_root(app: types.ModuleType):
    """A value set in a context variable is held by the thread's context, in C: no referrer leads
    past it, and the path starts there (asgiref's ``Local`` kept a ``_Storage`` per instance so)."""
    request = contextvars.ContextVar("myapp.request")
    token = request.set(app.Conversation(1))
    try:
        found = retention.search(["myapp.registry.Conversation"])
    finally:
        request.reset(token)
    (group,) = [g for g in found.groups if g.type == "myapp.registry.Conversation"]
    assert group.count == 1
    assert group.example == "[context variable 'myapp.request' of this thread] -> Conversation"


# -- the first rooted path, drawn by objgraph and graphviz --------------------------------

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")


@needs_dot
def test_explain_draws_the_first_rooted_path_through_every_reference(app: types.ModuleType, tmp_path: Path, frozen: None):
    holder = app.Cache()
    holder.__dict__["entries"] = {"user-1": app.Conversation(1)}  # an instance attribute: a reference of its __dict__
    app.REGISTRY["holder"] = holder
    result = LeakResult("t::drawn", "leak", "r", findings=[Finding("heap", 100.0, 0.0, "B", "retained")],
                        grown_types={"myapp.registry.Conversation": 1.0})
    diagnose.explain(result, None, tmp_path, None, None)
    assert result.retention_graph is not None, result.details
    svg = Path(result.retention_graph).read_text(encoding="utf-8")
    dot = Path(result.retention_graph).with_suffix(".dot").read_text(encoding="utf-8")
    # from the module down to the instance, each reference labelled as objgraph names it
    for label in ("myapp.registry", "REGISTRY", "holder", "__dict__", "entries", "user-1", "Conversation"):
        assert label in dot, (label, dot)
    assert "<svg" in svg and "Conversation" in svg


def test_without_graphviz_the_path_stays_text_and_the_dot_file_is_named(
    app: types.ModuleType, tmp_path: Path, frozen: None, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))  # graphviz is not on PATH, as on a bare image
    app.REGISTRY["k"] = app.Conversation(1)
    result = LeakResult("t::bare", "leak", "r", findings=[Finding("heap", 100.0, 0.0, "B", "retained")],
                        grown_types={"myapp.registry.Conversation": 1.0})
    diagnose.explain(result, None, tmp_path, None, None)
    assert result.retention_graph is None and result.problems == []
    assert any("graphviz's dot is not installed: the reference graph is" in d for d in result.details), result.details
    assert "myapp.registry.REGISTRY['k'] -> Conversation" in "\n".join(result.retention)
    assert list((tmp_path / "retention").glob("*.dot"))


@needs_dot
def test_a_leaking_test_s_report_shows_its_reference_graph(tmp_path: Path):
    (tmp_path / "test_e2e.py").write_text(E2E_SOURCE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none",
         "--memleak-report-dir=reports", "test_e2e.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert "LEAK test_e2e.py::test_registry_leak" in done.stdout, done.stdout + done.stderr
    data = json.loads((tmp_path / "reports" / "memleak.json").read_text(encoding="utf-8"))
    (test,) = data["tests"]
    assert test["retention_graph"] and Path(test["retention_graph"]).is_file()
    page = (tmp_path / "reports" / "memleak.html").read_text(encoding="utf-8")
    assert page.count('<img src="data:image/svg+xml;base64,') == 1  # in the page: it stays one file
    image = base64.b64decode(page.split('<img src="data:image/svg+xml;base64,', 1)[1].split('"', 1)[0])
    assert b"REGISTRY" in image and b"Conversation" in image
