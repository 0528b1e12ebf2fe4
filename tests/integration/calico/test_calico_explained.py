"""Calico drops explained: the same answer as Hubble's for a Kubernetes default deny, honesty for the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calico_helpers import Collector, felix_settings, goldmane_settings

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.cache import ExplanationCache
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.explain.rendering import explanation_json
from drop_explainer.flows import model
from drop_explainer.goldmane_pb import goldmane_pb2 as gm
from drop_explainer.hubble_pb import flow_pb2
from drop_explainer.normalise import calico as normalise_calico
from drop_explainer.normalise import hubble as normalise_hubble
from drop_explainer.pipeline import Pipeline, StaticState
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks.store import DropStore
from drop_explainer.sources import calico
from drop_explainer.testing.goldmane_server import (
    FakeFelixClient,
    FakeGoldmaneServer,
    default_deny_flow,
    end_of_tier,
    goldmane_flow,
    rule_hit,
)

T = 1_764_000_000
S = 1_000_000_000
STORIES = Path(__file__).resolve().parents[2] / "fixtures" / "stories"
SAME_FIELDS = ("headline", "allowed", "connection", "ingress", "egress", "agreement", "denying", "closest", "traps",
               "fixes")
REPLICAS = """
kind: List
items:
- kind: Pod
  metadata:
    name: web-7d4b9c8f6d-x2v9k
    namespace: frontend
    generateName: web-7d4b9c8f6d-
    labels: {app: web, pod-template-hash: 7d4b9c8f6d}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c8f6d}]
  spec: {nodeName: node-1, containers: [{name: web}]}
  status: {phase: Running, podIP: 10.244.1.41}
- kind: Pod
  metadata:
    name: web-7d4b9c8f6d-bq7wz
    namespace: frontend
    generateName: web-7d4b9c8f6d-
    labels: {app: web, pod-template-hash: 7d4b9c8f6d}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c8f6d}]
  spec: {nodeName: node-2, containers: [{name: web}]}
  status: {phase: Running, podIP: 10.244.2.41}
"""
SECOND_ISOLATION = """
kind: NetworkPolicy
metadata: {name: allow-metrics, namespace: backend, resourceVersion: "3002"}
spec:
  podSelector: {matchLabels: {app: backend}}
  policyTypes: [Ingress]
  ingress: [{ports: [{port: 9090}]}]
"""
CollectAny = Callable[[Any], Collector]


def seed_state(*extra: str) -> ClusterState:
    """The seed incident: backend's default-deny admits only kube-system, so frontend/pod-a -> pod-b:8080 drops."""
    objs: list[object] = []
    for path in (STORIES / "_base" / "cluster.yaml", STORIES / "seed-incident" / "policies.yaml"):
        objs += parse_documents(path.name, path.read_text(encoding="utf-8"))
    for i, text in enumerate(extra):
        objs += parse_documents(f"extra-{i}", text)
    return ClusterState.build(objs)


def hubble_drop() -> model.Flow:
    """What Hubble reports for the seed drop: POLICY_DENIED of a SYN at pod-b's ingress, with addresses."""
    pb = flow_pb2.Flow(
        verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENIED,
        IP=flow_pb2.IP(source="10.244.1.10", destination="10.244.2.20", ipVersion=flow_pb2.IPv4),
        l4=flow_pb2.Layer4(TCP=flow_pb2.TCP(source_port=41000, destination_port=8080,
                                            flags=flow_pb2.TCPFlags(SYN=True))),
        source=flow_pb2.Endpoint(identity=5001, namespace="frontend", pod_name="pod-a",
                                 labels=["k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=frontend"]),
        destination=flow_pb2.Endpoint(identity=5002, namespace="backend", pod_name="pod-b",
                                      labels=["k8s:app=backend", "k8s:io.kubernetes.pod.namespace=backend"]),
        node_name="node-2", traffic_direction=flow_pb2.INGRESS)
    pb.time.FromSeconds(T)
    return normalise_hubble.flow_from_proto(pb)


def calico_drop(**kwargs: Any) -> model.Flow:
    """The same drop as Goldmane reports it: names and labels, no addresses, one trigger policy."""
    values: dict[str, Any] = {"source_labels": ["app=frontend", "projectcalico.org/namespace=frontend"],
                              "dest_labels": ["app=backend"], "packets": 6, "connections": 2}
    values.update(kwargs)
    return normalise_calico.flow_from_proto(default_deny_flow(T, **values))


def test_a_calico_default_deny_gets_the_same_answer_as_the_hubble_drop() -> None:
    """Same policy list, failing clauses, fix, agreement and headline, field for field, on the seed incident."""
    engine = Engine(seed_state())
    from_hubble = explanation_json(explain_flow(engine, hubble_drop()))
    from_calico = explanation_json(explain_flow(engine, calico_drop()))
    assert {k: from_calico[k] for k in SAME_FIELDS} == {k: from_hubble[k] for k in SAME_FIELDS}
    assert [(t["namespace"], t["name"]) for t in from_calico["denying"]] == [("backend", "default-deny")]
    assert from_calico["closest"]["rule"] == 0
    assert from_calico["fixes"][0]["kind"] == "add-rule"
    assert from_calico["agreement"] == {"agrees": True, "causes": []}
    assert from_calico["flow"]["attribution"][0]["trigger"] == "backend/default-deny"


def test_all_isolating_policies_are_listed_though_calico_names_one_trigger() -> None:
    """Two policies isolate pod-b; Calico names the last; both are listed, exactly as for Hubble, with a note."""
    engine = Engine(seed_state(SECOND_ISOLATION))
    from_hubble = explanation_json(explain_flow(engine, hubble_drop()))
    expl = explain_flow(engine, calico_drop())
    from_calico = explanation_json(expl)
    assert {k: from_calico[k] for k in SAME_FIELDS} == {k: from_hubble[k] for k in SAME_FIELDS}
    assert [t["name"] for t in from_calico["denying"]] == ["allow-metrics", "default-deny"]
    assert "Calico names only backend/default-deny as the trigger of the end-of-tier deny; all 2 policies " \
           "isolating the pod for ingress are listed" in expl.notes


def test_a_pod_prefix_is_resolved_to_its_replicas_and_the_note_says_several_match() -> None:
    """web-7d4b9c8f6d-* -> the two pods of that generateName; one stands for both, and the note says so."""
    engine = Engine(seed_state(REPLICAS))
    flow = calico_drop(source=("frontend", "web-7d4b9c8f6d-*"), source_labels=["app=web", "pod-template-hash="
                                                                                           "7d4b9c8f6d"])
    assert flow.source.pod_prefix == "web-7d4b9c8f6d-"
    expl = explain_flow(engine, flow)
    assert expl.connection.source.pod is not None
    assert expl.connection.source.pod.key == "frontend/web-7d4b9c8f6d-bq7wz"
    assert ("Calico reports frontend/web-7d4b9c8f6d-* (pods aggregated by name prefix): 2 pods of the state match "
            "(web-7d4b9c8f6d-bq7wz, web-7d4b9c8f6d-x2v9k); explained for frontend/web-7d4b9c8f6d-bq7wz, whose "
            "labels the others share") in expl.notes
    assert [p.key for p in expl.verdict.ingress.policies] == ["backend/default-deny"]
    assert expl.fixes


def test_a_prefix_resolves_by_owner_when_the_state_has_no_generate_name() -> None:
    """A state saved without generateName still resolves the prefix through the ReplicaSet owner."""
    engine = Engine(seed_state(REPLICAS.replace("    generateName: web-7d4b9c8f6d-\n", "")))
    expl = explain_flow(engine, calico_drop(source=("frontend", "web-7d4b9c8f6d-*"), source_labels=["app=web"]))
    assert expl.connection.source.pod is not None
    assert expl.connection.source.pod.name.startswith("web-7d4b9c8f6d-")
    assert any("2 pods of the state match" in n for n in expl.notes)


def test_a_prefix_without_pods_is_explained_from_the_flow_labels_and_says_so() -> None:
    """No pod of that prefix (scaled down since): the flow's labels stand in, with a note."""
    engine = Engine(seed_state())
    expl = explain_flow(engine, calico_drop(source=("frontend", "gone-5f6d7c8b9-*"), source_labels=["app=gone"]))
    assert expl.connection.source.pod is not None
    assert dict(expl.connection.source.pod.labels) == {"app": "gone"}
    assert any("no pod of the state matches it" in n for n in expl.notes)
    assert expl.agreement.agrees is True


def test_a_deny_rule_of_a_calico_kind_is_reported_as_calico_said_without_a_fix() -> None:
    """A GlobalNetworkPolicy rule is not modelled: agreement False with Calico's attribution, no invented fix."""
    hit = rule_hit(gm.GlobalNetworkPolicy, "", "block-db", tier="security", action=gm.Deny, rule_index=2)
    flow = normalise_calico.flow_from_proto(goldmane_flow(T, enforced=[hit], dest_labels=["app=backend"]))
    expl = explain_flow(Engine(seed_state()), flow)
    assert flow.drop_kind is model.DropKind.POLICY_DENY
    assert expl.agreement.agrees is False
    assert expl.agreement.causes[0] == (
        "Calico attributes the drop to GlobalNetworkPolicy block-db rule 2 (tier security): a GlobalNetworkPolicy is "
        "a Calico policy kind the engine does not model, so the rule-level reason is not available")
    assert expl.agreement.causes[1] == "the Kubernetes NetworkPolicies in the state also deny it (ingress: " \
                                       "backend/default-deny)"
    assert expl.fixes == ()
    assert expl.headline.startswith("DROPPED frontend/pod-a -> backend/pod-b TCP/8080: Calico's GlobalNetworkPolicy "
                                    "block-db rule 2 (tier security) denies it")


@pytest.mark.parametrize(("kind", "tier"), [
    pytest.param(gm.CalicoNetworkPolicy, "platform", id="calico-np-3.32"),
    pytest.param(gm.AdminNetworkPolicy, "adminnetworkpolicy", id="anp-3.30"),
    pytest.param(gm.ClusterNetworkPolicy, "kube-admin", id="cnp-3.32"),
])
def test_an_end_of_tier_deny_of_a_calico_kind_where_the_engine_allows_is_a_reported_disagreement(
        kind: int, tier: str) -> None:
    """pod-a -> checkout: no Kubernetes policy isolates it, Calico's tier does; said plainly, nothing invented."""
    hit = end_of_tier(kind, "payments" if kind == gm.CalicoNetworkPolicy else "", "lockdown", tier=tier)
    pb = goldmane_flow(T, dest=("payments", "checkout-6c9f7d-qz2lm"), dest_port=8443, enforced=[hit])
    expl = explain_flow(Engine(seed_state()), normalise_calico.flow_from_proto(pb))
    assert expl.verdict.allowed
    assert expl.agreement.agrees is False
    assert len(expl.agreement.causes) == 1
    assert f"the end-of-tier deny of tier {tier}, triggered by {gm.PolicyKind.Name(kind)}" in expl.agreement.causes[0]
    assert "rule-level reason is not available" in expl.agreement.causes[0]
    assert (expl.fixes, expl.denying) == ((), ())


def test_a_kubernetes_trigger_the_state_does_not_show_is_a_disagreement_naming_it() -> None:
    """Calico blames payments/old-lockdown; the state has no policy isolating checkout: both facts are reported."""
    pb = default_deny_flow(T, dest=("payments", "checkout-6c9f7d-qz2lm"), dest_port=8443,
                           trigger=("payments", "old-lockdown"))
    expl = explain_flow(Engine(seed_state()), normalise_calico.flow_from_proto(pb))
    assert expl.agreement.agrees is False
    assert any("NetworkPolicy payments/old-lockdown" in c for c in expl.agreement.causes)
    assert any("stale" in c for c in expl.agreement.causes)


def test_staged_policies_are_mentioned_but_decide_nothing() -> None:
    """A staged deny in the pending trace is noted; the enforced Kubernetes default deny still decides."""
    staged = end_of_tier(gm.StagedKubernetesNetworkPolicy, "backend", "tighter", policy_index=1)
    enforced = end_of_tier(gm.NetworkPolicy, "backend", "default-deny")
    pb = goldmane_flow(T, enforced=[enforced], pending=[enforced, staged], dest_labels=["app=backend"])
    expl = explain_flow(Engine(seed_state()), normalise_calico.flow_from_proto(pb))
    assert expl.agreement.agrees is True
    assert any(n.startswith("Calico's staged (not enforced) policies evaluated too: the end-of-tier deny of tier "
                            "default, triggered by StagedKubernetesNetworkPolicy backend/tighter") for n in expl.notes)


def test_two_prefixes_to_one_pod_get_their_own_explanations_through_the_cache() -> None:
    """Through the ExplanationCache, web-* and api-* towards pod-b each keep their own source."""
    engine = Engine(seed_state(REPLICAS))
    cache = ExplanationCache()
    first = cache.explain(engine, calico_drop(source=("frontend", "web-7d4b9c8f6d-*"), source_labels=["app=web"]))
    second = cache.explain(engine, calico_drop(source=("default", "api-5c8d7f9b6-*"), source_labels=["app=api"]))
    assert first.connection.source.pod is not None
    assert second.connection.source.pod is not None
    assert second.connection.source.pod.namespace == "default"


# --- through the sources into the pipeline and the drop store ----------------------------------


async def test_goldmane_buckets_reach_the_store_once_each_across_a_server_restart(collect: CollectAny) -> None:
    """Server -> client -> pipeline -> store: packets and connections summed, a restart counts nothing twice."""
    pipeline = Pipeline(StaticState(seed_state()), store=DropStore(":memory:"))
    kwargs: dict[str, Any] = {"source_labels": ["app=frontend"], "dest_labels": ["app=backend"]}
    async with FakeGoldmaneServer() as server:
        source = calico.GoldmaneSource(goldmane_settings(server.target))
        collector = collect(source)
        await server.wait_for_streams()
        for i in range(8):
            server.push(default_deny_flow(T + 15 * i, packets=i + 1, connections=1, **kwargs))
        await collector.until(lambda: len(collector.flows) == 8)
        await server.stop()
        for i in range(8, 12):
            server.push(default_deny_flow(T + 15 * i, packets=i + 1, connections=1, **kwargs))
        await server.start()
        await collector.until(lambda: len(collector.flows) == 12)
        await asyncio.sleep(0.05)
    drops = [d for d in map(pipeline.process, collector.flows) if d is not None]
    assert len(drops) == 12
    assert source.stats.duplicates >= 1
    (record,) = pipeline.store.query()  # type: ignore[union-attr]
    assert (record.flows, record.packets, record.connections) == (12, sum(range(1, 13)), 12)
    assert record.policies == ("backend/default-deny",)
    assert record.first_seen_ns == (T + 15) * S
    assert record.last_seen_ns == (T + 15 * 12) * S


async def test_felix_flows_reach_the_store_once_each_across_a_felix_reconnect(socket_dir: Path,
                                                                             collect: CollectAny) -> None:
    """Felix socket -> pipeline -> store: the 5-minute replay on reconnect adds nothing; the node is kept."""
    pipeline = Pipeline(StaticState(seed_state()), store=DropStore(":memory:"))
    source = calico.FelixSocketSource(felix_settings(socket_dir / "flows.sock", node_name="node-2"))
    collector = collect(source)
    async with asyncio.timeout(4):
        await source.bound.wait()
    felix = FakeFelixClient(socket_dir / "flows.sock")
    await felix.connect()
    for i in range(5):
        await felix.push(default_deny_flow(T + 15 * i, packets=2, connections=1, dest_labels=["app=backend"]))
    await felix.connect()
    await felix.push(default_deny_flow(T + 75, packets=2, connections=1, dest_labels=["app=backend"]))
    await collector.until(lambda: len(collector.flows) == 6)
    await asyncio.sleep(0.02)
    await felix.close()
    for flow in collector.flows:
        pipeline.process(flow)
    (record,) = pipeline.store.query()  # type: ignore[union-attr]
    assert (record.flows, record.packets, record.connections, record.nodes) == (6, 12, 6, ("node-2",))
    assert source.stats.duplicates == 5
