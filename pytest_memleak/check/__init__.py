"""Where a test is checked: the session's hooks, pytest's side of the check (``protocol``), the re-runs, the counters they read, and ``deciding``, where every verdict is made."""
