"""networking.k8s.io/v1 NetworkPolicy compiled into the rule model.

The proof that one model holds every kind: the v1 semantics (isolation
per listed policyType, union of rules, empty ``from``/``ports`` meaning
"all", a podSelector without namespaceSelector meaning the policy's
namespace) expressed as model rules over the same identity labels Cilium
uses (policy-kinds.md section 1.3). tests/unit/policy/test_model_matches_v1.py
checks it against the engine's own v1 verdicts on random clusters.
"""

from __future__ import annotations

from drop_explainer.cluster.objects import LabelSelector, NetworkPolicy, Operator, PolicyType, Rule
from drop_explainer.cluster.objects import Peer as V1Peer
from drop_explainer.policy.kinds.cilium import NS_KEY, NS_LABELS
from drop_explainer.policy.model import (
    Action,
    Cidr,
    CompiledPolicy,
    Direction,
    ModelRule,
    Origin,
    Peer,
    PeerKind,
    PortRange,
    Req,
    Selector,
)

KIND = "NetworkPolicy"


def _reqs(sel: LabelSelector, prefix: str = "") -> tuple[Req, ...]:
    eq = tuple(Req("k8s", prefix + k, Operator.IN, (v,)) for k, v in sel.match_labels)
    return eq + tuple(Req("k8s", prefix + r.key, r.operator, r.values) for r in sel.match_expressions)


def _peer(peer: V1Peer, namespace: str) -> Peer:
    if peer.ip_block is not None:
        b = peer.ip_block
        return Peer(PeerKind.IP_BLOCK, cidrs=(Cidr(b.cidr, b.except_),), text=f"ipBlock {b.cidr}")
    pods = _reqs(peer.pod_selector) if peer.pod_selector is not None else ()
    if peer.namespace_selector is None:
        spaces: tuple[Req, ...] = (Req("k8s", NS_KEY, Operator.IN, (namespace,)),)
    else:
        spaces = (Req("k8s", NS_KEY, Operator.EXISTS), *_reqs(peer.namespace_selector, NS_LABELS))
    sel = Selector((*pods, *spaces))
    return Peer(PeerKind.ENDPOINTS, selectors=(sel,), text=sel.describe())


def _ports(rule: Rule) -> tuple[PortRange, ...] | None:
    if not rule.ports:
        return None
    out = []
    for pp in rule.ports:
        if isinstance(pp.port, str):
            out.append(PortRange((pp.protocol,), name=pp.port))
        elif pp.port is None:
            out.append(PortRange((pp.protocol,)))
        else:
            out.append(PortRange((pp.protocol,), pp.port, pp.end_port if pp.end_port is not None else pp.port))
    return tuple(out)


def compile_policy(pol: NetworkPolicy) -> CompiledPolicy:
    subject = Selector((*_reqs(pol.pod_selector), Req("k8s", NS_KEY, Operator.IN, (pol.namespace,))))
    out: list[ModelRule] = []
    for ptype, direction, rules, key in ((PolicyType.INGRESS, Direction.INGRESS, pol.ingress, "ingress"),
                                        (PolicyType.EGRESS, Direction.EGRESS, pol.egress, "egress")):
        if ptype not in pol.policy_types:
            continue
        # Listing the direction isolates, with or without rules: the marker selects and matches nothing.
        out.append(ModelRule(Origin(KIND, pol.namespace, pol.name, f"spec.policyTypes[{key}]"), direction,
                             Action.ALLOW, subject, Peer(PeerKind.NONE, text="(isolation)"), None))
        for i, rule in enumerate(rules):
            origin = Origin(KIND, pol.namespace, pol.name, f"spec.{key}[{i}]", i)
            ports = _ports(rule)
            peers = [_peer(p, pol.namespace) for p in rule.peers] or [Peer(PeerKind.ANY, text="(all peers)")]
            out.extend(ModelRule(origin, direction, Action.ALLOW, subject, peer, ports) for peer in peers)
    return CompiledPolicy(KIND, pol.namespace, pol.name, tuple(out), pol.resource_version)
