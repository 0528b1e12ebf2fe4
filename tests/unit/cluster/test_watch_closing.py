"""A watch closes its HTTP response on every way out, before it asks again and when it is stopped.

A response left open holds its connection for as long as the daemon's one
session lives (forever), and is reported only when the garbage collector
finds it ("unclosed transport" / "Unclosed response"), in whichever test
happens to be running then. So the invariant is checked where it matters:
at the start of every request, every earlier response of the session is
closed; and after the watch is closed or cancelled, all are, and a
garbage-collection pass finds nothing unclosed (warnings are errors here).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_watching import PATHS, FakeApiServer, Reply, Stream, lines, recorded

from drop_explainer.cluster import kubeapi, watching

NODES = kubeapi.RESOURCE_BY_KIND["Node"]
FAST = watching.WatchSettings(timeout_s=5, backoff_initial_s=0.01, backoff_max_s=0.02, short_watch_s=0.0)
STATUS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}


@dataclass
class Responses:
    """Every response of one session, and whether all earlier ones were closed when each request began."""

    seen: list[aiohttp.ClientResponse] = field(default_factory=list)
    open_at_request: list[int] = field(default_factory=list)
    trace: aiohttp.TraceConfig = field(default_factory=aiohttp.TraceConfig)

    def __post_init__(self) -> None:
        self.trace.on_request_start.append(self._start)
        self.trace.on_request_end.append(self._end)

    async def _start(self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
        self.open_at_request.append(sum(not r.closed for r in self.seen))

    async def _end(self, session: aiohttp.ClientSession, ctx: SimpleNamespace,
                   params: aiohttp.TraceRequestEndParams) -> None:
        self.seen.append(params.response)

    def still_open(self) -> int:
        return sum(not r.closed for r in self.seen)


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    """test_watching's replay server of recorded kube-apiserver answers, on loopback."""
    server = FakeApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        server.closing.set()
        await runner.cleanup()


@pytest.fixture
async def traced(api: FakeApiServer) -> AsyncIterator[tuple[kubeapi.Client, Responses]]:
    responses = Responses()
    async with kubeapi.Client(kubeapi.Endpoint.with_token(api.url, "t0ken"), trace_configs=[responses.trace]) as c:
        yield c, responses


def status(code: int, reason: str) -> bytes:
    return json.dumps(STATUS | {"code": code, "reason": reason, "message": reason}).encode()


def gone_event() -> bytes:
    return json.dumps({"type": "ERROR", "object": STATUS | {"code": 410, "reason": "Expired",
                                                            "message": "too old resource version"}}).encode()


def script(api: FakeApiServer, first: Stream | Reply, *, relist: bool = False) -> None:
    """A list, one watch ending the way under test, then (after a relist if it needs one) a watch that stays open."""
    nodes = PATHS["Node"]
    api.lists[nodes].append(Reply(200, recorded("sync/nodes.json")))
    if relist:
        api.lists[nodes].append(Reply(200, recorded("sync/nodes.json")))
    api.watches[nodes].append(first)


WATCH = lines("sync/nodes.watch.jsonl")
WAYS_OUT = [
    pytest.param(Stream(WATCH[:1]), False, id="the-server-ends-the-watch"),
    pytest.param(Stream(WATCH[:1], end="abort"), False, id="the-connection-breaks-mid-stream"),
    pytest.param(Stream([*WATCH[:1], gone_event()]), True, id="an-error-event-410-mid-stream"),
    pytest.param(Reply(410, status(410, "Expired")), True, id="http-410"),
    pytest.param(Reply(500, status(500, "InternalError")), False, id="http-500"),
    pytest.param(Stream([b"{not json"]), False, id="a-line-that-is-not-json"),
    pytest.param(Stream([json.dumps({"type": "ADDED"}).encode()]), False, id="an-event-without-an-object"),
]


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


@dataclass
class Consumer:
    """Reads a watch in a task, as LiveState does; ``stop()`` cancels it as the daemon's shutdown does."""

    stream: AsyncIterator[watching.WatchEvent | watching.Mark]
    items: list[watching.WatchEvent | watching.Mark] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.stream:
            self.items.append(item)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])


@pytest.mark.parametrize(("first", "relist"), WAYS_OUT)
async def test_each_way_a_watch_ends_closes_its_response_before_the_next_request(
    api: FakeApiServer, traced: tuple[kubeapi.Client, Responses], first: Stream | Reply, relist: bool
) -> None:
    """The ended watch's response is closed when the retry (or relist) starts, and the open one when we stop."""
    client, responses = traced
    script(api, first, relist=relist)
    requests = 4 if relist else 3  # list, watch, (list,) watch
    consumer = Consumer(watching.watch_objects(client, NODES, settings=FAST))
    try:
        # The retry's watch is open, and stays open: nothing more is scripted.
        await until(lambda: len(responses.seen) == requests)
    finally:
        await consumer.stop()
    assert len(api.watch_requests("Node")) == 2
    assert responses.open_at_request == [0] * requests
    assert responses.still_open() == 0
    gc.collect()  # an unclosed transport or response would warn here, and warnings are errors


async def test_a_read_timeout_closes_the_silent_response(
    api: FakeApiServer, traced: tuple[kubeapi.Client, Responses]
) -> None:
    """A watch silent past its read timeout (a dead connection that never closes) is closed, then retried."""
    client, responses = traced
    settings = watching.WatchSettings(timeout_s=0, read_margin_s=0.2, backoff_initial_s=0.01, backoff_max_s=0.02)
    script(api, Stream([], end="hang"))
    consumer = Consumer(watching.watch_objects(client, NODES, settings=settings))
    try:
        await until(lambda: watching.Mark.DISCONNECTED in consumer.items and len(responses.seen) >= 3)
    finally:
        await consumer.stop()
    assert responses.open_at_request == [0] * len(responses.open_at_request)
    assert responses.still_open() == 0
    gc.collect()


async def test_cancelling_a_watch_that_waits_for_events_closes_its_response(
    api: FakeApiServer, traced: tuple[kubeapi.Client, Responses]
) -> None:
    """The daemon's shutdown cancels the watch task mid-read: the open response is closed, nothing left."""
    client, responses = traced
    script(api, Stream([], end="hang"))
    consumer = Consumer(watching.watch_objects(client, NODES, settings=FAST))
    try:
        await until(lambda: watching.Mark.LISTED in consumer.items and len(responses.seen) == 2)
        assert responses.still_open() == 1  # the watch, waiting
    finally:
        await consumer.stop()
    assert responses.still_open() == 0
    gc.collect()
