"""The OpenAPI document and the routes cannot drift apart."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from drop_explainer.api import params, routes
from drop_explainer.api.openapi import document
from drop_explainer.api.peers import Peers
from drop_explainer.cli import example_state_path
from drop_explainer.cluster.loading import load_state
from drop_explainer.policy.engine import Engine
from drop_explainer.settings import PeerSettings
from drop_explainer.sinks.store import DropStore


def test_every_route_is_described_and_nothing_else() -> None:
    """The paths of /openapi.json are exactly the paths the server routes."""
    assert set(document()["paths"]) == set(routes.ROUTES)


@pytest.fixture
async def client() -> TestClient:  # type: ignore[type-arg]
    engine = Engine(load_state(example_state_path()))
    peers = Peers(PeerSettings("single", {}, "drop-explainer", {}, 8080, 1.0), "node-2", lambda: engine.state)
    ctx = routes.Context(engine=lambda: engine, store=DropStore(":memory:"), peers=peers,
                         registry=CollectorRegistry(), ready=lambda: (True, "ok"), healthy=lambda: (True, "ok"))
    async with TestClient(TestServer(routes.make_app(ctx))) as c:
        yield c


async def test_every_documented_query_parameter_is_accepted(client: TestClient) -> None:  # type: ignore[type-arg]
    """Each documented query parameter, given a valid value, is never refused as unknown."""
    valid = {"since": "15m", "until": "1m", "direction": "ingress", "policy": "backend/default-deny",
             "trap": "kubelet-probe", "limit": "5", "format": "json", "scope": "local", "namespace": "backend",
             "from": "frontend/pod-a", "to": "backend/pod-b", "port": "8080", "protocol": "TCP"}
    fill = {"pod": "pod-b", "namespace": "backend", "name": "default-deny", "id": "0123456789abcdef"}
    for path, item in document()["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], path)
        for p in item["get"].get("parameters", []):
            if p["in"] != "query":
                continue
            required = {"from": "frontend/pod-a", "to": "backend/pod-b", "port": "8080"} if path == "/whatif" else {}
            resp = await client.get(concrete, params={**required, p["name"]: valid[p["name"]]})
            assert "unknown parameter" not in await resp.text(), (path, p["name"])
            assert resp.status in (200, 404), (path, p["name"], await resp.text())


def test_limits_are_bounded_so_responses_are_bounded() -> None:
    """limit has a hard maximum; the default is small."""
    with pytest.raises(params.BadRequest):
        params.limit(str(params.MAX_LIMIT + 1))
    assert params.limit(None) == params.DEFAULT_LIMIT <= params.MAX_LIMIT
