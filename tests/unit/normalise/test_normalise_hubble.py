"""Hubble protobuf / JSON -> Flow: every mapped field, both input forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from drop_explainer.flows import model
from drop_explainer.hubble_pb import flow_pb2, observer_pb2, relay_pb2
from drop_explainer.normalise import hubble
from drop_explainer.testing.hubble_server import policy_denied_syn

T0 = 1_692_619_938_510_175_415


def fixture_lines(shared_dir: Path) -> list[tuple[str, int, str]]:
    lines = []
    for path in sorted((shared_dir / "fixtures" / "hubble").glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            lines.append((path.name, number, line))
    return lines


def both_ways(flow: flow_pb2.Flow, **wrapper: Any) -> tuple[model.Flow, model.Flow]:
    """Normalise one flow from protobuf and from its jsonpb line."""
    response = observer_pb2.GetFlowsResponse(flow=flow, **wrapper)
    line = json_format.MessageToJson(response, preserving_proto_field_name=True, indent=None)
    return hubble.flow_from_response(response), hubble.flow_from_json(json.loads(line))


def test_every_fixture_line_normalises_the_same_from_json_and_protobuf(shared_dir: Path) -> None:
    """All 72 real Hubble lines give a Flow, identical whether read as JSON or as protobuf."""
    lines = fixture_lines(shared_dir)
    assert len(lines) == 72
    for name, number, line in lines:
        from_json = hubble.flow_from_json(json.loads(line))
        from_proto = hubble.flow_from_response(json_format.Parse(line, observer_pb2.GetFlowsResponse()))
        assert from_json == from_proto, f"{name}:{number}"
        assert from_json.time_ns > 0


def test_docs_policy_denied_syn_maps_every_field(shared_dir: Path) -> None:
    """The field-masked exporter example from the Cilium docs becomes a POLICY_DENIED TCP SYN."""
    line = (shared_dir / "fixtures/hubble/cilium-docs_hubble-export-example.jsonl").read_text().splitlines()[1]
    flow = hubble.flow_from_json(json.loads(line))
    assert flow == model.Flow(
        time_ns=T0,
        verdict=model.Verdict.DROPPED,
        source=model.Endpoint(kind=model.EndpointKind.POD, ip="10.244.1.60", namespace="default", pod="xwing"),
        destination=model.Endpoint(kind=model.EndpointKind.POD, ip="10.244.1.5", namespace="default",
                                   pod="deathstar-7848d6c4d5-th9v2"),
        protocol=model.Protocol.TCP, source_port=44916, destination_port=80, node="kind-kind/kind-worker",
        drop_kind=model.DropKind.POLICY_DENIED, drop_reason="POLICY_DENIED", tcp_flags=frozenset({"SYN"}),
        origin="hubble",
    )
    assert flow.is_connection_attempt


def test_full_synthetic_denied_syn_keeps_pod_labels_workload_and_identity() -> None:
    """Pod labels lose the k8s: prefix and Cilium's bookkeeping labels; workload and identity are kept."""
    from_proto, from_json = both_ways(policy_denied_syn(T0))
    assert from_proto == from_json
    assert from_proto.source.labels == {"app.kubernetes.io/name": "xwing", "class": "xwing", "org": "alliance"}
    assert from_proto.destination.workload == "deathstar"
    assert (from_proto.source.identity, from_proto.destination.identity) == (31246, 43055)
    assert from_proto.direction is model.Direction.INGRESS
    assert from_proto.is_reply is None


@pytest.mark.parametrize(("value", "expected"), [
    (flow_pb2.FORWARDED, model.Verdict.FORWARDED),
    (flow_pb2.DROPPED, model.Verdict.DROPPED),
    (flow_pb2.ERROR, model.Verdict.ERROR),
    (flow_pb2.AUDIT, model.Verdict.AUDIT),
    (flow_pb2.REDIRECTED, model.Verdict.REDIRECTED),
    (flow_pb2.TRACED, model.Verdict.TRACED),
    (flow_pb2.TRANSLATED, model.Verdict.TRANSLATED),
    (flow_pb2.VERDICT_UNKNOWN, model.Verdict.UNKNOWN),
])
def test_verdict_maps_to_our_verdict(value: flow_pb2.Verdict, expected: model.Verdict) -> None:
    """Each Hubble verdict has its own Verdict."""
    flow = policy_denied_syn(T0)
    flow.verdict = value
    assert {f.verdict for f in both_ways(flow)} == {expected}


@pytest.mark.parametrize(("desc", "numeric", "reason", "kind"), [
    pytest.param(133, 133, "POLICY_DENIED", model.DropKind.POLICY_DENIED, id="default-deny"),
    pytest.param(181, 181, "POLICY_DENY", model.DropKind.POLICY_DENY, id="explicit-deny"),
    pytest.param(158, 0, "SERVICE_BACKEND_NOT_FOUND", model.DropKind.OTHER, id="datapath-reason"),
    pytest.param(0, 133, "POLICY_DENIED", model.DropKind.POLICY_DENIED, id="deprecated-numeric-only"),
    # Cilium's bpf/lib/common.h and pkg/monitor/api/drop.go: 206 "No device" (datapath only), 207 in 1.20's proto.
    pytest.param(206, 206, "No device (206)", model.DropKind.OTHER, id="datapath-code-without-proto-name"),
    pytest.param(207, 207, "DROP_FRAG_NOT_FOUND_WORLD", model.DropKind.OTHER, id="code-newer-than-our-proto"),
    pytest.param(250, 250, "unknown drop reason 250", model.DropKind.OTHER, id="code-unknown-anywhere"),
    pytest.param(0, 0, None, model.DropKind.NONE, id="no-reason"),
    pytest.param(0, 5, None, model.DropKind.NONE, id="below-drop-min"),
])
def test_drop_reason_and_kind(desc: int, numeric: int, reason: str | None, kind: model.DropKind) -> None:
    """drop_reason_desc (or the deprecated number) gives the reason name and the drop kind."""
    flow = policy_denied_syn(T0)
    flow.drop_reason_desc = desc  # type: ignore[assignment]
    flow.drop_reason = numeric
    for result in both_ways(flow):
        assert (result.drop_reason, result.drop_kind) == (reason, kind)


def test_drop_reason_name_newer_than_schema_is_kept_as_other() -> None:
    """A DropReason name our schema lacks (a newer agent) is kept verbatim as an OTHER drop."""
    line = {"flow": {"time": "2026-01-01T00:00:00Z", "verdict": "DROPPED",
                     "drop_reason_desc": "DROP_FRAG_NOT_FOUND_WORLD"}}
    flow = hubble.flow_from_json(line)
    assert (flow.drop_reason, flow.drop_kind) == ("DROP_FRAG_NOT_FOUND_WORLD", model.DropKind.OTHER)


@pytest.mark.parametrize(("is_reply", "reply", "expected"), [
    pytest.param(None, False, None, id="absent"),
    pytest.param(False, False, False, id="false"),
    pytest.param(True, False, True, id="true"),
    pytest.param(None, True, True, id="deprecated-reply"),
])
def test_is_reply_keeps_unknown_apart_from_false(is_reply: bool | None, reply: bool, expected: bool | None) -> None:
    """is_reply is None when Hubble does not know, as for every drop."""
    flow = policy_denied_syn(T0)
    if is_reply is not None:
        flow.is_reply.value = is_reply
    flow.reply = reply
    assert {f.is_reply for f in both_ways(flow)} == {expected}


@pytest.mark.parametrize(("direction", "expected"), [
    (flow_pb2.INGRESS, model.Direction.INGRESS),
    (flow_pb2.EGRESS, model.Direction.EGRESS),
    (flow_pb2.TRAFFIC_DIRECTION_UNKNOWN, model.Direction.UNKNOWN),
])
def test_traffic_direction(direction: flow_pb2.TrafficDirection, expected: model.Direction) -> None:
    """traffic_direction maps to Direction."""
    flow = policy_denied_syn(T0)
    flow.traffic_direction = direction
    assert {f.direction for f in both_ways(flow)} == {expected}


@pytest.mark.parametrize(("l4", "protocol", "ports"), [
    (flow_pb2.Layer4(UDP=flow_pb2.UDP(source_port=5353, destination_port=53)), model.Protocol.UDP, (5353, 53)),
    (flow_pb2.Layer4(SCTP=flow_pb2.SCTP(source_port=1, destination_port=2)), model.Protocol.SCTP, (1, 2)),
    (flow_pb2.Layer4(ICMPv4=flow_pb2.ICMPv4(type=8)), model.Protocol.ICMP, (None, None)),
    (flow_pb2.Layer4(ICMPv6=flow_pb2.ICMPv6(type=133)), model.Protocol.ICMPV6, (None, None)),
    (flow_pb2.Layer4(VRRP=flow_pb2.VRRP(vrid=1)), model.Protocol.OTHER, (None, None)),
    (flow_pb2.Layer4(), model.Protocol.OTHER, (None, None)),
])
def test_layer4_protocol_and_ports(l4: flow_pb2.Layer4, protocol: model.Protocol, ports: tuple[int, int]) -> None:
    """Each L4 protocol gives its Protocol and ports (none for ICMP and unknown ones)."""
    flow = policy_denied_syn(T0)
    flow.l4.CopyFrom(l4)
    for result in both_ways(flow):
        assert (result.protocol, (result.source_port, result.destination_port)) == (protocol, ports)
        assert result.tcp_flags == frozenset()


def test_tcp_flags_become_a_set_of_names() -> None:
    """Every TCP flag set in the record, and only those, appears by name."""
    flow = policy_denied_syn(T0)
    flow.l4.TCP.flags.CopyFrom(flow_pb2.TCPFlags(SYN=True, ACK=True, ECE=True, CWR=True, NS=True))
    for result in both_ways(flow):
        assert result.tcp_flags == {"SYN", "ACK", "ECE", "CWR", "NS"}
        assert not result.is_connection_attempt


@pytest.mark.parametrize(("identity", "labels", "namespace", "kind"), [
    pytest.param(1, ["reserved:host"], "", model.EndpointKind.HOST, id="host"),
    pytest.param(2, ["reserved:world"], "", model.EndpointKind.WORLD, id="world"),
    pytest.param(9, ["reserved:world-ipv4"], "", model.EndpointKind.WORLD, id="world-ipv4"),
    pytest.param(10, [], "", model.EndpointKind.WORLD, id="world-ipv6-by-number"),
    pytest.param(6, ["reserved:remote-node"], "", model.EndpointKind.REMOTE_NODE, id="remote-node"),
    pytest.param(7, ["reserved:kube-apiserver", "reserved:remote-node"], "", model.EndpointKind.KUBE_APISERVER,
                 id="kube-apiserver"),
    pytest.param(1, ["reserved:host", "reserved:kube-apiserver"], "", model.EndpointKind.KUBE_APISERVER,
                 id="apiserver-on-host"),
    pytest.param(4, ["reserved:health"], "", model.EndpointKind.UNKNOWN, id="health"),
    pytest.param(8, ["reserved:ingress"], "", model.EndpointKind.UNKNOWN, id="ingress"),
    pytest.param(3, [], "", model.EndpointKind.UNKNOWN, id="unmanaged"),
    pytest.param(0, ["reserved:unknown"], "", model.EndpointKind.UNKNOWN, id="unknown"),
    pytest.param(16777244, ["cidr:10.211.59.133/32", "reserved:world"], "", model.EndpointKind.WORLD, id="cidr"),
    pytest.param(16777300, ["fqdn:*.example.com"], "", model.EndpointKind.WORLD, id="fqdn"),
    pytest.param(31246, ["k8s:app=web"], "shop", model.EndpointKind.POD, id="pod"),
    pytest.param(31246, ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"], "", model.EndpointKind.POD,
                 id="pod-namespace-from-label"),
    pytest.param(102, ["k8s:k8s-app=kube-dns"], "kube-system", model.EndpointKind.POD, id="well-known-identity"),
    pytest.param(0, [], "", model.EndpointKind.UNKNOWN, id="empty"),
])
def test_endpoint_kind_from_reserved_identity_labels_and_namespace(
    identity: int, labels: list[str], namespace: str, kind: model.EndpointKind
) -> None:
    """Reserved labels, then reserved identity numbers, then a namespace decide the kind."""
    flow = policy_denied_syn(T0)
    flow.source.CopyFrom(flow_pb2.Endpoint(identity=identity, labels=labels, namespace=namespace))
    for result in both_ways(flow):
        assert result.source.kind is kind
        assert result.source.identity == (identity or None)


def test_namespace_comes_from_the_label_when_the_field_is_empty() -> None:
    """Drop events often carry labels but no namespace field."""
    flow = policy_denied_syn(T0)
    flow.source.ClearField("namespace")
    for result in both_ways(flow):
        assert result.source.namespace == "default"
        assert "io.kubernetes.pod.namespace" not in result.source.labels


def test_policies_named_by_hubble_become_policy_hits() -> None:
    """*_denied_by and *_allowed_by become deny / allow hits, kind from the message or its labels."""
    flow = policy_denied_syn(T0, reason=flow_pb2.POLICY_DENY, event="policy-verdict")
    flow.ingress_denied_by.add(name="deny-xwing", namespace="default", kind="CiliumNetworkPolicy", revision=6)
    flow.egress_denied_by.add(name="old", namespace="default", labels=[
        "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy", "k8s:io.cilium.k8s.policy.name=old"])
    flow.ingress_allowed_by.add(labels=["reserved:io.cilium.policy.derived-from=allow-localhost-ingress"])
    flow.egress_allowed_by.add(name="ccnp", kind="CiliumClusterwideNetworkPolicy")
    for result in both_ways(flow):
        assert result.attribution == (
            model.PolicyHit(name="deny-xwing", namespace="default", kind="CiliumNetworkPolicy", action="deny"),
            model.PolicyHit(name="old", namespace="default", kind="NetworkPolicy", action="deny"),
            model.PolicyHit(name="allow-localhost-ingress", kind="CiliumInternal", action="allow"),
            model.PolicyHit(name="ccnp", kind="CiliumClusterwideNetworkPolicy", action="allow"),
        )
        assert result.drop_kind is model.DropKind.POLICY_DENY


def test_destination_names_and_node_name() -> None:
    """DNS names of the destination are kept; the response's node name fills a missing flow node name."""
    flow = policy_denied_syn(T0)
    flow.destination_names.extend(["api.example.com", "example.com"])
    flow.ClearField("node_name")
    for result in both_ways(flow, node_name="relay-seen-node"):
        assert result.destination_names == ("api.example.com", "example.com")
        assert result.node == "relay-seen-node"


def test_time_falls_back_to_the_response_time() -> None:
    """A field mask without flow.time still has the response time."""
    flow = policy_denied_syn(T0)
    flow.ClearField("time")
    response = observer_pb2.GetFlowsResponse(flow=flow)
    response.time.FromNanoseconds(T0 + 1)
    assert hubble.flow_from_response(response).time_ns == T0 + 1
    line = json.loads(json_format.MessageToJson(response, preserving_proto_field_name=True))
    assert hubble.flow_from_json(line).time_ns == T0 + 1


def test_flow_without_any_time_is_malformed() -> None:
    """Without a time a flow cannot be ordered or resumed from."""
    flow = policy_denied_syn(T0)
    flow.ClearField("time")
    with pytest.raises(hubble.MalformedFlow) as proto_error:
        hubble.flow_from_response(observer_pb2.GetFlowsResponse(flow=flow))
    with pytest.raises(hubble.MalformedFlow) as json_error:
        hubble.flow_from_json({"flow": {"verdict": "DROPPED"}})
    assert proto_error.value.reason == json_error.value.reason == hubble.NO_TIME


@pytest.mark.parametrize(("text", "expected"), [
    ("2023-08-21T12:12:18.510175415Z", T0),
    ("2023-08-21T12:12:18.5Z", T0 - 10_175_415),
    ("2023-08-21T12:12:18Z", T0 - 510_175_415),
    ("2023-08-21T14:12:18.510175415+02:00", T0),
    ("2023-08-21t12:12:18.510175415z", T0),
])
def test_rfc3339_times_keep_nanoseconds(text: str, expected: int) -> None:
    """Timestamps keep all 9 fractional digits and honour UTC offsets."""
    assert hubble.parse_time(text) == expected


def test_camel_case_json_is_read_too() -> None:
    """protojson's default lowerCamel names (dropReasonDesc, podName...) are accepted like proto names."""
    response = observer_pb2.GetFlowsResponse(flow=policy_denied_syn(T0), node_name="n")
    camel = json.loads(json_format.MessageToJson(response))
    assert "dropReasonDesc" in camel["flow"]
    assert hubble.flow_from_json(camel) == hubble.flow_from_response(response)


def test_bare_legacy_flow_object_is_read() -> None:
    """`hubble observe -o json` with legacy output prints the flow without the wrapper."""
    flow = policy_denied_syn(T0)
    bare = json.loads(json_format.MessageToJson(flow, preserving_proto_field_name=True))
    assert hubble.flow_from_json(bare) == hubble.flow_from_proto(flow)


@pytest.mark.parametrize("response", [
    observer_pb2.GetFlowsResponse(node_status=relay_pb2.NodeStatusEvent(state_change=relay_pb2.NODE_CONNECTED)),
    observer_pb2.GetFlowsResponse(lost_events=flow_pb2.LostEvent(num_events_lost=3)),
    observer_pb2.GetFlowsResponse(node_name="only-a-name"),
], ids=["node-status", "lost-events", "empty"])
def test_responses_that_are_not_flows_raise_not_a_flow(response: observer_pb2.GetFlowsResponse) -> None:
    """Relay status, lost events and empty responses are reported as not-a-flow, from protobuf and JSON."""
    with pytest.raises(hubble.MalformedFlow) as proto_error:
        hubble.flow_from_response(response)
    line = json.loads(json_format.MessageToJson(response, preserving_proto_field_name=True))
    with pytest.raises(hubble.MalformedFlow) as json_error:
        hubble.flow_from_json(line)
    assert proto_error.value.reason == json_error.value.reason == hubble.NOT_A_FLOW


@pytest.mark.parametrize("line", [
    {"flow": "DROPPED"},
    {"flow": {"time": 5}},
    {"flow": {"time": "yesterday"}},
    {"flow": {"time": "2026-01-01T00:00:00Z", "source": {"labels": "k8s:app=x"}}},
    {"flow": {"time": "2026-01-01T00:00:00Z", "l4": {"TCP": {"source_port": "http"}}}},
    {"flow": {"time": "2026-01-01T00:00:00Z", "verdict": True}},
    {"flow": {"time": "2026-01-01T00:00:00Z", "is_reply": "no"}},
], ids=["flow-not-object", "time-number", "time-text", "labels-string", "port-name", "verdict-bool", "reply-text"])
def test_json_fields_of_the_wrong_type_are_bad_fields(line: dict[str, Any]) -> None:
    """A field of the wrong type raises MalformedFlow(bad-field) naming it, never another exception."""
    with pytest.raises(hubble.MalformedFlow) as error:
        hubble.flow_from_json(line)
    assert error.value.reason == hubble.BAD_FIELD
