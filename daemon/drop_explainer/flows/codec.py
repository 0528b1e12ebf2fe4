"""The JSON-lines form of our Flow record (``drop-explainer.flow/v1``).

One object per line; documented in docs/flow-record.md and by
``schemas/flow.schema.json``. Saved flows in this form can be explained
offline against a saved cluster state, whatever CNI recorded them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from drop_explainer.flows import model as m

RECORD = "drop-explainer.flow/v1"
E = TypeVar("E", bound=enum.StrEnum)


class BadFlowRecord(ValueError):
    """A JSON object that is not a valid Flow record; the message names the field."""


def endpoint_to_json(e: m.Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": str(e.kind)}
    for key, value in (("ip", e.ip), ("namespace", e.namespace), ("pod", e.pod), ("workload", e.workload),
                       ("identity", e.identity), ("pod_prefix", e.pod_prefix)):
        if value is not None:
            out[key] = value
    if e.labels:
        out["labels"] = dict(e.labels)
    return out


def hit_to_json(h: m.PolicyHit) -> dict[str, Any]:
    out: dict[str, Any] = {"name": h.name, "kind": h.kind, "action": h.action}
    for key, value in (("namespace", h.namespace), ("rule_index", h.rule_index), ("tier", h.tier),
                       ("trigger", h.trigger)):
        if value is not None:
            out[key] = value
    if h.staged:
        out["staged"] = True
    return out


def flow_to_json(f: m.Flow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "record": RECORD,
        "time_ns": f.time_ns,
        "verdict": str(f.verdict),
        "drop_kind": str(f.drop_kind),
        "direction": str(f.direction),
        "protocol": str(f.protocol),
        "source": endpoint_to_json(f.source),
        "destination": endpoint_to_json(f.destination),
        "packets": f.packets,
        "connections": f.connections,
        "origin": f.origin,
    }
    for key, value in (("node", f.node), ("drop_reason", f.drop_reason), ("is_reply", f.is_reply),
                       ("source_port", f.source_port), ("destination_port", f.destination_port)):
        if value is not None:
            out[key] = value
    if f.tcp_flags:
        out["tcp_flags"] = sorted(f.tcp_flags)
    if f.attribution:
        out["attribution"] = [hit_to_json(h) for h in f.attribution]
    if f.destination_names:
        out["destination_names"] = list(f.destination_names)
    return out


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise BadFlowRecord(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _enum(enum_type: type[E], obj: Mapping[str, Any], key: str, where: str, default: E) -> E:
    raw = _get(obj, key, str, where)
    if raw is None:
        return default
    try:
        return enum_type(raw)
    except ValueError:
        choices = ", ".join(str(v) for v in enum_type)
        raise BadFlowRecord(f"{where}{key}: {raw!r} is not one of {choices}") from None


def endpoint_from_json(obj: object, where: str) -> m.Endpoint:
    if not isinstance(obj, Mapping):
        raise BadFlowRecord(f"{where}: expected an object")
    labels = _get(obj, "labels", dict, f"{where}.", {})
    return m.Endpoint(
        kind=_enum(m.EndpointKind, obj, "kind", f"{where}.", m.EndpointKind.UNKNOWN),
        ip=_get(obj, "ip", str, f"{where}."),
        namespace=_get(obj, "namespace", str, f"{where}."),
        pod=_get(obj, "pod", str, f"{where}."),
        labels={str(k): str(v) for k, v in labels.items()},
        workload=_get(obj, "workload", str, f"{where}."),
        identity=_get(obj, "identity", int, f"{where}."),
        pod_prefix=_get(obj, "pod_prefix", str, f"{where}."),
    )


def hit_from_json(obj: object, where: str) -> m.PolicyHit:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("name"), str):
        raise BadFlowRecord(f"{where}: expected an object with a name")
    return m.PolicyHit(
        name=obj["name"],
        namespace=_get(obj, "namespace", str, f"{where}."),
        kind=_get(obj, "kind", str, f"{where}.", "NetworkPolicy"),
        action=_get(obj, "action", str, f"{where}.", "deny"),
        rule_index=_get(obj, "rule_index", int, f"{where}."),
        tier=_get(obj, "tier", str, f"{where}."),
        trigger=_get(obj, "trigger", str, f"{where}."),
        staged=_get(obj, "staged", bool, f"{where}.", False),
    )


def flow_from_json(obj: Mapping[str, Any]) -> m.Flow:
    """Inverse of flow_to_json; raises BadFlowRecord naming the bad field."""
    if obj.get("record") != RECORD:
        raise BadFlowRecord(f"record: expected {RECORD!r}")
    time_ns = _get(obj, "time_ns", int, "")
    if time_ns is None:
        raise BadFlowRecord("time_ns: is required")
    flags = _get(obj, "tcp_flags", list, "", [])
    return m.Flow(
        time_ns=time_ns,
        verdict=_enum(m.Verdict, obj, "verdict", "", m.Verdict.UNKNOWN),
        source=endpoint_from_json(obj.get("source"), "source"),
        destination=endpoint_from_json(obj.get("destination"), "destination"),
        protocol=_enum(m.Protocol, obj, "protocol", "", m.Protocol.TCP),
        source_port=_get(obj, "source_port", int, ""),
        destination_port=_get(obj, "destination_port", int, ""),
        node=_get(obj, "node", str, ""),
        drop_kind=_enum(m.DropKind, obj, "drop_kind", "", m.DropKind.NONE),
        drop_reason=_get(obj, "drop_reason", str, ""),
        direction=_enum(m.Direction, obj, "direction", "", m.Direction.UNKNOWN),
        is_reply=_get(obj, "is_reply", bool, ""),
        tcp_flags=frozenset(str(f) for f in flags),
        attribution=tuple(hit_from_json(h, f"attribution[{i}]")
                          for i, h in enumerate(_get(obj, "attribution", list, "", []))),
        destination_names=tuple(str(n) for n in _get(obj, "destination_names", list, "", [])),
        packets=_get(obj, "packets", int, "", 1),
        connections=_get(obj, "connections", int, "", 1),
        origin=_get(obj, "origin", str, "", "file"),
    )
