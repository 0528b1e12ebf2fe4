"""One small rule model that every policy kind compiles into.

A kind's compiler (``policy/kinds/<kind>.py``) turns each object into
``ModelRule`` entries: where the rule sits (tier, priority), whom it applies
to (subject), which direction, which peers and ports, and what it does
(Allow, Deny, Pass), with a back-reference to the object, rule and clause it
came from so that an explanation can quote it. The evaluator
(``policy/evaluating.py``) walks these rules the same way whatever the kind;
only compiling and rendering a clause differ per kind.

Identities are label sets as Cilium sees them: ``source:key=value``, where a
selector key without a source matches the key from any source
(policy-kinds.md section 1.3).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from drop_explainer.cluster.objects import Operator

ANY = "any"
"""The selector source that matches a key from every source."""

TIER_ADMIN = 100
TIER_NORMAL = 200
TIER_BASELINE = 250
TIER_DEFAULT = 255
"""Cilium 1.20's tiers (policy-kinds.md section 1.9); NetworkPolicy, CNP and CCNP are all Normal."""


class Action(enum.StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"
    PASS = "Pass"


class Direction(enum.StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


Identity = Mapping[str, tuple[str, str]]
"""An identity's labels: key -> (source, value), e.g. ``"app" -> ("k8s", "web")``, ``"host" -> ("reserved", "")``."""


@dataclass(frozen=True, slots=True)
class Req:
    """One requirement of a selector on an identity, with its label source (``any`` for none)."""

    source: str
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def holds(self, identity: Identity) -> bool:
        found = identity.get(self.key)
        present = found is not None and (self.source == ANY or found[0] == self.source)
        value = found[1] if found is not None and present else None
        match self.operator:
            case Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_IN:
                return value is None or value not in self.values
            case Operator.EXISTS:
                return value is not None
            case Operator.DOES_NOT_EXIST:
                return value is None

    def describe(self) -> str:
        key = self.key if self.source == ANY else f"{self.source}:{self.key}"
        match self.operator:
            case Operator.IN if len(self.values) == 1:
                return f"{key}={self.values[0]}"
            case Operator.IN:
                return f"{key} in ({','.join(self.values)})"
            case Operator.NOT_IN:
                return f"{key} notin ({','.join(self.values)})"
            case Operator.EXISTS:
                return key
            case Operator.DOES_NOT_EXIST:
                return f"!{key}"


@dataclass(frozen=True, slots=True)
class Selector:
    """Labels an identity must all satisfy; no requirement selects every identity."""

    reqs: tuple[Req, ...] = ()

    def matches(self, identity: Identity) -> bool:
        return all(r.holds(identity) for r in self.reqs)

    def describe(self) -> str:
        return "{" + ", ".join(r.describe() for r in self.reqs) + "}"


@dataclass(frozen=True, slots=True)
class Cidr:
    """A prefix and the prefixes carved out of it (``except``)."""

    cidr: str
    excepts: tuple[str, ...] = ()

    def contains(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(self.cidr, strict=False)
        if addr.version != net.version or addr not in net:
            return False
        return not any(addr in ipaddress.ip_network(e, strict=False) for e in self.excepts
                       if ipaddress.ip_network(e, strict=False).version == addr.version)


class PeerKind(enum.StrEnum):
    ANY = "any"
    """An implicit wildcard: every identity (a rule with ports but no L3 field)."""
    NONE = "none"
    """An explicitly empty list: selects nothing."""
    ENDPOINTS = "endpoints"
    ENTITIES = "entities"
    CIDR = "cidr"
    """Cilium's CIDR selectors: world (and unmanaged) addresses only, never Cilium-managed pods."""
    IP_BLOCK = "ipBlock"
    """NetworkPolicy v1's ipBlock: any address in the prefix (the CNI profile says what the datapath can see)."""
    SERVICE = "service"
    FQDN = "fqdn"
    """Cannot be decided from the state alone."""
    UNSUPPORTED = "unsupported"
    """A peer form not evaluated here (nodes, groups): its answers are marked incomplete."""


@dataclass(frozen=True, slots=True)
class Peer:
    kind: PeerKind
    selectors: tuple[Selector, ...] = ()
    entities: tuple[str, ...] = ()
    cidrs: tuple[Cidr, ...] = ()
    service: tuple[str, str] | None = None
    """(namespace, name) of a ``toServices`` Service."""
    text: str = ""
    """The clause as written, for explanations (``fromEntities: [host]``)."""


@dataclass(frozen=True, slots=True)
class PortRange:
    """Ports ``low``..``high`` (inclusive) or a named port, on some protocols; low 0 means every port."""

    protocols: tuple[str, ...]
    low: int = 0
    high: int = 0
    name: str | None = None

    def describe(self) -> str:
        protos = "/".join(self.protocols) if len(self.protocols) < 3 else "ANY"
        if self.name is not None:
            return f"{self.name}/{protos}"
        if self.low == 0:
            return f"any port/{protos}"
        return f"{self.low}{'-' + str(self.high) if self.high > self.low else ''}/{protos}"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a model rule came from: the object, its rule (``specs[i]``) and the clause."""

    kind: str
    namespace: str | None
    name: str
    rule: str
    """E.g. ``specs[1].ingress[0]``."""
    index: int = -1
    """The rule's index in its direction's list where answers use it (NetworkPolicy's allowed_by)."""

    def describe(self) -> str:
        ref = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {ref} {self.rule}"


@dataclass(frozen=True, slots=True)
class ModelRule:
    """One compiled rule: subject, direction, peer, ports and action, with where it came from."""

    origin: Origin
    direction: Direction
    action: Action
    subject: Selector
    peer: Peer
    ports: tuple[PortRange, ...] | None
    """None: every port and protocol (an L3-only rule); otherwise one of these must match."""
    tier: int = TIER_NORMAL
    priority: float = 0.0
    default_deny: bool = True
    """Whether this rule puts its subject in default deny for its direction (``enableDefaultDeny``)."""
    l7: str | None = None
    """An L7 rule on the ports: the connection is admitted at L3/L4, then subject to it."""
    host: bool = False
    """A ``nodeSelector`` rule: its subject is the host identity, never a pod."""
    notes: tuple[str, ...] = field(default=())
    """What about this rule is not evaluated (answers that depend on it are incomplete)."""


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy object of a kind other than NetworkPolicy v1, compiled into model rules."""

    kind: str
    namespace: str | None
    name: str
    rules: tuple[ModelRule, ...]
    resource_version: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace or ''}/{self.name}"

    def describe(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass(frozen=True, slots=True)
class RefusedPolicy:
    """An object its own kind's validation rejects: it has no effect at all, and is counted and named."""

    kind: str
    namespace: str | None
    name: str
    field: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace or ''}/{self.name}"

    def describe(self) -> str:
        ref = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {ref}: field {self.field}: {self.reason}"
