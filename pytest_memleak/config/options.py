"""Every setting of pytest-memleak, in one registry, and the one order that resolves it.

A setting named ``retained`` is, at the same time:

* the CLI option ``--memleak-retained`` (default ``None`` so that lower sources can answer),
* the ini key ``memleak_retained`` (``[tool.pytest.ini_options]`` or ``pytest.ini``),
* the environment variable ``MEMLEAK_RETAINED``,
* the keyword ``retained=`` of ``@pytest.mark.memleak`` (when ``marker`` is true).

Resolution order: marker > CLI > env > ini > default. Every value is parsed by the
setting's own parser; a bad value is a :class:`pytest.UsageError` that names the setting,
where the value came from, and the accepted form.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_memleak import compat
from pytest_memleak.config.units import DURATION_FORM, SIZE_FORM, parse_duration, parse_size
from pytest_memleak.soak.guard import DEFAULT_MARGIN


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    form: str
    marker: bool = True  # may be given per test through @pytest.mark.memleak(name=...)
    flag: bool = False  # a CLI switch without a value

    @property
    def cli(self) -> str:
        return "--memleak-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "memleak_" + self.name

    @property
    def ini(self) -> str:
        return "memleak_" + self.name

    @property
    def env(self) -> str:
        return "MEMLEAK_" + self.name.upper()


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _count(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a whole number")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = value.strip()
            if not value.lstrip("-").isdigit():
                raise ValueError(f"{value!r} is not a whole number")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number")
        if not minimum <= value <= maximum:
            raise ValueError(f"{value!r} is outside {minimum}..{maximum}")
        return value

    return parse


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "")):
            return None
        return parse(value)

    return wrapped


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _seconds(value: Any) -> float:
    return parse_duration(value)


def _share(value: Any) -> float:
    text = str(value).strip()
    scale = 100.0 if text.endswith("%") else 1.0
    try:
        number = float(text.rstrip("%")) / scale
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"{value!r} is not a number from 0 up")
    return number


def _patterns(value: Any) -> tuple[str, ...]:
    """Glob patterns, separated by commas or white space (a marker may give a list); a ``group:``
    pattern runs to the next comma (a group's name has spaces); ``none``: no pattern."""
    if isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return ()
    if isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
    else:
        items = []
        for chunk in str(value).replace("\n", ",").split(","):
            words, group, rest = chunk.partition("group:")
            items.extend(words.split())
            items.extend([group + rest] if group else [])
    patterns = tuple(item.strip() for item in items if item.strip())
    if not patterns:
        raise ValueError(f"{value!r} holds no pattern")
    return patterns


def _path(value: Any) -> str:
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{value!r} is not a path")
    return text


SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", _bool, False, "check every test for leaks by running it repeatedly", "true or false", marker=False, flag=True),
    Setting("warmup", _count(1, 1000), 1, "runs before the baseline, the test's own run included", "a whole number from 1 to 1000"),
    Setting("runs", _count(2, 1000), 12, "most runs in a screening stretch; a stretch is as many runs as a quarter of the test's own run affords, and a stretch without growth clears it", "a whole number from 2 to 1000"),
    Setting("confirm_runs", _count(4, 10000), 48, "traced runs of the attribution window at most, spent only on growth that persisted untraced", "a whole number from 4 to 10000"),
    Setting("confirm_seconds", _seconds, 10.0, "time a suspect may take at most (twenty of its runs, 0.5 s at the least; all of it when marked memleak): a leak confirmed at its sites gets all of it to outlast a bounded cache", DURATION_FORM),
    Setting("retained", parse_size, 0, "memory budget: Python heap retained per run, in total, that still passes", SIZE_FORM),
    Setting("per_site", _optional(parse_size), None, "memory budget: heap retained per run by any single allocation site (default: no per-site budget)", SIZE_FORM + ", or none"),
    Setting("native", _optional(parse_size), "1 KiB", "native memory budget: growth per run of memory outside Python's allocator (RSS minus heap); none turns the native check off", SIZE_FORM + ", or none"),
    Setting(
        "peak",
        _optional(parse_size),
        None,
        "peak budget: the high-water mark of memory the test's own call allocated (memray, Python and native); over it the test fails, naming the sites alive at the peak",
        SIZE_FORM + ", or none",
    ),
    Setting("fds", _count(0, 1_000_000), 0, "open file descriptors a test may leave behind per run", "a whole number from 0 to 1000000"),
    Setting("threads", _count(0, 1_000_000), 0, "live threads a test may leave behind per run", "a whole number from 0 to 1000000"),
    Setting("processes", _count(0, 1_000_000), 0, "live child processes a test may leave behind per run", "a whole number from 0 to 1000000"),
    Setting("tasks", _count(0, 1_000_000), 0, "pending asyncio tasks a test may leave behind per run", "a whole number from 0 to 1000000"),
    Setting("trace_frames", _count(1, 100), 8, "frames kept per allocation by tracemalloc while confirming", "a whole number from 1 to 100"),
    Setting("top", _count(1, 100), 5, "allocation sites listed in a failure report", "a whole number from 1 to 100"),
    Setting(
        "budget",
        _optional(_share),
        0.3,
        "cost budget: checking takes at most this share of the suite's own time (plus 30 s in a session of up to 20 tests, 0.24 s for 100); tests it does not reach stay unchecked and are counted (none: check every test)",
        "a number from 0 up, such as 0.5, or none",
        marker=False,
    ),
    Setting(
        "rotate",
        _bool,
        True,
        "under a cost budget: with pytest's cache, let a test checked clean in a recent session rest; without its history, let the day's draw order the credit; so that over sessions the credit reaches every test",
        "true or false",
        marker=False,
    ),
    Setting("report_dir", _path, "reports", "directory for flamegraphs and the HTML and JSON reports", "a directory path", marker=False),
    Setting("flamegraph", _choice("failed", "all", "none"), "failed", "write memray leak flamegraphs for: failed (leaking) tests, all checked tests, or none", "failed, all or none"),
    Setting("native_stacks", _bool, False, "record native (C) stacks in memray captures", "true or false", flag=True),
    Setting(
        "capture",
        _choice("aggregated", "full"),
        "aggregated",
        "the memray capture kept beside a flamegraph: aggregated (tens of KiB; memray summary, tree, table and flamegraph read it) or full (every allocation, megabytes; memray stats and flamegraph --temporal too)",
        "aggregated or full",
    ),
    Setting(
        "ignore",
        _patterns,
        None,
        "growth not counted: allocation sites whose file:line, or a frame of whose stack, matches one of these glob patterns (third-party leaks you cannot fix), and leaks whose group matches a pattern 'group:<glob>' (up to the next comma); the summary says how much was ignored",
        "glob patterns separated by commas or spaces, such as 'click/*', '*/site-packages/somelib/*:*' or 'group:kept by click.*', or none",
    ),
    Setting(
        "warn",
        _bool,
        False,
        "warn-only: report leaks (summary, JSON, HTML, JUnit) without failing their tests; the exit code is the suite's own",
        "true or false",
        flag=True,
    ),
    Setting(
        "baseline",
        _path,
        None,
        "a JSON file of known leaks: a listed test whose leak stays within its recorded kinds and rates passes, reported as known; a new or grown leak fails",
        "a file path",
        marker=False,
    ),
    Setting(
        "baseline_write",
        _bool,
        False,
        "write the baseline file (memleak_baseline) from this run's leaks; entries of tests this run did not settle are kept",
        "true or false",
        marker=False,
        flag=True,
    ),
    Setting("soak_duration", _optional(parse_duration), None, "override the duration of every soak test (for a CI soak job)", DURATION_FORM, marker=False),
)
BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}

ENABLE_CLI = "--memleak"  # the switch itself is --memleak rather than --memleak-enabled
ENABLE_INI = "memleak"
ENABLE_ENV = "MEMLEAK"


@dataclass(frozen=True)
class Marker:
    name: str
    signature: str
    help: str
    keywords: tuple[str, ...]


MEMLEAK_MARKER_KEYS = tuple(s.name for s in SETTINGS if s.marker)
@dataclass(frozen=True)
class SoakKeyword:
    """A keyword of ``@pytest.mark.memleak_soak``: its default and the form it accepts (parsed and
    checked by :func:`pytest_memleak.soak.config.soak_config`)."""

    name: str
    default: Any
    form: str


WATCH_ACCEPTED = "a pid (int), a subprocess.Popen or a psutil.Process of a running process"
#: Every keyword of ``memleak_soak``: the marker's signature, its defaults and its errors read this.
SOAK_KEYWORDS: tuple[SoakKeyword, ...] = (
    SoakKeyword("duration", "30s", DURATION_FORM),
    SoakKeyword("sample_every", "0.5s", DURATION_FORM + ", shorter than the duration"),
    SoakKeyword("memory_limit", "700 MiB", SIZE_FORM + ", or None for no limit"),
    SoakKeyword(
        "memory_margin",
        DEFAULT_MARGIN,
        "a size such as '64 MiB', or a percentage of the limit such as '10%', smaller than memory_limit",
    ),
    SoakKeyword("max_growth", "0 B", "a growth per hour such as '0 B', '512 KiB' or '2 MiB/h'"),
    SoakKeyword("horizon", "24h", DURATION_FORM + ", or None for no projection"),
    SoakKeyword(
        "warmup", "10%", "a fraction of the duration such as '10%', or a duration such as '5s', shorter than the duration"
    ),
    SoakKeyword("expect_leak", None, "True, False or None"),
    SoakKeyword("scenario", None, "a name for the summary table's scenario column, or None (the test function's name)"),
    SoakKeyword("variant", None, "a name for the summary table's variant column, or None (the parameter id)"),
    SoakKeyword("watch", None, f"the name of a fixture of the test that returns {WATCH_ACCEPTED}, or None (this process)"),
)
SOAK_DEFAULTS: Mapping[str, Any] = {k.name: k.default for k in SOAK_KEYWORDS}
SOAK_FORMS: Mapping[str, str] = {k.name: k.form for k in SOAK_KEYWORDS}
SOAK_MARKER_KEYS = tuple(SOAK_DEFAULTS)
MARKERS: tuple[Marker, ...] = (
    Marker(
        "memleak",
        "memleak(" + ", ".join(f"{k}=..." for k in MEMLEAK_MARKER_KEYS) + ")",
        "check this test for leaks even without --memleak; keywords override the budgets and run counts for it",
        MEMLEAK_MARKER_KEYS,
    ),
    Marker("no_memleak", "no_memleak(reason=...)", "never check this test for leaks, with the reason why", ("reason",)),
    Marker(
        "memleak_soak",
        "memleak_soak(" + ", ".join(f"{k}={v!r}" for k, v in SOAK_DEFAULTS.items()) + ")",
        "run the test body repeatedly for a duration, sample memory, and fail on a persistent upward trend",
        SOAK_MARKER_KEYS,
    ),
)
MARKERS_BY_NAME: Mapping[str, Marker] = {m.name: m for m in MARKERS}


def usage_error(setting: str, source: str, value: Any, form: str, why: str = "") -> pytest.UsageError:
    detail = f" ({why})" if why else ""
    return pytest.UsageError(
        f"pytest-memleak: invalid value {value!r} for {setting} from {source}{detail}; expected {form}"
    )


def parse_setting(setting: Setting, value: Any, source: str, label: str) -> Any:
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as exc:
        raise usage_error(label, source, value, setting.form, str(exc)) from None


@dataclass
class Sources:
    """The session-level answer for each setting (CLI > env > ini > default), and where it came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.values[name]


def _ini_raw(config: pytest.Config, key: str) -> str | None:
    """The ini text for key, or None when the ini file does not set it.

    pytest 9's ``[tool.pytest]`` table keeps TOML types: a bool or a number is read as its text.
    """
    try:
        value = config.getini(key)
    except (ValueError, TypeError) as exc:
        native, _ = compat.ini_entry(config, key)
        if isinstance(native, (bool, int, float)):
            return str(native).lower() if isinstance(native, bool) else str(native)
        raise pytest.UsageError(f"pytest-memleak: cannot read ini key {key}: {exc}") from None
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return str(value).strip()


def _ini_source(config: pytest.Config, key: str) -> str:
    """Where an ini value came from: -o on the command line, or the ini file."""
    if compat.ini_entry(config, key)[1]:
        return "-o/--override-ini on the command line"
    return f"the ini file {config.inipath or ''}".rstrip()


def resolve_session(config: pytest.Config, environ: Mapping[str, str] | None = None) -> Sources:
    """Resolve every setting for the session: CLI > env > ini > default."""
    env = os.environ if environ is None else environ
    out = Sources()
    for setting in SETTINGS:
        if setting.name == "enabled":
            cli_value = config.getoption("memleak", None)
            labels = (ENABLE_CLI, ENABLE_ENV, ENABLE_INI)
        else:
            cli_value = config.getoption(setting.dest, None)
            labels = (setting.cli, setting.env, setting.ini)
        candidates: Iterable[tuple[Any, str, str]] = (
            (cli_value, "the command line", labels[0]),
            (env.get(labels[1]), "the environment", labels[1]),
            (_ini_raw(config, labels[2]), _ini_source(config, labels[2]), labels[2]),
        )
        for raw, source, label in candidates:
            if raw is not None:
                out.values[setting.name] = parse_setting(setting, raw, source, label)
                out.origin[setting.name] = f"{label} ({source})"
                break
        else:
            default = setting.default
            out.values[setting.name] = setting.parse(default) if isinstance(default, str) else default
            out.origin[setting.name] = "default"
    return out


def marker_overrides(item: pytest.Item) -> dict[str, Any]:
    """Marker keywords for an item, closest marker first (function > class > module)."""
    found: dict[str, Any] = {}
    for mark in item.iter_markers("memleak"):
        for key, raw in mark.kwargs.items():
            if key in found:
                continue
            setting = BY_NAME.get(key)
            where = f"@pytest.mark.memleak on {item.nodeid}"
            if setting is None or not setting.marker:
                raise pytest.UsageError(
                    f"pytest-memleak: unknown keyword {key!r} in {where}; accepted: {', '.join(MEMLEAK_MARKER_KEYS)}"
                )
            found[key] = parse_setting(setting, raw, where, f"memleak({key}=...)")
        if mark.args:
            raise pytest.UsageError(
                f"pytest-memleak: @pytest.mark.memleak on {item.nodeid} takes keywords only, got positional {mark.args!r}; "
                f"accepted: {', '.join(MEMLEAK_MARKER_KEYS)}"
            )
    return found


def validate_simple_marker(item: pytest.Item, name: str) -> None:
    marker = MARKERS_BY_NAME[name]
    for mark in item.iter_markers(name):
        unknown = [k for k in mark.kwargs if k not in marker.keywords]
        if unknown or (mark.args and name != "no_memleak") or len(mark.args) > 1:
            raise pytest.UsageError(
                f"pytest-memleak: @pytest.mark.{name} on {item.nodeid} got "
                f"{', '.join(map(repr, unknown)) or repr(mark.args)}; accepted form: @pytest.mark.{marker.signature}"
            )


@dataclass(frozen=True)
class TestSettings:
    """The settings in force for one test, after the marker had its say."""

    warmup: int
    runs: int
    confirm_runs: int
    confirm_seconds: float
    retained: int
    per_site: int | None
    native: int | None
    peak: int | None
    fds: int
    threads: int
    processes: int
    tasks: int
    trace_frames: int
    top: int
    flamegraph: str
    native_stacks: bool
    capture: str
    ignore: tuple[str, ...] | None
    warn: bool
    origin: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "origin"}


def settings_for(item: pytest.Item, session_values: Sources) -> TestSettings:
    overrides = marker_overrides(item)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in TestSettings.__dataclass_fields__:
        if name == "origin":
            continue
        if name in overrides:
            values[name] = overrides[name]
            origin[name] = "marker"
        else:
            values[name] = session_values.get(name)
            origin[name] = session_values.origin[name]
    return TestSettings(origin=origin, **values)
