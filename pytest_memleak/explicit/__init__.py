"""Explicit checks a test makes itself: snapshots and their comparison, the fixtures, ``mem_watch``."""
