"""Property: any query string or path segment, sent over real HTTP, gets a 2xx or a 4xx in the error shape.

The parsers are tested directly in test_params.py; this sends the same kind
of arbitrary text through aiohttp's own URL decoding and routing to the
handlers, on a loopback server running in a thread of its own, so each
example is one real request.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from drop_explainer.api import params, routes
from drop_explainer.api.peers import Peers
from drop_explainer.cli import example_state_path
from drop_explainer.cluster.loading import load_state
from drop_explainer.policy.engine import Engine
from drop_explainer.settings import PeerSettings
from drop_explainer.sinks.store import DropStore


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started = threading.Event()
    runner: list[web.AppRunner] = []
    store: list[DropStore] = []

    async def start() -> None:
        engine = Engine(load_state(example_state_path()))
        peers = Peers(PeerSettings("single", {}, "drop-explainer", {}, 8080, 1.0), "node-2", lambda: engine.state)
        store.append(DropStore(":memory:"))  # sqlite objects stay in the thread that made them
        ctx = routes.Context(engine=lambda: engine, store=store[0], peers=peers, registry=CollectorRegistry(),
                             ready=lambda: (True, "ok"), healthy=lambda: (True, "ok"))
        runner.append(web.AppRunner(routes.make_app(ctx), handle_signals=False, access_log=None))
        await runner[0].setup()
        site = web.TCPSite(runner[0], "127.0.0.1", 0)
        await site.start()
        ready.append(runner[0].addresses[0][1])
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(20)
    try:
        yield ready[0]
    finally:
        async def stop() -> None:
            await runner[0].cleanup()
            store[0].close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
        loop.close()


def request(port: int, target: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", target, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


ODD = ["inf", "nan", "-0", "1764800000000", "\u00b2", "\u0665", "15m", "1e400", "", " 5", "5\n", "99999999999d",
       "9999-12-31T23:59:59Z", "backend/default-deny", "frontend/pod-a", "8080", "tcp", "\u017fctp"]
VALUES = st.sampled_from(ODD) | st.text(max_size=60)
FILTER_KEYS = sorted(params.FILTERS | params.COMMON)
ROUTES = {"/drops": FILTER_KEYS, "/pods/{s}/drops": [*FILTER_KEYS, "namespace"],
          "/namespaces/{s}/drops": FILTER_KEYS, "/namespaces/{s}/pods/{s}/drops": FILTER_KEYS,
          "/policies/{s}/{s}/drops": [k for k in FILTER_KEYS if k != "policy"], "/drops/{s}": sorted(params.COMMON),
          "/whatif": ["from", "to", "port", "protocol", "format"]}


CONCRETE = {"/drops": "/drops", "/pods/{s}/drops": "/pods/pod-b/drops",
            "/namespaces/{s}/drops": "/namespaces/backend/drops",
            "/namespaces/{s}/pods/{s}/drops": "/namespaces/backend/pods/pod-b/drops",
            "/policies/{s}/{s}/drops": "/policies/backend/default-deny/drops", "/drops/{s}": "/drops/0123456789abcdef",
            "/whatif": "/whatif"}
WHATIF_BASE = {"from": "frontend/pod-a", "to": "backend/pod-b", "port": "8080"}


@st.composite
def requests(draw: st.DrawFn) -> str:
    """A route, a path segment, one of the route's own parameters with an arbitrary value (so that value
    reaches its parser), and sometimes a few arbitrary pairs more."""
    path = draw(st.sampled_from(sorted(ROUTES)))
    segment = draw(st.sampled_from(["pod-b", "backend", "0123456789abcdef"]) | st.text(min_size=1, max_size=40))
    key = draw(st.sampled_from(ROUTES[path]))
    query = {**(WHATIF_BASE if path == "/whatif" else {}), key: draw(VALUES)}
    extra = draw(st.lists(st.tuples(st.sampled_from(ROUTES[path]) | st.text(max_size=8), VALUES), max_size=2))
    target = path.replace("{s}", urllib.parse.quote(segment, safe=""))
    return f"{target}?{urllib.parse.urlencode([*query.items(), *extra])}"


def _check(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, body[:500]
    assert content_type.startswith("application/json")
    if status >= 400:
        assert set(json.loads(body)) <= {"error", "candidates"}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests())
def test_any_request_is_answered_below_500_in_the_documented_shape(port: int, target: str) -> None:
    _check(*request(port, target))


def test_every_odd_value_in_every_parameter_of_every_route(port: int) -> None:
    """The odd values of issue 12 and their kin, each alone in each parameter of each route: none is a 5xx."""
    sent = 0
    for path, keys in ROUTES.items():
        target = CONCRETE[path]
        for key in keys:
            for value in ODD:
                query = {**(WHATIF_BASE if path == "/whatif" else {}), key: value}
                _check(*request(port, f"{target}?{urllib.parse.urlencode(query)}"))
                sent += 1
    assert sent == sum(len(k) for k in ROUTES.values()) * len(ODD)
