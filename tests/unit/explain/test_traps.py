"""Traps beyond the stories, each built from a small state where it must (and must not) appear."""

from __future__ import annotations

from pathlib import Path

import pytest

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.explaining import explain_connection
from drop_explainer.explain.traps import TITLES
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine

BASE = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: a, labels: {kubernetes.io/metadata.name: a, team: payments}}}
- {kind: Namespace, metadata: {name: b, labels: {kubernetes.io/metadata.name: b}}}
- {kind: Namespace, metadata: {name: kube-system, labels: {kubernetes.io/metadata.name: kube-system}}}
- kind: Namespace
  metadata: {name: monitoring, labels: {kubernetes.io/metadata.name: monitoring, purpose: monitoring}}
- kind: Node
  metadata: {name: n0, labels: {node-role.kubernetes.io/control-plane: ""}}
  status: {addresses: [{type: InternalIP, address: 192.168.0.100}]}
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
- kind: Pod
  metadata: {name: dual, namespace: b, labels: {app: dual}}
  spec:
    nodeName: n1
    containers: [{name: s, ports: [{name: web, containerPort: 8080}, {name: admin, containerPort: 80}]}]
  status: {phase: Running, podIP: 10.1.1.10, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: helper, namespace: b, labels: {app: helper}}
  spec: {nodeName: n1, containers: [{name: h}]}
  status: {phase: Running, podIP: 10.1.1.11, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: coredns-1, namespace: kube-system, labels: {k8s-app: kube-dns, pod-template-hash: abc}}
  spec:
    nodeName: n1
    containers:
    - name: coredns
      ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53}]
  status: {phase: Running, podIP: 10.1.1.53, hostIP: 192.168.0.1}
- kind: Service
  metadata: {name: server, namespace: b}
  spec: {selector: {app: server}, clusterIP: 10.96.5.5, ports: [{port: 80, targetPort: web}]}
- kind: Service
  metadata: {name: dual, namespace: b}
  spec: {selector: {app: dual}, clusterIP: 10.96.5.6, ports: [{port: 80, targetPort: 8080}]}
- kind: Service
  metadata: {name: kube-dns, namespace: kube-system}
  spec:
    selector: {k8s-app: kube-dns}
    clusterIP: 10.96.0.10
    ports: [{name: dns, port: 53, protocol: UDP, targetPort: 53}, {name: dns-tcp, port: 53, targetPort: 53}]
- kind: Service
  metadata: {name: kubernetes, namespace: default}
  spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, targetPort: 6443}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
  addressType: IPv4
  endpoints: [{addresses: [192.168.0.100], conditions: {ready: true}}]
  ports: [{name: https, port: 6443, protocol: TCP}]
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


DENY_A_EGRESS = """
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: a}
spec: {podSelector: {}, policyTypes: [Egress]}
"""


def _ingress_b(rule: str, selector: str = "{}") -> str:
    return f"""
kind: NetworkPolicy
metadata: {{name: rule, namespace: b}}
spec:
  podSelector: {selector}
  policyTypes: [Ingress]
  ingress: [{rule}]
"""


def _egress_a(rule: str) -> str:
    return f"""
kind: NetworkPolicy
metadata: {{name: rule, namespace: a}}
spec:
  podSelector: {{}}
  policyTypes: [Egress]
  egress: [{rule}]
"""


# Each trap id: where it fires, and a near miss where it must not (docs/traps.md states each rule).
# (trap, fires, policies, from, to, port, protocol)
TRAP_CASES = [
    pytest.param("dns-egress", True, DENY_A_EGRESS, ("a/client", "kube-system/coredns-1", 53, "UDP"), id="dns"),
    pytest.param("dns-egress", True, _egress_a("{to: [{namespaceSelector: {}}], ports: [{protocol: UDP, port: 53}]}"),
                 ("a/client", "kube-system/coredns-1", 53, "TCP"), id="dns-tcp-forgotten"),
    pytest.param("dns-egress", False, _egress_a("{to: [{namespaceSelector: {}}], ports: [{protocol: UDP, port: 53}, "
                                                "{protocol: TCP, port: 53}]}"),
                 ("a/client", "8.8.8.8", 53, "UDP"), id="near-miss-dns-allowed-to-kube-dns-only"),
    pytest.param("namespace-label-missing", True,
                 _ingress_b("{from: [{namespaceSelector: {matchLabels: {name: a}}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="namespace-label-same-value-other-key"),
    pytest.param("namespace-label-missing", True,
                 _ingress_b("{from: [{namespaceSelector: {matchLabels: {team: payment}}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="namespace-label-one-edit"),
    pytest.param("namespace-label-missing", True,
                 _ingress_b("{from: [{namespaceSelector: {matchLabels: {env: prod}}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="namespace-label-matches-no-namespace"),
    pytest.param("namespace-label-missing", False,
                 _ingress_b("{from: [{namespaceSelector: {matchLabels: {purpose: monitoring}}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="near-miss-selector-meant-for-monitoring"),
    pytest.param("external-egress", True, _egress_a("{to: [{namespaceSelector: {}}]}"),
                 ("a/client", "198.51.100.25", 443, "TCP"), id="external"),
    pytest.param("external-egress", False,
                 _egress_a("{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [198.51.100.0/24]}}]}"),
                 ("a/client", "198.51.100.25", 443, "TCP"), id="near-miss-external-carved-out"),
    pytest.param("external-egress", False, _egress_a("{to: [{ipBlock: {cidr: 198.51.100.0/24}}], ports: [{port: 80}]}"),
                 ("a/client", "198.51.100.25", 443, "TCP"), id="near-miss-external-covered-other-port"),
    pytest.param("service-port-not-pod-port", True, _ingress_b("{ports: [{port: 80}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="service-port"),
    pytest.param("service-port-not-pod-port", False, _ingress_b("{ports: [{port: 80}]}"),
                 ("a/client", "b/dual", 8080, "TCP"), id="near-miss-pod-serves-the-service-port-too"),
    pytest.param("same-namespace-pod-selector", True,
                 _ingress_b("{from: [{podSelector: {matchLabels: {app: client}}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="same-namespace"),
    pytest.param("same-namespace-pod-selector", False,
                 _ingress_b("{from: [{podSelector: {matchExpressions: [{key: app, operator: In, "
                            "values: [client, helper]}]}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="near-miss-selector-selects-pods-at-home"),
    pytest.param("ingress-rules-ignored", True, DENY_B + """
---
kind: NetworkPolicy
metadata: {name: egress-only, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
  ingress: [{from: [{namespaceSelector: {}}]}]
""", ("a/client", "b/server", 8080, "TCP"), id="ingress-rules-ignored"),
    pytest.param("ingress-rules-ignored", False, DENY_B + """
---
kind: NetworkPolicy
metadata: {name: egress-only, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {purpose: monitoring}}}]}]
""", ("a/client", "b/server", 8080, "TCP"), id="near-miss-ignored-rules-would-not-admit"),
    pytest.param("egress-rules-ignored", True, DENY_A_EGRESS + """
---
kind: NetworkPolicy
metadata: {name: allow-b, namespace: a}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Ingress]
  egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]}]
""", ("a/client", "b/server", 8080, "TCP"), id="egress-rules-ignored"),
    pytest.param("egress-rules-ignored", False, DENY_A_EGRESS + """
---
kind: NetworkPolicy
metadata: {name: allow-b, namespace: a}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Ingress]
  egress: [{to: [{namespaceSelector: {matchLabels: {purpose: monitoring}}}]}]
""", ("a/client", "b/server", 8080, "TCP"), id="near-miss-ignored-egress-would-not-admit"),
    pytest.param("host-network-peer", True,
                 _ingress_b("{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: agent}}}]}"),
                 ("a/agent", "b/server", 8080, "TCP"), id="host-network-peer"),
    pytest.param("host-network-peer", False,
                 _ingress_b("{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]}"),
                 ("a/agent", "b/server", 8080, "TCP"), id="near-miss-no-rule-selects-the-host-pod"),
    pytest.param("apiserver-egress", True, DENY_A_EGRESS, ("a/client", "10.96.0.1", 443, "TCP"), id="apiserver-svc"),
    pytest.param("apiserver-egress", True, DENY_A_EGRESS, ("a/client", "192.168.0.100", 6443, "TCP"),
                 id="apiserver-endpoint"),
    pytest.param("apiserver-egress", False, DENY_A_EGRESS, ("a/client", "192.168.0.1", 6443, "TCP"),
                 id="near-miss-6443-on-a-node-that-is-no-apiserver"),
    pytest.param("ipblock-service-ip", True, _egress_a("{to: [{ipBlock: {cidr: 10.96.5.5/32}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="ipblock-service-ip"),
    pytest.param("ipblock-service-ip", False,
                 _egress_a("{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="near-miss-pods-excepted-on-purpose"),
    pytest.param("named-port-undefined", True, _ingress_b("{ports: [{port: Web}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="named-port-case"),
    pytest.param("named-port-undefined", True, _ingress_b("{ports: [{port: web, protocol: UDP}]}"),
                 ("a/client", "b/server", 8080, "UDP"), id="named-port-other-protocol"),
    pytest.param("named-port-undefined", False, _ingress_b("{ports: [{port: metrics}]}"),
                 ("a/client", "b/server", 8080, "TCP"), id="near-miss-name-of-other-pods"),
    pytest.param("kubelet-probe", False, _ingress_b("{from: [{namespaceSelector: {}}]}"),
                 ("192.168.0.2", "b/server", 8080, "TCP"), id="near-miss-no-probe-port-no-kubelet-trap"),
]


@pytest.mark.parametrize(("trap", "fires", "policies", "query"), TRAP_CASES)
def test_trap_fires_only_on_evidence(trap: str, fires: bool, policies: str, query: tuple[str, str, int, str]) -> None:
    """Each trap appears where the objects show the mistake, and not on its near miss; fixes are verified."""
    found = _traps(policies, *query)
    assert (trap in found) is fires, found


def test_every_trap_id_has_a_near_miss_case_and_a_documented_rule() -> None:
    """A near-miss test per trap id (kubelet-probe's own cases live with the node profiles) and a rule in docs."""
    near = {p.values[0] for p in TRAP_CASES if p.values[1] is False}
    assert near == set(TITLES)
    doc = (Path(__file__).resolve().parents[3] / "docs" / "traps.md").read_text()
    sections = {line: body for line, _, body in (part.partition("\n") for part in doc.split("\n## ")[1:])}
    for trap_id in TITLES:
        body = next((b for head, b in sections.items() if f"`{trap_id}`" in head), None)
        assert body is not None, trap_id
        assert "Must not fire" in body


def test_rules_ignored_fix_adds_the_missing_policy_type() -> None:
    """When ignored rules admit just this connection, listing the direction in policyTypes is the least change."""
    engine = _engine(DENY_B + """
---
kind: NetworkPolicy
metadata: {name: egress-only, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: a}},
                     podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}]}]
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
    # Both policies deny everything and select only these pods: a rule in each opens no more than a new policy,
    # and writes fewer clauses.
    assert [f.kind for f in expl.fixes] == ["add-rule", "add-rule"]
    assert all(f.verified for f in expl.fixes)
    assert "egress of a/client is isolated by a/deny-egress" in expl.headline
