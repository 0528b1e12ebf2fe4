"""The OpenAPI document and the routes cannot drift apart."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

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
             "from": "frontend/pod-a", "to": "backend/pod-b", "port": "8080", "protocol": "TCP",
             "pod": "pod-b", "all": "true"}
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


def test_the_document_is_valid_openapi_3_1() -> None:
    """openapi-spec-validator (the reference validator of the OpenAPI 3.1 schema) finds nothing wrong."""
    validate(document())


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_ref_resolves_inside_the_document() -> None:
    """Issue 12: a $ref pointed at https://drop-explainer.dev/..., which nothing serves. All are local now."""
    doc = document()
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref
        assert node, ref


def test_every_parameter_states_its_constraints_and_every_error_is_declared() -> None:
    """Each parameter has an enum, a pattern or bounds; each route declares its 4xx/5xx with the Error shape."""
    doc = document()
    for path, item in doc["paths"].items():
        op = item["get"]
        for p in op.get("parameters", []):
            schema = p["schema"]
            assert {"enum", "pattern", "maximum", "maxLength"} & set(schema), (path, p["name"])
        responses = op["responses"]
        assert {"404", "500"} <= set(responses), path
        if op.get("parameters"):
            assert "400" in responses, path
        for code, answer in responses.items():
            if code.startswith(("4", "5")) and "$ref" in answer:
                target = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
                assert target["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


async def test_the_served_document_is_this_one_and_answers_validate_against_it(
        client: TestClient) -> None:  # type: ignore[type-arg]
    """/openapi.json is document(); a real what-if answer and an error validate against its schemas."""
    served = await (await client.get("/openapi.json")).json()
    assert served == json.loads(json.dumps(document()))
    registry: Registry[Any] = Registry().with_resource("urn:api", Resource.from_contents(served, DRAFT202012))

    def check(component: str, instance: Any) -> None:
        validator = Draft202012Validator({"$ref": f"urn:api#/components/schemas/{component}"}, registry=registry)
        validator.validate(instance)

    answer = await client.get("/whatif?from=frontend/pod-a&to=backend/pod-b&port=8080&format=json")
    assert answer.status == 200
    check("WhatIfResult.verdict", await answer.json())
    error = await client.get("/whatif?from=frontend/pod-a&to=backend/pod-b&port=0&format=json")
    assert error.status == 400
    check("Error", await error.json())
    listing = await client.get("/drops?format=json")
    check("DropList", await listing.json())
