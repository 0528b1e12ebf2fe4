"""The well-known ways NetworkPolicies surprise people, detected from state and flow.

Each trap has a stable id (metrics, alerts and JSON use it) and is detected
from the objects themselves, never guessed from names: a source is "the
kubelet" because its address is the node's and the port is a probe port.
A trap claims that a policy does not do what its author meant, so each
fires only on evidence of that (docs/traps.md states the rule per id);
a deny the objects show to be deliberate is no trap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from drop_explainer.cluster.objects import IPBlock, NetworkPolicy, Operator, Pod, PolicyType, Requirement, Rule, Service
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import backends, probes
from drop_explainer.explain.model import Clause, PolicyTrace, Trap
from drop_explainer.flows.model import EndpointKind, Flow
from drop_explainer.policy import ports, selectors
from drop_explainer.policy.endpoints import Subject, SubjectKind
from drop_explainer.policy.engine import Connection, Engine, ip_in_block, peer_matches, rule_matches, rules_of

TITLES: dict[str, str] = {
    "kubelet-probe": "Kubelet probes come from the pod's own node, which networking/v1 exempts from isolation; "
                     "some CNIs or settings do not.",
    "dns-egress": "Egress isolation blocks DNS (port 53) unless a rule allows it explicitly.",
    "namespace-label-missing": "A namespaceSelector needs a label the namespace does not carry "
                               "(often name= where only kubernetes.io/metadata.name= exists).",
    "external-egress": "Egress to an address outside the cluster needs an ipBlock rule.",
    "service-port-not-pod-port": "Policies see the pod's port after Service translation, not the Service port.",
    "same-namespace-pod-selector": "A podSelector without namespaceSelector only selects pods "
                                   "in the policy's own namespace.",
    "egress-rules-ignored": "Egress rules are ignored because policyTypes does not list Egress.",
    "ingress-rules-ignored": "Ingress rules are ignored because policyTypes does not list Ingress.",
    "host-network-peer": "A host-network pod is seen as its node's address; pod selectors never match it.",
    "apiserver-egress": "Egress isolation blocks the Kubernetes API server unless a rule allows its address.",
    "ipblock-service-ip": "An ipBlock naming a Service IP never matches: policies see the pod address "
                          "after translation.",
    "named-port-undefined": "A rule's named port is not defined on the destination pod with that protocol.",
}


@dataclass(frozen=True, slots=True)
class LabelGap:
    """Labels a namespace would need for a namespaceSelector peer to match."""

    namespace: str
    labels: dict[str, str]
    policy: NetworkPolicy
    direction: str
    rule: int
    overwrites: bool = False
    """The namespace carries one of the keys with another value: the label would have to be changed, not added."""


def _trap(trap_id: str, detail: str) -> Trap:
    return Trap(trap_id, TITLES[trap_id], detail)


def kubelet_probe(engine: Engine, conn: Connection, flow: Flow | None) -> Iterator[Trap]:
    """On evidence only (explain/probes.py): an observed drop from the pod's own node, or a non-exempting profile."""
    for detail in probes.kubelet_probe(engine, conn, flow):
        yield _trap("kubelet-probe", detail)


def _egress_traps(engine: Engine, conn: Connection, flow: Flow | None) -> Iterator[Trap]:
    dst = conn.destination
    src = conn.source.pod.key if conn.source.pod else conn.source.describe()
    rules = _egress_rules(engine, conn)
    # Port 53, or the port a Service's port 53 forwards to (some resolvers listen on 5353).
    dns = conn.port == 53 or backends.translate(engine.state, conn).dns
    p = conn.port
    if dns and conn.protocol in ("UDP", "TCP") and not any(
            ports.ports_match(r.ports, p, conn.protocol, None) for _, r in rules):
        other = "TCP" if conn.protocol == "UDP" else "UDP"
        half = any(ports.ports_match(r.ports, p, other, None) for _, r in rules)
        hint = f" (the policies allow {other} {p} but not {conn.protocol} {p})" if half else ""
        yield _trap("dns-egress", f"egress of {src} to {dst.describe()} {conn.protocol}/{p} is denied and no egress "
                    f"rule of the policies isolating it admits {conn.protocol} {p} anywhere{hint}; name lookups fail "
                    "before any connection is tried (allow UDP and TCP to the DNS pods)")
    names = f" ({', '.join(flow.destination_names)})" if flow is not None and flow.destination_names else ""
    world = flow is not None and flow.destination.kind is EndpointKind.WORLD
    outside = dst.kind is SubjectKind.EXTERNAL or (world and dst.kind in (SubjectKind.EXTERNAL,
                                                                          SubjectKind.POD_NETWORK))
    covered = any(p.ip_block is not None and ip_in_block(dst.ip, IPBlock(p.ip_block.cidr))
                  for _, r in rules for p in r.peers)
    if outside and not covered:
        yield _trap("external-egress", f"{dst.ip}{names} is outside the cluster's pods, nodes and services; "
                    f"egress of {src} to it needs an ipBlock rule, and no ipBlock of the policies isolating it "
                    "covers it")
    if _is_apiserver(engine, conn, flow):
        yield _trap("apiserver-egress", f"{dst.describe()} port {conn.port} is the Kubernetes API server; "
                    f"egress of {src} to it is denied (in-cluster clients of kubernetes.default fail)")


def _egress_rules(engine: Engine, conn: Connection) -> list[tuple[NetworkPolicy, Rule]]:
    src = conn.source.pod
    if src is None or not conn.source.is_pod:
        return []
    return [(p, r) for p in engine.policies_selecting(src, PolicyType.EGRESS) for r in p.egress]


def _is_apiserver(engine: Engine, conn: Connection, flow: Flow | None) -> bool:
    """On evidence: the CNI says so, or the state's Service and EndpointSlice name this address and port."""
    if flow is not None and flow.destination.kind is EndpointKind.KUBE_APISERVER:
        return True
    api = engine.state.services.get("default/kubernetes")
    if api is None:
        return False
    if conn.destination.ip in api.cluster_ips and any(sp.port == conn.port for sp in api.ports):
        return True
    slices = engine.state.slices_by_service.get(api.key, ())
    if slices:
        return any(conn.destination.ip in ep.addresses and any(port == conn.port for _, port, _ in s.ports)
                   for s in slices for ep in s.endpoints)
    # No EndpointSlice to check against: a control-plane node on the Service's targetPort.
    node = conn.destination.node
    return (conn.destination.kind is SubjectKind.NODE and node is not None
            and any(k.startswith("node-role.kubernetes.io/control-plane") for k in node.labels)
            and any(sp.target_port == conn.port for sp in api.ports))


def _missing_labels(reqs: tuple[Requirement, ...]) -> dict[str, str] | None:
    """Labels that would satisfy ``reqs`` if set, or None if setting labels cannot."""
    out: dict[str, str] = {}
    for r in reqs:
        if r.operator is not Operator.IN or len(r.values) != 1:
            return None
        out[r.key] = r.values[0]
    return out


def label_gaps(traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[LabelGap]:
    """Rules that would admit the connection if the peer's namespace had more labels."""
    for t in traces:
        direction = PolicyType(t.direction.capitalize())
        other = conn.source if direction is PolicyType.INGRESS else conn.destination
        if other.pod is None or not other.is_pod:
            continue
        ns_labels = dict(other.namespace_labels or {})
        for i, rule in enumerate(rules_of(t.policy, direction)):
            for peer in rule.peers:
                if peer.namespace_selector is None:
                    continue
                gap = _missing_labels(selectors.unmet(peer.namespace_selector, ns_labels))
                if not gap:
                    continue
                patched = Subject(other.kind, other.ip, other.pod, other.node, other.service, {**ns_labels, **gap})
                if rule_matches(rule, t.policy.namespace, patched, conn if direction is PolicyType.INGRESS
                                else Connection(conn.source, patched, conn.port, conn.protocol)):
                    yield LabelGap(other.pod.namespace, gap, t.policy, t.direction, i,
                                   overwrites=any(k in ns_labels for k in gap))


def _normal(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def _one_edit(a: str, b: str) -> bool:
    """Levenshtein distance of exactly one (a substitution, insertion or deletion)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    return a[i + 1:] == b[i + 1:] if len(a) == len(b) else a[i:] == b[i + 1:]


def near_value(wanted: str, carried: str) -> bool:
    """Case, punctuation or one edit apart (values of 3 characters or more for the edit: a/b is no typo)."""
    if wanted == carried:
        return True
    if _normal(wanted) == _normal(carried):
        return True
    return min(len(wanted), len(carried)) >= 3 and _one_edit(wanted.lower(), carried.lower())


def label_evidence(state: ClusterState, gap: LabelGap) -> str | None:
    """Why the missing label is a mistake and not an intended deny, or None when nothing shows it."""
    peer = rules_of(gap.policy, PolicyType(gap.direction.capitalize()))[gap.rule].peers
    sels = [p.namespace_selector for p in peer if p.namespace_selector is not None]
    if sels and not any(selectors.matches(sel, ns.labels) for sel in sels for ns in state.namespaces.values()):
        return near_miss(state, gap) or "its namespaceSelector matches no namespace of the cluster"
    return near_miss(state, gap)


def near_miss(state: ClusterState, gap: LabelGap) -> str | None:
    """A label of the namespace that the wanted one resembles: evidence that this namespace was meant."""
    carried = state.namespace_labels(gap.namespace)
    for key, value in gap.labels.items():
        for k, v in carried.items():
            if k != key and v == value:
                return f"namespace {gap.namespace} carries {k}={v}: the same value under another key"
            if near_value(value, v) and v != value:
                return f"namespace {gap.namespace} carries {k}={v}, a near miss of {key}={value}"
    return None


def evident_label_gaps(state: ClusterState, traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[LabelGap]:
    """The label gaps that adding labels closes, where the namespace resembles the one wanted.

    A selector that matches no namespace at all is a trap, but it does not
    say which namespace was meant: labelling this one would be a guess.
    """
    return (g for g in label_gaps(traces, conn) if not g.overwrites and near_miss(state, g) is not None)


def namespace_label_missing(state: ClusterState, traces: tuple[PolicyTrace, ...],
                            conn: Connection) -> Iterator[Trap]:
    for gap in label_gaps(traces, conn):
        evidence = label_evidence(state, gap)
        if evidence is None:
            continue
        wanted = ", ".join(f"{k}={v}" for k, v in gap.labels.items())
        hint = ""
        if gap.labels.get("name") == gap.namespace:
            hint = (f"; the API server sets kubernetes.io/metadata.name={gap.namespace} on every namespace, "
                    "but nothing sets name=")
        lacks = "has another value for it" if gap.overwrites else "lacks it"
        yield _trap("namespace-label-missing", f"{gap.direction} rule {gap.rule} of {gap.policy.key} selects "
                    f"namespaces with {wanted}; namespace {gap.namespace} {lacks} ({evidence}){hint}")


def same_namespace_pod_selector(engine: Engine, traces: tuple[PolicyTrace, ...],
                                conn: Connection) -> Iterator[Trap]:
    for t in traces:
        for r in t.rules:
            ns_fail = [f for f in r.failures if f.clause is Clause.NAMESPACE]
            if ns_fail and len(r.failures) == 1 and not _selects_at_home(engine, t, r.index, ns_fail[0].peer):
                other = conn.source if t.direction == "ingress" else conn.destination
                assert other.pod is not None
                yield _trap("same-namespace-pod-selector", f"{t.direction} rule {r.index} of {t.policy.key} "
                            f"has a podSelector that matches {other.pod.key}, but without a namespaceSelector it "
                            f"only looks in namespace {t.policy.namespace}")
                return


def _selects_at_home(engine: Engine, t: PolicyTrace, index: int, peer: int | None) -> bool:
    """Does the podSelector select pods in the policy's own namespace? Then those may be the ones meant."""
    rule = rules_of(t.policy, PolicyType(t.direction.capitalize()))[index]
    sel = rule.peers[peer or 0].pod_selector
    return sel is not None and any(selectors.matches(sel, p.labels) and not p.host_network
                                   for p in engine.state.pods_by_namespace.get(t.policy.namespace, ()))


def _services_of(engine: Engine, pod: Pod) -> Iterator[Service]:
    for svc in engine.state.services_by_namespace.get(pod.namespace, ()):
        if svc.selector and all(
            pod.labels.get(k) == v for k, v in svc.selector.items()
        ):
            yield svc


def _target_number(pod: Pod, target: int | str, protocol: str) -> int | None:
    return target if isinstance(target, int) else ports.named_port(pod, target, protocol)


def service_port(engine: Engine, traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    dst = conn.destination.pod
    if dst is None:
        return
    for svc in _services_of(engine, dst):
        for sp in svc.ports:
            target = _target_number(dst, sp.target_port, sp.protocol)
            if target != conn.port or sp.port == conn.port or sp.protocol != conn.protocol:
                continue
            if any(p.container_port == sp.port and p.protocol == sp.protocol for c in dst.containers for p in c.ports):
                continue  # the pod serves the Service's port number too: the rule may mean that one
            for t in traces:
                direction = PolicyType(t.direction.capitalize())
                for i, rule in enumerate(rules_of(t.policy, direction)):
                    if any(pp.port == sp.port and pp.protocol == sp.protocol for pp in rule.ports):
                        yield _trap("service-port-not-pod-port", f"{t.direction} rule {i} of {t.policy.key} allows "
                                    f"{sp.protocol} {sp.port}, the port of Service {svc.key}; the Service forwards "
                                    f"to targetPort {sp.target_port}, so {dst.key} receives {conn.protocol} "
                                    f"{conn.port}")
                        return


def service_port_reverse(engine: Engine, traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    """The connection names the Service port of a Service IP, and so does a denying rule; policies see the pod's."""
    svc = conn.destination.service
    if svc is None:
        return
    named = {(pp.port, pp.protocol) for t in traces for r in rules_of(t.policy, PolicyType(t.direction.capitalize()))
             for pp in r.ports}
    for sp in svc.ports:
        if sp.port == conn.port and sp.protocol == conn.protocol and sp.target_port != sp.port and \
                (sp.port, sp.protocol) in named:
            yield _trap("service-port-not-pod-port", f"{conn.destination.ip}:{conn.port} is Service {svc.key}; "
                        f"after translation the pods receive targetPort {sp.target_port}, which is what policies "
                        "must name (and the destination is a pod selector or pod address, not the Service IP)")
            return


def rules_ignored(engine: Engine, conn: Connection, direction: PolicyType) -> Iterator[Trap]:
    subject = conn.destination if direction is PolicyType.INGRESS else conn.source
    if subject.pod is None or not subject.is_pod:
        return
    pod = subject.pod
    other = conn.source if direction is PolicyType.INGRESS else conn.destination
    d = direction.value.lower()
    for p in engine.state.policies_by_namespace.get(pod.namespace, ()):
        rules = rules_of(p, direction)
        if direction in p.policy_types or not rules or not selectors.matches(p.pod_selector, pod.labels):
            continue
        if not any(rule_matches(r, p.namespace, other, conn) for r in rules):
            continue  # ignored rules that would not admit this connection do not explain its denial
        types = ", ".join(sorted(t.value for t in p.policy_types))
        yield _trap(f"{d}-rules-ignored", f"{p.key} has {len(rules)} {d} rule(s) but policyTypes is [{types}], "
                    "so they are ignored; one of them would admit this connection")


def host_network_peer(engine: Engine, traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    for direction, other in (("ingress", conn.source), ("egress", conn.destination)):
        if not any(t.direction == direction for t in traces):
            continue
        if other.kind is SubjectKind.HOST_NETWORK_POD and other.pod is not None and any(
                _selector_peer_matches(t, _as_pod(engine, other.pod)) for t in traces if t.direction == direction):
            yield _trap("host-network-peer", f"{other.pod.key} runs in the host network, so it is seen as its "
                        f"node's address {other.ip}; pod and namespace selectors never match it")
            return
        if other.kind is SubjectKind.NODE and other.node is not None:
            hosted = [p for p in engine.state.pods.values() if p.host_network and p.node_name == other.node.name]
            for pod in hosted:
                if any(_selector_peer_matches(t, _as_pod(engine, pod)) for t in traces if t.direction == direction):
                    yield _trap("host-network-peer", f"{other.ip} is node {other.node.name}, where host-network pod "
                                f"{pod.key} runs; a rule selects that pod by label, but its traffic carries the "
                                "node's address, which pod selectors never match")
                    return


def _as_pod(engine: Engine, pod: Pod) -> Subject:
    """The host-network pod as if it were a pod: would a selector have matched it?"""
    return Subject(SubjectKind.POD, pod.host_ip, pod, None, None, engine.state.namespace_labels(pod.namespace))


def _selector_peer_matches(t: PolicyTrace, pod: Subject) -> bool:
    direction = PolicyType(t.direction.capitalize())
    return any(p.ip_block is None and peer_matches(p, t.policy.namespace, pod)
               for rule in rules_of(t.policy, direction) for p in rule.peers)


def ipblock_service_ip(engine: Engine, traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    dst = conn.destination.pod
    if dst is None:
        return
    for t in traces:
        if t.direction != "egress":
            continue
        for i, rule in enumerate(t.policy.egress):
            for peer in rule.peers:
                if peer.ip_block is None or ip_in_block(conn.destination.ip, IPBlock(peer.ip_block.cidr)):
                    continue  # the pod address is inside the cidr: excepted on purpose, or matched
                for svc in _services_of(engine, dst):
                    if any(ip_in_block(ip, peer.ip_block) for ip in svc.cluster_ips):
                        yield _trap("ipblock-service-ip", f"egress rule {i} of {t.policy.key} allows ipBlock "
                                    f"{peer.ip_block.cidr}, which holds the IP of Service {svc.key}; the packet "
                                    f"is checked with the pod address {conn.destination.ip} after translation")
                        return


def named_port_undefined(traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    """Only when the destination shows what was meant: the name under the other protocol, or a near-miss name."""
    dst = conn.destination.pod if conn.destination.is_pod else None
    if dst is None:
        return
    declared = [p for c in dst.containers for p in c.ports if p.name]
    for t in traces:
        for r in t.rules:
            for f in r.failures:
                if f.clause is not Clause.NAMED_PORT:
                    continue
                rule = rules_of(t.policy, PolicyType(t.direction.capitalize()))[r.index]
                for pp in rule.ports:
                    if not isinstance(pp.port, str) or pp.protocol != conn.protocol:
                        continue
                    meant = next((p for p in declared if p.name is not None and p.name != pp.port
                                  and near_value(pp.port, p.name)), None)
                    other = next((p for p in declared if p.name == pp.port and p.protocol != pp.protocol), None)
                    if other is not None:
                        yield _trap("named-port-undefined", f"{f.message}; {dst.key} defines {pp.port} for "
                                    f"{other.protocol}, not {pp.protocol}")
                        return
                    if meant is not None:
                        yield _trap("named-port-undefined", f"{f.message}; {dst.key} defines {meant.name} "
                                    f"(= {meant.container_port}), a near miss of {pp.port}")
                        return


def detect(engine: Engine, conn: Connection, traces: tuple[PolicyTrace, ...], flow: Flow | None) -> tuple[Trap, ...]:
    """Every trap that applies to this denial, each id at most once."""
    denied = {t.direction for t in traces}
    found: list[Trap] = []
    if "ingress" in denied:
        found += kubelet_probe(engine, conn, flow)
        found += rules_ignored(engine, conn, PolicyType.INGRESS)
    if "egress" in denied:
        found += _egress_traps(engine, conn, flow)
        found += rules_ignored(engine, conn, PolicyType.EGRESS)
        found += ipblock_service_ip(engine, traces, conn)
    found += namespace_label_missing(engine.state, traces, conn)
    found += same_namespace_pod_selector(engine, traces, conn)
    found += service_port(engine, traces, conn)
    found += service_port_reverse(engine, traces, conn)
    found += host_network_peer(engine, traces, conn)
    found += named_port_undefined(traces, conn)
    unique: dict[str, Trap] = {}
    for t in found:
        unique.setdefault(t.id, t)
    return tuple(unique.values())

