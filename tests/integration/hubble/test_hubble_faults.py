"""The Hubble source under faults: TLS trouble, bad and huge messages, a slow consumer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from hubble_helpers import SERVER_NAME, Collector, TlsMaterial, fast_settings
from prometheus_client.parser import text_string_to_metric_families

from drop_explainer.cluster.loading import load_state
from drop_explainer.hubble_pb import flow_pb2, observer_pb2, relay_pb2
from drop_explainer.pipeline import StaticState
from drop_explainer.sources import channels, errors, hubble
from drop_explainer.testing.hubble_server import FakeHubbleServer, ServerTls, oversized_flow, policy_denied_syn
from tests.daemon_support import eventually, http_get, run_settings, running
from tests.tls_support import CertificateRequiredServer

S = 1_000_000_000
T0 = 1_750_000_000 * S
MIB = 1024 * 1024
STARWARS = Path(__file__).resolve().parents[2] / "fixtures" / "starwars" / "state.yaml"
Collect = Callable[..., Collector]


def denied(i: int) -> flow_pb2.Flow:
    return policy_denied_syn(T0 + i * S // 100, source_port=30000 + i)


def server_tls(material: TlsMaterial, *, mutual: bool) -> ServerTls:
    return ServerTls(material.server.cert, material.server.key, material.ca.cert if mutual else None)


async def test_mtls_with_the_right_ca_client_certificate_and_server_name_streams(
    tls_material: TlsMaterial, collect: Collect
) -> None:
    """Hubble's :4244 setup: CA bundle, client certificate and the node's TLS server name."""
    tls = hubble.TlsSettings(
        ca_file=tls_material.file("ca.crt", tls_material.ca.cert),
        cert_file=tls_material.file("client.crt", tls_material.client.cert),
        key_file=tls_material.file("client.key", tls_material.client.key),
        server_name=SERVER_NAME,
    )
    async with FakeHubbleServer(tls=server_tls(tls_material, mutual=True)) as server:
        collector = collect(fast_settings(server.target, tls=tls))
        await server.wait_for_followers()
        server.push(denied(0))
        await collector.until(lambda: len(collector.flows) == 1)
        assert collector.source.stats.connected


async def test_wrong_ca_reports_that_tls_verification_failed(
    tls_material: TlsMaterial, collect: Collect, caplog: pytest.LogCaptureFixture
) -> None:
    """A CA that did not sign the server certificate gives a clear, logged TLS verification error."""
    tls = hubble.TlsSettings(ca_file=tls_material.file("other-ca.crt", tls_material.other_ca.cert),
                             server_name=SERVER_NAME)
    caplog.set_level(logging.ERROR, logger="drop_explainer.sources.hubble")
    async with FakeHubbleServer(tls=server_tls(tls_material, mutual=False)) as server:
        collector = collect(fast_settings(server.target, tls=tls))
        stats = collector.source.stats
        await collector.until(lambda: stats.tls_failures >= 2)
        assert server.requests == []
    assert isinstance(stats.last_error, errors.TlsVerificationFailed)
    assert "TLS verification failed" in str(stats.last_error)
    assert not stats.connected
    # Our records only: grpcio's poller may log about an earlier test's closed loop (grpc/grpc#25364).
    assert [r.getMessage() for r in caplog.records if r.name.startswith("drop_explainer")] == ["stream_tls_failed"]


async def test_missing_client_certificate_for_mtls_is_a_tls_failure(
    tls_material: TlsMaterial, collect: Collect
) -> None:
    """A server that requires a client certificate rejects us; we say so and keep retrying."""
    tls = hubble.TlsSettings(ca_file=tls_material.file("ca.crt", tls_material.ca.cert), server_name=SERVER_NAME)
    async with FakeHubbleServer(tls=server_tls(tls_material, mutual=True)) as server:
        collector = collect(fast_settings(server.target, tls=tls))
        stats = collector.source.stats
        await collector.until(lambda: stats.tls_failures >= 2)
    assert collector.flows == []
    assert isinstance(stats.last_error, errors.TlsVerificationFailed)
    # A grpcio server closes the socket without a word, so the hint can only be "probably".
    assert channels.NO_CLIENT_CERTIFICATE in str(stats.last_error)


async def test_a_go_servers_certificate_required_refusal_is_named_a_tls_failure_with_the_hint(
    tls_material: TlsMaterial, collect: Collect, caplog: pytest.LogCaptureFixture
) -> None:
    """Hubble (Go, TLS 1.3) refuses a client without a certificate by an alert after the handshake.

    grpcio reads that alert as "Unwrap failed (TSI_DATA_CORRUPTED)"; it is a
    TLS failure, counted, logged at ERROR and named with the hint.
    """
    tls = hubble.TlsSettings(ca_file=tls_material.file("ca.crt", tls_material.ca.cert), server_name=SERVER_NAME)
    settings = fast_settings("127.0.0.1:1", tls=tls)
    caplog.set_level(logging.ERROR, logger="drop_explainer.sources.resuming")
    async with CertificateRequiredServer(tls_material.server, tls_material.ca.cert) as server:
        collector = collect(dataclasses.replace(settings, target=server.target))
        stats = collector.source.stats
        await collector.until(lambda: stats.tls_failures >= 2)
        assert server.refusals >= 2
    error = stats.last_error
    assert collector.flows == []
    assert not stats.connected
    assert isinstance(error, errors.TlsVerificationFailed)
    assert error.hint is not None
    assert error.hint.startswith(channels.NO_CLIENT_CERTIFICATE)
    assert channels.NO_CLIENT_CERTIFICATE in str(error)
    # What each transport itself saw: grpcio the undecryptable record, h2 (OpenSSL) the alert by name.
    said = {"grpcio": "TSI_DATA_CORRUPTED", "h2": "CERTIFICATE_REQUIRED"}[settings.transport]
    assert said in error.details
    tls_errors = [r for r in caplog.records if r.getMessage() == "stream_tls_failed"]
    assert tls_errors
    assert tls_errors[0].levelno == logging.ERROR
    assert tls_errors[0].hint == error.hint  # type: ignore[attr-defined]


async def test_a_lasting_tls_failure_is_logged_at_error_again_every_n_failures(
    tls_material: TlsMaterial, collect: Collect, caplog: pytest.LogCaptureFixture
) -> None:
    """Not silent after the first line: failures 1, 4, 7... are ERROR with tls_error_every=3, the rest debug."""
    tls = hubble.TlsSettings(ca_file=tls_material.file("ca.crt", tls_material.ca.cert), server_name=SERVER_NAME)
    caplog.set_level(logging.DEBUG, logger="drop_explainer.sources.resuming")
    async with CertificateRequiredServer(tls_material.server, tls_material.ca.cert) as server:
        collector = collect(fast_settings(server.target, tls=tls, tls_error_every=3))
        stats = collector.source.stats
        await collector.until(lambda: stats.tls_failures >= 7, timeout=10.0)
        await collector.close()
    records = [r for r in caplog.records if r.getMessage() == "stream_tls_failed"]
    assert len(records) == stats.tls_failures
    loud = [r.failures for r in records if r.levelno == logging.ERROR]  # type: ignore[attr-defined]
    assert loud == list(range(1, stats.tls_failures + 1, 3))
    assert all(r.levelno == logging.DEBUG for r in records if r.failures not in loud)  # type: ignore[attr-defined]


async def test_malformed_and_non_flow_responses_are_counted_and_the_stream_goes_on(collect: Collect) -> None:
    """Garbage bytes, a flow without time, relay status and lost events are skipped and counted."""
    timeless = denied(1)
    timeless.ClearField("time")
    async with FakeHubbleServer() as server:
        collector = collect(fast_settings(server.target))
        await server.wait_for_followers()
        server.push_raw(b"\xff\xff\xff\xff not protobuf")
        server.push_raw(observer_pb2.GetFlowsResponse(flow=timeless).SerializeToString())
        server.push_raw(observer_pb2.GetFlowsResponse(
            node_status=relay_pb2.NodeStatusEvent(state_change=relay_pb2.NODE_UNAVAILABLE)).SerializeToString())
        server.push_raw(observer_pb2.GetFlowsResponse(
            lost_events=flow_pb2.LostEvent(source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=7)).SerializeToString())
        server.push(denied(2))
        await collector.until(lambda: len(collector.flows) == 1)
    stats = collector.source.stats
    assert (stats.received, stats.malformed, stats.non_flow, stats.lost_events) == (5, 2, 2, 7)
    assert stats.skipped_by_reason == {"decode": 1, "no-time": 1}  # what the peer got wrong
    assert stats.non_flow_by_kind == {"node_status": 1, "lost_events": 1}  # valid, not malformed
    assert stats.reconnects == 0
    assert collector.flows[0].source_port == 30002


async def test_message_over_4_mib_is_received_counted_as_oversized_and_skipped(collect: Collect) -> None:
    """A 5 MiB flow (over gRPC's default 4 MiB limit) is read, not decoded, and the stream goes on."""
    async with FakeHubbleServer() as server:
        collector = collect(fast_settings(server.target))
        await server.wait_for_followers()
        server.push(oversized_flow(denied(0), 5 * MIB))
        server.push(denied(1))
        await collector.until(lambda: len(collector.flows) == 1)
    stats = collector.source.stats
    assert (stats.oversized, stats.reconnects) == (1, 0)
    assert collector.flows[0].source_port == 30001


async def test_message_over_the_receive_limit_breaks_the_call_and_resumes_at_the_live_end(collect: Collect) -> None:
    """Beyond max_receive_bytes gRPC fails the call; the client reconnects without replaying it."""
    async with FakeHubbleServer() as server:
        collector = collect(fast_settings(server.target, max_receive_bytes=1 * MIB, max_flow_bytes=MIB // 2))
        await server.wait_for_followers()
        server.push(denied(0))
        await collector.until(lambda: len(collector.flows) == 1)
        server.push(oversized_flow(denied(1), 2 * MIB))
        await collector.until(lambda: collector.source.stats.reconnects == 1)
        await server.wait_for_followers()
        server.push(denied(2))
        await collector.until(lambda: len(collector.flows) == 2)
        resumed = server.requests[-1]
    assert collector.source.stats.oversized == 1
    assert not resumed.HasField("since")
    assert [f.source_port for f in collector.flows] == [30000, 30002]


async def test_slow_consumer_keeps_the_queue_bounded_and_counts_the_overflow() -> None:
    """When the consumer stops reading, the newest queue_size flows are kept and the rest counted."""
    async with FakeHubbleServer() as server:
        source = hubble.HubbleSource(fast_settings(server.target, queue_size=10))
        stream = source.stream_flows()
        try:
            first = asyncio.ensure_future(anext(stream))
            await server.wait_for_followers()
            server.push(denied(0))
            assert (await first).source_port == 30000
            for i in range(1, 201):
                server.push(denied(i))  # nobody reads meanwhile
            async with asyncio.timeout(4):
                while source.stats.flows < 201:
                    await asyncio.sleep(0.005)
            rest = [(await anext(stream)).source_port for _ in range(10)]
        finally:
            await stream.aclose()
    assert source.stats.overflow == 190
    assert rest == [30000 + i for i in range(191, 201)]


async def test_the_daemon_counts_tls_failures_in_its_metrics_and_keeps_serving(
    tls_material: TlsMaterial, tmp_path: Path
) -> None:
    """The whole daemon over grpcio against a server refusing it: /metrics counts each TLS failure, /healthz answers."""
    ca = tls_material.file("ca.crt", tls_material.ca.cert)
    async with CertificateRequiredServer(tls_material.server, tls_material.ca.cert) as server:
        settings = run_settings("--hubble-target", server.target, "--hubble-transport", "grpcio",
                                "--hubble-tls-ca", ca, "--hubble-tls-server-name", SERVER_NAME,
                                "--store-path", str(tmp_path / "d.db"))
        async with running(settings, StaticState(load_state(STARWARS))) as daemon:
            port = daemon.port or 0

            async def counted() -> float:
                _, text = await http_get(port, "/metrics")
                samples = [s for f in text_string_to_metric_families(text) for s in f.samples
                           if s.name == "drop_explainer_source_tls_failures_total" and s.labels == {"source": "hubble"}]
                return samples[0].value if samples else 0.0

            assert await eventually(counted) >= 1
            status, _ = await http_get(port, "/healthz")
            assert status in (200, 503)  # answering: whether a source down is unhealthy is /healthz's call
        assert server.refusals >= 1
