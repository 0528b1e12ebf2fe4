"""The Hubble source against a real gRPC server on loopback: streaming, filters, reconnects."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from hubble_helpers import Collector, fast_settings

from drop_explainer.flows import model
from drop_explainer.hubble_pb import flow_pb2, observer_pb2, observer_pb2_grpc
from drop_explainer.testing.hubble_server import FakeHubbleServer, load_responses, policy_denied_syn

S = 1_000_000_000
T0 = 1_750_000_000 * S
Collect = Callable[..., Collector]


def denied(i: int, **kwargs: object) -> flow_pb2.Flow:
    return policy_denied_syn(T0 + i * S // 100, source_port=30000 + i, **kwargs)  # type: ignore[arg-type]


async def test_recorded_drops_stream_through_the_client_as_normalised_flows(shared_dir: Path, collect: Collect) -> None:
    """History replayed on connect reaches the consumer normalised; only drops and audits are asked for."""
    history = load_responses(shared_dir / "fixtures/hubble/cnpg_testdata1.jsonl")
    history += [observer_pb2.GetFlowsResponse(flow=denied(i)) for i in range(3)]
    async with FakeHubbleServer(history) as server:
        collector = collect(fast_settings(server.target, initial_number=100))
        await collector.until(lambda: len(collector.flows) == 5)
        request = server.requests[0]
    assert request.follow
    assert list(request.whitelist[0].verdict) == [flow_pb2.DROPPED, flow_pb2.AUDIT]
    assert [f.drop_reason for f in collector.flows] == ["UNSUPPORTED_L3_PROTOCOL"] * 2 + ["POLICY_DENIED"] * 3
    assert all(f.verdict is model.Verdict.DROPPED and f.origin == "hubble" for f in collector.flows)
    assert collector.flows[-1].source.pod == "xwing"


async def test_follow_delivers_flows_pushed_after_connecting(collect: Collect) -> None:
    """Without since or number the stream starts at the live end and then carries new flows."""
    async with FakeHubbleServer([denied(0)]) as server:
        collector = collect(fast_settings(server.target))
        await server.wait_for_followers()
        for i in range(1, 4):
            server.push(denied(i))
        await collector.until(lambda: len(collector.flows) == 3)
        assert collector.source.stats.connected
    assert [f.source_port for f in collector.flows] == [30001, 30002, 30003]


async def test_unix_socket_target_works(tmp_path: Path, collect: Collect) -> None:
    """The default kind of target, unix:///path, is served and read."""
    async with FakeHubbleServer(unix_path=tmp_path / "hubble.sock", tcp=False) as server:
        collector = collect(fast_settings(server.unix_target))
        await server.wait_for_followers()
        server.push(denied(1))
        await collector.until(lambda: len(collector.flows) == 1)


async def test_server_side_filters_keep_other_nodes_and_verdicts_out(collect: Collect) -> None:
    """The node-name and verdict whitelist are applied by the server."""
    forwarded = denied(2, node_name="node-a")
    forwarded.verdict = flow_pb2.FORWARDED
    history = [denied(0, node_name="node-a"), denied(1, node_name="node-b"), forwarded, denied(3, node_name="node-a")]
    async with FakeHubbleServer(history) as server:
        collector = collect(fast_settings(server.target, node_names=("node-a",), initial_number=10))
        await collector.until(lambda: len(collector.flows) == 2)
    assert [f.source_port for f in collector.flows] == [30000, 30003]
    assert {f.node for f in collector.flows} == {"node-a"}


async def test_restart_mid_stream_loses_and_duplicates_no_drop(collect: Collect) -> None:
    """After the server restarts the client resumes with since and drops what the resume replays."""
    async with FakeHubbleServer() as server:
        collector = collect(fast_settings(server.target))
        await server.wait_for_followers()
        for i in range(50):
            server.push(denied(i))
        await collector.until(lambda: len(collector.flows) == 50)
        await server.stop()
        await collector.until(lambda: not collector.source.stats.connected)
        for i in range(50, 100):
            server.push(denied(i))  # kept in the history while the server is down
        await server.start()
        await collector.until(lambda: len(collector.flows) >= 100)
        await server.wait_for_followers()
        server.push(denied(100))
        await collector.until(lambda: len(collector.flows) >= 101)
        resume = server.requests[-1]
    stats = collector.source.stats
    assert [f.source_port for f in collector.flows] == [30000 + i for i in range(101)]
    assert resume.HasField("since")
    assert resume.since.ToNanoseconds() < T0 + 49 * S // 100  # the overlap reached back before the last flow
    assert stats.duplicates > 0
    assert stats.reconnects >= 1


async def test_unreachable_server_is_retried_until_it_comes_up(collect: Collect) -> None:
    """With nothing listening the client backs off and retries, then connects when the server starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    collector = collect(fast_settings(f"127.0.0.1:{port}"))
    stats = collector.source.stats
    await collector.until(lambda: stats.reconnects >= 3)
    assert not stats.connected
    assert isinstance(stats.last_error, grpc.aio.AioRpcError)
    assert stats.last_error.code() == grpc.StatusCode.UNAVAILABLE
    async with FakeHubbleServer(port=port) as server:
        await collector.until(lambda: stats.connected)
        assert stats.last_error is None
        await server.wait_for_followers()
        server.push(denied(0))
        await collector.until(lambda: len(collector.flows) == 1)


async def test_policy_verdict_and_drop_events_count_one_packet_and_retransmits_one_attempt(collect: Collect) -> None:
    """Both events of one denied SYN give packets 1+0; a retransmit adds a packet, not an attempt."""
    async with FakeHubbleServer() as server:
        collector = collect(fast_settings(server.target))
        await server.wait_for_followers()
        server.push(policy_denied_syn(T0, event="policy-verdict"))
        server.push(policy_denied_syn(T0 + 4_000, event="drop"))
        server.push(policy_denied_syn(T0 + S, event="policy-verdict"))
        server.push(policy_denied_syn(T0 + S + 3_000, event="drop"))
        await collector.until(lambda: len(collector.flows) == 4)
    assert [(f.packets, f.connections) for f in collector.flows] == [(1, 1), (0, 0), (1, 0), (0, 0)]


async def test_server_status_answers_through_the_generated_stub() -> None:
    """ServerStatus, the cheap health check, works with the generated client stub."""
    async with FakeHubbleServer([denied(0), denied(1)]) as server, grpc.aio.insecure_channel(server.target) as channel:
        status = await observer_pb2_grpc.ObserverStub(channel).ServerStatus(observer_pb2.ServerStatusRequest())
    assert (status.num_flows, status.seen_flows, status.max_flows) == (2, 2, 4095)


async def test_fake_server_honours_number_first_since_and_until() -> None:
    """The test server selects history the way Hubble does."""
    async with FakeHubbleServer([denied(i) for i in range(10)]) as server, \
            grpc.aio.insecure_channel(server.target) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)

        async def ports(request: observer_pb2.GetFlowsRequest) -> list[int]:
            return [r.flow.l4.TCP.source_port - 30000 async for r in stub.GetFlows(request)]

        since = observer_pb2.GetFlowsRequest()
        since.since.FromNanoseconds(T0 + 7 * S // 100)
        until = observer_pb2.GetFlowsRequest(number=1)
        until.until.FromNanoseconds(T0 + 2 * S // 100)
        assert await ports(observer_pb2.GetFlowsRequest(number=3)) == [7, 8, 9]
        assert await ports(observer_pb2.GetFlowsRequest(number=2, first=True)) == [0, 1]
        assert await ports(since) == [7, 8, 9]
        assert await ports(until) == [0, 1, 2]
        rejected = stub.GetFlows(observer_pb2.GetFlowsRequest(number=2, first=True, follow=True))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await rejected.read()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_broken_stream_is_logged_once_as_a_warning_and_recovery_as_info(
    collect: Collect, caplog: pytest.LogCaptureFixture
) -> None:
    """The first failure after a working connection warns; quiet retries follow; reconnecting logs info."""
    caplog.set_level(logging.DEBUG, logger="drop_explainer.sources")
    async with FakeHubbleServer() as server:
        collector = collect(fast_settings(server.target))
        await server.wait_for_followers()
        server.push(denied(0))
        await collector.until(lambda: len(collector.flows) == 1)
        await server.stop(grace=None)
        await collector.until(lambda: collector.source.stats.reconnects >= 4)
        await server.start()
        await collector.until(lambda: collector.source.stats.connected)
        target = server.target
    # Only this test's source: a source another test left retrying must not count here.
    events = [(r.levelno, r.getMessage()) for r in caplog.records if getattr(r, "target", target) == target]
    warnings = [message for level, message in events if level >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0] in ("stream_failed", "stream_ended")  # GOAWAY or end of stream, by timing
    assert events.count((logging.INFO, "stream_connected")) == 2
    assert events.count((logging.DEBUG, "stream_failed")) >= 3
