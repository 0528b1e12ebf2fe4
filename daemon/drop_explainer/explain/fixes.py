"""The smallest change that lets exactly this connection through, proven first.

A fix is only shown once the engine, re-run over the state with the change
applied, says the connection is allowed; and we say what else it opens (the
blast radius), because a reviewer must weigh that before applying it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
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
from drop_explainer.explain import manifests
from drop_explainer.explain.model import BlastRadius, Clause, Fix, PolicyTrace
from drop_explainer.explain.traps import label_gaps
from drop_explainer.policy import selectors
from drop_explainer.policy.endpoints import Subject, SubjectKind, pod_subject
from drop_explainer.policy.engine import Connection, Engine, peer_matches, rule_matches, rules_of

# Labels that differ between replicas of one workload: selecting on them
# would allow one pod today and nothing after the next rollout.
_VOLATILE = {"pod-template-hash", "controller-revision-hash", "pod-template-generation",
             "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
             "batch.kubernetes.io/controller-uid", "controller-uid", "batch.kubernetes.io/job-name", "job-name"}
_IDENTIFYING = (("app.kubernetes.io/name", "app.kubernetes.io/instance"), ("app",), ("k8s-app",), ("name",))
BLAST_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Change:
    """One edit to the state: policies replaced or added, namespace labels added."""

    policies: tuple[NetworkPolicy, ...] = ()
    labels: tuple[tuple[str, Mapping[str, str]], ...] = ()
    fix: Fix | None = None

    def apply(self, state: ClusterState) -> ClusterState:
        nss = []
        for name, labels in self.labels:
            ns = state.namespaces.get(name) or Namespace(name, {"kubernetes.io/metadata.name": name})
            nss.append(replace(ns, labels={**ns.labels, **labels}))
        return state.derive(policies=self.policies, namespaces=nss)


def workload_selector(pod: Pod) -> LabelSelector:
    """The labels that pick out this pod's workload, stable across rollouts."""
    for keys in _IDENTIFYING:
        if all(k in pod.labels for k in keys):
            return LabelSelector(tuple((k, pod.labels[k]) for k in keys))
    return LabelSelector(tuple(sorted((k, v) for k, v in pod.labels.items() if k not in _VOLATILE)))


def peer_for(other: Subject, policy_ns: str) -> Peer:
    """A from/to entry that matches ``other`` and as little else as we can say."""
    if other.pod is not None and other.is_pod:
        pod_sel = workload_selector(other.pod)
        if other.pod.namespace == policy_ns:
            return Peer(pod_selector=pod_sel)
        ns_labels = other.namespace_labels or {}
        key = "kubernetes.io/metadata.name"
        ns_sel = LabelSelector(((key, other.pod.namespace),)) if ns_labels.get(key) == other.pod.namespace else \
            LabelSelector(tuple(sorted(ns_labels.items())))
        return Peer(pod_selector=pod_sel, namespace_selector=ns_sel)
    assert other.ip is not None
    bits = ipaddress.ip_address(other.ip).max_prefixlen
    return Peer(ip_block=IPBlock(f"{other.ip}/{bits}"))


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "allow"


def _other_name(other: Subject) -> str:
    if other.pod is not None:
        return other.pod.name if other.is_pod else f"host-{other.pod.name}"
    if other.node is not None:
        return f"node-{other.node.name}"
    return f"ip-{other.ip}"


def _rule_change(engine: Engine, conn: Connection, direction: PolicyType, traces: tuple[PolicyTrace, ...]) -> Change:
    subject = conn.destination if direction is PolicyType.INGRESS else conn.source
    other = conn.source if direction is PolicyType.INGRESS else conn.destination
    assert subject.pod is not None
    d = direction.value.lower()
    closest = min((r for t in traces if t.direction == d for r in t.rules), key=lambda r: r.distance, default=None)
    ports = (PolicyPort(conn.protocol, conn.port),)
    if closest is not None and [f.clause for f in closest.failures] in ([Clause.PORT], [Clause.NAMED_PORT]):
        # Only the port is wrong: widening that rule's ports is the smallest change.
        policy = closest.policy
        rules = list(rules_of(policy, direction))
        rules[closest.index] = replace(rules[closest.index], ports=(*rules[closest.index].ports, *ports))
        edited = _with_rules(policy, direction, tuple(rules))
        fix = Fix("add-port", f"add {conn.protocol} {conn.port} to the ports of {d} rule {closest.index} of "
                  f"{policy.key}", _apply_yaml(edited), (manifests.policy_json(edited),))
        return Change(policies=(edited,), fix=fix)
    if closest is not None:
        policy = closest.policy
        rule = Rule((peer_for(other, policy.namespace),), ports)
        edited = _with_rules(policy, direction, (*rules_of(policy, direction), rule))
        fix = Fix("add-rule", f"add {d} rule {len(rules_of(policy, direction))} to {policy.key} admitting "
                  f"{_describe(other)} on {conn.protocol} {conn.port}", _apply_yaml(edited), (manifests.policy_json(
                      edited),))
        return Change(policies=(edited,), fix=fix)
    name = _dns_name(f"allow-{_other_name(other)}-{d}-{conn.port}")
    empty = NetworkPolicy(subject.pod.namespace, name, workload_selector(subject.pod), frozenset({direction}),
                          policy_types_explicit=True)
    new = _with_rules(empty, direction, (Rule((peer_for(other, subject.pod.namespace),), ports),))
    ends = (f"from {_describe(other)} to {subject.pod.key}" if direction is PolicyType.INGRESS
            else f"from {subject.pod.key} to {_describe(other)}")
    fix = Fix("new-policy", f"create {new.key} allowing {d} {ends} on {conn.protocol} {conn.port}",
              _apply_yaml(new), (manifests.policy_json(new),))
    return Change(policies=(new,), fix=fix)


def _with_rules(p: NetworkPolicy, direction: PolicyType, rules: tuple[Rule, ...]) -> NetworkPolicy:
    if direction is PolicyType.INGRESS:
        return replace(p, ingress=rules, policy_types_explicit=True)
    return replace(p, egress=rules, policy_types_explicit=True)


def _describe(s: Subject) -> str:
    return s.pod.key if s.pod is not None and s.is_pod else s.describe()


def _apply_yaml(p: NetworkPolicy) -> str:
    return "kubectl apply -f - <<'EOF'\n" + manifests.to_yaml(manifests.policy_json(p)) + "EOF\n"


def _label_change(conn: Connection, direction: PolicyType, traces: tuple[PolicyTrace, ...]) -> Change | None:
    d = direction.value.lower()
    gap = next((g for g in label_gaps(tuple(t for t in traces if t.direction == d), conn)), None)
    if gap is None:
        return None
    args = " ".join(f"{k}={v}" for k, v in gap.labels.items())
    fix = Fix("label-namespace", f"label namespace {gap.namespace} with {args}, which {d} rule {gap.rule} of "
              f"{gap.policy.key} selects", f"kubectl label namespace {gap.namespace} {args}\n",
              namespace_labels={gap.namespace: dict(gap.labels)})
    return Change(labels=((gap.namespace, dict(gap.labels)),), fix=fix)


def _types_change(engine: Engine, conn: Connection, direction: PolicyType) -> Change | None:
    subject = conn.destination if direction is PolicyType.INGRESS else conn.source
    other = conn.source if direction is PolicyType.INGRESS else conn.destination
    assert subject.pod is not None
    for p in engine.state.policies_by_namespace.get(subject.pod.namespace, ()):
        if direction in p.policy_types or not selectors.matches(p.pod_selector, subject.pod.labels):
            continue
        if any(rule_matches(r, p.namespace, other, conn) for r in rules_of(p, direction)):
            edited = replace(p, policy_types=p.policy_types | {direction}, policy_types_explicit=True)
            fix = Fix("policy-types", f"add {direction.value} to policyTypes of {p.key}, so that its "
                      f"{direction.value.lower()} rules take effect", _apply_yaml(edited),
                      (manifests.policy_json(edited),))
            return Change(policies=(edited,), fix=fix)
    return None


def plan(engine: Engine, conn: Connection, traces: tuple[PolicyTrace, ...]) -> tuple[Fix, ...]:
    """The changes, one per denying direction, checked together against the engine."""
    changes: list[Change] = []
    for direction in (PolicyType.EGRESS, PolicyType.INGRESS):
        if not any(t.direction == direction.value.lower() for t in traces):
            continue
        change = (_types_change(engine, conn, direction) or _label_change(conn, direction, traces)
                  or _rule_change(engine, conn, direction, traces))
        changes.append(change)
    if not changes:
        return ()
    state = engine.state
    for change in changes:
        state = change.apply(state)
    after = Engine(state)
    verified = after.evaluate(_reresolve(after.state, conn)).allowed
    radius = blast_radius(engine, after, conn, changes) if verified else None
    return tuple(replace(c.fix, verified=verified, blast_radius=radius) for c in changes if c.fix is not None)


def _reresolve(state: ClusterState, conn: Connection) -> Connection:
    """Namespace labels live on the subjects; refresh them from the changed state."""
    return Connection(_refresh(state, conn.source), _refresh(state, conn.destination), conn.port, conn.protocol)


def _refresh(state: ClusterState, s: Subject) -> Subject:
    if s.pod is None:
        return s
    return replace(s, namespace_labels=state.namespace_labels(s.pod.namespace))


def _universe(state: ClusterState, conn: Connection) -> Iterator[Subject]:
    """Every endpoint the state knows, once, plus the two ends of the connection."""
    for pod in state.pods.values():
        if not pod.host_network and pod.ips:
            yield pod_subject(state, pod)
    for node in state.nodes.values():
        for kind, addr in node.addresses:
            if kind == "InternalIP":
                yield Subject(SubjectKind.NODE, addr, node=node)
    yield conn.source
    yield conn.destination


class _Pairs(dict[tuple[str, str], tuple[Subject, Subject]]):
    """(source, destination) pairs keyed by name: subjects hold dicts and cannot be hashed."""

    def update_pairs(self, pairs: Iterable[tuple[Subject, Subject]]) -> None:
        for src, dst in pairs:
            self.setdefault((_name(src), _name(dst)), (src, dst))


def _candidates(state: ClusterState, conn: Connection, changes: Iterable[Change]) -> _Pairs:
    """(source, destination) pairs whose verdict the changes could alter."""
    pairs = _Pairs()
    universe = list(_universe(state, conn))
    for change in changes:
        for policy in change.policies:
            selected = [s for s in universe if s.is_pod and s.pod is not None and s.pod.namespace == policy.namespace
                        and selectors.matches(policy.pod_selector, s.pod.labels)]
            for direction in policy.policy_types:
                rules = rules_of(policy, direction)
                others = [s for s in universe if any(not r.peers or _peer_could_match(r, policy, s) for r in rules)]
                pairs.update_pairs(_oriented(direction, selected, others))
        for name, _ in change.labels:
            in_ns = [s for s in universe if s.is_pod and s.pod is not None and s.pod.namespace == name]
            for policy in state.policies.values():
                peers = [p for d in policy.policy_types for r in rules_of(policy, d) for p in r.peers]
                if not any(p.namespace_selector is not None for p in peers):
                    continue
                selected = [s for s in universe if s.is_pod and s.pod is not None
                            and s.pod.namespace == policy.namespace
                            and selectors.matches(policy.pod_selector, s.pod.labels)]
                for d in policy.policy_types:
                    pairs.update_pairs(_oriented(d, selected, in_ns))
    return pairs


def _oriented(
    direction: PolicyType, selected: list[Subject], others: list[Subject]
) -> Iterator[tuple[Subject, Subject]]:
    """(source, destination): the selected pods receive ingress and send egress."""
    for s in selected:
        for o in others:
            yield (o, s) if direction is PolicyType.INGRESS else (s, o)


def _peer_could_match(rule: Rule, policy: NetworkPolicy, s: Subject) -> bool:
    return any(peer_matches(p, policy.namespace, s) for p in rule.peers)


def _ports_of(dst: Subject, conn: Connection) -> set[tuple[int, str]]:
    out = {(conn.port, conn.protocol)}
    if dst.pod is not None and dst.is_pod:
        out.update((p.container_port, p.protocol) for c in dst.pod.containers for p in c.ports)
    return out


def _name(s: Subject) -> str:
    return s.pod.key if s.pod is not None and s.is_pod else (s.ip or "?")


def blast_radius(before: Engine, after: Engine, conn: Connection, changes: Iterable[Change]) -> BlastRadius:
    """Which other (source, destination, port) the changes newly allow, among those the state knows.

    Ports considered: the destination pod's declared container ports plus
    the connection's own port (NetworkPolicy allows ports, the state only
    knows the declared ones).
    """
    newly: list[str] = []
    this = (_name(conn.source), _name(conn.destination), conn.port, conn.protocol)
    for src, dst in _candidates(after.state, conn, changes).values():
        if src == dst or (src.pod is not None and src.pod is dst.pod):
            continue
        for port, proto in _ports_of(dst, conn):
            if (_name(src), _name(dst), port, proto) == this:
                continue
            old = Connection(_refresh(before.state, src), _refresh(before.state, dst), port, proto)
            new = Connection(_refresh(after.state, src), _refresh(after.state, dst), port, proto)
            if after.evaluate(new).allowed and not before.evaluate(old).allowed:
                newly.append(f"{_name(src)} -> {_name(dst)} {proto}/{port}")
    newly.sort()
    return BlastRadius(len(newly), tuple(newly[:BLAST_EXAMPLES]))
