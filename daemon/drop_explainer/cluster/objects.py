"""Our own slim copies of the Kubernetes objects that explanations need.

We keep only the fields that decide or explain a NetworkPolicy verdict, in
frozen records, so that a 5,000-pod state stays small and a snapshot can be
shared between the engine, the explainer and the API without copying.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

Labels = Mapping[str, str]


class Operator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpressions entry."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A metav1.LabelSelector; the empty selector selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Labels = field(default_factory=dict)
    resource_version: str | None = None


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """A kubelet probe; kubelet connects from the node, which policies see as the host."""

    container: str
    kind: str
    """liveness, readiness or startup."""
    handler: str
    """httpGet, tcpSocket, grpc or exec (exec never crosses the network)."""
    port: int | str | None = None


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    ports: tuple[ContainerPort, ...] = ()
    probes: tuple[Probe, ...] = ()


@dataclass(frozen=True, slots=True)
class OwnerReference:
    kind: str
    name: str
    controller: bool = False
    """The managing controller (at most one per object); the workload follows it."""


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    labels: Labels = field(default_factory=dict)
    ips: tuple[str, ...] = ()
    host_ip: str | None = None
    node_name: str | None = None
    host_network: bool = False
    phase: str | None = None
    containers: tuple[Container, ...] = ()
    owners: tuple[OwnerReference, ...] = ()
    generate_name: str | None = None
    resource_version: str | None = None
    service_account: str | None = None
    """spec.serviceAccountName (Cilium's identity carries it; None reads as "default")."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    addresses: tuple[tuple[str, str], ...] = ()
    """(type, address) pairs, e.g. ("InternalIP", "10.0.0.5")."""
    pod_cidrs: tuple[str, ...] = ()
    labels: Labels = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    target_port: int | str
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    selector: Labels | None = None
    ports: tuple[ServicePort, ...] = ()
    cluster_ips: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice: the addresses of one backend and whether it is ready."""

    addresses: tuple[str, ...]
    ready: bool = True
    """conditions.ready; the API says a missing value means ready."""
    pod: str | None = None
    """NAMESPACE/NAME of the targetRef when it is a Pod."""
    node_name: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """discovery.k8s.io/v1 EndpointSlice: which pods (and ports) back a Service right now."""

    namespace: str
    name: str
    service: str | None
    """The kubernetes.io/service-name label: the Service (in the same namespace) it belongs to."""
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[tuple[str | None, int | None, str], ...] = ()
    """(name, port, protocol) of each port; the port is already the backend's (targetPort resolved)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Peer:
    """One entry of from/to; pod and namespace selectors in one peer AND together."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    protocol: str = "TCP"
    port: int | str | None = None
    """None means every port of the protocol."""
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ingress or egress rule; empty peers or ports mean "all"."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


class PolicyType(enum.StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[PolicyType]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    policy_types_explicit: bool = False
    """False when policyTypes was defaulted; a trap hides in the difference."""
    resource_version: str | None = None
    creation_timestamp: str | None = None
    labels: Labels = field(default_factory=dict)
    """Kept so that a fix given as a full object does not strip them, and to tell a managed policy."""
    annotations: Labels = field(default_factory=dict)
    """All but kubectl's last-applied-configuration (kubectl apply rewrites it; it would double the size)."""
    managers: tuple[str, ...] = ()
    """metadata.managedFields[].manager: who writes this object (Helm, Argo CD, Flux, kubectl...)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
