"""A Service as a destination: which pods receive the connection, on which port.

NetworkPolicy never sees a Service: kube-proxy (or the CNI's own load
balancer) rewrites the cluster IP and Service port to one backend pod's
address and targetPort before any policy is checked. So "may A reach the
Service" is "may A reach each ready backend on its targetPort", and the
answer is "k of n". The backends are the state's EndpointSlices when it has
any for the Service (the control plane's own view: ready, with named ports
resolved), else the pods its selector picks.
"""

from __future__ import annotations

from dataclasses import dataclass

from drop_explainer.cluster.objects import EndpointSlice, LabelSelector, Pod, Service, ServicePort
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import ports, selectors

FROM_SLICES = "EndpointSlices"
FROM_SELECTOR = "the Service selector"


@dataclass(frozen=True, slots=True)
class Backend:
    """One address the Service forwards to."""

    ip: str | None
    pod: Pod | None
    """None when an EndpointSlice names an address no pod in the state holds."""
    port: int | None
    """The targetPort on this backend; None when a named targetPort is not defined on the pod."""

    @property
    def name(self) -> str:
        return self.pod.key if self.pod is not None else f"{self.ip} (no pod in the state)"


@dataclass(frozen=True, slots=True)
class Backends:
    found: tuple[Backend, ...]
    origin: str
    """FROM_SLICES or FROM_SELECTOR."""
    not_ready: int = 0
    """Endpoints the EndpointSlices list as not ready (they receive no new connections)."""


def find_port(svc: Service, port: int | str, protocol: str) -> ServicePort | None:
    """The Service port asked for, by number or by name."""
    for sp in svc.ports:
        if sp.protocol == protocol and (sp.port == port or (isinstance(port, str) and sp.name == port)):
            return sp
    return None


def describe_ports(svc: Service) -> str:
    if not svc.ports:
        return "no ports"
    return ", ".join(f"{sp.port}/{sp.protocol}" + (f" ({sp.name})" if sp.name else "") + f" -> {sp.target_port}"
                     for sp in svc.ports)


def target_port(pod: Pod | None, sp: ServicePort) -> int | None:
    """targetPort on this pod: a number as is, a name looked up on the pod for the port's protocol."""
    if isinstance(sp.target_port, int):
        return sp.target_port
    return ports.named_port(pod, sp.target_port, sp.protocol)


def _slice_port(sl: EndpointSlice, sp: ServicePort) -> int | None:
    for name, number, proto in sl.ports:
        if proto == sp.protocol and (name or None) == (sp.name or None):
            return number
    return None


def _from_slices(state: ClusterState, slices: tuple[EndpointSlice, ...], sp: ServicePort) -> Backends:
    seen: dict[str, Backend] = {}
    not_ready = 0
    for sl in sorted(slices, key=lambda s: s.name):
        number = _slice_port(sl, sp)
        for ep in sl.endpoints:
            if not ep.ready:
                not_ready += 1
                continue
            ip = ep.addresses[0] if ep.addresses else None
            pod = state.pods.get(ep.pod) if ep.pod else (state.pod_by_ip.get(ip) if ip else None)
            key = ip or (pod.key if pod else "")
            if key and key not in seen:
                seen[key] = Backend(ip, pod, number if number is not None else target_port(pod, sp))
    found = sorted(seen.values(), key=lambda b: b.name)
    return Backends(tuple(found), FROM_SLICES, not_ready)


def _from_selector(state: ClusterState, svc: Service, sp: ServicePort) -> Backends:
    if not svc.selector:
        return Backends((), FROM_SELECTOR)
    sel = LabelSelector(tuple(sorted(svc.selector.items())))
    found = [
        Backend(p.ips[0] if p.ips else p.host_ip, p, target_port(p, sp))
        for p in state.pods_by_namespace.get(svc.namespace, ())
        if p.phase == "Running" and selectors.matches(sel, p.labels)
    ]
    return Backends(tuple(sorted(found, key=lambda b: b.name)), FROM_SELECTOR)


def backends(state: ClusterState, svc: Service, sp: ServicePort) -> Backends:
    """The ready backends of ``svc`` for port ``sp``, sorted by name."""
    slices = state.slices_by_service.get(svc.key)
    if slices:
        return _from_slices(state, slices, sp)
    return _from_selector(state, svc, sp)
