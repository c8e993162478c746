"""The chat service behind a real HTTP server (aiohttp), in a process of its own.

    python -m scenarios.chat.server --db /tmp/chat.db --leaks registry,history,sessions
    python -m scenarios.chat.server --db /tmp/chat.db --fixed

It binds ``--host``/``--port`` (port 0: one the OS gives), prints ``listening on <port>`` on
a line of its own once it accepts connections, and serves:

* ``POST /message`` -- a JSON body ``{"user", "tenant", "conversation_id", "text"}``, handled
  by :meth:`ChatService.handle_message`; answers ``{"message_id", "reply_chars"}``;
* ``GET /health`` -- ``ok``, for readiness checks;
* ``GET /stats`` -- :meth:`ChatService.stats` as JSON, with the process's allocated blocks.

The service runs on a simulated clock, advanced by ``--seconds-per-request`` (5 s, as the
in-process workload does) at every message, so its TTLs behave as in the in-process soaks.
Before it listens it serves ``--prewarm`` steps of an in-process :class:`Workload`
(``--requests-per-step`` each; ``--seed`` and ``--workload`` build it). A client that builds
the same workload and skips as many requests continues the same traffic: a FIXED service is at its steady state by then (see ``scenarios/conftest.py``).
SIGTERM and SIGINT stop it cleanly (the service is closed, its database flushed).

Every ``--trim-every`` clock seconds (30 min, the service's cleanup interval) the server
returns the memory it freed to the OS with glibc's ``malloc_trim(0)``, as long-running Python
services under glibc often do. Without it, this server's RSS crept up by ~75 B a request over
150,000 requests while its Python heap stayed flat (2.4 MiB in 30,000 requests; a
``malloc_trim`` gave it all back): glibc keeps freed chunks inside its heap, which a request
mix of short-lived buffers and long-lived messages fragments. An in-process ChatService under
the same workload does not creep. Both variants trim, so they differ by the leaks alone.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .config import PATTERNS, ChatConfig
from .service import ChatService
from .workload import Workload


def build_app(service: ChatService, workload: Workload, seconds_per_request: float, trim_every: float) -> web.Application:
    trim = _malloc_trim() if trim_every > 0 else None
    next_trim = workload.clock() + trim_every

    async def message(request: web.Request) -> web.Response:
        nonlocal next_trim
        try:
            body = await request.json()
            fields = (body["user"], body["tenant"], body["conversation_id"], body["text"])
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"expected user, tenant, conversation_id and text: {exc}") from None
        now = workload.clock.advance(seconds_per_request)
        reply = service.handle_message(*fields)
        if trim is not None and now >= next_trim:
            trim(0)
            next_trim = now + trim_every
        return web.json_response({"message_id": reply.message_id, "reply_chars": len(reply.text)})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({**service.stats().as_dict(), "heap_blocks": sys.getallocatedblocks()})

    app = web.Application()
    app.add_routes([web.post("/message", message), web.get("/health", health), web.get("/stats", stats)])
    return app


async def serve(args: argparse.Namespace) -> None:
    config = ChatConfig.fixed() if args.fixed else ChatConfig.leaky_only(*args.leaks)
    workload = Workload(seed=args.seed, **args.workload)
    service = ChatService(config, args.db, clock=workload.clock)
    try:
        for _ in range(args.prewarm):
            workload.step(service, args.requests_per_step)
        app = build_app(service, workload, args.seconds_per_request, args.trim_every)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()
    finally:
        service.close()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scenarios.chat.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="the service's sqlite database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a port the OS gives (printed)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--fixed", action="store_true", help="every pattern FIXED")
    which.add_argument(
        "--leaks", type=lambda v: [p for p in v.split(",") if p], help=f"LEAKY patterns, of {', '.join(PATTERNS)}"
    )
    parser.add_argument("--prewarm", type=int, default=0, help="steps of the workload served before listening")
    parser.add_argument("--requests-per-step", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workload", type=json.loads, default={}, help="keywords of Workload, as JSON")
    parser.add_argument("--seconds-per-request", type=float, default=5.0)
    parser.add_argument(
        "--trim-every", type=float, default=1800.0, help="clock seconds between malloc_trim(0) calls; 0: never"
    )
    args = parser.parse_args(argv)
    unknown = [p for p in (args.leaks or []) if p not in PATTERNS]
    if unknown:
        parser.error(f"unknown pattern(s) {', '.join(unknown)}; expected some of {', '.join(PATTERNS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
