"""Shared test configuration: hypothesis runs derandomized so CI never flakes on a new example."""

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=200)
settings.load_profile("ci")
