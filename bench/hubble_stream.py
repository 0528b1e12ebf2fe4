"""Benchmark: Hubble gRPC stream -> HubbleSource -> normalised Flow records.

Not a test. N synthetic POLICY_DENIED SYN drops (varying source ports and
times) are served from a child process on 127.0.0.1 (pinned to the second
core when there is one); this process (pinned to the first) reads them.
In the same run it measures, on the same serialized messages:

- ``decode``: ``GetFlowsResponse.FromString`` alone (the raw decode rate);
- ``decode+normalise``: FromString + ``flow_from_response``, no transport;
- ``transport_grpcio`` / ``transport_h2``: a bare read loop over grpc.aio
  or over our ``grpc_h2`` client, handing over raw bytes, no decoding;
- ``source_h2`` / ``source_grpcio``: the full ``HubbleSource.stream_flows()``
  path with each transport, what the daemon gets (``source`` = the default
  transport, h2).

Which server (``--server``):

- ``fast`` (default): an asyncio + h2 server that sends the pre-serialized
  responses back to back in 16 KiB DATA frames, as grpc-go (Hubble's server)
  coalesces queued messages into frames of up to 16 KiB. It costs ~1 µs a
  message, so the client is what is measured.
- ``fake``: the package's FakeHubbleServer (grpc.aio). It spends ~25 µs of
  Python per message, so near 40k messages/s the server, not the client,
  is the limit: ``*_server_cpu`` shows its share of one core per run.

Usage (from the repository root):
    .venv/bin/python bench/hubble_stream.py [--flows 200000] [--template full|docs] [--server fast|fake] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
import h2.config
import h2.connection
import h2.events
from google.protobuf import json_format

from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.normalise import hubble as normalise
from drop_explainer.sources import grpc_h2, hubble
from drop_explainer.testing.hubble_server import FakeHubbleServer, policy_denied_syn

REPO = Path(__file__).resolve().parents[1]
DOCS_FIXTURE = REPO.parent / "shared" / "fixtures" / "hubble" / "cilium-docs_hubble-export-example.jsonl"
T0 = 1_750_000_000_000_000_000
SPACING_NS = 50_000  # 20,000 drops/s of flow time: the dedup windows hold what they would live
GO_MAX_FRAME = 16_384  # grpc-go's http2MaxFrameLen: the largest DATA frame Hubble sends


def template(kind: str) -> flow_pb2.Flow:
    """full: a synthetic denied SYN with labels, identities, workloads; docs: the field-masked docs example."""
    if kind == "full":
        return policy_denied_syn(T0)
    line = DOCS_FIXTURE.read_text(encoding="utf-8").splitlines()[1]
    return json_format.Parse(line, observer_pb2.GetFlowsResponse()).flow


def build_flows(count: int, kind: str) -> list[flow_pb2.Flow]:
    base = template(kind)
    flows = []
    for i in range(count):
        flow = flow_pb2.Flow()
        flow.CopyFrom(base)
        flow.l4.TCP.source_port = 1024 + i % 60000
        flow.time.FromNanoseconds(T0 + i * SPACING_NS)
        flows.append(flow)
    return flows


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def serialize(flows: list[flow_pb2.Flow]) -> list[bytes]:
    return [observer_pb2.GetFlowsResponse(flow=f, node_name=f.node_name, time=f.time).SerializeToString()
            for f in flows]


async def serve(count: int, kind: str, server_kind: str) -> None:
    """Child process: serve the flows and print the target."""
    pin(1)
    if server_kind == "fake":
        server = FakeHubbleServer(build_flows(count, kind), max_flows=count)
        await server.start()
        print(server.target, flush=True)
    else:
        raw = serialize(build_flows(count, kind))
        offsets, pos = [], 0
        for item in raw:
            offsets.append(pos)
            pos += 5 + len(item)
        blob = b"".join(len(item).to_bytes(5, "big") + item for item in raw)
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: PreframedServer(blob, offsets), "127.0.0.1", 0)
        print(f"127.0.0.1:{listener.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


class PreframedServer(asyncio.Protocol):
    """GetFlows (the last ``number`` flows; open afterwards if ``follow``) from pre-framed bytes.

    Filters are ignored (every bench flow is a drop). Sends as much as the
    client's flow-control windows allow, 16 KiB per DATA frame.
    """

    def __init__(self, blob: bytes, offsets: list[int]) -> None:
        self._blob, self._offsets = blob, offsets
        self._conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self._requests: dict[int, bytearray] = {}
        self._sending: dict[int, tuple[int, bool]] = {}  # stream -> (next byte, follow)
        self._transport: asyncio.Transport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._conn.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        for event in self._conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self._requests[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self._requests[event.stream_id] += event.data
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._start(event.stream_id)
            elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                self._sending.clear()
        self._pump()

    def _start(self, stream_id: int) -> None:
        request = observer_pb2.GetFlowsRequest.FromString(bytes(self._requests.pop(stream_id)[5:]))
        number = request.number or len(self._offsets)
        self._conn.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        self._sending[stream_id] = (self._offsets[max(0, len(self._offsets) - number)], request.follow)

    def _pump(self) -> None:
        conn, end = self._conn, len(self._blob)
        for stream_id, (start, follow) in list(self._sending.items()):
            pos = start
            while pos < end and not self._paused:
                size = min(conn.local_flow_control_window(stream_id), GO_MAX_FRAME, end - pos)
                if size <= 0:
                    break
                conn.send_data(stream_id, self._blob[pos:pos + size])
                pos += size
                self._flush()
            self._sending[stream_id] = (pos, follow)
            if pos == end:
                del self._sending[stream_id]
                if not follow:
                    conn.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
        self._flush()

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()


class ServerCpu:
    """CPU seconds the server child used, read from /proc (Linux); None elsewhere."""

    def __init__(self, pid: int) -> None:
        self._stat = Path(f"/proc/{pid}/stat")
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def seconds(self) -> float | None:
        try:
            fields = self._stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick


def rate(count: int, seconds: float) -> float:
    return round(count / seconds) if seconds > 0 else 0.0


def bench_decode(raw: list[bytes]) -> dict[str, float]:
    parse = observer_pb2.GetFlowsResponse.FromString
    start = time.perf_counter()
    for item in raw:
        parse(item)
    decode = time.perf_counter() - start
    start = time.perf_counter()
    for item in raw:
        normalise.flow_from_response(parse(item))
    both = time.perf_counter() - start
    return {"decode": rate(len(raw), decode), "decode+normalise": rate(len(raw), both)}


async def bench_transport(target: str, count: int) -> float:
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as channel:
        method: grpc.aio.UnaryStreamMultiCallable[observer_pb2.GetFlowsRequest, bytes] = channel.unary_stream(
            hubble.GET_FLOWS, request_serializer=observer_pb2.GetFlowsRequest.SerializeToString)
        call = method(observer_pb2.GetFlowsRequest(number=count))
        start, seen = time.perf_counter(), 0
        while isinstance(await call.read(), bytes):
            seen += 1
        return rate(seen, time.perf_counter() - start)


async def bench_transport_h2(target: str, count: int) -> float:
    request = observer_pb2.GetFlowsRequest(number=count).SerializeToString()
    async with grpc_h2.StreamingCall(target, hubble.GET_FLOWS, request) as call:
        start, seen = time.perf_counter(), 0
        async for batch in call.messages():
            seen += len(batch)
        return rate(seen, time.perf_counter() - start)


async def bench_source(target: str, count: int, transport: hubble.Transport
                       ) -> tuple[float, float, hubble.HubbleStats]:
    source = hubble.HubbleSource(hubble.HubbleSettings(target=target, initial_number=count, queue_size=count,
                                                       transport=transport))
    seen = 0
    start, cpu = time.perf_counter(), time.process_time()
    stream = source.stream_flows()
    async for _ in stream:
        seen += 1
        if seen == count:
            break
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    await stream.aclose()
    return rate(seen, wall), rate(seen, cpu), source.stats


async def measured(server: ServerCpu, run: Callable[[], Awaitable[float]]) -> tuple[float, float | None]:
    """The rate, and the server's CPU seconds per wall second while it ran (1.0 = one busy core)."""
    cpu, start = server.seconds(), time.perf_counter()
    result = await run()
    after, wall = server.seconds(), time.perf_counter() - start
    return result, round((after - cpu) / wall, 2) if cpu is not None and after is not None else None


async def run(count: int, kind: str, server_kind: str) -> dict[str, object]:
    pin(0)
    raw = serialize(build_flows(count, kind))
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--flows", str(count), "--template", kind,
                               "--server", server_kind], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        target = server.stdout.readline().strip()
        cpu = ServerCpu(server.pid)
        decoding = bench_decode(raw)
        results: dict[str, object] = {"flows": count, "template": kind, "server": server_kind,
                                      "message_bytes": len(raw[0]), **decoding}
        sources: dict[str, tuple[float, float, hubble.HubbleStats]] = {}

        async def source(transport: hubble.Transport) -> float:
            sources[transport] = await bench_source(target, count, transport)
            return sources[transport][0]

        for name, bench in (("transport_grpcio", lambda: bench_transport(target, count)),
                            ("transport_h2", lambda: bench_transport_h2(target, count)),
                            ("source_grpcio", lambda: source("grpcio")),
                            ("source_h2", lambda: source("h2"))):
            results[name], results[f"{name}_server_cpu"] = await measured(cpu, bench)
        wall, per_cpu, stats = sources["h2"]
        results.update({
            "source": wall, "source_per_cpu_second": per_cpu,
            "source_vs_decode": round(wall / decoding["decode"], 3),
            "source_vs_decode+normalise": round(wall / decoding["decode+normalise"], 3),
            "overflow": stats.overflow + sources["grpcio"][2].overflow,
        })
        return results
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=200_000)
    parser.add_argument("--template", choices=("full", "docs"), default="full")
    parser.add_argument("--server", choices=("fast", "fake"), default="fast",
                        help="fast: pre-framed h2 server (the client is measured); fake: FakeHubbleServer (grpc.aio)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.flows, args.template, args.server))
        return
    results = asyncio.run(run(args.flows, args.template, args.server))
    if not args.json:
        for key in ("decode", "decode+normalise", "transport_grpcio", "transport_h2", "source_grpcio", "source_h2",
                    "source_per_cpu_second"):
            server_cpu = results.get(f"{key}_server_cpu")
            note = f"   (server: {server_cpu:.0%} of a core)" if isinstance(server_cpu, float) else ""
            print(f"{key:>24}: {results[key]:>12,} flows/s{note}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
