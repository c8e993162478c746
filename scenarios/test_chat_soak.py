"""The main soak job: every leak pattern of the chat service, LEAKY and FIXED.

``python -m pytest --memleak scenarios`` runs each chat test below twice, as a ``leaky`` and a
``fixed`` soak (see ``conftest.py``): the LEAKY variant must be caught (``expect_leak=True``),
the FIXED one must plateau (``expect_leak=False``); the run passes when every verdict matches.
Two more soaks: an idle control (the harness alone, flat) and the memory manager keeping a
leaky service bounded.
The ``memleak soak`` table at the end lists scenario, variant, verdict, growth per hour and the
projected time to the 500 MiB limit; every sample is in ``reports/soak/*.jsonl``.

Settings, from the seed write-ups (``000_f66e5d738d8e2a3e.txt`` to ``004_d099ed56d036631f.txt``): ``memory_limit`` is the 500 MiB of
seed 002's PM2 ``max_memory_restart``, the projection ``horizon`` is a day of service. Each
soak lasts 8 s (``--memleak-soak-duration`` overrides it, as the nightly job does) at a paced
2,000 requests per second, after a pre-warm of up to 500 steps of 50 requests that brings the
service to steady state (its TTL windows fill within ~30 steps, its RSS settles over a few
hundred); the first 30 % of each soak is left out of the fit as warm-up. ``conftest.py``
explains the pace, the pre-warm, the memory budget of the LEAKY variants and the run order.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.memleak_soak(
    duration="8s",
    sample_every="0.25s",
    memory_limit="500 MiB",  # seed 002: PM2 max_memory_restart '500M'
    horizon="24h",
    warmup="30%",
)


@pytest.mark.memleak_soak(expect_leak=False, scenario="harness", variant="idle")
def test_harness_idle():
    """The control: a soak of nothing but the pace (40 iterations a second, like the chat soaks).

    It shows what the soak runner itself adds to RSS and the heap (nothing), and it runs first:
    the first soak of a process sees the runner's own one-time warm-up as a staircase of
    single pages on RSS, which would otherwise land in the first FIXED soak's fit.
    """
    time.sleep(1 / 40)


@pytest.mark.chat("registry")
def test_registry(chat):
    """Seed 001: conversations kept forever; FIXED evicts those idle for 2 h every 30 min."""
    chat.step()


@pytest.mark.chat("history")
def test_history(chat):
    """Seed 001: every message kept in memory; FIXED keeps the last 50, older ones in sqlite."""
    chat.step()


@pytest.mark.chat("sessions")
def test_sessions(chat):
    """Seed 000: sessions never dropped nor synced; FIXED syncs, drops idle ones, caps at 500."""
    chat.step()


@pytest.mark.chat("tenant_cache", workload={"new_tenant_share": 1.0})
def test_tenant_cache(chat):
    """Seed 002: tenant configs cached forever; FIXED expires them after 5 min.

    A config is ~3 KB, and by default only one request in 25 brings a new tenant, too small a
    leak for a 10 s soak: here every churned user opens a new tenant (one request in 10).
    """
    chat.step()


@pytest.mark.chat("vector_store")
def test_vector_store(chat):
    """Seed 001: the vector store reloaded per request and every copy kept; FIXED loads once."""
    chat.step()


@pytest.mark.chat("queue")
def test_queue(chat):
    """Seed 002: the consumer pulls the whole backlog into memory; FIXED prefetches 5."""
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


@pytest.mark.chat("vector_store", "embeddings", variants=["managed"], rate=4_000)
@pytest.mark.memleak_soak(warmup="40%", scenario="memory_manager")
def test_memory_manager(chat):
    """Seeds 003/004: the leaky loads under a MemoryManager that warns, cleans up, then refuses.

    The vector store and embedding leaks grow from a cold start until the manager (on its own
    thread, every 50 ms) reaches warning at +20 MiB (its cleanup hooks run) and then critical
    at +30 MiB, where it refuses new model and batch loads: memory stays bounded, so no leak is
    expected. At ~3,000 requests per second the climb takes ~1.5 s, well inside the 40 %
    warm-up. The fixture checks at teardown that the manager did clean up and refuse loads.
    """
    chat.step()


# 400 requests a second: ~0.5 ms a round trip, ~20 % of a core on each side
@pytest.mark.chat("registry", "history", "sessions", max_rate=400)
@pytest.mark.memleak_soak(watch="chat_server_process", scenario="http_service")
def test_http_service(chat_http, chat_server_process):
    """Seeds 000/001: the chat service as a real HTTP server (aiohttp) in its own process.

    The soak watches the server's process, not pytest's: it samples the server's RSS (and
    its children's), and its guard and projection are the server's. The body sends real POST
    requests; LEAKY keeps conversations, histories and sessions forever, FIXED bounds them.
    """
    chat_http.step()
