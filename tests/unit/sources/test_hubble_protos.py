"""Our hand-written Hubble protos: generated code is current, numbers match Cilium's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drop_explainer.hubble_pb import flow_pb2, observer_pb2, relay_pb2

# Lines that only record which generator version ran; they differ between
# grpcio-tools releases without the protos changing.
VERSION_LINE = re.compile(r"Protobuf Python Version|ValidateProtobufRuntimeVersion|^\s+\d+,$|GRPC_GENERATED_VERSION =")


def comparable(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if not VERSION_LINE.search(line)]


def test_committed_generated_code_matches_the_protos(repo_root: Path, tmp_path: Path) -> None:
    """Regenerating from proto/ gives the committed hubble_pb files (run scripts/gen_proto.sh if not)."""
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(repo_root / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True, env=env,
                   capture_output=True, timeout=60)
    committed = repo_root / "daemon" / "drop_explainer" / "hubble_pb"
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    for name in fresh:
        assert comparable(tmp_path / name) == comparable(committed / name), f"{name} is stale: run scripts/gen_proto.sh"


@pytest.mark.parametrize(("message", "field", "number"), [
    (flow_pb2.Flow, "time", 1), (flow_pb2.Flow, "verdict", 2), (flow_pb2.Flow, "drop_reason", 3),
    (flow_pb2.Flow, "IP", 5), (flow_pb2.Flow, "l4", 6), (flow_pb2.Flow, "source", 8),
    (flow_pb2.Flow, "destination", 9), (flow_pb2.Flow, "node_name", 11), (flow_pb2.Flow, "destination_names", 14),
    (flow_pb2.Flow, "reply", 16), (flow_pb2.Flow, "event_type", 19), (flow_pb2.Flow, "traffic_direction", 22),
    (flow_pb2.Flow, "policy_match_type", 23), (flow_pb2.Flow, "drop_reason_desc", 25),
    (flow_pb2.Flow, "is_reply", 26), (flow_pb2.Flow, "uuid", 34), (flow_pb2.Flow, "emitter", 41),
    (flow_pb2.Flow, "egress_allowed_by", 21001), (flow_pb2.Flow, "ingress_allowed_by", 21002),
    (flow_pb2.Flow, "egress_denied_by", 21004), (flow_pb2.Flow, "ingress_denied_by", 21005),
    (flow_pb2.Flow, "policy_log", 21006), (flow_pb2.Flow, "aggregate", 21007), (flow_pb2.Flow, "Summary", 100000),
    (flow_pb2.Flow, "extensions", 150000),
    (flow_pb2.Endpoint, "pod_name", 5), (flow_pb2.Endpoint, "workloads", 6), (flow_pb2.Endpoint, "cluster_name", 7),
    (flow_pb2.Layer4, "SCTP", 5), (flow_pb2.Layer4, "IGMP", 7), (flow_pb2.TCPFlags, "NS", 9),
    (flow_pb2.Policy, "kind", 5), (flow_pb2.FlowFilter, "node_name", 24), (flow_pb2.FlowFilter, "verdict", 5),
    (flow_pb2.FlowFilter, "drop_reason_desc", 33), (flow_pb2.FlowFilter, "encrypted", 40),
    (flow_pb2.FlowFilter, "experimental", 999), (flow_pb2.LostEvent, "last", 5),
    (observer_pb2.GetFlowsRequest, "follow", 3), (observer_pb2.GetFlowsRequest, "whitelist", 6),
    (observer_pb2.GetFlowsRequest, "since", 7), (observer_pb2.GetFlowsRequest, "first", 9),
    (observer_pb2.GetFlowsRequest, "field_mask", 10), (observer_pb2.GetFlowsRequest, "extensions", 150000),
    (observer_pb2.GetFlowsResponse, "lost_events", 3), (observer_pb2.GetFlowsResponse, "node_name", 1000),
    (observer_pb2.GetFlowsResponse, "time", 1001), (observer_pb2.ServerStatusResponse, "flows_rate", 9),
    (relay_pb2.NodeStatusEvent, "message", 3),
])
def test_field_numbers_match_cilium(message: type, field: str, number: int) -> None:
    """Wire compatibility rests on these numbers (Cilium v1.19 schema)."""
    assert message.DESCRIPTOR.fields_by_name[field].number == number  # type: ignore[attr-defined]


def test_enum_values_match_cilium() -> None:
    """Verdicts, the policy drop reasons and directions keep Cilium's numbers."""
    assert (flow_pb2.DROPPED, flow_pb2.AUDIT, flow_pb2.TRANSLATED) == (2, 4, 7)
    assert (flow_pb2.POLICY_DENIED, flow_pb2.POLICY_DENY, flow_pb2.DROP_PUNT_PROXY) == (133, 181, 205)
    assert (flow_pb2.INGRESS, flow_pb2.EGRESS, flow_pb2.TO_ENDPOINT) == (1, 2, 101)


def test_get_flows_method_path_is_the_real_one() -> None:
    """The client calls /observer.Observer/GetFlows, as Hubble serves it."""
    method = observer_pb2.DESCRIPTOR.services_by_name["Observer"].methods_by_name["GetFlows"]
    assert f"/{method.containing_service.full_name}/{method.name}" == "/observer.Observer/GetFlows"
    assert method.server_streaming
