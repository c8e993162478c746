"""A soak's projected time to the memory limit holds: a real process that leaks beside a buffer
that fills and is cleared (a sawtooth in its RSS) is soaked for 5 s, then run to its limit."""

from __future__ import annotations

import json

import pytest

SERVICE = """
import mmap
import time

import psutil
import pytest

MiB = 1024**2
LIMIT = psutil.Process().memory_info().rss + 100 * MiB
LEAKED = []
STATE = {"buffer": None, "filled": 0, "next": None}


@pytest.fixture(autouse=True)
def fresh():
    yield
    LEAKED.clear()


def serve():
    # requests come every 10 ms by the wall clock, as traffic does, however loaded the machine
    now = time.monotonic()
    STATE["next"] = (STATE["next"] or now) + 0.01
    time.sleep(max(0.0, STATE["next"] - now))
    LEAKED.append(b"l" * (64 * 1024))  # the leak: 64 KiB a request, written, so resident
    if STATE["buffer"] is None or STATE["filled"] >= 8 * MiB:
        if STATE["buffer"] is not None:
            STATE["buffer"].close()  # the clean-up: its pages go back to the OS
        STATE["buffer"], STATE["filled"] = mmap.mmap(-1, 8 * MiB), 0
    STATE["buffer"][STATE["filled"] : STATE["filled"] + 256 * 1024] = b"b" * (256 * 1024)
    STATE["filled"] += 256 * 1024


@pytest.mark.memleak_soak(duration="5s", sample_every="0.02s", memory_limit=LIMIT, memory_margin="1 MiB")
def test_short():
    serve()


@pytest.mark.memleak_soak(duration="120s", sample_every="0.02s", memory_limit=LIMIT, memory_margin="1 MiB")
def test_to_the_limit():
    serve()
"""

ARGS = ("-p", "no:cacheprovider", "--memleak-flamegraph=none", "-p", "no:memray")


def _soak(pytester: pytest.Pytester, name: str) -> dict:
    result = pytester.runpytest_subprocess(*ARGS, "-k", name, timeout=300)
    result.assert_outcomes(failed=1)  # a leak either way
    soaks = json.loads((pytester.path / "reports" / "memleak.json").read_text())["soaks"]
    (soak,) = soaks
    return soak


@pytest.mark.slow
def test_the_projection_from_a_short_soak_holds_until_the_limit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_service=SERVICE)
    short = _soak(pytester, "test_short")
    assert short["status"] == "leak", short["reason"]
    assert "troughs (after each of" in short["reason"], short["reason"]  # judged on memory after each clean-up
    assert short["time_to_limit"] is not None, short["reason"]
    projected = short["duration"] + short["time_to_limit"]
    long = _soak(pytester, "test_to_the_limit")
    assert "stopped by the memory guard" in long["reason"] or long["status"] == "leak", long["reason"]
    reached = long["duration"]  # the guard stopped it 1 MiB short of the limit
    assert reached < 110, long["reason"]
    print(f"projected {projected:.1f} s, reached {reached:.1f} s")
    assert abs(projected - reached) <= 0.2 * reached, (projected, reached, short["reason"])
