"""Benchmark: explaining a new drop on the 5,000-pod state, and a repeat from the cache.

Not a test. Denied connections are drawn at random from the synthetic state
of bench/statesynth.py (5,000 pods, 500 namespaces, 1,000 policies), turned
into dropped-flow records as a source would deliver them, and each is
explained once without cache (a new drop: trace every rule, detect traps,
plan and verify the fix, compute its blast radius), then again through the
cache (a repeat). Target: median < 2 ms for a new drop.

    .venv/bin/python bench/explain.py [--drops 2000] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import statesynth

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.cache import ExplanationCache
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Protocol, Verdict
from drop_explainer.policy import endpoints
from drop_explainer.policy.engine import Connection, Engine


def build_state(sizes: statesynth.Sizes) -> ClusterState:
    objs = statesynth.synthesize(sizes)
    return ClusterState.build(parse_documents("bench", json.dumps(statesynth.as_list(objs))))


def _endpoint(pod: Any) -> Endpoint:
    return Endpoint(EndpointKind.POD, pod.ips[0], pod.namespace, pod.name, dict(pod.labels))


def denied_flows(engine: Engine, count: int, seed: int) -> list[Flow]:
    """Distinct denied (source, destination, port) as the CNI would report them."""
    rng = random.Random(seed)
    pods = [p for p in engine.state.pods.values() if p.ips and not p.host_network]
    out: list[Flow] = []
    seen: set[tuple[str, str, int]] = set()
    t = 1_764_000_000 * 10**9
    while len(out) < count:
        src, dst = rng.choice(pods), rng.choice(pods)
        ports = [(p.container_port, p.protocol) for c in dst.containers for p in c.ports] or [(80, "TCP")]
        port, proto = rng.choice(ports)
        key = (src.key, dst.key, port)
        if src is dst or key in seen:
            continue
        verdict = engine.evaluate(Connection(endpoints.pod_subject(engine.state, src),
                                             endpoints.pod_subject(engine.state, dst), port, proto))
        if verdict.allowed:
            continue
        seen.add(key)
        direction = Direction.EGRESS if not verdict.egress.allowed else Direction.INGRESS
        t += 1_000_000
        out.append(Flow(time_ns=t, verdict=Verdict.DROPPED, source=_endpoint(src), destination=_endpoint(dst),
                        protocol=Protocol(proto), source_port=40000 + len(out) % 20000, destination_port=port,
                        node=dst.node_name, drop_kind=DropKind.POLICY_DENIED, drop_reason="POLICY_DENIED",
                        direction=direction, is_reply=False, tcp_flags=frozenset({"SYN"}), origin="hubble"))
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median_ms": round(statistics.median(ordered) * 1e3, 3), "p90_ms": round(pick(0.9) * 1e3, 3),
            "p99_ms": round(pick(0.99) * 1e3, 3), "max_ms": round(ordered[-1] * 1e3, 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    sizes = statesynth.Sizes(args.pods, args.namespaces, args.policies, args.seed)
    engine = Engine(build_state(sizes))
    engine.index_all()
    flows = denied_flows(engine, args.drops, args.seed)
    new: list[float] = []
    fixes_verified = 0
    for flow in flows:
        start = time.perf_counter()
        expl = explain_flow(engine, flow)
        new.append(time.perf_counter() - start)
        fixes_verified += all(f.verified for f in expl.fixes) and bool(expl.fixes)
    cache = ExplanationCache(size=len(flows) * 2)
    for flow in flows:
        cache.explain(engine, flow)
    repeats: list[float] = []
    for flow in flows:
        again = Flow(**{**{f: getattr(flow, f) for f in flow.__slots__}, "source_port": 1})  # type: ignore[attr-defined]
        start = time.perf_counter()
        cache.explain(engine, again)
        repeats.append(time.perf_counter() - start)
    return {"state": {"pods": len(engine.state.pods), "namespaces": len(engine.state.namespaces),
                      "policies": len(engine.state.policies)},
            "drops": len(flows), "new_drop": percentiles(new),
            "new_drops_per_s": round(len(new) / sum(new)),
            "repeat_from_cache": percentiles(repeats), "fixes_verified": fixes_verified,
            "cache_hits": cache.hits}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drops", type=int, default=2000)
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--namespaces", type=int, default=500)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        n, r = result["new_drop"], result["repeat_from_cache"]
        print(f"state: {result['state']}")
        print(f"new drop explained: median {n['median_ms']} ms, p90 {n['p90_ms']} ms, p99 {n['p99_ms']} ms "
              f"({result['new_drops_per_s']}/s; target median < 2 ms); fixes verified: "
              f"{result['fixes_verified']}/{result['drops']}")
        print(f"repeat from cache: median {r['median_ms']} ms, p99 {r['p99_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
