"""A gRPC Antrea Flow Aggregator flow stream, for tests and benchmarks.

``FakeAntreaFlowServer`` serves ``FlowStreamService/GetFlows`` on loopback
TCP (``127.0.0.1``, a free port; plaintext or server-side TLS, as the Flow
Aggregator does: no client authentication) and behaves like it where our
client depends on it (calico.md section 6, Antrea):

- history first: every stored record whose end is at or after ``since``
  (all of them without ``since``), oldest first; then, with ``follow``,
  each record pushed afterwards.
- ``max_count`` bounds the records sent in total; without ``follow`` the
  stream ends after the history.
- the ``namespaces`` of the filters (source or destination namespace).
- ``dropped_count`` is cumulative per stream; ``drop_for_next(n)`` makes
  the next response say the server dropped ``n`` more.

It keeps its records across ``stop()`` / ``start()`` on the same port (the
aggregator's ring buffer outlives a consumer's reconnect), which is what a
resume test needs. Records are built by ``record()`` (the fields the
reference names), or read from IE-named JSON lines by ``records_from_jsonl``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from drop_explainer.antrea_pb import flow_pb2 as af
from drop_explainer.normalise import antrea as normalise

SERVICE = "antrea_io.antrea.pkg.apis.flow.v1alpha1.FlowStreamService"


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_chain: bytes
    private_key: bytes


def records_from_jsonl(path: str | Path) -> list[af.Flow]:
    """IE-named records (the Flow Aggregator's JSON), one per line -> Antrea Flow messages."""
    out: list[af.Flow] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rec: dict[str, Any] = json.loads(line)
            pb = normalise.proto_from_record(rec)
            pb.id = str(rec.get("id") or "")
            out.append(pb)
    return out


def _end_ns(flow: af.Flow) -> int:
    ts = flow.end_ts if flow.HasField("end_ts") else flow.start_ts
    return ts.seconds * 1_000_000_000 + ts.nanos


def _matches(flow: af.Flow, request: af.GetFlowsRequest) -> bool:
    for f in request.filters:
        if f.namespaces and not ({flow.k8s.source_pod_namespace, flow.k8s.destination_pod_namespace}
                                 & set(f.namespaces)):
            return False
    return True


class FakeAntreaFlowServer:
    """A FlowStreamService over a list of records; use as ``async with FakeAntreaFlowServer(...) as server``."""

    def __init__(self, records: Iterable[af.Flow] = (), *, tls: ServerTls | None = None, port: int = 0) -> None:
        self.tls = tls
        self.requests: list[af.GetFlowsRequest] = []
        self.sent = 0
        """Records sent over all streams."""
        self._history: list[af.Flow] = list(records)
        self._followers: list[asyncio.Queue[af.Flow | None]] = []
        self._extra_dropped = 0
        self._server: grpc.aio.Server | None = None
        self._port = port
        self._follow_event = asyncio.Event()

    async def start(self) -> Self:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "GetFlows": grpc.unary_stream_rpc_method_handler(
                self._get_flows, request_deserializer=af.GetFlowsRequest.FromString,
                response_serializer=af.GetFlowsResponse.SerializeToString),
        }),))
        address = f"127.0.0.1:{self._port}"
        if self.tls is None:
            self._port = server.add_insecure_port(address)
        else:
            self._port = server.add_secure_port(address, grpc.ssl_server_credentials(
                [(self.tls.private_key, self.tls.cert_chain)]))
        await server.start()
        self._server = server
        return self

    async def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        for queue in self._followers:
            queue.put_nowait(None)
        if server is not None:
            await server.stop(grace)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def followers(self) -> int:
        return len(self._followers)

    async def wait_for_followers(self, n: int = 1, timeout: float = 20.0) -> None:
        async def wait() -> None:
            while len(self._followers) < n:
                self._follow_event.clear()
                await self._follow_event.wait()
        await asyncio.wait_for(wait(), timeout)

    def push(self, *records: af.Flow) -> None:
        """Store records (the ring buffer) and send them to every following stream."""
        for record in records:
            self._history.append(record)
            for queue in self._followers:
                queue.put_nowait(record)

    def drop_for_next(self, n: int) -> None:
        self._extra_dropped += n

    async def _get_flows(self, request: af.GetFlowsRequest,
                         context: grpc.aio.ServicerContext[af.GetFlowsRequest, af.GetFlowsResponse],
                         ) -> AsyncIterator[af.GetFlowsResponse]:
        self.requests.append(request)
        await context.send_initial_metadata(())
        since = request.since.ToNanoseconds() if request.HasField("since") else None
        limit = request.max_count or None
        sent, dropped = 0, 0
        queue: asyncio.Queue[af.Flow | None] = asyncio.Queue()
        if request.follow:
            self._followers.append(queue)
            self._follow_event.set()
        try:
            history = [f for f in self._history if (since is None or _end_ns(f) >= since) and _matches(f, request)]
            for i in range(0, len(history), 50):
                batch = history[i:i + 50][: None if limit is None else limit - sent]
                if not batch:
                    break
                sent += len(batch)
                self.sent += len(batch)
                dropped += self._take_dropped()
                yield af.GetFlowsResponse(flows=batch, dropped_count=dropped)
            while request.follow and (limit is None or sent < limit):
                record = await queue.get()
                if record is None:
                    return
                if not _matches(record, request):
                    continue
                sent += 1
                self.sent += 1
                dropped += self._take_dropped()
                yield af.GetFlowsResponse(flows=[record], dropped_count=dropped)
        finally:
            if queue in self._followers:
                self._followers.remove(queue)

    def _take_dropped(self) -> int:
        n, self._extra_dropped = self._extra_dropped, 0
        return n


def record(end_s: int, *, source: tuple[str, str, str] = ("frontend", "pod-a", "10.250.0.10"),
           dest: tuple[str, str, str] = ("backend", "pod-b", "10.250.0.20"), port: int = 8080,
           source_port: int = 40000, ingress_action: int = af.NETWORK_POLICY_RULE_ACTION_DROP,
           ingress_type: int = af.NETWORK_POLICY_TYPE_K8S, ingress_policy: tuple[str, str] = ("", ""),
           egress_action: int = af.NETWORK_POLICY_RULE_ACTION_NO_ACTION, node: str = "node") -> af.Flow:
    """One SYNTHETIC record in the shape the reference gives: a K8s isolation drop on ingress by default."""
    pb = af.Flow(id=f"{source[2]}:{source_port}-{dest[2]}:{port}-{end_s}")
    pb.end_ts.seconds = pb.start_ts.seconds = end_s
    pb.ip.version = af.IP_VERSION_4
    pb.ip.source = bytes(int(x) for x in source[2].split("."))
    pb.ip.destination = bytes(int(x) for x in dest[2].split("."))
    pb.transport.protocol_number, pb.transport.source_port, pb.transport.destination_port = 6, source_port, port
    pb.transport.TCP.state_name = "SYN_SENT"
    k = pb.k8s
    k.flow_type = af.FLOW_TYPE_INTRA_NODE
    k.source_pod_namespace, k.source_pod_name, k.source_node_name = source[0], source[1], node
    k.destination_pod_namespace, k.destination_pod_name, k.destination_node_name = dest[0], dest[1], node
    k.ingress_network_policy_type = ingress_type  # type: ignore[assignment]
    k.ingress_network_policy_namespace, k.ingress_network_policy_name = ingress_policy
    k.ingress_network_policy_rule_action = ingress_action  # type: ignore[assignment]
    k.egress_network_policy_rule_action = egress_action  # type: ignore[assignment]
    return pb
