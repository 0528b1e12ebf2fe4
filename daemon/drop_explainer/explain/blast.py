"""What else a fix lets through: the blast radius a reviewer weighs before applying it.

Only a rule that is new (or newly effective) can allow something new, and
only between the pods its policy selects and the peers it names, on the
ports it names. So instead of re-evaluating every pair of a 5,000-pod
state, we enumerate exactly those candidates and compare the engine's
verdict before and after: the count is exact and the cost is proportional
to what the fix opens.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from drop_explainer.cluster.objects import LabelSelector, NetworkPolicy, Peer, Pod, PolicyType, Rule
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.model import BlastRadius
from drop_explainer.policy import ports, selectors
from drop_explainer.policy.endpoints import Subject, SubjectKind, ip_subject, pod_subject
from drop_explainer.policy.engine import Connection, Engine, ip_in_block, rules_of

EXAMPLES = 5
_NAME_LABEL = "kubernetes.io/metadata.name"
CAP = 2000
"""Stop counting here: a fix that opens thousands of paths needs no exact figure to be rejected,
and counting them all would cost more than the rest of the explanation."""


class ChangeLike(Protocol):
    @property
    def effective(self) -> tuple[tuple[NetworkPolicy, PolicyType, Rule], ...]: ...
    @property
    def labels(self) -> tuple[tuple[str, Mapping[str, str]], ...]: ...


def refresh(state: ClusterState, s: Subject) -> Subject:
    """The same endpoint with its namespace labels as this state has them."""
    if s.pod is None:
        return s
    labels = state.namespace_labels(s.pod.namespace)
    if labels is s.namespace_labels:
        return s
    return Subject(s.kind, s.ip, s.pod, s.node, s.service, labels)


def selected(state: ClusterState, policy: NetworkPolicy) -> list[Pod]:
    return [p for p in state.pods_by_namespace.get(policy.namespace, ())
            if not p.host_network and selectors.matches(policy.pod_selector, p.labels)]


def _all_pods(state: ClusterState) -> Iterator[Pod]:
    return (p for p in state.pods.values() if not p.host_network and p.ips)


def _peer_pods(state: ClusterState, peer: Peer, policy_ns: str) -> Iterator[Pod]:
    if peer.ip_block is not None:
        net = ipaddress.ip_network(peer.ip_block.cidr, strict=False)
        if net.num_addresses == 1:
            pod = state.pod_by_ip.get(str(net.network_address))
            yield from (pod,) if pod is not None else ()
        else:
            yield from (p for p in _all_pods(state) if any(ip_in_block(ip, peer.ip_block) for ip in p.ips))
        return
    if peer.namespace_selector is None:
        namespaces = [policy_ns]
    else:
        sel = peer.namespace_selector
        named = dict(sel.match_labels).get(_NAME_LABEL)
        # The fixes we write name their namespace: look it up instead of testing all of them.
        pool = [named] if named is not None else list(state.pods_by_namespace)
        namespaces = [n for n in pool if selectors.matches(sel, state.namespace_labels(n))]
    for ns in namespaces:
        for pod in state.pods_by_namespace.get(ns, ()):
            if not pod.host_network and pod.ips and (
                    peer.pod_selector is None or selectors.matches(peer.pod_selector, pod.labels)):
                yield pod


def _peer_nodes(state: ClusterState, peer: Peer) -> Iterator[str]:
    if peer.ip_block is None:
        return
    for node in state.nodes.values():
        for kind, addr in node.addresses:
            if kind == "InternalIP" and ip_in_block(addr, peer.ip_block):
                yield addr


class _Subjects:
    """One Subject per pod and address, built once per state."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._pods: dict[str, Subject] = {}

    def pod(self, pod: Pod) -> Subject:
        s = self._pods.get(pod.key)
        if s is None:
            s = self._pods[pod.key] = pod_subject(self.state, pod)
        return s

    def rule_others(self, rule: Rule, policy_ns: str, ends: Iterable[Subject], only_ns: str | None) -> list[Subject]:
        """Every endpoint a rule's peers can match (all of them for a rule without peers)."""
        out: dict[str, Subject] = {}
        peers = rule.peers or (Peer(namespace_selector=LabelSelector()),)
        for peer in peers:
            for pod in _peer_pods(self.state, peer, policy_ns):
                if only_ns is None or pod.namespace == only_ns:
                    out[pod.key] = self.pod(pod)
            if only_ns is None:
                for addr in _peer_nodes(self.state, peer):
                    out[addr] = ip_subject(self.state, addr)
                if not rule.peers:
                    for node in self.state.nodes.values():
                        for kind, addr in node.addresses:
                            if kind == "InternalIP":
                                out[addr] = ip_subject(self.state, addr)
        for end in ends:
            # Addresses outside the pods and nodes of the state: only those the answer names are known.
            if end.pod is None and end.ip is not None and only_ns is None and (not rule.peers or any(
                    p.ip_block is not None and ip_in_block(end.ip, p.ip_block) for p in rule.peers)):
                out.setdefault(end.ip, end)
        return list(out.values())


def _effective(before: ClusterState, after: ClusterState,
               change: ChangeLike) -> Iterator[tuple[NetworkPolicy, PolicyType, Rule, str | None]]:
    yield from ((p, d, r, None) for p, d, r in change.effective)
    for ns, _ in change.labels:
        # Only a namespaceSelector that matches ns after and not before can admit something new.
        was, now = before.namespace_labels(ns), after.namespace_labels(ns)
        for policy in after.policies.values():
            for d in policy.policy_types:
                for rule in rules_of(policy, d):
                    if any(p.namespace_selector is not None and selectors.matches(p.namespace_selector, now)
                           and not selectors.matches(p.namespace_selector, was) for p in rule.peers):
                        yield policy, d, rule, ns


def _name(s: Subject) -> str:
    return s.pod.key if s.pod is not None and s.kind is SubjectKind.POD else (s.ip or "?")


def _ports(rule: Rule, dst: Subject, asked: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Declared container ports of the destination (plus the answer's ports) that the rule admits."""
    candidates = set(asked)
    if dst.pod is not None and dst.is_pod:
        candidates.update((p.container_port, p.protocol) for c in dst.pod.containers for p in c.ports)
    dest_pod = dst.pod if dst.is_pod else None
    return {(n, proto) for n, proto in candidates if ports.ports_match(rule.ports, n, proto, dest_pod)}


def blast_radius(before: Engine, after: Engine, conn: Connection, changes: Iterable[ChangeLike], *,
                 intended: Iterable[Connection] = (), limit: int | None = None) -> BlastRadius:
    """Which other (source, destination, port) the changes newly allow, among those the state knows.

    The universe is fixed so that a brute-force count can check it: every
    pod with an address (host-network pods excepted, they are their node),
    every node InternalIP and the endpoints the answer names, as sources and
    destinations; as ports, the destination's declared container ports plus
    the answer's. ``conn`` and ``intended`` are what the fix is for, not
    counted. Counting stops past ``limit`` (the result is then capped): when
    ranking fixes, one that opens more than the best so far has lost.
    """
    cap = CAP if limit is None else min(CAP, limit + 1)
    old, new = _Subjects(before.state), _Subjects(after.state)
    answer = [conn, *intended]
    seen: set[tuple[str, str, int, str]] = {(_name(c.source), _name(c.destination), c.port, c.protocol)
                                           for c in answer}
    asked = {(c.port, c.protocol) for c in answer}
    ends = [e for c in answer for e in (c.source, c.destination)]
    newly: list[str] = []
    for change in changes:
        for policy, direction, rule, only_ns in _effective(before.state, after.state, change):
            mine_all = [new.pod(p) for p in selected(after.state, policy)]
            others = new.rule_others(rule, policy.namespace, ends, only_ns)
            for mine in mine_all:
                for other in others:
                    src, dst = (other, mine) if direction is PolicyType.INGRESS else (mine, other)
                    if src.pod is not None and src.pod is dst.pod:
                        continue
                    for port, proto in _ports(rule, dst, asked):
                        key = (_name(src), _name(dst), port, proto)
                        if key in seen:
                            continue
                        seen.add(key)
                        if not after.evaluate(Connection(src, dst, port, proto)).allowed:
                            continue
                        was = Connection(_old(old, src), _old(old, dst), port, proto)
                        if not before.evaluate(was).allowed:
                            newly.append(f"{key[0]} -> {key[1]} {proto}/{port}")
                            if len(newly) >= cap:
                                return _radius(newly, capped=True)
    return _radius(newly, capped=False)


def _radius(newly: list[str], *, capped: bool) -> BlastRadius:
    newly.sort()
    return BlastRadius(len(newly), tuple(newly[:EXAMPLES]), capped)


def _old(old: _Subjects, s: Subject) -> Subject:
    return old.pod(s.pod) if s.pod is not None and s.is_pod else s
