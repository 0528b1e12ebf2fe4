"""A deliberately naive CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy evaluator, from the reference.

It exists to be compared with the real engine by the differential test, so it
shares nothing with ``drop_explainer``: it reads the raw Kubernetes documents
(dicts, as a YAML or JSON file holds them) and answers every question by
scanning every object, the way ``policy-kinds.md`` section 1 reads (L3/L4 only,
host firewall off, one cluster named ``default``):

- identities (1.3): a pod is ``k8s:`` pod labels plus ``io.kubernetes.pod.namespace``,
  ``io.cilium.k8s.policy.serviceaccount``, ``io.cilium.k8s.policy.cluster`` and
  ``io.cilium.k8s.namespace.labels.*``; a node is ``reserved:host`` seen from its
  own pods and ``reserved:remote-node`` from the others (host-network pods are
  their node); every other address is ``reserved:world``;
- subjects (1.2): a CNP's ``endpointSelector`` always gets the policy's
  namespace (a foreign one is removed), a CCNP's does not; ``nodeSelector``
  rules police only the host, which without host firewall is not policed;
- peers (1.2, 1.4): ``fromEndpoints`` selectors get the policy's namespace (CNP)
  or "any namespace" (CCNP) unless they name ``reserved:`` labels, the
  namespace, or (CNP) namespace labels; entities; CIDRs, which never match a
  pod and match a node only with ``policy-cidr-match-mode=nodes``;
- ports (1.5): numbers, ranges, named ports, ``ANY`` = TCP, UDP and SCTP;
- empty lists and ``{}`` exactly as the traps table (1.7); invalid objects have
  no effect (1.1);
- default deny (1.8), deny precedence and the one rule set with Kubernetes
  NetworkPolicy (1.9, KNP as Cilium translates it), allow-localhost (5.1);
- the procedure of 1.11: egress at the source and ingress at the destination.

A connection from a pod to itself is not asked: it never leaves the pod.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Json = Mapping[str, Any]
Label = tuple[str, str, str]
"""(source, key, value) of one identity label."""

NS_KEY = "io.kubernetes.pod.namespace"
NS_LABELS = "io.cilium.k8s.namespace.labels."
SA_KEY = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_KEY = "io.cilium.k8s.policy.cluster"
CLUSTER_NAME = "default"
ANY_PROTOCOLS = ("TCP", "UDP", "SCTP")
CNP, CCNP, KNP = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy"
L3_INGRESS = ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "fromNodes", "fromGroups")
L3_EGRESS = ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toServices", "toGroups", "toNodes", "toFQDNs")
CLUSTER_ENTITIES = ("host", "remote-node", "init", "ingress", "health", "unmanaged", "kube-apiserver")


@dataclass(frozen=True)
class Settings:
    """The agent options that change a verdict (reference 1.10, 5.1)."""

    allow_localhost: str = "always"
    """``always`` (what ``auto`` becomes under Kubernetes) or ``policy``."""
    enforcement: str = "default"
    """``default`` or ``always``."""
    cidr_match_nodes: bool = False
    """``policy-cidr-match-mode=nodes``."""


@dataclass(frozen=True)
class Peer:
    """One end as seen from the endpoint whose policy is evaluated."""

    kind: str
    """pod, host, remote-node or world."""
    ip: str | None
    labels: frozenset[Label]
    pod: Json | None = None


@dataclass(frozen=True)
class End:
    ip: str | None
    pod: Json | None = None
    node: str | None = None
    """The node name when this end is a node (or a host-network pod on it)."""


@dataclass(frozen=True)
class Side:
    allowed: bool
    enforced: bool
    """The endpoint is in default deny for this direction (or policed by a deny)."""
    denied_by: frozenset[str] = frozenset()
    allowed_by: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NaiveVerdict:
    ingress: Side
    egress: Side

    @property
    def allowed(self) -> bool:
        return self.ingress.allowed and self.egress.allowed


@dataclass(frozen=True)
class _Rule:
    """One CNP rule (or KNP, translated) that selects the endpoint, with its origin."""

    origin: str
    kind: str
    namespace: str | None
    body: Json
    entries: dict[str, list[Json]] = field(default_factory=dict)


# --- the cluster, read from the documents -------------------------------------------------------


def _of_kind(docs: Iterable[Json], kind: str) -> list[Json]:
    return [d for d in docs if d.get("kind") == kind]


def _pod_ips(pod: Json) -> list[str]:
    status = pod.get("status") or {}
    ips = [p["ip"] for p in status.get("podIPs") or []]
    return ips or ([status["podIP"]] if status.get("podIP") else [])


def _node_of_ip(docs: Sequence[Json], ip: str) -> str | None:
    for node in _of_kind(docs, "Node"):
        if any(a.get("address") == ip for a in (node.get("status") or {}).get("addresses") or []):
            return str(node["metadata"]["name"])
    return None


def end_of(docs: Sequence[Json], ref: str) -> End:
    """``namespace/pod`` or an address; a host-network pod is its node."""
    pods = _of_kind(docs, "Pod")
    if "/" in ref and ":" not in ref:
        ns, name = ref.split("/", 1)
        pod = next(p for p in pods if p["metadata"]["namespace"] == ns and p["metadata"]["name"] == name)
        ips = _pod_ips(pod)
        ip = ips[0] if ips else None
        if (pod.get("spec") or {}).get("hostNetwork"):
            return End(ip, node=pod["spec"]["nodeName"])
        return End(ip, pod)
    for pod in pods:
        if not (pod.get("spec") or {}).get("hostNetwork") and ref in _pod_ips(pod):
            return End(ref, pod)
    return End(ref, node=_node_of_ip(docs, ref))


def _namespace_labels(docs: Sequence[Json], name: str) -> dict[str, str]:
    for ns in _of_kind(docs, "Namespace"):
        if ns["metadata"]["name"] == name:
            return {**(ns["metadata"].get("labels") or {}), "kubernetes.io/metadata.name": name}
    return {"kubernetes.io/metadata.name": name}


def pod_identity(docs: Sequence[Json], pod: Json) -> frozenset[Label]:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    ns = meta["namespace"]
    out = {("k8s", k, str(v)) for k, v in (meta.get("labels") or {}).items()}
    out |= {("k8s", NS_KEY, ns), ("k8s", SA_KEY, spec.get("serviceAccountName") or "default"),
            ("k8s", CLUSTER_KEY, CLUSTER_NAME)}
    out |= {("k8s", NS_LABELS + k, v) for k, v in _namespace_labels(docs, ns).items()}
    return frozenset(out)


def peer_seen_from(docs: Sequence[Json], end: End, subject: Json) -> Peer:
    """``end`` as the policy of ``subject`` (a pod) sees it: a pod, its host, a remote node, or the world."""
    if end.pod is not None:
        return Peer("pod", end.ip, pod_identity(docs, end.pod), end.pod)
    if end.node is not None:
        kind = "host" if end.node == (subject.get("spec") or {}).get("nodeName") else "remote-node"
        return Peer(kind, end.ip, frozenset({("reserved", kind, "")}))
    return Peer("world", end.ip, frozenset({("reserved", "world", "")}))


# --- label selectors with Cilium's label sources ------------------------------------------------


def _split(key: str) -> tuple[str, str]:
    """``src:key`` names a source; a key without a colon is source ``any`` (reference 1.3)."""
    if ":" in key:
        source, bare = key.split(":", 1)
        return source, bare
    return "any", key


def _values(labels: frozenset[Label], key: str) -> list[str]:
    source, bare = _split(key)
    return [v for s, k, v in labels if k == bare and source in ("any", s)]


def selector_matches(sel: Json | None, labels: frozenset[Label]) -> bool:
    sel = sel or {}
    for key, value in (sel.get("matchLabels") or {}).items():
        if str(value) not in _values(labels, key):
            return False
    for req in sel.get("matchExpressions") or []:
        found = _values(labels, req["key"])
        values = [str(v) for v in req.get("values") or []]
        op = req["operator"]
        if op == "In" and not any(v in values for v in found):
            return False
        if op == "NotIn" and any(v in values for v in found):
            return False
        if op == "Exists" and not found:
            return False
        if op == "DoesNotExist" and found:
            return False
    return True


def _keys(sel: Json) -> list[tuple[str, str]]:
    keys = list(sel.get("matchLabels") or {}) + [r["key"] for r in sel.get("matchExpressions") or []]
    return [_split(k) for k in keys]


def subject_selects(rule: _Rule, pod: Json, identity: frozenset[Label]) -> bool:
    """endpointSelector; a CNP's always has its namespace, a foreign one being removed (reference 1.2)."""
    sel = dict(rule.body.get("endpointSelector") or {})
    if rule.kind == CNP:
        if pod["metadata"]["namespace"] != rule.namespace:
            return False
        sel["matchLabels"] = {k: v for k, v in (sel.get("matchLabels") or {}).items() if _split(k)[1] != NS_KEY}
    return selector_matches(sel, identity)


def peer_selector_matches(rule: _Rule, sel: Json, peer: Peer) -> bool:
    """fromEndpoints/toEndpoints, with the namespace Cilium adds to them (reference 1.2)."""
    keys = _keys(sel)
    if not selector_matches(sel, peer.labels):
        return False
    if any(source == "reserved" for source, _ in keys):
        return True
    if any(bare == NS_KEY and source in ("k8s", "any") for source, bare in keys):
        return True
    if rule.kind == CCNP:
        return peer.kind == "pod"
    if any(bare.startswith(NS_LABELS) for _, bare in keys):
        return True  # namespace-label keys: no namespace added (1.19.4 code; the docs disagree)
    return peer.pod is not None and peer.pod["metadata"]["namespace"] == rule.namespace


# --- peers: entities and CIDRs -------------------------------------------------------------------


def entity_matches(entity: str, peer: Peer) -> bool:
    if entity == "all":
        return True
    if entity == "cluster":
        return peer.kind in ("pod", "host", "remote-node")
    if entity in ("world", "host", "remote-node"):
        return peer.kind == entity
    return False  # init, health, ingress, unmanaged, kube-apiserver, none: no such peer in these states


def _in(ip: str | None, cidr: str) -> bool:
    if ip is None:
        return False
    addr, net = ipaddress.ip_address(ip), ipaddress.ip_network(cidr, strict=False)
    return addr.version == net.version and addr in net


def cidr_visible(peer: Peer, settings: Settings) -> bool:
    """CIDR selectors never match pods, and nodes only with policy-cidr-match-mode=nodes (reference 1.4)."""
    return peer.kind == "world" or (settings.cidr_match_nodes and peer.kind in ("host", "remote-node"))


def l3_matches(rule: _Rule, entry: Json, peer: Peer, settings: Settings, egress: bool) -> bool:
    """The L3 part of one entry; an entry without any L3 field is a wildcard only when it has ports (1.7)."""
    fields = L3_EGRESS if egress else L3_INGRESS
    present = [f for f in fields if entry.get(f) is not None]
    if not present:
        return bool(entry.get("toPorts"))
    name = present[0]  # validation allows one non-empty L3 field per entry
    items = entry[name] or []
    if name.endswith("Endpoints"):
        return any(peer_selector_matches(rule, s or {}, peer) for s in items)
    if name.endswith("Entities"):
        return any(entity_matches(e, peer) for e in items)
    if name.endswith("CIDR"):
        return cidr_visible(peer, settings) and any(_in(peer.ip, c) for c in items)
    if name.endswith("CIDRSet"):
        return cidr_visible(peer, settings) and any(
            _in(peer.ip, s["cidr"]) and not any(_in(peer.ip, e) for e in s.get("except") or []) for s in items)
    return False  # toServices, toFQDNs, nodes, groups: not generated here


# --- ports ---------------------------------------------------------------------------------------


def _named_port_matches(name: str, port: int, protocol: str, destination: Json | None) -> bool:
    if destination is None:
        return False
    return any(
        str(cp.get("name", "")).lower() == name.lower() and cp.get("containerPort") == port
        and (cp.get("protocol") or "TCP") == protocol
        for c in (destination.get("spec") or {}).get("containers") or [] for cp in c.get("ports") or []
    )


def port_matches(pp: Json, port: int, protocol: str, destination: Json | None) -> bool:
    proto = str(pp.get("protocol") or "ANY")
    if protocol not in (ANY_PROTOCOLS if proto == "ANY" else (proto,)):
        return False
    value = str(pp.get("port") or "0")
    if not value.isdigit():
        return _named_port_matches(value, port, protocol, destination)  # endPort ignored for names
    first = int(value)
    if first == 0:
        return True
    return first <= port <= int(pp.get("endPort") or first)


def l4_matches(entry: Json, port: int, protocol: str, destination: Json | None) -> bool:
    to_ports = entry.get("toPorts") or []
    if not to_ports:
        return True  # L3-only: every port and protocol
    return any(port_matches(pp, port, protocol, destination) for tp in to_ports for pp in tp.get("ports") or [])


# --- objects, validity, and the rules selecting an endpoint --------------------------------------


def cnp_valid(doc: Json) -> bool:
    """Cilium's refusals of reference 1.1 that these states can contain; an invalid object has no effect."""
    rules = [r for r in [doc.get("spec"), *(doc.get("specs") or [])] if r is not None]
    if not rules:
        return False
    for rule in rules:
        has_es, has_ns = rule.get("endpointSelector") is not None, rule.get("nodeSelector") is not None
        if has_es == has_ns or (has_ns and doc["kind"] == CNP):
            return False
        if not any(rule.get(s) for s in ("ingress", "ingressDeny", "egress", "egressDeny")):
            return False
        for section, fields in (("ingress", L3_INGRESS), ("ingressDeny", L3_INGRESS), ("egress", L3_EGRESS),
                                ("egressDeny", L3_EGRESS)):
            for entry in rule.get(section) or []:
                if sum(1 for f in fields if entry.get(f)) > 1:
                    return False
                if sum(len(tp.get("ports") or []) for tp in entry.get("toPorts") or []) > 40:
                    return False
    return True


def _knp_rules(docs: Sequence[Json], pod: Json, identity: frozenset[Label]) -> list[_Rule]:
    """A Kubernetes NetworkPolicy as Cilium translates it: default deny for each of its policyTypes."""
    out = []
    for knp in _of_kind(docs, KNP):
        ns, spec = knp["metadata"]["namespace"], knp.get("spec") or {}
        if ns != pod["metadata"]["namespace"]:
            continue
        labels = frozenset(("k8s", k, str(v)) for k, v in (pod["metadata"].get("labels") or {}).items())
        if not selector_matches(spec.get("podSelector"), labels):
            continue
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
        entries = {("ingress" if t == "Ingress" else "egress"): list(spec.get(t.lower()) or []) for t in types}
        out.append(_Rule(f"{KNP} {ns}/{knp['metadata']['name']}", KNP, ns, spec, entries))
    return out


def rules_selecting(docs: Sequence[Json], pod: Json) -> list[_Rule]:
    identity = pod_identity(docs, pod)
    out = _knp_rules(docs, pod, identity)
    for doc in [*_of_kind(docs, CNP), *_of_kind(docs, CCNP)]:
        if not cnp_valid(doc):
            continue
        ns = doc["metadata"].get("namespace") or "default" if doc["kind"] == CNP else None
        ref = f"{doc['kind']} {ns + '/' if ns else ''}{doc['metadata']['name']}"
        for i, body in enumerate([r for r in [doc.get("spec"), *(doc.get("specs") or [])] if r is not None]):
            rule = _Rule(f"{ref} rule {i}", doc["kind"], ns, body,
                         {s: list(body.get(s) or []) for s in ("ingress", "ingressDeny", "egress", "egressDeny")})
            if body.get("endpointSelector") is not None and subject_selects(rule, pod, identity):
                out.append(rule)
    return out


def _default_deny(rule: _Rule, direction: str) -> bool:
    """enableDefaultDeny: unset = true for a direction the rule has entries for; KNP always (reference 1.8)."""
    if rule.kind == KNP:
        return direction in rule.entries
    if not (rule.entries.get(direction) or rule.entries.get(direction + "Deny")):
        return False
    flag = (rule.body.get("enableDefaultDeny") or {}).get(direction)
    return True if flag is None else bool(flag)


# --- KNP peers under Cilium ----------------------------------------------------------------------


def _knp_peer_matches(rule: _Rule, peer_spec: Json, peer: Peer, docs: Sequence[Json], settings: Settings) -> bool:
    block = peer_spec.get("ipBlock")
    if block is not None:  # an ipBlock is a CIDR selector under Cilium (network/kubernetes/policy.rst)
        return cidr_visible(peer, settings) and _in(peer.ip, block["cidr"]) and not any(
            _in(peer.ip, e) for e in block.get("except") or [])
    if peer.pod is None:
        return False
    pod_labels = frozenset(("k8s", k, str(v)) for k, v in (peer.pod["metadata"].get("labels") or {}).items())
    if peer_spec.get("namespaceSelector") is None:
        ns_ok = peer.pod["metadata"]["namespace"] == rule.namespace
    else:
        ns = peer.pod["metadata"]["namespace"]
        ns_labels = frozenset(("k8s", k, v) for k, v in _namespace_labels(docs, ns).items())
        ns_ok = selector_matches(peer_spec["namespaceSelector"], ns_labels)
    return ns_ok and selector_matches(peer_spec.get("podSelector"), pod_labels)


def _knp_entry_matches(rule: _Rule, entry: Json, direction: str, peer: Peer, *, port: int, protocol: str,
                       destination: Json | None, docs: Sequence[Json], settings: Settings) -> bool:
    peers = entry.get("from" if direction == "ingress" else "to") or []
    if peers and not any(_knp_peer_matches(rule, p, peer, docs, settings) for p in peers):
        return False
    ports = entry.get("ports") or []
    if not ports:
        return True
    for pp in ports:
        proto = pp.get("protocol") or "TCP"
        if proto != protocol:
            continue
        value = pp.get("port")
        if value is None:
            return True
        if isinstance(value, int):
            if value <= port <= (pp.get("endPort") or value):
                return True
        elif _named_port_matches(str(value), port, protocol, destination):
            return True
    return False


# --- one direction, one connection ---------------------------------------------------------------


def side(docs: Sequence[Json], direction: str, *, subject: End, other: End, port: int, protocol: str,
         destination: End, settings: Settings) -> Side:
    """Reference 1.11 for one endpoint and direction (``ingress`` or ``egress``)."""
    if subject.pod is None:
        return Side(True, False)  # the host (no host firewall) and the outside are not policed here
    pod = subject.pod
    peer = peer_seen_from(docs, other, pod)
    rules = [r for r in rules_selecting(docs, pod) if r.entries.get(direction) or r.entries.get(direction + "Deny")
             or (r.kind == KNP and direction in r.entries)]
    if not rules:
        return Side(settings.enforcement != "always", settings.enforcement == "always")
    denied: set[str] = set()
    allowed: set[str] = set()
    for rule in rules:
        for section, hits in ((direction + "Deny", denied), (direction, allowed)):
            for i, entry in enumerate(rule.entries.get(section) or []):
                if rule.kind == KNP:
                    ok = _knp_entry_matches(rule, entry, direction, peer, port=port, protocol=protocol,
                                            destination=destination.pod, docs=docs, settings=settings)
                else:
                    ok = (l3_matches(rule, entry, peer, settings, direction == "egress")
                          and l4_matches(entry, port, protocol, destination.pod))
                if ok:
                    hits.add(f"{rule.origin} {section}[{i}]")
    default_deny = settings.enforcement == "always" or any(_default_deny(r, direction) for r in rules)
    if (direction == "ingress" and default_deny and settings.allow_localhost != "policy"
            and peer.kind == "host"):
        allowed.add("allow-localhost-ingress")
    if denied:
        return Side(False, True, frozenset(denied), frozenset(allowed))
    return Side(bool(allowed) or not default_deny, default_deny, frozenset(), frozenset(allowed))


def evaluate(docs: Sequence[Json], source: str, destination: str, port: int, protocol: str = "TCP", *,
             settings: Settings | None = None) -> NaiveVerdict:
    settings = settings or Settings()
    src, dst = end_of(docs, source), end_of(docs, destination)
    return NaiveVerdict(
        ingress=side(docs, "ingress", subject=dst, other=src, port=port, protocol=protocol, destination=dst,
                     settings=settings),
        egress=side(docs, "egress", subject=src, other=dst, port=port, protocol=protocol, destination=dst,
                    settings=settings),
    )
