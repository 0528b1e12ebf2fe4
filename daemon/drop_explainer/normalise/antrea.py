"""Antrea flow records -> our Flow: the Flow Aggregator's protobuf ``Flow`` and its IE-named records.

Facts (calico.md section 6, Antrea): a record keeps individual pod names,
IPs and node names, and names the policy that decided each direction:
``{ingress,egress}_network_policy_{type,namespace,name,rule_name,rule_action}``
(IPFIX IEs 110-118, 139-142). Mapping decisions:

- verdict: a Drop or Reject rule action on either side -> DROPPED, else
  FORWARDED (an Allow, or no policy at all).
- direction: the side whose action dropped (ingress first, as the packet
  reaches the destination's ingress check only after passing egress).
- drop_kind: type K8s with Drop -> POLICY_DENIED: Antrea's words for the
  default deny of an isolated pod ("connections dropped due to isolated
  Pod behavior will be assigned the Drop action"), and the code leaves the
  name empty ("For K8s NetworkPolicy implicit drop action, we cannot get
  Namespace/name"), so no hit is named for it. An Antrea-native rule
  (ANP, ACNP) or a Kubernetes ClusterNetworkPolicy with Drop/Reject ->
  POLICY_DENY, named, drop_reason ``drop-rule``/``reject-rule``.
- attribution: one PolicyHit per side that names a policy, kind
  ``NetworkPolicy``, ``AntreaNetworkPolicy``, ``AntreaClusterNetworkPolicy``
  or ``ClusterNetworkPolicy``; action deny/reject/allow; the rule name is
  kept in ``tier``-free ``trigger`` (Antrea names rules, not indexes).
- time_ns: the record's end, else its start; node: the node that dropped
  (destination's for ingress, source's for egress).
- A TCP record whose conntrack state is SYN_SENT (or has no state, as a
  denied connection never leaves SYN) is a connection attempt (flags SYN).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import timestamp_pb2

from drop_explainer.antrea_pb import flow_pb2 as af
from drop_explainer.flows import model
from drop_explainer.normalise.calico import MalformedFlow

NO_TIME: Final = "no-time"
BAD_FIELD: Final = "bad-field"
_NS: Final = 1_000_000_000

KINDS: Final[Mapping[int, str]] = {
    af.NETWORK_POLICY_TYPE_K8S: "NetworkPolicy",
    af.NETWORK_POLICY_TYPE_ANP: "AntreaNetworkPolicy",
    af.NETWORK_POLICY_TYPE_ACNP: "AntreaClusterNetworkPolicy",
    af.NETWORK_POLICY_TYPE_K8SCNP: "ClusterNetworkPolicy",
}
"""Antrea's policy type -> PolicyHit.kind (the Kubernetes one as for Hubble and Calico)."""
ANTREA_NATIVE_KINDS: Final = frozenset({"AntreaNetworkPolicy", "AntreaClusterNetworkPolicy"})
_ACTIONS: Final[Mapping[int, str]] = {
    af.NETWORK_POLICY_RULE_ACTION_ALLOW: "allow",
    af.NETWORK_POLICY_RULE_ACTION_DROP: "deny",
    af.NETWORK_POLICY_RULE_ACTION_REJECT: "reject",
}
_DROPS: Final = frozenset({af.NETWORK_POLICY_RULE_ACTION_DROP, af.NETWORK_POLICY_RULE_ACTION_REJECT})
_PROTOCOLS: Final[Mapping[int, model.Protocol]] = {
    6: model.Protocol.TCP, 17: model.Protocol.UDP, 132: model.Protocol.SCTP,
    1: model.Protocol.ICMP, 58: model.Protocol.ICMPV6,
}
_ATTEMPT_STATES: Final = frozenset({"", "SYN_SENT"})


def _ts_ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * _NS + ts.nanos


def _ip(raw: bytes) -> str | None:
    if not raw:
        return None
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise MalformedFlow(BAD_FIELD, f"address of {len(raw)} bytes") from None


def _endpoint(ns: str, pod: str, labels: af.Labels | None, ip: str | None, external: bool) -> model.Endpoint:
    if pod:
        return model.Endpoint(model.EndpointKind.POD, ip, ns or None, pod, dict(labels.labels) if labels else {})
    kind = model.EndpointKind.WORLD if external else model.EndpointKind.UNKNOWN
    return model.Endpoint(kind, ip)


def _hit(kind: int, ns: str, name: str, rule: str, action: int) -> model.PolicyHit | None:
    if not name:
        return None
    return model.PolicyHit(name=name, namespace=ns or None, kind=KINDS.get(kind, "NetworkPolicy"),
                           action=_ACTIONS.get(action, "allow"), trigger=rule or None)


def flow_from_proto(pb: af.Flow, *, origin: str = "antrea") -> model.Flow:
    """One Antrea ``Flow`` (FlowStreamService or the exporter's gRPC) -> Flow."""
    time_ns = _ts_ns(pb.end_ts) if pb.HasField("end_ts") else _ts_ns(pb.start_ts) if pb.HasField("start_ts") else 0
    if time_ns <= 0:
        raise MalformedFlow(NO_TIME, "record has neither an end nor a start time")
    k = pb.k8s
    ingress = _hit(k.ingress_network_policy_type, k.ingress_network_policy_namespace,
                   k.ingress_network_policy_name, k.ingress_network_policy_rule_name,
                   k.ingress_network_policy_rule_action)
    egress = _hit(k.egress_network_policy_type, k.egress_network_policy_namespace,
                  k.egress_network_policy_name, k.egress_network_policy_rule_name,
                  k.egress_network_policy_rule_action)
    kind: int
    action: int
    if k.ingress_network_policy_rule_action in _DROPS:
        direction, kind, action, node = (model.Direction.INGRESS, k.ingress_network_policy_type,
                                         k.ingress_network_policy_rule_action, k.destination_node_name)
    elif k.egress_network_policy_rule_action in _DROPS:
        direction, kind, action, node = (model.Direction.EGRESS, k.egress_network_policy_type,
                                         k.egress_network_policy_rule_action, k.source_node_name)
    else:
        direction, kind, action, node = (model.Direction.UNKNOWN, 0, 0,
                                         k.destination_node_name or k.source_node_name)
    verdict = model.Verdict.DROPPED if action in _DROPS else model.Verdict.FORWARDED
    drop_kind, drop_reason = model.DropKind.NONE, None
    if verdict is model.Verdict.DROPPED:
        if kind in (af.NETWORK_POLICY_TYPE_K8S, af.NETWORK_POLICY_TYPE_UNSPECIFIED):
            drop_kind, drop_reason = model.DropKind.POLICY_DENIED, "isolation-drop"
        else:
            drop_kind = model.DropKind.POLICY_DENY
            drop_reason = "reject-rule" if action == af.NETWORK_POLICY_RULE_ACTION_REJECT else "drop-rule"
    t = pb.transport
    protocol = _PROTOCOLS.get(t.protocol_number, model.Protocol.OTHER)
    flags: frozenset[str] = frozenset()
    if protocol is model.Protocol.TCP and verdict is model.Verdict.DROPPED and t.TCP.state_name in _ATTEMPT_STATES:
        flags = frozenset({"SYN"})
    ports = protocol in (model.Protocol.TCP, model.Protocol.UDP, model.Protocol.SCTP)
    service = k.destination_service_port_name.rsplit(":", 1)[0] if k.destination_service_port_name else ""
    stats = pb.stats
    return model.Flow(
        time_ns=time_ns,
        verdict=verdict,
        source=_endpoint(k.source_pod_namespace, k.source_pod_name, k.source_pod_labels
                         if k.HasField("source_pod_labels") else None, _ip(pb.ip.source),
                         k.flow_type == af.FLOW_TYPE_FROM_EXTERNAL),
        destination=_endpoint(k.destination_pod_namespace, k.destination_pod_name, k.destination_pod_labels
                              if k.HasField("destination_pod_labels") else None, _ip(pb.ip.destination),
                              k.flow_type == af.FLOW_TYPE_TO_EXTERNAL),
        protocol=protocol,
        source_port=(t.source_port or None) if ports else None,
        destination_port=(t.destination_port or None) if ports else None,
        node=node or None,
        drop_kind=drop_kind,
        drop_reason=drop_reason,
        direction=direction,
        tcp_flags=flags,
        attribution=tuple(h for h in (egress, ingress) if h is not None),
        destination_names=(service,) if service else (),
        packets=max(1, stats.packet_delta_count or stats.packet_total_count),
        connections=1,
        origin=origin,
    )


# --- Flow Aggregator records by IE name (its JSON / flow-logger output) ------------------

_IE_STRINGS: Final = {
    "sourcePodNamespace": "source_pod_namespace", "sourcePodName": "source_pod_name",
    "destinationPodNamespace": "destination_pod_namespace", "destinationPodName": "destination_pod_name",
    "sourceNodeName": "source_node_name", "destinationNodeName": "destination_node_name",
    "ingressNetworkPolicyName": "ingress_network_policy_name",
    "ingressNetworkPolicyNamespace": "ingress_network_policy_namespace",
    "ingressNetworkPolicyRuleName": "ingress_network_policy_rule_name",
    "egressNetworkPolicyName": "egress_network_policy_name",
    "egressNetworkPolicyNamespace": "egress_network_policy_namespace",
    "egressNetworkPolicyRuleName": "egress_network_policy_rule_name",
    "destinationServicePortName": "destination_service_port_name",
}
_IE_ENUMS: Final = {
    "ingressNetworkPolicyType": "ingress_network_policy_type",
    "egressNetworkPolicyType": "egress_network_policy_type",
    "ingressNetworkPolicyRuleAction": "ingress_network_policy_rule_action",
    "egressNetworkPolicyRuleAction": "egress_network_policy_rule_action",
    "flowType": "flow_type",
}
_ACTION_WORDS: Final = {"allow": 1, "drop": 2, "reject": 3}


def _enum(value: Any, key: str) -> int:
    if isinstance(value, str) and value.lower() in _ACTION_WORDS:
        return _ACTION_WORDS[value.lower()]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MalformedFlow(BAD_FIELD, f"{key}: {value!r} is not a number") from None


def proto_from_record(rec: Mapping[str, Any]) -> af.Flow:
    """A Flow Aggregator record keyed by IPFIX IE names (calico.md section 6) -> an Antrea ``Flow``.

    The IEs are the registry's: ``sourceIPv4Address``/``destinationIPv4Address`` (or IPv6),
    ``sourceTransportPort``, ``destinationTransportPort``, ``protocolIdentifier``,
    ``flowStartSeconds``/``flowEndSeconds`` (Unix seconds), ``tcpState`` and Antrea's own IEs.
    Actions may be numbers (1 Allow, 2 Drop, 3 Reject) or the words.
    """
    k = af.Kubernetes()
    for ie, fieldname in _IE_STRINGS.items():
        if rec.get(ie):
            setattr(k, fieldname, str(rec[ie]))
    for ie, fieldname in _IE_ENUMS.items():
        if rec.get(ie) not in (None, ""):
            setattr(k, fieldname, _enum(rec[ie], ie))
    pb = af.Flow(k8s=k)
    for side, key in (("source", "source"), ("destination", "destination")):
        text = rec.get(f"{side}IPv4Address") or rec.get(f"{side}IPv6Address")
        if text:
            try:
                setattr(pb.ip, key, ipaddress.ip_address(str(text)).packed)
            except ValueError:
                raise MalformedFlow(BAD_FIELD, f"{side} address {text!r}") from None
    try:
        pb.transport.protocol_number = int(rec.get("protocolIdentifier") or 0)
        pb.transport.source_port = int(rec.get("sourceTransportPort") or 0)
        pb.transport.destination_port = int(rec.get("destinationTransportPort") or 0)
        start, end = int(rec.get("flowStartSeconds") or 0), int(rec.get("flowEndSeconds") or 0)
    except (TypeError, ValueError) as exc:
        raise MalformedFlow(BAD_FIELD, str(exc)) from None
    if rec.get("tcpState"):
        pb.transport.TCP.state_name = str(rec["tcpState"])
    if start:
        pb.start_ts.seconds = start
    if end:
        pb.end_ts.seconds = end
    return pb


def flow_from_record(rec: Mapping[str, Any]) -> model.Flow:
    """A Flow Aggregator record by IE name -> Flow (through the same mapping as the protobuf)."""
    return flow_from_proto(proto_from_record(rec))
