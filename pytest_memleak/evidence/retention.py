"""Who still holds a leaked object: reference paths from a root to the instances of a type.

tracemalloc says where an object was allocated; this module says what keeps it alive, as
LeakCanary and memlab do: a chain of references from a *root* (a module global, a class
attribute, a local of a live frame, a context variable of the thread's ``contextvars`` context)
down to the instance, with readable edge labels::

    myapp.registry.REGISTRY['3f2a…'] -> Conversation.messages -> list

Instances whose paths have the same shape (keys and indices replaced by ``[…]``) are grouped,
with their count and shallow size. The search climbs referrers level by level with
``gc.get_referrers`` (one heap pass per level), ignores the plugin's own frames and containers
and its own bookkeeping, and is capped: at most ``max_objects`` instances sampled, ``max_depth``
references, and a time budget.

A heap frozen with ``gc.freeze()`` (as the plugin freezes it while measuring) hides frozen
objects from ``gc.get_referrers``: the search unfreezes for its duration and freezes again
afterwards, so everything alive then (the test's objects included) ends up frozen.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import json
import os
import sys
import time
import types
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_memleak.check import measuring
from pytest_memleak.config.units import format_size
from pytest_memleak.probe.census import type_name as type_name
from pytest_memleak.probe.paths import PACKAGE_DIR, own_file, short_path

MAX_OBJECTS = 50  # instances sampled
MAX_DEPTH = 12  # references climbed from an instance
BUDGET = 1.0  # seconds for the whole search
MAX_FRONTIER = 96  # objects whose referrers are searched in one heap pass
MAX_NODES = 20_000  # objects recorded in the reference graph
KEY_CHARS = 6  # characters of a dict key kept in a label

_OWN_DIR = PACKAGE_DIR
# The search's own machinery: its frames and locals are neither roots nor "held by the plugin".
_SEARCH_FILES = frozenset(own_file(*path) for path in (("evidence", "retention.py"), ("explicit", "watch.py"), ("evidence", "diagnose.py")))
_OWN_MODULE = __name__.split(".")[0]
_FRAME_OR_GEN = (types.FrameType, types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)


def _short_key(key: Any) -> str:
    if isinstance(key, str):
        return repr(key) if len(key) <= KEY_CHARS + 2 else repr(key[:KEY_CHARS])[:-1] + "…'"
    if isinstance(key, (int, float, bool)) or key is None:
        text = repr(key)
        return text if len(text) <= 12 else text[:10] + "…"
    return f"<{type(key).__qualname__}>"


@dataclass
class Group:
    """Instances of one type held through paths of one shape."""

    type: str
    shape: str  # the path with keys and indices replaced by […]; "" when no root was found
    count: int = 0
    size: int = 0  # shallow bytes (sys.getsizeof) of the instances in the group
    example: str = ""  # one concrete path

    def line(self) -> str:
        head = f"{self.count} × {self.type} ({format_size(self.size)})"
        if not self.shape:
            return f"{head}: {self.example}"
        if self.example and self.example != self.shape:
            return f"{head}: {self.shape}; e.g. {self.example}"
        return f"{head}: {self.shape}"


@dataclass
class Retention:
    """The result of a search: groups per type, and what was sampled."""

    groups: list[Group] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)  # type -> instances found
    sampled: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # type -> shallow bytes of all found
    plugin_held: dict[str, int] = field(default_factory=dict)  # sampled, held only by the plugin: left out
    seconds: float = 0.0
    truncated: bool = False  # the budget or a cap stopped the climb early
    graph: str | None = None  # an SVG of the first rooted path (search's draw_to)
    graph_note: str | None = None  # why there is none, when it was asked for and could not be drawn

    def first_rooted(self) -> Group | None:
        """The first group with a root, in the order :meth:`lines` shows them."""
        for name in self.found:
            rooted = [g for g in self.groups if g.type == name and g.shape]
            if rooted:
                return rooted[0]
        return None

    def lines(self, per_type: int = 5) -> list[str]:
        out: list[str] = []
        for name in self.found:
            groups = [g for g in self.groups if g.type == name]
            mine = self.plugin_held.get(name, 0)
            if not groups:
                if mine:
                    out.append(f"{name}: the {mine} instance(s) sampled are pytest-memleak's own records")
                continue
            rooted = [g for g in groups if g.shape]
            unrooted = [g for g in groups if not g.shape]
            found, sampled = self.found[name], self.sampled.get(name, 0)
            of = f"{sampled} sampled of {found}" if sampled < found else f"{found}"
            left_out = f"; {mine} held only by pytest-memleak itself, left out" if mine else ""
            out.append(f"{name}: {of} instance(s), {format_size(self.sizes.get(name, 0))} shallow{left_out}")
            for g in (rooted + unrooted)[:per_type]:
                out.append("  " + g.line())
        if self.truncated:
            out.append(f"(search capped after {self.seconds:.2f} s: some paths may be missing or longer)")
        return out


class _Graph:
    """Referrers of the targets, climbed level by level, recorded by id."""

    def __init__(self, targets: Sequence[Any], exclude: Iterable[int], max_depth: int, deadline: float) -> None:
        self.max_depth = max_depth
        self.deadline = deadline
        self.truncated = False
        self.last_plugin_held = False
        self.nodes: dict[int, Any] = {}  # id -> object, strong: ids stay valid while we work
        # child id -> [(parent id, kind, subscript, attribute)]
        self.parents: dict[int, list[tuple[int, str, str, str]]] = {}
        self.keep: list[Any] = []  # our own containers, kept alive so their ids stay ours
        self.own: set[int] = set(exclude)
        self.own.update((id(self.nodes), id(self.parents), id(self.keep), id(self.own), id(targets)))
        self.modules: dict[int, str] = {}  # id(module.__dict__) -> module name
        for name, module in list(sys.modules.items()):
            d = getattr(module, "__dict__", None)
            if isinstance(d, dict):
                self.modules.setdefault(id(d), name)
        self.frame_locals: dict[int, tuple[str, str]] = {}  # id(value) -> (frame text, local name)
        self.plugin_held: set[int] = set()  # ids referred to by the plugin's own objects or frames
        self.context_roots: dict[int, str] = {}  # id -> label: this thread's context variables' values, and its map
        self._scan_frames()
        self._scan_context()
        self.nodes.update((id(t), t) for t in targets)

    def _scan_frames(self) -> None:
        frames = sys._current_frames()
        for top in frames.values():
            frame: types.FrameType | None = top
            while frame is not None:
                code = frame.f_code
                # (the search's own frames are not read: reading this frame's f_locals stores in it a
                # dict that refers to it, a cycle Python 3.12.1's gc did not free, holding the callers)
                if code.co_filename not in _SEARCH_FILES and frame.f_globals is not frame.f_locals:  # not a module's top level
                    try:
                        local_vars = frame.f_locals
                    except Exception:
                        local_vars = {}
                    self.keep.append(local_vars)
                    self.own.add(id(local_vars))  # a snapshot dict: never a path of its own
                    if code.co_filename.startswith(_OWN_DIR):
                        self.plugin_held.update(id(v) for v in local_vars.values())
                    else:
                        where = f"{code.co_name} at {short_path(code.co_filename)}:{frame.f_lineno}"
                        for name, value in local_vars.items():
                            self.frame_locals.setdefault(id(value), (where, name))
                frame = frame.f_back
        frames.clear()  # frame objects of this very search: let them go
        # ... and this frame's own references to frames: on Python 3.12.1 a frame object that
        # outlives its call is not always seen by gc, so a cycle through it (this frame's
        # ``top`` is this frame) kept the caller's frame, and what its locals held, alive
        del top, frame

    def _scan_context(self) -> None:
        """The values of this thread's context variables, and the context's own map (which holds its
        nodes): the thread's state holds them in C, so no referrer leads past them."""
        context = contextvars.copy_context()  # a new Context over the same map: ours, never a path
        self.keep.append(context)
        self.own.add(id(context))
        for ref in gc.get_referents(context):
            if type(ref).__name__ == "hamt":
                self.context_roots[id(ref)] = "[this thread's contextvars context]"
        for var, value in context.items():
            self.context_roots.setdefault(id(value), f"[context variable {var.name!r} of this thread]")

    def is_stop(self, obj: Any) -> bool:
        """Roots that are not climbed past: module namespaces, modules, classes."""
        return id(obj) in self.modules or isinstance(obj, (type, types.ModuleType))

    def _excluded(self, obj: Any) -> bool:
        if id(obj) in self.own:
            return True
        if isinstance(obj, types.FrameType):
            return obj.f_code.co_filename.startswith(_OWN_DIR)
        if isinstance(obj, (types.GeneratorType, types.CoroutineType)):
            code = getattr(obj, "gi_code", None) or getattr(obj, "cr_code", None)
            return code is not None and code.co_filename.startswith(_OWN_DIR)
        return type(obj).__module__.startswith(_OWN_MODULE)

    def climb(self) -> None:
        frontier = list(self.nodes.values())  # targets are climbed even when they are classes
        for _ in range(self.max_depth):
            if not frontier:
                return
            if time.perf_counter() > self.deadline or len(self.nodes) > MAX_NODES:
                self.truncated = True
                return
            if len(frontier) > MAX_FRONTIER:
                self.truncated = True
                frontier = frontier[:MAX_FRONTIER]
            batch = tuple(frontier)
            self.keep.append(batch)
            self.own.add(id(batch))
            self.own.add(id(frontier))
            ids = {id(o) for o in batch}
            referrers = gc.get_referrers(*batch)
            self.keep.append(referrers)
            self.own.add(id(referrers))
            nxt: list[Any] = []
            self.keep.append(nxt)
            fan_in: dict[int, int] = {}
            for ref in referrers:
                if time.perf_counter() > self.deadline:  # one level can be slow (deep proxy chains)
                    self.truncated = True
                    break
                if self._excluded(ref):
                    if id(ref) not in self.own and not (
                        isinstance(ref, types.FrameType) and ref.f_code.co_filename in _SEARCH_FILES
                    ):  # the plugin's own records (a LeakResult, a frame of the runner) hold it
                        self.plugin_held.update(id(r) for r in gc.get_referents(ref) if id(r) in ids)
                    continue
                try:
                    edges = _edges(ref, ids)
                except Exception:
                    continue
                if not edges:
                    continue
                rid = id(ref)
                fan_in[rid] = len(edges)
                for child, kind, sub, attr in edges:
                    self.parents.setdefault(child, []).append((rid, kind, sub, attr))
                if rid not in self.nodes:
                    self.nodes[rid] = ref
                    if not self.is_stop(ref):
                        nxt.append(ref)
            # The frontier is capped: climb first from what holds the most of the last level
            # (one list holding 16 of the instances beats 16 callbacks holding one each).
            nxt.sort(key=lambda o: -fan_in.get(id(o), 0))
            frontier = nxt

    # -- one path per instance ------------------------------------------------------------
    def path(self, target: Any) -> tuple[str, str] | None:
        """(concrete path, shape) from the best root to ``target``, or None.

        ``self.last_plugin_held`` tells, after a None, whether the plugin's own records hold it.
        """
        route = self._route(target)
        if route is None:
            return None
        root, down, kind = route
        return self._render(root, down, target, frame=kind == "frame", context=kind == "context")

    def chain(self, target: Any) -> tuple[list[Any], dict[tuple[int, int], str]]:
        """The objects of :meth:`path`, from its root (a module, or the local or context value) to
        ``target`` ([] when it has none), and each reference's name as the path says it, by the
        ids of the objects it joins."""
        route = self._route(target)
        if route is None:
            return [], {}
        root, down, kind = route
        first: Any = self.nodes.get(root)
        out = [sys.modules[self.modules[root]], first] if kind == "root" and root in self.modules else [first]
        names: dict[tuple[int, int], str] = {}
        node = root
        while down.get(node) is not None:
            node, _, subscript, attribute = down[node]
            child = self.nodes[node]
            owner = out[-1]
            if attribute or subscript:
                names[id(owner), id(child)] = attribute or subscript
            namespace = getattr(owner, "__dict__", None) if not isinstance(owner, (type, types.ModuleType)) else None
            if isinstance(namespace, dict) and not any(r is child for r in gc.get_referents(owner)):
                out.append(namespace)  # an attribute reached through its owner's __dict__: the reference is the dict's
            out.append(child)
        return out, names

    def _route(self, target: Any) -> tuple[int, dict[int, Any], str] | None:
        """The best root for ``target`` (nearest module or class, else a frame's local or a context
        variable), the edges down from it, and what kind of root it is."""
        self.last_plugin_held = False
        start = id(target)
        down: dict[int, tuple[int, str, str, str] | None] = {start: None}  # node -> edge toward target
        level = [start]
        frame_hit: int | None = None
        context_hit: int | None = None  # (a frame's local or a context variable: the nearer one is the path)
        frame_depth = context_depth = self.max_depth + 1
        for depth in range(self.max_depth + 1):
            stops = [n for n in level if n != start and (n in self.modules or isinstance(self.nodes.get(n), (type, types.ModuleType)))]
            if stops:
                return min(stops, key=lambda n: 0 if n in self.modules else 1), down, "root"
            if frame_hit is None:
                frame_hit = next((n for n in level if n in self.frame_locals), None)
                frame_depth = depth
            if context_hit is None:
                context_hit = next((n for n in level if n in self.context_roots), None)
                context_depth = depth
            if not self.last_plugin_held:
                self.last_plugin_held = any(n in self.plugin_held for n in level)
            nxt = []
            for n in level:
                for pid, kind, sub, attr in self.parents.get(n, ()):
                    if pid not in down:
                        down[pid] = (n, kind, sub, attr)
                        nxt.append(pid)
            if not nxt:
                break
            level = nxt
        if context_hit is not None and (frame_hit is None or context_depth < frame_depth):
            return context_hit, down, "context"
        if frame_hit is not None:
            return frame_hit, down, "frame"
        return None

    def _render(self, root: int, down: dict[int, Any], target: Any, frame: bool = False, context: bool = False) -> tuple[str, str]:
        obj: Any = self.nodes.get(root)
        concrete: list[str] = []
        shape: list[str] = []

        def add(text: str, generic: str | None = None) -> None:
            concrete.append(text)
            shape.append(text if generic is None else generic)

        if frame:
            where, name = self.frame_locals[root]
            add(f"[frame {where}] {name}")
        elif context:
            add(self.context_roots[root])
        elif root in self.modules:
            add(self.modules[root])
        elif isinstance(obj, types.ModuleType):
            add(obj.__name__)
        else:  # a class
            add(f"{obj.__module__}.{obj.__qualname__}" if obj.__module__ != "builtins" else obj.__qualname__)
        owner: Any = None  # set when the next edge is into owner's __dict__
        in_namespace = not (frame or context)  # the current dict is a module's or class's namespace
        node = root
        while down.get(node) is not None:
            child, kind, sub, attr = down[node]
            parent = self.nodes.get(node)
            if kind == "dict":  # parent.__dict__: the next edge names an attribute
                owner = parent
                in_namespace = isinstance(parent, (type, types.ModuleType))
                node = child
                continue
            if in_namespace and kind == "item" and attr:
                add(f".{attr}")
            elif owner is not None and kind == "item" and node != root and not in_namespace and attr:
                add(f" -> {type(owner).__qualname__}.{attr}")
            elif kind == "item":
                add(sub, "[…]" if sub.startswith("[") else None)
            elif kind == "attr":
                if isinstance(parent, (type, types.ModuleType)):
                    add(f".{attr}")
                else:
                    add(f" -> {type(parent).__qualname__}.{attr}")
            elif kind == "member":
                add("{…}")
            elif kind == "key":
                add(f"{sub}", "<key>")
            else:
                add(f" -> {type(parent).__qualname__}{sub}")
            owner = None
            in_namespace = False
            node = child
        add(f" -> {type(target).__qualname__}")
        return "".join(concrete), "".join(shape)


def _instance_dict(obj: Any) -> dict[str, Any] | None:
    try:
        d = object.__getattribute__(obj, "__dict__")
    except Exception:
        return None
    return d if isinstance(d, dict) else None


def _edges(parent: Any, ids: set[int]) -> list[tuple[int, str, str, str]]:
    """(child id, kind, subscript, attribute) for each reference from parent to an object in ids.

    kind: item (dict value or sequence element), key, member (of a set), attr (attribute, slot,
    local variable of a suspended frame), dict (parent.__dict__), other (anything else).
    """
    out: list[tuple[int, str, str, str]] = []
    # The built-in methods, never a subclass's: the search must not run the application's code.
    if isinstance(parent, dict):
        for k, v in list(dict.items(parent)):
            if id(v) in ids:
                out.append((id(v), "item", f"[{_short_key(k)}]", k if isinstance(k, str) and k.isidentifier() else ""))
            if id(k) in ids:
                out.append((id(k), "key", f"<key {_short_key(k)}>", ""))
        return out
    if isinstance(parent, (list, tuple, deque)):
        base: Any = list if isinstance(parent, list) else tuple if isinstance(parent, tuple) else deque
        for i, v in enumerate(list(base.__iter__(parent))):
            if id(v) in ids:
                out.append((id(v), "item", f"[{i}]", ""))
        return out
    if isinstance(parent, (set, frozenset)):
        base_set: Any = set if isinstance(parent, set) else frozenset
        return [(id(v), "member", "{…}", "") for v in list(base_set.__iter__(parent)) if id(v) in ids]
    if isinstance(parent, _FRAME_OR_GEN):
        frame = parent if isinstance(parent, types.FrameType) else (
            getattr(parent, "gi_frame", None) or getattr(parent, "cr_frame", None) or getattr(parent, "ag_frame", None)
        )
        local_vars = frame.f_locals if frame is not None else {}
        out = [(id(v), "attr", "", f"<local {k}>") for k, v in list(local_vars.items()) if id(v) in ids]
    elif isinstance(parent, types.CellType):
        with contextlib.suppress(ValueError):
            if id(parent.cell_contents) in ids:
                out.append((id(parent.cell_contents), "attr", "", "cell_contents"))
    elif isinstance(parent, type):
        ns = parent.__dict__
        for r in gc.get_referents(parent):
            if id(r) in ids and isinstance(r, dict) and r.keys() == ns.keys():
                out.append((id(r), "dict", "", ""))
    else:
        d = _instance_dict(parent)
        if d is not None:
            if id(d) in ids:
                out.append((id(d), "dict", "", ""))
            for k, v in list(d.items()):
                if id(v) in ids:
                    out.append((id(v), "attr", "", str(k)))
        for cls in type(parent).__mro__:
            for slot in getattr(cls, "__slots__", ()) if isinstance(getattr(cls, "__slots__", ()), (tuple, list)) else ():
                desc = cls.__dict__.get(slot)
                if desc is None or not hasattr(desc, "__get__"):
                    continue
                try:
                    v = desc.__get__(parent, cls)
                except Exception:
                    continue
                if id(v) in ids:
                    out.append((id(v), "attr", "", slot))
        for name in ("__self__", "__func__", "__closure__", "__defaults__", "__kwdefaults__", "__wrapped__"):
            if name in ("__self__", "__func__") and not isinstance(parent, types.MethodType):
                continue
            with contextlib.suppress(Exception):
                v = object.__getattribute__(parent, name)
                if v is not None and id(v) in ids:
                    out.append((id(v), "attr", "", name))
    if not out:
        out = _c_attributes(parent, ids)
    if not out:  # a reference we cannot name: say what holds it
        out = [(id(r), "other", f".<{type(r).__qualname__} ref>", "") for r in gc.get_referents(parent) if id(r) in ids]
    seen: set[int] = set()
    return [e for e in out if not (e[0] in seen or seen.add(e[0]))]  # type: ignore[func-returns-value]


_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType)


# Modules whose C types' getters only read a field. A getter of another extension type runs
# its own code: a proxy (wrapt's) forwards it down a chain of wrappers that can take forever.
_PLAIN_C_MODULES = frozenset(
    {"builtins", "_io", "io", "_asyncio", "asyncio", "_thread", "_socket", "socket", "_collections", "functools", "_functools", "_contextvars", "types"}
)


def _c_attributes(parent: Any, ids: set[int]) -> list[tuple[int, str, str, str]]:
    """Attributes of a C type (``TextIOWrapper.buffer``, ``Task._coro``) that refer to ids.

    Slots (member descriptors) are read anywhere; other getters only on the standard
    library's own C types."""
    out = []
    for cls in type(parent).__mro__:
        plain = getattr(cls, "__module__", None) in _PLAIN_C_MODULES
        for name, desc in list(vars(cls).items()):
            if not isinstance(desc, _DESCRIPTORS) or name in ("__dict__", "__weakref__"):
                continue
            if not plain and not isinstance(desc, types.MemberDescriptorType):
                continue
            try:
                value = desc.__get__(parent, cls)
            except Exception:
                continue
            if id(value) in ids:
                out.append((id(value), "attr", "", name))
    return out


def _sample(objs: list[Any], limit: int) -> list[Any]:
    if len(objs) <= limit:
        return list(objs)
    step = len(objs) / limit
    return [objs[int(i * step)] for i in range(limit)]


def find_instances(type_names: Iterable[str]) -> dict[str, list[Any]]:
    """Instances of the named types among the objects the collector tracks (unfrozen only)."""
    wanted = set(type_names)
    found: dict[str, list[Any]] = {name: [] for name in wanted}
    everything = gc.get_objects()
    own = {id(found), id(everything), *(id(v) for v in found.values())}
    for obj in everything:
        name = type_name(obj)
        if name in wanted and id(obj) not in own:
            found[name].append(obj)
    del everything
    return found


def search(
    types_or_instances: Iterable[str] | dict[str, list[Any]],
    max_objects: int = MAX_OBJECTS,
    max_depth: int = MAX_DEPTH,
    budget: float = BUDGET,
    exclude: Iterable[Any] = (),
    draw_to: str | os.PathLike[str] | None = None,
) -> Retention:
    """Reference paths to instances, grouped. Pass type names, or {type name: instances}.

    With ``draw_to``, the first rooted path is drawn too (:func:`_draw`), as ``<draw_to>.svg``.
    """
    started = time.perf_counter()
    if isinstance(types_or_instances, dict):
        found = types_or_instances
    else:
        names = list(types_or_instances)
        found = find_instances(names)
        found = {n: found[n] for n in names if found.get(n)}
    result = Retention()
    per_type = max(10, max_objects // max(1, len(found))) if found else 0
    samples: dict[str, list[Any]] = {}
    for name, objs in found.items():
        result.found[name] = len(objs)
        result.sizes[name] = sum(_sizeof(o) for o in objs)
        samples[name] = _sample(objs, per_type)
        result.sampled[name] = len(samples[name])
    targets = [o for objs in samples.values() for o in objs]
    if not targets:
        return result
    own = [id(found), id(samples), id(targets), *(id(v) for v in found.values()), *(id(v) for v in samples.values())]
    own.extend(id(x) for x in exclude)
    firsts: dict[tuple[str, str], Any] = {}  # each group's first instance
    own.append(id(firsts))
    with measuring.thawed():
        graph = _Graph(targets, own, max_depth, started + budget)
        try:
            graph.climb()
            groups: dict[tuple[str, str], Group] = {}
            for name, objs in samples.items():
                for obj in objs:
                    found_path = graph.path(obj)
                    if found_path is None and graph.last_plugin_held:
                        result.plugin_held[name] = result.plugin_held.get(name, 0) + 1
                        continue
                    if found_path is None:
                        concrete = shape = ""
                        example = (
                            f"no path from a module global, class attribute, live frame or context variable within "
                            f"{max_depth} references (held by C code, by the plugin, or a longer chain)"
                        )
                    else:
                        concrete, shape = found_path
                        example = concrete
                    g = groups.setdefault((name, shape), Group(name, shape, example=example))
                    firsts.setdefault((name, shape), obj)
                    g.count += 1
                    g.size += _sizeof(obj)
            result.truncated = graph.truncated and any(not g.shape for g in groups.values())
            result.groups = sorted(groups.values(), key=lambda g: (not g.shape, -g.count, -g.size))
            top = result.first_rooted()
            if draw_to is not None and top is not None:
                chain, labels = graph.chain(firsts[top.type, top.shape])
                try:
                    result.graph, result.graph_note = _draw(chain, labels, draw_to)
                except Exception as exc:  # evidence only
                    result.graph_note = f"the reference graph was not drawn: {type(exc).__name__}: {exc}"
                finally:
                    chain.clear()  # the leaked objects themselves: never kept past the search
        finally:
            firsts.clear()
            graph.nodes.clear()
            graph.keep.clear()
            del graph
    result.seconds = time.perf_counter() - started
    return result


def _sizeof(obj: Any) -> int:
    try:
        return sys.getsizeof(obj)
    except Exception:
        return 0


def paths_for(
    objs: Sequence[Any], max_depth: int = MAX_DEPTH, budget: float = BUDGET, exclude: Iterable[Any] = ()
) -> list[str | None]:
    """One concrete path per object (None where no root was found within the caps)."""
    if not objs:
        return []
    started = time.perf_counter()
    with measuring.thawed():
        graph = _Graph(objs, [id(objs), *(id(x) for x in exclude)], max_depth, started + budget)
        try:
            graph.climb()
            out = []
            for obj in objs:
                p = graph.path(obj)
                out.append(p[0] if p else None)
        finally:
            graph.nodes.clear()
            graph.keep.clear()
            del graph
    return out


DRAW_TIMEOUT = 10.0  # seconds graphviz may take to lay out a path
MAX_DRAWN = 16  # objects of a path drawn; a longer one is left as text


def _draw(chain: Sequence[Any], names: dict[tuple[int, int], str], base: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """Draw a retention path (:meth:`_Graph.chain`) with objgraph: ``<base>.dot``, and
    ``<base>.svg`` when graphviz's ``dot`` is installed. Called with the heap thawed (objgraph
    climbs with ``gc.get_referrers``, blind to a frozen heap).

    objgraph labels each object with its type and a short repr, and each reference with the
    attribute, key or index it goes through. Returns (the SVG, or None; a one-line note, or None).
    """
    if len(chain) < 2 or len(chain) > MAX_DRAWN:
        return None, None
    import io
    import shutil
    import subprocess

    import objgraph

    buffer = io.StringIO()
    target = chain[-1]
    objgraph.show_chain(list(chain), output=buffer, highlight=lambda obj: obj is target, extra_ignore=(id(chain), id(buffer)))
    text = buffer.getvalue()
    for parent, child in zip(chain[:-1], chain[1:], strict=True):
        # objgraph names a reference through a dict's key or an instance's __dict__; an attribute an
        # instance holds itself (inline values, Python 3.13; a slot) it leaves bare: the path names it
        name = names.get((id(parent), id(child)))
        if name is not None:
            text = text.replace(f"  o{id(parent)} -> o{id(child)};\n", f"  o{id(parent)} -> o{id(child)} [label={json.dumps(name)}];\n")
    base = os.fspath(base)
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    dot_file, svg_file = base + ".dot", base + ".svg"
    with open(dot_file, "w", encoding="utf-8") as handle:
        handle.write(text)
    dot = shutil.which("dot")
    if dot is None:
        return None, f"graphviz's dot is not installed: the reference graph is {short_path(dot_file)}"
    try:
        done = subprocess.run([dot, "-Tsvg", "-o", svg_file, dot_file], capture_output=True, text=True, timeout=DRAW_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"graphviz could not draw {short_path(dot_file)}: {exc}"
    if done.returncode != 0 or not os.path.isfile(svg_file):
        return None, f"graphviz could not draw {short_path(dot_file)}: {done.stderr.strip()[:200]}"
    return svg_file, None
