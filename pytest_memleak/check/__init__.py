"""Where a test is checked: the session's hooks, the re-runs, the counters they read, and ``deciding``, where every verdict is made."""
