"""What an explanation is made of; rendering and the API read only these records."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drop_explainer.cluster.objects import NetworkPolicy
from drop_explainer.flows.model import Flow
from drop_explainer.policy.engine import Connection, Verdict
from drop_explainer.policy.profiles import Profile

DEFAULT_PROFILE = Profile()


class Clause(enum.StrEnum):
    """Which part of a rule failed; stable, used in JSON."""

    PORT = "port"
    NAMED_PORT = "named-port"
    NAMESPACE = "namespace"
    NAMESPACE_SELECTOR = "namespace-selector"
    POD_SELECTOR = "pod-selector"
    NOT_A_POD = "not-a-pod"
    IP_BLOCK = "ip-block"
    IP_BLOCK_EXCEPT = "ip-block-except"


@dataclass(frozen=True, slots=True)
class Failure:
    clause: Clause
    message: str
    """One sentence stated with the actual objects and labels."""
    peer: int | None = None
    """Index of the from/to entry the clause belongs to (None for ports)."""


@dataclass(frozen=True, slots=True)
class RuleTrace:
    policy: NetworkPolicy
    direction: str
    """"ingress" or "egress"."""
    index: int
    failures: tuple[Failure, ...]
    """The failing clauses of this rule's closest peer, plus its port clause."""

    @property
    def distance(self) -> int:
        return len(self.failures)


@dataclass(frozen=True, slots=True)
class PolicyTrace:
    policy: NetworkPolicy
    direction: str
    rules: tuple[RuleTrace, ...]


@dataclass(frozen=True, slots=True)
class Trap:
    id: str
    title: str
    """The trap's one-line description, the same for every occurrence."""
    detail: str
    """This occurrence, stated with the actual objects."""


@dataclass(frozen=True, slots=True)
class BlastRadius:
    count: int
    examples: tuple[str, ...]
    """The first few newly allowed combinations, as "ns/a -> ns/b TCP/80"."""
    capped: bool = False
    """The count stopped at the cap: the fix opens at least this many."""


@dataclass(frozen=True, slots=True)
class Fix:
    kind: str
    """add-rule, add-port, new-policy, label-namespace, policy-types, or edit-policy (several of these merged)."""
    summary: str
    apply: str
    """Ready to paste: a kubectl command or YAML for kubectl apply."""
    objects: tuple[Mapping[str, Any], ...] = ()
    """Complete NetworkPolicy objects as they would be after the change."""
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """namespace -> labels to add, for a label fix."""
    verified: bool = False
    blast_radius: BlastRadius | None = None
    patch: tuple[Mapping[str, Any], ...] = ()
    """RFC 6902 operations for ``kubectl patch --type=json`` of an existing policy (empty for a new one)."""
    managed_by: str | None = None
    """Who else writes the policy (Helm, Argo CD, Flux, a managedFields owner): the change belongs in its source."""
    target: str = ""
    """The one object this fix changes: "networkpolicy NS/NAME" or "namespace NAME"."""


@dataclass(frozen=True, slots=True)
class Agreement:
    agrees: bool | None
    """None when there is no CNI verdict to compare with (a what-if)."""
    causes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Explanation:
    connection: Connection
    verdict: Verdict
    headline: str
    denying: tuple[PolicyTrace, ...] = ()
    closest: RuleTrace | None = None
    traps: tuple[Trap, ...] = ()
    fixes: tuple[Fix, ...] = ()
    agreement: Agreement = Agreement(None)
    flow: Flow | None = None
    notes: tuple[str, ...] = ()
    """Facts that qualify the answer: a pod missing from the state, a reply packet..."""
    datapath_reason: str | None = None
    """For a drop that no policy caused, what the datapath reason means."""
    not_enforced: str | None = None
    """Set when nothing in the cluster enforces NetworkPolicy: the sentence that leads the answer."""
    profile: Profile = DEFAULT_PROFILE
    """The CNI profile the verdict was judged by (policy/profiles.py); every answer names it."""
    service: ServiceView | None = None
    """Set when the destination was a Service: the verdict of each backend (explain/services.py)."""

    not_evaluated: tuple[str, ...] = ()
    """Policies of kinds the engine does not evaluate that select (or may select) an end (explain/unevaluated.py)."""

    @property
    def complete(self) -> bool:
        """False when a policy the engine does not evaluate may change the verdict."""
        return not self.not_evaluated


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend of a Service, as a connection to it was judged."""

    pod: str
    """NAMESPACE/NAME."""
    ip: str | None
    port: int | None
    """The targetPort on this pod; None when a named targetPort is not defined on it."""
    allowed: bool
    why: str
    """The backend's own headline, or why it cannot be reached."""


@dataclass(frozen=True, slots=True)
class ServiceView:
    service: str
    """NAMESPACE/NAME."""
    port: int
    """The Service port asked for."""
    protocol: str
    target: str
    """The Service port's targetPort as written (a number or a name)."""
    backends: tuple[BackendView, ...]
    source_of_backends: str
    """"EndpointSlices" or "the Service selector"."""
    not_ready: int = 0
    """Endpoints of the EndpointSlices that are not ready: not judged (they get no new connections), counted."""

    @property
    def allowed_count(self) -> int:
        return sum(1 for b in self.backends if b.allowed)
