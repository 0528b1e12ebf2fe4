"""Our hand-written Antrea flow proto: generated code is current, numbers and paths match Antrea v2.7+."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drop_explainer.antrea_pb import flow_pb2 as af

VERSION_LINE = re.compile(r"Protobuf Python Version|ValidateProtobufRuntimeVersion|^\s+\d+,$|GRPC_GENERATED_VERSION =")


def comparable(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if not VERSION_LINE.search(line)]


def test_committed_generated_code_matches_the_proto(repo_root: Path, tmp_path: Path) -> None:
    """Regenerating from proto/antrea gives the committed antrea_pb files (run scripts/gen_antrea_proto.sh)."""
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(repo_root / "scripts" / "gen_antrea_proto.sh"), str(tmp_path)], check=True,
                   env=env, capture_output=True, timeout=60)
    committed = repo_root / "daemon" / "drop_explainer" / "antrea_pb"
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    for name in fresh:
        assert comparable(tmp_path / name) == comparable(committed / name), \
            f"{name} is stale: run scripts/gen_antrea_proto.sh"


# calico.md section 6: "The protobuf Kubernetes message mirrors these (fields 18-29), e.g.
# ingress_network_policy_rule_action = 23"; GetFlowsRequest{filters=1; since=2; max_count=3; follow=4},
# GetFlowsResponse{flows=1; dropped_count=2}.
@pytest.mark.parametrize(("message", "field", "number"), [
    (af.Kubernetes, "ingress_network_policy_type", 18), (af.Kubernetes, "ingress_network_policy_namespace", 19),
    (af.Kubernetes, "ingress_network_policy_name", 20), (af.Kubernetes, "ingress_network_policy_rule_name", 22),
    (af.Kubernetes, "ingress_network_policy_rule_action", 23), (af.Kubernetes, "egress_network_policy_type", 24),
    (af.Kubernetes, "egress_network_policy_namespace", 25), (af.Kubernetes, "egress_network_policy_name", 26),
    (af.Kubernetes, "egress_network_policy_rule_name", 28), (af.Kubernetes, "egress_network_policy_rule_action", 29),
    (af.Kubernetes, "source_pod_namespace", 2), (af.Kubernetes, "source_pod_name", 3),
    (af.Kubernetes, "destination_pod_namespace", 8), (af.Kubernetes, "destination_pod_name", 9),
    (af.Kubernetes, "source_node_name", 6), (af.Kubernetes, "destination_node_name", 12),
    (af.Kubernetes, "destination_service_port_name", 16), (af.Kubernetes, "destination_service_ip", 35),
    (af.Flow, "id", 1), (af.Flow, "start_ts", 3), (af.Flow, "end_ts", 4), (af.Flow, "ip", 6),
    (af.Flow, "transport", 7), (af.Flow, "k8s", 8), (af.Flow, "flow_direction", 12), (af.Flow, "aggregation", 13),
    (af.IP, "source", 2), (af.IP, "destination", 3), (af.Transport, "protocol_number", 1),
    (af.Transport, "destination_port", 3), (af.Transport, "TCP", 4), (af.TCP, "state_name", 1),
    (af.GetFlowsRequest, "filters", 1), (af.GetFlowsRequest, "since", 2), (af.GetFlowsRequest, "max_count", 3),
    (af.GetFlowsRequest, "follow", 4), (af.GetFlowsResponse, "flows", 1), (af.GetFlowsResponse, "dropped_count", 2),
    (af.FlowFilter, "namespaces", 1), (af.FlowFilter, "direction", 7),
])
def test_field_numbers_match_antrea(message: type, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number  # type: ignore[attr-defined]


def test_enums_match_the_reference() -> None:
    assert [af.NetworkPolicyRuleAction.Name(n) for n in range(4)] == [
        "NETWORK_POLICY_RULE_ACTION_NO_ACTION", "NETWORK_POLICY_RULE_ACTION_ALLOW",
        "NETWORK_POLICY_RULE_ACTION_DROP", "NETWORK_POLICY_RULE_ACTION_REJECT"]
    assert [af.NetworkPolicyType.Name(n) for n in range(5)] == [
        "NETWORK_POLICY_TYPE_UNSPECIFIED", "NETWORK_POLICY_TYPE_K8S", "NETWORK_POLICY_TYPE_ANP",
        "NETWORK_POLICY_TYPE_ACNP", "NETWORK_POLICY_TYPE_K8SCNP"]


def test_method_path_is_the_real_one() -> None:
    method = af.DESCRIPTOR.services_by_name["FlowStreamService"].methods_by_name["GetFlows"]
    assert f"/{method.containing_service.full_name}/{method.name}" == \
        "/antrea_io.antrea.pkg.apis.flow.v1alpha1.FlowStreamService/GetFlows"
    assert (method.server_streaming, method.client_streaming) == (True, False)


def test_fields_we_leave_out_are_skipped_not_fatal() -> None:
    """A response with a field we do not declare (a newer server's) still decodes."""
    raw = af.GetFlowsResponse(flows=[af.Flow(id="a")], dropped_count=2).SerializeToString()
    raw += bytes([7 << 3 | 2, 3]) + b"xyz"
    decoded = af.GetFlowsResponse.FromString(raw)
    assert ([f.id for f in decoded.flows], decoded.dropped_count) == (["a"], 2)
