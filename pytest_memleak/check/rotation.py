"""Which tests a budgeted session lets rest, or draws first, so that over sessions the credit
reaches every test.

Under a cost budget a session checks the tests its credit reaches, in the suite's order: the
same first ones each time, and never the rest. With pytest's cache (``.pytest_cache``, kept
between local runs and by CI jobs that keep it), each session records the tests it checked
clean. A later session lets a test rest while it was checked clean within the last ``rest``
sessions, where ``rest`` is how many sessions, at the last one's coverage, check every test
once; the credit goes to the tests checked longest ago or never. A test that leaked, ended
inconclusive or failed is never rested, nor one marked ``memleak``. A test that leaked is
checked again in the next sessions whatever the credit (and charged), until it is checked
clean: a leak found once keeps failing its test, instead of passing whenever the credit does
not reach it.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_memleak.results import CLEAN, LEAK, NO_VERDICT

KEY = "memleak/rotation"
MAX_REST = 20  # sessions a clean check rests for at the most
DRAW_SPREAD = 4.0  # a test drawn last needs this much more credit than its check (1 + DRAW_SPREAD times it)


def today() -> int:
    """The day of the draw: the UTC date's ordinal."""
    return datetime.datetime.now(datetime.timezone.utc).date().toordinal()


def draw(nodeid: str, day: int) -> float:
    """A test's place in the day's draw, from 0 (first) to 1 (last), the same all day.

    A session without the rotation's history (no pytest cache, or a fresh one: a CI job from a
    clean checkout) would spend its credit on the same tests every time. Instead, while the
    credit is short, a test's check waits for ``1 + DRAW_SPREAD * draw`` times the credit it
    needs: the tests drawn first get the credit, and the draw changes every day. With credit to
    spare every test is checked, as before.
    """
    digest = hashlib.blake2b(f"{day}:{nodeid}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class Rotation:
    session: int = 1  # this session's number
    checked: dict[str, int] = field(default_factory=dict)  # nodeid -> the session that last checked it clean
    rest: int = 1  # sessions a clean check counts for (1: none rests)
    leaked: dict[str, int] = field(default_factory=dict)  # nodeid -> the session that last found it leaking

    @classmethod
    def load(cls, cache: Any) -> Rotation:
        """This session's rotation from the cache; a fresh one when it holds none (or something
        else under the key: the cache is a convenience, never a reason to stop)."""
        data = cache.get(KEY, None)
        try:
            checked = {str(k): int(v) for k, v in data["checked"].items()}
            leaked = {str(k): int(v) for k, v in data.get("leaked", {}).items()}
            return cls(int(data["session"]) + 1, checked, max(1, min(MAX_REST, int(data["rest"]))), leaked)
        except (TypeError, KeyError, ValueError, AttributeError):
            return cls()

    def resting(self, nodeid: str) -> int | None:
        """Sessions since ``nodeid`` was checked clean, when it rests in this one; else None."""
        last = self.checked.get(nodeid)
        if last is None:
            return None
        ago = self.session - last
        return ago if 0 < ago < self.rest else None

    @property
    def fresh(self) -> bool:
        """No earlier session is recorded: nothing rests, and the day's draw orders the credit."""
        return self.session == 1 and not self.checked

    def relapse(self, nodeid: str) -> bool:
        """Whether ``nodeid`` leaked in an earlier session and has not been checked clean since."""
        return nodeid in self.leaked

    def save(self, cache: Any, results: Iterable[Mapping[str, Any]]) -> None:
        """Record this session: its clean checks, and the rest that covers every test at its pace."""
        tests = checked = 0
        for data in results:
            tests += 1
            nodeid, status = data["nodeid"], data["status"]
            if status == LEAK:
                self.leaked[nodeid] = self.session
            elif status == CLEAN:
                self.leaked.pop(nodeid, None)
            if status == CLEAN:
                self.checked[nodeid] = self.session
            elif status != NO_VERDICT or not data.get("over_budget"):
                self.checked.pop(nodeid, None)  # a leak, an inconclusive or a failed test goes first next time
            checked += status != NO_VERDICT
        if tests:
            self.rest = max(1, min(MAX_REST, math.ceil(tests / max(1, checked))))
        cache.set(KEY, {"session": self.session, "checked": self.checked, "rest": self.rest, "leaked": self.leaked})
