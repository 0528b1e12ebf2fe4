"""Antrea records -> Flow, on the attribution facts of calico.md section 6 (Antrea)."""

from __future__ import annotations

import pytest

from drop_explainer.antrea_pb import flow_pb2 as af
from drop_explainer.flows import model
from drop_explainer.normalise import antrea
from drop_explainer.normalise.calico import MalformedFlow

T = 1_760_000_000


def record(**k8s: object) -> af.Flow:
    pb = af.Flow(id="f1", k8s=af.Kubernetes(
        source_pod_namespace="shop", source_pod_name="frontend-7d9", source_node_name="node-a",
        destination_pod_namespace="shop", destination_pod_name="db-0", destination_node_name="node-b",
        source_pod_labels=af.Labels(labels={"app": "frontend"}), **k8s))  # type: ignore[arg-type]
    pb.end_ts.seconds = T
    pb.ip.source, pb.ip.destination = bytes([10, 0, 1, 5]), bytes([10, 0, 2, 9])
    pb.transport.protocol_number, pb.transport.source_port, pb.transport.destination_port = 6, 40000, 5432
    pb.transport.TCP.state_name = "SYN_SENT"
    return pb


def test_an_isolation_drop_is_denied_by_default_and_names_no_policy() -> None:
    """'connections dropped due to isolated Pod behavior will be assigned the Drop action', no name."""
    flow = antrea.flow_from_proto(record(ingress_network_policy_type=af.NETWORK_POLICY_TYPE_K8S,
                                         ingress_network_policy_rule_action=af.NETWORK_POLICY_RULE_ACTION_DROP))
    assert (flow.verdict, flow.drop_kind, flow.direction) == (
        model.Verdict.DROPPED, model.DropKind.POLICY_DENIED, model.Direction.INGRESS)
    assert flow.attribution == ()
    assert (flow.node, flow.origin, flow.time_ns) == ("node-b", "antrea", T * 1_000_000_000)
    assert (flow.source.ip, flow.destination.ip, flow.destination_port) == ("10.0.1.5", "10.0.2.9", 5432)
    assert flow.source.labels == {"app": "frontend"}
    assert flow.is_connection_attempt


def test_an_antrea_cluster_policy_drop_is_an_explicit_deny_with_its_name() -> None:
    flow = antrea.flow_from_proto(record(
        egress_network_policy_type=af.NETWORK_POLICY_TYPE_ACNP, egress_network_policy_name="block-db",
        egress_network_policy_rule_name="drop-to-db",
        egress_network_policy_rule_action=af.NETWORK_POLICY_RULE_ACTION_REJECT))
    assert (flow.drop_kind, flow.drop_reason, flow.direction, flow.node) == (
        model.DropKind.POLICY_DENY, "reject-rule", model.Direction.EGRESS, "node-a")
    assert flow.attribution == (model.PolicyHit(name="block-db", kind="AntreaClusterNetworkPolicy",
                                                action="reject", trigger="drop-to-db"),)


def test_an_allowed_record_is_forwarded_with_the_allowing_policy() -> None:
    flow = antrea.flow_from_proto(record(
        ingress_network_policy_type=af.NETWORK_POLICY_TYPE_K8S, ingress_network_policy_namespace="shop",
        ingress_network_policy_name="db-from-api",
        ingress_network_policy_rule_action=af.NETWORK_POLICY_RULE_ACTION_ALLOW))
    assert (flow.verdict, flow.drop_kind) == (model.Verdict.FORWARDED, model.DropKind.NONE)
    assert flow.attribution[0].namespace == "shop"
    assert flow.attribution[0].action == "allow"


def test_a_record_without_time_is_malformed() -> None:
    pb = record()
    pb.ClearField("end_ts")
    with pytest.raises(MalformedFlow) as info:
        antrea.flow_from_proto(pb)
    assert info.value.reason == "no-time"


def test_an_aggregator_record_by_ie_name_reads_the_same() -> None:
    rec = {"sourcePodNamespace": "shop", "sourcePodName": "frontend-7d9", "destinationPodNamespace": "shop",
           "destinationPodName": "db-0", "destinationNodeName": "node-b", "sourceIPv4Address": "10.0.1.5",
           "destinationIPv4Address": "10.0.2.9", "protocolIdentifier": 6, "sourceTransportPort": 40000,
           "destinationTransportPort": 5432, "flowEndSeconds": T, "ingressNetworkPolicyType": 2,
           "ingressNetworkPolicyNamespace": "shop", "ingressNetworkPolicyName": "deny-db",
           "ingressNetworkPolicyRuleAction": "Drop", "tcpState": "SYN_SENT"}
    flow = antrea.flow_from_record(rec)
    assert (flow.verdict, flow.drop_kind, flow.drop_reason) == (
        model.Verdict.DROPPED, model.DropKind.POLICY_DENY, "drop-rule")
    assert flow.attribution == (model.PolicyHit(name="deny-db", namespace="shop", kind="AntreaNetworkPolicy"),)
    with pytest.raises(MalformedFlow):
        antrea.flow_from_record({**rec, "sourceIPv4Address": "not-an-ip"})
