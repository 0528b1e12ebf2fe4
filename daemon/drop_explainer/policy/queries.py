"""What-if queries: from a JSON-ish question to a connection, and back to JSON.

The CLI's batch mode, the HTTP API and tests all speak this one shape, which
is documented by ``schemas/whatif-result.schema.json``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drop_explainer.cluster.objects import NetworkPolicy
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import endpoints, ports
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import PROTOCOLS, Connection, DirectionVerdict, Verdict
from drop_explainer.policy.profiles import Profile


class BadQuery(ValueError):
    """A what-if question that cannot be asked; the message says which part."""


class AmbiguousQuery(BadQuery):
    """A name that several objects carry (the API answers 409 with the candidates)."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Query:
    source: str
    destination: str
    port: int | str
    """A number, or a port name resolved on the destination (a container port or a Service port name)."""
    protocol: str = "TCP"


def parse_query(data: object) -> Query:
    if not isinstance(data, Mapping):
        raise BadQuery("expected a JSON object with from, to, port and protocol")
    unknown = set(data) - {"from", "to", "port", "protocol"}
    if unknown:
        raise BadQuery(f"unknown field(s): {', '.join(sorted(unknown))}")
    src, dst = data.get("from"), data.get("to")
    if not isinstance(src, str) or not src:
        raise BadQuery("'from' must be NAMESPACE/POD, a pod, node or service name, or an IP address")
    if not isinstance(dst, str) or not dst:
        raise BadQuery("'to' must be NAMESPACE/POD, svc/NAMESPACE/NAME, a pod, node or service name, or an IP "
                       "address")
    return Query(src, dst, parse_port(data.get("port")), parse_protocol(data.get("protocol", "TCP")))


def parse_port(value: object) -> int | str:
    """A number from 1 to 65535, or a port name (IANA_SVC_NAME: lowercase, at most 15 characters)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, str) and len(value) <= 15 and _PORT_NAME.match(value) and "--" not in value:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise BadQuery(f"'port' must be a number from 1 to 65535 or a port name, got {value!r}")
    return value


def resolve_port(dst: Subject, port: int | str, protocol: str) -> int:
    """A named port looked up where it is defined: the destination pod's containers, or the Service's ports."""
    if isinstance(port, int):
        return port
    if dst.service is not None:
        sp = next((p for p in dst.service.ports if p.name == port and p.protocol == protocol), None)
        if sp is None:
            raise BadQuery(f"service {dst.service.key} has no {protocol} port named {port!r}; its ports: "
                           + (", ".join(f"{p.name or '(unnamed)'}={p.port}/{p.protocol}" for p in dst.service.ports)
                              or "none"))
        return sp.port
    if dst.pod is not None:
        number = ports.named_port(dst.pod, port, protocol)
        if number is None:
            declared = [f"{p.name}={p.container_port}/{p.protocol}" for c in dst.pod.containers for p in c.ports
                        if p.name]
            raise BadQuery(f"pod {dst.pod.key} defines no {protocol} port named {port!r}; its named ports: "
                           + (", ".join(declared) or "none"))
        return number
    raise BadQuery(f"port name {port!r} can only be resolved on a pod or a Service, not on {dst.describe()}")


def parse_protocol(value: object) -> str:
    proto = value.upper() if isinstance(value, str) else value
    if proto not in PROTOCOLS:
        raise BadQuery(f"'protocol' must be TCP, UDP or SCTP, got {value!r}")
    assert isinstance(proto, str)
    return proto


def connection(state: ClusterState, query: Query) -> Connection:
    try:
        src = endpoints.resolve(state, query.source)
        dst = endpoints.resolve(state, query.destination)
    except endpoints.AmbiguousEndpoint as exc:
        raise AmbiguousQuery(str(exc), exc.candidates) from None
    except endpoints.UnknownEndpoint as exc:
        raise BadQuery(str(exc)) from None
    if src.service is not None:
        raise BadQuery(f"service {src.service.key} cannot be a source: connections come from its pods (name one)")
    src, dst = endpoints.same_family(src, dst)
    return Connection(src, dst, resolve_port(dst, query.port, query.protocol), query.protocol)


def policy_ref(p: NetworkPolicy) -> dict[str, Any]:
    return {"namespace": p.namespace, "name": p.name, "resourceVersion": p.resource_version}


def subject_json(s: Subject) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": str(s.kind), "ip": s.ip}
    if s.pod is not None:
        out |= {"namespace": s.pod.namespace, "pod": s.pod.name}
    if s.node is not None:
        out["node"] = s.node.name
    if s.service is not None:
        out["service"] = s.service.key
    return out


def direction_json(d: DirectionVerdict) -> dict[str, Any]:
    out: dict[str, Any] = {
        "allowed": d.allowed,
        "isolated": d.isolated,
        "policies": [policy_ref(p) for p in d.policies],
        "allowed_by": [{**policy_ref(p), "rule": i} for p, i in d.allowed_by],
    }
    if d.node_local is not None:
        out["node_local"] = {"node": d.node_local.node, "exempt": d.node_local.exempt, "why": d.node_local.why}
    if d.isolated_by_mode is not None:
        out["isolated_by_mode"] = d.isolated_by_mode
    if d.selecting or d.unsure:
        out["model"] = {"selecting": [r.origin.describe() for r in d.selecting],
                        "allowed_by": [r.origin.describe() for r in d.rules_allowing],
                        "denied_by": [r.origin.describe() for r in d.denied_by],
                        "l7": list(d.l7), "unsure": list(d.unsure)}
    return out


def verdict_json(query: Query, conn: Connection, verdict: Verdict, profile: Profile | None = None) -> dict[str, Any]:
    return {
        **({"profile": profile.json()} if profile is not None else {}),
        "from": query.source,
        "to": query.destination,
        "port": conn.port,
        **({"port_name": query.port} if isinstance(query.port, str) else {}),
        "protocol": query.protocol,
        "allowed": verdict.allowed,
        "source": subject_json(conn.source),
        "destination": subject_json(conn.destination),
        "ingress": direction_json(verdict.ingress),
        "egress": direction_json(verdict.egress),
    }
