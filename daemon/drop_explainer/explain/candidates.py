"""Every edit that could admit one connection in one direction, before we pick one.

Several edits can let the same connection through: widen the ports of a rule
that only fails on its port, add a rule to any of the policies isolating the
pod, create a policy for its workload, label a namespace, or add a missing
policyType. Which one to propose is decided by what each opens (fixes.py);
this module only builds them, each with what it touches and changes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from drop_explainer.cluster.objects import (
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    PolicyType,
    Rule,
)
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.backends import Target, selector_of
from drop_explainer.explain.blast import selected
from drop_explainer.explain.model import Clause, PolicyTrace
from drop_explainer.explain.traps import evident_label_gaps
from drop_explainer.policy import selectors
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import Connection, Engine, rule_matches, rules_of

# Labels that differ between replicas of one workload: selecting on them
# would allow one pod today and nothing after the next rollout.
_VOLATILE = {"pod-template-hash", "controller-revision-hash", "pod-template-generation",
             "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
             "batch.kubernetes.io/controller-uid", "controller-uid", "batch.kubernetes.io/job-name", "job-name"}
_IDENTIFYING = (("app.kubernetes.io/name", "app.kubernetes.io/instance"), ("app",), ("k8s-app",), ("name",))
_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, slots=True)
class Change:
    """One edit to the state: policies replaced or added, namespace labels added."""

    kind: str
    summary: str
    policies: tuple[NetworkPolicy, ...] = ()
    labels: tuple[tuple[str, Mapping[str, str]], ...] = ()
    effective: tuple[tuple[NetworkPolicy, PolicyType, Rule], ...] = ()
    """The rules that may admit something new after the change: all the blast radius has to look at."""
    clauses: int = 1
    """How many clauses the edit writes (a port, a peer's selectors, a policyType...): the last tie-breaker."""

    @property
    def objects(self) -> int:
        return len(self.policies) + len(self.labels)

    def apply(self, state: ClusterState) -> ClusterState:
        nss = []
        for name, labels in self.labels:
            ns = state.namespaces.get(name) or Namespace(name, {_NAME_LABEL: name})
            nss.append(replace(ns, labels={**ns.labels, **labels}))
        return state.derive(policies=self.policies, namespaces=nss)


def workload_selector(pod: Pod) -> LabelSelector:
    """The labels that pick out this pod's workload, stable across rollouts."""
    for keys in _IDENTIFYING:
        if all(k in pod.labels for k in keys):
            return LabelSelector(tuple((k, pod.labels[k]) for k in keys))
    return LabelSelector(tuple(sorted((k, v) for k, v in pod.labels.items() if k not in _VOLATILE)))


def _namespace_selector(ns: str, labels: Mapping[str, str]) -> LabelSelector:
    if labels.get(_NAME_LABEL) == ns:
        return LabelSelector(((_NAME_LABEL, ns),))
    return LabelSelector(tuple(sorted(labels.items())))


def peer_for(other: Subject, policy_ns: str) -> Peer:
    """A from/to entry that matches ``other`` and as little else as we can say."""
    if other.pod is not None and other.is_pod:
        pod_sel = workload_selector(other.pod)
        if other.pod.namespace == policy_ns:
            return Peer(pod_selector=pod_sel)
        return Peer(pod_selector=pod_sel, namespace_selector=_namespace_selector(other.pod.namespace,
                                                                                 other.namespace_labels or {}))
    assert other.ip is not None
    bits = ipaddress.ip_address(other.ip).max_prefixlen
    return Peer(ip_block=IPBlock(f"{other.ip}/{bits}"))


def target_peers(state: ClusterState, other: Subject, policy_ns: str, target: Target | None) -> tuple[Peer, ...]:
    """The peers for the far end of an egress rule, after Service translation.

    A Service with a selector: its selector (and namespace), so every replica
    today and after the next rollout is admitted by one rule. A Service
    without one (kubernetes.default): the addresses of its EndpointSlices,
    which are what policies see. Anything else: the endpoint itself.
    """
    svc = target.service if target is not None else None
    if svc is not None and svc.selector and other.pod is not None and other.is_pod:
        pod_sel = selector_of(svc)
        if svc.namespace == policy_ns:
            return (Peer(pod_selector=pod_sel),)
        return (Peer(pod_selector=pod_sel,
                     namespace_selector=_namespace_selector(svc.namespace, state.namespace_labels(svc.namespace))),)
    if svc is not None and target is not None and not svc.selector and other.pod is None:
        ips = sorted({c.destination.ip for c in target.connections if c.destination.ip is not None})
        return tuple(peer_for(Subject(other.kind, ip), policy_ns) for ip in ips) or (peer_for(other, policy_ns),)
    return (peer_for(other, policy_ns),)


def target_ports(conn: Connection, target: Target | None) -> tuple[PolicyPort, ...]:
    dns = target.dns_ports() if target is not None else ()
    if dns:
        return tuple(PolicyPort(proto, n) for n in dns for proto in ("UDP", "TCP"))
    if target is not None and target.apiserver:
        return tuple(sorted({PolicyPort(c.protocol, c.port) for c in target.connections},
                            key=lambda p: (p.protocol, str(p.port))))
    return (PolicyPort(conn.protocol, conn.port),)


def dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "allow"


def _short(s: Subject, target: Target | None) -> str:
    if target is not None and target.service is not None:
        return target.service.name
    if s.pod is not None:
        sel = workload_selector(s.pod)
        return "-".join(v for _, v in sel.match_labels) or s.pod.name
    if s.node is not None:
        return f"node-{s.node.name}"
    return f"ip-{s.ip}"


def describe(s: Subject) -> str:
    return s.pod.key if s.pod is not None and s.is_pod else s.describe()


def _ports_text(ports: tuple[PolicyPort, ...]) -> str:
    return " and ".join(f"{p.protocol} {p.port}" for p in ports)


def with_rules(p: NetworkPolicy, direction: PolicyType, rules: tuple[Rule, ...]) -> NetworkPolicy:
    if direction is PolicyType.INGRESS:
        return replace(p, ingress=rules, policy_types_explicit=True)
    return replace(p, egress=rules, policy_types_explicit=True)


def _rule_clauses(rule: Rule) -> int:
    return sum((p.pod_selector is not None) + (p.namespace_selector is not None) + (p.ip_block is not None)
               for p in rule.peers) + (1 if rule.ports else 0)


def _ends(conn: Connection, direction: PolicyType) -> tuple[Subject, Subject]:
    if direction is PolicyType.INGRESS:
        return conn.destination, conn.source
    return conn.source, conn.destination


def port_changes(conn: Connection, direction: PolicyType, traces: tuple[PolicyTrace, ...],
                 target: Target | None) -> Iterator[Change]:
    """Widen the ports of each rule that fails on its port alone."""
    d = direction.value.lower()
    target = target if direction is PolicyType.EGRESS else None
    for t in traces:
        for r in t.rules:
            if t.direction != d or [f.clause for f in r.failures] not in ([Clause.PORT], [Clause.NAMED_PORT]):
                continue
            rule = rules_of(t.policy, direction)[r.index]
            ports = tuple(p for p in target_ports(conn, target) if p not in rule.ports)
            rules = list(rules_of(t.policy, direction))
            rules[r.index] = replace(rule, ports=(*rule.ports, *ports))
            edited = with_rules(t.policy, direction, tuple(rules))
            yield Change("add-port", f"add {_ports_text(ports)} to the ports of {d} rule {r.index} of "
                         f"{t.policy.key}", (edited,), effective=((edited, direction, replace(rule, ports=ports)),),
                         clauses=len(ports))


def rule_changes(state: ClusterState, conn: Connection, direction: PolicyType, traces: tuple[PolicyTrace, ...],
                 target: Target | None) -> Iterator[Change]:
    """A new rule in each policy that isolates the pod for this direction."""
    d = direction.value.lower()
    _, other = _ends(conn, direction)
    target = target if direction is PolicyType.EGRESS else None
    for t in traces:
        if t.direction != d:
            continue
        policy = t.policy
        peers = target_peers(state, other, policy.namespace, target)
        ports = target_ports(conn, target)
        rule = Rule(peers, ports)
        edited = with_rules(policy, direction, (*rules_of(policy, direction), rule))
        yield Change("add-rule", f"add {d} rule {len(rules_of(policy, direction))} to {policy.key} admitting "
                     f"{_far(other, target)} on {_ports_text(ports)}", (edited,),
                     effective=((edited, direction, rule),), clauses=_rule_clauses(rule))


def _far(other: Subject, target: Target | None) -> str:
    if target is not None and target.service is not None:
        return f"the backends of Service {target.service.key}"
    return describe(other)


def new_policy(state: ClusterState, conn: Connection, direction: PolicyType, target: Target | None) -> Change:
    """A policy of its own for the pod's workload, named so that it clashes with nothing in the state."""
    subject, other = _ends(conn, direction)
    assert subject.pod is not None
    d = direction.value.lower()
    egress = direction is PolicyType.EGRESS
    target = target if egress else None
    base = dns_name(f"allow-{_short(subject, None)}-{d}-{'to' if egress else 'from'}-{_short(other, target)}"
                    + ("" if target is not None and target.service is not None else f"-{conn.port}"))
    name, n = base, 2
    while f"{subject.pod.namespace}/{name}" in state.policies:
        name, n = dns_name(f"{base[:59]}-{n}"), n + 1
    rule = Rule(target_peers(state, other, subject.pod.namespace, target), target_ports(conn, target))
    empty = NetworkPolicy(subject.pod.namespace, name, workload_selector(subject.pod), frozenset({direction}),
                          policy_types_explicit=True)
    new = with_rules(empty, direction, (rule,))
    ends = (f"from {_far(other, target)} to {subject.pod.key}" if not egress
            else f"from {subject.pod.key} to {_far(other, target)}")
    return Change("new-policy", f"create {new.key} allowing {d} {ends} on {_ports_text(rule.ports)}", (new,),
                  effective=((new, direction, rule),), clauses=2 + _rule_clauses(rule))


def label_change(state: ClusterState, conn: Connection, direction: PolicyType,
                 traces: tuple[PolicyTrace, ...]) -> Change | None:
    d = direction.value.lower()
    gap = next(evident_label_gaps(state, tuple(t for t in traces if t.direction == d), conn), None)
    if gap is None:
        return None
    args = " ".join(f"{k}={v}" for k, v in gap.labels.items())
    return Change("label-namespace", f"label namespace {gap.namespace} with {args}, which {d} rule {gap.rule} of "
                  f"{gap.policy.key} selects", labels=((gap.namespace, dict(gap.labels)),), clauses=len(gap.labels))


def types_change(engine: Engine, conn: Connection, direction: PolicyType) -> Change | None:
    subject, other = _ends(conn, direction)
    assert subject.pod is not None
    for p in engine.state.policies_by_namespace.get(subject.pod.namespace, ()):
        if direction in p.policy_types or not selectors.matches(p.pod_selector, subject.pod.labels):
            continue
        if any(not engine.policies_selecting(pod, direction) for pod in selected(engine.state, p)):
            # Listing the direction would isolate pods that are open today: it would deny their other traffic.
            continue
        if any(rule_matches(r, p.namespace, other, conn) for r in rules_of(p, direction)):
            edited = replace(p, policy_types=p.policy_types | {direction}, policy_types_explicit=True)
            return Change("policy-types", f"add {direction.value} to policyTypes of {p.key}, so that its "
                          f"{direction.value.lower()} rules take effect", (edited,),
                          effective=tuple((edited, direction, r) for r in rules_of(edited, direction)))
    return None


def all_changes(engine: Engine, conn: Connection, direction: PolicyType, traces: tuple[PolicyTrace, ...],
                target: Target | None) -> list[Change]:
    """Every candidate, in a fixed order (the final tie-breaker)."""
    out = [c for c in (types_change(engine, conn, direction), label_change(engine.state, conn, direction, traces))
           if c is not None]
    out += port_changes(conn, direction, traces, target)
    out += rule_changes(engine.state, conn, direction, traces, target)
    out.append(new_policy(engine.state, conn, direction, target))
    return out
