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
            return f"service {self.service.key} ({self.ip or 'headless'})"
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


class AmbiguousEndpoint(UnknownEndpoint):
    """A bare name that several objects carry; ``candidates`` are the refs that would be unique."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


def node_subject(node: Node) -> Subject:
    """A node as a source or destination: its first InternalIP (else any address) is what policies see."""
    ips = [a for k, a in node.addresses if k == "InternalIP"] or [a for k, a in node.addresses if k.endswith("IP")]
    return Subject(SubjectKind.NODE, ips[0] if ips else None, node=node)


def service_subject(svc: Service) -> Subject:
    return Subject(SubjectKind.SERVICE, svc.cluster_ips[0] if svc.cluster_ips else None, service=svc)


def _pod(state: ClusterState, ref: str) -> Subject:
    if "/" in ref:
        pod = state.pods.get(ref)
        if pod is None:
            raise UnknownEndpoint(f"no pod {ref} in the cluster state")
        return pod_subject(state, pod)
    pods = state.pods_by_name.get(ref, ())
    if len(pods) > 1:
        keys = sorted(p.key for p in pods)
        raise AmbiguousEndpoint(f"pod name {ref} exists in {len(keys)} namespaces; give NAMESPACE/{ref}", keys)
    if not pods:
        raise UnknownEndpoint(f"no pod named {ref} in the cluster state")
    return pod_subject(state, pods[0])


def _service(state: ClusterState, ref: str) -> Subject:
    if "/" in ref:
        svc = state.services.get(ref)
        if svc is None:
            raise UnknownEndpoint(f"no service {ref} in the cluster state")
        return service_subject(svc)
    found = sorted((s for s in state.services.values() if s.name == ref), key=lambda s: s.key)
    if len(found) > 1:
        keys = [f"svc/{s.key}" for s in found]
        raise AmbiguousEndpoint(f"service name {ref} exists in {len(keys)} namespaces; give svc/NAMESPACE/{ref}",
                                keys)
    if not found:
        raise UnknownEndpoint(f"no service named {ref} in the cluster state")
    return service_subject(found[0])


def _node(state: ClusterState, name: str) -> Subject:
    node = state.nodes.get(name)
    if node is None:
        raise UnknownEndpoint(f"no node {name} in the cluster state")
    return node_subject(node)


def resolve(state: ClusterState, ref: str) -> Subject:
    """What the CLI and API accept as an end of a connection.

    ``NS/POD``; ``NS/SERVICE`` when no such pod exists; ``pod/…``, ``svc/…``
    (``service/…``) and ``node/NAME`` to say which; an IP address; or a bare
    name when exactly one pod, node or Service carries it.
    """
    ref = ref.strip()
    try:
        ipaddress.ip_address(ref)
    except ValueError:
        pass
    else:
        return ip_subject(state, ref)
    prefix, sep, rest = ref.partition("/")
    if sep and rest:
        if prefix == "pod":
            return _pod(state, rest)
        if prefix in ("svc", "service", "services"):
            return _service(state, rest)
        if prefix == "node" and "/" not in rest:
            return _node(state, rest)
    if sep:
        if ref in state.pods:
            return pod_subject(state, state.pods[ref])
        if ref in state.services:
            return service_subject(state.services[ref])
        raise UnknownEndpoint(f"no pod {ref} (and no service of that name) in the cluster state")
    candidates = [f"pod/{p.key}" for p in state.pods_by_name.get(ref, ())]
    candidates += [f"node/{ref}"] if ref in state.nodes else []
    candidates += [f"svc/{s.key}" for s in state.services.values() if s.name == ref]
    if len(candidates) > 1:
        raise AmbiguousEndpoint(f"{ref} names {len(candidates)} objects; say which", sorted(candidates))
    if not candidates:
        raise UnknownEndpoint(f"no pod, node or service named {ref} in the cluster state (or give NAMESPACE/NAME "
                              "or an IP address)")
    kind, _, name = candidates[0].partition("/")
    return _pod(state, name) if kind == "pod" else _node(state, name) if kind == "node" else _service(state, name)


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
