"""The smallest change that lets exactly this connection through, proven first.

A fix is only shown once the engine, re-run over the state with the change
applied, says the connection is allowed; and we say what else it opens (the
blast radius), because a reviewer must weigh that before applying it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
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
from drop_explainer.explain import blast, manifests
from drop_explainer.explain.model import Clause, Fix, PolicyTrace
from drop_explainer.explain.traps import label_gaps
from drop_explainer.policy import selectors
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import Connection, Engine, rule_matches, rules_of

# Labels that differ between replicas of one workload: selecting on them
# would allow one pod today and nothing after the next rollout.
_VOLATILE = {"pod-template-hash", "controller-revision-hash", "pod-template-generation",
             "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
             "batch.kubernetes.io/controller-uid", "controller-uid", "batch.kubernetes.io/job-name", "job-name"}
_IDENTIFYING = (("app.kubernetes.io/name", "app.kubernetes.io/instance"), ("app",), ("k8s-app",), ("name",))


@dataclass(frozen=True, slots=True)
class Change:
    """One edit to the state: policies replaced or added, namespace labels added."""

    policies: tuple[NetworkPolicy, ...] = ()
    labels: tuple[tuple[str, Mapping[str, str]], ...] = ()
    fix: Fix | None = None
    effective: tuple[tuple[NetworkPolicy, PolicyType, Rule], ...] = ()
    """The rules that may admit something new after the change: all the blast radius has to look at."""

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


def _rule_change(engine: Engine, conn: Connection, direction: PolicyType, traces: tuple[PolicyTrace, ...],
                 *, widen: bool = True) -> Change:
    subject = conn.destination if direction is PolicyType.INGRESS else conn.source
    other = conn.source if direction is PolicyType.INGRESS else conn.destination
    assert subject.pod is not None
    d = direction.value.lower()
    closest = min((r for t in traces if t.direction == d for r in t.rules), key=lambda r: r.distance, default=None)
    ports = (PolicyPort(conn.protocol, conn.port),)
    if widen and closest is not None and [f.clause for f in closest.failures] in ([Clause.PORT], [Clause.NAMED_PORT]):
        # Only the port is wrong: widening that rule's ports is the smallest change.
        policy = closest.policy
        rules = list(rules_of(policy, direction))
        rules[closest.index] = replace(rules[closest.index], ports=(*rules[closest.index].ports, *ports))
        edited = _with_rules(policy, direction, tuple(rules))
        fix = Fix("add-port", f"add {conn.protocol} {conn.port} to the ports of {d} rule {closest.index} of "
                  f"{policy.key}", _apply_yaml(edited), (manifests.policy_json(edited),))
        widened = replace(rules[closest.index], ports=ports)
        return Change(policies=(edited,), fix=fix, effective=((edited, direction, widened),))
    if closest is not None:
        policy = closest.policy
        rule = Rule((peer_for(other, policy.namespace),), ports)
        edited = _with_rules(policy, direction, (*rules_of(policy, direction), rule))
        fix = Fix("add-rule", f"add {d} rule {len(rules_of(policy, direction))} to {policy.key} admitting "
                  f"{_describe(other)} on {conn.protocol} {conn.port}", _apply_yaml(edited), (manifests.policy_json(
                      edited),))
        return Change(policies=(edited,), fix=fix, effective=((edited, direction, rule),))
    name = _dns_name(f"allow-{_other_name(other)}-{d}-{conn.port}")
    empty = NetworkPolicy(subject.pod.namespace, name, workload_selector(subject.pod), frozenset({direction}),
                          policy_types_explicit=True)
    new = _with_rules(empty, direction, (Rule((peer_for(other, subject.pod.namespace),), ports),))
    ends = (f"from {_describe(other)} to {subject.pod.key}" if direction is PolicyType.INGRESS
            else f"from {subject.pod.key} to {_describe(other)}")
    fix = Fix("new-policy", f"create {new.key} allowing {d} {ends} on {conn.protocol} {conn.port}",
              _apply_yaml(new), (manifests.policy_json(new),))
    return Change(policies=(new,), fix=fix, effective=((new, direction, rules_of(new, direction)[0]),))


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
            return Change(policies=(edited,), fix=fix,
                          effective=tuple((edited, direction, r) for r in rules_of(edited, direction)))
    return None


def plan(engine: Engine, conn: Connection, traces: tuple[PolicyTrace, ...], *,
         radius: bool = True) -> tuple[Fix, ...]:
    """The changes, one per denying direction, checked together against the engine.

    Where a missing namespace label is the trap, labelling the namespace is
    the natural fix, unless the label opens more than a rule would: then the
    rule is proposed and the summary says what the label would have cost.
    Without ``radius`` the fixes are still checked, but their blast radius
    (the costly part) is left for later.
    """
    directions = [d for d in (PolicyType.EGRESS, PolicyType.INGRESS)
                  if any(t.direction == d.value.lower() for t in traces)]
    changes = [_types_change(engine, conn, d) or _label_change(conn, d, traces) or _rule_change(engine, conn, d, traces)
               for d in directions]
    if not changes:
        return ()
    fixes = _checked(engine, conn, changes, radius=radius)
    broad = changes[0].labels or (changes[0].fix is not None and changes[0].fix.kind == "add-port")
    if len(changes) == 1 and broad and fixes[0].blast_radius is not None:
        alternative = _checked(engine, conn, [_rule_change(engine, conn, directions[0], traces, widen=False)])
        first, rule = fixes[0].blast_radius, alternative[0].blast_radius
        if rule is not None and rule.count < first.count:
            more = "at least " if first.capped else ""
            what = "labelling the namespace" if changes[0].labels else "widening the rule's ports"
            note = f" ({what} instead would newly allow {more}{first.count} other connection(s))"
            return (replace(alternative[0], summary=alternative[0].summary + note),)
    return fixes


def _checked(engine: Engine, conn: Connection, changes: list[Change], *, radius: bool = True) -> tuple[Fix, ...]:
    state = engine.state
    for change in changes:
        state = change.apply(state)
    after = Engine(state, engine.profile)
    verified = after.evaluate(_reresolve(after.state, conn)).allowed
    opened = blast.blast_radius(engine, after, conn, changes) if verified and radius else None
    return tuple(replace(c.fix, verified=verified, blast_radius=opened) for c in changes if c.fix is not None)


def _reresolve(state: ClusterState, conn: Connection) -> Connection:
    """Namespace labels live on the subjects; refresh them from the changed state."""
    return Connection(blast.refresh(state, conn.source), blast.refresh(state, conn.destination), conn.port,
                      conn.protocol)
