"""Hubble's live flow stream (``/observer.Observer/GetFlows``) as our Flow records.

The source owns the transport only: connect (local UNIX socket, or a TCP
``host:port`` such as hubble-relay, in plaintext, TLS or mTLS), ask for the
drops with a server-side whitelist, and keep the stream alive.

- Reconnecting, resuming from the newest flow time (or, after a restart,
  from the newest one the store committed), dropping what the resume
  replays (``dedup.ReplayFilter``), the bounded drop-oldest queue and the
  counters are ``resuming.ResumableStream``'s, shared by every source;
  this module is the ``HubbleAdapter`` plugged into it.
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
the first, info on recovery; a TLS failure at error, named with what it
probably means and repeated while it lasts) and kept in ``stats``;
configuration errors raise ``errors.ConfigError`` from the constructor.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final, Literal

import grpc
import grpc.aio
from google.protobuf import message as pb_message

from drop_explainer.flows import model
from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.normalise import hubble as normalise
from drop_explainer.sources import channels, dedup, errors, grpc_h2, resuming

log = logging.getLogger(__name__)

GET_FLOWS: Final = "/observer.Observer/GetFlows"
DEFAULT_TARGET: Final = "unix:///var/run/cilium/hubble.sock"
_MIB: Final = 1024 * 1024
_NS: Final = 1_000_000_000
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
    look_back_ns: int = 600 * _NS
    """After a restart, resume from the newest flow the store committed, but from no further back than this."""
    tls_error_every: int = 20
    """A persisting TLS failure is logged at ERROR on the first and every this many failures (resuming)."""

    def resume_settings(self) -> resuming.ResumeSettings:
        return resuming.ResumeSettings(queue_size=self.queue_size, backoff_initial_s=self.backoff_initial_s,
                                       backoff_max_s=self.backoff_max_s, overlap_ns=self.resume_overlap_ns,
                                       look_back_ns=self.look_back_ns, tls_error_every=self.tls_error_every)

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


HubbleStats = resuming.StreamStats
"""The counters of the Hubble stream are those of every resumable stream."""


class HubbleSource:
    """Streams Flow records from Hubble; one instance per stream.

    The reconnect/resume/de-dup loop is ``resuming.ResumableStream``; this
    class only adds Hubble's double-report classification on the way out.
    """

    def __init__(self, settings: HubbleSettings, *, checkpoint: resuming.Checkpoint | None = None,
                 rng: random.Random | None = None) -> None:
        settings.validate()
        self.settings = settings
        self._adapter = HubbleAdapter(settings)
        self._loop = resuming.ResumableStream(self._adapter, settings.resume_settings(), checkpoint=checkpoint,
                                              follow=settings.follow, rng=rng)
        self.stats: resuming.StreamStats = self._loop.stats
        self._reports = dedup.ReportClassifier()

    async def stream_flows(self) -> AsyncGenerator[model.Flow, None]:
        """Yield flows until cancelled (follow) or until the server has sent all (no follow)."""
        classify = self.settings.classify_reports
        async for flow in self._loop.stream_flows():
            yield self._reports.count(flow) if classify else flow

    def request(self) -> observer_pb2.GetFlowsRequest:
        """The request the next call would send (without consuming the resume point)."""
        return self._adapter.request(self._loop.peek_resume())


ACCEPT_CHUNK = 128
"""Messages decoded and normalised between two yields to the event loop (~1 ms of work)."""


class HubbleAdapter:
    """One GetFlows call over either transport, fed into the resumable loop."""

    origin = "hubble"

    def __init__(self, settings: HubbleSettings) -> None:
        self.settings = settings
        self.target = settings.target

    def deduplicator(self) -> resuming.Deduplicator:
        return dedup.ReplayFilter(window_ns=self.settings.dedup_window_ns)

    async def read_call(self, resume: resuming.Resume, intake: resuming.Intake) -> None:
        """One call, read to its end; failures of either transport become StreamFailure."""
        request = self.request(resume)
        log.debug("hubble_request", extra={"target": self.target, "since_ns": resume.since_ns,
                                           "from_checkpoint": resume.from_checkpoint})
        try:
            if self.settings.transport == "grpcio":
                await self._read_grpcio(request, intake)
            else:
                await self._read_h2(request, intake)
        except grpc_h2.RpcError as exc:
            # One kind of error for both transports (stats.last_error keeps it).
            rpc_error = grpc.aio.AioRpcError(_GRPC_CODES[exc.code.value], grpc.aio.Metadata(), grpc.aio.Metadata(),
                                             exc.details)
            rpc_error.__cause__ = exc
            raise self._failure(rpc_error, tls_error=isinstance(exc, grpc_h2.TlsError)) from rpc_error
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc, tls_error=False) from exc

    async def _read_h2(self, request: observer_pb2.GetFlowsRequest, intake: resuming.Intake) -> None:
        settings = self.settings
        tls = settings.tls
        call = grpc_h2.StreamingCall(
            settings.target, GET_FLOWS, request.SerializeToString(),
            tls=self._tls_context(tls) if tls is not None else None,
            server_name=tls.server_name if tls is not None else None,
            max_receive_bytes=settings.max_receive_bytes,
            keepalive_s=settings.keepalive_s,
        )
        async with call:
            intake.connected()
            async for batch in call.messages():
                # One read can hold thousands of messages (a flood, a resume's replay); decoding them
                # all in one go would hold the event loop (and /healthz) for tens of milliseconds.
                for start in range(0, len(batch), ACCEPT_CHUNK):
                    if start:
                        await asyncio.sleep(0)
                    self._accept(batch[start:start + ACCEPT_CHUNK], intake)

    async def _read_grpcio(self, request: observer_pb2.GetFlowsRequest, intake: resuming.Intake) -> None:
        s = self.settings
        async with channels.grpc_channel(s.target, s.tls, max_receive_bytes=s.max_receive_bytes,
                                         keepalive_s=s.keepalive_s) as channel:
            method: grpc.aio.UnaryStreamMultiCallable[observer_pb2.GetFlowsRequest, bytes] = channel.unary_stream(
                GET_FLOWS, request_serializer=_serialize, response_deserializer=None)
            call = method(request)
            # Servers send headers only with the first message, so a quiet
            # but healthy stream is recognised by the transport state instead.
            watcher = asyncio.create_task(_mark_connected(channel, intake))
            try:
                while True:
                    raw = await call.read()
                    if not isinstance(raw, bytes):  # grpc.aio.EOF
                        return
                    self._accept([raw], intake)
            finally:
                watcher.cancel()
                await asyncio.wait([watcher])

    def _accept(self, batch: list[bytes], intake: resuming.Intake) -> None:
        """Decode and normalise a batch of responses in one loop, then hand its flows on at once."""
        intake.received(len(batch))
        max_bytes = self.settings.max_flow_bytes
        parse = observer_pb2.GetFlowsResponse.FromString
        to_flow = normalise.flow_from_response
        flows: list[model.Flow] = []
        for raw in batch:
            if len(raw) > max_bytes:
                intake.oversized()
                continue
            try:
                resp = parse(raw)
                if resp.WhichOneof("response_types") != "flow":
                    _note_non_flow(resp, intake)
                    continue
                flows.append(to_flow(resp))
            except pb_message.DecodeError:
                intake.skip("decode")
            except normalise.MalformedFlow as exc:
                intake.skip(exc.reason)
                log.debug("hubble_flow_skipped", extra={"reason": exc.reason, "detail": exc.detail})
        if flows:
            intake.flows(flows)

    def _failure(self, exc: grpc.aio.AioRpcError, *, tls_error: bool) -> resuming.StreamFailure:
        code, details = exc.code(), exc.details() or ""
        # A message over max_receive_bytes kills the call; resuming with
        # since= would replay it forever, so start again at the live end.
        too_big = code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # TLS 1.3 servers refuse a missing client certificate after the
        # handshake, so grpcio sees "Unwrap failed (TSI_DATA_CORRUPTED)" or
        # the socket close; channels.tls_failure names what that means.
        tls = channels.tls_failure(self.settings.tls, details, unavailable=code == grpc.StatusCode.UNAVAILABLE,
                                   tls_error=tls_error)
        if tls is not None:
            return resuming.StreamFailure(str(tls), code=code.name, tls=True, hint=tls.hint)
        return resuming.StreamFailure(details, code=code.name, restart_live=too_big)

    # --- request and TLS ------------------------------------------------------

    def request(self, resume: resuming.Resume) -> observer_pb2.GetFlowsRequest:
        settings = self.settings
        request = observer_pb2.GetFlowsRequest(follow=settings.follow)
        if settings.verdicts or settings.node_names:
            request.whitelist.append(flow_pb2.FlowFilter(
                verdict=settings.verdicts,
                node_name=list(settings.node_names),
            ))
        if resume.since_ns is not None:
            request.since.FromNanoseconds(resume.since_ns)
        elif resume.first and settings.initial_number:
            request.number = settings.initial_number
        return request

    def _tls_context(self, tls: TlsSettings) -> ssl.SSLContext:
        """Built on every connect, so rotated certificates are picked up."""
        ca = channels.read_pem("tls.ca_file", tls.ca_file) if tls.ca_file else None
        for setting, path in (("tls.cert_file", tls.cert_file), ("tls.key_file", tls.key_file)):
            if path is not None:
                channels.read_pem(setting, path)
        return grpc_h2.client_tls_context(ca_pem=ca, cert_file=tls.cert_file, key_file=tls.key_file)


async def _mark_connected(channel: grpc.aio.Channel, intake: resuming.Intake) -> None:
    await channel.channel_ready()
    intake.connected()


def _note_non_flow(resp: observer_pb2.GetFlowsResponse, intake: resuming.Intake) -> None:
    """node_status and lost_events are valid responses, counted apart from malformed flows."""
    kind = resp.WhichOneof("response_types") or "empty"
    intake.non_flow(kind)
    if kind == "lost_events":
        lost = resp.lost_events
        intake.lost(lost.num_events_lost)
        where = flow_pb2.LostEventSource.Name(lost.source) if lost.source in flow_pb2.LostEventSource.values() \
            else str(lost.source)
        log.warning("hubble_events_lost", extra={"lost": lost.num_events_lost, "where": where})


def _serialize(request: observer_pb2.GetFlowsRequest) -> bytes:
    return request.SerializeToString()
