"""OTLP logs over gRPC, with the official ``opentelemetry-proto`` messages and our grpcio.

Why not the OpenTelemetry Python SDK's exporter: it brings the SDK and API
packages (its logs API is still experimental, under ``_logs``), sends from a
thread with a queue bounded in records, not bytes, and retries inside the
export call. We already own an asyncio loop, a byte-bounded queue
(channel.py) and grpcio; the messages are the only part we need, and
``opentelemetry-proto`` is that and nothing else (its one dependency is
protobuf), released with the SDK by the OpenTelemetry project.

Retry follows the OTLP specification's table of gRPC codes: UNAVAILABLE,
CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, DATA_LOSS and
RESOURCE_EXHAUSTED are retried; any other code drops the batch (counted).
A partial success counts the records the server says it rejected.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from drop_explainer import __version__
from drop_explainer.export.channel import PermanentError, RetryableError
from drop_explainer.export.record import SCOPE, Record, Value

_RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                               grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                               grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS,
                               grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    endpoint: str
    """host:port of the Collector's OTLP gRPC receiver (4317 by convention)."""
    tls: bool = False
    ca_file: str | None = None
    """CA of the Collector's certificate; empty with tls: the system's roots."""
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent with every export (a bearer token, a tenant id)."""
    timeout_s: float = 10.0
    compression: str = "none"


def _any(value: Value) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, tuple):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(
            values=[common_pb2.AnyValue(string_value=v) for v in value]))
    return common_pb2.AnyValue(string_value=value)


def key_values(attrs: Mapping[str, Value]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def request_of(batch: Sequence[Record], resource: Mapping[str, Value],
               observed_ns: int) -> logs_service_pb2.ExportLogsServiceRequest:
    records = [logs_pb2.LogRecord(time_unix_nano=r.time_ns, observed_time_unix_nano=observed_ns,
                                  severity_number=logs_pb2.SEVERITY_NUMBER_WARN,
                                  severity_text="WARN", body=common_pb2.AnyValue(string_value=r.body),
                                  attributes=key_values(r.attributes), event_name=r.event)
               for r in batch]
    scope = logs_pb2.ScopeLogs(scope=common_pb2.InstrumentationScope(name=SCOPE, version=__version__),
                               log_records=records)
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=resource_pb2.Resource(attributes=key_values(resource)), scope_logs=[scope])])


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class OtlpExporter:
    """Sends batches with LogsService/Export on one long-lived channel."""

    name = "otlp"

    def __init__(self, settings: OtlpSettings, resource: Mapping[str, Value]) -> None:
        self.settings = settings
        self.resource = dict(resource)
        # Reconnect soon after a Collector restart: grpc's default backoff reaches 120 s.
        options: list[tuple[str, int | str]] = [
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000)]
        if settings.server_name:
            options.append(("grpc.ssl_target_name_override", settings.server_name))
        compression = grpc.Compression.Gzip if settings.compression == "gzip" else grpc.Compression.NoCompression
        if settings.tls or settings.ca_file:
            creds = grpc.ssl_channel_credentials(_read(settings.ca_file), _read(settings.key_file),
                                                 _read(settings.cert_file))
            self._channel = grpc.aio.secure_channel(settings.endpoint, creds, options, compression)
        else:
            self._channel = grpc.aio.insecure_channel(settings.endpoint, options, compression)
        self._stub = logs_service_pb2_grpc.LogsServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items())

    async def send(self, batch: Sequence[Record]) -> int:
        request = request_of(batch, self.resource, time.time_ns())
        try:
            response = await self._stub.Export(request, timeout=self.settings.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            text = f"{exc.code().name}: {exc.details()}"
            if exc.code() in _RETRYABLE:
                raise RetryableError(text) from None
            raise PermanentError(text) from None
        return int(response.partial_success.rejected_log_records) if response.HasField("partial_success") else 0

    async def close(self) -> None:
        await self._channel.close()
