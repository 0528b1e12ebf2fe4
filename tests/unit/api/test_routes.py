"""Routing questions about a pod by name: ambiguity, absence, and the text/JSON choice."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from drop_explainer.api import routes
from drop_explainer.api.peers import Peers
from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy.engine import Engine
from drop_explainer.settings import PeerSettings
from drop_explainer.sinks.store import DropStore

STATE = """
apiVersion: v1
kind: List
items:
- {kind: Pod, metadata: {name: web, namespace: shop}, status: {phase: Running, podIP: 10.0.0.1}}
- {kind: Pod, metadata: {name: web, namespace: blog}, status: {phase: Running, podIP: 10.0.0.2}}
- {kind: Pod, metadata: {name: api, namespace: shop}, status: {phase: Running, podIP: 10.0.0.3}}
"""


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    engine = Engine(ClusterState.build(parse_documents("state", STATE)))
    peers = Peers(PeerSettings("single", {}, "drop-explainer", {}, 8080, 1.0), "n1", lambda: engine.state)
    ctx = routes.Context(engine=lambda: engine, store=DropStore(":memory:"), peers=peers,
                         registry=CollectorRegistry(), ready=lambda: (True, "ok"), healthy=lambda: (True, "ok"))
    async with TestClient(TestServer(routes.make_app(ctx))) as c:
        yield c


async def test_a_pod_name_in_two_namespaces_is_a_409_listing_them(client: TestClient) -> None:  # type: ignore[type-arg]
    """/pods/web/drops cannot guess: it names the candidates and how to choose."""
    resp = await client.get("/pods/web/drops", headers={"Accept": "application/json"})
    assert resp.status == 409
    body = await resp.json()
    assert body["candidates"] == ["blog", "shop"]
    assert "?namespace=" in body["error"]


async def test_namespace_parameter_resolves_the_ambiguity(client: TestClient) -> None:  # type: ignore[type-arg]
    """With ?namespace= the same question is answered (no drops recorded yet)."""
    resp = await client.get("/pods/web/drops?namespace=shop")
    assert resp.status == 200
    assert "Drops of pod shop/web" in await resp.text()


async def test_plain_curl_gets_text_and_json_is_on_request(client: TestClient) -> None:  # type: ignore[type-arg]
    """Accept */* (curl's default) gets text/plain; ?format=json gets application/json."""
    text = await client.get("/pods/api/drops", headers={"Accept": "*/*"})
    as_json = await client.get("/pods/api/drops?format=json")
    assert text.content_type == "text/plain"
    assert as_json.content_type == "application/json"
    assert (await as_json.json())["drops"] == []
