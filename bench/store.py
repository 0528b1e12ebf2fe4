"""Benchmark of the drop store: is it ever what limits the pipeline?

Measures, on a file in a temporary directory (WAL, as in the daemon):

- repeats/s: drops of known signatures, with a flush() every
  ``--flush-every`` records (about one second at the pipeline's target rate),
  flush time included;
- new signatures/s: each committed before record() returns (write-through),
  into an empty store and into a full one (where each new one evicts);
- query latency of ``query(namespace=..., pod=...)`` and of a ten-minute
  window query on a full store (``--signatures``, default 20,000).

Run: ``.venv/bin/python bench/store.py`` (prints one JSON object).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks.base import DropSignature, ExplainedDrop
from drop_explainer.sinks.store import DropStore

T0 = 1_764_122_280_000_000_000
MINUTE = 60_000_000_000
PODS = 200
STATE = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: web, labels: {kubernetes.io/metadata.name: web}}}
- {kind: Namespace, metadata: {name: api, labels: {kubernetes.io/metadata.name: api}}}
- kind: Pod
  metadata: {name: a, namespace: web, labels: {app: frontend}}
  spec: {containers: [{name: c}]}
  status: {phase: Running, podIP: 10.0.1.1}
- kind: Pod
  metadata: {name: b, namespace: api, labels: {app: backend}}
  spec: {containers: [{name: s, ports: [{containerPort: 8080}]}]}
  status: {phase: Running, podIP: 10.0.2.1}
- kind: NetworkPolicy
  metadata: {name: default-deny, namespace: api, resourceVersion: "7"}
  spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def _pod(ns: str, name: str) -> Endpoint:
    return Endpoint(EndpointKind.POD, None, ns, name)


def _explanation() -> Explanation:
    """A real explanation with a fix, so new signatures pay for rendering as in the daemon."""
    engine = Engine(ClusterState.build(parse_documents("bench", STATE)))
    return explain_flow(engine, Flow(T0, Verdict.DROPPED, Endpoint(EndpointKind.POD, "10.0.1.1", "web", "a"),
                                     Endpoint(EndpointKind.POD, "10.0.2.1", "api", "b"), destination_port=8080,
                                     drop_kind=DropKind.POLICY_DENIED, direction=Direction.INGRESS))


def _drops(expl: Explanation, count: int, *, first: int = 0, at_ns: int = T0) -> list[ExplainedDrop]:
    """Signatures first..first+count-1 spread over PODS pods in ten namespaces; one flow each."""
    out = []
    for n in range(first, first + count):
        ns, pod, port = f"ns-{n % 10}", f"pod-{n % PODS}", 1000 + n // PODS
        flow = Flow(at_ns + n * 1_000_000, Verdict.DROPPED, _pod("web", f"client-{n % 7}"), _pod(ns, pod),
                    destination_port=port, node=f"node-{n % 5}", drop_kind=DropKind.POLICY_DENIED,
                    direction=Direction.INGRESS, connections=1 + n % 3)
        sig = DropSignature(f"web/client-{n % 7}", f"{ns}/{pod}", port, "TCP", "ingress", (f"{ns}/default-deny",), ())
        out.append(ExplainedDrop(flow, expl, sig))
    return out


def _rate(count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def _ms(values: list[float], q: float) -> float:
    return round(sorted(values)[int(q * (len(values) - 1))] * 1e3, 3)


def bench_repeats(path: Path, expl: Explanation, repeats: int, flush_every: int) -> dict[str, float]:
    """A storm over 1,000 known signatures, flows 50 ms apart: new minute buckets keep appearing."""
    known = _drops(expl, 1000)
    later = [replace(d, flow=replace(d.flow, time_ns=d.flow.time_ns + i * 50_000_000))
             for i, d in enumerate(known * 10)]
    flushes: list[float] = []
    with DropStore(path) as store:
        for drop in known:
            store.record(drop)

        def run() -> None:
            for i in range(repeats):
                store.record(later[i % len(later)])
                if i % flush_every == flush_every - 1:
                    t = time.perf_counter()
                    store.flush()
                    flushes.append(time.perf_counter() - t)
            store.flush()

        rate = _rate(repeats, run)
    return {"repeats_per_s": round(rate), "flush_ms_p50": _ms(flushes, 0.5), "flush_ms_max": _ms(flushes, 1.0)}


def bench_new(path: Path, expl: Explanation, count: int, full: int) -> dict[str, float]:
    fresh = _drops(expl, count)
    with DropStore(path) as store:
        empty_rate = _rate(count, lambda: [store.record(d) for d in fresh])
    with DropStore(path.with_suffix(".full"), max_total=full) as store:
        for drop in _drops(expl, full, first=count):
            store.record(drop)
        more = _drops(expl, count, first=count + full)
        full_rate = _rate(count, lambda: [store.record(d) for d in more])
        evictions = store.evictions
    return {"new_per_s_empty_store": round(empty_rate), "new_per_s_full_store": round(full_rate),
            "evictions_in_full_store": evictions}


def bench_queries(path: Path, expl: Explanation, signatures: int, rounds: int) -> dict[str, float | int]:
    with DropStore(path, max_total=signatures) as store:
        for minute in range(3):  # every signature seen in three minutes: three buckets each
            for drop in _drops(expl, signatures, at_ns=T0 + minute * MINUTE):
                store.record(drop)
            store.flush()
        size = store.size()
        by_pod: list[float] = []
        window: list[float] = []
        for i in range(rounds):
            t = time.perf_counter()
            found = store.query(namespace=f"ns-{i % 10}", pod=f"pod-{(i % 20) * 10 + i % 10}")
            by_pod.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.query(since_ns=T0 + MINUTE, until_ns=T0 + 11 * MINUTE)
            window.append(time.perf_counter() - t)
    file_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
    return {"store_signatures": size, "rows_per_pod_query": len(found), "file_mb": round(file_mb, 1),
            "query_pod_ms_p50": _ms(by_pod, 0.5), "query_pod_ms_p99": _ms(by_pod, 0.99),
            "query_window_limit100_ms_p50": _ms(window, 0.5), "query_window_limit100_ms_p99": _ms(window, 0.99)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Drop store benchmark (prints JSON).")
    parser.add_argument("--repeats", type=int, default=200_000)
    parser.add_argument("--flush-every", type=int, default=20_000)
    parser.add_argument("--new", type=int, default=5_000)
    parser.add_argument("--signatures", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    expl = _explanation()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"python": sys.version.split()[0],
               **bench_repeats(Path(tmp, "repeats.db"), expl, args.repeats, args.flush_every),
               **bench_new(Path(tmp, "new.db"), expl, args.new, args.signatures),
               **bench_queries(Path(tmp, "query.db"), expl, args.signatures, args.rounds)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
