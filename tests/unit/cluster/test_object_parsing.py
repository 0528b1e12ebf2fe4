"""Kubernetes JSON to slim records: the defaults the API server would apply.

The engine trusts these records, so the defaulting (policyTypes, protocol,
the namespace name label) and the address indexes are pinned here.
"""

from __future__ import annotations

import pytest

from drop_explainer.cluster import objects as o
from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState

PODS_AND_NODES = """
apiVersion: v1
kind: List
items:
- kind: Node
  metadata: {name: n1}
  spec: {podCIDR: 10.244.1.0/24}
  status: {addresses: [{type: InternalIP, address: 172.18.0.11}, {type: ExternalIP, address: 198.51.100.11},
                       {type: Hostname, address: n1}]}
- kind: Node
  metadata: {name: n2}
  spec: {podCIDRs: [10.244.2.0/24, "fd00::/64"]}
  status: {addresses: [{type: InternalIP, address: 172.18.0.12}]}
- kind: Pod
  metadata: {name: web, namespace: shop}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: "fd00::10"}]}
- kind: Pod
  metadata: {name: old, namespace: shop}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Succeeded, podIP: 10.244.1.11}
- kind: Pod
  metadata: {name: agent, namespace: kube-system}
  spec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}
  status: {phase: Running, podIP: 172.18.0.11, hostIP: 172.18.0.11}
- kind: Namespace
  metadata: {name: shop, labels: {team: a}}
"""


def _policy(spec: str) -> o.NetworkPolicy:
    text = f"kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: p, namespace: ns}}\nspec: {spec}"
    (policy,) = parse_documents("policy.yaml", text)
    assert isinstance(policy, o.NetworkPolicy)
    return policy


@pytest.mark.parametrize(
    ("spec", "types", "explicit"),
    [
        pytest.param("{podSelector: {}}", {"Ingress"}, False, id="nothing-means-ingress"),
        pytest.param("{podSelector: {}, ingress: [{}]}", {"Ingress"}, False, id="ingress-rules-mean-ingress"),
        pytest.param("{podSelector: {}, egress: [{}]}", {"Ingress", "Egress"}, False, id="egress-rules-add-egress"),
        pytest.param("{podSelector: {}, egress: []}", {"Ingress"}, False, id="empty-egress-list-adds-nothing"),
        pytest.param("{podSelector: {}, policyTypes: [], egress: [{}]}", {"Ingress", "Egress"}, False,
                     id="empty-types-list-is-defaulted"),
        pytest.param("{podSelector: {}, policyTypes: [Egress]}", {"Egress"}, True, id="explicit-egress-only"),
        pytest.param("{podSelector: {}, policyTypes: [Ingress], egress: [{}]}", {"Ingress"}, True,
                     id="explicit-ingress-despite-egress-rules"),
    ],
)
def test_policy_types_are_defaulted_like_the_api_server(spec: str, types: set[str], explicit: bool) -> None:
    """Ingress always; Egress only with at least one egress rule; explicit lists are kept as written."""
    policy = _policy(spec)
    assert policy.policy_types == types
    assert policy.policy_types_explicit is explicit


@pytest.mark.parametrize(
    ("port_yaml", "expected"),
    [
        pytest.param("{}", o.PolicyPort("TCP", None, None), id="empty-entry-all-tcp"),
        pytest.param("{port: 80}", o.PolicyPort("TCP", 80, None), id="protocol-defaults-to-tcp"),
        pytest.param("{protocol: UDP}", o.PolicyPort("UDP", None, None), id="protocol-only"),
        pytest.param("{protocol: SCTP, port: http}", o.PolicyPort("SCTP", "http", None), id="named"),
        pytest.param("{port: '8080'}", o.PolicyPort("TCP", 8080, None), id="digits-string-is-a-number"),
        pytest.param("{port: 8000, endPort: 8080}", o.PolicyPort("TCP", 8000, 8080), id="range"),
    ],
)
def test_policy_ports_are_read_with_their_defaults(port_yaml: str, expected: o.PolicyPort) -> None:
    """A port entry becomes protocol, port (number or name or None) and optional end."""
    (rule,) = _policy(f"{{podSelector: {{}}, ingress: [{{ports: [{port_yaml}]}}]}}").ingress
    assert rule.ports == (expected,)


def test_peers_and_rules_keep_absent_and_empty_apart() -> None:
    """from absent and from: [] both give no peers (all); ingress: [] gives no rules (none)."""
    assert _policy("{podSelector: {}, ingress: [{}, {from: []}]}").ingress == (o.Rule(), o.Rule())
    assert _policy("{podSelector: {}, ingress: []}").ingress == ()
    peer = _policy("{podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {}}]}]}").ingress[0].peers
    assert peer == (o.Peer(o.LabelSelector(), o.LabelSelector(), None),)


@pytest.mark.parametrize(
    ("namespace_yaml", "labels"),
    [
        pytest.param("{name: shop}", {"kubernetes.io/metadata.name": "shop"}, id="added-when-missing"),
        pytest.param("{name: shop, labels: {team: a}}", {"team": "a", "kubernetes.io/metadata.name": "shop"},
                     id="added-beside-others"),
        pytest.param("{name: shop, labels: {kubernetes.io/metadata.name: other}}",
                     {"kubernetes.io/metadata.name": "shop"}, id="always-the-name"),
    ],
)
def test_namespace_always_carries_its_name_label(namespace_yaml: str, labels: dict[str, str]) -> None:
    """The API server sets kubernetes.io/metadata.name on every namespace; so does the loader."""
    (ns,) = parse_documents("ns.yaml", f"kind: Namespace\napiVersion: v1\nmetadata: {namespace_yaml}")
    assert isinstance(ns, o.Namespace)
    assert dict(ns.labels) == labels


def test_namespaces_only_referenced_exist_with_their_name_label() -> None:
    """A pod's or policy's namespace missing from the file still exists for selectors."""
    state = ClusterState.build(parse_documents("state.yaml", PODS_AND_NODES))
    assert dict(state.namespaces["kube-system"].labels) == {"kubernetes.io/metadata.name": "kube-system"}
    assert state.namespaces["shop"].labels["team"] == "a"


@pytest.mark.parametrize(
    ("ip", "found"),
    [
        pytest.param("10.244.1.10", "pod shop/web", id="pod-v4"),
        pytest.param("fd00::10", "pod shop/web", id="pod-v6"),
        pytest.param("10.244.1.11", "nothing", id="finished-pod-releases-its-address"),
        pytest.param("172.18.0.11", "node n1", id="host-network-pod-address-is-the-node"),
        pytest.param("198.51.100.11", "node n1", id="external-ip-of-node"),
        pytest.param("172.18.0.12", "node n2", id="internal-ip-of-node"),
        pytest.param("10.244.9.9", "nothing", id="unknown-address"),
    ],
)
def test_state_indexes_addresses_as_the_datapath_sees_them(ip: str, found: str) -> None:
    """Pod addresses name running, non host-network pods; node addresses name nodes."""
    state = ClusterState.build(parse_documents("state.yaml", PODS_AND_NODES))
    pod, node = state.pod_by_ip.get(ip), state.node_by_ip.get(ip)
    assert (f"pod {pod.key}" if pod else f"node {node.name}" if node else "nothing") == found


@pytest.mark.parametrize(
    ("ip", "inside"),
    [
        pytest.param("10.244.1.200", True, id="single-pod-cidr"),
        pytest.param("10.244.2.7", True, id="pod-cidrs-list"),
        pytest.param("fd00::99", True, id="v6-pod-cidr"),
        pytest.param("10.244.3.1", False, id="outside"),
    ],
)
def test_pod_network_is_the_union_of_node_pod_cidrs(ip: str, inside: bool) -> None:
    """podCIDR and podCIDRs both count, in either family."""
    assert ClusterState.build(parse_documents("state.yaml", PODS_AND_NODES)).in_pod_network(ip) is inside


def test_pod_record_keeps_what_explanations_need() -> None:
    """Addresses, host networking, named container ports with protocols, and probes."""
    text = """
kind: Pod
metadata: {name: api, namespace: b, labels: {app: api}}
spec:
  nodeName: n2
  containers:
  - name: api
    ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]
    livenessProbe: {httpGet: {path: /healthz, port: http}}
    readinessProbe: {tcpSocket: {port: 8080}}
    startupProbe: {exec: {command: [true]}}
status: {phase: Running, hostIP: 172.18.0.12, podIPs: [{ip: 10.244.2.20}]}
"""
    (pod,) = parse_documents("pod.yaml", text)
    assert isinstance(pod, o.Pod)
    assert (pod.key, pod.ips, pod.host_ip, pod.host_network) == ("b/api", ("10.244.2.20",), "172.18.0.12", False)
    (container,) = pod.containers
    assert container.ports == (o.ContainerPort(8080, "TCP", "http"), o.ContainerPort(53, "UDP", "dns"))
    assert container.probes == (
        o.Probe("api", "liveness", "httpGet", "http"),
        o.Probe("api", "readiness", "tcpSocket", 8080),
        o.Probe("api", "startup", "exec", None),
    )
