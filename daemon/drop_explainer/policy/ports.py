"""Port clauses: protocols, numbers, ranges and named ports."""

from __future__ import annotations

from drop_explainer.cluster.objects import Pod, PolicyPort


def named_port(pod: Pod | None, name: str, protocol: str) -> int | None:
    """The container port a name stands for on this pod, for this protocol.

    A named port matches only pods that define it with the rule's protocol;
    a pod without it (or a destination that is no pod) matches nothing.
    """
    if pod is None:
        return None
    for container in pod.containers:
        for p in container.ports:
            if p.name == name and p.protocol == protocol:
                return p.container_port
    return None


def port_matches(pp: PolicyPort, port: int, protocol: str, destination: Pod | None) -> bool:
    if pp.protocol != protocol:
        return False
    if pp.port is None:
        return True
    if isinstance(pp.port, str):
        return named_port(destination, pp.port, protocol) == port
    if pp.end_port is not None:
        return pp.port <= port <= pp.end_port
    return pp.port == port


def ports_match(ports: tuple[PolicyPort, ...], port: int, protocol: str, destination: Pod | None) -> bool:
    """An empty ports list allows every port and protocol."""
    return not ports or any(port_matches(pp, port, protocol, destination) for pp in ports)


def describe_port(pp: PolicyPort) -> str:
    if pp.port is None:
        return f"{pp.protocol} (all ports)"
    if pp.end_port is not None:
        return f"{pp.protocol} {pp.port}-{pp.end_port}"
    return f"{pp.protocol} {pp.port}"
