"""A deliberately naive NetworkPolicy evaluator, written from the Kubernetes spec.

It exists to be compared with the real engine by property tests, so it shares
nothing with ``drop_explainer.policy``: no indexes, no caches, no helpers, only
the parsed object records. Every question is answered by scanning every
policy, the way the networking.k8s.io/v1 reference reads:

- a pod is isolated for a direction when any policy in its namespace selects
  it and lists that direction in policyTypes;
- an isolated pod accepts what any rule of any of those policies allows;
- a connection needs the source's egress and the destination's ingress.

Only (non host-network) pods are selectable and isolable; every other address
(node, host-network pod, external) is matched by ipBlock alone. And, in the
words of NetworkPolicySpec.Ingress (kubernetes/api networking/v1/types.go):
"Traffic is allowed to a pod if there are no NetworkPolicies selecting the pod
OR if the traffic source is the pod's local node".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from drop_explainer.cluster import objects as o
from drop_explainer.cluster.state import ClusterState


@dataclass(frozen=True)
class End:
    """One end of a connection: a selectable pod, or just an address."""

    ip: str | None
    pod: o.Pod | None = None
    node: str | None = None
    """The node of a host-network pod: its traffic is its node's."""


@dataclass(frozen=True)
class Side:
    allowed: bool
    isolated: bool
    policies: frozenset[str]
    """namespace/name of every policy isolating the pod for this direction."""
    allowed_by: frozenset[tuple[str, int]]


@dataclass(frozen=True)
class NaiveVerdict:
    ingress: Side
    egress: Side


def end_of(state: ClusterState, ref: str) -> End:
    """``namespace/pod`` or an IP; a host-network pod or node is only an address."""
    if "/" in ref and ":" not in ref:
        pod = state.pods[ref]
        ip = pod.ips[0] if pod.ips else pod.host_ip
        return End(ip, node=pod.node_name) if pod.host_network else End(ip, pod)
    for pod in state.pods.values():
        if not pod.host_network and pod.phase not in ("Succeeded", "Failed") and ref in pod.ips:
            return End(ref, pod)
    return End(ref)


def label_selector_matches(sel: o.LabelSelector, labels: Mapping[str, str]) -> bool:
    for key, value in sel.match_labels:
        if key not in labels or labels[key] != value:
            return False
    for req in sel.match_expressions:
        has = req.key in labels
        if req.operator == "In" and not (has and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and has and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not has:
            return False
        if req.operator == "DoesNotExist" and has:
            return False
    return True


def in_ip_block(ip: str | None, block: o.IPBlock) -> bool:
    if ip is None:
        return False
    addr = ipaddress.ip_address(ip)
    cidr = ipaddress.ip_network(block.cidr, strict=False)
    if addr.version != cidr.version or addr not in cidr:
        return False
    for e in block.except_:
        net = ipaddress.ip_network(e, strict=False)
        if net.version == addr.version and addr in net:
            return False
    return True


def peer_matches(state: ClusterState, policy: o.NetworkPolicy, peer: o.Peer, end: End) -> bool:
    if peer.ip_block is not None:
        return in_ip_block(end.ip, peer.ip_block)
    if end.pod is None:
        return False
    if peer.namespace_selector is None:
        ns_ok = end.pod.namespace == policy.namespace
    else:
        ns = state.namespaces.get(end.pod.namespace)
        labels = ns.labels if ns is not None else {"kubernetes.io/metadata.name": end.pod.namespace}
        ns_ok = label_selector_matches(peer.namespace_selector, labels)
    pod_ok = peer.pod_selector is None or label_selector_matches(peer.pod_selector, end.pod.labels)
    return ns_ok and pod_ok


def port_allowed(pp: o.PolicyPort, port: int, protocol: str, destination: End) -> bool:
    if pp.protocol != protocol:
        return False
    if pp.port is None:
        return True
    if isinstance(pp.port, int):
        last = pp.end_port if pp.end_port is not None else pp.port
        return pp.port <= port <= last
    if destination.pod is None:
        return False
    return any(
        cp.name == pp.port and cp.protocol == protocol and cp.container_port == port
        for c in destination.pod.containers
        for cp in c.ports
    )


def rule_allows(
    state: ClusterState, policy: o.NetworkPolicy, rule: o.Rule, *, peer: End, port: int, protocol: str, destination: End
) -> bool:
    ports_ok = len(rule.ports) == 0 or any(port_allowed(pp, port, protocol, destination) for pp in rule.ports)
    peers_ok = len(rule.peers) == 0 or any(peer_matches(state, policy, p, peer) for p in rule.peers)
    return ports_ok and peers_ok


def from_local_node(state: ClusterState, pod: o.Pod, other: End) -> bool:
    """Is ``other`` the node ``pod`` runs on: one of its addresses, the pod's hostIP, or a host process there?"""
    if other.pod is not None:
        return False
    if other.node is not None and other.node == pod.node_name:
        return True
    node = state.nodes.get(pod.node_name or "")
    addresses = {a for _, a in node.addresses} if node is not None else set()
    return other.ip is not None and (other.ip == pod.host_ip or other.ip in addresses)


def side(
    state: ClusterState, direction: str, *, subject: End, other: End, port: int, protocol: str, destination: End
) -> Side:
    if subject.pod is None:
        return Side(True, False, frozenset(), frozenset())
    pod = subject.pod
    selecting = [
        p
        for p in state.policies.values()
        if p.namespace == pod.namespace
        and direction in p.policy_types
        and label_selector_matches(p.pod_selector, pod.labels)
    ]
    if not selecting:
        return Side(True, False, frozenset(), frozenset())
    allowed_by = set()
    for p in selecting:
        rules = p.ingress if direction == "Ingress" else p.egress
        for i, rule in enumerate(rules):
            if rule_allows(state, p, rule, peer=other, port=port, protocol=protocol, destination=destination):
                allowed_by.add((p.key, i))
    local = direction == "Ingress" and from_local_node(state, pod, other)
    return Side(bool(allowed_by) or local, True, frozenset(p.key for p in selecting), frozenset(allowed_by))


def evaluate(state: ClusterState, source: str, destination: str, port: int, protocol: str = "TCP") -> NaiveVerdict:
    src, dst = end_of(state, source), end_of(state, destination)
    return NaiveVerdict(
        ingress=side(state, "Ingress", subject=dst, other=src, port=port, protocol=protocol, destination=dst),
        egress=side(state, "Egress", subject=src, other=dst, port=port, protocol=protocol, destination=dst),
    )
