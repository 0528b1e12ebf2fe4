"""The one normalised Flow record that every source produces.

Hubble, Calico and saved files all say "this packet was dropped" in their
own words; everything downstream (the explainer, metrics, the drop store)
reads only this record, so a new source never touches the explainer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Verdict(enum.StrEnum):
    """What the datapath did with the packet."""

    FORWARDED = "forwarded"
    DROPPED = "dropped"
    AUDIT = "audit"
    ERROR = "error"
    REDIRECTED = "redirected"
    TRACED = "traced"
    TRANSLATED = "translated"
    UNKNOWN = "unknown"


class DropKind(enum.StrEnum):
    """Whether a drop is ours to explain with the policy engine.

    POLICY_DENIED is the default deny of an isolated pod (nothing allowed
    it); POLICY_DENY is an explicit deny rule (a CNI-specific policy kind);
    OTHER is a datapath reason (no route, CT miss...) that policies cannot
    explain and must not be blamed for.
    """

    NONE = "none"
    POLICY_DENIED = "policy-denied"
    POLICY_DENY = "policy-deny"
    OTHER = "other"


class Direction(enum.StrEnum):
    """The direction of the policy check, seen from the pod that enforced it."""

    INGRESS = "ingress"
    EGRESS = "egress"
    UNKNOWN = "unknown"


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"
    ICMP = "ICMP"
    ICMPV6 = "ICMPv6"
    OTHER = "OTHER"


class EndpointKind(enum.StrEnum):
    """What kind of thing stands at one end of a flow.

    Only POD endpoints are matched by pod and namespace selectors; every
    other kind is matched by ipBlock alone, which is why the kind matters.
    """

    POD = "pod"
    HOST = "host"
    REMOTE_NODE = "remote-node"
    WORLD = "world"
    KUBE_APISERVER = "kube-apiserver"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a flow as the CNI saw it; any field may be unknown."""

    kind: EndpointKind = EndpointKind.UNKNOWN
    ip: str | None = None
    namespace: str | None = None
    pod: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    workload: str | None = None
    """Owner workload name (Deployment, DaemonSet...) when the CNI knows it."""
    identity: int | None = None
    """Cilium security identity, kept for cross-checking with Hubble."""
    pod_prefix: str | None = None
    """Calico reports aggregated pods as a name prefix (``nginx-86c57db685-*``)."""


@dataclass(frozen=True, slots=True)
class PolicyHit:
    """A policy the CNI itself named as the cause (or the allower) of a verdict."""

    name: str
    namespace: str | None = None
    kind: str = "NetworkPolicy"
    action: str = "deny"
    """deny, allow, pass, end-of-tier-deny, ..."""
    rule_index: int | None = None
    tier: str | None = None
    trigger: str | None = None
    """For an end-of-tier deny, the policy whose selection triggered it."""
    staged: bool = False


@dataclass(frozen=True, slots=True)
class Flow:
    """A normalised flow; one record is one event or one aggregate."""

    time_ns: int
    verdict: Verdict
    source: Endpoint
    destination: Endpoint
    protocol: Protocol = Protocol.TCP
    source_port: int | None = None
    destination_port: int | None = None
    node: str | None = None
    drop_kind: DropKind = DropKind.NONE
    drop_reason: str | None = None
    """The CNI's own words for the reason, e.g. POLICY_DENIED."""
    direction: Direction = Direction.UNKNOWN
    is_reply: bool | None = None
    tcp_flags: frozenset[str] = frozenset()
    attribution: tuple[PolicyHit, ...] = ()
    destination_names: tuple[str, ...] = ()
    packets: int = 1
    """Packets this record stands for (1 for an event, more for an aggregate)."""
    connections: int = 1
    """Distinct connection attempts this record stands for."""
    origin: str = "file"
    """Which source made it: hubble, calico, file."""

    @property
    def is_connection_attempt(self) -> bool:
        """A SYN without ACK opens a connection; retransmits repeat it."""
        return "SYN" in self.tcp_flags and "ACK" not in self.tcp_flags
