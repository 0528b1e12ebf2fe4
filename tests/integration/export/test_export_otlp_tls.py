"""OTLP export over TLS with headers, to a gRPC LogsService of our own on loopback.

The Collector in test_export_collector.py has no authenticator built in, so
the token and the refusal of a bad one are checked against a grpc.aio
LogsService server: real OTLP/gRPC over TLS, the server reading the
metadata our exporter sent. Per the OTLP specification, UNAUTHENTICATED is
not retryable: the batch is dropped and counted as rejected.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from drop_explainer.export.channel import Channel, ChannelSettings
from drop_explainer.export.otlp import OtlpExporter, OtlpSettings
from drop_explainer.export.record import new_record
from drop_explainer.export.sink import ExportPolicy, ExportSink
from tests.tls_support import make_cert, make_key, pem_key
from tests.unit.sinks.sink_fixtures import MakeDrop, build_explanation, drop_factory

TOKEN = "Bearer s3cret"


class LogsServer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.refused = 0

    async def Export(self, request: logs_service_pb2.ExportLogsServiceRequest,  # the RPC's name
                     context: grpc.aio.ServicerContext[object, object]) -> logs_service_pb2.ExportLogsServiceResponse:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") != TOKEN:
            self.refused += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        self.requests.append(request)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture(scope="module")
def make_drop() -> MakeDrop:
    return drop_factory(build_explanation())


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[LogsServer, str, Path]]:
    ca_key, key = make_key(), make_key()
    ca = make_cert("Test OTLP CA", ca_key, None, ca=True)
    cert = make_cert("collector", key, ("Test OTLP CA", ca_key), dns=("collector.test",))
    (tmp_path / "ca.pem").write_bytes(ca)
    servicer = LogsServer()
    server = grpc.aio.server()
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(pem_key(key), cert)]))
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}", tmp_path / "ca.pem"
    finally:
        await server.stop(None)


def _deliver(settings: OtlpSettings) -> tuple[Channel, ExportSink]:
    exporter = OtlpExporter(settings, {"service.name": "drop-explainer"})
    channel = Channel(exporter, ChannelSettings(linger_s=0.01, backoff_initial_s=0.05))
    sink = ExportSink([channel], ExportPolicy(updates=False))
    return channel, sink


async def _run_until(sink: ExportSink, done: Callable[[], bool], timeout: float = 20.0) -> None:
    task = asyncio.create_task(sink.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_records_go_over_tls_with_the_token_header(tls_server: tuple[LogsServer, str, Path],
                                                         make_drop: MakeDrop) -> None:
    servicer, target, ca = tls_server
    settings = OtlpSettings(target, ca_file=str(ca), server_name="collector.test",
                            headers={"Authorization": TOKEN})
    channel, sink = _deliver(settings)
    for port in (8080, 8081, 8082):
        sink.handle(make_drop(port=port, new=True))
    await _run_until(sink, lambda: channel.stats.sent == 3)
    records = [r for req in servicer.requests for rl in req.resource_logs for sl in rl.scope_logs
               for r in sl.log_records]
    ports = sorted(next(a.value.int_value for a in r.attributes if a.key == "server.port") for r in records)
    assert ports == [8080, 8081, 8082]
    assert all(r.event_name == "drop_explainer.drop.new" for r in records)
    assert servicer.requests[0].resource_logs[0].resource.attributes[0].value.string_value == "drop-explainer"


async def test_a_bad_token_is_refused_for_good_and_counted(tls_server: tuple[LogsServer, str, Path],
                                                           make_drop: MakeDrop) -> None:
    servicer, target, ca = tls_server
    settings = OtlpSettings(target, ca_file=str(ca), server_name="collector.test",
                            headers={"authorization": "Bearer wrong"})
    channel, sink = _deliver(settings)
    sink.handle(make_drop(new=True))
    await _run_until(sink, lambda: channel.stats.rejected == 1)
    assert channel.stats.sent == 0
    assert channel.stats.retries == 0
    assert channel.stats.queued == 0
    assert servicer.refused == 1


def test_records_build_without_a_cluster_state(make_drop: MakeDrop) -> None:
    rec = new_record(make_drop(new=True), None, 1)
    assert rec.attributes["k8s.pod.name"] == "pod-b"
