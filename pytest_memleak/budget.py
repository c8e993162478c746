"""The session's cost budget: how much time the screens may add to the suite's own.

Most of a suite is clean, and what a clean test costs is its screen: the repeated runs that
show no growth. ``memleak_budget = 0.5`` lets the screens spend, over the session so far, half
as long as the suite's own work took (its tests' own runs, collection and pytest's reporting:
the session's time less the checker's), plus :data:`FLOOR` seconds. A clean suite then takes
about 1.5 times as long as without the plugin at the most, whatever its tests are like.

The credit is spent in the order the tests come: a quick test costs less than it earns, and
what is left pays for the screen of a slow one. A test is screened when the credit pays for
two of its own runs (what a clean test's screen takes); a screen once started ends as it
would without a budget (its stretches are bounded by the test's own time), so the credit may
go below zero for a while. A test the credit does not reach is left unchecked, its own outcome
standing, and the report counts it (:func:`deciding.not_reached`). ``none`` checks every test,
for a nightly job.

A test whose growth persisted through its screen (a suspect) is followed within its own bound
(``confirm_seconds``, a few of its runs), outside the budget: that is where the evidence is
worth its cost. Tests marked ``memleak`` were asked for by name: they are checked whatever the
credit. Neither is charged, nor counted as the suite's own time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

FLOOR = 0.5  # seconds of screening a session of a few tests may spend beyond its share: its slow tests are screened
FEW = 20  # tests in a session that gets all of FLOOR; a session of n more gets FLOOR * FEW / n
START_RUNS = 2  # a test is screened when the credit pays for this many of its own runs (a clean one takes two stretches)
START_MIN = 0.001  # ... and this much (a quick test's counter reads)


@dataclass
class CostBudget:
    share: float | None  # the screens' time over the suite's own; None: no budget
    tests: int = 0  # tests the session checks (collected): the floor is a small session's
    began: float = field(default_factory=time.perf_counter)
    charged: float = 0.0  # screening charged to the budget
    exempt: float = 0.0  # suspects' and marked tests' checking: neither charged nor the suite's own time

    def credit(self, now: float | None = None) -> float:
        """Seconds the screens may still spend at ``now`` (a perf_counter time; ``inf`` without a budget)."""
        if self.share is None:
            return float("inf")
        own = (time.perf_counter() if now is None else now) - self.began - self.charged - self.exempt
        return self.floor + self.share * own - self.charged

    @property
    def floor(self) -> float:
        return FLOOR * min(1.0, FEW / max(self.tests, 1))

    @staticmethod
    def needed(own_seconds: float) -> float:
        """The credit a test's screen needs before it starts."""
        return START_RUNS * own_seconds + START_MIN

    def book(self, seconds: float, charged: float) -> None:
        """A test's checking took ``seconds``, of which ``charged`` counts against the budget."""
        charged = min(max(charged, 0.0), seconds)
        self.charged += charged
        self.exempt += seconds - charged

    def describe(self) -> str:
        if self.share is None:
            return "no cost budget"
        return f"the cost budget (memleak_budget {self.share:g}: screens take {self.share:g} of the suite's own time, plus {self.floor:.2g} s)"
