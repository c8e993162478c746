"""The main soak job: every leak pattern of the chat service, LEAKY and FIXED.

``python -m pytest --memleak scenarios`` runs each test below twice, as a ``leaky`` and a
``fixed`` soak (see ``conftest.py``): the LEAKY variant must be caught (``expect_leak=True``),
the FIXED one must plateau (``expect_leak=False``); the run passes when every verdict matches.
The ``memleak soak`` table at the end lists scenario, variant, verdict, growth per hour and the
projected time to the 500 MiB limit; every sample is in ``reports/soak/*.jsonl``.

Settings, from the seed write-ups (``/work/shared/seeds``): ``memory_limit`` is the 500 MiB of
seed 002's PM2 ``max_memory_restart``, the projection ``horizon`` is a day of service. Each
soak lasts 10 s (``--memleak-soak-duration`` overrides it, as the nightly job does) at a paced
2,500 requests per second (``conftest.py`` explains the pace, the memory budget of the LEAKY
variants and the order of the run). A FIXED service is brought to steady state before its
soak starts (500 steps of 50 requests: its TTL windows fill in ~30 steps, its RSS settles over
a few hundred), and the first 30 % of each soak is left out of the fit as warm-up.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.soak(
    duration="10s",
    sample_every="0.25s",
    memory_limit="500 MiB",  # seed 002: PM2 max_memory_restart '500M'
    horizon="24h",
    warmup="30%",
)


@pytest.mark.chat("registry")
def test_registry(chat):
    """Seed 001: conversations kept forever; FIXED evicts those idle for 2 h every 30 min."""
    chat.step()


@pytest.mark.chat("history", rate=5_000)
def test_history(chat):
    """Seed 001: every message kept in memory; FIXED keeps the last 50, older ones in sqlite.

    Twice the usual request rate: the leak is made of small Python objects, and the first
    ~20 MiB of it land in pages the soaks before it freed but the process still holds, so RSS
    only shows it once it outgrows them.
    """
    chat.step()


@pytest.mark.chat("sessions")
def test_sessions(chat):
    """Seed 000: sessions never dropped nor synced; FIXED syncs, drops idle ones, caps at 500."""
    chat.step()


@pytest.mark.chat("tenant_cache", rate=10_000)
def test_tenant_cache(chat):
    """Seed 002: tenant configs cached forever; FIXED expires them after 5 min.

    Only one request in 25 brings a new tenant (~0.1-0.2 KiB retained per request), so this
    soak serves up to four times the usual request rate (10,000/s, or as many as the machine
    can) to make the leak plain.
    """
    chat.step()


@pytest.mark.chat("vector_store")
def test_vector_store(chat):
    """Seed 001: the vector store reloaded per request and every copy kept; FIXED loads once."""
    chat.step()


@pytest.mark.chat("queue", rate=5_000)
def test_queue(chat):
    """Seed 002: the consumer pulls the whole backlog; FIXED prefetches 5.

    A small leak per request (~0.3 KiB of buffered jobs): twice the usual request rate.
    """
    chat.step()


@pytest.mark.chat("embeddings")
def test_embeddings(chat):
    """Seed 004: whole batches at once, native buffers never freed; FIXED frees per chunk."""
    chat.step()


@pytest.mark.chat("connections")
def test_connections(chat):
    """Seeds 001/002: a new sqlite connection (fd + page cache) per 100 requests, never closed."""
    chat.step()


@pytest.mark.chat()  # no pattern named: all of them
def test_all_patterns(chat):
    """Every pattern at once (``ChatConfig.leaky()``) against every fix (``ChatConfig.fixed()``)."""
    chat.step()


@pytest.mark.chat("vector_store", "embeddings", variants=["managed"], rate=5_000)
@pytest.mark.soak(warmup="40%")
def test_memory_manager(chat):
    """Seeds 003/004: the leaky loads under a MemoryManager that warns, cleans up, then refuses.

    The vector store and embedding leaks grow until the manager (on its own thread, every
    50 ms) reaches warning at +20 MiB (cleanup hooks run) and then critical at +30 MiB, where
    it refuses new model and batch loads: memory stays bounded, so no leak is expected. At
    twice the usual rate the climb takes ~1-2 s, well inside the 40 % warm-up. The fixture
    checks at teardown that the manager did clean up and refuse loads.
    """
    chat.step()
