"""Calico's flows as our Flow records, two ways in.

``GoldmaneSource`` is a client of ``/goldmane.Flows/Stream``, Calico's
cluster-wide flow aggregator (``goldmane.calico-system.svc:7443``, mTLS
with a client certificate that chains to the operator CA; the server name
can be overridden for a port-forward). ``FelixSocketSource`` is, per node,
the server of ``/goldmane.FlowCollector/Connect`` on the unix socket that
Felix dials when ``flowLogsLocalReporter`` is enabled (Calico 3.30.1+); no
TLS, and the flows are that node's own.

Both receive the same ``goldmane.Flow``: one aggregate per flow key per
bucket (15 s in Goldmane; Felix's flush interval on the socket), so the
message rate is low and grpc.aio is fast enough (see bench/calico.py).

- Replays are expected from both ends: after a reconnect we ask Goldmane
  to backfill from the newest bucket start we saw (less
  ``resume_overlap_s``), and Felix re-sends its last 5 minutes of flows
  (in no particular order) whenever it connects. ``BucketDedup`` keeps,
  per flow key, the end of the newest bucket delivered; a bucket of that
  key ending no later is a replay, counted in ``stats.duplicates`` and
  never delivered, so metrics and the store count each bucket once.
- Goldmane runs on the shared ``resuming.ResumableStream`` (backoff with
  jitter, resume point, replay de-dup, counters); after a daemon restart
  it resumes from the newest bucket the store committed. The
  server-side filter asks for ``actions`` (Deny by default), which every
  version honours; a Whisker-style ``filter`` may narrow it further.
- Felix: Felix sends one ``FlowUpdate`` and waits for one ``FlowReceipt``
  before the next, so every update is answered at once, even one we
  skip, and queueing never blocks Felix. A stale socket file is removed
  before binding; a live one (another consumer such as ``calico-node
  flows`` serves it) is left alone and binding is retried with backoff.
  If the socket file disappears or is replaced while we serve, the server
  is restarted on a fresh socket (Felix reconnects and replays).
- A bounded drop-oldest queue sits between the reader and the consumer;
  discarded flows are counted in ``stats.overflow``. Messages that do not
  decode, or flows without a key or time, are counted in
  ``stats.malformed`` (by reason in ``stats.skipped_by_reason``) and
  skipped; none of them ends the stream.

Nothing here raises for stream trouble: failures are logged (warning on
the first, quieter after) and kept in ``stats``; settings that cannot work
raise ``errors.ConfigError`` from the constructor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import stat
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import grpc
import grpc.aio
from google.protobuf import message as pb_message

from drop_explainer.flows import model
from drop_explainer.goldmane_pb import goldmane_pb2 as gm
from drop_explainer.normalise import calico as normalise
from drop_explainer.normalise import checking
from drop_explainer.sources import channels, errors, queueing, resuming

log = logging.getLogger(__name__)

STREAM: Final = "/goldmane.Flows/Stream"
COLLECTOR_SERVICE: Final = "goldmane.FlowCollector"
DEFAULT_GOLDMANE_TARGET: Final = "goldmane.calico-system.svc:7443"
DEFAULT_FELIX_SOCKET: Final = "/var/run/calico/flows/flows.sock"
_MIB: Final = 1024 * 1024
_NS: Final = 1_000_000_000
BUCKET_S: Final = 15
"""Goldmane's aggregation interval."""
_RECEIPT: Final = gm.FlowReceipt().SerializeToString()
_ACTION_NAMES: Final = frozenset(gm.Action.keys()) - {"ActionUnspecified"}
ConnectHandler: TypeAlias = Callable[[AsyncIterator[bytes], "grpc.aio.ServicerContext[bytes, bytes]"],
                                    AsyncIterator[bytes]]
_STRING_FILTERS: Final = ("source_names", "source_namespaces", "dest_names", "dest_namespaces", "protocols")


TlsSettings = channels.TlsSettings
"""Re-exported: the TLS settings of this source are those of every gRPC source."""


@dataclass(frozen=True, slots=True)
class GoldmaneSettings:
    """How to reach Goldmane and what to ask it for."""

    target: str = DEFAULT_GOLDMANE_TARGET
    """``host:port`` (any gRPC target string)."""
    tls: TlsSettings | None = None
    """None = plaintext, which only a Goldmane without server certificates (a test) accepts."""
    actions: tuple[str, ...] = ("Deny",)
    """Server-side filter on the flow's action (Allow, Deny); empty = every flow."""
    filter: str = ""
    """Optional extra server-side filter, in the JSON of Whisker's ``filters`` parameter (see filter_from_whisker)."""
    initial_backfill_s: int = 0
    """On the first connect, also replay this many seconds of Goldmane's history (it keeps about 1 h); 0 = live."""
    resume_overlap_s: int = 15
    """After a reconnect, backfill from this long before the newest bucket start seen (the repeats are dropped)."""
    dedup_window_s: int = 900
    """Flow keys idle for longer are forgotten; must exceed resume_overlap_s by far."""
    queue_size: int = 10_000
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_receive_bytes: int = 16 * _MIB
    keepalive_s: float = 360.0
    """HTTP/2 ping interval; above Go gRPC's 5 min enforcement so Goldmane does not GOAWAY us."""
    look_back_s: int = 600
    """After a restart, resume from the newest bucket the store committed, but from no further back than this."""

    def validate(self) -> None:
        """Raise errors.ConfigError for settings that cannot work."""
        if not self.target:
            raise errors.ConfigError("target: must not be empty")
        _check_actions(self.actions)
        _check_common(self.queue_size, self.backoff_initial_s, self.backoff_max_s)
        if self.resume_overlap_s < 0 or self.initial_backfill_s < 0:
            raise errors.ConfigError("resume_overlap_s and initial_backfill_s: must not be negative")
        if self.resume_overlap_s >= self.dedup_window_s:
            raise errors.ConfigError("resume_overlap_s: must be shorter than dedup_window_s")
        if self.filter:
            filter_from_whisker_json(self.filter)
        if self.tls is not None:
            channels.check_tls(self.tls)


@dataclass(frozen=True, slots=True)
class FelixSettings:
    """Where to serve Felix's local flow reporter, and what to keep."""

    socket_path: str = DEFAULT_FELIX_SOCKET
    """The path Felix dials (a hostPath mount of the node's /var/run/calico/flows)."""
    node_name: str | None = None
    """This node; set on every flow (Felix's flows are its node's own)."""
    actions: tuple[str, ...] = ("Deny",)
    """Flows to keep by action; Felix pushes every flow, the rest are counted as filtered. Empty = all."""
    dedup_window_s: int = 900
    """Longer than Felix's replay cache (5 min) plus one flush interval (up to 5 min)."""
    queue_size: int = 10_000
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    check_interval_s: float = 5.0
    """How often to check that the socket file is still ours."""
    max_receive_bytes: int = 16 * _MIB

    def validate(self) -> None:
        if not self.socket_path:
            raise errors.ConfigError("socket_path: must not be empty")
        _check_actions(self.actions)
        _check_common(self.queue_size, self.backoff_initial_s, self.backoff_max_s)
        if self.check_interval_s <= 0:
            raise errors.ConfigError("check_interval_s: must be positive")


def _check_actions(actions: tuple[str, ...]) -> None:
    for action in actions:
        if action not in _ACTION_NAMES:
            expected = ", ".join(sorted(_ACTION_NAMES))
            raise errors.ConfigError(f"actions: unknown action {action!r} (expected {expected})")


def _check_common(queue_size: int, initial: float, maximum: float) -> None:
    if queue_size < 1:
        raise errors.ConfigError("queue_size: must be at least 1")
    if not 0 < initial <= maximum:
        raise errors.ConfigError("backoff: need 0 < backoff_initial_s <= backoff_max_s")


def filter_from_whisker(obj: Mapping[str, Any]) -> gm.Filter:
    """Whisker's ``filters`` JSON (as for ``GET /flows``) -> a goldmane.Filter.

    ``policies`` is refused: PolicyMatch's tier, namespace and name changed
    from string to StringMatch in Calico 3.32 on the same wire type, so a
    policy filter would silently match the wrong thing on one generation.
    """
    if not isinstance(obj, Mapping):
        raise errors.ConfigError("filter: expected a JSON object")
    known = {*_STRING_FILTERS, "dest_ports", "actions", "policies"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise errors.ConfigError(f"filter: unknown field(s) {', '.join(unknown)}")
    if obj.get("policies"):
        raise errors.ConfigError("filter: policies cannot be filtered on: Goldmane's PolicyMatch changed wire "
                                 "types in Calico 3.32, so one filter cannot mean the same to 3.30/3.31 and 3.32")
    out = gm.Filter()
    try:
        for key in _STRING_FILTERS:
            for match in obj.get(key) or ():
                getattr(out, key).add(value=str(match["value"]), type=gm.MatchType.Value(match.get("type", "Exact")))
        for match in obj.get("dest_ports") or ():
            out.dest_ports.add(port=int(match["value"]))
        actions = [str(a) for a in obj.get("actions") or ()]
        out.MergeFrom(gm.Filter(actions=actions))
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.ConfigError(f"filter: {exc}") from None
    return out


def filter_from_whisker_json(text: str) -> gm.Filter:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.ConfigError(f"filter: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return filter_from_whisker(obj)


def read_flow_log(path: str | Path) -> Iterator[model.Flow | normalise.BadRecord]:
    """A Calico Enterprise flow-log file (JSON lines, or pretty-printed records), one result per record."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    yield from normalise.records_from_flow_log(text)


# --- shared machinery ------------------------------------------------------------------


@dataclass(slots=True)
class CalicoStats:
    """Live counters; read them at any time (the metrics exporter does)."""

    received: int = 0
    """Messages read: FlowResults from Goldmane, FlowUpdates from Felix."""
    flows: int = 0
    """Flows normalised and queued."""
    delivered: int = 0
    """Flows handed to the consumer."""
    malformed: int = 0
    """Messages that did not decode, or flows that could not be normalised."""
    duplicates: int = 0
    """Replayed buckets dropped (see BucketDedup)."""
    filtered: int = 0
    """Flows of an action not asked for (Felix pushes every flow)."""
    overflow: int = 0
    """Flows discarded because the consumer was behind (drop-oldest)."""
    lost_events: int = 0
    """Never reported by Felix; kept so every source has the same accounting."""
    resumed: int = 0
    """Felix replays on its own; we never ask it to resume."""
    clamped_times: int = 0
    """Flows stamped too far in the future, set to now."""
    truncated: int = 0
    """Flows cut to the size caps."""
    reconnects: int = 0
    """Goldmane: streams re-opened. Felix: connections after the first, plus socket re-creations."""
    tls_failures: int = 0
    connected: bool = False
    """Goldmane: the stream is open. Felix: at least one Felix is connected."""
    peers: int = 0
    """Felix connections currently open (normally 0 or 1)."""
    last_flow_time: int | None = None
    """Newest flow time received (its bucket end), in ns since the epoch."""
    last_error: Exception | None = None
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    """malformed broken down by reason (decode, no-key, no-time, bad-field)."""
    non_flow_by_kind: dict[str, int] = field(default_factory=dict)
    """Felix sends only flows; empty, for the same accounting as every source."""

    def skip(self, reason: str) -> None:
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1


class BucketDedup:
    """Says whether a bucket was already delivered: per flow key, the newest bucket end seen.

    Exact (key, start, end) matching would miss a replay that Goldmane
    re-buckets after its own restart (its bucket boundaries follow its start
    time); the per-key watermark catches those too, and costs one entry per
    active key. Keys idle longer than ``window_s`` (behind the newest bucket
    end seen) are forgotten, at most ``max_keys`` are kept, oldest first.
    It works on our Flow (time_ns is the bucket end), so it is the
    ``resuming.Deduplicator`` of the Goldmane stream too.
    """

    def __init__(self, *, window_s: int, max_keys: int = 200_000) -> None:
        self.window_ns = window_s * _NS
        self.max_keys = max_keys
        self._until: OrderedDict[tuple[object, ...], int] = OrderedDict()
        self._newest = 0

    def __len__(self) -> int:
        return len(self._until)

    def is_repeat(self, flow: model.Flow) -> bool:
        """True if a bucket of this key ending at or after this one was delivered; otherwise remember it."""
        key = bucket_key(flow)
        end = flow.time_ns
        until = self._until.get(key)
        if until is not None and end <= until:
            return True
        self._until[key] = end
        self._until.move_to_end(key)
        self._newest = max(self._newest, end)
        horizon = self._newest - self.window_ns
        until_of = self._until
        while until_of and (len(until_of) > self.max_keys or until_of[next(iter(until_of))] < horizon):
            until_of.popitem(last=False)
        return False


def _endpoint_key(end: model.Endpoint) -> tuple[object, ...]:
    return (end.kind, end.namespace, end.pod, end.pod_prefix, end.ip)


def bucket_key(flow: model.Flow) -> tuple[object, ...]:
    """What Goldmane aggregates a bucket by (its FlowKey), as our Flow carries it."""
    return (_endpoint_key(flow.source), _endpoint_key(flow.destination), flow.protocol, flow.destination_port,
            flow.verdict, flow.direction, flow.attribution, flow.node)


class _CalicoSource:
    """Felix's server side: the queue, the consumer side, and accepting one goldmane.Flow.

    Felix dials us and replays its own cache, so it has no resume point to
    keep and is not a ``resuming.ResumableStream``.
    """

    name = "calico"

    def __init__(self, *, queue_size: int, actions: tuple[str, ...], dedup_window_s: int, node: str | None,
                 rng: random.Random | None) -> None:
        self.stats = CalicoStats()
        self._queue_size = queue_size
        self._actions = frozenset(gm.Action.Value(a) for a in actions)
        self._dedup = BucketDedup(window_s=dedup_window_s)
        self._node = node
        self._rng = rng or random.Random()

    async def stream_flows(self) -> AsyncGenerator[model.Flow, None]:
        """Yield flows until cancelled."""
        queue = queueing.FlowQueue(self._queue_size, self.stats)
        producer = asyncio.create_task(self._run(queue), name=f"{self.name}-reader")
        producer.add_done_callback(lambda task: queue.finish(None if task.cancelled() else task.exception()))
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
                self.stats.delivered += 1
                yield items.popleft()
        finally:
            producer.cancel()
            await asyncio.wait([producer])

    async def _run(self, queue: queueing.FlowQueue) -> None:
        raise NotImplementedError

    def _accept(self, pb: gm.Flow, queue: queueing.FlowQueue) -> None:
        stats = self.stats
        if self._actions and pb.HasField("Key") and pb.Key.action not in self._actions:
            stats.filtered += 1
            return
        try:
            result = checking.check(normalise.flow_from_proto(pb, node=self._node))
        except (normalise.MalformedFlow, checking.InvalidFlow) as exc:
            stats.malformed += 1
            stats.skip(exc.reason)
            log.debug("calico_flow_skipped", extra={"reason": exc.reason, "detail": exc.detail})
            return
        flow = result.flow
        stats.clamped_times += result.clamped
        stats.truncated += result.truncated
        if self._dedup.is_repeat(flow):
            stats.duplicates += 1
            return
        if stats.last_flow_time is None or flow.time_ns > stats.last_flow_time:
            stats.last_flow_time = flow.time_ns
        stats.flows += 1
        queue.put(flow)

    def _decode_failed(self) -> None:
        self.stats.malformed += 1
        self.stats.skip("decode")

    def _sleep_s(self, delay: float) -> float:
        return delay * self._rng.uniform(0.5, 1.0)


# --- Goldmane ------------------------------------------------------------------------


class GoldmaneSource:
    """Streams Flow records from Goldmane (``/goldmane.Flows/Stream``); one instance per stream.

    The reconnect/resume/de-dup loop is ``resuming.ResumableStream``; the
    wire half is ``GoldmaneAdapter``.
    """

    name = "goldmane"

    def __init__(self, settings: GoldmaneSettings, *, checkpoint: resuming.Checkpoint | None = None,
                 rng: random.Random | None = None) -> None:
        settings.validate()
        self.settings = settings
        self._adapter = GoldmaneAdapter(settings)
        # Flow times are bucket *ends*: resuming one bucket (15 s) earlier asks again for the newest bucket.
        loop_settings = resuming.ResumeSettings(
            queue_size=settings.queue_size, backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s, overlap_ns=(settings.resume_overlap_s + BUCKET_S) * _NS,
            look_back_ns=settings.look_back_s * _NS)
        self._loop = resuming.ResumableStream(self._adapter, loop_settings, checkpoint=checkpoint, rng=rng)
        self.stats: resuming.StreamStats = self._loop.stats

    def stream_flows(self) -> AsyncGenerator[model.Flow, None]:
        """Yield flows until cancelled."""
        return self._loop.stream_flows()

    def request(self) -> gm.FlowStreamRequest:
        """The request the next call would send."""
        return self._adapter.request(self._loop.peek_resume())


class GoldmaneAdapter:
    """One Stream call to Goldmane, fed into the resumable loop."""

    origin = "calico"

    def __init__(self, settings: GoldmaneSettings) -> None:
        self.settings = settings
        self.target = settings.target
        self._filter = filter_from_whisker_json(settings.filter) if settings.filter else None
        actions = frozenset(gm.Action.Value(a) for a in settings.actions)
        if self._filter is not None and self._filter.actions:
            # The filter's own actions replace the default, on the server and here alike.
            actions = frozenset(self._filter.actions)
        self._actions = actions
        self._action_names = tuple(sorted(set(settings.actions)))

    def deduplicator(self) -> resuming.Deduplicator:
        return BucketDedup(window_s=self.settings.dedup_window_s)

    async def read_call(self, resume: resuming.Resume, intake: resuming.Intake) -> None:
        try:
            await self._read(resume, intake)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            # RESOURCE_EXHAUSTED: Goldmane serves at most 100 streams.
            unavailable = exc.code() == grpc.StatusCode.UNAVAILABLE
            tls = channels.tls_failure(self.settings.tls, details, unavailable=unavailable)
            raise resuming.StreamFailure(details if tls is None else str(tls), code=exc.code().name,
                                         tls=tls is not None, hint=tls.hint if tls else None) from exc

    async def _read(self, resume: resuming.Resume, intake: resuming.Intake) -> None:
        s = self.settings
        async with channels.grpc_channel(s.target, s.tls, max_receive_bytes=s.max_receive_bytes,
                                         keepalive_s=s.keepalive_s) as channel:
            method: grpc.aio.UnaryStreamMultiCallable[gm.FlowStreamRequest, bytes] = channel.unary_stream(
                STREAM, request_serializer=_serialize, response_deserializer=None)
            call = method(self.request(resume))
            # Goldmane sends nothing until a bucket closes (15-30 s), so a
            # healthy stream is recognised by the transport state instead.
            watcher = asyncio.create_task(_mark_connected(channel, intake))  # last_error kept: see Intake
            try:
                while True:
                    raw = await call.read()
                    if not isinstance(raw, bytes):  # grpc.aio.EOF: Goldmane never ends a stream itself
                        return
                    self._accept_result(raw, intake)
            finally:
                watcher.cancel()
                await asyncio.wait([watcher])

    def _accept_result(self, raw: bytes, intake: resuming.Intake) -> None:
        intake.received()
        try:
            pb = gm.FlowResult.FromString(raw).flow
        except pb_message.DecodeError:
            intake.skip("decode")
            return
        if self._actions and pb.HasField("Key") and pb.Key.action not in self._actions:
            intake.filtered()
            return
        try:
            flow = normalise.flow_from_proto(pb)
        except normalise.MalformedFlow as exc:
            intake.skip(exc.reason)
            log.debug("calico_flow_skipped", extra={"reason": exc.reason, "detail": exc.detail})
            return
        intake.flows((flow,))

    def request(self, resume: resuming.Resume) -> gm.FlowStreamRequest:
        """The Stream request: resume from the loop's point, else the initial backfill, else live."""
        request = gm.FlowStreamRequest()
        if self._filter is not None:
            request.filter.CopyFrom(self._filter)
        if self._actions and not request.filter.actions:
            request.filter.MergeFrom(gm.Filter(actions=self._action_names))
        if resume.since_ns is not None:
            request.start_time_gte = max(1, resume.since_ns // _NS)
        elif resume.first and self.settings.initial_backfill_s:
            request.start_time_gte = -self.settings.initial_backfill_s
        return request


async def _mark_connected(channel: grpc.aio.Channel, intake: resuming.Intake) -> None:
    await channel.channel_ready()
    # Goldmane refuses a stream (RESOURCE_EXHAUSTED) only after the connection is up.
    intake.connected(clear_error=False)


def _serialize(request: gm.FlowStreamRequest) -> bytes:
    return request.SerializeToString()


# --- Felix's node-local socket --------------------------------------------------------------


class SocketInUse(errors.SourceError):
    """Another process serves the Felix socket (e.g. ``calico-node flows``); we do not take it over."""


class FelixSocketSource(_CalicoSource):
    """Serves ``/goldmane.FlowCollector/Connect`` to this node's Felix on a unix socket."""

    name = "felix"

    def __init__(self, settings: FelixSettings, *, rng: random.Random | None = None) -> None:
        settings.validate()
        super().__init__(queue_size=settings.queue_size, actions=settings.actions,
                         dedup_window_s=settings.dedup_window_s, node=settings.node_name, rng=rng)
        self.settings = settings
        self.bound = asyncio.Event()
        """Set while the socket is being served (tests wait on it)."""
        self._connections = 0

    async def _run(self, queue: queueing.FlowQueue) -> None:
        delay = self.settings.backoff_initial_s
        failures = 0
        while True:
            try:
                server, identity = await self._serve(queue)
            except (OSError, RuntimeError, SocketInUse) as exc:
                self.stats.last_error = exc
                log.log(logging.WARNING if failures == 0 else logging.DEBUG, "felix_socket_bind_failed",
                        extra={"path": self.settings.socket_path, "error": str(exc)})
                failures += 1
                await asyncio.sleep(self._sleep_s(delay))
                delay = min(delay * 2, self.settings.backoff_max_s)
                continue
            delay, failures = self.settings.backoff_initial_s, 0
            try:
                await self._watch_socket(identity)
            finally:
                self.bound.clear()
                await asyncio.shield(self._stop(server, identity))
            self.stats.reconnects += 1
            log.warning("felix_socket_lost", extra={"path": self.settings.socket_path})

    async def _serve(self, queue: queueing.FlowQueue) -> tuple[grpc.aio.Server, tuple[int, int]]:
        path = Path(self.settings.socket_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        await _remove_stale_socket(path)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", self.settings.max_receive_bytes)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(COLLECTOR_SERVICE, {
            "Connect": grpc.stream_stream_rpc_method_handler(self._connect_handler(queue)),
        }),))
        try:
            if server.add_insecure_port(f"unix:{path}") == 0:
                raise OSError(f"cannot bind {path}")
            await server.start()
        except BaseException:
            await server.stop(None)
            raise
        st = path.stat()
        self.bound.set()
        log.info("felix_socket_serving", extra={"path": str(path)})
        return server, (st.st_dev, st.st_ino)

    async def _watch_socket(self, identity: tuple[int, int]) -> None:
        """Return when the socket file is gone or replaced: Felix can no longer reach us there."""
        path = self.settings.socket_path
        while True:
            await asyncio.sleep(self.settings.check_interval_s)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return
            if (st.st_dev, st.st_ino) != identity:
                return

    async def _stop(self, server: grpc.aio.Server, identity: tuple[int, int]) -> None:
        await server.stop(None)
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.settings.socket_path)
            if (st.st_dev, st.st_ino) == identity:
                os.unlink(self.settings.socket_path)  # ours: do not leave Felix dialling a dead socket

    def _connect_handler(self, queue: queueing.FlowQueue) -> ConnectHandler:
        async def connect(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
                          ) -> AsyncIterator[bytes]:
            stats = self.stats
            self._connections += 1
            if self._connections > 1:
                stats.reconnects += 1  # Felix reconnected: it replays its last 5 minutes now
            stats.peers += 1
            stats.connected = True
            log.info("felix_connected", extra={"path": self.settings.socket_path})
            try:
                async for raw in requests:
                    self._accept_update(raw, queue)
                    yield _RECEIPT  # Felix waits for it before sending the next update
            finally:
                stats.peers -= 1
                stats.connected = stats.peers > 0
        return connect

    def _accept_update(self, raw: bytes, queue: queueing.FlowQueue) -> None:
        self.stats.received += 1
        try:
            update = gm.FlowUpdate.FromString(raw)
        except pb_message.DecodeError:
            self._decode_failed()
            return
        if not update.HasField("flow"):
            self.stats.malformed += 1
            self.stats.skip(normalise.NO_KEY)
            return
        self._accept(update.flow, queue)


async def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody serves; refuse to take over a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUse(f"{path} exists and is not a socket")
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_unix_connection(str(path))
    except (OSError, TimeoutError):
        path.unlink(missing_ok=True)
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    raise SocketInUse(f"{path} is served by another process")
