"""A soak's settings: the ``memleak_soak`` marker's keywords read and checked (each in its accepted form), and the names of its files."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_memleak.config import options
from pytest_memleak.config.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_percent,
    parse_size,
)
from pytest_memleak.soak import guard as memory_guard

_PER_HOUR = re.compile(r"\s*(/\s*(h|hr|hour)|per\s+hour)\s*$", re.IGNORECASE)

DEFAULTS = options.SOAK_DEFAULTS  # the marker's keywords, their defaults and forms: one registry, in config/options.py
_FORMS = options.SOAK_FORMS
MIN_SAMPLES = 20  # below this many samples, a default or overridden sample_every scales down
TARGET_SAMPLES = 30  # ...to give this many
MAX_WARMUP_FRACTION = 0.9
SAFE_NAME_LENGTH = 80


@dataclass(frozen=True)
class SoakConfig:
    """The settings of one soak test, validated, after --memleak-soak-duration had its say."""

    duration: float  # seconds the body loops
    sample_every: float  # seconds between samples
    memory_limit: int | None  # bytes
    max_growth: int  # bytes per hour
    horizon: float | None  # seconds
    warmup_fraction: float  # of the duration, left out of the fit
    expect_leak: bool | None
    marker_duration: float
    overridden: bool  # the duration came from --memleak-soak-duration
    sample_scaled: bool  # sample_every was scaled down to give enough samples
    memory_limit_given: bool = False  # memory_limit came from the marker: the guard watches RSS against it
    memory_margin: str = memory_guard.DEFAULT_MARGIN  # how far below a limit the guard stops the soak
    scenario: str | None = None  # the summary table's names, when given (scenario_variant)
    variant: str | None = None
    watch: str | None = None  # a fixture of the test that returns the process to sample (soak_target)
    flamegraph: str = "failed"  # --memleak-flamegraph: a live flamegraph of a watched service that leaks (or all)

    def margin(self) -> memory_guard.Margin:
        return memory_guard.parse_margin(self.memory_margin)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def soak_config(item: pytest.Item, sources: options.Sources | None = None) -> SoakConfig:
    """Validate the soak marker(s) of ``item`` and resolve its settings.

    Raises :class:`pytest.UsageError` naming the keyword, ``@pytest.mark.memleak_soak on <nodeid>`` and
    the accepted form. Call it at collection time to fail early; :func:`run_soak_protocol`
    calls it again before the test starts.
    """
    where = f"@pytest.mark.memleak_soak on {item.nodeid}"
    signature = options.MARKERS_BY_NAME["memleak_soak"].signature
    given: dict[str, Any] = {}
    for mark in item.iter_markers("memleak_soak"):  # closest first: function > class > module
        if mark.args:
            raise pytest.UsageError(
                f"pytest-memleak: {where} takes keywords only, got positional {mark.args!r}; "
                f"accepted form: @pytest.mark.{signature}"
            )
        for key, value in mark.kwargs.items():
            if key not in DEFAULTS:
                raise pytest.UsageError(
                    f"pytest-memleak: unknown keyword {key!r} in {where}; accepted form: @pytest.mark.{signature}"
                )
            given.setdefault(key, value)
    raw = {**DEFAULTS, **given}

    def parsed(key: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(raw[key])
        except (ValueError, TypeError) as exc:
            raise options.usage_error(f"memleak_soak({key}=...)", where, raw[key], _FORMS[key], str(exc)) from None

    def bad(key: str, why: str) -> pytest.UsageError:
        return options.usage_error(f"memleak_soak({key}=...)", where, raw[key], _FORMS[key], why)

    marker_duration = parsed("duration", parse_duration)
    sample_every = parsed("sample_every", parse_duration)
    if sample_every >= marker_duration:
        raise bad("sample_every", f"not shorter than the duration {format_duration(marker_duration)}")
    memory_limit = parsed("memory_limit", _optional(parse_size))
    if memory_limit == 0:
        raise bad("memory_limit", "a limit of 0 B is always exceeded")
    margin = parsed("memory_margin", memory_guard.parse_margin)
    if memory_limit is not None and margin.size is not None and margin.size >= memory_limit:
        raise bad("memory_margin", f"not smaller than memory_limit {format_size(memory_limit)}")
    max_growth = parsed("max_growth", _parse_rate)
    horizon = parsed("horizon", _optional(parse_duration))
    warmup_fraction = parsed("warmup", lambda v: _parse_warmup(v, marker_duration))
    expect_leak = raw["expect_leak"]
    if expect_leak is not None and not isinstance(expect_leak, bool):
        raise bad("expect_leak", "not a bool")
    for key in ("scenario", "variant", "watch"):
        if raw[key] is not None and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise bad(key, "not a name")
    fixturenames = getattr(item, "fixturenames", None)
    if raw["watch"] is not None and fixturenames is not None and raw["watch"] not in fixturenames:
        raise bad(
            "watch",
            f"the test does not use a fixture {raw['watch']!r}: request it as an argument of the test or of a "
            f"fixture it uses (its fixtures: {', '.join(fixturenames) or 'none'})",
        )

    override = sources.values.get("soak_duration") if sources is not None else None
    duration = float(override) if override else marker_duration
    scaled = False
    if (override or "sample_every" not in given) and duration / sample_every < MIN_SAMPLES:
        sample_every = duration / TARGET_SAMPLES
        scaled = True
    return SoakConfig(
        duration=duration,
        sample_every=sample_every,
        memory_limit=memory_limit,
        max_growth=max_growth,
        horizon=horizon,
        warmup_fraction=warmup_fraction,
        expect_leak=expect_leak,
        marker_duration=marker_duration,
        overridden=bool(override),
        sample_scaled=scaled,
        memory_limit_given="memory_limit" in given and memory_limit is not None,
        memory_margin=margin.spec(),
        scenario=raw["scenario"],
        variant=raw["variant"],
        watch=raw["watch"],
        flamegraph=str(sources.values.get("flamegraph") or "failed") if sources is not None else "failed",
    )


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
            return None
        return parse(value)

    return wrapped


def _parse_rate(value: Any) -> int:
    if isinstance(value, str):
        value = _PER_HOUR.sub("", value)
    return parse_size(value)


def _parse_warmup(value: Any, duration: float) -> float:
    """A fraction of the duration: '10%' is 0.1; a duration ('5s', 5) is divided by it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a warm-up")
    if isinstance(value, str) and value.strip().endswith("%"):
        return parse_percent(value, MAX_WARMUP_FRACTION)
    if isinstance(value, (int, float)) and value == 0:
        return 0.0
    seconds = parse_duration(value)
    if seconds >= duration:
        raise ValueError(f"not shorter than the duration {format_duration(duration)}")
    return min(seconds / duration, MAX_WARMUP_FRACTION)


def safe_name(nodeid: str, max_length: int = SAFE_NAME_LENGTH) -> str:
    """A file name for a nodeid (see :func:`pytest_memleak.evidence.flamegraph.safe_name`)."""
    from pytest_memleak.evidence.flamegraph import safe_name as file_name

    return file_name(nodeid, max_len=max_length + 13)


def samples_path(report_dir: Path, nodeid: str) -> Path:
    return Path(report_dir) / "soak" / (safe_name(nodeid) + ".jsonl")


def scenario_variant(item: pytest.Item, config: SoakConfig | None = None) -> tuple[str, str]:
    """``(scenario, variant)`` for the summary table: the marker's ``scenario`` and ``variant``
    when given, else the test function's name without ``test_`` and the parameter id. Nothing is
    guessed from parts of a name: ``test_service_with_leak`` is scenario ``service_with_leak``."""
    name = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    base = name[5:] if name.startswith("test_") else name
    callspec = getattr(item, "callspec", None)
    scenario = config.scenario if config is not None and config.scenario else base
    variant = config.variant if config is not None and config.variant else (callspec.id if callspec is not None else "")
    return scenario, variant
