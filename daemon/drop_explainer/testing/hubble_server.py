"""A real gRPC Hubble Observer server over recorded flows, for tests and the demo.

It speaks ``/observer.Observer/GetFlows`` and ``ServerStatus`` on loopback
TCP (``127.0.0.1``, a free port) and/or a UNIX socket, in plaintext, TLS or
mTLS, and behaves like Hubble where our client depends on it:

- the standard ``grpc.health.v1.Health`` service (grpcio-health-checking's
  reference servicer), ``SERVING`` for ``""`` and for Hubble's own name
  ``hubble.server.Observer`` as Cilium's server sets it
  (pkg/hubble/server/serveroption), so the real ``hubble status`` works
  against it; ``set_serving(False)`` makes it ``NOT_SERVING``, and
  ``stop()`` does so before it stops;

- ``follow``: after the history, the stream stays open and ``push()``
  delivers new flows live; with ``number == 0`` and no ``since`` a follower
  starts at the live end (Hubble's ring-buffer behaviour).
- ``since`` / ``until`` (inclusive, taking precedence over ``number``),
  ``number`` (the last N, or the first N with ``first``; ``first`` with
  ``follow`` is rejected as Hubble does), and without any of them and
  without follow the whole history.
- whitelist / blacklist filters: ``verdict``, ``node_name`` (exact or
  shell-style pattern) and ``event_type.type``; OR across filters, AND
  within one.

Unlike Hubble it keeps its history across ``stop()`` / ``restart()`` (on
the same address), which is what a resume test needs. ``push_raw()``
injects arbitrary bytes as one response (garbage, a ``node_status``, a very
large message); injected responses go to current followers only and
ignore filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

import grpc
import grpc.aio
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from drop_explainer.hubble_pb import flow_pb2, observer_pb2

_NS = 1_000_000_000
OBSERVER_HEALTH_NAME = "hubble.server.Observer"
"""The service name ``hubble status`` asks the health service about (Cilium's v1.ObserverServiceName)."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM server certificate and key; with ``client_ca`` clients must present a certificate (mTLS)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None


class _Subscriber(NamedTuple):
    """One follow stream: its filter, and the responses waiting to be sent (None = stop)."""

    matches: _Matcher
    queue: asyncio.Queue[bytes | None]


class _Record(NamedTuple):
    raw: bytes
    time_ns: int
    verdict: int
    node: str
    event_type: int


def load_responses(path: str | Path) -> list[observer_pb2.GetFlowsResponse]:
    """Read ``hubble observe -o jsonpb`` lines (fields newer than our schema are ignored)."""
    responses = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            responses.append(json_format.Parse(line, observer_pb2.GetFlowsResponse(), ignore_unknown_fields=True))
    return responses


def oversized_flow(template: flow_pb2.Flow, size: int) -> flow_pb2.Flow:
    """A copy of template whose serialized form exceeds size bytes (a huge Summary)."""
    big = flow_pb2.Flow()
    big.CopyFrom(template)
    big.Summary = "x" * size
    return big


def policy_denied_syn(
    time_ns: int,
    *,
    source_port: int = 44916,
    destination_port: int = 80,
    node_name: str = "kind-worker",
    event: str = "drop",
    reason: flow_pb2.DropReason = flow_pb2.POLICY_DENIED,
) -> flow_pb2.Flow:
    """A SYNTHETIC default-deny drop of a TCP SYN, xwing -> deathstar, with full metadata.

    No licensed real capture of such a flow exists (see the fixtures'
    PROVENANCE); this one follows the field rules of a v1.19 agent:
    ``event="drop"`` is the drop event (type 1, sub_type = reason) and
    ``event="policy-verdict"`` the policy-verdict event (type 5, match none).
    """
    flow = flow_pb2.Flow(
        verdict=flow_pb2.DROPPED,
        drop_reason=reason,
        drop_reason_desc=reason,
        IP=flow_pb2.IP(source="10.244.1.60", destination="10.244.1.5", ipVersion=flow_pb2.IPv4),
        l4=flow_pb2.Layer4(TCP=flow_pb2.TCP(source_port=source_port, destination_port=destination_port,
                                            flags=flow_pb2.TCPFlags(SYN=True))),
        source=flow_pb2.Endpoint(ID=652, identity=31246, namespace="default", pod_name="xwing", labels=[
            "k8s:app.kubernetes.io/name=xwing", "k8s:class=xwing",
            "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
            "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=default",
            "k8s:io.kubernetes.pod.namespace=default", "k8s:org=alliance"]),
        destination=flow_pb2.Endpoint(
            ID=2845, identity=43055, namespace="default", pod_name="deathstar-7848d6c4d5-th9v2", labels=[
                "k8s:app.kubernetes.io/name=deathstar", "k8s:class=deathstar",
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
                "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=default",
                "k8s:io.kubernetes.pod.namespace=default", "k8s:org=empire"],
            workloads=[flow_pb2.Workload(name="deathstar", kind="Deployment")]),
        Type=flow_pb2.L3_L4,
        node_name=node_name,
        event_type=flow_pb2.CiliumEventType(type=1, sub_type=reason) if event == "drop"
        else flow_pb2.CiliumEventType(type=5),
        traffic_direction=flow_pb2.INGRESS,
        Summary="TCP Flags: SYN",
    )
    flow.time.FromNanoseconds(time_ns)
    return flow


class FakeHubbleServer:
    """An Observer server over a list of flows; use as ``async with FakeHubbleServer(...) as server``."""

    def __init__(
        self,
        flows: Iterable[flow_pb2.Flow | observer_pb2.GetFlowsResponse] = (),
        *,
        node_name: str = "test-node",
        tls: ServerTls | None = None,
        unix_path: str | Path | None = None,
        tcp: bool = True,
        port: int = 0,
        max_flows: int = 4095,
    ) -> None:
        self.node_name = node_name
        self.tls = tls
        self.unix_path = Path(unix_path) if unix_path is not None else None
        self.tcp = tcp
        self.max_flows = max_flows
        self.requests: list[observer_pb2.GetFlowsRequest] = []
        """Every GetFlows request received, in order."""
        self._history: list[_Record] = []
        self._subscribers: list[_Subscriber] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._serving = True
        self._started_ns = 0
        self._port = port
        for item in flows:
            self.push(item)

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> Self:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("observer.Observer", {
            "GetFlows": grpc.unary_stream_rpc_method_handler(self._get_flows),
            "ServerStatus": grpc.unary_unary_rpc_method_handler(self._server_status),
        }),))
        self._health = health.aio.HealthServicer()
        await self._set_health()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.tcp:
            self._port = self._bind(server, f"127.0.0.1:{self._port}")
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_path.unlink()
            self._bind(server, f"unix:{self.unix_path}")
        await server.start()
        self._server = server
        self._started_ns = time.monotonic_ns()
        return self

    async def set_serving(self, serving: bool) -> None:
        """What the health service answers: SERVING, or NOT_SERVING (as relay does with no peer)."""
        self._serving = serving
        await self._set_health()

    async def _set_health(self) -> None:
        if self._health is None:
            return
        status = health_pb2.HealthCheckResponse.SERVING if self._serving else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", OBSERVER_HEALTH_NAME):
            await self._health.set(service, status)

    def _bind(self, server: grpc.aio.Server, address: str) -> int:
        if self.tls is None:
            return server.add_insecure_port(address)
        credentials = grpc.ssl_server_credentials(
            [(self.tls.private_key, self.tls.cert_chain)],
            root_certificates=self.tls.client_ca,
            require_client_auth=self.tls.client_ca is not None,
        )
        return server.add_secure_port(address, credentials)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; open streams end (the client sees UNAVAILABLE or CANCELLED)."""
        server, self._server = self._server, None
        checker, self._health = self._health, None
        if checker is not None:
            await checker.enter_graceful_shutdown()  # health watchers see NOT_SERVING first
        for subscriber in self._subscribers:
            subscriber.queue.put_nowait(None)
        if server is not None:
            await server.stop(grace)

    async def restart(self) -> None:
        """Stop, then serve again on the same port / socket with the same history."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>`` (TCP), else ``unix://<path>``."""
        if self.tcp:
            return f"127.0.0.1:{self._port}"
        return self.unix_target

    @property
    def unix_target(self) -> str:
        if self.unix_path is None:
            raise ValueError("this server has no UNIX socket")
        return f"unix://{self.unix_path}"

    @property
    def followers(self) -> int:
        """Streams currently waiting for live flows."""
        return len(self._subscribers)

    async def wait_for_followers(self, count: int = 1, *, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self._subscribers) < count:
                await asyncio.sleep(0.005)

    # --- data -------------------------------------------------------------------

    def push(self, item: flow_pb2.Flow | observer_pb2.GetFlowsResponse) -> None:
        """Append a flow to the history and send it to the followers it matches."""
        response = item if isinstance(item, observer_pb2.GetFlowsResponse) else self._wrap(item)
        flow = response.flow
        when = flow.time if flow.HasField("time") else response.time
        record = _Record(response.SerializeToString(), when.seconds * _NS + when.nanos, flow.verdict,
                         flow.node_name or response.node_name, flow.event_type.type)
        self._history.append(record)
        for subscriber in self._subscribers:
            if subscriber.matches(record):
                subscriber.queue.put_nowait(record.raw)

    def push_raw(self, raw: bytes) -> None:
        """Send raw bytes as one response to every current follower, unfiltered and not kept."""
        for subscriber in self._subscribers:
            subscriber.queue.put_nowait(raw)

    def _wrap(self, flow: flow_pb2.Flow) -> observer_pb2.GetFlowsResponse:
        response = observer_pb2.GetFlowsResponse(flow=flow, node_name=flow.node_name or self.node_name)
        response.time.CopyFrom(flow.time)
        return response

    # --- handlers ---------------------------------------------------------------

    async def _get_flows(self, request_bytes: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
                         ) -> AsyncIterator[bytes]:
        request = observer_pb2.GetFlowsRequest.FromString(request_bytes)
        self.requests.append(request)
        if request.first and request.follow:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first cannot be specified with follow")
        matches = _Matcher(request.whitelist, request.blacklist)
        subscriber = _Subscriber(matches, asyncio.Queue())
        if request.follow:
            # Subscribe before reading history so nothing pushed meanwhile is missed.
            self._subscribers.append(subscriber)
        try:
            for record in self._select(request, matches):
                yield record.raw
            while request.follow:
                raw = await subscriber.queue.get()
                if raw is None:
                    return
                yield raw
        finally:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def _select(self, request: observer_pb2.GetFlowsRequest, matches: _Matcher) -> list[_Record]:
        history = [r for r in self._history[-self.max_flows:] if matches(r)]
        since = request.since.ToNanoseconds() if request.HasField("since") else None
        until = request.until.ToNanoseconds() if request.HasField("until") else None
        if since is not None or until is not None:
            low, high = since if since is not None else 0, until if until is not None else 2**63
            return [r for r in history if low <= r.time_ns <= high]
        if request.number:
            return history[:request.number] if request.first else history[-request.number:]
        return [] if request.follow else history

    async def _server_status(self, request_bytes: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        kept = min(len(self._history), self.max_flows)
        return observer_pb2.ServerStatusResponse(
            num_flows=kept, max_flows=self.max_flows, seen_flows=len(self._history), version="drop-explainer-test",
            uptime_ns=time.monotonic_ns() - self._started_ns,
        ).SerializeToString()


class _Matcher:
    """GetFlowsRequest whitelist/blacklist over our stored records."""

    def __init__(self, whitelist: Iterable[flow_pb2.FlowFilter], blacklist: Iterable[flow_pb2.FlowFilter]) -> None:
        self._white = list(whitelist)
        self._black = list(blacklist)

    def __call__(self, record: _Record) -> bool:
        if self._white and not any(_filter_matches(f, record) for f in self._white):
            return False
        return not any(_filter_matches(f, record) for f in self._black)


def _filter_matches(flt: flow_pb2.FlowFilter, record: _Record) -> bool:
    if flt.verdict and record.verdict not in flt.verdict:
        return False
    if flt.node_name and not any(fnmatch.fnmatchcase(record.node, pattern) for pattern in flt.node_name):
        return False
    return not flt.event_type or any(e.type in (0, record.event_type) for e in flt.event_type)

