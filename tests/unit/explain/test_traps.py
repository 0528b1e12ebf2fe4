"""Traps beyond the stories, each built from a small state where it must (and must not) appear."""

from __future__ import annotations

import pytest

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.explaining import explain_connection
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine

BASE = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: a, labels: {kubernetes.io/metadata.name: a}}}
- {kind: Namespace, metadata: {name: b, labels: {kubernetes.io/metadata.name: b}}}
- kind: Node
  metadata: {name: n1}
  spec: {podCIDRs: [10.1.1.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
- kind: Node
  metadata: {name: n2}
  spec: {podCIDRs: [10.1.2.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
- kind: Pod
  metadata: {name: client, namespace: a, labels: {app: client}}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, podIP: 10.1.1.5, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: agent, namespace: a, labels: {app: agent}}
  spec: {nodeName: n2, hostNetwork: true, containers: [{name: c}]}
  status: {phase: Running, podIP: 192.168.0.2, hostIP: 192.168.0.2}
- kind: Pod
  metadata: {name: server, namespace: b, labels: {app: server}}
  spec:
    nodeName: n1
    containers: [{name: s, ports: [{name: web, containerPort: 8080}]}]
  status: {phase: Running, podIP: 10.1.1.9, hostIP: 192.168.0.1}
- kind: Service
  metadata: {name: server, namespace: b}
  spec: {selector: {app: server}, clusterIP: 10.96.5.5, ports: [{port: 80, targetPort: web}]}
"""


def _engine(policies: str) -> Engine:
    return Engine(ClusterState.build(parse_documents("base", BASE) + parse_documents("policies", policies)))


def _traps(policies: str, src: str, dst: str, port: int, proto: str = "TCP") -> list[str]:
    engine = _engine(policies)
    conn = queries.connection(engine.state, queries.Query(src, dst, port, proto))
    expl = explain_connection(engine, conn)
    assert not expl.verdict.allowed
    assert all(f.verified for f in expl.fixes)
    return [t.id for t in expl.traps]


DENY_B = """
kind: NetworkPolicy
metadata: {name: deny, namespace: b}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


@pytest.mark.parametrize(
    ("policies", "src", "dst", "port", "expected"),
    [
        pytest.param(DENY_B + """
---
kind: NetworkPolicy
metadata: {name: egress-only, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
  ingress: [{from: [{namespaceSelector: {}}]}]
""", "a/client", "b/server", 8080, "ingress-rules-ignored", id="ingress-rules-ignored"),
        pytest.param("""
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: a}
spec: {podSelector: {}, policyTypes: [Egress]}
---
kind: NetworkPolicy
metadata: {name: allow-b, namespace: a}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Ingress]
  egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]}]
""", "a/client", "b/server", 8080, "egress-rules-ignored", id="egress-rules-ignored"),
        pytest.param("""
kind: NetworkPolicy
metadata: {name: from-agent, namespace: b}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: agent}}}]}]
""", "a/agent", "b/server", 8080, "host-network-peer", id="host-network-peer"),
        pytest.param("""
kind: NetworkPolicy
metadata: {name: to-service-ip, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.96.5.5/32}}]}]
""", "a/client", "b/server", 8080, "ipblock-service-ip", id="ipblock-service-ip"),
        pytest.param("""
kind: NetworkPolicy
metadata: {name: named, namespace: b}
spec:
  podSelector: {}
  ingress: [{ports: [{port: http}]}]
""", "a/client", "b/server", 8080, "named-port-undefined", id="named-port-undefined"),
        pytest.param("""
kind: NetworkPolicy
metadata: {name: pods-only, namespace: b}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}}]}]
""", "192.168.0.2", "b/server", 8080, "kubelet-probe-absent", id="no-probe-port-no-kubelet-trap"),
    ],
)
def test_trap_is_detected_from_state(policies: str, src: str, dst: str, port: int, expected: str) -> None:
    """Each trap appears exactly when the objects show it, and its fix is verified."""
    found = _traps(policies, src, dst, port)
    if expected.endswith("-absent"):
        assert expected.removesuffix("-absent") not in found
    else:
        assert expected in found


def test_rules_ignored_fix_adds_the_missing_policy_type() -> None:
    """When ignored rules would admit the connection, the fix lists the direction in policyTypes."""
    engine = _engine(DENY_B + """
---
kind: NetworkPolicy
metadata: {name: egress-only, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
  ingress: [{from: [{namespaceSelector: {}}]}]
""")
    conn = queries.connection(engine.state, queries.Query("a/client", "b/server", 8080, "TCP"))
    fix = explain_connection(engine, conn).fixes[0]
    assert fix.kind == "policy-types"
    assert fix.objects[0]["spec"]["policyTypes"] == ["Egress", "Ingress"]
    assert fix.verified


def test_both_directions_denied_gets_one_fix_each_checked_together() -> None:
    """Egress of the client and ingress of the server both deny; two fixes, verified as a pair."""
    engine = _engine(DENY_B + """
---
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: a}
spec: {podSelector: {}, policyTypes: [Egress]}
""")
    conn = queries.connection(engine.state, queries.Query("a/client", "b/server", 8080, "TCP"))
    expl = explain_connection(engine, conn)
    assert [t.direction for t in expl.denying] == ["egress", "ingress"]
    assert [f.kind for f in expl.fixes] == ["new-policy", "new-policy"]
    assert all(f.verified for f in expl.fixes)
    assert "egress of a/client is isolated by a/deny-egress" in expl.headline
