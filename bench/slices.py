"""Benchmark: what watching EndpointSlices costs the live snapshot.

The daemon watches EndpointSlices with the other kinds (cluster/live.py) and
rebuilds its snapshot from all of them; this measures, on the synthetic
5,000-pod state with one EndpointSlice per Service (every backend pod ready,
as the EndpointSlice controller would write them), the memory of the parsed
slices and the rebuild time with and without them.

    python bench/slices.py            # prints the figures
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from typing import Any

import statesynth  # a sibling script, not a package

from drop_explainer.cluster import kubeapi
from drop_explainer.cluster.state import ClusterState

Json = dict[str, Any]


def endpoint_slices(objs: list[Json]) -> list[Json]:
    """One slice per Service: its selected pods' addresses on the first port (8080, named like the Service's)."""
    by_ns: dict[str, list[Json]] = {}
    for pod in (o for o in objs if o["kind"] == "Pod" and o.get("status", {}).get("podIP")):
        by_ns.setdefault(pod["metadata"]["namespace"], []).append(pod)
    out = []
    for svc in (o for o in objs if o["kind"] == "Service"):
        ns, selector, port = svc["metadata"]["namespace"], svc["spec"]["selector"], svc["spec"]["ports"][0]
        backends = [p for p in by_ns.get(ns, []) if selector.items() <= p["metadata"].get("labels", {}).items()]
        out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                    "metadata": {"name": f"{svc['metadata']['name']}-x7k2p", "namespace": ns,
                                 "labels": {"kubernetes.io/service-name": svc["metadata"]["name"]}},
                    "ports": [{"name": port["name"], "port": 8080, "protocol": port["protocol"]}],
                    "endpoints": [{"addresses": [p["status"]["podIP"]], "conditions": {"ready": True},
                                   "nodeName": p["spec"].get("nodeName"),
                                   "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"]}}
                                  for p in backends]})
    return out


def _build_ms(objs: list[object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        ClusterState.build(objs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    statesynth.add_size_arguments(parser)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    raw = statesynth.synthesize(statesynth.Sizes(args.pods, args.namespaces, args.policies, args.seed))
    slices = endpoint_slices(raw)
    parsed = [kubeapi.parse_object(kubeapi.RESOURCE_BY_KIND[o["kind"]], o) for o in raw]
    tracemalloc.start()
    parsed_slices = [kubeapi.parse_object(kubeapi.RESOURCE_BY_KIND["EndpointSlice"], o) for o in slices]
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    endpoints = sum(len(s["endpoints"]) for s in slices)
    print(f"{sum(o['kind'] == 'Pod' for o in raw)} pods, {len(slices)} Services, {len(slices)} EndpointSlices, "
          f"{endpoints} endpoints")
    print(f"parsed EndpointSlices held: {held / 1e6:.2f} MB ({held / max(1, endpoints):.0f} B per endpoint)")
    print(f"snapshot rebuild, median of {args.rounds}: {_build_ms(parsed, args.rounds):.1f} ms without slices, "
          f"{_build_ms(parsed + parsed_slices, args.rounds):.1f} ms with them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
