"""Hubble flows (protobuf from the gRPC stream, or JSON lines) -> our Flow.

Two entry points share one set of rules:

- ``flow_from_response`` / ``flow_from_proto`` read the live gRPC stream.
  They are the hot path: plain attribute access, no dict building, and
  small bounded caches for the things that repeat (label lists, TCP flags).
- ``flow_from_json`` reads what ``hubble observe -o jsonpb`` / ``-o json``
  print and what the Hubble exporter writes: ``{"flow": {...}, "node_name":
  ..., "time": ...}`` lines, or a bare legacy flow object, with or without a
  field mask. It accepts protojson's two spellings of every field
  (``drop_reason_desc`` / ``dropReasonDesc``) and enums by name or number.

Records that are not flows (relay ``node_status``, ``lost_events``, agent
events) and flows we cannot use (no time at all, a field of the wrong type)
raise ``MalformedFlow``; its ``reason`` is a short constant the caller can
use as a counter label. Nothing returns None.

Mapping decisions (the explainer relies on them):

- ``drop_reason`` is the DropReason enum *name* (``POLICY_DENIED``); a code
  this schema does not know is kept as its decimal string (``"206"``).
  ``drop_reason_desc`` wins; the deprecated numeric ``drop_reason`` is used
  only when it is unset. Codes below 130 are not drop reasons (datapath
  convention) and map to no reason.
- ``drop_kind``: 133 POLICY_DENIED -> POLICY_DENIED (default deny), 181
  POLICY_DENY -> POLICY_DENY (explicit deny rule), any other reason ->
  OTHER, none -> NONE. It is derived from the reason only, whatever the
  verdict (an AUDIT verdict with no reason stays NONE).
- ``is_reply`` comes from the ``is_reply`` BoolValue; when that is absent
  (always so for drops) it is None, except that the deprecated ``reply``
  field set to true (agents before 1.10) still means True.
- Endpoint labels: only ``k8s:`` labels are kept, without the prefix, as
  ``key -> value``: those are the pod labels NetworkPolicy selectors see.
  Cilium's bookkeeping labels (``io.cilium.k8s.policy.*`` such as the
  service account and cluster, ``io.cilium.k8s.namespace.labels.*`` which
  belong to the namespace, and ``io.kubernetes.pod.namespace``) are dropped;
  the namespace label fills ``Endpoint.namespace`` when the field is empty
  (drop events often carry labels but no namespace).
- Endpoint kind, first match wins: a ``reserved:`` label (kube-apiserver,
  host, remote-node, world / world-ipv4 / world-ipv6; health, ingress,
  unmanaged, init, unknown -> UNKNOWN), then the reserved identity number
  (1 host, 2/9/10 world, 6 remote-node, 7 kube-apiserver; 3/4/5/8/11 ->
  UNKNOWN), then a known namespace -> POD, then ``cidr:``/``fqdn:`` labels
  or a local-scope identity (>= 2**24) -> WORLD, a remote-node-scope
  identity (>= 2**25) -> REMOTE_NODE, else UNKNOWN. The identity number is
  always kept, so the explainer can tell health (4) from ingress (8).
- Attribution: ``ingress_denied_by``, ``egress_denied_by`` (action
  ``deny``), then ``ingress_allowed_by``, ``egress_allowed_by`` (``allow``).
  Kind is ``Policy.kind`` (1.17+), else the ``derived-from`` label (older
  agents), else ``Unknown``; agent-made rules (``reserved:io.cilium.policy.
  derived-from=allow-localhost-ingress``...) have no name, so they are named
  after that value with kind ``CiliumInternal``.
- Ports of 0 (proto3's "unset") map to None; ICMP has no ports.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from drop_explainer.flows import model
from drop_explainer.hubble_pb import flow_pb2, observer_pb2

NOT_A_FLOW: Final = "not-a-flow"
NO_TIME: Final = "no-time"
BAD_FIELD: Final = "bad-field"


class MalformedFlow(ValueError):
    """A record that cannot become a Flow; ``reason`` is a counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_NS: Final = 1_000_000_000
_DROP_MIN: Final = 130  # datapath codes below this are not drop reasons
_POLICY_DENIED: Final = flow_pb2.POLICY_DENIED
_POLICY_DENY: Final = flow_pb2.POLICY_DENY
_LOCAL_SCOPE: Final = 1 << 24  # CIDR / FQDN identities
_REMOTE_NODE_SCOPE: Final = 2 << 24

_VERDICTS: Final[Mapping[int, model.Verdict]] = {
    flow_pb2.FORWARDED: model.Verdict.FORWARDED,
    flow_pb2.DROPPED: model.Verdict.DROPPED,
    flow_pb2.ERROR: model.Verdict.ERROR,
    flow_pb2.AUDIT: model.Verdict.AUDIT,
    flow_pb2.REDIRECTED: model.Verdict.REDIRECTED,
    flow_pb2.TRACED: model.Verdict.TRACED,
    flow_pb2.TRANSLATED: model.Verdict.TRANSLATED,
}
_VERDICT_NAMES: Final = {flow_pb2.Verdict.Name(k): v for k, v in _VERDICTS.items()}
_DIRECTIONS: Final[Mapping[int, model.Direction]] = {
    flow_pb2.INGRESS: model.Direction.INGRESS,
    flow_pb2.EGRESS: model.Direction.EGRESS,
}
_DIRECTION_NAMES: Final = {flow_pb2.TrafficDirection.Name(k): v for k, v in _DIRECTIONS.items()}
_DROP_NAMES: Final[Mapping[int, str]] = {v.number: v.name for v in flow_pb2.DropReason.DESCRIPTOR.values}
_DROP_NUMBERS: Final[Mapping[str, int]] = {name: number for number, name in _DROP_NAMES.items()}
_FLAG_NAMES: Final = frozenset(f.name for f in flow_pb2.TCPFlags.DESCRIPTOR.fields)
_NO_FLAGS: frozenset[str] = frozenset()

_RESERVED_KINDS: Final[Sequence[tuple[str, model.EndpointKind]]] = (
    ("kube-apiserver", model.EndpointKind.KUBE_APISERVER),
    ("host", model.EndpointKind.HOST),
    ("remote-node", model.EndpointKind.REMOTE_NODE),
    ("world", model.EndpointKind.WORLD),
    ("world-ipv4", model.EndpointKind.WORLD),
    ("world-ipv6", model.EndpointKind.WORLD),
    # Cilium-managed but not pods a NetworkPolicy selector can see.
    ("health", model.EndpointKind.UNKNOWN),
    ("ingress", model.EndpointKind.UNKNOWN),
    ("unmanaged", model.EndpointKind.UNKNOWN),
    ("init", model.EndpointKind.UNKNOWN),
    ("unknown", model.EndpointKind.UNKNOWN),
)
_IDENTITY_KINDS: Final[Mapping[int, model.EndpointKind]] = {
    1: model.EndpointKind.HOST,
    2: model.EndpointKind.WORLD,
    3: model.EndpointKind.UNKNOWN,  # unmanaged
    4: model.EndpointKind.UNKNOWN,  # health
    5: model.EndpointKind.UNKNOWN,  # init
    6: model.EndpointKind.REMOTE_NODE,
    7: model.EndpointKind.KUBE_APISERVER,
    8: model.EndpointKind.UNKNOWN,  # ingress
    9: model.EndpointKind.WORLD,
    10: model.EndpointKind.WORLD,
    11: model.EndpointKind.UNKNOWN,  # overlay-to-encrypt
}
_NAMESPACE_LABEL: Final = "io.kubernetes.pod.namespace"
_CILIUM_LABEL_PREFIX: Final = "io.cilium.k8s."
_POLICY_NAME_LABEL: Final = "k8s:io.cilium.k8s.policy.name="
_POLICY_KIND_LABEL: Final = "k8s:io.cilium.k8s.policy.derived-from="
_INTERNAL_RULE_LABEL: Final = "reserved:io.cilium.policy.derived-from="
_CACHE_LIMIT: Final = 4096
_CACHEABLE_BYTES: Final = 4096
"""Larger keys are not cached: the caches stay bounded in bytes (4096 x 4 KiB), whatever a peer sends."""


class _Labels(NamedTuple):
    """What one identity's label list tells us; cached per distinct list."""

    pod_labels: dict[str, str]
    namespace: str | None
    kind: model.EndpointKind | None


_EMPTY_LABELS: Final = _Labels({}, None, None)
_label_cache: dict[tuple[str, ...], _Labels] = {}
_flag_cache: dict[bytes, frozenset[str]] = {}
_endpoint_cache: dict[tuple[bytes, str], model.Endpoint] = {}


def _parse_labels(labels: tuple[str, ...]) -> _Labels:
    pod_labels: dict[str, str] = {}
    namespace = None
    reserved: set[str] = set()
    world_like = False
    for label in labels:
        source, _, rest = label.partition(":")
        key, _, value = rest.partition("=")
        if source == "k8s":
            if key == _NAMESPACE_LABEL:
                namespace = value
            elif not key.startswith(_CILIUM_LABEL_PREFIX):
                pod_labels[key] = value
        elif source == "reserved":
            reserved.add(key)
        elif source in ("cidr", "fqdn"):
            world_like = True
    kind = next((k for name, k in _RESERVED_KINDS if name in reserved), None)
    if kind is None and world_like:
        kind = model.EndpointKind.WORLD
    return _Labels(pod_labels, namespace, kind)


def _labels(labels: tuple[str, ...]) -> _Labels:
    # The labels dict is shared by every flow of the same identity; the
    # model types it as a read-only Mapping.
    info = _label_cache.get(labels)
    if info is None:
        if len(labels) > 64 or sum(map(len, labels)) > _CACHEABLE_BYTES:
            return _parse_labels(labels)
        if len(_label_cache) >= _CACHE_LIMIT:
            _label_cache.clear()
        info = _label_cache[labels] = _parse_labels(labels)
    return info


def _kind(identity: int, info: _Labels, namespace: str | None) -> model.EndpointKind:
    if info.kind is not None:
        return info.kind
    kind = _IDENTITY_KINDS.get(identity)
    if kind is not None:
        return kind
    if namespace:
        return model.EndpointKind.POD
    if identity >= _REMOTE_NODE_SCOPE:
        return model.EndpointKind.REMOTE_NODE
    if identity >= _LOCAL_SCOPE:
        return model.EndpointKind.WORLD
    return model.EndpointKind.UNKNOWN


def _endpoint(
    identity: int, namespace: str, pod: str, labels: tuple[str, ...], *, workload: str | None, ip: str | None
) -> model.Endpoint:
    info = _labels(labels) if labels else _EMPTY_LABELS
    ns = namespace or info.namespace
    return model.Endpoint(
        kind=_kind(identity, info, ns),
        ip=ip,
        namespace=ns or None,
        pod=pod or None,
        labels=info.pod_labels,
        workload=workload or None,
        identity=identity or None,
    )


NEWER_DROP_REASONS: Final[Mapping[int, tuple[str | None, str]]] = {
    206: (None, "No device"),
    207: ("DROP_FRAG_NOT_FOUND_WORLD", "First logical datagram fragment not found from world"),
}
"""Drop reasons of current Cilium that our proto lags behind: number -> (enum name, datapath string).

From Cilium's bpf/lib/common.h and pkg/monitor/api/drop.go (1.20 development
line): 206 exists in the datapath only (no flow.proto value), 207 was added to
flow.proto as DROP_FRAG_NOT_FOUND_WORLD. A test checks that none of these is
in our proto yet: when the proto catches up, the entry goes.
"""


def drop_reason_name(code: int) -> str:
    """The enum name, else Cilium's newer name or datapath words, else the number said plainly."""
    name = _DROP_NAMES.get(code)
    if name is not None:
        return name
    newer = NEWER_DROP_REASONS.get(code)
    if newer is not None:
        return newer[0] or f"{newer[1]} ({code})"
    return f"unknown drop reason {code}"


def _drop(code: int) -> tuple[str | None, model.DropKind]:
    if code < _DROP_MIN:
        return None, model.DropKind.NONE
    return drop_reason_name(code), _drop_kind(code)


def _drop_kind(code: int) -> model.DropKind:
    if code == _POLICY_DENIED:
        return model.DropKind.POLICY_DENIED
    if code == _POLICY_DENY:
        return model.DropKind.POLICY_DENY
    return model.DropKind.OTHER


_DROPS: Final[Mapping[int, tuple[str | None, model.DropKind]]] = {code: _drop(code) for code in _DROP_NAMES}


def _policy_hit(name: str, namespace: str, kind: str, labels: Iterable[str], action: str) -> model.PolicyHit:
    if not kind or not name:
        for label in labels:
            if not kind and label.startswith(_POLICY_KIND_LABEL):
                kind = label[len(_POLICY_KIND_LABEL):]
            elif not name and label.startswith(_POLICY_NAME_LABEL):
                name = label[len(_POLICY_NAME_LABEL):]
            elif not name and label.startswith(_INTERNAL_RULE_LABEL):
                name, kind = label[len(_INTERNAL_RULE_LABEL):], kind or "CiliumInternal"
    return model.PolicyHit(name=name or "<unnamed>", namespace=namespace or None, kind=kind or "Unknown", action=action)


# --- protobuf -----------------------------------------------------------------


def _flags_from_proto(flags: flow_pb2.TCPFlags) -> frozenset[str]:
    # At most 2**9 distinct flag sets exist, so caching by wire bytes is bounded.
    key = flags.SerializeToString()
    found = _flag_cache.get(key)
    if found is None:
        found = _flag_cache[key] = frozenset(f.name for f, on in flags.ListFields() if on)
    return found


def _endpoint_from_proto(ep: flow_pb2.Endpoint, ip: str) -> model.Endpoint:
    # The same few endpoints recur in every flow: cache the finished
    # (immutable) Endpoint by the endpoint's wire bytes and its IP.
    key = (ep.SerializeToString(), ip)
    found = _endpoint_cache.get(key)
    if found is None:
        workloads = ep.workloads
        found = _endpoint(
            ep.identity, ep.namespace, ep.pod_name, tuple(ep.labels),
            workload=workloads[0].name if workloads else None, ip=ip or None,
        )
        if len(key[0]) + len(ip) <= _CACHEABLE_BYTES:
            if len(_endpoint_cache) >= _CACHE_LIMIT:
                _endpoint_cache.clear()
            _endpoint_cache[key] = found
    return found


def _attribution_from_proto(pb: flow_pb2.Flow) -> tuple[model.PolicyHit, ...]:
    groups = (
        (pb.ingress_denied_by, "deny"), (pb.egress_denied_by, "deny"),
        (pb.ingress_allowed_by, "allow"), (pb.egress_allowed_by, "allow"),
    )
    return tuple(
        _policy_hit(p.name, p.namespace, p.kind, p.labels, action) for policies, action in groups for p in policies
    )


def flow_from_proto(
    pb: flow_pb2.Flow, *, node_name: str = "", time_ns: int | None = None, origin: str = "hubble"
) -> model.Flow:
    """One protobuf ``flow.Flow`` -> Flow.

    ``node_name`` and ``time_ns`` (from the enclosing response) are used only
    when the flow itself lacks them.
    """
    if pb.HasField("time"):
        t = pb.time
        time_ns = t.seconds * _NS + t.nanos
    elif time_ns is None:
        raise MalformedFlow(NO_TIME, "flow has no time")
    ip = pb.IP
    l4 = pb.l4
    which = l4.WhichOneof("protocol")
    sport = dport = 0
    flags = _NO_FLAGS
    if which == "TCP":
        tcp = l4.TCP
        protocol = model.Protocol.TCP
        sport, dport = tcp.source_port, tcp.destination_port
        if tcp.HasField("flags"):
            flags = _flags_from_proto(tcp.flags)
    elif which == "UDP":
        protocol = model.Protocol.UDP
        sport, dport = l4.UDP.source_port, l4.UDP.destination_port
    elif which == "ICMPv4":
        protocol = model.Protocol.ICMP
    elif which == "ICMPv6":
        protocol = model.Protocol.ICMPV6
    elif which == "SCTP":
        protocol = model.Protocol.SCTP
        sport, dport = l4.SCTP.source_port, l4.SCTP.destination_port
    else:
        protocol = model.Protocol.OTHER
    code = pb.drop_reason_desc or pb.drop_reason
    drop_reason, drop_kind = _DROPS.get(code) or _drop(code)
    if pb.HasField("is_reply"):
        is_reply: bool | None = pb.is_reply.value
    else:
        is_reply = True if pb.reply else None
    has_policies = pb.ingress_denied_by or pb.egress_denied_by or pb.ingress_allowed_by or pb.egress_allowed_by
    return model.Flow(
        time_ns=time_ns,
        verdict=_VERDICTS.get(pb.verdict, model.Verdict.UNKNOWN),
        source=_endpoint_from_proto(pb.source, ip.source),
        destination=_endpoint_from_proto(pb.destination, ip.destination),
        protocol=protocol,
        source_port=sport or None,
        destination_port=dport or None,
        node=pb.node_name or node_name or None,
        drop_kind=drop_kind,
        drop_reason=drop_reason,
        direction=_DIRECTIONS.get(pb.traffic_direction, model.Direction.UNKNOWN),
        is_reply=is_reply,
        tcp_flags=flags,
        attribution=_attribution_from_proto(pb) if has_policies else (),
        destination_names=tuple(pb.destination_names),
        origin=origin,
    )


def flow_from_response(resp: observer_pb2.GetFlowsResponse, *, origin: str = "hubble") -> model.Flow:
    """One ``GetFlowsResponse`` -> Flow; MalformedFlow(NOT_A_FLOW) for the other kinds."""
    if resp.WhichOneof("response_types") != "flow":
        raise MalformedFlow(NOT_A_FLOW, f"response carries {resp.WhichOneof('response_types') or 'nothing'}")
    pb = resp.flow
    fallback = None
    if not pb.HasField("time") and resp.HasField("time"):
        fallback = resp.time.seconds * _NS + resp.time.nanos
    return flow_from_proto(pb, node_name=resp.node_name, time_ns=fallback, origin=origin)


# --- JSON ---------------------------------------------------------------------

_RFC3339: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)"
)
_NOT_FLOW_KEYS: Final = ("node_status", "nodeStatus", "lost_events", "lostEvents", "agent_event", "agentEvent",
                         "debug_event", "debugEvent")
_FLOW_KEYS: Final = ("time", "verdict", "IP", "l4", "source", "destination", "event_type", "eventType", "Type")


def parse_time(value: str) -> int:
    """RFC 3339 with up to 9 fractional digits (protojson's Timestamp) -> ns since the epoch."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise MalformedFlow(BAD_FIELD, f"time: not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
    if zone not in ("Z", "z"):
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return seconds * _NS + (int(frac.ljust(9, "0")) if frac else 0)


def _get(obj: Mapping[str, Any], snake: str, camel: str | None) -> Any:
    value = obj.get(snake)
    if value is None and camel is not None:
        value = obj.get(camel)
    return value


def _str(obj: Mapping[str, Any], snake: str, camel: str | None = None) -> str:
    value = _get(obj, snake, camel)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedFlow(BAD_FIELD, f"{snake}: expected a string, got {value!r}")
    return value


def _int(obj: Mapping[str, Any], snake: str, camel: str | None = None) -> int:
    # protojson writes 64-bit integers as strings and accepts either form.
    value = _get(obj, snake, camel)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise MalformedFlow(BAD_FIELD, f"{snake}: expected an integer, got {value!r}")


def _obj(obj: Mapping[str, Any], snake: str, camel: str | None = None) -> Mapping[str, Any]:
    value = _get(obj, snake, camel)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedFlow(BAD_FIELD, f"{snake}: expected an object, got {value!r}")
    return value


def _list(obj: Mapping[str, Any], snake: str, camel: str | None = None) -> list[Any]:
    value = _get(obj, snake, camel)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedFlow(BAD_FIELD, f"{snake}: expected a list, got {value!r}")
    return value


def _strings(obj: Mapping[str, Any], snake: str, camel: str | None = None) -> tuple[str, ...]:
    values = _list(obj, snake, camel)
    if not all(isinstance(v, str) for v in values):
        raise MalformedFlow(BAD_FIELD, f"{snake}: expected a list of strings")
    return tuple(values)


def _enum_json(obj: Mapping[str, Any], snake: str, camel: str, names: Mapping[str, Any]) -> Any:
    """An enum given by name or number -> the mapped value (None when unknown)."""
    value = _get(obj, snake, camel)
    if value is None:
        return None
    if isinstance(value, str):
        return names.get(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise MalformedFlow(BAD_FIELD, f"{snake}: expected an enum name or number, got {value!r}")


def _drop_from_json(flow: Mapping[str, Any]) -> tuple[str | None, model.DropKind]:
    value = _get(flow, "drop_reason_desc", "dropReasonDesc")
    if isinstance(value, str) and value not in _DROP_NUMBERS:
        # A name newer than our schema: keep the agent's words.
        return value, model.DropKind.OTHER
    if isinstance(value, str):
        code = _DROP_NUMBERS[value]
    elif value is None:
        code = 0
    elif isinstance(value, int) and not isinstance(value, bool):
        code = value
    else:
        raise MalformedFlow(BAD_FIELD, f"drop_reason_desc: expected an enum name or number, got {value!r}")
    if not code:
        code = _int(flow, "drop_reason", "dropReason")
    return _DROPS.get(code) or _drop(code)


def _endpoint_from_json(ep: Mapping[str, Any], ip: str, where: str) -> model.Endpoint:
    workloads = _list(ep, "workloads", None)
    workload = None
    if workloads:
        if not isinstance(workloads[0], Mapping):
            raise MalformedFlow(BAD_FIELD, f"{where}.workloads: expected objects")
        workload = _str(workloads[0], "name")
    return _endpoint(
        _int(ep, "identity"), _str(ep, "namespace"), _str(ep, "pod_name", "podName"),
        _strings(ep, "labels"), workload=workload, ip=ip or None,
    )


def _attribution_from_json(flow: Mapping[str, Any]) -> tuple[model.PolicyHit, ...]:
    hits = []
    for snake, camel, action in (
        ("ingress_denied_by", "ingressDeniedBy", "deny"), ("egress_denied_by", "egressDeniedBy", "deny"),
        ("ingress_allowed_by", "ingressAllowedBy", "allow"), ("egress_allowed_by", "egressAllowedBy", "allow"),
    ):
        for policy in _list(flow, snake, camel):
            if not isinstance(policy, Mapping):
                raise MalformedFlow(BAD_FIELD, f"{snake}: expected objects")
            hits.append(_policy_hit(_str(policy, "name"), _str(policy, "namespace"), _str(policy, "kind"),
                                    _strings(policy, "labels"), action))
    return tuple(hits)


def _l4_from_json(flow: Mapping[str, Any]) -> tuple[model.Protocol, int, int, frozenset[str]]:
    l4 = _obj(flow, "l4")
    for key, protocol in (("TCP", model.Protocol.TCP), ("UDP", model.Protocol.UDP), ("SCTP", model.Protocol.SCTP)):
        if key in l4:
            body = _obj(l4, key)
            flags = _obj(body, "flags")
            names = frozenset(k for k, on in flags.items() if on is True and k in _FLAG_NAMES)
            return (protocol, _int(body, "source_port", "sourcePort"), _int(body, "destination_port",
                    "destinationPort"), names)
    if "ICMPv4" in l4:
        return model.Protocol.ICMP, 0, 0, _NO_FLAGS
    if "ICMPv6" in l4:
        return model.Protocol.ICMPV6, 0, 0, _NO_FLAGS
    return model.Protocol.OTHER, 0, 0, _NO_FLAGS


def _flow_from_dict(flow: Mapping[str, Any], *, node_name: str, time: Any, origin: str) -> model.Flow:
    raw_time = flow.get("time", time)
    if raw_time is None:
        raise MalformedFlow(NO_TIME, "flow has no time")
    if not isinstance(raw_time, str):
        raise MalformedFlow(BAD_FIELD, f"time: expected a string, got {raw_time!r}")
    ip = _obj(flow, "IP")
    protocol, sport, dport, flags = _l4_from_json(flow)
    drop_reason, drop_kind = _drop_from_json(flow)
    is_reply = _get(flow, "is_reply", "isReply")
    if is_reply is None and _get(flow, "reply", None) is True:
        is_reply = True
    if is_reply is not None and not isinstance(is_reply, bool):
        raise MalformedFlow(BAD_FIELD, f"is_reply: expected a boolean, got {is_reply!r}")
    verdict = _enum_json(flow, "verdict", "verdict", _VERDICT_NAMES)
    direction = _enum_json(flow, "traffic_direction", "trafficDirection", _DIRECTION_NAMES)
    return model.Flow(
        time_ns=parse_time(raw_time),
        verdict=_VERDICTS.get(verdict, model.Verdict.UNKNOWN) if isinstance(verdict, int) else
        verdict or model.Verdict.UNKNOWN,
        source=_endpoint_from_json(_obj(flow, "source"), _str(ip, "source"), "source"),
        destination=_endpoint_from_json(_obj(flow, "destination"), _str(ip, "destination"), "destination"),
        protocol=protocol,
        source_port=sport or None,
        destination_port=dport or None,
        node=_str(flow, "node_name", "nodeName") or node_name or None,
        drop_kind=drop_kind,
        drop_reason=drop_reason,
        direction=_DIRECTIONS.get(direction, model.Direction.UNKNOWN) if isinstance(direction, int) else
        direction or model.Direction.UNKNOWN,
        is_reply=is_reply,
        tcp_flags=flags,
        attribution=_attribution_from_json(flow),
        destination_names=_strings(flow, "destination_names", "destinationNames"),
        origin=origin,
    )


def flow_from_json(obj: Mapping[str, Any], *, origin: str = "hubble") -> model.Flow:
    """A decoded Hubble JSON line (jsonpb / json / exporter, or a bare flow) -> Flow."""
    if not isinstance(obj, Mapping):
        raise MalformedFlow(BAD_FIELD, "expected a JSON object")
    inner = obj.get("flow")
    if inner is not None:
        if not isinstance(inner, Mapping):
            raise MalformedFlow(BAD_FIELD, f"flow: expected an object, got {inner!r}")
        return _flow_from_dict(inner, node_name=_str(obj, "node_name", "nodeName"), time=obj.get("time"),
                               origin=origin)
    for key in _NOT_FLOW_KEYS:
        if key in obj:
            raise MalformedFlow(NOT_A_FLOW, f"a {key} record")
    if any(key in obj for key in _FLOW_KEYS):
        return _flow_from_dict(obj, node_name="", time=None, origin=origin)
    raise MalformedFlow(NOT_A_FLOW, "no flow in the record")
