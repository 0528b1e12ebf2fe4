"""What stands at each end of a connection, as NetworkPolicy sees it.

The distinction that matters: only a (non host-network) pod can be selected
by pod and namespace selectors and be isolated; every other address (a node,
a host-network pod, the outside world) is matched by ipBlock alone.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace

from drop_explainer.cluster.objects import Node, Pod, Service
from drop_explainer.cluster.state import ClusterState


class SubjectKind(enum.StrEnum):
    POD = "pod"
    HOST_NETWORK_POD = "host-network-pod"
    NODE = "node"
    SERVICE = "service"
    POD_NETWORK = "pod-network"
    """An address in a node's pod CIDR that no known pod holds (stale state?)."""
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Subject:
    kind: SubjectKind
    ip: str | None
    pod: Pod | None = None
    node: Node | None = None
    service: Service | None = None
    namespace_labels: Mapping[str, str] | None = None

    @property
    def is_pod(self) -> bool:
        """Selectable by pod/namespace selectors and subject to isolation."""
        return self.kind is SubjectKind.POD

    def describe(self) -> str:
        if self.pod is not None:
            suffix = " (host network)" if self.kind is SubjectKind.HOST_NETWORK_POD else ""
            return f"pod {self.pod.key}{suffix}"
        if self.node is not None:
            return f"node {self.node.name} ({self.ip})"
        if self.service is not None:
            return f"service {self.service.key} ({self.ip})"
        if self.kind is SubjectKind.POD_NETWORK:
            return f"{self.ip} (pod network, no known pod)"
        return f"{self.ip} (outside the cluster)"


class UnknownEndpoint(LookupError):
    """A pod or address a query names that the state does not have."""


def pod_subject(state: ClusterState, pod: Pod, ip: str | None = None) -> Subject:
    kind = SubjectKind.HOST_NETWORK_POD if pod.host_network else SubjectKind.POD
    node = state.nodes.get(pod.node_name) if pod.host_network and pod.node_name else None
    addr = ip or (pod.ips[0] if pod.ips else pod.host_ip if pod.host_network else None)
    return Subject(kind, addr, pod=pod, node=node, namespace_labels=state.namespace_labels(pod.namespace))


def ip_subject(state: ClusterState, ip: str) -> Subject:
    """Resolve an address the way the datapath sees it."""
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise UnknownEndpoint(f"not an IP address: {ip!r}") from None
    pod = state.pod_by_ip.get(ip)
    if pod is not None:
        return pod_subject(state, pod, ip)
    node = state.node_by_ip.get(ip)
    if node is not None:
        return Subject(SubjectKind.NODE, ip, node=node)
    svc = state.service_by_ip.get(ip)
    if svc is not None:
        return Subject(SubjectKind.SERVICE, ip, service=svc)
    if state.in_pod_network(ip):
        return Subject(SubjectKind.POD_NETWORK, ip)
    return Subject(SubjectKind.EXTERNAL, ip)


def resolve(state: ClusterState, ref: str) -> Subject:
    """``namespace/pod`` or an IP address, as the CLI and API accept them."""
    if "/" in ref and ":" not in ref:
        ns, _, name = ref.partition("/")
        pod = state.pods.get(f"{ns}/{name}")
        if pod is None:
            raise UnknownEndpoint(f"no pod {ns}/{name} in the cluster state")
        return pod_subject(state, pod)
    return ip_subject(state, ref)


def same_family(source: Subject, destination: Subject) -> tuple[Subject, Subject]:
    """For dual-stack pods, pick addresses of one family so ipBlocks compare like with like."""
    if source.ip is None or destination.ip is None:
        return source, destination
    if source.pod is not None and len(source.pod.ips) >= 2:
        want = ipaddress.ip_address(destination.ip).version
        for ip in source.pod.ips:
            if ipaddress.ip_address(ip).version == want:
                return replace(source, ip=ip), destination
    elif destination.pod is not None and len(destination.pod.ips) >= 2:
        # A single-stack source can only speak its own family to a dual-stack pod.
        want = ipaddress.ip_address(source.ip).version
        for ip in destination.pod.ips:
            if ipaddress.ip_address(ip).version == want:
                return source, replace(destination, ip=ip)
    return source, destination
