"""Reading saved flow files: per-line format detection, gzip, bad lines."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import json_format

from drop_explainer.flows import codec, model
from drop_explainer.hubble_pb import observer_pb2
from drop_explainer.sources import flowfiles
from drop_explainer.testing.hubble_server import policy_denied_syn

FIXTURES = (
    "cilium-docs_hubble-export-example.jsonl", "cnpg_testdata1.jsonl", "hubble-otel_basic-sample-10-flows.jsonl",
)


@pytest.mark.parametrize("name", FIXTURES)
def test_every_line_of_the_shared_fixtures_reads_as_a_flow(shared_dir: Path, name: str) -> None:
    """No line of the real Hubble captures is malformed."""
    path = shared_dir / "fixtures" / "hubble" / name
    records = list(flowfiles.read_flows(path))
    expected = len(path.read_text(encoding="utf-8").splitlines())
    assert len(records) == expected
    assert [r for r in records if not isinstance(r, model.Flow)] == []
    assert {r.origin for r in records if isinstance(r, model.Flow)} == {"file"}


def test_gzip_is_recognised_by_magic_bytes_not_by_name(shared_dir: Path, tmp_path: Path) -> None:
    """A gzip file named .jsonl reads like the plain one."""
    plain = shared_dir / "fixtures" / "hubble" / "cnpg_testdata1.jsonl"
    packed = tmp_path / "flows.jsonl"
    with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert list(flowfiles.read_flows(packed)) == list(flowfiles.read_flows(plain))


def test_our_own_record_form_round_trips(tmp_path: Path) -> None:
    """drop-explainer.flow/v1 lines are read with the codec."""
    response = observer_pb2.GetFlowsResponse(flow=policy_denied_syn(1_700_000_000_000_000_000))
    flow = flowfiles.parse_line(json_format.MessageToJson(response, indent=None))
    assert isinstance(flow, model.Flow)
    path = tmp_path / "ours.jsonl"
    path.write_text(json.dumps(codec.flow_to_json(flow)) + "\n", encoding="utf-8")
    assert list(flowfiles.read_flows(path)) == [flow]


def test_mixed_file_reports_bad_lines_and_goes_on(shared_dir: Path, tmp_path: Path) -> None:
    """Bad lines become MalformedRecords with their line numbers; the good lines around them still read."""
    good = (shared_dir / "fixtures/hubble/cilium-docs_hubble-export-example.jsonl").read_text().splitlines()
    lines = [
        good[0],
        "{not json",
        "[1, 2]",
        '{"lost_events": {"num_events_lost": "3"}}',
        "",
        '{"flow": {"time": "2026-01-01T00:00:00Z", "source": {"labels": 7}}}',
        '{"record": "drop-explainer.flow/v1", "verdict": "dropped"}',
        good[1],
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = list(flowfiles.read_flows(path))
    bad = [r for r in records if isinstance(r, flowfiles.MalformedRecord)]
    assert [r.line_no for r in bad] == [2, 3, 4, 6, 7]
    assert bad[2].reason.startswith("not-a-flow")
    assert "labels" in bad[3].reason
    assert "time_ns" in bad[4].reason
    assert [r.drop_reason for r in records if isinstance(r, model.Flow)] == ["INVALID_SOURCE_IP", "POLICY_DENIED"]


def test_truncated_gzip_keeps_what_was_read_and_reports_the_rest(shared_dir: Path, tmp_path: Path) -> None:
    """A cut-off compressed file yields its complete lines, then one MalformedRecord."""
    data = gzip.compress((shared_dir / "fixtures/hubble/cnpg_testdata1.jsonl").read_bytes())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    records = list(flowfiles.read_flows(path))
    assert isinstance(records[-1], flowfiles.MalformedRecord)
    assert "compressed" in records[-1].reason
    assert all(isinstance(r, model.Flow) for r in records[:-1])
