"""Human units for sizes and durations: parse what users write, format what we print."""

from __future__ import annotations

import math
import re

SIZE_FORM = "a size such as 0, '512 B', '1.5 KiB', '2 MB' or '1 GiB' (B, KB, MB, GB, KiB, MiB, GiB)"
DURATION_FORM = "a duration such as 30, '45s', '2 min', '1.5h' (s, min, h; a bare number is seconds)"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_DURATION_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "ms": 0.001,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _number_and_unit(value: object, what: str, units: dict[str, float] | dict[str, int]) -> tuple[float, str]:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a {what}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a {what}")
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError(f"{value!r} is not a {what}")
    if unit not in units:
        raise ValueError(f"{value!r} has an unknown unit {unit!r}")
    return number, unit


def parse_size(value: object) -> int:
    """Parse a byte size: an int/float of bytes or a string with a unit. Raises ValueError."""
    number, unit = _number_and_unit(value, "size", _SIZE_UNITS)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} is not a non-negative size")
    return int(round(number * _SIZE_UNITS[unit]))


def parse_duration(value: object) -> float:
    """Parse a duration in seconds: a number or a string with a unit. Raises ValueError."""
    number, unit = _number_and_unit(value, "duration", _DURATION_UNITS)
    seconds = number * _DURATION_UNITS[unit]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def parse_percent(value: str, maximum: float = 1.0) -> float:
    """'10%' -> 0.1, at most ``maximum`` (a fraction). Raises ValueError."""
    text = value.strip()
    if not text.endswith("%"):
        raise ValueError(f"{value!r} is not a percentage")
    try:
        fraction = float(text[:-1].strip()) / 100.0
    except ValueError:
        raise ValueError(f"{value!r} is not a percentage") from None
    if not (math.isfinite(fraction) and 0.0 <= fraction <= maximum):
        raise ValueError(f"{value!r} is outside 0%..{maximum:.0%}")
    return fraction


def format_size(nbytes: float, signed: bool = False) -> str:
    """Format bytes in binary units: 16 B, 1.5 KiB, 2.0 MiB."""
    sign = ""
    if signed:
        sign = "+" if nbytes >= 0 else "-"
        nbytes = abs(nbytes)
    elif nbytes < 0:
        sign = "-"
        nbytes = -nbytes
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{sign}{nbytes / scale:.1f} {unit}"
    if nbytes == int(nbytes):
        return f"{sign}{int(nbytes)} B"
    return f"{sign}{nbytes:.1f} B"


def format_duration(seconds: float) -> str:
    """Format a duration for people: '45 s', '12 min', '5 h 12 min', '3 d 4 h'."""
    if not math.isfinite(seconds):
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
