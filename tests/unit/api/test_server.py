"""The API socket's header deadline and connection cap, over real loopback connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from drop_explainer.api import routes, server
from drop_explainer.api.server import ServerLimits

WAIT_S = 20.0
"""Bound on every wait: generous for a loaded machine, and a hang still fails."""
BIG = 64 * 1024 * 1024
"""An answer larger than loopback's socket buffers on both sides."""


@dataclass
class Running:
    port: int
    limiter: server.ConnectionLimiter
    release: asyncio.Event
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer


@contextlib.asynccontextmanager
async def serving(limits: ServerLimits) -> AsyncIterator[Running]:
    """A small app through GuardedSite, with the daemon's error middleware; /slow and /metrics wait for release."""
    release = asyncio.Event()

    async def fast(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done\n")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG)

    app = web.Application(middlewares=[routes.errors])
    app.router.add_get("/big", big)
    app.router.add_get("/healthz", fast)
    app.router.add_get("/drops", fast)
    app.router.add_get("/slow", slow)
    app.router.add_get("/metrics", slow)
    make_limiter = server.guarded(app, limits)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    run = None
    try:
        site = server.GuardedSite(runner, "127.0.0.1", 0, make_limiter(runner))
        await site.start()
        assert site.bound_port is not None
        run = Running(site.bound_port, site.limiter, release)
        yield run
    finally:
        release.set()
        for w in run.writers if run else ():
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        await runner.cleanup()


async def until(check: Callable[[], object]) -> None:
    """Poll until check() is true; fail after WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def get(port: int, path: str, **headers: str) -> tuple[int, bytes]:
    """One GET on a fresh connection, read to the end (Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), WAIT_S)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (EOF or reset) before WAIT_S."""
    try:
        await asyncio.wait_for(reader.read(), WAIT_S)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


async def test_a_client_that_never_finishes_its_headers_is_cut_off() -> None:
    """Slow loris: one header byte at a time, forever. The deadline is from the start, not the last byte."""
    async with serving(ServerLimits(header_timeout_s=0.5, max_connections=16)) as run:
        reader, writer = await run.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.05)

        dripping = asyncio.create_task(trickle())
        try:
            assert await closed_by_server(reader)
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dripping
        assert run.limiter.header_timeouts == 1
        assert await get(run.port, "/healthz") == (200, b"ok\n")
        assert len(run.limiter.open) == 0


async def test_a_silent_connection_and_an_idle_keepalive_one_are_closed() -> None:
    """No byte at all, or nothing after an answer: both closed after the deadline; the answer itself arrives."""
    async with serving(ServerLimits(header_timeout_s=0.5, max_connections=16)) as run:
        silent, _ = await run.connect()
        reader, writer = await run.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert head.startswith(b"HTTP/1.1 200")
        assert await closed_by_server(silent)
        assert await closed_by_server(reader)
        assert run.limiter.header_timeouts == 2


async def test_over_the_cap_the_longest_idle_connection_makes_room_for_a_probe() -> None:
    """Slow lorises holding every slot do not starve /healthz: the oldest idle one is closed for it."""
    async with serving(ServerLimits(header_timeout_s=600, max_connections=4)) as run:
        lorises = []
        for _ in range(4):
            reader, writer = await run.connect()
            writer.write(b"GET /drops HTTP/1.1\r\nHost: t\r\n")
            lorises.append(reader)
        await until(lambda: len(run.limiter.open) == 4)  # accepted by the server's loop, not only by the kernel
        assert await get(run.port, "/healthz") == (200, b"ok\n")
        assert run.limiter.evicted == 1
        assert await closed_by_server(lorises[0])
        assert len(run.limiter.open) <= 4


async def test_when_every_connection_is_busy_probes_still_answer_and_then_new_ones_are_refused() -> None:
    """All slots handling requests: a probe is still answered, other paths get a 503 in the error shape;
    past the probe reserve a connection is refused at once with 503."""
    async with serving(ServerLimits(header_timeout_s=600, max_connections=2)) as run:
        busy = []
        for _ in range(2):
            reader, writer = await run.connect()
            writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            busy.append(reader)
        await until(lambda: sum(g.busy for g in run.limiter.open) == 2)
        assert await get(run.port, "/healthz") == (200, b"ok\n")
        status, body = await get(run.port, "/drops", Accept="application/json")
        assert status == 503
        assert "too many connections" in json.loads(body)["error"]
        # Hold the whole probe reserve busy too (/metrics waits in this app), then one more is refused.
        for _ in range(server.PROBE_RESERVE):
            reader, writer = await run.connect()
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            busy.append(reader)
        await until(lambda: sum(g.busy for g in run.limiter.open) == 2 + server.PROBE_RESERVE)
        status, body = await get(run.port, "/healthz")
        assert status == 503
        assert body.startswith(b"error: too many connections")
        assert run.limiter.refused == 1
        run.release.set()
        for reader in busy:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
            assert head.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("argv", [["--api-header-timeout", "0"], ["--api-header-timeout", "nan"],
                                  ["--api-max-connections", "0"]])
def test_the_limits_are_settings_and_nonsense_is_refused(argv: list[str]) -> None:
    from drop_explainer import cli
    from drop_explainer.settings import SettingsError, from_args

    parser = cli.build_parser()
    good = from_args(parser.parse_args(["run", "--api-header-timeout", "2.5", "--api-max-connections", "9"]), env={})
    assert good.api == ServerLimits(2.5, 9)
    with pytest.raises(SettingsError, match="--api-"):
        from_args(parser.parse_args(["run", *argv]), env={})


async def test_a_malformed_request_is_a_400_and_no_error_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp answers a control byte in a header with 400; its ERROR-level traceback is kept out of the log."""
    async with serving(ServerLimits()) as run:
        reader, writer = await run.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Bad: \x01\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), WAIT_S)
        assert raw.split(b"\r\n", 1)[0].split()[1] == b"400"
        assert b"Traceback" not in raw
        assert await get(run.port, "/healthz") == (200, b"ok\n")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_client_that_stops_reading_is_cut_off_and_its_slot_freed(caplog: pytest.LogCaptureFixture) -> None:
    """Slow read: a large answer never read. The write deadline aborts it; the connection no longer counts."""
    async with serving(ServerLimits(header_timeout_s=600, max_connections=4, write_timeout_s=0.5)) as run:
        reader, writer = await run.connect()
        writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        await until(lambda: run.limiter.write_timeouts == 1)
        await until(lambda: not run.limiter.open)
        got = 0
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(1 << 20), WAIT_S):
                got += len(chunk)
        assert got < BIG
        assert await get(run.port, "/healthz") == (200, b"ok\n")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
