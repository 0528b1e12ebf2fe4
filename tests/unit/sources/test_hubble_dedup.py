"""Replay de-duplication and the packet / connection-attempt classifier."""

from __future__ import annotations

import dataclasses

from drop_explainer.flows import model
from drop_explainer.sources import dedup

S = 1_000_000_000
MS = 1_000_000


def syn(time_ns: int, *, port: int = 40000, node: str = "n1", flags: frozenset[str] = frozenset({"SYN"}),
        direction: model.Direction = model.Direction.INGRESS) -> model.Flow:
    return model.Flow(
        time_ns=time_ns, verdict=model.Verdict.DROPPED, node=node, direction=direction,
        source=model.Endpoint(kind=model.EndpointKind.POD, ip="10.0.0.1", namespace="a", pod="client"),
        destination=model.Endpoint(kind=model.EndpointKind.POD, ip="10.0.0.2", namespace="b", pod="server"),
        source_port=port, destination_port=80, tcp_flags=flags,
        drop_kind=model.DropKind.POLICY_DENIED, drop_reason="POLICY_DENIED", origin="hubble",
    )


def test_replay_filter_flags_an_exact_repeat_only() -> None:
    """The same report again is a repeat; another time or port is not."""
    replay = dedup.ReplayFilter()
    assert not replay.is_repeat(syn(10 * S))
    assert replay.is_repeat(syn(10 * S))
    assert not replay.is_repeat(syn(10 * S + 1))
    assert not replay.is_repeat(syn(10 * S, port=40001))


def test_replay_filter_forgets_reports_older_than_its_window() -> None:
    """Memory is bounded by time: reports behind the window are forgotten."""
    replay = dedup.ReplayFilter(window_ns=5 * S)
    replay.is_repeat(syn(1 * S))
    replay.is_repeat(syn(100 * S))
    assert len(replay) == 1
    assert not replay.is_repeat(syn(1 * S))


def test_replay_filter_never_holds_more_than_max_entries() -> None:
    """Memory is bounded by count too, evicting the oldest first."""
    replay = dedup.ReplayFilter(max_entries=100)
    for i in range(1000):
        replay.is_repeat(syn(S + i))
    assert len(replay) == 100
    assert replay.is_repeat(syn(S + 999))


def test_policy_verdict_and_drop_event_of_one_packet_count_once() -> None:
    """The second report of the same packet (microseconds later, other direction label) adds nothing."""
    classifier = dedup.ReportClassifier()
    first = classifier.count(syn(10 * S))
    second = classifier.count(syn(10 * S + 7_000, direction=model.Direction.UNKNOWN))
    assert (first.packets, first.connections) == (1, 1)
    assert (second.packets, second.connections) == (0, 0)


def test_syn_retransmits_are_new_packets_of_the_same_attempt() -> None:
    """Retransmitted SYNs 1 s, 2 s, 4 s ... 64 s apart count as packets, not as new attempts."""
    classifier = dedup.ReportClassifier()
    times = [0, 1, 3, 7, 15, 31, 63, 127]
    counted = [classifier.count(syn(100 * S + t * S)) for t in times]
    assert [f.packets for f in counted] == [1] * len(times)
    assert [f.connections for f in counted] == [1] + [0] * (len(times) - 1)


def test_a_new_source_port_or_node_is_a_new_attempt() -> None:
    """Another ephemeral port (a new connect()) or another node is a distinct attempt."""
    classifier = dedup.ReportClassifier()
    counted = [classifier.count(f) for f in (syn(S), syn(S, port=40001), syn(S, node="n2"))]
    assert [(f.packets, f.connections) for f in counted] == [(1, 1), (1, 1), (1, 1)]


def test_the_same_five_tuple_after_the_attempt_window_is_a_new_attempt() -> None:
    """Port reuse long after the last retransmit starts a new attempt."""
    classifier = dedup.ReportClassifier(attempt_window_ns=70 * S)
    classifier.count(syn(S))
    assert classifier.count(syn(S + 71 * S)).connections == 1


def test_other_flags_on_the_same_packet_key_are_other_packets() -> None:
    """A dropped SYN-ACK right after a SYN is a different packet of the same connection."""
    classifier = dedup.ReportClassifier()
    classifier.count(syn(S))
    synack = classifier.count(syn(S + MS, flags=frozenset({"SYN", "ACK"})))
    assert (synack.packets, synack.connections) == (1, 0)


def test_count_returns_the_same_record_when_nothing_changes() -> None:
    """A first report is passed through untouched (no copy on the hot path)."""
    flow = syn(S)
    assert dedup.ReportClassifier().count(flow) is flow


def test_classifier_memory_is_bounded() -> None:
    """Old keys expire and the hard cap holds."""
    classifier = dedup.ReportClassifier(max_entries=50)
    for i in range(500):
        classifier.count(dataclasses.replace(syn(S + i * MS), source_port=1024 + i))
    assert len(classifier._attempts) <= 50
    assert len(classifier._packets) <= 50
