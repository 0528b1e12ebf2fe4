"""Fixes towards Services name what policies see: backends by selector, the API server by its EndpointSlice.

The reproductions: a DNS fix allowed UDP 53 only and came out once per
CoreDNS replica, as identical policies named after pods; fixes used an
ipBlock of a Service cluster IP (kube-dns 10.96.0.10, kubernetes
10.96.0.1:443), which policies never see.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import backends, combining, rendering
from drop_explainer.explain.explaining import explain_connection
from drop_explainer.explain.model import Explanation
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine
from tests.unit.explain import test_traps

DENY_EGRESS = test_traps.DENY_A_EGRESS
SECOND_REPLICA = """
kind: Pod
metadata: {name: coredns-2, namespace: kube-system, labels: {k8s-app: kube-dns, pod-template-hash: abc}}
spec:
  nodeName: n1
  containers:
  - name: coredns
    ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53}]
status: {phase: Running, podIP: 10.1.1.54, hostIP: 192.168.0.1}
"""


def _state(*extra: str, base: str = test_traps.BASE) -> ClusterState:
    objs = parse_documents("base", base)
    for i, text in enumerate(extra):
        objs += parse_documents(f"extra{i}", text)
    return ClusterState.build(objs)


def _explain(state: ClusterState, src: str, dst: str, port: int, proto: str = "TCP") -> Explanation:
    engine = Engine(state)
    return explain_connection(engine, queries.connection(state, queries.Query(src, dst, port, proto)))


def _all_text(expl: Explanation) -> str:
    return json.dumps([rendering.fix_json(f) for f in expl.fixes])


def _egress_rules(expl: Explanation) -> list[dict[str, Any]]:
    return [r for f in expl.fixes for o in f.objects for r in o["spec"].get("egress", [])]


KUBE_DNS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
BOTH_53 = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


@pytest.mark.parametrize(("dst", "proto"), [
    pytest.param("10.96.0.10", "UDP", id="service-ip-udp"),
    pytest.param("10.96.0.10", "TCP", id="service-ip-tcp"),
    pytest.param("kube-system/coredns-1", "UDP", id="replica-udp"),
])
def test_dns_fix_selects_the_service_backends_on_udp_and_tcp(dst: str, proto: str) -> None:
    """One rule: kube-system namespace + the Service's selector, UDP and TCP 53; no ipBlock, no pod name."""
    expl = _explain(_state(DENY_EGRESS, SECOND_REPLICA), "a/client", dst, 53, proto)
    assert [f.verified for f in expl.fixes] == [True]
    assert _egress_rules(expl)[-1] == {"to": [KUBE_DNS_PEER], "ports": BOTH_53}
    text = _all_text(expl)
    assert "ipBlock" not in text
    assert "10.96.0.10" not in text
    assert "coredns-1" not in text


def test_dns_drops_to_two_replicas_merge_into_one_change() -> None:
    """Drops to each CoreDNS replica: one change to one policy, not one identical policy per replica."""
    state = _state(DENY_EGRESS, SECOND_REPLICA)
    expls = [_explain(state, "a/client", f"kube-system/coredns-{i}", 53, "UDP") for i in (1, 2)]
    merged = combining.for_explanations(Engine(state), expls)
    assert [f.target for f in merged] == ["networkpolicy a/deny-egress"]
    assert merged[0].verified
    assert merged[0].objects[0]["spec"]["egress"] == [{"to": [KUBE_DNS_PEER], "ports": BOTH_53}]


def test_dns_fix_as_a_new_policy_is_named_after_the_service() -> None:
    """Where a new policy is the least change, its name is the workload's and the Service's, not a pod's."""
    state = _state("""
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: a}
spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {}}], ports: [{port: 8080}]}]}
""", """
kind: Pod
metadata: {name: other, namespace: a, labels: {app: other}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 53, protocol: UDP}]}]}
status: {phase: Running, podIP: 10.1.1.6, hostIP: 192.168.0.1}
""", SECOND_REPLICA)
    expl = _explain(state, "a/client", "10.96.0.10", 53, "UDP")
    # A rule in deny-egress would open DNS to a/other as well; a policy of client's own opens nothing else.
    assert [(f.kind, f.verified) for f in expl.fixes] == [("new-policy", True)]
    assert expl.fixes[0].blast_radius is not None
    assert expl.fixes[0].blast_radius.count == 0
    assert expl.fixes[0].objects[0]["metadata"]["name"] == "allow-client-egress-to-kube-dns"
    assert expl.fixes[0].apply.startswith("kubectl create -f -")


@pytest.mark.parametrize(("dst", "port"), [
    pytest.param("10.96.0.1", 443, id="kubernetes-service-ip"),
    pytest.param("192.168.0.100", 6443, id="apiserver-endpoint"),
])
def test_apiserver_fix_uses_the_endpointslice_address_and_port(dst: str, port: int) -> None:
    """kubernetes.default is 10.96.0.1:443 to clients and 192.168.0.100:6443 to policies."""
    expl = _explain(_state(DENY_EGRESS), "a/client", dst, port)
    assert [f.verified for f in expl.fixes] == [True]
    assert _egress_rules(expl)[-1] == {"to": [{"ipBlock": {"cidr": "192.168.0.100/32"}}],
                                       "ports": [{"protocol": "TCP", "port": 6443}]}
    assert "10.96.0.1/" not in _all_text(expl)
    assert "apiserver-egress" in [t.id for t in expl.traps]


def test_apiserver_without_endpointslice_gets_no_fix_but_says_where_to_look() -> None:
    """Without the EndpointSlice the addresses policies see are unknown: no fix is invented."""
    base = test_traps.BASE.split("- apiVersion: discovery.k8s.io/v1")[0]
    expl = _explain(_state(DENY_EGRESS, base=base), "a/client", "10.96.0.1", 443)
    assert expl.fixes == ()
    note = next(n for n in expl.notes if n.startswith("no fix is offered"))
    assert "kubectl get endpointslice -n default -l kubernetes.io/service-name=kubernetes" in note
    assert "6443" in note


def test_service_without_ready_backends_gets_no_fix() -> None:
    """A Service whose selector matches no pod: there is nothing a policy could admit, and the note says so."""
    state = _state(DENY_EGRESS, """
kind: Service
metadata: {name: empty, namespace: b}
spec: {selector: {app: nothing}, clusterIP: 10.96.7.7, ports: [{port: 80}]}
""")
    expl = _explain(state, "a/client", "10.96.7.7", 80)
    assert expl.fixes == ()
    assert any("no ready backend" in n for n in expl.notes)


def test_fix_through_a_service_is_checked_after_translation() -> None:
    """A what-if to the Service's cluster IP and port: the fix admits the backend on its targetPort."""
    state = _state(DENY_EGRESS, """
kind: NetworkPolicy
metadata: {name: deny, namespace: b}
spec: {podSelector: {}, policyTypes: [Ingress]}
""")
    expl = _explain(state, "a/client", "10.96.5.5", 80)
    target = backends.translate(state, expl.connection)
    assert [(c.destination.pod.key if c.destination.pod else "", c.port) for c in target.connections] == \
        [("b/server", 8080)]
    assert {f.target for f in expl.fixes} == {"networkpolicy a/deny-egress", "networkpolicy b/deny"}
    assert all(f.verified for f in expl.fixes)
    ingress = next(f for f in expl.fixes if f.target == "networkpolicy b/deny").objects[0]["spec"]["ingress"]
    assert ingress[-1]["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_dns_on_another_target_port_is_allowed_on_udp_and_tcp_of_that_port() -> None:
    """A resolver Service on 53 forwarding to 5353 (as some distributions run it): the fix names 5353 both ways."""
    state = _state(DENY_EGRESS, """
kind: Namespace
metadata: {name: dns}
---
kind: Pod
metadata: {name: resolver-1, namespace: dns, labels: {dns.operator/daemonset: default}}
spec:
  nodeName: n1
  containers:
  - name: dns
    ports: [{name: dns, containerPort: 5353, protocol: UDP}, {name: dns-tcp, containerPort: 5353}]
status: {phase: Running, podIP: 10.1.1.60, hostIP: 192.168.0.1}
---
kind: Service
metadata: {name: dns-default, namespace: dns}
spec:
  selector: {dns.operator/daemonset: default}
  clusterIP: 10.96.0.11
  ports: [{name: dns, port: 53, protocol: UDP, targetPort: dns}, {name: dns-tcp, port: 53, targetPort: dns-tcp}]
""")
    for dst, port in (("10.96.0.11", 53), ("dns/resolver-1", 5353)):
        expl = _explain(state, "a/client", dst, port, "UDP")
        assert [f.verified for f in expl.fixes] == [True]
        assert _egress_rules(expl)[-1]["ports"] == [{"protocol": "UDP", "port": 5353},
                                                    {"protocol": "TCP", "port": 5353}]
        assert "dns-egress" in [t.id for t in expl.traps]
