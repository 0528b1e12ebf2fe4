"""Every error in the documented shape: JSON when JSON was asked, text otherwise, never a traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from drop_explainer.api import routes
from drop_explainer.api.peers import Peers
from drop_explainer.cli import example_state_path
from drop_explainer.cluster.loading import load_state
from drop_explainer.policy.engine import Engine
from drop_explainer.settings import PeerSettings
from drop_explainer.sinks.store import DropStore

JSON = {"Accept": "application/json"}


@pytest.fixture
async def store() -> AsyncIterator[DropStore]:
    with DropStore(":memory:") as s:
        yield s


@pytest.fixture
async def client(store: DropStore) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    engine = Engine(load_state(example_state_path()))
    peers = Peers(PeerSettings("single", {}, "drop-explainer", {}, 8080, 1.0), "node-2", lambda: engine.state)
    ctx = routes.Context(engine=lambda: engine, store=store, peers=peers, registry=CollectorRegistry(),
                         ready=lambda: (True, "ok"), healthy=lambda: (True, "ok"))
    async with TestClient(TestServer(routes.make_app(ctx))) as c:
        yield c


@pytest.mark.parametrize(("path", "fragment"), [
    pytest.param("/drops?limit=%C2%B2", "limit='\u00b2'", id="superscript-two-limit"),
    pytest.param("/drops?limit=%D9%A5", "limit='\u0665'", id="arabic-indic-five-limit"),
    pytest.param("/drops?since=inf", "since='inf'", id="since-inf"),
    pytest.param("/drops?since=nan", "since='nan'", id="since-nan"),
    pytest.param("/drops?until=-Infinity", "until='-Infinity'", id="until-minus-infinity"),
    pytest.param("/drops?since=1764800000000", "looks like epoch milliseconds", id="epoch-milliseconds"),
    pytest.param("/drops?since=1e400", "since='1e400'", id="float-overflow"),
    pytest.param("/drops?since=99999999999999999999d", "int64 nanoseconds", id="duration-overflow"),
    pytest.param("/drops/0123456789abcdef?scope=galaxy", "scope='galaxy'", id="scope-on-drop-by-id"),
    pytest.param("/drops?limit=5&limit=6", "more than once: limit", id="repeated-parameter"),
    pytest.param("/whatif?from=frontend/pod-a&to=backend/pod-b&port=%C2%B2", "port='\u00b2'",
                 id="whatif-superscript-port"),
    pytest.param("/pods/pod-b%0A/drops", "not a valid Kubernetes name", id="trailing-newline-in-name"),
])
async def test_odd_input_from_issue_12_is_a_400_in_json_and_text(
        client: TestClient, path: str, fragment: str) -> None:  # type: ignore[type-arg]
    """The requests that were 500s are 400s with the reason, in JSON when asked and in text otherwise."""
    as_json = await client.get(path, headers=JSON)
    assert as_json.status == 400
    assert as_json.content_type == "application/json"
    assert fragment in (await as_json.json())["error"]
    as_text = await client.get(path)
    assert as_text.status == 400
    assert as_text.content_type == "text/plain"
    assert fragment in await as_text.text()


async def test_scope_on_a_stored_drop_is_checked_before_the_lookup(
        client: TestClient) -> None:  # type: ignore[type-arg]
    """/drops/{id} refused a bad scope only when the drop was not found; it is checked first now."""
    ok = await client.get("/drops/0123456789abcdef?scope=local", headers=JSON)
    assert ok.status == 404
    assert (await ok.json())["error"] == "no drop 0123456789abcdef"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/no/such/path", 404),
    ("GET", "/drops/", 404),
    ("POST", "/drops", 405),
    ("DELETE", "/drops/0123456789abcdef", 405),
    ("HEAD", "/healthz", 405),
])
async def test_aiohttps_own_errors_have_the_documented_shape(
        client: TestClient, method: str, path: str, status: int) -> None:  # type: ignore[type-arg]
    """404 and 405 from the router itself are JSON with ?format=json or Accept, and keep the Allow header."""
    resp = await client.request(method, path + "?format=json")
    assert resp.status == status
    if method != "HEAD":
        assert resp.content_type == "application/json"
        assert set(await resp.json()) == {"error"}
    if status == 405:
        assert resp.headers["Allow"] == "GET"
    text = await client.request(method, path, headers={"Accept": "text/plain"})
    assert text.status == status
    assert text.content_type == "text/plain"
    if method != "HEAD":
        assert (await text.text()).startswith("error: ")


async def test_an_internal_failure_is_a_500_without_a_traceback(
        client: TestClient, store: DropStore, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[type-arg]
    """A store that fails (here: closed under the API) gives a 500 in the error shape; the log has the cause."""
    store.close()
    resp = await client.get("/drops", headers=JSON)
    assert resp.status == 500
    body = await resp.json()
    assert body == {"error": "internal error; the daemon's log has the details"}
    text = await client.get("/drops")
    assert text.status == 500
    assert "Traceback" not in await text.text()
    assert any(r.message == "api_internal_error" and r.exc_info for r in caplog.records)
