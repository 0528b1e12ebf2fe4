"""Benchmark: Hubble gRPC stream -> HubbleSource -> normalised Flow records.

Not a test. N recorded POLICY_DENIED SYN drops (varying source ports and
times) are served by the package's FakeHubbleServer in a child process on
127.0.0.1; this process (pinned to one core when the machine has two)
reads them through ``HubbleSource.stream_flows()``. In the same run it also
measures, on the same serialized messages:

- ``decode``: ``GetFlowsResponse.FromString`` alone (the raw decode rate);
- ``decode+normalise``: FromString + ``flow_from_response``, no transport;
- ``transport``: a bare grpc.aio read loop handing over raw bytes, no
  decoding (what gRPC itself costs per message);
- ``source``: the full path, what the daemon gets.

Usage (from the repository root):
    .venv/bin/python bench/hubble_stream.py [--flows 200000] [--template full|docs] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf import json_format

from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.normalise import hubble as normalise
from drop_explainer.sources import hubble
from drop_explainer.testing.hubble_server import FakeHubbleServer, policy_denied_syn

REPO = Path(__file__).resolve().parents[1]
DOCS_FIXTURE = REPO.parent / "shared" / "fixtures" / "hubble" / "cilium-docs_hubble-export-example.jsonl"
T0 = 1_750_000_000_000_000_000
SPACING_NS = 50_000  # 20,000 drops/s of flow time: the dedup windows hold what they would live


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


async def serve(count: int, kind: str) -> None:
    """Child process: serve the flows and print the port."""
    pin(1)
    server = FakeHubbleServer(build_flows(count, kind), max_flows=count)
    await server.start()
    print(server.target, flush=True)
    await asyncio.Event().wait()


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


async def bench_source(target: str, count: int) -> tuple[float, float, hubble.HubbleStats]:
    source = hubble.HubbleSource(hubble.HubbleSettings(target=target, initial_number=count, queue_size=count))
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


async def run(count: int, kind: str) -> dict[str, object]:
    pin(0)
    raw = [observer_pb2.GetFlowsResponse(flow=f, node_name=f.node_name, time=f.time).SerializeToString()
           for f in build_flows(count, kind)]
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--flows", str(count), "--template", kind],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        target = server.stdout.readline().strip()
        decoding = bench_decode(raw)
        transport = await bench_transport(target, count)
        wall, per_cpu, stats = await bench_source(target, count)
        return {
            "flows": count, "template": kind, "message_bytes": len(raw[0]), **decoding, "transport": transport,
            "source": wall, "source_per_cpu_second": per_cpu,
            "source_vs_decode": round(wall / decoding["decode"], 3),
            "source_vs_transport": round(wall / transport, 3),
            "overflow": stats.overflow,
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=200_000)
    parser.add_argument("--template", choices=("full", "docs"), default="full")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.flows, args.template))
        return
    results = asyncio.run(run(args.flows, args.template))
    if not args.json:
        for key in ("decode", "decode+normalise", "transport", "source", "source_per_cpu_second"):
            print(f"{key:>24}: {results[key]:>12,} flows/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
