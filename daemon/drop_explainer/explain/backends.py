"""Where a connection through a Service really goes, so that a fix names what policies see.

Policies are checked after Service translation: a packet to kube-dns's
cluster IP reaches them as a packet to one CoreDNS pod on its targetPort, and
a packet to kubernetes.default (10.96.0.1:443) as one to an API server
address on 6443. A fix naming the cluster IP in an ipBlock never matches; a
fix naming one CoreDNS replica breaks at the next rollout. So a fix is
written for the Service's backends (by selector, or by the addresses of its
EndpointSlices when it has no selector) and checked against each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from drop_explainer.cluster.objects import EndpointSlice, LabelSelector, Pod, Service, ServicePort
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import endpoints, ports, selectors
from drop_explainer.policy.endpoints import Subject, SubjectKind
from drop_explainer.policy.engine import Connection

APISERVER = "default/kubernetes"
DNS_PORT = 53


@dataclass(frozen=True, slots=True)
class Target:
    """What a fix must admit for one asked connection, as the datapath sees it."""

    connections: tuple[Connection, ...]
    """One per ready backend, on the port the backend receives; the asked connection when no Service is involved."""
    service: Service | None = None
    """The Service the connection goes through, or whose backend the destination pod is."""
    problem: str | None = None
    """Set when no fix can be written: the sentence that says why."""

    @property
    def apiserver(self) -> bool:
        return self.service is not None and self.service.key == APISERVER

    @property
    def dns(self) -> bool:
        """Port 53 of a Service: name lookups use UDP and fall back to TCP, so a fix allows both."""
        return bool(self.dns_ports())

    def dns_ports(self) -> tuple[int, ...]:
        """The backends' ports behind the Service's port 53 (53 for kube-dns, 5353 for some), when asked for one."""
        if self.service is None or not self.connections:
            return ()
        first = self.connections[0]
        pod = first.destination.pod
        numbers = {n for sp in self.service.ports if sp.port == DNS_PORT and pod is not None
                   for n in (target_number(pod, sp),) if n is not None}
        return tuple(sorted(numbers)) if first.port in numbers else ()


def service_port(svc: Service, port: int, protocol: str) -> ServicePort | None:
    return next((sp for sp in svc.ports if sp.port == port and sp.protocol == protocol), None)


def target_number(pod: Pod, sp: ServicePort) -> int | None:
    return sp.target_port if isinstance(sp.target_port, int) else ports.named_port(pod, sp.target_port, sp.protocol)


def _selected(state: ClusterState, svc: Service) -> list[Pod]:
    assert svc.selector is not None
    return [p for p in state.pods_by_namespace.get(svc.namespace, ())
            if p.ips and p.phase not in ("Succeeded", "Failed")
            and selectors.matches(selector_of(svc), p.labels)]


def selector_of(svc: Service) -> LabelSelector:
    return LabelSelector(tuple(sorted((svc.selector or {}).items())))


def _slice_port(s: EndpointSlice, sp: ServicePort) -> int | None:
    # A slice names its ports after the Service's; an unnamed single port has no name on either side.
    return next((port for name, port, proto in s.ports if name == sp.name and proto == sp.protocol), None)


def backends(state: ClusterState, svc: Service, sp: ServicePort) -> list[tuple[Subject, int]]:
    """(backend, port it receives) for every ready backend of one Service port.

    EndpointSlices are what the datapath uses, so they win when the state
    holds them; otherwise the selector stands for them (the pods it selects,
    with the targetPort resolved per pod: a named targetPort may differ).
    """
    slices = state.slices_by_service.get(svc.key, ())
    out: list[tuple[Subject, int]] = []
    if slices:
        for s in slices:
            number = _slice_port(s, sp)
            if number is None:
                continue
            for ep in s.endpoints:
                if ep.ready:
                    out += [(endpoints.ip_subject(state, addr), number) for addr in ep.addresses]
        return out
    if svc.selector is None:
        return out
    for pod in _selected(state, svc):
        number = target_number(pod, sp)
        if number is not None:
            out.append((endpoints.pod_subject(state, pod), number))
    return out


def service_of_backend(state: ClusterState, pod: Pod, port: int, protocol: str) -> Service | None:
    """The one Service whose selector picks ``pod`` and forwards to ``port``; None when none or several do."""
    found = [svc for svc in state.services_by_namespace.get(pod.namespace, ())
             if svc.selector and selectors.matches(selector_of(svc), pod.labels)
             and any(sp.protocol == protocol and target_number(pod, sp) == port for sp in svc.ports)]
    return found[0] if len(found) == 1 else None


def _apiserver_addresses(state: ClusterState) -> dict[str, int]:
    svc = state.services.get(APISERVER)
    out: dict[str, int] = {}
    if svc is None:
        return out
    for sp in svc.ports:
        for subject, number in backends(state, svc, sp):
            if subject.ip is not None:
                out[subject.ip] = number
    return out


def translate(state: ClusterState, conn: Connection) -> Target:
    """The connections a fix must admit for ``conn``, after Service translation."""
    dst = conn.destination
    if dst.kind is SubjectKind.SERVICE and dst.service is not None:
        return _through_service(state, conn, dst.service)
    if dst.pod is not None and dst.is_pod:
        return Target((conn,), service_of_backend(state, dst.pod, conn.port, conn.protocol))
    api = _apiserver_addresses(state)
    if dst.ip is not None and api.get(dst.ip) == conn.port:
        # One API server address: admit all of them, or the fix breaks when the client fails over.
        svc = state.services[APISERVER]
        return Target(tuple(Connection(conn.source, endpoints.ip_subject(state, ip), port, conn.protocol)
                            for ip, port in sorted(api.items())), svc)
    return Target((conn,))


def _through_service(state: ClusterState, conn: Connection, svc: Service) -> Target:
    sp = service_port(svc, conn.port, conn.protocol)
    if sp is None:
        listed = ", ".join(f"{p.protocol} {p.port}" for p in svc.ports) or "none"
        return Target((), svc, f"Service {svc.key} has no port {conn.protocol} {conn.port} (its ports: {listed})")
    found = backends(state, svc, sp)
    if not found:
        if svc.selector is None and not state.slices_by_service.get(svc.key):
            where = ("kubectl get endpointslice -n default -l kubernetes.io/service-name=kubernetes"
                     if svc.key == APISERVER else f"its EndpointSlices (kubernetes.io/service-name={svc.name})")
            why = (f"Service {svc.key} has no selector and the state holds no EndpointSlice for it, so the "
                   f"addresses policies see are unknown here; allow egress to the addresses and port of {where} "
                   f"(the API server usually listens on {sp.target_port}, not {sp.port})" if svc.key == APISERVER
                   else f"Service {svc.key} has no selector and the state holds no EndpointSlice for it; allow "
                   f"egress to the addresses and port of {where}")
            return Target((), svc, why)
        return Target((), svc, f"Service {svc.key} has no ready backend for {sp.protocol} {sp.port}: there is "
                      "nothing a policy could admit (check its selector and the pods' readiness)")
    return Target(tuple(Connection(*endpoints.same_family(conn.source, b), number, conn.protocol)
                        for b, number in found), svc)
