"""The kubelet-probe trap fires on evidence only, names the right node, and its fix fits the CNI.

networking/v1 exempts the pod's own node ("Traffic is allowed to a pod if there are no NetworkPolicies selecting
the pod OR if the traffic source is the pod's local node", kubernetes/api networking/v1/types.go,
NetworkPolicySpec.Ingress). So a probe drop is either the CNI dropping what the spec exempts (observed), or a
profile that does not exempt the node (what-if); a probe from another node is no kubelet probe.
"""

from __future__ import annotations

import json

import pytest
import yaml

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import rendering
from drop_explainer.explain.explaining import complete, explain_connection, explain_flow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.policy import profiles, queries
from drop_explainer.policy.engine import Engine

WORLD = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: b}}
- kind: Node
  metadata: {name: n1}
  spec: {podCIDRs: [10.1.1.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.0.1}, {type: InternalIP, address: 192.168.0.101}]}
- kind: Node
  metadata: {name: n2}
  spec: {podCIDRs: [10.1.2.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
- kind: Pod
  metadata: {name: server, namespace: b, labels: {app: server}}
  spec:
    nodeName: n1
    containers:
    - name: s
      ports: [{name: web, containerPort: 8080}, {containerPort: 9999}]
      livenessProbe: {httpGet: {path: /healthz, port: web}}
      readinessProbe: {tcpSocket: {port: 8081}}
      startupProbe: {exec: {command: [cat, /ready]}}
  status: {phase: Running, podIP: 10.1.1.9, hostIP: 192.168.0.1}
- kind: NetworkPolicy
  metadata: {name: pods-only, namespace: b}
  spec:
    podSelector: {}
    ingress: [{from: [{namespaceSelector: {}}]}]
"""

STATE = ClusterState.build(parse_documents("world", WORLD))
ALL_NODES = ["192.168.0.1/32", "192.168.0.101/32", "192.168.0.2/32"]


def _drop(src_ip: str, port: int, kind: EndpointKind = EndpointKind.HOST, node: str = "n1") -> Flow:
    return Flow(1, Verdict.DROPPED, Endpoint(kind, src_ip),
                Endpoint(EndpointKind.POD, "10.1.1.9", "b", "server", {"app": "server"}), destination_port=port,
                node=node, drop_kind=DropKind.POLICY_DENIED, direction=Direction.INGRESS,
                tcp_flags=frozenset({"SYN"}))


def _observed(cni: str, flow: Flow) -> Explanation:
    return explain_flow(Engine(STATE, profiles.parse(cni)), flow)


def _whatif(cni: str, src: str, port: int) -> Explanation:
    engine = Engine(STATE, profiles.parse(cni))
    return explain_connection(engine, queries.connection(STATE, queries.Query(src, "b/server", port)))


def _trap(expl: Explanation) -> str | None:
    return next((t.detail for t in expl.traps if t.id == "kubelet-probe"), None)


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        pytest.param(lambda: _observed("spec", _drop("192.168.0.1", 8080)),
                     ["own node n1", "liveness probe (httpGet port web (= 8080))", "yet the CNI dropped it",
                      "admit every node's address", ", ".join(ALL_NODES), "node CIDR (e.g. 192.168.0.0/25",
                      "never one node's /32", "exec probe"], id="observed-drop-spec"),
        pytest.param(lambda: _observed("cilium", _drop("192.168.0.1", 8081)),
                     ["readiness probe (tcpSocket port 8081)", "Likely setting: on Cilium, allow-localhost=policy",
                      "policy-enforcement-mode=always", "fromEntities: [host]", "policy-cidr-match-mode=nodes"],
                     id="observed-drop-cilium"),
        pytest.param(lambda: _observed("cilium", _drop("10.1.1.1", 8080)),
                     ["own node n1", "yet the CNI dropped it"], id="observed-drop-from-the-cilium-host-address"),
        pytest.param(lambda: _observed("aws-vpc-cni", _drop("192.168.0.1", 8080)),
                     ["exempts only the node's primary IP"], id="observed-drop-aws"),
        pytest.param(lambda: _whatif("cilium,allow-localhost=policy", "192.168.0.1", 8080),
                     ["under CNI profile cilium (allow-localhost=policy)", "fromEntities: [host]"],
                     id="whatif-cilium-allow-localhost-policy"),
        pytest.param(lambda: _whatif("aws-vpc-cni", "192.168.0.101", 8080),
                     ["only exempts the node's primary IP (192.168.0.1)", "admit every node's address"],
                     id="whatif-aws-secondary-address"),
    ],
)
def test_the_trap_fires_on_evidence_and_names_the_right_node(make: object, fragments: list[str]) -> None:
    """An observed drop from the pod's own node to a probe port, or a profile that does not exempt the node."""
    assert callable(make)
    expl = make()
    detail = _trap(expl)
    assert detail is not None, expl.traps
    for fragment in fragments:
        assert fragment in detail
    assert "n2" not in detail.split("Fix")[0]


def test_an_observed_probe_drop_that_the_spec_exempts_is_a_disagreement() -> None:
    """The engine allows it (own node); the answer says the CNI dropped it anyway and why."""
    expl = _observed("cilium", _drop("192.168.0.1", 8080))
    assert expl.verdict.allowed
    assert expl.agreement.agrees is False
    assert "own node" in expl.agreement.causes[0]
    assert expl.headline.startswith("DROPPED by the CNI, but node n1 (192.168.0.1) -> b/server TCP/8080")


def test_on_cilium_no_ipblock_fix_is_offered_for_the_host() -> None:
    """A NetworkPolicy ipBlock does not match Cilium's host identity: no such fix is proposed as checked."""
    expl = _whatif("cilium,allow-localhost=policy", "192.168.0.1", 8080)
    assert not any("ipBlock" in f.apply or "cidr:" in f.apply for f in expl.fixes)


def test_elsewhere_the_fix_admits_every_node_and_works() -> None:
    """The fix covers every node's InternalIP (the pod moves), is checked, and applying it allows the probe."""
    engine = Engine(STATE, profiles.parse("aws-vpc-cni"))
    conn = queries.connection(STATE, queries.Query("192.168.0.101", "b/server", 8080))
    expl = explain_connection(engine, conn)
    assert len(expl.fixes) == 1
    fix = expl.fixes[0]
    assert fix.verified
    cidrs = [p["ipBlock"]["cidr"] for r in fix.objects[0]["spec"]["ingress"] for p in r.get("from", ())
             if "ipBlock" in p]
    assert cidrs == ALL_NODES
    fixed = STATE.with_objects(*parse_documents("fix", json.dumps(dict(fix.objects[0]))))
    after = Engine(fixed, engine.profile)
    for src in ("192.168.0.101", "192.168.0.1"):
        assert after.evaluate(queries.connection(fixed, queries.Query(src, "b/server", 8080))).allowed


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _whatif("spec", "192.168.0.1", 8080), id="whatif-own-node-spec-is-allowed"),
        pytest.param(lambda: _whatif("cilium", "n1", 8080), id="whatif-own-node-cilium-is-allowed"),
        pytest.param(lambda: _whatif("spec", "192.168.0.2", 8080), id="whatif-from-another-node"),
        pytest.param(lambda: _whatif("cilium,allow-localhost=policy", "192.168.0.2", 8080),
                     id="whatif-another-node-non-exempting-profile"),
        pytest.param(lambda: _whatif("cilium,allow-localhost=policy", "192.168.0.1", 9999),
                     id="whatif-own-node-not-a-probe-port"),
        pytest.param(lambda: _observed("spec", _drop("192.168.0.1", 9999)), id="observed-drop-not-a-probe-port"),
        pytest.param(lambda: _observed("spec", _drop("192.168.0.2", 8080, EndpointKind.REMOTE_NODE)),
                     id="observed-drop-from-another-node"),
    ],
)
def test_the_trap_does_not_fire_without_evidence(make: object) -> None:
    """Own node under an exempting profile, another node, or a port no probe uses: no kubelet-probe trap."""
    assert callable(make)
    expl = make()
    assert _trap(expl) is None
    text = rendering.explanation_text(expl)
    assert "kubelet-probe" not in text
    assert "is the address of n1" not in text


def test_the_cilium_fix_is_a_valid_cilium_network_policy_for_the_host() -> None:
    """The CiliumNetworkPolicy in the trap parses as YAML and admits the host entity on the probe port only."""
    detail = _trap(_whatif("cilium,allow-localhost=policy", "192.168.0.1", 8080))
    assert detail is not None
    start = detail.index("{apiVersion: cilium.io/v2")
    end = detail.index("TCP}]}]}]}}", start) + len("TCP}]}]}]}}")
    cnp = yaml.safe_load(detail[start:end])
    assert cnp["kind"] == "CiliumNetworkPolicy"
    assert cnp["metadata"]["namespace"] == "b"
    assert cnp["spec"]["endpointSelector"] == {"matchLabels": {"app": "server"}}
    assert cnp["spec"]["ingress"] == [{"fromEntities": ["host"],
                                       "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]


def test_the_deferred_blast_radius_keeps_the_every_node_fix() -> None:
    """The daemon completes the radius later (explaining.complete): the fix stays every node's, never a /32."""
    engine = Engine(STATE, profiles.parse("aws-vpc-cni"))
    flow = _drop("192.168.0.101", 8080)
    quick = explain_flow(engine, flow, blast_radius=False)
    assert [f.blast_radius for f in quick.fixes] == [None]
    done = complete(engine, quick)
    (fix,) = done.fixes
    assert fix.verified
    assert fix.blast_radius is not None
    assert "192.168.0.2/32" in fix.apply
    assert "192.168.0.101/32" in fix.apply


def test_asking_from_another_node_says_where_the_probes_come_from() -> None:
    """From n2 to the probe port of a pod on n1: a note names n1 as the pod's own node, never n2."""
    expl = _whatif("spec", "192.168.0.2", 8080)
    assert "192.168.0.2 is node n2, not b/server's own node n1" in " ".join(expl.notes)
    assert _trap(expl) is None


def test_the_drop_signature_names_the_isolating_policy_of_an_exempt_probe_drop() -> None:
    """The CNI dropped a probe the spec exempts: the signature (metrics, alerts) still names the isolating policy."""
    from drop_explainer.sinks.base import signature_of

    flow = _drop("192.168.0.1", 8080)
    expl = _observed("cilium", flow)
    assert expl.verdict.allowed
    assert signature_of(flow, expl, STATE).policies == ("b/pods-only",)
