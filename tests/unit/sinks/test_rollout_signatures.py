"""Signatures keyed by workload: a rollout or a new replica of a Deployment is the same drop, through the pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from drop_explainer.api import routes
from drop_explainer.api.peers import Peers
from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.flows.model import Protocol as L4
from drop_explainer.pipeline import Admission, Pipeline
from drop_explainer.policy.engine import Engine
from drop_explainer.settings import PeerSettings
from drop_explainer.sinks.metrics import MetricsSink
from drop_explainer.sinks.store import MEMORY, DropStore

S = 1_000_000_000
T0 = 1_764_122_280 * S
OLD, NEW = "5d8f7c9b6", "7f6e5d4c3"


def web_pod(hash_: str, suffix: str, ip: str, app: str = "web") -> str:
    return f"""
- kind: Pod
  metadata:
    name: {app}-{hash_}-{suffix}
    generateName: {app}-{hash_}-
    namespace: shop
    labels: {{app: {app}, pod-template-hash: "{hash_}"}}
    ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {app}-{hash_}, uid: u-{hash_}, controller: true}}]
  spec: {{containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}
  status: {{phase: Running, podIP: {ip}}}"""


BASE = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: shop}}
- kind: Pod
  metadata: {name: client, namespace: shop, labels: {app: client}}
  spec: {containers: [{name: c}]}
  status: {phase: Running, podIP: 10.0.0.2}
- kind: NetworkPolicy
  metadata: {name: deny, namespace: shop}
  spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}
"""
BEFORE = BASE + web_pod(OLD, "aaaaa", "10.0.0.10") + web_pod(OLD, "bbbbb", "10.0.0.11")
AFTER = BASE + web_pod(NEW, "ccccc", "10.0.0.12") + web_pod(NEW, "ddddd", "10.0.0.13", app="web2").replace(
    "app: web2", "app: web")


class Switchable:
    """A state source the test moves forward, as the live watch does on a rollout."""

    def __init__(self, text: str) -> None:
        self.state = ClusterState.build(parse_documents("state", text))

    def snapshot(self) -> ClusterState:
        return self.state

    def move_to(self, text: str) -> None:
        self.state = ClusterState.build(parse_documents("state", text))


def drop_to(pod: str, ip: str, t: int, *, port: int = 8080, hash_: str | None = None) -> Flow:
    labels = {"app": "web", **({"pod-template-hash": hash_} if hash_ else {})}
    client = Endpoint(EndpointKind.POD, "10.0.0.2", "shop", "client", {"app": "client"})
    return Flow(T0 + t * S, Verdict.DROPPED, client,
                Endpoint(EndpointKind.POD, ip, "shop", pod, labels), L4.TCP, 40000 + t, port,
                drop_kind=DropKind.POLICY_DENIED, direction=Direction.INGRESS, origin="hubble")


def aggregate_to(hash_: str, t: int, *, labels: bool = True) -> Flow:
    """Goldmane's aggregate of a ReplicaSet's pods: a name prefix, no pod, no address."""
    flow = drop_to("", "", t)
    hashed = {"pod-template-hash": hash_} if labels else {}
    dst = Endpoint(EndpointKind.POD, None, "shop", None, {"app": "web", **hashed}, pod_prefix=f"web-{hash_}-")
    return dataclasses.replace(flow, destination=dst, origin="calico-goldmane")


@pytest.fixture
def store() -> Iterator[DropStore]:
    with DropStore(MEMORY) as s:
        yield s


# (state to move to first or None, flow, new signature expected)
CASES = [
    pytest.param([(None, drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0), True),
                  (None, drop_to(f"web-{OLD}-bbbbb", "10.0.0.11", 1), False)], 1, id="second-replica-same-signature"),
    pytest.param([(None, drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0), True),
                  (AFTER, drop_to(f"web-{NEW}-ccccc", "10.0.0.12", 1), False)], 1,
                 id="rollout-new-hash-same-signature"),
    pytest.param([(None, drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0), True),
                  (AFTER, drop_to(f"web-{OLD}-bbbbb", "10.0.0.11", 1, hash_=OLD), False)], 1,
                 id="old-pod-gone-from-the-state-same-signature"),
    pytest.param([(None, drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0), True),
                  (AFTER, drop_to(f"web2-{OLD}-ddddd", "10.0.0.13", 1), True)], 2, id="another-deployment-is-new"),
    pytest.param([(None, aggregate_to(OLD, 0), True), (AFTER, aggregate_to(NEW, 1), False),
                  (None, drop_to(f"web-{NEW}-ccccc", "10.0.0.12", 2), False)], 1,
                 id="calico-aggregates-across-a-rollout-and-a-single-pod-same-signature"),
    pytest.param([(None, aggregate_to(OLD, 0, labels=False), True), (AFTER, aggregate_to(NEW, 1, labels=False), False)],
                 1, id="calico-aggregates-without-hash-label-resolved-from-the-state"),
    pytest.param([(None, drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0), True),
                  (None, drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 1, port=9090), True)], 2, id="another-port-is-new"),
]


@pytest.mark.parametrize(("steps", "signatures"), CASES)
def test_rollouts_and_replicas_keep_the_signature(store: DropStore, steps: list[tuple[str | None, Flow, bool]],
                                                  signatures: int) -> None:
    """Through the pipeline: the store's "new", the new-drop counter and the signature count follow the workload."""
    registry = CollectorRegistry()
    state = Switchable(BEFORE)
    pipeline = Pipeline(state, store=store, sinks=[("metrics", MetricsSink(registry))])
    seen = []
    for text, flow, new in steps:
        if text is not None:
            state.move_to(text)
        drop = pipeline.process(flow)
        assert drop is not None
        assert drop.new is new, flow.destination.pod
        seen.append(drop.signature)
    assert store.size() == signatures
    new_total = sum(s.value for m in registry.collect() if m.name == "drop_explainer_new_drop_signatures"
                    for s in m.samples if s.name.endswith("_total"))
    assert new_total == signatures
    assert seen[0].destination == "shop/web"
    # Per-pod drop metrics keep the pod: one series per pod hit.
    pods = {s.labels["pod"] for m in registry.collect() if m.name == "drop_explainer_drops"
            for s in m.samples if s.name.endswith("_total")}
    assert pods == {step[1].destination.pod or f"{step[1].destination.pod_prefix}*" for step in steps}


def test_the_stored_drop_names_its_workload_and_the_pod_seen_first(store: DropStore) -> None:
    """The record keeps the first pod (where the Event is) and the workload, and is found by either."""
    state = Switchable(BEFORE)
    pipeline = Pipeline(state, store=store)
    pipeline.process(drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0))
    state.move_to(AFTER)
    pipeline.process(drop_to(f"web-{NEW}-ccccc", "10.0.0.12", 1))
    [rec] = store.query(workload="shop/web")
    assert (rec.namespace, rec.pod, rec.workload, rec.flows) == ("shop", f"web-{OLD}-aaaaa", "shop/web", 2)
    assert store.query(namespace="shop", pod=f"web-{OLD}-aaaaa") == [rec]
    labels = store.query(workload="shop/web")[0].signature
    assert labels.affected_workload == "shop/web"


async def test_a_new_replica_s_drops_page_shows_the_drop_first_seen_on_the_old_pod(store: DropStore) -> None:
    """/namespaces/shop/pods/<new pod>/drops after a rollout: the workload's drop, naming where it was first seen."""
    state = Switchable(BEFORE)
    pipeline = Pipeline(state, store=store)
    pipeline.process(drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0))
    state.move_to(AFTER)
    engine = Engine(state.state)
    peers = Peers(PeerSettings("single", {}, "drop-explainer", {}, 8080, 1.0), "n1", lambda: engine.state)
    ctx = routes.Context(engine=lambda: engine, store=store, peers=peers, registry=CollectorRegistry(),
                         ready=lambda: (True, "ok"), healthy=lambda: (True, "ok"))
    async with TestClient(TestServer(routes.make_app(ctx))) as client:
        resp = await client.get(f"/namespaces/shop/pods/web-{NEW}-ccccc/drops?format=json")
        assert resp.status == 200
        [drop] = (await resp.json())["drops"]
        bare = await client.get("/namespaces/shop/pods/client/drops?format=json")
        assert (await bare.json())["drops"] == []
    assert (drop["workload"], drop["first_pod"]) == ("shop/web", f"shop/web-{OLD}-aaaaa")
    assert drop["signature"]["destination"] == "shop/web"


def test_new_signature_admission_counts_a_workload_s_replicas_together(store: DropStore) -> None:
    """A flood of new drops spread over replicas is held back per workload, not refilled per pod."""
    now = [0.0]
    admission = Admission(per_group_burst=1, per_group_rate=0.001, clock=lambda: now[0])
    pipeline = Pipeline(Switchable(BEFORE), store=store, admission=admission)
    first = pipeline.process(drop_to(f"web-{OLD}-aaaaa", "10.0.0.10", 0, port=1000))
    other_replica = pipeline.process(drop_to(f"web-{OLD}-bbbbb", "10.0.0.11", 1, port=1001))
    assert first is not None
    assert first.new
    assert other_replica is not None
    assert not other_replica.new
    assert admission.deferred_by_group == {"shop/web": 1}
