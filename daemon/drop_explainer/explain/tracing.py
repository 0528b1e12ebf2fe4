"""Which clause of which rule failed, in terms of the real labels and ports.

Uses the engine's own predicates clause by clause, so a rule traced with no
failures is exactly a rule the engine says admits the connection.
"""

from __future__ import annotations

from collections.abc import Mapping

from drop_explainer.cluster.objects import NetworkPolicy, Peer, PolicyType, Rule
from drop_explainer.explain.model import Clause, Failure, PolicyTrace, RuleTrace
from drop_explainer.policy import ports, selectors
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import Connection, Engine, ip_in_block, rules_of


def labels_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return "{}"
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + "}"


def _rule_name(policy: NetworkPolicy, direction: str, index: int) -> str:
    return f"{direction} rule {index} of {policy.key}"


def peer_failures(peer: Peer, index: int, policy: NetworkPolicy, where: str, other: Subject, *,
                  blind: str | None = None) -> list[Failure]:
    """Every failing clause of one from/to entry (not just the first).

    ``blind``: why the datapath's ipBlocks cannot see ``other`` at all (Cilium and in-cluster addresses).
    """
    if peer.ip_block is not None:
        block = peer.ip_block
        if blind is not None:
            return [Failure(Clause.IP_BLOCK, f"{other.describe()} cannot match ipBlock {block.cidr} ({where}): "
                            f"{blind}", index)]
        if ip_in_block(other.ip, block):
            return []
        if other.ip is not None and ip_in_block(other.ip, type(block)(block.cidr)):
            hit = next(e for e in block.except_ if ip_in_block(other.ip, type(block)(e)))
            return [Failure(Clause.IP_BLOCK_EXCEPT, f"{other.ip} is in {block.cidr} but also in its except {hit}"
                            f" ({where})", index)]
        return [Failure(Clause.IP_BLOCK, f"{other.describe()} is not in ipBlock {block.cidr} ({where})", index)]
    if not other.is_pod or other.pod is None:
        only = f"and {blind}" if blind is not None else \
            "and only an ipBlock can match a node, a host-network pod or an outside address"
        return [Failure(Clause.NOT_A_POD, f"{other.describe()} is not a pod; {where} selects pods by label, {only}",
                        index)]
    pod = other.pod
    out: list[Failure] = []
    ns_labels = other.namespace_labels or {}
    if peer.namespace_selector is None:
        if pod.namespace != policy.namespace:
            out.append(Failure(Clause.NAMESPACE, f"{where} has a podSelector without namespaceSelector, so it only "
                               f"selects pods in {policy.namespace}; {pod.key} is in {pod.namespace}", index))
    else:
        missing = selectors.unmet(peer.namespace_selector, ns_labels)
        if missing:
            need = ", ".join(selectors.describe_requirement(r) for r in missing)
            out.append(Failure(Clause.NAMESPACE_SELECTOR, f"namespace {pod.namespace} has labels "
                               f"{labels_text(ns_labels)}; {where} needs {need}", index))
    if peer.pod_selector is not None:
        missing = selectors.unmet(peer.pod_selector, pod.labels)
        if missing:
            need = ", ".join(selectors.describe_requirement(r) for r in missing)
            out.append(Failure(Clause.POD_SELECTOR, f"pod {pod.key} has labels {labels_text(pod.labels)}; "
                               f"{where} needs {need}", index))
    return out


def port_failure(rule: Rule, where: str, conn: Connection) -> Failure | None:
    dest = conn.destination.pod if conn.destination.is_pod else None
    if ports.ports_match(rule.ports, conn.port, conn.protocol, dest):
        return None
    named = [pp for pp in rule.ports if isinstance(pp.port, str) and pp.protocol == conn.protocol]
    for pp in named:
        assert isinstance(pp.port, str)
        number = ports.named_port(dest, pp.port, pp.protocol)
        name = dest.key if dest is not None else conn.destination.describe()
        if number is None:
            return Failure(Clause.NAMED_PORT, f"{where} allows named port {pp.port}, which is not defined "
                           f"({pp.protocol}) on {name}; the connection is {conn.protocol} {conn.port}")
    allowed = ", ".join(ports.describe_port(pp) if not isinstance(pp.port, str)
                        else f"{pp.protocol} {pp.port} (= {ports.named_port(dest, pp.port, pp.protocol)})"
                        for pp in rule.ports)
    return Failure(Clause.PORT, f"{where} allows {allowed}; the connection is {conn.protocol} {conn.port}")


def trace_rule(policy: NetworkPolicy, direction: PolicyType, index: int, conn: Connection,
               blind: str | None = None) -> RuleTrace:
    d = direction.value.lower()
    rule = rules_of(policy, direction)[index]
    where = _rule_name(policy, d, index)
    other = conn.source if direction is PolicyType.INGRESS else conn.destination
    failures: list[Failure] = []
    pf = port_failure(rule, where, conn)
    if pf is not None:
        failures.append(pf)
    if rule.peers:
        per_peer = [peer_failures(p, i, policy, f"{where}, peer {i}" if len(rule.peers) > 1 else where, other,
                                  blind=blind)
                    for i, p in enumerate(rule.peers)]
        best: list[Failure] = min(per_peer, key=len)
        failures.extend(best)
    return RuleTrace(policy, d, index, tuple(failures))


def trace_direction(engine: Engine, conn: Connection, direction: PolicyType) -> tuple[PolicyTrace, ...]:
    """Traces of every rule of every policy isolating the enforcing pod."""
    subject = conn.destination if direction is PolicyType.INGRESS else conn.source
    if subject.pod is None or not subject.is_pod:
        return ()
    other = conn.source if direction is PolicyType.INGRESS else conn.destination
    blind = engine.profile.ip_block_blind_to(other.kind) if other.ip is not None else None
    return tuple(
        PolicyTrace(p, direction.value.lower(),
                    tuple(trace_rule(p, direction, i, conn, blind) for i in range(len(rules_of(p, direction)))))
        for p in engine.policies_selecting(subject.pod, direction)
    )


def closest_rule(traces: tuple[PolicyTrace, ...]) -> RuleTrace | None:
    """Fewest failing clauses wins; ties go to the first in policy and rule order."""
    rules = [r for t in traces for r in t.rules]
    return min(rules, key=lambda r: r.distance) if rules else None
