"""The NetworkPolicy verdict for one connection over one snapshot.

Semantics are those of networking.k8s.io/v1: a pod is isolated in a direction
once any policy selecting it lists that direction; an isolated pod accepts
what the union of those policies' rules allows; a connection needs both the
source's egress and the destination's ingress. The Engine indexes a snapshot
once (which policies select each pod) so a verdict costs a few dict lookups.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from functools import lru_cache

from drop_explainer.cluster.objects import IPBlock, NetworkPolicy, Node, Peer, Pod, PolicyType, Rule
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import evaluating, ports, profiles, selectors
from drop_explainer.policy.endpoints import Subject, SubjectKind
from drop_explainer.policy.model import Direction, Identity, ModelRule
from drop_explainer.policy.profiles import NodeLocal, Profile

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, slots=True)
class Connection:
    source: Subject
    destination: Subject
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    allowed: bool
    isolated: bool
    policies: tuple[NetworkPolicy, ...] = ()
    """The policies that select the pod for this direction (isolate it)."""
    allowed_by: tuple[tuple[NetworkPolicy, int], ...] = ()
    """(policy, rule index) pairs whose rule admits this connection."""
    node_local: NodeLocal | None = None
    """Set when the source is the destination pod's own node: whether the profile exempts it, and why."""
    isolated_by_mode: str | None = None
    """Set when no policy selects the pod but the datapath isolates it anyway (Cilium enforcement mode always)."""
    selecting: tuple[ModelRule, ...] = ()
    """Rules of other kinds (CiliumNetworkPolicy...) whose subject selects the pod for this direction."""
    rules_allowing: tuple[ModelRule, ...] = ()
    """Those of them that admit this connection."""
    denied_by: tuple[ModelRule, ...] = ()
    """Deny rules that match: they win over every allow of any kind (policy-kinds.md section 1.9)."""
    unsure: tuple[str, ...] = ()
    """Why this direction's answer may be wrong (toFQDNs, features not evaluated): the answer is incomplete."""
    l7: tuple[str, ...] = ()
    """Admitted at L3/L4, then subject to L7 rules that are not evaluated."""

    @property
    def node_exempt(self) -> bool:
        """Allowed by the node-local exemption alone (no rule admits it)."""
        return (self.allowed and self.isolated and not self.allowed_by and not self.rules_allowing
                and self.node_local is not None)


@dataclass(frozen=True, slots=True)
class Verdict:
    ingress: DirectionVerdict
    egress: DirectionVerdict

    @property
    def allowed(self) -> bool:
        return self.ingress.allowed and self.egress.allowed

    @property
    def unsure(self) -> tuple[str, ...]:
        """Reasons the verdict may be wrong; empty when it is decided."""
        return (*self.ingress.unsure, *self.egress.unsure)


NOT_ISOLATED = DirectionVerdict(allowed=True, isolated=False)
_DIRECTIONS = {PolicyType.INGRESS: Direction.INGRESS, PolicyType.EGRESS: Direction.EGRESS}


@lru_cache(maxsize=16384)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def ip_in_block(ip: str | None, block: IPBlock) -> bool:
    """Inside cidr and outside every except; families never mix."""
    if ip is None:
        return False
    addr = ipaddress.ip_address(ip)
    net = _network(block.cidr)
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in _network(e) for e in block.except_ if _network(e).version == addr.version)


def peer_matches(peer: Peer, policy_ns: str, other: Subject) -> bool:
    """Does this from/to entry of a policy in ``policy_ns`` match ``other``?"""
    if peer.ip_block is not None:
        return ip_in_block(other.ip, peer.ip_block)
    if not other.is_pod or other.pod is None:
        return False  # selectors only ever match pods
    pod = other.pod
    if peer.namespace_selector is None:
        if pod.namespace != policy_ns:
            return False
    elif not selectors.matches(peer.namespace_selector, other.namespace_labels or {}):
        return False
    return peer.pod_selector is None or selectors.matches(peer.pod_selector, pod.labels)


def rule_matches(rule: Rule, policy_ns: str, other: Subject, conn: Connection) -> bool:
    dest_pod = conn.destination.pod if conn.destination.is_pod else None
    if not ports.ports_match(rule.ports, conn.port, conn.protocol, dest_pod):
        return False
    return not rule.peers or any(peer_matches(p, policy_ns, other) for p in rule.peers)


def rules_of(policy: NetworkPolicy, direction: PolicyType) -> tuple[Rule, ...]:
    return policy.ingress if direction is PolicyType.INGRESS else policy.egress


def profile_of_state(state: ClusterState) -> Profile:
    """Without a configured profile: the detected enforcer's, else ``spec``."""
    found = state.enforcer
    if found is None:
        return Profile()
    return profiles.choose(detected=found.profile, evidence=", ".join(found.evidence[:2]), settings=found.settings)


def local_node(state: ClusterState, conn: Connection, profile: Profile) -> tuple[Node | None, str] | None:
    """(node, name) when the source is the destination pod's own node, else None.

    The node's own addresses, a host-network pod on it (a host process), or
    the pod's hostIP; on OVN-Kubernetes also the node's management-port
    address, from which host traffic reaches local pods.
    """
    dst = conn.destination.pod
    if dst is None or not conn.destination.is_pod or not (dst.node_name or dst.host_ip):
        return None
    name = dst.node_name or ""
    node = state.nodes.get(name)
    src = conn.source
    if src.kind is SubjectKind.NODE and src.node is not None and src.node.name == name:
        return node, name
    if src.kind is SubjectKind.HOST_NETWORK_POD and src.pod is not None and src.pod.node_name == name:
        return node, name
    if src.ip is None or src.kind is SubjectKind.POD:
        return None
    if src.ip == dst.host_ip or (node is not None and any(a == src.ip for _, a in node.addresses)):
        return node, name or "its node"
    if profile.name == "ovn-kubernetes" and node is not None and src.ip in profiles.management_port_ips(node):
        return node, name
    return None


class Engine:
    """A snapshot with the index of which policies select each pod, and the CNI profile to judge by."""

    def __init__(self, state: ClusterState, profile: Profile | None = None) -> None:
        self.state = state
        self.profile = profile if profile is not None else profile_of_state(state)
        self._selecting: dict[tuple[str, PolicyType], tuple[NetworkPolicy, ...]] = {}
        self._model: dict[tuple[str, PolicyType], tuple[ModelRule, ...]] = {}
        self._identities: dict[tuple[str, str | None], Identity] = {}

    def rules_selecting(self, subject: Subject, direction: PolicyType) -> tuple[ModelRule, ...]:
        """The compiled rules (CCNP, and CNP of the pod's namespace) whose subject selects the pod."""
        pod = subject.pod
        if not self.state.compiled or pod is None:
            return ()
        key = (pod.key, direction)
        found = self._model.get(key)
        if found is None:
            ident = evaluating.pod_identity(self.state, subject)
            scope = (*self.state.compiled_by_namespace.get(None, ()),
                     *self.state.compiled_by_namespace.get(pod.namespace, ()))
            found = evaluating.selecting((r for cp in scope for r in cp.rules), _DIRECTIONS[direction], ident)
            self._model[key] = found
        return found

    def policies_selecting(self, pod: Pod, direction: PolicyType) -> tuple[NetworkPolicy, ...]:
        """The policies that isolate ``pod`` for ``direction``, sorted by name."""
        key = (pod.key, direction)
        found = self._selecting.get(key)
        if found is None:
            found = tuple(
                sorted(
                    (
                        p
                        for p in self.state.policies_by_namespace.get(pod.namespace, ())
                        if direction in p.policy_types and selectors.matches(p.pod_selector, pod.labels)
                    ),
                    key=lambda p: p.name,
                )
            )
            self._selecting[key] = found
        return found

    def index_all(self) -> None:
        """Warm the selection index for every pod (done lazily otherwise)."""
        for pod in self.state.pods.values():
            if not pod.host_network:
                self.policies_selecting(pod, PolicyType.INGRESS)
                self.policies_selecting(pod, PolicyType.EGRESS)
                if self.state.compiled:
                    subject = Subject(SubjectKind.POD, None, pod=pod,
                                      namespace_labels=self.state.namespace_labels(pod.namespace))
                    self.rules_selecting(subject, PolicyType.INGRESS)
                    self.rules_selecting(subject, PolicyType.EGRESS)

    def direction(self, conn: Connection, direction: PolicyType) -> DirectionVerdict:
        """The verdict of one side: the destination's ingress or the source's egress."""
        subject, other = (
            (conn.destination, conn.source) if direction is PolicyType.INGRESS else (conn.source, conn.destination)
        )
        if not subject.is_pod or subject.pod is None:
            host = self._host_policies(subject, direction) if self.state.compiled else ()
            if host:
                return replace(NOT_ISOLATED, unsure=host)
            return NOT_ISOLATED  # nodes, host-network pods and the outside are never isolated
        local = local_node(self.state, conn, self.profile) if direction is PolicyType.INGRESS else None
        policies = self.policies_selecting(subject.pod, direction)
        rules = self.rules_selecting(subject, direction)
        if not policies and not rules:
            if not self.profile.isolates_every_pod:
                return NOT_ISOLATED
            why = (f"Cilium policy-enforcement-mode=always: no {direction.value.lower()} policy selects "
                   f"{subject.pod.key}, so it {'accepts' if direction is PolicyType.INGRESS else 'sends'} nothing")
            nl = None
            if local is not None:
                # Only an endpoint with ingress rules gets the synthesised allow from the host (cilium#48444).
                nl = NodeLocal(local[1], False, f"node {local[1]} is the pod's own node, but with "
                               "policy-enforcement-mode=always and no ingress rule selecting the pod Cilium adds no "
                               "allow from the local host")
            return DirectionVerdict(False, True, (), (), nl, why)
        model = self._model_verdict(rules, subject, other, conn) if rules else None
        if other.ip is not None and self.profile.ip_block_blind_to(other.kind) is not None:
            other = replace(other, ip=None)  # selectors never read the address; only ipBlocks did
        allowed_by = tuple(
            (p, i)
            for p in policies
            for i, rule in enumerate(rules_of(p, direction))
            if rule_matches(rule, p.namespace, other, conn)
        )
        nl = profiles.node_local(self.profile, local[0], local[1], conn.source.ip) if local is not None else None
        if model is None:
            if nl is not None:
                return DirectionVerdict(bool(allowed_by) or nl.exempt, True, policies, allowed_by, nl)
            return DirectionVerdict(bool(allowed_by), True, policies, allowed_by)
        return _combined(policies, allowed_by, model, nl, self.profile.isolates_every_pod)

    def _host_policies(self, subject: Subject, direction: PolicyType) -> tuple[str, ...]:
        """Host firewall rules (CCNP nodeSelector) that select this node: not evaluated, so said."""
        node = subject.node
        if node is None and subject.pod is not None and subject.pod.node_name:
            node = self.state.nodes.get(subject.pod.node_name)
        if node is None:
            return ()
        ident = {**{k: ("k8s", v) for k, v in node.labels.items()}, "host": ("reserved", "")}
        found = [r for cp in self.state.compiled_by_namespace.get(None, ()) for r in cp.rules
                 if r.host and r.direction is _DIRECTIONS[direction] and r.subject.matches(ident)]
        return tuple(dict.fromkeys(
            f"{r.origin.describe()} is a host firewall policy selecting node {node.name}: host policies are not "
            "evaluated (they apply only with Cilium's host firewall enabled)" for r in found))

    def _model_verdict(self, rules: tuple[ModelRule, ...], subject: Subject, other: Subject,
                       conn: Connection) -> evaluating.ModelVerdict:
        node = subject.pod.node_name if subject.pod is not None else None
        ident, caveat = evaluating.peer_identity(self.state, other, node, self._identities)
        cidr_nodes = self.profile.name == "cilium" and self.profile.setting("policy-cidr-match-mode") == "nodes"
        found = evaluating.decide(self.state, rules, other, other_ident=ident, port=conn.port,
                                  protocol=conn.protocol, destination=conn.destination, cidr_nodes=cidr_nodes)
        return replace(found, maybe_allow=(*found.maybe_allow, caveat)) if caveat else found

    def evaluate(self, conn: Connection) -> Verdict:
        return Verdict(self.direction(conn, PolicyType.INGRESS), self.direction(conn, PolicyType.EGRESS))


def _combined(policies: tuple[NetworkPolicy, ...], allowed_by: tuple[tuple[NetworkPolicy, int], ...],
              model: evaluating.ModelVerdict, nl: NodeLocal | None, always: bool) -> DirectionVerdict:
    """NetworkPolicy v1 and the compiled kinds on one endpoint (policy-kinds.md section 1.9).

    Allows are one union, any matching deny wins over every allow (also the
    synthesised allow of the local host, section 5.1), and the endpoint is
    in default deny if any selecting rule of either kind asks for it.
    """
    isolated = bool(policies) or model.default_deny or always
    unsure: tuple[str, ...] = ()
    if model.denied_by:
        allowed = False
    else:
        admitted = bool(allowed_by) or bool(model.allowed_by) or not isolated or (nl is not None and nl.exempt)
        allowed = admitted
        unsure = model.maybe_deny if allowed else model.maybe_allow
    mode = None
    if always and not policies and not model.default_deny:
        mode = "Cilium policy-enforcement-mode=always: every endpoint is in default deny"
    return DirectionVerdict(allowed, isolated, policies, allowed_by, nl, mode, model.selecting, model.allowed_by,
                            model.denied_by, unsure, model.l7 if allowed and not allowed_by else ())
