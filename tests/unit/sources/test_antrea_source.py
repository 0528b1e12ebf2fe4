"""The Antrea adapter's wire half: the request from a resume point, dropped_count, filtering, replays."""

from __future__ import annotations

import time

import pytest

from drop_explainer.antrea_pb import flow_pb2 as af
from drop_explainer.normalise import antrea as normalise
from drop_explainer.sources import errors, resuming
from drop_explainer.sources.antrea import GET_FLOWS, AntreaAdapter, AntreaSettings, RecordDedup
from drop_explainer.testing.antrea_server import record


def test_the_method_path_is_antreas() -> None:
    assert GET_FLOWS == "/antrea_io.antrea.pkg.apis.flow.v1alpha1.FlowStreamService/GetFlows"


def test_a_resume_asks_since_the_resume_point_and_follows() -> None:
    adapter = AntreaAdapter(AntreaSettings(namespaces=("backend",)))
    req = adapter.request(resuming.Resume(1_700_000_000_500_000_000, first=False, from_checkpoint=True))
    assert req.follow is True
    assert req.since.ToNanoseconds() == 1_700_000_000_500_000_000
    assert list(req.filters[0].namespaces) == ["backend"]
    assert req.max_count == 0


def test_a_first_connect_is_live_unless_the_history_is_asked_for() -> None:
    before = time.time_ns()
    live = AntreaAdapter(AntreaSettings()).request(resuming.Resume(None, first=True, from_checkpoint=False))
    assert live.since.ToNanoseconds() >= before
    history = AntreaAdapter(AntreaSettings(initial_history=True)).request(
        resuming.Resume(None, first=True, from_checkpoint=False))
    assert not history.HasField("since"), "no since: the aggregator sends its whole ring buffer first"


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(errors.ConfigError):
        AntreaAdapter(AntreaSettings(target=""))
    with pytest.raises(errors.ConfigError):
        AntreaSettings(dedup_window_s=0).validate()


class Intake:
    """Records what the adapter reports, as the loop's Intake would count it."""

    def __init__(self) -> None:
        self.messages = 0
        self.skipped: list[str] = []
        self.lost_events = 0
        self.taken: list[object] = []

    def connected(self) -> None: ...

    def received(self, n: int = 1) -> None:
        self.messages += n

    def skip(self, reason: str) -> None:
        self.skipped.append(reason)

    def lost(self, n: int) -> None:
        self.lost_events += n

    def flows(self, flows: list[object]) -> None:
        self.taken.extend(flows)


def test_denials_go_on_the_rest_is_counted_and_dropped_count_is_cumulative() -> None:
    adapter = AntreaAdapter(AntreaSettings())
    intake = Intake()
    allowed = record(100, ingress_action=af.NETWORK_POLICY_RULE_ACTION_ALLOW)
    bad = record(101)
    bad.ip.source = b"\x01\x02\x03"
    first = af.GetFlowsResponse(flows=[record(100), allowed, bad], dropped_count=3).SerializeToString()
    second = af.GetFlowsResponse(flows=[record(105)], dropped_count=5).SerializeToString()
    adapter.take(first, intake)  # type: ignore[arg-type]
    adapter.take(second, intake)  # type: ignore[arg-type]
    adapter.take(b"\xff\xff", intake)  # type: ignore[arg-type]
    assert intake.messages == 3
    assert len(intake.taken) == 2
    assert adapter.filtered == 1
    assert intake.skipped == ["bad-field", "decode"]
    assert intake.lost_events == 5, "3, then 2 more: dropped_count is cumulative per stream"


def test_a_replayed_record_is_a_repeat_a_later_export_is_not() -> None:
    dedup = RecordDedup(window_s=60)
    flow = normalise.flow_from_proto(record(1000))
    assert not dedup.is_repeat(flow)
    assert dedup.is_repeat(normalise.flow_from_proto(record(1000)))
    assert not dedup.is_repeat(normalise.flow_from_proto(record(1005))), "the active timeout's next export"
    assert not dedup.is_repeat(normalise.flow_from_proto(record(1000, source_port=40001)))
    dedup.is_repeat(normalise.flow_from_proto(record(2000)))
    assert len(dedup) == 1, "records older than the window are forgotten"
