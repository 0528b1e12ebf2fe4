"""Benchmark: a flood of distinct new drops through the whole daemon, while the API is polled.

Not a test. Someone who can make ~20,000 distinct connections drop (a port
scan from a compromised pod, a broken rollout) must neither stall the API
long enough for the liveness probe to restart the pod nor evict the forensic
record of everyone else. This measures exactly that:

- The synthetic state of bench/statesynth.py (5,000 pods, 500 namespaces,
  1,000 policies). ``--bystanders`` denied connections (100) are recorded in
  the store file first, through the real pipeline: the record the flood must
  not erase. Their affected pods take no part in the flood.
- A test Hubble server (a child process on the load core) holds ``--flood``
  (200,000) further denied connections, no two with the same drop signature,
  and streams them as fast as the daemon reads; every ``--hostile-every``-th
  (2,000th) carries 10,000 labels and the next one a 1 MB string.
- The daemon is ``drop-explainer run --source hubble`` as a subprocess pinned
  to the daemon core, with its default limits (admission of new signatures,
  the store's caps, the 5 ms yield budget) except the per-caller API rate
  (``--api-rate 0``): all polling comes from one loopback caller at 30/s,
  which that limit would answer with 429s (bench/api_load.py measures it).
- This process polls ``/healthz`` (``--health-rate``/s) on the probe port
  (``--probe-port``, answered off the event loop; deploy/'s probes use it)
  and on the API port, and
  ``GET /drops?limit=20`` (``--get-rate``/s, text and JSON alternately), open
  loop: each latency counts from the scheduled send, so a stalled daemon
  cannot hide behind a slowed client (``/metrics`` is scraped every 5 s,
  as Prometheus would). Polling runs from the first flood flow
  received until every flood flow has been explained.

The server sends faster than any daemon explains new drops, so most of the
flood is shed by the source's bounded queue (drop-oldest, counted in
``drop_explainer_queue_overflow_total``): that bound is what keeps memory
flat. The flood ends when every flow was explained or shed.

Reported: p50/p99/max of each, flood duration, the daemon's peak RSS
(VmHWM) against the pod limit in deploy/, signatures in the store, new
signatures deferred by admission, and how many bystander signatures are still
in the store afterwards (must be all).

    .venv/bin/python bench/flood.py [--flood 200000] [--bystanders 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import pipeline as pb  # the sibling benchmark: state, denied connections, prefill, child processes
import statesynth

from drop_explainer.hubble_pb import flow_pb2
from drop_explainer.sinks.store import DropStore

TARGETS = {"healthz_p99_ms": 100.0, "get_p99_ms": 500.0, "rss_limit_mb": 384.0}
SCRAPE_EVERY_S = 5.0  # as a Prometheus scrape (15-30 s usually): /metrics renders every pod's series on the loop
SPACING_NS = 1_000  # flow time between flood flows: all of them inside the last second before the flood


def hostile(template: flow_pb2.Flow, i: int, every: int) -> flow_pb2.Flow:
    """Every ``every``-th flood flow carries 10,000 labels, the next one a 1 MB workload name.

    The hostile sizes of the robustness issue, inside the flood: the peak
    RSS measured is then the one to size the pod's memory limit by.
    """
    if every <= 0 or i % every > 1:
        return template
    out = flow_pb2.Flow()
    out.CopyFrom(template)
    if i % every == 0:
        out.source.labels.extend(f"k8s:hostile{k}=v{k}" for k in range(10_000))
    else:
        out.destination.workloads.add(name="w" * 1_000_000, kind="Deployment")
    return out


def _sum_metric(text: str, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(m.group(1)) for m in pattern.finditer(text))


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {"received": _sum_metric(text, "drop_explainer_flows_received_total"),
            "explained": _sum_metric(text, "drop_explainer_drops_total"),
            "signatures": _sum_metric(text, "drop_explainer_store_signatures"),
            "deferred": _sum_metric(text, "drop_explainer_new_signatures_deferred_total"),
            "evictions": _sum_metric(text, "drop_explainer_store_evictions_total"),
            "queue_overflow": _sum_metric(text, "drop_explainer_queue_overflow_total")}


async def poll(port: int, path: str, rate: float, *, stop: asyncio.Event, out: list[float],
               errors: list[str]) -> None:
    """Open-loop GETs at ``rate``/s until ``stop``: latency from the scheduled send, in seconds."""
    interval = 1.0 / rate
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        pending: set[asyncio.Task[None]] = set()

        async def one(scheduled: float, n: int) -> None:
            headers = {"Accept": "application/json"} if n % 2 else {}
            try:
                async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(f"{path}: HTTP {r.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{path}: {type(exc).__name__}")
            out.append(time.perf_counter() - scheduled)

        start, n = time.perf_counter(), 0
        while not stop.is_set():
            scheduled = start + n * interval
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            task = asyncio.create_task(one(scheduled, n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)


def bystanders_left(store_path: str, bystanders: list[pb.Denied]) -> int:
    with DropStore(store_path) as store:
        return sum(1 for d in bystanders if store.query(pod=d.affected))


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    pb.note("flood: synthesizing the state")
    state = pb.synthesize(statesynth.Sizes(), tmp / "state")
    pool = pb.DeniedPool(state, args.seed)
    bystanders = pool.take(args.bystanders)
    spared = {d.affected for d in bystanders}
    pb.note(f"flood: drawing {args.flood:,} distinct denied connections")
    flood: list[pb.Denied] = []
    while len(flood) < args.flood:
        flood += [d for d in pool.take(args.flood - len(flood)) if d.affected not in spared]
    store_path = str(tmp / "flood.db")
    now = time.time_ns()
    pb.prefill(store_path, state, bystanders, now - 3600 * pb._NS)
    spec = tmp / "flood.json"
    templates = [hostile(d.template, i, args.hostile_every) for i, d in enumerate(flood)]
    spec.write_text(json.dumps({"templates": pb.encode(templates), "count": len(flood),
                                "seed": args.seed, "t0": now - 60 * pb._NS}))
    del flood, templates
    server = pb.Child("history", str(spec), "fake")
    target = server.readline()
    port, probe_port = pb.free_port(), pb.free_port()
    cmd = [sys.executable, "-m", "drop_explainer.cli", "run", "--state", str(tmp / "state"), "--source", "hubble",
           "--hubble-target", target, "--store-path", store_path, "--port", str(port), "--listen", "127.0.0.1",
           "--probe-port", str(probe_port),
           "--events", "false", "--mode", "single", "--auth", "none", "--api-rate", "0",
           "--log-format", "json", "--log-level", "warning"]
    log = (tmp / "daemon.log").open("w")
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {pb.DAEMON_CPU})
        os.sched_setaffinity(0, {pb.LOAD_CPU})
    out: dict[str, Any] = {"flood": args.flood, "hostile_every": args.hostile_every, "bystanders": len(bystanders),
                           "command": " ".join(["python", *cmd[1:]]).replace(str(tmp), "$TMP")}
    health: list[float] = []
    health_api: list[float] = []
    gets: list[float] = []
    errors: list[str] = []
    try:
        deadline = time.monotonic() + args.timeout
        metrics: dict[str, float] = {}
        while time.monotonic() < deadline:  # the daemon up and the flood begun
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited {proc.returncode}: {(tmp / 'daemon.log').read_text()[-2000:]}")
            try:
                metrics = scrape(port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            if metrics["received"] > 0:
                break
            await asyncio.sleep(0.05)
        pb.note("flood: flowing; polling the API")
        stop = asyncio.Event()
        pollers = [asyncio.create_task(poll(at, path, rate, stop=stop, out=out, errors=errors))
                   for at, path, rate, out in ((probe_port, "/healthz", args.health_rate, health),
                                               (port, "/healthz", args.health_rate, health_api),
                                               (port, "/drops?limit=20", args.get_rate, gets))]
        t0 = time.perf_counter()
        while time.monotonic() < deadline:
            metrics = await asyncio.to_thread(scrape, port)
            # Done when every flood flow was explained or shed by the source's bounded queue (counted).
            if metrics["explained"] + metrics["queue_overflow"] >= args.flood:
                break
            await asyncio.sleep(SCRAPE_EVERY_S)
        out["flood_s"] = round(time.perf_counter() - t0, 1)
        stop.set()
        await asyncio.gather(*pollers)
        out.update({k: int(v) for k, v in metrics.items()})
        out.update(pb.proc_status(proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.close()
    out["healthz_ms"] = pb.pct_ms(health)
    out["healthz_api_port_ms"] = pb.pct_ms(health_api)
    out["get_drops_ms"] = pb.pct_ms(gets)
    out["requests"] = {"healthz": len(health) + len(health_api), "get": len(gets), "errors": len(errors),
                       "first_errors": errors[:5]}
    out["bystanders_left"] = bystanders_left(store_path, bystanders)
    out["file_mb"] = round(sum(p.stat().st_size for p in tmp.glob("flood.db*")) / 1e6, 1)
    return out


def human(r: dict[str, Any]) -> None:
    h, g = r["healthz_ms"], r["get_drops_ms"]
    print(f"flood: {r['flood']:,} distinct new drops in {r['flood_s']} s "
          f"({r['flood'] / max(r['flood_s'], 1e-9):,.0f}/s); explained {r['explained']:,}, "
          f"shed by the source's bounded queue {r['queue_overflow']:,}")
    a = r["healthz_api_port_ms"]
    print(f"  /healthz       p50 {h['p50_ms']} ms  p99 {h['p99_ms']} ms  max {h['max_ms']} ms  "
          f"(the probe port, which deploy/'s probes use; target p99 < {TARGETS['healthz_p99_ms']:.0f} ms)")
    print(f"  /healthz (API port) p50 {a['p50_ms']} ms  p99 {a['p99_ms']} ms  max {a['max_ms']} ms  "
          "(behind the event loop's work)")
    print(f"  GET /drops     p50 {g['p50_ms']} ms  p99 {g['p99_ms']} ms  max {g['max_ms']} ms  "
          f"(target p99 < {TARGETS['get_p99_ms']:.0f} ms)")
    print(f"  requests {r['requests']['healthz'] + r['requests']['get']:,}, errors {r['requests']['errors']}")
    print(f"  store: {r['signatures']:,} signatures ({r['file_mb']} MB), {r['deferred']:,} new signatures deferred, "
          f"{r['evictions']:,} evictions; bystanders still stored {r['bystanders_left']} of {r['bystanders']}")
    print(f"  daemon RSS {r.get('VmRSS')} MB, peak {r.get('VmHWM')} MB (pod limit {TARGETS['rss_limit_mb']:.0f} Mi)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flood", type=int, default=200_000)
    p.add_argument("--bystanders", type=int, default=100)
    p.add_argument("--hostile-every", type=int, default=2000,
                   help="every Nth flood flow has 10,000 labels, the next a 1 MB string (0: none)")
    p.add_argument("--health-rate", type=float, default=20.0)
    p.add_argument("--get-rate", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    if not args.json:
        human(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
