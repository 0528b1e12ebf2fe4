"""Benchmark: Goldmane flows normalised and explained, alone and through the gRPC stream.

Not a test. Denied connections are drawn from the synthetic 5,000-pod state of
bench/statesynth.py (as bench/explain.py draws them) and written as Goldmane
would report them: one ``goldmane.Flow`` per flow key per 15 s bucket, pods by
``<generateName>*`` with their labels, the receiving side's Kubernetes
default deny as an EndOfTier hit whose trigger is the last isolating policy.
``--keys`` distinct flow keys each get ``--rounds`` consecutive buckets.

- ``normalise``: ``FlowResult.FromString`` + ``normalise.calico.flow_from_proto``.
- ``normalise+explain (new)``: the same, then ``explain_flow`` on each distinct
  key with no cache (a new drop every time: trace, traps, fix, blast radius).
- ``stream``: a FakeGoldmaneServer in a child process (pinned to the second
  core when there is one) serves every bucket from its history on
  127.0.0.1 (plaintext); this process (pinned to the first) runs
  ``GoldmaneSource.stream_flows()``: gRPC read, decode, normalise, dedup.
- ``stream+explain``: the same stream, each flow explained; repeats of a
  key (later buckets) are answered from a memo keyed on the whole flow key,
  as the daemon's ExplanationCache does once its key includes pod_prefix.

Goldmane emits one record per flow key per 15 s, so a cluster with 10,000
active denied keys needs ~670 flows/s.

Usage (from the repository root):
    .venv/bin/python bench/calico.py [--keys 1000] [--rounds 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import statesynth

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.objects import Pod
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows import model
from drop_explainer.goldmane_pb import goldmane_pb2 as gm
from drop_explainer.normalise import calico as normalise
from drop_explainer.policy import endpoints
from drop_explainer.policy.engine import Connection, Engine
from drop_explainer.sources import calico
from drop_explainer.testing.goldmane_server import FakeGoldmaneServer, end_of_tier, goldmane_flow

T = 1_764_000_000
BUCKET = 15


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def build_state(args: argparse.Namespace) -> ClusterState:
    objs = statesynth.synthesize(statesynth.Sizes(args.pods, args.namespaces, args.policies, args.seed))
    return ClusterState.build(parse_documents("bench", json.dumps(statesynth.as_list(objs))))


def _aggregate(pod: Pod) -> str:
    return f"{pod.generate_name}*" if pod.generate_name else pod.name


def _labels(pod: Pod) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(pod.labels.items())]


def denied_keys(engine: Engine, count: int, seed: int) -> list[gm.Flow]:
    """Distinct denied flow keys (source prefix, destination prefix, port), as Goldmane would report them."""
    rng = random.Random(seed)
    state = engine.state
    pods = [p for p in state.pods.values() if p.ips and not p.host_network]
    out: list[gm.Flow] = []
    seen: set[tuple[str, str, str, str, int]] = set()
    while len(out) < count:
        src, dst = rng.choice(pods), rng.choice(pods)
        ports = [(p.container_port, p.protocol) for c in dst.containers for p in c.ports] or [(80, "TCP")]
        port, proto = rng.choice(ports)
        key = (src.namespace, _aggregate(src), dst.namespace, _aggregate(dst), port)
        if src is dst or key in seen:
            continue
        verdict = engine.evaluate(Connection(endpoints.pod_subject(state, src), endpoints.pod_subject(state, dst),
                                             port, proto))
        if verdict.allowed:
            continue
        seen.add(key)
        ingress = not verdict.ingress.allowed
        side = verdict.ingress if ingress else verdict.egress
        trigger = max(side.policies, key=lambda p: p.name)  # Felix names the last one in policy order
        out.append(goldmane_flow(
            T, source=(src.namespace, _aggregate(src)), dest=(dst.namespace, _aggregate(dst)), dest_port=port,
            proto=proto.lower(), reporter=gm.Dst if ingress else gm.Src,
            enforced=[end_of_tier(gm.NetworkPolicy, trigger.namespace, trigger.name)],
            source_labels=_labels(src), dest_labels=_labels(dst), packets=3, connections=1))
    return out


def buckets(keys: list[gm.Flow], rounds: int) -> list[gm.Flow]:
    """Every key in each of ``rounds`` consecutive 15 s buckets, oldest first."""
    out = []
    for r in range(rounds):
        for key in keys:
            flow = gm.Flow()
            flow.CopyFrom(key)
            flow.start_time, flow.end_time = T + BUCKET * r, T + BUCKET * (r + 1)
            out.append(flow)
    return out


def memo_key(flow: model.Flow) -> tuple[object, ...]:
    src, dst = flow.source, flow.destination
    return (src.namespace, src.pod or src.pod_prefix, dst.namespace, dst.pod or dst.pod_prefix, flow.destination_port,
            flow.protocol, flow.direction, flow.attribution)


def explain_memo(engine: Engine, memo: dict[tuple[object, ...], Explanation], flow: model.Flow) -> Explanation:
    key = memo_key(flow)
    found = memo.get(key)
    if found is None:
        found = memo[key] = explain_flow(engine, flow)
    return found


def measure_offline(engine: Engine, keys: list[gm.Flow]) -> dict[str, Any]:
    raw = [gm.FlowResult(id=i, flow=f).SerializeToString() for i, f in enumerate(keys)]
    start = time.perf_counter()
    flows = [normalise.flow_from_proto(gm.FlowResult.FromString(r).flow) for r in raw]
    normalised = time.perf_counter() - start
    samples = []
    agreed = fixed = 0
    for r in raw:
        t0 = time.perf_counter()
        expl = explain_flow(engine, normalise.flow_from_proto(gm.FlowResult.FromString(r).flow))
        samples.append(time.perf_counter() - t0)
        agreed += expl.agreement.agrees is True
        fixed += bool(expl.fixes) and all(f.verified for f in expl.fixes)
    return {"normalise_per_s": round(len(flows) / normalised),
            "normalise_explain_new_per_s": round(len(samples) / sum(samples)),
            "explain_new_median_ms": round(statistics.median(samples) * 1e3, 3),
            "agreement_true": agreed, "fixes_verified": fixed, "keys": len(raw)}


async def serve(args: argparse.Namespace) -> None:
    """Child process: serve every bucket from history, print the target, wait."""
    pin(1)
    engine = Engine(build_state(args))
    flows = buckets(denied_keys(engine, args.keys, args.seed), args.rounds)
    server = FakeGoldmaneServer(flows, clock=lambda: T + BUCKET * args.rounds + 60)
    await server.start()
    print(server.target, flush=True)
    await asyncio.Event().wait()


async def measure_stream(target: str, total: int, rounds: int, engine: Engine | None) -> dict[str, Any]:
    settings = calico.GoldmaneSettings(target=target, initial_backfill_s=BUCKET * rounds + 120,
                                       queue_size=total + 1)
    source = calico.GoldmaneSource(settings)
    memo: dict[tuple[object, ...], Explanation] = {}
    stream = source.stream_flows()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    count = 0
    async for flow in stream:
        if engine is not None:
            explain_memo(engine, memo, flow)
        count += 1
        if count == total:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await stream.aclose()
    return {"flows": count, "per_s": round(count / wall), "client_cpu_share": round(cpu / wall, 2),
            "duplicates": source.stats.duplicates, "malformed": source.stats.malformed}


def run(args: argparse.Namespace) -> dict[str, Any]:
    pin(0)
    engine = Engine(build_state(args))
    engine.index_all()
    keys = denied_keys(engine, args.keys, args.seed)
    result: dict[str, Any] = {"state": {"pods": len(engine.state.pods), "namespaces": len(engine.state.namespaces),
                                        "policies": len(engine.state.policies)},
                              "offline": measure_offline(engine, keys)}
    total = args.keys * args.rounds
    child = subprocess.Popen([sys.executable, __file__, "--serve", *sys.argv[1:]], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        target = child.stdout.readline().strip()
        result["stream"] = asyncio.run(measure_stream(target, total, args.rounds, None))
        result["stream_explain"] = asyncio.run(measure_stream(target, total, args.rounds, engine))
    finally:
        child.terminate()
        child.wait()
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=1000, help="distinct denied flow keys")
    p.add_argument("--rounds", type=int, default=20, help="15 s buckets per key")
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--namespaces", type=int, default=500)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args))
        return 0
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    off, st, se = result["offline"], result["stream"], result["stream_explain"]
    print(f"state: {result['state']}; {off['keys']} denied flow keys x {args.rounds} buckets")
    print(f"normalise alone: {off['normalise_per_s']} flows/s")
    print(f"normalise+explain, every flow a new drop: {off['normalise_explain_new_per_s']} flows/s "
          f"(median {off['explain_new_median_ms']} ms; agreement {off['agreement_true']}/{off['keys']}, "
          f"fixes verified {off['fixes_verified']}/{off['keys']})")
    print(f"stream (loopback gRPC, decode, normalise, dedup): {st['per_s']} flows/s "
          f"(client CPU {st['client_cpu_share']:.0%})")
    print(f"stream+explain (repeats of a key from the memo): {se['per_s']} flows/s "
          f"(client CPU {se['client_cpu_share']:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
