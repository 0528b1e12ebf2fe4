"""Benchmark: loading and indexing a large cluster state, and what-if evaluations per second.

Targets (issue "Foundation and policy engine"): for 5,000 pods, 500 namespaces
and 1,000 policies, load + index under 3 s from JSON and from YAML, and at
least 5,000 what-if evaluations per second on one core.

    python bench/engine.py                 # full size, prints human lines then one JSON object
    python bench/engine.py --quick         # a tenth of the size, for a smoke run
    python bench/engine.py --profile       # also print the top of a cProfile of each phase

Exit code 0 whatever the figures, unless --check is given: then 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import statesynth  # a sibling script, not a package

from drop_explainer.cli import run_batch
from drop_explainer.cluster.loading import load_state
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Connection, Engine

LOAD_TARGET_S = 3.0
EVAL_TARGET_PER_S = 5000.0
OTHER_PORTS = (53, 80, 443, 5432, 6379, 8080, 9090, 12345)


def _pin_to_one_core() -> str:
    """Python runs on one core anyway; pinning keeps the OS from moving it mid-run."""
    if hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to cpu {core}"
    return "not pinned"


def _timed(fn: Callable[[], Any], profile: bool, label: str) -> tuple[float, Any]:
    gc.collect()
    prof = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if prof is not None:
        prof.enable()
    result = fn()
    if prof is not None:
        prof.disable()
    elapsed = time.perf_counter() - start
    if prof is not None:
        print(f"--- profile: {label} ---")
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(18)
    return elapsed, result


def measure_load(path: Path, repeat: int, profile: bool) -> tuple[dict[str, float], ClusterState]:
    """Best and median of load_state + Engine(state).index_all(), and the two parts of the best run."""
    totals, loads, indexes = [], [], []
    state: ClusterState | None = None
    for i in range(repeat):
        load_s, state = _timed(lambda: load_state(path), profile and i == 0, f"load {path.suffix}")
        engine = Engine(state)
        index_s, _ = _timed(engine.index_all, False, "index")
        totals.append(load_s + index_s)
        loads.append(load_s)
        indexes.append(index_s)
    assert state is not None
    best = totals.index(min(totals))
    return {"best_s": round(totals[best], 3), "median_s": round(statistics.median(totals), 3),
            "load_s": round(loads[best], 3), "index_s": round(indexes[best], 4),
            "file_mb": round(path.stat().st_size / 1e6, 1)}, state


def make_queries(state: ClusterState, count: int, seed: int) -> list[str]:
    """What-if questions in the batch format: mostly pod to pod, some with nodes and the outside."""
    rng = random.Random(seed)
    pods_by_key = sorted((p for p in state.pods.values() if p.ips), key=lambda p: p.key)
    node_ips = sorted(state.node_by_ip)
    lines = []
    for _ in range(count):
        dst = rng.choice(pods_by_key)
        ports = [cp for c in dst.containers for cp in c.ports]
        if ports and rng.random() < 0.75:
            cp = rng.choice(ports)
            port, proto = cp.container_port, cp.protocol
        else:
            port, proto = rng.choice(OTHER_PORTS), rng.choice(("TCP", "TCP", "TCP", "UDP"))
        src_ref = rng.choice(pods_by_key).key
        dst_ref = dst.key
        roll = rng.random()
        if roll < 0.10:
            src_ref = rng.choice(node_ips)
        elif roll < 0.18:
            dst_ref, port = f"203.0.113.{rng.randint(1, 254)}", 443
        elif roll < 0.22:
            src_ref = f"198.51.100.{rng.randint(1, 254)}"
        elif roll < 0.40:
            src_ref = rng.choice(pods_by_key).ips[0]  # by address, as flows name them
        lines.append(json.dumps({"from": src_ref, "to": dst_ref, "port": port, "protocol": proto}))
    return lines


def measure_batch(engine: Engine, lines: list[str], profile: bool) -> dict[str, Any]:
    out = io.StringIO()
    elapsed, _ = _timed(lambda: run_batch(engine, lines, out), profile, "run_batch")
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    errors = sum(1 for a in answers if "error" in a)
    allowed = sum(1 for a in answers if a.get("allowed"))
    return {"queries": len(lines), "seconds": round(elapsed, 3), "per_s": round(len(lines) / elapsed),
            "allowed": allowed, "denied": len(answers) - allowed - errors, "errors": errors}


def measure_raw(engine: Engine, lines: list[str], profile: bool) -> dict[str, Any]:
    conns: list[Connection] = [
        queries.connection(engine.state, queries.parse_query(json.loads(line))) for line in lines
    ]

    def run() -> int:
        return sum(engine.evaluate(c).allowed for c in conns)

    elapsed, _ = _timed(run, profile, "Engine.evaluate")
    return {"evaluations": len(conns), "seconds": round(elapsed, 3), "per_s": round(len(conns) / elapsed)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    statesynth.add_size_arguments(parser)
    parser.add_argument("--queries", type=int, default=50_000, help="what-if questions to time [50000]")
    parser.add_argument("--repeat", type=int, default=3, help="loads per format; best and median reported [3]")
    parser.add_argument("--quick", action="store_true", help="500 pods, 50 namespaces, 100 policies, 5000 queries")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each timed phase")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="write the state here instead of a temp dir")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.pods, args.namespaces, args.policies, args.queries, args.repeat = 500, 50, 100, 5000, 1
    sizes = statesynth.Sizes(args.pods, args.namespaces, args.policies, args.seed)
    result: dict[str, Any] = {"sizes": vars(sizes) | {"queries": args.queries}, "cpu": _pin_to_one_core(),
                              "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="drop-explainer-bench-") as tmp:
        root = args.keep or Path(tmp)
        objs = statesynth.synthesize(sizes)
        json_path, yaml_path = statesynth.write_state(objs, root)
        result["load_json"], state = measure_load(json_path, args.repeat, args.profile)
        result["load_yaml"], _ = measure_load(yaml_path, args.repeat, args.profile)
    result["objects"] = {"pods": len(state.pods), "namespaces": len(state.namespaces), "nodes": len(state.nodes),
                         "services": len(state.services), "policies": len(state.policies)}
    engine = Engine(state)
    engine.index_all()
    lines = make_queries(state, args.queries, args.seed)
    result["batch"] = measure_batch(engine, lines, args.profile)
    result["evaluate"] = measure_raw(engine, lines, args.profile)
    result["targets"] = {
        "load_index_json_under_3s": result["load_json"]["best_s"] < LOAD_TARGET_S,
        "load_index_yaml_under_3s": result["load_yaml"]["best_s"] < LOAD_TARGET_S,
        "batch_at_least_5000_per_s": result["batch"]["per_s"] >= EVAL_TARGET_PER_S,
        "evaluate_at_least_5000_per_s": result["evaluate"]["per_s"] >= EVAL_TARGET_PER_S,
    }
    return result


def human(result: dict[str, Any]) -> str:
    o, t = result["objects"], result["targets"]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    lines = [
        f"state: {o['pods']} pods, {o['namespaces']} namespaces, {o['policies']} policies, {o['nodes']} nodes, "
        f"{o['services']} services (seed {result['sizes']['seed']}; {result['cpu']}; Python {result['python']})",
    ]
    for fmt in ("json", "yaml"):
        r = result[f"load_{fmt}"]
        lines.append(f"load+index {fmt.upper():4} {r['file_mb']:5.1f} MB: best {r['best_s']:.3f} s "
                     f"(load {r['load_s']:.3f} + index {r['index_s']:.4f}), median {r['median_s']:.3f} s "
                     f"[target < {LOAD_TARGET_S:.0f} s: {mark(t[f'load_index_{fmt}_under_3s'])}]")
    b, e = result["batch"], result["evaluate"]
    lines.append(f"batch what-if (run_batch): {b['queries']} queries in {b['seconds']:.3f} s = {b['per_s']}/s "
                 f"({b['allowed']} allowed, {b['denied']} denied, {b['errors']} errors) "
                 f"[target >= {EVAL_TARGET_PER_S:.0f}/s: {mark(t['batch_at_least_5000_per_s'])}]")
    lines.append(f"Engine.evaluate (pre-resolved): {e['evaluations']} in {e['seconds']:.3f} s = {e['per_s']}/s "
                 f"[target >= {EVAL_TARGET_PER_S:.0f}/s: {mark(t['evaluate_at_least_5000_per_s'])}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    print(human(result))
    print(json.dumps(result, indent=2))
    return 1 if args.check and not all(result["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
