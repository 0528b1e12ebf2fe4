"""Explaining flows: agreement with the CNI, non-policy drops, blast radius, caching, the record codec."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import fixes
from drop_explainer.explain.cache import ExplanationCache
from drop_explainer.explain.explaining import complete, explain_connection, explain_flow
from drop_explainer.explain.rendering import explanation_json, explanation_text
from drop_explainer.flows import codec
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, PolicyHit, Protocol, Verdict
from drop_explainer.policy import endpoints, queries
from drop_explainer.policy.engine import Connection, Engine

# Two frontends and one unrelated pod in "web"; two backends in "api" with two
# ports each. Known answer for the seed-style fix (allow web/app=frontend to
# api on TCP 8080): pod-a->pod-c, pod-a2->pod-b, pod-a2->pod-c on 8080 = 3.
STATE = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: web, labels: {kubernetes.io/metadata.name: web}}}
- {kind: Namespace, metadata: {name: api, labels: {kubernetes.io/metadata.name: api}}}
- {kind: Namespace, metadata: {name: kube-system, labels: {kubernetes.io/metadata.name: kube-system}}}
- kind: Pod
  metadata: {name: pod-a, namespace: web, labels: {app: frontend, pod-template-hash: abc}}
  spec: {containers: [{name: c}]}
  status: {phase: Running, podIP: 10.0.1.1}
- kind: Pod
  metadata: {name: pod-a2, namespace: web, labels: {app: frontend, pod-template-hash: def}}
  spec: {containers: [{name: c}]}
  status: {phase: Running, podIP: 10.0.1.2}
- kind: Pod
  metadata: {name: other, namespace: web, labels: {app: other}}
  spec: {containers: [{name: c}]}
  status: {phase: Running, podIP: 10.0.1.3}
- kind: Pod
  metadata: {name: pod-b, namespace: api, labels: {app: backend}}
  spec: {containers: [{name: s, ports: [{containerPort: 8080}, {containerPort: 9090}]}]}
  status: {phase: Running, podIP: 10.0.2.1}
- kind: Pod
  metadata: {name: pod-c, namespace: api, labels: {app: backend}}
  spec: {containers: [{name: s, ports: [{containerPort: 8080}, {containerPort: 9090}]}]}
  status: {phase: Running, podIP: 10.0.2.2}
- kind: NetworkPolicy
  metadata: {name: default-deny, namespace: api, resourceVersion: "7"}
  spec:
    podSelector: {}
    ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]}]
"""


@pytest.fixture
def engine() -> Engine:
    return Engine(ClusterState.build(parse_documents("state", STATE)))


def _pod(ns: str, name: str, ip: str, labels: dict[str, str]) -> Endpoint:
    return Endpoint(EndpointKind.POD, ip, ns, name, labels)


def _drop(**kw: object) -> Flow:
    base = Flow(
        time_ns=1_764_122_336_000_000_000, verdict=Verdict.DROPPED,
        source=_pod("web", "pod-a", "10.0.1.1", {"app": "frontend"}),
        destination=_pod("api", "pod-b", "10.0.2.1", {"app": "backend"}),
        protocol=Protocol.TCP, source_port=40000, destination_port=8080, node="n1",
        drop_kind=DropKind.POLICY_DENIED, drop_reason="POLICY_DENIED", direction=Direction.INGRESS,
        is_reply=False, tcp_flags=frozenset({"SYN"}), origin="hubble",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_blast_radius_is_exact_on_a_state_with_a_known_answer(engine: Engine) -> None:
    """The fix for web/pod-a -> api/pod-b:8080 newly allows exactly the three other frontend->backend:8080 pairs."""
    conn = queries.connection(engine.state, queries.Query("web/pod-a", "api/pod-b", 8080))
    fix = explain_connection(engine, conn).fixes[0]
    assert fix.blast_radius is not None
    assert fix.blast_radius.count == 3
    assert fix.blast_radius.examples == ("web/pod-a -> api/pod-c TCP/8080", "web/pod-a2 -> api/pod-b TCP/8080",
                                         "web/pod-a2 -> api/pod-c TCP/8080")


def test_blast_radius_agrees_with_brute_force_over_every_pair(engine: Engine) -> None:
    """Counting every (pod, pod, declared port) before and after the fix gives the same number."""
    conn = queries.connection(engine.state, queries.Query("web/pod-a", "api/pod-b", 8080))
    fix = explain_connection(engine, conn).fixes[0]
    after = Engine(engine.state.with_objects(*parse_documents("fix", json.dumps(fix.objects[0]))))
    pods = list(engine.state.pods.values())
    newly = 0
    for src, dst in itertools.permutations(pods, 2):
        for port in {p.container_port for c in dst.containers for p in c.ports} | {8080}:
            if (src.name, dst.name, port) == ("pod-a", "pod-b", 8080):
                continue
            before_ok = engine.evaluate(Connection(endpoints.pod_subject(engine.state, src),
                                                   endpoints.pod_subject(engine.state, dst), port)).allowed
            after_ok = after.evaluate(Connection(endpoints.pod_subject(after.state, src),
                                                 endpoints.pod_subject(after.state, dst), port)).allowed
            newly += after_ok and not before_ok
    assert fix.blast_radius is not None
    assert newly == fix.blast_radius.count


def test_fix_selects_the_workload_not_the_replica(engine: Engine) -> None:
    """pod-template-hash differs between replicas, so the fix's podSelector leaves it out."""
    conn = queries.connection(engine.state, queries.Query("web/pod-a", "api/pod-b", 8080))
    pod_a = conn.source.pod
    assert pod_a is not None
    assert dict(fixes.workload_selector(pod_a).match_labels) == {"app": "frontend"}


def test_dropped_flow_the_engine_denies_agrees(engine: Engine) -> None:
    """A POLICY_DENIED ingress drop that the engine also denies is reported as agreement."""
    expl = explain_flow(engine, _drop())
    assert expl.agreement.agrees is True
    assert [p.key for p in expl.verdict.ingress.policies] == ["api/default-deny"]


def test_dropped_flow_the_engine_allows_is_a_disagreement_with_causes(engine: Engine) -> None:
    """The engine allows pod-b -> pod-a (web is not isolated), so a drop there is a disagreement."""
    flow = _drop(source=_pod("api", "pod-b", "10.0.2.1", {}), destination=_pod("web", "pod-a", "10.0.1.1", {}),
                 attribution=(PolicyHit("lockdown", "web", kind="CiliumNetworkPolicy"),))
    expl = explain_flow(engine, flow)
    assert expl.agreement.agrees is False
    assert "CiliumNetworkPolicy web/lockdown" in expl.agreement.causes[0]
    assert any("stale" in c for c in expl.agreement.causes)
    assert "policy engine disagrees" in explanation_text(expl)


def test_explicit_deny_is_never_blamed_on_networkpolicy(engine: Engine) -> None:
    """Kubernetes NetworkPolicy has no deny rules; an explicit deny points at another policy kind."""
    expl = explain_flow(engine, _drop(drop_kind=DropKind.POLICY_DENY, drop_reason="POLICY_DENY"))
    assert expl.agreement.agrees is False
    assert "explicit deny" in expl.agreement.causes[0]


def test_non_policy_drop_is_explained_by_its_reason(engine: Engine) -> None:
    """CT_MAP_INSERTION_FAILED is a datapath fault: no policy trace, no fix, the reason's meaning."""
    expl = explain_flow(engine, _drop(drop_kind=DropKind.OTHER, drop_reason="CT_MAP_INSERTION_FAILED"))
    assert expl.denying == ()
    assert expl.fixes == ()
    assert expl.datapath_reason is not None
    assert "connection-tracking table is full" in expl.headline


def test_pod_missing_from_state_is_evaluated_with_the_flow_labels(engine: Engine) -> None:
    """A pod gone from the state is still explained, using the labels the CNI saw, with a note."""
    flow = _drop(source=_pod("kube-system", "job-x", "10.0.9.9", {"app": "job"}))
    expl = explain_flow(engine, flow)
    assert expl.verdict.allowed  # kube-system is admitted by the policy
    assert any("not in the cluster state" in n for n in expl.notes)


def test_cache_serves_repeats_and_forgets_on_a_new_snapshot(engine: Engine) -> None:
    """Retransmits hit the cache; a derived snapshot (a state change) misses it."""
    cache = ExplanationCache()
    first = cache.explain(engine, _drop())
    again = cache.explain(engine, _drop(source_port=40001, time_ns=1_764_122_337_000_000_000))
    assert (cache.hits, cache.misses) == (1, 1)
    assert again is first  # the explanation of the first flow of its kind
    cache.explain(Engine(engine.state.derive()), _drop())
    assert cache.misses == 2


def test_flow_record_round_trips_and_matches_its_schema(repo_root: Path) -> None:
    """flow_to_json then flow_from_json gives the same record; the JSON obeys the schema."""
    schema = json.loads((repo_root / "daemon/drop_explainer/schemas/flow.schema.json").read_text())
    flow = _drop(attribution=(PolicyHit("deny", "api", action="end-of-tier-deny", rule_index=2, tier="default",
                                        trigger="api/deny", staged=True),), destination_names=("x.example",))
    data = codec.flow_to_json(flow)
    jsonschema.validate(data, schema)
    assert codec.flow_from_json(json.loads(json.dumps(data))) == flow


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param({"record": "x"}, "record", id="wrong-record"),
        pytest.param({"time_ns": "soon"}, "time_ns", id="bad-time"),
        pytest.param({"verdict": "maybe"}, "verdict", id="bad-verdict"),
        pytest.param({"source": {"kind": "pod", "labels": []}}, "source.labels", id="bad-labels"),
    ],
)
def test_bad_flow_record_names_the_field(patch: dict[str, object], message: str) -> None:
    """A malformed record raises BadFlowRecord whose message starts at the bad field."""
    data = codec.flow_to_json(_drop()) | patch
    with pytest.raises(codec.BadFlowRecord, match=message):
        codec.flow_from_json(data)


def test_explanation_json_carries_policy_refs_and_stable_ids(engine: Engine, repo_root: Path) -> None:
    """JSON names the policy with resourceVersion, the closest rule, and the fix object."""
    schema = json.loads((repo_root / "daemon/drop_explainer/schemas/explanation.schema.json").read_text())
    data = explanation_json(explain_flow(engine, _drop()))
    jsonschema.validate(data, schema)
    assert data["closest"] == {"namespace": "api", "name": "default-deny", "resourceVersion": "7",
                               "direction": "ingress", "rule": 0}
    assert data["fixes"][0]["objects"][0]["metadata"] == {"name": "default-deny", "namespace": "api"}
    assert data["flow"]["record"] == codec.RECORD


def test_deferred_blast_radius_is_completed_to_the_inline_answer(engine: Engine) -> None:
    """The daemon's fast path checks the fix but leaves the radius; complete() gives what inline gives."""
    fast = explain_flow(engine, _drop(), blast_radius=False)
    assert fast.fixes[0].verified
    assert fast.fixes[0].blast_radius is None
    assert "being computed" in explanation_text(fast)
    assert complete(engine, fast).fixes == explain_flow(engine, _drop()).fixes
