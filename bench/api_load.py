"""Load test of the API: 50 parallel what-if callers against the real daemon on loopback.

The daemon is the real CLI (`drop-explainer run --state ...`) in its own
process, pinned to one core, serving the 5,000-pod synthetic state
(bench/statesynth.py, as bench/pipeline.py builds it); the callers run in this
process on the other core. Each caller sends from its own loopback address
(127.0.0.N), so under `--auth none` each is its own caller for the rate limit.

- ``--polite`` callers ask at ``--polite-rate`` what-ifs/s each (open loop),
  under the daemon's ``--api-rate``: they should be answered, not refused.
- the other callers (``--callers`` minus ``--polite``) ask at ``--greedy-rate``/s each
  (over the rate): they must get 429 with Retry-After for the excess.
- a prober asks ``/healthz`` every 50 ms from yet another address.

Prints one JSON line: /healthz p50/p99/max, the statuses each group got, the
what-if latencies of the polite callers, and the daemon's cache counters.

    python bench/api_load.py [--seconds 20 --callers 50 --polite 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import statesynth

DAEMON_CPU, LOAD_CPU = 0, 1
TARGET_HEALTHZ_P99_MS = 100.0


def pct_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_ms": round(statistics.median(ordered) * 1e3, 2), "p99_ms": round(pick(0.99) * 1e3, 2),
            "max_ms": round(ordered[-1] * 1e3, 2), "n": len(ordered)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int, *, self_too: bool = True) -> list[str]:
    """The command prefix pinning a child to ``cpu``; this process goes to LOAD_CPU."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        if self_too:
            os.sched_setaffinity(0, {LOAD_CPU})
        return ["taskset", "-c", str(cpu)]
    return []


def write_state(directory: Path, sizes: statesynth.Sizes) -> tuple[Path, list[str]]:
    """The state as one kubectl -o json List, and the names ns/pod of its ordinary pods."""
    listed = statesynth.as_list(statesynth.synthesize(sizes))
    path = directory / "cluster.json"
    path.write_text(json.dumps(listed), encoding="utf-8")
    pods = [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in listed["items"]
            if o.get("kind") == "Pod" and o["metadata"]["namespace"] != "kube-system"]
    return path, pods


async def until_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            try:
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the daemon did not become ready")


class Results:
    def __init__(self) -> None:
        self.statuses: dict[str, Counter[int]] = {"polite": Counter(), "greedy": Counter()}
        self.whatif_s: list[float] = []
        self.healthz_s: list[float] = []
        self.healthz_bad = 0
        self.retry_after_missing = 0
        self.retry_after: Counter[str] = Counter()


async def caller(port: int, address: str, queries: list[str], rate: float, *, stop: float, out: Results,
                 group: str = "polite") -> None:
    """One caller from its own address, asking at ``rate``/s (open loop: it does not wait for answers)."""
    timeout = aiohttp.ClientTimeout(total=60)
    rng = random.Random(address)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)),
                                     timeout=timeout) as session:

        async def one(at: float) -> None:
            url = f"http://127.0.0.1:{port}{rng.choice(queries)}"
            try:
                async with session.get(url) as r:
                    await r.read()
                    status = r.status
                    if status == 429:
                        ra = r.headers.get("Retry-After")
                        out.retry_after[ra or "missing"] += 1
                        out.retry_after_missing += ra is None
            except (TimeoutError, aiohttp.ClientError):
                status = -1
            out.statuses[group][status] += 1
            if group == "polite" and status == 200:
                out.whatif_s.append(time.perf_counter() - at)

        tasks = []
        at = time.perf_counter() + rng.random() / rate
        while at < stop:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(at)))  # latency counts from the scheduled instant
            at += 1.0 / rate
        await asyncio.gather(*tasks)


def probe(port: int, seconds: float) -> None:
    """Child process: GET /healthz every 50 ms (its own process, so the callers' loop cannot delay it)."""
    import http.client

    times, bad = [], 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        at = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0))
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            bad += resp.status != 200
        except OSError:
            bad += 1
        finally:
            conn.close()
        times.append(time.perf_counter() - at)
        time.sleep(max(0.0, at + 0.05 - time.perf_counter()))
    print(json.dumps({"times": times, "bad": bad}), flush=True)


async def prober(port: int, seconds: float, out: Results) -> None:
    cmd = [*pin(LOAD_CPU, self_too=False), sys.executable, __file__, "--probe", str(port), "--seconds", str(seconds)]
    child = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await child.communicate()
    found = json.loads(stdout)
    out.healthz_s, out.healthz_bad = found["times"], found["bad"]


def metric(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="api-load-") as tmp:
        state, pods = write_state(Path(tmp), statesynth.Sizes(seed=args.seed))
        rng = random.Random(args.seed)
        ports = (80, 8080, 5432, 6379)
        queries = [f"/whatif?from={rng.choice(pods)}&to={rng.choice(pods)}&port={rng.choice(ports)}"
                   for _ in range(args.distinct)]
        port = free_port()
        cmd = [*pin(DAEMON_CPU), sys.executable, "-c", "from drop_explainer.cli import main; main()", "run",
               "--state", str(state), "--listen", "127.0.0.1", "--port", str(port), "--mode", "single",
               "--auth", "none", "--events", "false", "--store-path", ":memory:", "--log-level", "warning",
               "--api-rate", str(args.api_rate), "--api-burst", str(args.api_burst), *args.daemon_arg]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await until_ready(port, proc)
            out = Results()
            stop = time.perf_counter() + args.seconds
            polite = [caller(port, f"127.0.0.{10 + i}", queries, args.polite_rate, stop=stop, out=out)
                      for i in range(args.polite)]
            greedy = [caller(port, f"127.0.0.{10 + i}", queries, args.greedy_rate, stop=stop, out=out,
                             group="greedy")
                      for i in range(args.polite, args.callers)]
            await asyncio.gather(prober(port, args.seconds, out), *polite, *greedy)
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
                metrics = await r.text()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    healthz = pct_ms(out.healthz_s)
    return {
        "callers": args.callers, "polite": args.polite, "polite_rate_per_s": args.polite_rate,
        "api_rate": args.api_rate, "api_burst": args.api_burst, "seconds": args.seconds,
        "healthz": healthz | {"not_200": out.healthz_bad},
        "healthz_p99_ok": bool(healthz) and healthz["p99_ms"] < TARGET_HEALTHZ_P99_MS,
        "polite_statuses": dict(out.statuses["polite"]), "greedy_statuses": dict(out.statuses["greedy"]),
        "polite_whatif": pct_ms(out.whatif_s),
        "retry_after_missing": out.retry_after_missing,
        "retry_after_values": dict(out.retry_after.most_common(3)),
        "whatif_cache": {"hit": metric(metrics, "drop_explainer_api_whatif_cache_total", 'result="hit"'),
                         "miss": metric(metrics, "drop_explainer_api_whatif_cache_total", 'result="miss"')},
        "refused": {"rate": metric(metrics, "drop_explainer_api_refused_total", 'reason="rate"'),
                    "deadline": metric(metrics, "drop_explainer_api_refused_total", 'reason="deadline"')},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--callers", type=int, default=50)
    p.add_argument("--polite", type=int, default=40, help="callers under the rate; the rest flood")
    p.add_argument("--polite-rate", type=float, default=0.5, help="what-ifs/s of each polite caller")
    p.add_argument("--api-rate", type=float, default=1.0, help="the daemon's --api-rate")
    p.add_argument("--api-burst", type=int, default=3, help="the daemon's --api-burst")
    p.add_argument("--distinct", type=int, default=2000, help="distinct what-if questions asked")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--greedy-rate", type=float, default=5.0, help="what-ifs/s of each caller over the rate")
    p.add_argument("--daemon-arg", action="append", default=[], help="another flag for the daemon (repeatable)")
    p.add_argument("--probe", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        probe(args.probe, args.seconds)
        return
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
