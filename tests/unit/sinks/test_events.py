"""The Events sink against recorded kube-apiserver answers, served by a real HTTP server on loopback.

The answers (tests/unit/cluster/recorded/events/, written down from a real
kube-apiserver by recorded/record.py) are templates: the fake keeps the
Events it was sent and answers with the recorded layout carrying them.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sink_fixtures import MakeDrop

from drop_explainer.cluster import kubeapi
from drop_explainer.sinks import events

RECORDED = Path(__file__).parents[1] / "cluster" / "recorded" / "events"
POD = "shop/web-2"
FAST = events.EventSettings(instance="node-a", min_update_interval_s=0.2, rate_per_s=100.0, burst=10)


def answer(name: str) -> tuple[int, dict[str, Any]]:
    data = json.loads((RECORDED / f"{name}.json").read_text())
    return int(data["status"]), data["body"]


@dataclass
class Call:
    method: str
    path: str
    body: dict[str, Any] | None
    at: float


@dataclass
class FakeEventsApi:
    """Pods to look up, Events to create and patch; scripted failures go first."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    failures: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    url: str = ""

    def writes(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method != "GET" and (method is None or c.method == method)]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.calls.append(Call(request.method, request.path, body, time.monotonic()))
        if self.failures and request.method != "GET":
            status, failure = self.failures.popleft()
            return web.json_response(failure, status=status)
        parts = request.path.strip("/").split("/")  # api v1 namespaces NS RESOURCE [NAME]
        namespace, resource, name = parts[3], parts[4], parts[5] if len(parts) > 5 else None
        if resource == "pods":
            return self._pod(namespace, name or "")
        key = f"{namespace}/{name or (body or {})['metadata']['name']}"
        status, reply = self._event(request.method, key, body)
        return web.json_response(reply, status=status)

    def _pod(self, namespace: str, name: str) -> web.Response:
        if f"{namespace}/{name}" == POD:
            return web.json_response(answer("pod")[1])
        status, missing = answer("pod-missing")
        return web.json_response(_renamed(missing, name), status=status)

    def _event(self, method: str, key: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        name = key.partition("/")[2]
        if method == "POST":
            if key in self.events:
                status, conflict = answer("create-conflict")
                return status, _renamed(conflict, name)
            status, template = answer("create")
            assert body is not None
            self.events[key] = _overlay(template, body)
            return status, self.events[key]
        if key not in self.events:
            status, missing = answer("patch-missing")
            return status, _renamed(missing, name)
        if method == "PATCH":
            assert body is not None
            self.events[key] = _overlay(self.events[key], body)
            return answer("patch")[0], self.events[key]
        return 200, self.events[key]


def _overlay(template: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(template)
    meta = out["metadata"] | fields.get("metadata", {})
    out.update({k: v for k, v in fields.items() if k != "metadata"})
    out["metadata"] = meta
    return out


def _renamed(status: dict[str, Any], name: str) -> dict[str, Any]:
    old = status["details"]["name"]
    return status | {"message": status["message"].replace(old, name), "details": {**status["details"], "name": name}}


@pytest.fixture
async def api() -> AsyncIterator[FakeEventsApi]:
    fake = FakeEventsApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def start(api: FakeEventsApi) -> AsyncIterator[Callable[[events.EventSettings], events.EventSink]]:
    """A running sink towards the fake; stopped at teardown."""
    tasks: list[asyncio.Task[None]] = []
    async with kubeapi.Client(kubeapi.Endpoint.with_token(api.url, "t")) as client:

        def make(settings: events.EventSettings = FAST) -> events.EventSink:
            sink = events.EventSink(client, settings)
            tasks.append(asyncio.create_task(sink.run()))
            return sink

        yield make
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_new_signature_creates_one_event_on_the_protected_pod(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """An ingress drop makes a Warning Event on the destination pod, with its uid for kubectl describe."""
    sink = start()
    drop = make_drop(source="web/pod-a", destination=POD, new=True)
    sink.handle(drop)
    await eventually(lambda: sink.stats.created == 1)
    [post] = api.writes("POST")
    assert post.path == "/api/v1/namespaces/shop/events"
    body = post.body
    assert body is not None
    pod_uid = answer("pod")[1]["metadata"]["uid"]
    assert body["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "web-2", "namespace": "shop",
                                      "uid": pod_uid}
    assert body["metadata"]["name"] == f"web-2.{drop.signature.id}"
    assert (body["reason"], body["type"], body["count"]) == ("NetworkPolicyDrop", "Warning", 1)
    assert body["message"] == drop.explanation.headline
    assert body["source"] == {"component": "drop-explainer", "host": "node-a"}
    assert (body["reportingComponent"], body["reportingInstance"]) == ("drop-explainer", "node-a")
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2025-11-26T01:58:00Z"


async def test_egress_drop_event_goes_on_the_source_pod(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """For egress the policy protects the source, so the Event is in the source pod's namespace."""
    sink = start()
    sink.handle(make_drop(source=POD, destination="api/pod-b", direction="egress", new=True))
    await eventually(lambda: sink.stats.created == 1)
    [post] = api.writes("POST")
    assert post.body is not None
    assert post.body["involvedObject"]["name"] == "web-2"


async def test_repeats_within_the_window_update_the_count_instead_of_creating(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """A storm of 500 retransmits is one Event whose count reaches 500, with few writes."""
    sink = start()
    sink.handle(make_drop(destination=POD, new=True))
    began = time.monotonic()
    for i in range(499):
        sink.handle(make_drop(destination=POD, time_ns=1_764_122_281_000_000_000 + i))
        if i % 100 == 0:
            await asyncio.sleep(0.05)
    await eventually(lambda: sum(e["count"] for e in api.events.values()) == 500)
    elapsed = time.monotonic() - began
    assert len(api.events) == 1
    assert len(api.writes("POST")) == 1
    assert 1 <= len(api.writes("PATCH")) <= elapsed / FAST.min_update_interval_s + 1
    [event] = api.events.values()
    assert event["lastTimestamp"] == "2025-11-26T01:58:01Z"


async def test_one_signature_is_written_at_most_once_per_interval(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """Between two writes of one Event lies at least min_update_interval_s."""
    sink = start()
    sink.handle(make_drop(destination=POD, new=True))
    deadline = time.monotonic() + 0.7
    while time.monotonic() < deadline:
        sink.handle(make_drop(destination=POD))
        await asyncio.sleep(0.01)
    await eventually(lambda: sink.stats.updated >= 2)
    times = [c.at for c in api.writes()]
    assert all(b - a >= FAST.min_update_interval_s * 0.95 for a, b in itertools.pairwise(times))


async def test_global_rate_limit_holds_across_signatures(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """Twelve new signatures at once: API calls never outrun the token bucket."""
    settings = events.EventSettings(instance="node-a", rate_per_s=40.0, burst=2)
    sink = start(settings)
    for port in range(8000, 8012):
        sink.handle(make_drop(destination=POD, port=port, new=True))
    await eventually(lambda: sink.stats.created == 12)
    times = [c.at for c in api.calls]  # a pod lookup and a create per signature
    assert len(times) == 24
    for i, first in enumerate(times):
        for j in range(i + 1, len(times)):
            assert j - i + 1 <= settings.burst + settings.rate_per_s * (times[j] - first) + 1
    assert times[-1] - times[0] >= (24 - settings.burst - 1) / settings.rate_per_s


async def test_api_errors_are_counted_and_never_raised(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """A forbidden create is logged and counted; the next drop of the signature tries again."""
    forbidden = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
                 "code": 403, "message": 'events is forbidden: User "system:serviceaccount:drop-explainer:'
                                         'drop-explainer" cannot create resource "events" in API group "" '
                                         'in the namespace "shop"'}
    api.failures.append((403, forbidden))
    sink = start()
    sink.handle(make_drop(destination=POD, new=True))
    await eventually(lambda: sink.stats.errors == 1)
    assert not api.events
    sink.handle(make_drop(destination=POD))
    await eventually(lambda: sink.stats.created == 1)
    [event] = api.events.values()
    assert event["count"] == 2


async def test_an_event_left_from_before_a_restart_is_continued(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """A create answered 409 reads the existing Event and adds to its count."""
    drop = make_drop(destination=POD, new=True)
    api.events[f"shop/web-2.{drop.signature.id}"] = _overlay(answer("create")[1], {"count": 5})
    sink = start()
    sink.handle(drop)
    await eventually(lambda: sink.stats.updated == 1)
    [event] = api.events.values()
    assert event["count"] == 6
    assert [c.method for c in api.writes()] == ["POST", "PATCH"]


async def test_an_expired_event_is_created_again(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """If the Event is gone (its TTL passed), the next update creates it anew with the full count."""
    sink = start()
    sink.handle(make_drop(destination=POD, new=True))
    await eventually(lambda: sink.stats.created == 1)
    api.events.clear()
    sink.handle(make_drop(destination=POD))
    await eventually(lambda: sink.stats.created == 2)
    [event] = api.events.values()
    assert event["count"] == 2
    assert [c.method for c in api.writes()] == ["POST", "PATCH", "POST"]


async def test_a_pod_already_gone_gets_an_event_without_uid(
        api: FakeEventsApi, start: Callable[..., events.EventSink], make_drop: MakeDrop) -> None:
    """The pod lookup's 404 is not an error: the API accepts an involvedObject without uid."""
    sink = start()
    sink.handle(make_drop(destination="shop/web-9", new=True))
    await eventually(lambda: sink.stats.created == 1)
    [post] = api.writes("POST")
    assert post.body is not None
    assert "uid" not in post.body["involvedObject"]
    assert sink.stats.errors == 0


def test_overflowing_the_write_queue_is_counted(make_drop: MakeDrop) -> None:
    """With the writer behind, signatures beyond the queue are counted, not silently lost."""
    sink = events.EventSink(kubeapi.Client(kubeapi.Endpoint("http://unused")),
                            events.EventSettings(instance="n", queue_size=2))
    for port in (1, 2, 3):
        sink.handle(make_drop(destination=POD, port=port, new=True))
    assert sink.stats.overflow == 1


def test_a_drop_without_a_protected_pod_makes_no_event(make_drop: MakeDrop) -> None:
    """Ingress to an address outside the cluster has no pod to hang an Event on."""
    sink = events.EventSink(kubeapi.Client(kubeapi.Endpoint("http://unused")), FAST)
    sink.handle(make_drop(destination="world", new=True))
    assert sink.stats.not_a_pod == 1
