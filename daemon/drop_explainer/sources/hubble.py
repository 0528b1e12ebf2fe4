"""Hubble's live flow stream (``/observer.Observer/GetFlows``) as our Flow records.

The source owns the transport only: connect (local UNIX socket, or a TCP
``host:port`` such as hubble-relay, in plaintext, TLS or mTLS), ask for the
drops with a server-side whitelist, and keep the stream alive.

- Reconnects use capped exponential backoff with jitter, reset after a
  connection that worked. A reconnect resumes with ``since`` = the newest
  flow time received (less ``resume_overlap_ns``, because relay's order
  across nodes is only roughly sorted); the exact repeats that the resume
  replays are removed by ``dedup.ReplayFilter``, so none reaches the
  consumer twice.
- A bounded queue sits between the gRPC reader and the consumer. When the
  consumer falls behind, the *oldest* queued flow is discarded and counted
  in ``stats.overflow`` (recent drops are the ones worth explaining, and
  the reader never blocks the stream).
- A response that is not a flow (relay ``node_status``, ``lost_events``) is
  counted and skipped; one that cannot be decoded or normalised is counted
  in ``stats.malformed`` and skipped; one larger than ``max_flow_bytes`` is
  counted in ``stats.oversized`` and skipped. None of them ends the stream.
- The stream hands us raw bytes (no deserializer), so a bad message is
  our decision rather than a gRPC error that would kill the call.
- Two transports speak the same call: ``grpc_h2`` (default), which reads
  many messages per socket read (the source then does ~60k flows/s on one
  core), and grpcio, whose per-message cost holds it near 25k flows/s.
  Both behave the same here; h2 failures are turned into
  ``grpc.aio.AioRpcError`` so the retry logic sees one kind of error.
  Responses are decoded and normalised a batch at a time, then queued.
- Before a flow is yielded, ``dedup.ReportClassifier`` sets packets and
  connections to 0 for the second report of one packet and for SYN
  retransmits (see ``dedup``), so metrics can count both.

Nothing here raises for stream trouble: failures are logged (warning on
the first, info on recovery) and kept in ``stats``; configuration errors
raise ``errors.ConfigError`` from the constructor.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Final, Literal

import grpc
import grpc.aio
from google.protobuf import message as pb_message

from drop_explainer.flows import model
from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.normalise import hubble as normalise
from drop_explainer.sources import channels, dedup, errors, grpc_h2, queueing

log = logging.getLogger(__name__)

GET_FLOWS: Final = "/observer.Observer/GetFlows"
DEFAULT_TARGET: Final = "unix:///var/run/cilium/hubble.sock"
_MIB: Final = 1024 * 1024
_NS: Final = 1_000_000_000
# Markers grpc puts in the status details when the TLS handshake fails.
_TLS_MARKERS: Final = ("ssl", "tls", "handshake", "certificate", "x509")
_VERDICT_NAMES: Final = frozenset(flow_pb2.Verdict.keys())
_GRPC_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}
Transport = Literal["h2", "grpcio"]
_TRANSPORTS: Final = ("h2", "grpcio")


TlsSettings = channels.TlsSettings
"""Re-exported: the TLS settings of this source are those of every gRPC source."""


@dataclass(frozen=True, slots=True)
class HubbleSettings:
    """How to reach Hubble and what to ask it for."""

    target: str = DEFAULT_TARGET
    """``unix:///path`` or ``host:port`` (any gRPC target string)."""
    tls: TlsSettings | None = None
    """None = plaintext (right for the local UNIX socket)."""
    follow: bool = True
    verdicts: tuple[str, ...] = ("DROPPED", "AUDIT")
    """Server-side whitelist of flow verdicts (enum names); empty = all."""
    node_names: tuple[str, ...] = ()
    """Server-side node-name filter (useful through relay); empty = all nodes."""
    initial_number: int = 0
    """On the first connect, also replay this many recent matching flows."""
    queue_size: int = 10_000
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    resume_overlap_ns: int = 1 * _NS
    dedup_window_ns: int = 3 * _NS
    """How far back replayed flows are recognised; must exceed resume_overlap_ns plus relay reordering."""
    max_receive_bytes: int = 64 * _MIB
    """gRPC's hard limit; a larger message fails the call (then we resume at the live end)."""
    max_flow_bytes: int = 4 * _MIB
    """Messages larger than this are counted as oversized and skipped, not decoded."""
    keepalive_s: float = 360.0
    """HTTP/2 ping interval; above Go gRPC's default 5 min enforcement so servers do not GOAWAY us."""
    classify_reports: bool = True
    """Set packets/connections with dedup.ReportClassifier."""
    transport: Transport = "h2"
    """``h2``: our own HTTP/2 client (grpc_h2), fast; ``grpcio``: the grpc library, slower per message."""

    def validate(self) -> None:
        """Raise errors.ConfigError for settings that cannot work."""
        if not self.target:
            raise errors.ConfigError("target: must not be empty")
        for verdict in self.verdicts:
            if verdict not in _VERDICT_NAMES:
                raise errors.ConfigError(f"verdicts: unknown verdict {verdict!r}")
        if self.queue_size < 1:
            raise errors.ConfigError("queue_size: must be at least 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise errors.ConfigError("backoff: need 0 < backoff_initial_s <= backoff_max_s")
        if self.resume_overlap_ns >= self.dedup_window_ns:
            raise errors.ConfigError("resume_overlap_ns: must be shorter than dedup_window_ns")
        if self.transport not in _TRANSPORTS:
            raise errors.ConfigError(f"transport: {self.transport!r} is not one of {', '.join(_TRANSPORTS)}")
        if self.transport == "h2":
            try:
                grpc_h2.parse_target(self.target)
            except ValueError as exc:
                raise errors.ConfigError(f"target: {exc}") from None
        if self.tls is not None:
            channels.check_tls(self.tls)


@dataclass(slots=True)
class HubbleStats:
    """Live counters; read them at any time (the metrics sink does)."""

    received: int = 0
    """Responses read from the stream, of any kind."""
    flows: int = 0
    """Flows normalised and queued."""
    delivered: int = 0
    """Flows handed to the consumer."""
    malformed: int = 0
    """Responses that did not decode, or flows that failed normalisation."""
    oversized: int = 0
    """Messages over max_flow_bytes (skipped) or over max_receive_bytes (call failed)."""
    non_flow: int = 0
    """node_status / lost_events / empty responses, skipped."""
    lost_events: int = 0
    """Events the server reported as lost on its side (sum of num_events_lost)."""
    overflow: int = 0
    """Flows discarded because the consumer was behind (drop-oldest)."""
    duplicates: int = 0
    """Replayed flows removed after a resume."""
    reconnects: int = 0
    tls_failures: int = 0
    connected: bool = False
    last_flow_time: int | None = None
    """Newest flow time received, in ns since the epoch."""
    last_error: Exception | None = None
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    """malformed + non_flow broken down by reason (not-a-flow, no-time, decode...)."""

    def skip(self, reason: str) -> None:
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1


class HubbleSource:
    """Streams Flow records from Hubble; one instance per stream."""

    def __init__(self, settings: HubbleSettings, *, rng: random.Random | None = None) -> None:
        settings.validate()
        self.settings = settings
        self.stats = HubbleStats()
        self._rng = rng or random.Random()
        self._replay = dedup.ReplayFilter(window_ns=settings.dedup_window_ns)
        self._reports = dedup.ReportClassifier()
        self._resume_at_live_end = False
        self._connected_at: float | None = None

    async def stream_flows(self) -> AsyncGenerator[model.Flow, None]:
        """Yield flows until cancelled (follow) or until the server has sent all (no follow)."""
        queue = queueing.FlowQueue(self.settings.queue_size, self.stats)
        reader = asyncio.create_task(self._read_forever(queue), name="hubble-reader")
        reader.add_done_callback(lambda task: queue.finish(None if task.cancelled() else task.exception()))
        items = queue.items
        try:
            while True:
                if not items:
                    await queue.wait()
                    if not items and queue.finished:
                        if queue.closed_by is not None:
                            raise queue.closed_by
                        return
                    continue
                flow = items.popleft()
                if self._replay.is_repeat(flow):
                    self.stats.duplicates += 1
                    continue
                if self.settings.classify_reports:
                    flow = self._reports.count(flow)
                self.stats.delivered += 1
                yield flow
        finally:
            reader.cancel()
            await asyncio.wait([reader])

    # --- the reader ---------------------------------------------------------

    async def _read_forever(self, queue: queueing.FlowQueue) -> None:
        delay = self.settings.backoff_initial_s
        failures = 0
        while True:
            newest = self.stats.last_flow_time
            self._connected_at = None
            failure: grpc.aio.AioRpcError | None = None
            try:
                await self._read_stream(queue)
                if not self.settings.follow:
                    return
            except grpc.aio.AioRpcError as exc:
                failure = exc
            finally:
                self.stats.connected = False
            if self._connection_worked(newest):
                delay, failures = self.settings.backoff_initial_s, 0
            # Warn on the first failure (or end) after a working connection, then quietly retry.
            if failure is not None:
                self._note_failure(failure, first=failures == 0)
            else:
                log.log(logging.WARNING if failures == 0 else logging.DEBUG, "hubble_stream_ended",
                        extra={"target": self.settings.target})
            failures += 1
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.0))
            delay = min(delay * 2, self.settings.backoff_max_s)
            self.stats.reconnects += 1

    def _connection_worked(self, newest_before: int | None) -> bool:
        """Reset the backoff only after a connection that got new flows or stayed up a while.

        Flows a resume replays do not count: a server that accepts, replays
        and dies at once has not recovered, and keeps backing off (quietly).
        """
        if self._connected_at is None:
            return False
        lasted = asyncio.get_running_loop().time() - self._connected_at
        return self.stats.last_flow_time != newest_before or lasted >= self.settings.backoff_max_s

    async def _read_stream(self, queue: queueing.FlowQueue) -> None:
        """One call, read to its end; raises AioRpcError on failure (whichever transport)."""
        if self.settings.transport == "grpcio":
            await self._read_stream_grpcio(queue)
            return
        try:
            await self._read_stream_h2(queue)
        except grpc_h2.RpcError as exc:
            raise grpc.aio.AioRpcError(_GRPC_CODES[exc.code.value], grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       exc.details) from exc

    async def _read_stream_h2(self, queue: queueing.FlowQueue) -> None:
        settings = self.settings
        tls = settings.tls
        call = grpc_h2.StreamingCall(
            settings.target, GET_FLOWS, self._request().SerializeToString(),
            tls=self._tls_context(tls) if tls is not None else None,
            server_name=tls.server_name if tls is not None else None,
            max_receive_bytes=settings.max_receive_bytes,
            keepalive_s=settings.keepalive_s,
        )
        async with call:
            self._note_connected()
            async for batch in call.messages():
                self._accept(batch, queue)

    async def _read_stream_grpcio(self, queue: queueing.FlowQueue) -> None:
        async with self._channel() as channel:
            method: grpc.aio.UnaryStreamMultiCallable[observer_pb2.GetFlowsRequest, bytes] = channel.unary_stream(
                GET_FLOWS, request_serializer=_serialize, response_deserializer=None)
            call = method(self._request())
            # Servers send headers only with the first message, so a quiet
            # but healthy stream is recognised by the transport state instead.
            watcher = asyncio.create_task(self._mark_connected(channel))
            try:
                await self._read_responses(call, queue)
            finally:
                watcher.cancel()
                await asyncio.wait([watcher])

    async def _mark_connected(self, channel: grpc.aio.Channel) -> None:
        await channel.channel_ready()
        self._note_connected()

    def _note_connected(self) -> None:
        self.stats.connected = True
        self.stats.last_error = None
        self._connected_at = asyncio.get_running_loop().time()
        log.info("hubble_connected", extra={"target": self.settings.target, "since_ns": self._since_ns()})

    async def _read_responses(
        self, call: grpc.aio.UnaryStreamCall[observer_pb2.GetFlowsRequest, bytes], queue: queueing.FlowQueue
    ) -> None:
        while True:
            raw = await call.read()
            if not isinstance(raw, bytes):  # grpc.aio.EOF
                return
            self._accept([raw], queue)

    def _accept(self, batch: list[bytes], queue: queueing.FlowQueue) -> None:
        """Decode and normalise a batch of responses in one loop, then queue its flows at once."""
        stats = self.stats
        stats.received += len(batch)
        max_bytes = self.settings.max_flow_bytes
        parse = observer_pb2.GetFlowsResponse.FromString
        to_flow = normalise.flow_from_response
        flows: list[model.Flow] = []
        for raw in batch:
            if len(raw) > max_bytes:
                stats.oversized += 1
                stats.skip("oversized")
                continue
            try:
                resp = parse(raw)
                if resp.WhichOneof("response_types") != "flow":
                    self._note_non_flow(resp)
                    continue
                flows.append(to_flow(resp))
            except pb_message.DecodeError:
                stats.malformed += 1
                stats.skip("decode")
            except normalise.MalformedFlow as exc:
                stats.malformed += 1
                stats.skip(exc.reason)
                log.debug("hubble_flow_skipped", extra={"reason": exc.reason, "detail": exc.detail})
        if not flows:
            return
        newest = max(flow.time_ns for flow in flows)
        if stats.last_flow_time is None or newest > stats.last_flow_time:
            stats.last_flow_time = newest
        # Past the message that broke the call, resuming with since is safe again.
        self._resume_at_live_end = False
        stats.flows += len(flows)
        queue.put_many(flows)

    def _note_non_flow(self, resp: observer_pb2.GetFlowsResponse) -> None:
        kind = resp.WhichOneof("response_types") or "empty"
        self.stats.non_flow += 1
        self.stats.skip(kind)
        if kind == "lost_events":
            self.stats.lost_events += resp.lost_events.num_events_lost
            log.warning("hubble_events_lost", extra={"lost": resp.lost_events.num_events_lost,
                                                     "where": flow_pb2.LostEventSource.Name(resp.lost_events.source)
                                                     if resp.lost_events.source in flow_pb2.LostEventSource.values()
                                                     else str(resp.lost_events.source)})

    def _note_failure(self, exc: grpc.aio.AioRpcError, *, first: bool) -> None:
        details = exc.details() or ""
        target = self.settings.target
        code = exc.code()
        level = logging.WARNING if first else logging.DEBUG
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            # A message over max_receive_bytes kills the call; resuming with
            # since= would replay it forever, so start again at the live end.
            self.stats.oversized += 1
            self.stats.skip("oversized")
            self._resume_at_live_end = True
        tls = self.settings.tls
        hint = tls is not None and code == grpc.StatusCode.UNAVAILABLE and tls.cert_file is None \
            and "socket closed" in details.lower()
        if hint:
            # TLS 1.3 servers reject a missing client certificate after the
            # handshake, so the client may only see the socket close.
            details += " (the server closed the TLS connection: does it require a client certificate?)"
        if tls is not None and code == grpc.StatusCode.UNAVAILABLE and (hint or _is_tls_failure(exc, details)):
            self.stats.tls_failures += 1
            self.stats.last_error = errors.TlsVerificationFailed(target, details)
            log.log(logging.ERROR if first else logging.DEBUG, "hubble_tls_verification_failed",
                    extra={"target": target, "details": details})
            return
        self.stats.last_error = exc
        log.log(level, "hubble_stream_failed", extra={"target": target, "code": code.name, "details": details})

    # --- request and channel --------------------------------------------------

    def _since_ns(self) -> int | None:
        last = self.stats.last_flow_time
        if last is None or self._resume_at_live_end:
            return None
        return last - self.settings.resume_overlap_ns

    def _request(self) -> observer_pb2.GetFlowsRequest:
        settings = self.settings
        request = observer_pb2.GetFlowsRequest(follow=settings.follow)
        if settings.verdicts or settings.node_names:
            request.whitelist.append(flow_pb2.FlowFilter(
                verdict=settings.verdicts,
                node_name=list(settings.node_names),
            ))
        since = self._since_ns()
        if since is not None:
            request.since.FromNanoseconds(since)
        elif self.stats.last_flow_time is None and settings.initial_number:
            request.number = settings.initial_number
        return request

    def _tls_context(self, tls: TlsSettings) -> ssl.SSLContext:
        """Built on every connect, so rotated certificates are picked up."""
        ca = channels.read_pem("tls.ca_file", tls.ca_file) if tls.ca_file else None
        for setting, path in (("tls.cert_file", tls.cert_file), ("tls.key_file", tls.key_file)):
            if path is not None:
                channels.read_pem(setting, path)
        return grpc_h2.client_tls_context(ca_pem=ca, cert_file=tls.cert_file, key_file=tls.key_file)

    def _channel(self) -> grpc.aio.Channel:
        s = self.settings
        return channels.grpc_channel(s.target, s.tls, max_receive_bytes=s.max_receive_bytes, keepalive_s=s.keepalive_s)


def _serialize(request: observer_pb2.GetFlowsRequest) -> bytes:
    return request.SerializeToString()


def _is_tls_failure(exc: grpc.aio.AioRpcError, details: str) -> bool:
    """The h2 transport knows whether TLS failed; grpcio only says so in the details."""
    cause = exc.__cause__
    if isinstance(cause, grpc_h2.RpcError):
        return isinstance(cause, grpc_h2.TlsError)
    return _looks_like_tls(details)


def _looks_like_tls(details: str) -> bool:
    lowered = details.lower()
    return any(marker in lowered for marker in _TLS_MARKERS)

