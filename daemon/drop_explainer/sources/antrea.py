"""Antrea's flows as our Flow records: the Flow Aggregator's FlowStreamService.

Facts (calico.md section 6, Antrea): since Antrea v2.7.0 the Flow
Aggregator serves ``/antrea_io.antrea.pkg.apis.flow.v1alpha1.FlowStreamService/GetFlows``
when Helm ``flowStreamService.enable`` is set (default false), on port
**14740** with server-side TLS and no client authentication. The request
is ``GetFlowsRequest{filters, since, max_count, follow}``; the stream
answers ``GetFlowsResponse{repeated Flow flows; uint64 dropped_count}``,
history (the aggregator's ring buffer) first, then live records when
``follow`` is set. ``dropped_count`` is cumulative: flows the server dropped
because this consumer fell behind.

This module is only the wire half (``AntreaAdapter``): build the request
from a resume point, open the call, decode, normalise (normalise/antrea.py)
and report into the shared loop (sources/resuming.py), which does backoff,
resume, replay de-duplication, the bounded queue and the counters.

- Resume: ``since`` is the loop's resume point (the newest flow time seen,
  or the one committed to the store before a restart) as a Timestamp; the
  server then sends every record whose end is at or after it. With none,
  the first call asks for the ring buffer's history only if
  ``initial_history`` is set, else for records from now on.
- Replays: a resume's overlap repeats records; ``RecordDedup`` remembers the
  records of the last ``window_s`` and drops repeats.
- Only denied records are kept (a Drop or Reject rule action); the rest are
  counted as filtered: Antrea has no server-side filter on the action.
- ``dropped_count`` growing is reported to the loop as lost events.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import grpc
import grpc.aio
from google.protobuf import message as pb_message

from drop_explainer.antrea_pb import flow_pb2 as af
from drop_explainer.flows import model
from drop_explainer.normalise import antrea as normalise
from drop_explainer.normalise.calico import MalformedFlow
from drop_explainer.sources import channels, errors, resuming

log = logging.getLogger(__name__)

GET_FLOWS: Final = "/antrea_io.antrea.pkg.apis.flow.v1alpha1.FlowStreamService/GetFlows"
DEFAULT_TARGET: Final = "flow-aggregator.flow-aggregator.svc:14740"
_MIB: Final = 1024 * 1024
_NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class AntreaSettings:
    """How to reach the Flow Aggregator's flow stream and what to keep."""

    target: str = DEFAULT_TARGET
    tls: channels.TlsSettings | None = None
    """Server-side TLS (the aggregator's CA); None = plaintext, which only a test server accepts."""
    namespaces: tuple[str, ...] = ()
    """Server-side filter: flows with an end in these namespaces; empty = all."""
    initial_history: bool = False
    """On the first connect without a resume point, also take the ring buffer's history."""
    dedup_window_s: int = 600
    max_receive_bytes: int = 16 * _MIB
    keepalive_s: float = 360.0
    resume: resuming.ResumeSettings = field(default_factory=resuming.ResumeSettings)

    def validate(self) -> None:
        if not self.target:
            raise errors.ConfigError("target: must not be empty")
        if self.dedup_window_s <= 0:
            raise errors.ConfigError("dedup_window_s: must be positive")
        if self.tls is not None:
            channels.check_tls(self.tls)
        self.resume.validate()


class RecordDedup:
    """Records seen in the last ``window_s`` of flow time (bounded in entries too).

    A replay repeats a record exactly; a later export of the same connection
    (Antrea's active timeout) has a later end, so (end, 5-tuple, direction)
    tells them apart without the record id.
    """

    def __init__(self, *, window_s: int, max_ids: int = 200_000) -> None:
        self.window_ns = window_s * _NS
        self.max_ids = max_ids
        self._seen: OrderedDict[tuple[object, ...], int] = OrderedDict()
        self._newest = 0

    def __len__(self) -> int:
        return len(self._seen)

    def is_repeat(self, flow: model.Flow) -> bool:
        s, d = flow.source, flow.destination
        mark = (flow.time_ns, s.ip, s.pod, flow.source_port, d.ip, d.pod, flow.destination_port, flow.protocol,
                flow.direction)
        if mark in self._seen:
            return True
        self._seen[mark] = flow.time_ns
        self._newest = max(self._newest, flow.time_ns)
        horizon = self._newest - self.window_ns
        seen = self._seen
        while seen and (len(seen) > self.max_ids or next(iter(seen.values())) < horizon):
            seen.popitem(last=False)
        return False


class AntreaAdapter:
    """The wire half of the Antrea source (sources/resuming.py StreamAdapter)."""

    origin = "antrea"

    def __init__(self, settings: AntreaSettings) -> None:
        settings.validate()
        self.settings = settings
        self.target = settings.target
        self.requests: list[af.GetFlowsRequest] = []
        """The last few requests sent (for logs and tests)."""
        self._server_dropped = 0
        self._filtered = 0

    @property
    def filtered(self) -> int:
        """Records that were not denials (kept out of the pipeline)."""
        return self._filtered

    def deduplicator(self) -> RecordDedup:
        return RecordDedup(window_s=self.settings.dedup_window_s)

    def request(self, resume: resuming.Resume) -> af.GetFlowsRequest:
        req = af.GetFlowsRequest(follow=True)
        if self.settings.namespaces:
            req.filters.add(namespaces=list(self.settings.namespaces))
        if resume.since_ns is not None:
            req.since.FromNanoseconds(max(0, resume.since_ns))
        elif not (resume.first and self.settings.initial_history):
            req.since.FromNanoseconds(time.time_ns())
        return req

    async def read_call(self, resume: resuming.Resume, intake: resuming.Intake) -> None:
        request = self.request(resume)
        self.requests = [*self.requests[-9:], request]
        self._server_dropped = 0
        channel = channels.grpc_channel(self.settings.target, self.settings.tls,
                                        max_receive_bytes=self.settings.max_receive_bytes,
                                        keepalive_s=self.settings.keepalive_s)
        try:
            method: grpc.aio.UnaryStreamMultiCallable[af.GetFlowsRequest, bytes] = channel.unary_stream(GET_FLOWS,
                request_serializer=af.GetFlowsRequest.SerializeToString, response_deserializer=None)
            call = method(request)
            await call.initial_metadata()
            intake.connected()
            while True:
                raw = await call.read()
                if not isinstance(raw, bytes):  # EOF: the server ended the stream (follow=false, or shutdown)
                    return
                self.take(raw, intake)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            unavailable = exc.code() == grpc.StatusCode.UNAVAILABLE
            tls = channels.tls_failure(self.settings.tls, details, unavailable=unavailable)
            raise resuming.StreamFailure(str(tls) if tls else details or str(exc.code()), code=exc.code().name,
                                         tls=tls is not None, hint=tls.hint if tls else None) from None
        finally:
            await channel.close()

    def take(self, raw: bytes, intake: resuming.Intake) -> None:
        """One GetFlowsResponse: its denied records into the loop, the rest counted."""
        intake.received(1)
        try:
            response = af.GetFlowsResponse.FromString(raw)
        except pb_message.DecodeError:
            intake.skip("decode")
            return
        if response.dropped_count > self._server_dropped:
            intake.lost(response.dropped_count - self._server_dropped)
            self._server_dropped = response.dropped_count
        flows: list[model.Flow] = []
        for record in response.flows:
            try:
                flow = normalise.flow_from_proto(record)
            except MalformedFlow as exc:
                intake.skip(exc.reason)
                continue
            if flow.verdict is not model.Verdict.DROPPED:
                self._filtered += 1
                continue
            flows.append(flow)
        intake.flows(flows)


def make_source(settings: AntreaSettings, *, checkpoint: resuming.Checkpoint | None = None) -> resuming.ResumableStream:
    """The Antrea source: our adapter in the shared resumable loop."""
    return resuming.ResumableStream(AntreaAdapter(settings), settings.resume, checkpoint=checkpoint)
