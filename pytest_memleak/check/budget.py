"""The session's cost budget: how much time the checker may add to the suite's own.

``memleak_budget = 0.3`` lets the checker spend, over the session so far, 0.3 of the suite's
own time (its tests' own runs, collection and pytest's reporting: the session's time less the
checker's), plus a floor: :data:`FLOOR` seconds in a session of up to :data:`FEW` tests (a file
a developer runs), falling with the cube of the session's size beyond (a suite pays its own
way: a suite of 200 tests that takes 0.1 s would otherwise spend its floor, twice its own time). A suite then takes about 1.3 times as long as without the plugin, whatever its tests are like, with one exception: a suspect
(growth that persisted through its whole screen) is always followed, and charged: within its
own bound or what the credit has left, whichever is shorter, but 0.5 s at the least
(``runner.MIN_SUSPECT_SECONDS``), so a quick test's real leak is confirmed however little
credit is left, and a suspect that turns out a fill cannot spend the checks of the tests after it.

The credit is spent in the order the tests come: a quick test costs less than it earns, and
what is left pays for the screen of a slow one. A test is screened when the credit pays for
two of its own runs (what a clean test's screen takes); a check once started ends as it would
without a budget, so the credit may go below zero for a while. A test the credit does not
reach is left unchecked, its own outcome standing, and the report counts it
(:func:`deciding.not_reached`); once the credit is spent, a test runs through pytest's own
protocol, as if the plugin were not there. ``none`` checks every test, for a nightly job. Tests
marked ``memleak`` were asked for by name: they are checked whatever the credit, and their
checking is neither charged nor counted as the suite's own time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

FLOOR = 30.0  # seconds of checking a session of a few tests may spend beyond its share: its suspects are settled
FEW = 20  # tests in a session that gets all of FLOOR; a session of n more gets FLOOR * (FEW / n) ** 3 (0.24 s for 100)
START_RUNS = 2  # a test is screened when the credit pays for this many of its own runs (a clean one takes two stretches)
START_MIN = 0.001  # ... and this much (a quick test's counter reads)


@dataclass
class CostBudget:
    share: float | None  # the checker's time over the suite's own; None: no budget
    tests: int = 0  # tests the session checks (collected): the floor is a small session's
    began: float = field(default_factory=time.perf_counter)
    charged: float = 0.0  # checking charged to the budget
    exempt: float = 0.0  # marked tests' checking: neither charged nor the suite's own time

    def credit(self, now: float | None = None) -> float:
        """Seconds the checker may still spend at ``now`` (a perf_counter time; ``inf`` without a budget)."""
        if self.share is None:
            return float("inf")
        own = (time.perf_counter() if now is None else now) - self.began - self.charged - self.exempt
        return self.floor + self.share * own - self.charged

    @property
    def floor(self) -> float:
        return FLOOR * min(1.0, FEW / max(self.tests, 1)) ** 3

    @staticmethod
    def needed(own_seconds: float) -> float:
        """The credit a test's check needs before it starts."""
        return START_RUNS * own_seconds + START_MIN

    def book(self, seconds: float, exempt: bool = False) -> None:
        """A test's checking took ``seconds``: charged, or ``exempt`` (a test marked memleak)."""
        if exempt:
            self.exempt += seconds
        else:
            self.charged += seconds

    def describe(self) -> str:
        if self.share is None:
            return "no cost budget"
        return f"the cost budget (memleak_budget {self.share:g}: checking takes {self.share:g} of the suite's own time, plus {self.floor:.2g} s)"
