"""What-if queries: from a JSON-ish question to a connection, and back to JSON.

The CLI's batch mode, the HTTP API and tests all speak this one shape, which
is documented by ``schemas/whatif-result.schema.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drop_explainer.cluster.objects import NetworkPolicy
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import endpoints
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import PROTOCOLS, Connection, DirectionVerdict, Verdict


class BadQuery(ValueError):
    """A what-if question that cannot be asked; the message says which part."""


@dataclass(frozen=True, slots=True)
class Query:
    source: str
    destination: str
    port: int
    protocol: str = "TCP"


def parse_query(data: object) -> Query:
    if not isinstance(data, Mapping):
        raise BadQuery("expected a JSON object with from, to, port and protocol")
    unknown = set(data) - {"from", "to", "port", "protocol"}
    if unknown:
        raise BadQuery(f"unknown field(s): {', '.join(sorted(unknown))}")
    src, dst = data.get("from"), data.get("to")
    if not isinstance(src, str) or not src:
        raise BadQuery("'from' must be NAMESPACE/POD or an IP address")
    if not isinstance(dst, str) or not dst:
        raise BadQuery("'to' must be NAMESPACE/POD or an IP address")
    return Query(src, dst, parse_port(data.get("port")), parse_protocol(data.get("protocol", "TCP")))


def parse_port(value: object) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise BadQuery(f"'port' must be a number from 1 to 65535, got {value!r}")
    return value


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
    except endpoints.UnknownEndpoint as exc:
        raise BadQuery(str(exc)) from None
    src, dst = endpoints.same_family(src, dst)
    return Connection(src, dst, query.port, query.protocol)


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
    return {
        "allowed": d.allowed,
        "isolated": d.isolated,
        "policies": [policy_ref(p) for p in d.policies],
        "allowed_by": [{**policy_ref(p), "rule": i} for p, i in d.allowed_by],
    }


def verdict_json(query: Query, conn: Connection, verdict: Verdict) -> dict[str, Any]:
    return {
        "from": query.source,
        "to": query.destination,
        "port": query.port,
        "protocol": query.protocol,
        "allowed": verdict.allowed,
        "source": subject_json(conn.source),
        "destination": subject_json(conn.destination),
        "ingress": direction_json(verdict.ingress),
        "egress": direction_json(verdict.egress),
    }
