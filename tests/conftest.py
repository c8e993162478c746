"""Shared test configuration: hypothesis runs derandomized so CI never flakes on a new example,
and the inner pytest runs keep their tests in order (pytest-randomly, a test extra, would shuffle
them; its own test turns it back on)."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=200)
settings.load_profile("ci")

NO_RANDOMLY = "-p no:randomly"
# for the inner runs this process starts itself (the outer run has it in its addopts)
os.environ["PYTEST_ADDOPTS"] = f"{os.environ.get('PYTEST_ADDOPTS', '')} {NO_RANDOMLY}".strip()


@pytest.fixture(autouse=True)
def _inner_runs_in_order(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester drops PYTEST_ADDOPTS when it is set up: its inner runs get it back."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")
        monkeypatch.setenv("PYTEST_ADDOPTS", NO_RANDOMLY)
