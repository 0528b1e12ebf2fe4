"""The evaluator of the rule model: one direction of one connection, for every compiled kind.

It follows ``policy-kinds.md`` section 1.11: the rules whose subject
selects the endpoint's identity; a matching deny wins over every allow
(section 1.9); otherwise a matching allow admits; otherwise the endpoint is
in default deny if any selecting rule asks for it. Peers are matched on the
identity labels Cilium gives them (section 1.3) and on entities and CIDRs
(section 1.4); ports after service translation (section 1.5).

The engine (policy/engine.py) combines this verdict with NetworkPolicy v1's
on the same endpoint: allows are one union, any deny wins, default deny if
any selecting rule of either kind requests it (section 1.9).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import ports
from drop_explainer.policy.endpoints import Subject, SubjectKind
from drop_explainer.policy.kinds.cilium import NS_KEY, NS_LABELS
from drop_explainer.policy.model import Action, Direction, Identity, ModelRule, Peer, PeerKind, PortRange

LOCAL_CLUSTER = "default"
"""Cilium's ``cluster-name`` default; a single-cluster state has every pod in it."""
_CLUSTER_RESERVED = frozenset({"host", "remote-node", "init", "ingress", "health", "unmanaged", "kube-apiserver"})


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    """One direction as the model rules decide it, before combining with NetworkPolicy v1."""

    selecting: tuple[ModelRule, ...]
    """The rules whose subject selects the endpoint for this direction."""
    allowed_by: tuple[ModelRule, ...] = ()
    denied_by: tuple[ModelRule, ...] = ()
    maybe_allow: tuple[str, ...] = ()
    """Allow rules on this port that may match (a peer or feature not decidable or not evaluated here)."""
    maybe_deny: tuple[str, ...] = ()
    """Deny rules on this port that may match."""
    l7: tuple[str, ...] = ()
    """Admitted at L3/L4 by rules that then apply L7 rules (not evaluated)."""

    @property
    def default_deny(self) -> bool:
        return any(r.default_deny for r in self.selecting)


def pod_identity(state: ClusterState, subject: Subject) -> dict[str, tuple[str, str]]:
    """A Cilium-managed pod's identity labels (section 1.3)."""
    pod = subject.pod
    assert pod is not None
    ident = {k: ("k8s", v) for k, v in pod.labels.items()}
    ident[NS_KEY] = ("k8s", pod.namespace)
    ident["io.cilium.k8s.policy.serviceaccount"] = ("k8s", pod.service_account or "default")
    ident["io.cilium.k8s.policy.cluster"] = ("k8s", LOCAL_CLUSTER)
    labels = subject.namespace_labels if subject.namespace_labels is not None else state.namespace_labels(pod.namespace)
    for k, v in labels.items():
        ident[NS_LABELS + k] = ("k8s", v)
    return ident


def peer_identity(state: ClusterState, peer: Subject, endpoint_node: str | None,
                  cache: dict[tuple[str, str | None], Identity] | None = None) -> tuple[Identity, str | None]:
    """The peer's identity seen from an endpoint on ``endpoint_node``, and a caveat if it is a guess.

    ``cache`` (one per snapshot) keeps a pod's identity by (pod, address).
    """
    if peer.kind is SubjectKind.POD and peer.pod is not None:
        key = (peer.pod.key, peer.ip)
        found = cache.get(key) if cache is not None else None
        if found is None:
            found = _with_apiserver(state, peer, pod_identity(state, peer))
            if cache is not None:
                cache[key] = found
        return found, None
    if peer.kind in (SubjectKind.NODE, SubjectKind.HOST_NETWORK_POD):
        name = peer.node.name if peer.node is not None else (peer.pod.node_name if peer.pod is not None else None)
        local = name is not None and name == endpoint_node
        return _with_apiserver(state, peer, {"host" if local else "remote-node": ("reserved", "")}), None
    world: dict[str, tuple[str, str]] = {"world": ("reserved", "")}
    if peer.ip is not None:
        world["world-ipv6" if ipaddress.ip_address(peer.ip).version == 6 else "world-ipv4"] = ("reserved", "")
    caveat = None
    if peer.kind is SubjectKind.POD_NETWORK:
        caveat = f"{peer.ip} is in the pod network but no known pod holds it: its Cilium identity is not known"
    elif peer.kind is SubjectKind.SERVICE:
        caveat = (f"{peer.describe()}: Cilium applies policy after service translation, to each backend; "
                  "the Service address itself was judged as world")
    return _with_apiserver(state, peer, world), caveat


def _with_apiserver(state: ClusterState, peer: Subject, ident: dict[str, tuple[str, str]]) -> Identity:
    """Addresses of the ``default/kubernetes`` endpoints also carry ``reserved:kube-apiserver``."""
    if peer.ip is not None:
        for sl in state.slices_by_service.get("default/kubernetes", ()):
            if any(peer.ip in ep.addresses for ep in sl.endpoints):
                ident = {**ident, "kube-apiserver": ("reserved", "")}
                break
    return ident


def entity_matches(entity: str, ident: Identity) -> bool:
    """Entities as ``layer3.rst`` defines them (section 1.4)."""
    match entity:
        case "all":
            return True
        case "none":
            return False
        case "world":
            return "world" in ident
        case "cluster":
            cluster = ident.get("io.cilium.k8s.policy.cluster")
            if cluster is not None and cluster == ("k8s", LOCAL_CLUSTER):
                return True
            return any(ident.get(name, ("", ""))[0] == "reserved" for name in _CLUSTER_RESERVED)
    found = ident.get(entity)
    return found is not None and found[0] == "reserved"


def port_matches(pr: PortRange, port: int, protocol: str, subject: Subject) -> bool:
    if protocol not in pr.protocols:
        return False
    if pr.name is not None:
        pod = subject.pod if subject.is_pod else None
        return ports.named_port(pod, pr.name, protocol) == port
    return pr.low == 0 or pr.low <= port <= pr.high


def _peer_matches(state: ClusterState, peer: Peer, ident: Identity, other: Subject, cidr_nodes: bool) -> bool:
    match peer.kind:
        case PeerKind.ANY:
            return True
        case PeerKind.ENDPOINTS:
            return any(s.matches(ident) for s in peer.selectors)
        case PeerKind.ENTITIES:
            return any(entity_matches(e, ident) for e in peer.entities)
        case PeerKind.CIDR:
            # CIDR selectors never match Cilium-managed pods, and nodes only with policy-cidr-match-mode=nodes.
            cidr_visible = "world" in ident or (cidr_nodes and ("host" in ident or "remote-node" in ident))
            return other.ip is not None and cidr_visible and any(c.contains(other.ip) for c in peer.cidrs)
        case PeerKind.IP_BLOCK:
            return other.ip is not None and any(c.contains(other.ip) for c in peer.cidrs)
        case PeerKind.SERVICE:
            assert peer.service is not None
            svc = state.services.get(f"{peer.service[0]}/{peer.service[1]}")
            if svc is None:
                return False
            if svc.selector:
                pod = other.pod
                return (other.kind is SubjectKind.POD and pod is not None and pod.namespace == svc.namespace
                        and all(pod.labels.get(k) == v for k, v in svc.selector.items()))
            return other.ip is not None and "world" in ident and any(
                other.ip in ep.addresses for sl in state.slices_by_service.get(svc.key, ()) for ep in sl.endpoints)
    return False


def selecting(rules: Iterable[ModelRule], direction: Direction, ident: Identity) -> tuple[ModelRule, ...]:
    return tuple(r for r in rules if r.direction is direction and not r.host and r.subject.matches(ident))


def decide(state: ClusterState, rules: tuple[ModelRule, ...], other: Subject, *, other_ident: Identity,
           port: int, protocol: str, destination: Subject, cidr_nodes: bool = False) -> ModelVerdict:
    """Which of the selecting ``rules`` allow or deny this peer and port (section 1.11 steps 4-5)."""
    allowed: list[ModelRule] = []
    denied: list[ModelRule] = []
    maybe_allow: list[str] = []
    maybe_deny: list[str] = []
    for rule in rules:
        if rule.ports is not None and not any(port_matches(p, port, protocol, destination) for p in rule.ports):
            continue
        matched = _peer_matches(state, rule.peer, other_ident, other, cidr_nodes)
        if rule.notes:
            # Not decidable or not evaluated here: it may (not) match; said only where it could change the answer.
            (maybe_deny if rule.action is Action.DENY else maybe_allow).extend(
                f"{rule.origin.describe()}: {n}" for n in rule.notes)
        if matched:
            (denied if rule.action is Action.DENY else allowed).append(rule)
    l7: tuple[str, ...] = ()
    if allowed and all(r.l7 is not None for r in allowed):
        # An L4-only allow of the same peer and port makes the L7 part void (section 1.6).
        l7 = tuple(f"allowed at L3/L4 by {r.origin.describe()}, then subject to L7 rule {r.l7} (not evaluated)"
                   for r in allowed)
    return ModelVerdict(rules, tuple(allowed), tuple(denied), tuple(dict.fromkeys(maybe_allow)),
                        tuple(dict.fromkeys(maybe_deny)), l7)


def identity_text(ident: Identity) -> str:
    """Identity labels as Cilium prints them: ``k8s:app=web``, ``reserved:host``."""
    return "{" + ", ".join(f"{src}:{k}" + (f"={v}" if v else "") for k, (src, v) in sorted(ident.items())) + "}"


def rule_failures(state: ClusterState, rule: ModelRule, other: Subject, *, other_ident: Identity, port: int,
                  protocol: str, destination: Subject, cidr_nodes: bool = False) -> tuple[str, ...]:
    """The clauses of one rule that this connection fails, in the rule's own terms (empty: it matches)."""
    out: list[str] = []
    if rule.ports is not None and not any(port_matches(p, port, protocol, destination) for p in rule.ports):
        out.append(f"toPorts {', '.join(p.describe() for p in rule.ports)} do not include {protocol}/{port}")
    if not _peer_matches(state, rule.peer, other_ident, other, cidr_nodes):
        who = other.describe()
        if rule.peer.kind is PeerKind.CIDR and "world" not in other_ident:
            out.append(f"{rule.peer.text} cannot match {who}: CIDR rules do not match Cilium-managed pods or nodes "
                       f"(identity {identity_text(other_ident)})")
        else:
            out.append(f"{rule.peer.text} does not match {who} (identity {identity_text(other_ident)})")
    return tuple(out)
