"""Property tests: whatever a peer or a file sends, the result is a Flow or a counted skip, never an exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drop_explainer.flows import model
from drop_explainer.goldmane_pb import goldmane_pb2 as gm
from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.normalise import calico, checking
from drop_explainer.sources import flowfiles, hubble, queueing, resuming

UINT32 = st.integers(0, 2**32 - 1)
TEXT = st.text(max_size=40) | st.sampled_from(["not-an-ip", "999.999.1.1", "1.2.3.4/24", "10.0.0.1%eth0",
                                               "10.0.0.1", "::1", "fe80::1%eth0", ""])
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def hubble_flows(draw: st.DrawFn) -> observer_pb2.GetFlowsResponse:
    """Flows with every field the normaliser reads drawn from hostile ranges."""
    f = flow_pb2.Flow(verdict=draw(st.integers(0, 10)), drop_reason_desc=draw(st.integers(0, 300)),
                      node_name=draw(TEXT), traffic_direction=draw(st.integers(0, 3)))
    if draw(st.booleans()):
        f.time.seconds = draw(st.integers(-(2**62), 2**62))
        f.time.nanos = draw(st.integers(0, 999_999_999))
    f.IP.source, f.IP.destination = draw(TEXT), draw(TEXT)
    l4 = draw(st.sampled_from(["TCP", "UDP", "SCTP", "ICMPv4", None]))
    if l4 is not None:
        proto = getattr(f.l4, l4)
        if l4 != "ICMPv4":
            proto.source_port, proto.destination_port = draw(UINT32), draw(UINT32)
        else:
            proto.type = draw(UINT32)
    for ep in (f.source, f.destination):
        ep.namespace, ep.pod_name = draw(TEXT), draw(TEXT)
        ep.identity = draw(UINT32)
        ep.labels.extend(draw(st.lists(TEXT, max_size=5)))
    for _ in range(draw(st.integers(0, 2))):
        f.ingress_denied_by.add(name=draw(TEXT), namespace=draw(TEXT), kind=draw(TEXT))
    resp = observer_pb2.GetFlowsResponse(flow=f, node_name=draw(TEXT))
    return resp


def fresh_adapter() -> tuple[hubble.HubbleAdapter, resuming.StreamStats, resuming.Intake, queueing.FlowQueue]:
    adapter = hubble.HubbleAdapter(hubble.HubbleSettings(target="127.0.0.1:1"))
    stream = resuming.ResumableStream(adapter, resuming.ResumeSettings())
    queue = queueing.FlowQueue(100, stream.stats)
    return adapter, stream.stats, resuming.Intake(stream, queue), queue


def accounted(stats: resuming.StreamStats) -> int:
    return stats.flows + stats.malformed + stats.non_flow + stats.oversized + stats.duplicates


@PROPERTY
@given(hubble_flows())
def test_any_hubble_flow_gives_a_checked_flow_or_a_counted_skip(resp: observer_pb2.GetFlowsResponse) -> None:
    """Through the source's own decode/normalise/check path: every response is accounted for exactly once."""
    adapter, stats, intake, queue = fresh_adapter()
    adapter._accept([resp.SerializeToString()], intake)
    assert stats.received == 1 == accounted(stats)
    for flow in queue.items:
        assert checking.check(flow).flow == flow  # what reached the queue is already safe
        assert flow.time_ns > 0


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_from_the_wire_give_a_flow_or_a_counted_skip(raw: bytes) -> None:
    """Random bytes decode to something or count as decode failures; nothing raises."""
    adapter, stats, intake, _ = fresh_adapter()
    adapter._accept([raw], intake)
    assert stats.received == 1 == accounted(stats)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20)
FLOW_KEYS = st.sampled_from(["time", "verdict", "IP", "l4", "source", "destination", "drop_reason_desc",
                             "drop_reason", "node_name", "traffic_direction", "ingress_denied_by"])


@PROPERTY
@given(st.dictionaries(FLOW_KEYS, JSON, max_size=8), st.booleans())
def test_any_json_line_gives_a_flow_or_a_malformed_record(obj: dict[str, object], wrapped: bool) -> None:
    """Replay and explain --flows read lines through parse_line: a Flow that passes the checks, or a reason."""
    line = json.dumps({"flow": obj} if wrapped else obj)
    result = flowfiles.parse_line(line, 1)
    assert isinstance(result, model.Flow | flowfiles.MalformedRecord)
    if isinstance(result, model.Flow):
        assert 0 < result.time_ns < 2**63
        for port in (result.source_port, result.destination_port):
            assert port is None or 1 <= port <= 65535


@PROPERTY
@given(st.text(max_size=200))
def test_any_text_line_gives_a_flow_or_a_malformed_record(line: str) -> None:
    """Not even JSON: a MalformedRecord saying so."""
    assert isinstance(flowfiles.parse_line(line, 1), model.Flow | flowfiles.MalformedRecord)


INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def goldmane_flows(draw: st.DrawFn) -> gm.Flow:
    key = gm.FlowKey(source_name=draw(TEXT), source_namespace=draw(TEXT), dest_port=draw(UINT32),
                     action=draw(st.integers(0, 3)), proto="tcp")
    return gm.Flow(start_time=draw(INT64), end_time=draw(INT64), Key=key)


@PROPERTY
@given(goldmane_flows())
def test_any_goldmane_flow_gives_a_flow_or_a_counted_reason(pb: gm.Flow) -> None:
    """Calico's normaliser plus the checks: a Flow, or MalformedFlow / InvalidFlow with a reason."""
    reason = ""
    try:
        flow: model.Flow | None = checking.check(calico.flow_from_proto(pb)).flow
    except (calico.MalformedFlow, checking.InvalidFlow) as exc:
        flow, reason = None, exc.reason
    assert (flow is None) == bool(reason)
    assert flow is None or 0 < flow.time_ns < 2**63
