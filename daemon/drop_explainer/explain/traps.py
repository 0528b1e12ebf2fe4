"""The well-known ways NetworkPolicies surprise people, detected from state and flow.

Each trap has a stable id (metrics, alerts and JSON use it) and is detected
from the objects themselves, never guessed from names: a source is "the
kubelet" because its address is the node's and the port is a probe port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from drop_explainer.cluster.objects import NetworkPolicy, Operator, Pod, PolicyType, Requirement, Service
from drop_explainer.explain import probes
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


def _trap(trap_id: str, detail: str) -> Trap:
    return Trap(trap_id, TITLES[trap_id], detail)


def kubelet_probe(engine: Engine, conn: Connection, flow: Flow | None) -> Iterator[Trap]:
    """On evidence only (explain/probes.py): an observed drop from the pod's own node, or a non-exempting profile."""
    for detail in probes.kubelet_probe(engine, conn, flow):
        yield _trap("kubelet-probe", detail)


def _egress_traps(engine: Engine, conn: Connection, flow: Flow | None) -> Iterator[Trap]:
    dst = conn.destination
    src = conn.source.pod.key if conn.source.pod else conn.source.describe()
    if conn.port == 53 and conn.protocol in ("UDP", "TCP"):
        yield _trap("dns-egress", f"egress of {src} to {dst.describe()} {conn.protocol}/53 is denied; name "
                    "lookups fail before any connection is tried (allow UDP and TCP 53 to kube-dns)")
    names = f" ({', '.join(flow.destination_names)})" if flow is not None and flow.destination_names else ""
    world = flow is not None and flow.destination.kind is EndpointKind.WORLD
    if dst.kind is SubjectKind.EXTERNAL or (world and dst.kind is not SubjectKind.POD):
        yield _trap("external-egress", f"{dst.ip}{names} is outside the cluster's pods, nodes and services; "
                    f"egress of {src} to it needs an ipBlock rule")
    if _is_apiserver(engine, conn, flow):
        yield _trap("apiserver-egress", f"{dst.describe()} port {conn.port} is the Kubernetes API server; "
                    f"egress of {src} to it is denied (in-cluster clients of kubernetes.default fail)")


def _is_apiserver(engine: Engine, conn: Connection, flow: Flow | None) -> bool:
    if flow is not None and flow.destination.kind is EndpointKind.KUBE_APISERVER:
        return True
    api = engine.state.services.get("default/kubernetes")
    if api is not None and conn.destination.ip in api.cluster_ips:
        return True
    return conn.destination.kind is SubjectKind.NODE and conn.port == 6443


def _missing_labels(reqs: tuple[Requirement, ...], labels: dict[str, str]) -> dict[str, str] | None:
    """Labels that would satisfy ``reqs`` if only added, or None if adding cannot."""
    out: dict[str, str] = {}
    for r in reqs:
        if r.key in labels or r.operator is not Operator.IN or len(r.values) != 1:
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
                gap = _missing_labels(selectors.unmet(peer.namespace_selector, ns_labels), ns_labels)
                if not gap:
                    continue
                patched = Subject(other.kind, other.ip, other.pod, other.node, other.service, {**ns_labels, **gap})
                if rule_matches(rule, t.policy.namespace, patched, conn if direction is PolicyType.INGRESS
                                else Connection(conn.source, patched, conn.port, conn.protocol)):
                    yield LabelGap(other.pod.namespace, gap, t.policy, t.direction, i)


def namespace_label_missing(traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    for gap in label_gaps(traces, conn):
        wanted = ", ".join(f"{k}={v}" for k, v in gap.labels.items())
        hint = ""
        if gap.labels.get("name") == gap.namespace:
            hint = (f"; the API server sets kubernetes.io/metadata.name={gap.namespace} on every namespace, "
                    "but nothing sets name=")
        yield _trap("namespace-label-missing", f"{gap.direction} rule {gap.rule} of {gap.policy.key} selects "
                    f"namespaces with {wanted}; namespace {gap.namespace} lacks it{hint}")


def same_namespace_pod_selector(traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    for t in traces:
        for r in t.rules:
            ns_fail = [f for f in r.failures if f.clause is Clause.NAMESPACE]
            if ns_fail and len(r.failures) == 1:
                other = conn.source if t.direction == "ingress" else conn.destination
                assert other.pod is not None
                yield _trap("same-namespace-pod-selector", f"{t.direction} rule {r.index} of {t.policy.key} "
                            f"has a podSelector that matches {other.pod.key}, but without a namespaceSelector it "
                            f"only looks in namespace {t.policy.namespace}")
                return


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
            for t in traces:
                direction = PolicyType(t.direction.capitalize())
                for i, rule in enumerate(rules_of(t.policy, direction)):
                    if any(pp.port == sp.port and pp.protocol == sp.protocol for pp in rule.ports):
                        yield _trap("service-port-not-pod-port", f"{t.direction} rule {i} of {t.policy.key} allows "
                                    f"{sp.protocol} {sp.port}, the port of Service {svc.key}; the Service forwards "
                                    f"to targetPort {sp.target_port}, so {dst.key} receives {conn.protocol} "
                                    f"{conn.port}")
                        return


def service_port_reverse(engine: Engine, conn: Connection) -> Iterator[Trap]:
    """The connection names the Service port of a Service IP; policies see the pod's port."""
    svc = conn.destination.service
    if svc is None:
        return
    for sp in svc.ports:
        if sp.port == conn.port and sp.protocol == conn.protocol and sp.target_port != sp.port:
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
        would = any(rule_matches(r, p.namespace, other, conn) for r in rules)
        types = ", ".join(sorted(t.value for t in p.policy_types))
        yield _trap(f"{d}-rules-ignored", f"{p.key} has {len(rules)} {d} rule(s) but policyTypes is [{types}], "
                    f"so they are ignored{'; one of them would admit this connection' if would else ''}")


def host_network_peer(engine: Engine, traces: tuple[PolicyTrace, ...], conn: Connection) -> Iterator[Trap]:
    for direction, other in (("ingress", conn.source), ("egress", conn.destination)):
        if not any(t.direction == direction for t in traces):
            continue
        if other.kind is SubjectKind.HOST_NETWORK_POD and other.pod is not None:
            yield _trap("host-network-peer", f"{other.pod.key} runs in the host network, so it is seen as its "
                        f"node's address {other.ip}; pod and namespace selectors never match it")
            return
        if other.kind is SubjectKind.NODE and other.node is not None:
            hosted = [p for p in engine.state.pods.values() if p.host_network and p.node_name == other.node.name]
            for pod in hosted:
                as_pod = Subject(SubjectKind.POD, other.ip, pod, None, None,
                                 engine.state.namespace_labels(pod.namespace))
                if any(_selector_peer_matches(t, as_pod) for t in traces if t.direction == direction):
                    yield _trap("host-network-peer", f"{other.ip} is node {other.node.name}, where host-network pod "
                                f"{pod.key} runs; a rule selects that pod by label, but its traffic carries the "
                                "node's address, which pod selectors never match")
                    return


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
                if peer.ip_block is None or ip_in_block(conn.destination.ip, peer.ip_block):
                    continue
                for svc in _services_of(engine, dst):
                    if any(ip_in_block(ip, peer.ip_block) for ip in svc.cluster_ips):
                        yield _trap("ipblock-service-ip", f"egress rule {i} of {t.policy.key} allows ipBlock "
                                    f"{peer.ip_block.cidr}, which holds the IP of Service {svc.key}; the packet "
                                    f"is checked with the pod address {conn.destination.ip} after translation")
                        return


def named_port_undefined(traces: tuple[PolicyTrace, ...]) -> Iterator[Trap]:
    for t in traces:
        for r in t.rules:
            for f in r.failures:
                if f.clause is Clause.NAMED_PORT:
                    yield _trap("named-port-undefined", f.message)
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
    found += namespace_label_missing(traces, conn)
    found += same_namespace_pod_selector(traces, conn)
    found += service_port(engine, traces, conn)
    found += service_port_reverse(engine, conn)
    found += host_network_peer(engine, traces, conn)
    found += named_port_undefined(traces)
    unique: dict[str, Trap] = {}
    for t in found:
        unique.setdefault(t.id, t)
    return tuple(unique.values())

