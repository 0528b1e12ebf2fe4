"""A gRPC Goldmane server and a Felix flow reporter, for tests, benchmarks and the demo.

``FakeGoldmaneServer`` speaks ``/goldmane.Flows/Stream`` on loopback TCP
(``127.0.0.1``, a free port) in plaintext, TLS or mTLS, and behaves like
Goldmane where our client depends on it:

- ``start_time_gte``: 0 = live only; > 0 = first every stored flow whose
  bucket starts at or after that Unix second, oldest first, then live;
  < 0 = the same, relative to now.
- the filter's ``actions``, names and namespaces (Exact, or Fuzzy =
  substring), ``protocols`` and ``dest_ports``; values OR-ed within a
  field, fields AND-ed.
- at most ``max_streams`` streams (Goldmane: 100); one more is refused
  with RESOURCE_EXHAUSTED "max number of streams reached".
- ``FlowResult.id`` is one number per flow key.

Unlike Goldmane it keeps its history across ``stop()`` / ``restart()`` on
the same port, which is what a resume test needs (a real Goldmane rebuilds
its recent history from Felix's replays). ``push_raw()`` sends arbitrary
bytes to the current streams.

``FakeFelixClient`` is Felix's node-local reporter as
``goldmane/pkg/client`` implements it: dial the unix socket, send one
``FlowUpdate`` and wait for one ``FlowReceipt``, keep every flow sent for
5 minutes, and on each (re)connect replay that cache in no particular
order before sending anything new.

The flow builders make SYNTHETIC flows in the shape Felix and Goldmane
produce (reference: calico.md 1.5, 1.6, 2.2); no licensed capture exists.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

import grpc
import grpc.aio

from drop_explainer.goldmane_pb import goldmane_pb2 as gm

BUCKET_S = 15


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM server certificate and key; with ``client_ca`` clients must present a certificate (Goldmane's mTLS)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None


# --- flow builders -------------------------------------------------------------------


def end_of_tier(trigger_kind: int, namespace: str, name: str, *, tier: str = "default", action: int = gm.Deny,
                policy_index: int = 0) -> gm.PolicyHit:
    """An EndOfTier hit as Goldmane builds it: tier and action on the hit, the policy in ``trigger``."""
    trigger = gm.PolicyHit(kind=trigger_kind, namespace=namespace, name=name, tier=tier)  # type: ignore[arg-type]
    return gm.PolicyHit(kind=gm.EndOfTier, tier=tier, action=action, policy_index=policy_index,  # type: ignore[arg-type]
                        rule_index=-1, trigger=trigger)


def rule_hit(kind: int, namespace: str, name: str, *, tier: str, action: int, rule_index: int,
             policy_index: int = 0) -> gm.PolicyHit:
    """A hit on an explicit rule (Allow, Deny or Pass) of one policy."""
    return gm.PolicyHit(kind=kind, namespace=namespace, name=name, tier=tier, action=action,  # type: ignore[arg-type]
                        policy_index=policy_index, rule_index=rule_index)


def goldmane_flow(
    start: int,
    *,
    source: tuple[str, str] = ("frontend", "pod-a"),
    dest: tuple[str, str] = ("backend", "pod-b"),
    dest_port: int = 8080,
    proto: str = "tcp",
    action: int = gm.Deny,
    reporter: int = gm.Dst,
    enforced: Sequence[gm.PolicyHit] = (),
    pending: Sequence[gm.PolicyHit] | None = None,
    source_labels: Iterable[str] = (),
    dest_labels: Iterable[str] = (),
    packets: int = 3,
    connections: int = 1,
    interval: int = BUCKET_S,
) -> gm.Flow:
    """One SYNTHETIC bucket of one flow key: (namespace, name) ends, counters from the reporter's side.

    A dst-reported flow counts its packets as packets_in, a src-reported
    one as packets_out. ``pending`` defaults to the enforced trace.
    """
    key = gm.FlowKey(
        source_name=source[1], source_namespace=source[0], source_type=gm.WorkloadEndpoint,
        dest_name=dest[1], dest_namespace=dest[0], dest_type=gm.WorkloadEndpoint, dest_port=dest_port,
        proto=proto, reporter=reporter, action=action,  # type: ignore[arg-type]
        policies=gm.PolicyTrace(enforced_policies=list(enforced),
                                pending_policies=list(enforced if pending is None else pending)),
    )
    inbound = reporter == gm.Dst
    return gm.Flow(Key=key, start_time=start, end_time=start + interval, source_labels=sorted(source_labels),
                   dest_labels=sorted(dest_labels), packets_in=packets if inbound else 0,
                   packets_out=0 if inbound else packets, bytes_in=60 * packets if inbound else 0,
                   bytes_out=0 if inbound else 60 * packets, num_connections_started=connections)


def default_deny_flow(start: int, *, trigger: tuple[str, str] = ("backend", "default-deny"),
                      **kwargs: object) -> gm.Flow:
    """A Kubernetes NetworkPolicy default deny of ingress (EndOfTier in tier default, one trigger)."""
    hit = end_of_tier(gm.NetworkPolicy, trigger[0], trigger[1])
    return goldmane_flow(start, enforced=[hit], **kwargs)  # type: ignore[arg-type]


# --- the Goldmane server ----------------------------------------------------------------


class _Record(NamedTuple):
    raw: bytes
    flow: gm.Flow


class _Stream(NamedTuple):
    filter: gm.Filter
    queue: asyncio.Queue[bytes | None]


class FakeGoldmaneServer:
    """A Flows server over a list of flows; use as ``async with FakeGoldmaneServer(...) as server``."""

    def __init__(
        self,
        flows: Iterable[gm.Flow] = (),
        *,
        tls: ServerTls | None = None,
        port: int = 0,
        max_streams: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tls = tls
        self.max_streams = max_streams
        self.requests: list[gm.FlowStreamRequest] = []
        """Every Stream request received, in order."""
        self._clock = clock
        self._history: list[_Record] = []
        self._ids: dict[bytes, int] = {}
        self._streams: list[_Stream] = []
        self._server: grpc.aio.Server | None = None
        self._port = port
        for flow in flows:
            self.push(flow)

    async def start(self) -> Self:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("goldmane.Flows", {
            "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
        }),))
        address = f"127.0.0.1:{self._port}"
        if self.tls is None:
            self._port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(self.tls.private_key, self.tls.cert_chain)], root_certificates=self.tls.client_ca,
                require_client_auth=self.tls.client_ca is not None)
            self._port = server.add_secure_port(address, credentials)
        await server.start()
        self._server = server
        return self

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; open streams end (the client sees UNAVAILABLE or CANCELLED)."""
        server, self._server = self._server, None
        for stream in self._streams:
            stream.queue.put_nowait(None)
        if server is not None:
            await server.stop(grace)

    async def restart(self) -> None:
        """Stop, then serve again on the same port with the same history."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def streams(self) -> int:
        """Streams currently following live buckets."""
        return len(self._streams)

    async def wait_for_streams(self, count: int = 1, *, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self._streams) < count:
                await asyncio.sleep(0.005)

    def push(self, flow: gm.Flow) -> None:
        """Store a flow (one closed bucket) and send it to the streams whose filter it matches."""
        key = flow.Key.SerializeToString(deterministic=True)
        ident = self._ids.setdefault(key, len(self._ids) + 1)
        record = _Record(gm.FlowResult(id=ident, flow=flow).SerializeToString(), flow)
        self._history.append(record)
        for stream in self._streams:
            if matches(stream.filter, flow):
                stream.queue.put_nowait(record.raw)

    def push_raw(self, raw: bytes) -> None:
        """Send raw bytes as one message to every current stream, unfiltered and not kept."""
        for stream in self._streams:
            stream.queue.put_nowait(raw)

    async def _stream(self, request_bytes: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
                      ) -> AsyncIterator[bytes]:
        request = gm.FlowStreamRequest.FromString(request_bytes)
        self.requests.append(request)
        if len(self._streams) >= self.max_streams:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "max number of streams reached")
        stream = _Stream(request.filter, asyncio.Queue())
        # Subscribe before reading history so nothing pushed meanwhile is missed.
        self._streams.append(stream)
        try:
            for record in self._backfill(request):
                yield record.raw
            while True:
                raw = await stream.queue.get()
                if raw is None:
                    return
                yield raw
        finally:
            self._streams.remove(stream)

    def _backfill(self, request: gm.FlowStreamRequest) -> list[_Record]:
        since = request.start_time_gte
        if since == 0:
            return []
        if since < 0:
            since = int(self._clock()) + since
        found = [r for r in self._history if r.flow.start_time >= since and matches(request.filter, r.flow)]
        return sorted(found, key=lambda r: r.flow.start_time)


def matches(flt: gm.Filter, flow: gm.Flow) -> bool:
    """Goldmane's Filter semantics over one flow (the subset our client and tests use)."""
    key = flow.Key
    checks = (
        (flt.source_names, key.source_name), (flt.source_namespaces, key.source_namespace),
        (flt.dest_names, key.dest_name), (flt.dest_namespaces, key.dest_namespace), (flt.protocols, key.proto),
    )
    for wanted, value in checks:
        if wanted and not any(m.value == value if m.type == gm.Exact else m.value in value for m in wanted):
            return False
    if flt.dest_ports and key.dest_port not in {p.port for p in flt.dest_ports}:
        return False
    return not flt.actions or key.action in flt.actions


# --- Felix's local reporter ---------------------------------------------------------------


class FakeFelixClient:
    """Felix pushing flows to the node-local socket, one update and one receipt at a time."""

    CONNECT = "/goldmane.FlowCollector/Connect"

    def __init__(self, socket_path: str | Path, *, cache_expiry_s: float = 300.0,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.socket_path = Path(socket_path)
        self.cache_expiry_s = cache_expiry_s
        self.receipts = 0
        """FlowReceipts received: one per update sent, replays included."""
        self.replayed = 0
        """Updates re-sent from the cache on (re)connects."""
        self._rng = rng or random.Random(0)
        self._clock = clock
        self._cache: dict[tuple[bytes, int, int], tuple[float, gm.Flow]] = {}
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall[bytes, bytes] | None = None

    async def connect(self) -> None:
        """Dial the socket and replay the cache (shuffled, as Go map order is), then return."""
        await self.close()
        self._channel = grpc.aio.insecure_channel(f"unix://{self.socket_path}")
        method: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = self._channel.stream_stream(
            self.CONNECT, request_serializer=None, response_deserializer=None)
        self._call = method()
        self._expire()
        cached = [flow for _, flow in self._cache.values()]
        self._rng.shuffle(cached)
        for flow in cached:
            await self._send(gm.FlowUpdate(flow=flow).SerializeToString())
            self.replayed += 1

    async def push(self, flow: gm.Flow) -> None:
        """Cache the flow, send it, and wait for its receipt."""
        key = (flow.Key.SerializeToString(deterministic=True), flow.start_time, flow.end_time)
        self._cache[key] = (self._clock() + self.cache_expiry_s, flow)
        await self._send(gm.FlowUpdate(flow=flow).SerializeToString())

    async def push_raw(self, raw: bytes) -> None:
        """Send arbitrary bytes as one update (not cached) and wait for the receipt."""
        await self._send(raw)

    async def _send(self, raw: bytes) -> None:
        if self._call is None:
            raise ConnectionError("not connected")
        await self._call.write(raw)
        receipt = await self._call.read()
        if not isinstance(receipt, bytes):
            raise ConnectionError("the server closed the stream")
        self.receipts += 1

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, (expiry, _) in self._cache.items() if expiry < now]:
            del self._cache[key]

    async def close(self) -> None:
        call, channel = self._call, self._channel
        self._call = self._channel = None
        if call is not None:
            call.cancel()
        if channel is not None:
            await channel.close()
