"""Our hand-written Goldmane proto: generated code is current, numbers match Calico 3.30-3.32."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drop_explainer.goldmane_pb import goldmane_pb2 as gm

# Lines that only record which generator version ran; they differ between
# grpcio-tools releases without the proto changing.
VERSION_LINE = re.compile(r"Protobuf Python Version|ValidateProtobufRuntimeVersion|^\s+\d+,$|GRPC_GENERATED_VERSION =")


def comparable(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if not VERSION_LINE.search(line)]


def test_committed_generated_code_matches_the_proto(repo_root: Path, tmp_path: Path) -> None:
    """Regenerating from proto/goldmane gives the committed goldmane_pb files (run scripts/gen_goldmane_proto.sh)."""
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(repo_root / "scripts" / "gen_goldmane_proto.sh"), str(tmp_path)], check=True,
                   env=env, capture_output=True, timeout=60)
    committed = repo_root / "daemon" / "drop_explainer" / "goldmane_pb"
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    for name in fresh:
        assert comparable(tmp_path / name) == comparable(committed / name), \
            f"{name} is stale: run scripts/gen_goldmane_proto.sh"


@pytest.mark.parametrize(("message", "field", "number"), [
    (gm.FlowKey, "source_name", 1), (gm.FlowKey, "source_namespace", 2), (gm.FlowKey, "source_type", 3),
    (gm.FlowKey, "dest_name", 4), (gm.FlowKey, "dest_namespace", 5), (gm.FlowKey, "dest_type", 6),
    (gm.FlowKey, "dest_port", 7), (gm.FlowKey, "dest_service_name", 8), (gm.FlowKey, "dest_service_namespace", 9),
    (gm.FlowKey, "dest_service_port_name", 10), (gm.FlowKey, "dest_service_port", 11), (gm.FlowKey, "proto", 12),
    (gm.FlowKey, "reporter", 13), (gm.FlowKey, "action", 14), (gm.FlowKey, "policies", 15),
    (gm.Flow, "Key", 1), (gm.Flow, "start_time", 2), (gm.Flow, "end_time", 3), (gm.Flow, "source_labels", 4),
    (gm.Flow, "dest_labels", 5), (gm.Flow, "packets_in", 6), (gm.Flow, "packets_out", 7),
    (gm.Flow, "bytes_in", 8), (gm.Flow, "bytes_out", 9), (gm.Flow, "num_connections_started", 10),
    (gm.Flow, "num_connections_completed", 11), (gm.Flow, "num_connections_live", 12),
    (gm.PolicyTrace, "enforced_policies", 1), (gm.PolicyTrace, "pending_policies", 2),
    (gm.PolicyHit, "kind", 1), (gm.PolicyHit, "namespace", 2), (gm.PolicyHit, "name", 3), (gm.PolicyHit, "tier", 4),
    (gm.PolicyHit, "action", 5), (gm.PolicyHit, "policy_index", 6), (gm.PolicyHit, "rule_index", 7),
    (gm.PolicyHit, "trigger", 8),
    (gm.FlowStreamRequest, "start_time_gte", 1), (gm.FlowStreamRequest, "filter", 2),
    (gm.FlowStreamRequest, "aggregation_interval", 3),
    (gm.FlowListRequest, "start_time_gte", 1), (gm.FlowListRequest, "start_time_lt", 2),
    (gm.FlowListRequest, "page", 3), (gm.FlowListRequest, "page_size", 4), (gm.FlowListRequest, "sort_by", 5),
    (gm.FlowListRequest, "filter", 6), (gm.FlowListRequest, "aggregation_interval", 7),
    (gm.FlowListResult, "meta", 1), (gm.FlowListResult, "flows", 2), (gm.ListMetadata, "totalPages", 1),
    (gm.ListMetadata, "totalResults", 2), (gm.FlowResult, "id", 1), (gm.FlowResult, "flow", 2),
    (gm.Filter, "actions", 7), (gm.Filter, "policies", 8), (gm.Filter, "reporter", 9),
    (gm.Filter, "pending_actions", 10), (gm.StringMatch, "type", 2), (gm.PortMatch, "port", 1),
    (gm.PolicyMatch, "kind", 1), (gm.PolicyMatch, "action", 5), (gm.FlowUpdate, "flow", 1),
])
def test_field_numbers_match_calico(message: type, field: str, number: int) -> None:
    """Wire compatibility rests on these numbers (the same in Calico 3.30, 3.31 and 3.32)."""
    assert message.DESCRIPTOR.fields_by_name[field].number == number  # type: ignore[attr-defined]


def test_policy_kinds_of_every_version_decode_by_name() -> None:
    """ANP/BANP (7/8, 3.30-3.31) and ClusterNetworkPolicy (11, 3.32) all have names; the rest keep their numbers."""
    assert [gm.PolicyKind.Name(n) for n in range(12)] == [
        "KindUnspecified", "CalicoNetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy",
        "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy", "NetworkPolicy", "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy", "Profile", "EndOfTier", "ClusterNetworkPolicy"]
    assert (gm.Allow, gm.Deny, gm.Pass, gm.Src, gm.Dst) == (1, 2, 3, 1, 2)
    assert (gm.WorkloadEndpoint, gm.HostEndpoint, gm.NetworkSet, gm.Network) == (1, 2, 3, 4)


def test_policy_match_leaves_out_the_fields_whose_type_changed_in_3_32() -> None:
    """Tier, namespace and name of PolicyMatch (string before 3.32, StringMatch after) are never sent."""
    assert sorted(gm.PolicyMatch.DESCRIPTOR.fields_by_name) == ["action", "kind"]


def test_method_paths_are_the_real_ones() -> None:
    """The client calls /goldmane.Flows/Stream and serves /goldmane.FlowCollector/Connect, as Calico does."""
    services = gm.DESCRIPTOR.services_by_name
    stream = services["Flows"].methods_by_name["Stream"]
    connect = services["FlowCollector"].methods_by_name["Connect"]
    listing = services["Flows"].methods_by_name["List"]
    assert f"/{stream.containing_service.full_name}/{stream.name}" == "/goldmane.Flows/Stream"
    assert (stream.server_streaming, stream.client_streaming) == (True, False)
    assert f"/{connect.containing_service.full_name}/{connect.name}" == "/goldmane.FlowCollector/Connect"
    assert (connect.server_streaming, connect.client_streaming) == (True, True)
    assert not listing.server_streaming


def test_a_3_32_filter_field_is_an_unknown_field_to_nothing_we_decode() -> None:
    """A flow written with a field number we do not declare (PR #13063's source_ips, 13) still decodes."""
    flow = gm.Flow(start_time=15, end_time=30)
    raw = flow.SerializeToString() + bytes([13 << 3 | 2, 8]) + b"10.0.0.1"
    decoded = gm.Flow.FromString(raw)
    assert (decoded.start_time, decoded.end_time) == (15, 30)
