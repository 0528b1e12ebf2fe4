"""Benchmark: the whole daemon, Hubble gRPC in -> explained, stored, counted drops out, on one core.

Not a test. The daemon (or the pipeline) runs in this process, pinned to the
first core; load generators (Hubble servers, an HTTP client) run in child
processes pinned to the second core. The cluster state is the synthetic one of
bench/statesynth.py (5,000 pods, 500 namespaces, 1,000 policies); every flow
is a Hubble-shaped POLICY_DENIED drop between two of its pods (k8s: labels,
namespace, pod name, IPs, TCP SYN, ingress or egress as the engine decides),
drawn with ``--seed``; no two drawn connections share a drop signature.

1. sustained: ``--flows`` recorded drops repeating ``--distinct`` denied
   connections, served from a child process and read by the in-process
   daemon (app.serve, StaticState, events off, mode single) through its
   Hubble source: with each transport (HubbleSettings.transport) and the
   store in a file and in ``:memory:`` from FakeHubbleServer (grpc.aio, one
   DATA frame a message); with the default queue (10,000: what a burst
   loses); and from bench/hubble_stream.py's pre-framed server (16 KiB
   frames, as Hubble's grpc-go sends). The source queue otherwise holds
   every flow, so nothing is lost and the rate is the daemon's. Rate = flows
   processed from the first to the last; ``steady`` leaves out the first
   10% (where the distinct connections are explained for the first time);
   ``per daemon CPU-s`` divides by this process's CPU time instead of wall
   time, so other load on a shared machine does not count. ``pipeline_alone``
   is Pipeline.process over pre-built Flow records (no gRPC, no decoding, no
   loop). Target >= 20,000/s.
2. new_signatures: ``--new`` denied connections, each a new drop signature,
   through Pipeline.process with the store in a file and the metrics sink:
   explained, committed (write-through) and counted. Then explain_flow
   alone, signature_of alone, DropStore.record alone and MetricsSink.handle
   alone over the same drops, so the bottleneck shows. Target >= 2,000/s.
3. api_latency: the in-process daemon with ``--prefill`` signatures already
   in its store, a child pushing ``--ingest-rate`` flows/s (follow) over
   ``--hot`` known connections, and another child sending GET
   /pods/{pod}/drops?limit=20 (text and JSON alternately, a new connection
   each, open loop: latency counts from the scheduled send) at
   ``--get-rate``/s to pods that have drops. Phase A: repeats only (the
   target: p99 < 50 ms). Phase B: plus ``--new-rate`` new signatures/s.
4. rss: ``python -m drop_explainer.cli run --state DIR --source replay ...``
   as a subprocess, its store file holding ``--rss-signatures`` minus
   ``--rss-explained`` signatures beforehand and the replay file (our JSON
   lines) ``--rss-explained`` more distinct denied drops (the daemon
   explains, caches and stores those itself; 4,096 fill its explanation
   cache); once /metrics shows the store full and every flow received,
   VmRSS and VmHWM from /proc/PID/status. Target < 300 MB.

Store prefills (3 and 4) go through the real pipeline and store, wired as the
daemon wires it: each drop explained for real, its fix checked, the blast
radius left to the radius worker (which a prefill does not run).

Each in-process run also reports how late a 10 ms timer fired on the loop
(``loop lag``: what an API request waits behind), the pauses of Python's
full garbage collections, and how busy each core was, all processes
together (the machine may be shared). ``--gc-freeze`` is an experiment:
gc.freeze() once the in-process daemon is up, as app.serve could do.
``--profile`` adds extra, profiled runs (the reported figures come from
unprofiled runs) and prints their cProfile tables on stderr.

    .venv/bin/python bench/pipeline.py [--quick] [--seed 1] [--json] [--profile] [--only sustained,new,latency,rss]

Human lines, then the JSON object, on stdout (only the JSON with --json);
progress on stderr. Exit code 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import dataclasses
import gc
import io
import json
import logging
import os
import platform
import pstats
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import statesynth
from prometheus_client import CollectorRegistry

from drop_explainer import app, cli
from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.objects import Pod
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.cache import ExplanationCache
from drop_explainer.explain.explaining import complete, explain_flow
from drop_explainer.flows import codec
from drop_explainer.flows.model import Flow
from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.normalise import hubble as normalise
from drop_explainer.pipeline import Pipeline, StaticState
from drop_explainer.policy import endpoints
from drop_explainer.policy.engine import Connection, Engine
from drop_explainer.settings import Settings, from_args
from drop_explainer.sinks.base import ExplainedDrop, signature_of
from drop_explainer.sinks.metrics import MetricsSink
from drop_explainer.sinks.radius import RadiusSink
from drop_explainer.sinks.store import DropStore
from drop_explainer.sources.hubble import HubbleSettings
from drop_explainer.testing.hubble_server import FakeHubbleServer

TARGETS = {"sustained_flows_per_s": 20_000, "new_signatures_per_s": 2_000, "api_p99_ms": 50.0, "rss_mb": 300.0}
SPACING_NS = 50_000  # 20,000 flows/s of flow time, as at the target rate
WARM_FRACTION = 0.1
DAEMON_CPU, LOAD_CPU = 0, 1
_NS = 1_000_000_000


# --- small helpers ----------------------------------------------------------------


def pin(cpu: int) -> str:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "not pinned"


def note(text: str) -> None:
    print(f"[pipeline] {text}", file=sys.stderr, flush=True)


def per_s(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def pct_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_ms": round(statistics.median(ordered) * 1e3, 2), "p95_ms": round(pick(0.95) * 1e3, 2),
            "p99_ms": round(pick(0.99) * 1e3, 2), "max_ms": round(ordered[-1] * 1e3, 2)}


class ProcCpu:
    """CPU seconds of another process from /proc (Linux); None elsewhere."""

    def __init__(self, pid: int) -> None:
        self._stat = Path(f"/proc/{pid}/stat")
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def seconds(self) -> float | None:
        try:
            fields = self._stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick


class CoreLoad:
    """How busy each core was over an interval, all processes together (Linux /proc/stat).

    The machine may be shared: busy(daemon core) minus the daemon's own CPU
    share is what other processes took from it while we measured.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                ticks = [int(x) for x in fields[:8]]
                out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
        return out

    def busy(self) -> dict[str, float]:
        now = self._read()
        out = {}
        for cpu, (busy, total) in now.items():
            b0, t0 = self._start.get(cpu, (busy, total))
            if total > t0:
                out[f"cpu{cpu}"] = round((busy - b0) / (total - t0), 2)
        return out


class Profiles:
    """cProfile runs collected by name, printed (to stderr) at the end with --profile."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.done: list[tuple[str, cProfile.Profile]] = []

    @contextlib.contextmanager
    def __call__(self, name: str | None) -> Iterator[None]:
        """Profile the block under this name (nothing when disabled or name is None)."""
        if not self.enabled or name is None:
            yield
            return
        prof = cProfile.Profile()
        prof.enable()
        try:
            yield
        finally:
            prof.disable()
            self.done.append((name, prof))

    def report(self, top: int = 25) -> None:
        for name, prof in self.done:
            for order in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(prof, stream=out).strip_dirs().sort_stats(order).print_stats(top)
                body = out.getvalue()
                body = body[body.find("   ncalls"):] if "   ncalls" in body else body
                print(f"\n=== profile: {name} (by {order}) ===\n{body}", file=sys.stderr)


# --- the state and the denied connections -------------------------------------------------


def synthesize(sizes: statesynth.Sizes, state_dir: Path) -> ClusterState:
    """The state, also written as one kubectl -o json List into state_dir (for the daemon subprocess).

    Nothing but the ClusterState is kept: the in-process daemon's garbage
    collector must not walk the bench's own copies.
    """
    text = json.dumps(statesynth.as_list(statesynth.synthesize(sizes)))
    state_dir.mkdir()
    (state_dir / "cluster.json").write_text(text, encoding="utf-8")
    state = ClusterState.build(parse_documents("bench", text))
    del text
    gc.collect()
    return state


def _endpoint_pb(pod: Pod) -> flow_pb2.Endpoint:
    """The endpoint as a Cilium agent reports a pod: k8s: labels, namespace labels, identity, Deployment."""
    labels = [f"k8s:{k}={v}" for k, v in sorted(pod.labels.items())]
    labels += [f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={pod.namespace}",
               "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=default",
               f"k8s:io.kubernetes.pod.namespace={pod.namespace}"]
    identity = 256 + zlib.crc32("\n".join(labels).encode()) % 65_000
    app_name = pod.labels.get("app")
    workloads = [flow_pb2.Workload(name=app_name, kind="Deployment")] if app_name else []
    return flow_pb2.Endpoint(ID=zlib.crc32(pod.key.encode()) % 4096, identity=identity, namespace=pod.namespace,
                             pod_name=pod.name, labels=labels, workloads=workloads)


def denied_template(src: Pod, dst: Pod, port: int, proto: str, egress: bool) -> flow_pb2.Flow:
    """A POLICY_DENIED drop of src -> dst:port as Hubble sends it (time and source port set per flow)."""
    node = (src if egress else dst).node_name or "node-000"
    if proto == "UDP":
        l4 = flow_pb2.Layer4(UDP=flow_pb2.UDP(source_port=40000, destination_port=port))
    else:
        l4 = flow_pb2.Layer4(TCP=flow_pb2.TCP(source_port=40000, destination_port=port,
                                              flags=flow_pb2.TCPFlags(SYN=True)))
    return flow_pb2.Flow(
        verdict=flow_pb2.DROPPED, drop_reason=flow_pb2.POLICY_DENIED, drop_reason_desc=flow_pb2.POLICY_DENIED,
        IP=flow_pb2.IP(source=src.ips[0], destination=dst.ips[0], ipVersion=flow_pb2.IPv4), l4=l4,
        source=_endpoint_pb(src), destination=_endpoint_pb(dst), Type=flow_pb2.L3_L4, node_name=node,
        event_type=flow_pb2.CiliumEventType(type=1, sub_type=flow_pb2.POLICY_DENIED),
        traffic_direction=flow_pb2.EGRESS if egress else flow_pb2.INGRESS,
        Summary="TCP Flags: SYN" if proto != "UDP" else "UDP",
    )


def instance(template: flow_pb2.Flow, time_ns: int, source_port: int) -> flow_pb2.Flow:
    flow = flow_pb2.Flow()
    flow.CopyFrom(template)
    flow.time.FromNanoseconds(time_ns)
    if flow.l4.HasField("UDP"):
        flow.l4.UDP.source_port = source_port
    else:
        flow.l4.TCP.source_port = source_port
    return flow


def response(flow: flow_pb2.Flow) -> observer_pb2.GetFlowsResponse:
    return observer_pb2.GetFlowsResponse(flow=flow, node_name=flow.node_name, time=flow.time)


def to_flow(template: flow_pb2.Flow, time_ns: int, source_port: int) -> Flow:
    """The Flow record the daemon's Hubble source makes of this drop."""
    return normalise.flow_from_response(response(instance(template, time_ns, source_port)))


@dataclass(frozen=True)
class Denied:
    template: flow_pb2.Flow
    affected: str
    """Name of the pod the drop happened to (destination for ingress, source for egress)."""


class DeniedPool:
    """Distinct denied connections, drawn in a fixed order per seed; no two share a drop signature."""

    def __init__(self, state: ClusterState, seed: int) -> None:
        self.state = state
        self.engine = Engine(state)  # its own engine: the measured ones start cold
        self.engine.index_all()
        self.rng = random.Random(seed)
        self.pods = [p for p in state.pods.values() if p.ips and not p.host_network]
        self.taken: set[tuple[str, ...]] = set()
        self.tries = 0

    def take(self, count: int) -> list[Denied]:
        out: list[Denied] = []
        state, rng = self.state, self.rng
        while len(out) < count:
            self.tries += 1
            src, dst = rng.choice(self.pods), rng.choice(self.pods)
            ports = [(p.container_port, p.protocol) for c in dst.containers for p in c.ports] or [(80, "TCP")]
            port, proto = rng.choice(ports)
            if src is dst:
                continue
            verdict = self.engine.evaluate(Connection(endpoints.pod_subject(state, src),
                                                      endpoints.pod_subject(state, dst), port, proto))
            if verdict.allowed:
                continue
            egress = not verdict.egress.allowed
            # The signature's own fields (policies and traps follow from these on one state).
            src_workload = f"{src.namespace}/{src.labels.get('app') or src.name}"
            key = (src_workload, dst.key, str(port), proto, "egress" if egress else "ingress")
            if key in self.taken:
                continue
            self.taken.add(key)
            out.append(Denied(denied_template(src, dst, port, proto, egress), (src if egress else dst).name))
        return out


def encode(templates: Sequence[flow_pb2.Flow]) -> list[str]:
    return [base64.b64encode(t.SerializeToString()).decode() for t in templates]


def decode(items: Sequence[str]) -> list[flow_pb2.Flow]:
    return [flow_pb2.Flow.FromString(base64.b64decode(x)) for x in items]


def schedule(distinct: int, count: int, seed: int) -> Iterator[tuple[int, int]]:
    """(template index, source port) of each recorded drop: every connection once, then random repeats."""
    rng = random.Random(seed ^ 0x5EED)
    for i in range(count):
        yield (i if i < distinct else rng.randrange(distinct)), 32768 + i % 28000


def t0_ns() -> int:
    """The start of the current hour: recent, so nothing is past the store's retention."""
    return time.time_ns() // (3600 * _NS) * 3600 * _NS


def prefill(path: str, state: ClusterState, denied: Sequence[Denied], start_ns: int) -> int:
    """Record one drop of each connection through the real pipeline into the store file; returns its size."""
    with DropStore(path) as store:
        # Explained for real, as the daemon does on the flow path (fix checked, radius deferred).
        pipeline = Pipeline(StaticState(state), store=store, cache=ExplanationCache(size=16, blast_radius=False))
        for i, d in enumerate(denied):
            pipeline.process(to_flow(d.template, start_ns + i * 1_000_000, 40000 + i % 20000))
        return store.size()


# --- the daemon in this process ---------------------------------------------------------------


def daemon_settings(*argv: str) -> Settings:
    args = cli.build_parser().parse_args(["run", "--listen", "127.0.0.1", "--port", "0", "--events", "false",
                                          "--mode", "single", "--auth", "none", *argv])
    return from_args(args, env={})


def transports() -> list[str]:
    fields = {f.name for f in dataclasses.fields(HubbleSettings)}
    return ["h2", "grpcio"] if "transport" in fields else ["default"]


def with_hubble(settings: Settings, transport: str, **changes: Any) -> Settings:
    if transport != "default":
        changes["transport"] = transport
    hubble = replace(settings.hubble, backoff_initial_s=0.05, backoff_max_s=0.5, **changes)
    return replace(settings, hubble=hubble)


@contextlib.asynccontextmanager
async def running(settings: Settings, state: ClusterState, *, gc_freeze: bool = False) -> AsyncIterator[app.Daemon]:
    """app.serve as a task, up and listening; cancelled (as by SIGTERM) on exit.

    gc_freeze (an experiment, --gc-freeze): move every object alive once the
    daemon is up (the cluster state above all) out of the collector's reach,
    as app.serve could do after loading the state.
    """
    started: asyncio.Future[app.Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.serve(settings, state=StaticState(state), on_started=started.set_result))
    waiting: list[asyncio.Future[Any]] = [started, task]
    done, _ = await asyncio.wait(waiting, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    daemon = started.result()
    if gc_freeze:
        gc.collect()
        gc.freeze()
    try:
        yield daemon
    finally:
        if gc_freeze:
            gc.unfreeze()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Child:
    """This script in a child process (pinned to the load core), talking in lines over stdin/stdout."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--child", *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            with contextlib.suppress(OSError):  # at once, so its imports do not load the daemon's core
                os.sched_setaffinity(self.proc.pid, {LOAD_CPU})
        self.cpu = ProcCpu(self.proc.pid)

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {self.proc.args!r} ended (exit {self.proc.poll()})")
        return line.strip()

    async def areadline(self) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.readline)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# --- 1. sustained flows/s ------------------------------------------------------------------------


def overflow_of(daemon: app.Daemon) -> int:
    """Flows the Hubble source discarded because the pipeline was behind (drop-oldest queue)."""
    stats = getattr(daemon.source, "stats", None)
    return int(stats.overflow) if stats is not None else 0


class LoopLag:
    """How late a 10 ms timer fires on the daemon's loop: how long anything else (an API request) would wait."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - t - 0.01)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, float]:
        return {k.replace("_ms", "_loop_lag_ms"): v for k, v in pct_ms(self.lags).items() if k != "p50_ms"}


class GcPauses:
    """Pauses of Python's cyclic garbage collector in this process (the daemon's), by generation."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        full = self.pauses[2]
        return {"gc_full_collections": len(full), "gc_full_max_ms": round(max(full, default=0.0) * 1e3, 1),
                "gc_all_total_ms": round(sum(sum(v) for v in self.pauses.values()) * 1e3, 1)}


async def sustained_run(state: ClusterState, server: Child, profiles: Profiles, *, target: str, transport: str,
                        store_path: str, count: int, profile_name: str | None = None, gc_freeze: bool = False,
                        whole_queue: bool = True) -> dict[str, Any]:
    queue = {"queue_size": count + 1} if whole_queue else {}
    settings = with_hubble(daemon_settings("--hubble-target", target, "--store-path", store_path), transport,
                           initial_number=count, **queue)
    samples: list[tuple[float, int, float]] = []  # wall, processed, this process's CPU seconds
    gc.collect()
    async with running(settings, state, gc_freeze=gc_freeze) as daemon:
        pipeline = daemon.pipeline
        load, srv0, wall0 = CoreLoad(), server.cpu.seconds(), time.perf_counter()
        deadline = wall0 + max(120.0, count / 2000)
        with contextlib.ExitStack() as profiling, LoopLag() as lag, GcPauses() as gcp:
            while (pipeline.processed + pipeline.unexplainable + overflow_of(daemon) < count
                   and time.perf_counter() < deadline):
                await asyncio.sleep(0.005)
                samples.append((time.perf_counter(), pipeline.processed, time.process_time()))
                if profile_name is not None and pipeline.processed >= count * WARM_FRACTION:
                    profiling.enter_context(profiles(profile_name))  # the steady part only
                    profile_name = None
        srv1, wall1, busy = server.cpu.seconds(), time.perf_counter(), load.busy()
        result: dict[str, Any] = {
            "processed": pipeline.processed, "unexplainable": pipeline.unexplainable,
            "explained_afresh": pipeline.cache.misses, "signatures": daemon.store.size(),
            "overflow": overflow_of(daemon), "queue_size": settings.hubble.queue_size,
        }
    moving = [s for s in samples if s[1] > 0]
    if len(moving) >= 2:
        (ta, na, ca), (tb, nb, cb) = moving[0], moving[-1]
        warm = next((s for s in moving if s[1] >= count * WARM_FRACTION), moving[0])
        result.update({
            "flows_per_s": per_s(nb - na, tb - ta), "steady_flows_per_s": per_s(nb - warm[1], tb - warm[0]),
            "flows_per_daemon_cpu_s": per_s(nb - na, cb - ca),
            "steady_flows_per_daemon_cpu_s": per_s(nb - warm[1], cb - warm[2]),
            "seconds": round(tb - ta, 2), "daemon_cpu_share": round((cb - ca) / (tb - ta), 2),
        })
    if srv0 is not None and srv1 is not None:
        result["server_cpu_share"] = round((srv1 - srv0) / (wall1 - wall0), 2)
    result["core_busy_all_processes"] = busy
    result.update(lag.summary())
    result.update(gcp.summary())
    return result


def pipeline_alone(state: ClusterState, templates: Sequence[flow_pb2.Flow], profiles: Profiles, *, count: int,
                   seed: int, store_path: str, profile_name: str | None = None) -> dict[str, Any]:
    """Pipeline.process over pre-built Flow records: the daemon without transport, decoding or the loop."""
    start = t0_ns()
    base = [to_flow(t, start, 40000) for t in templates]
    flows = [replace(base[k], time_ns=start + i * SPACING_NS, source_port=port)
             for i, (k, port) in enumerate(schedule(len(templates), count, seed))]
    registry_metrics = MetricsSink(CollectorRegistry())
    with DropStore(store_path) as store:
        pipeline = Pipeline(StaticState(state), store=store, sinks=[("metrics", registry_metrics)],
                            observe_latency=registry_metrics.observe_explain)
        pipeline.engine().index_all()
        warm = int(count * WARM_FRACTION)
        flush_every = 20_000  # about a second's worth at the target, as _flush_forever does
        gc.collect()
        with profiles(profile_name):
            t_start, c_start = time.perf_counter(), time.process_time()
            for i, flow in enumerate(flows):
                pipeline.process(flow)
                if i == warm:
                    t_warm, c_warm = time.perf_counter(), time.process_time()
                if i % flush_every == flush_every - 1:
                    store.flush()
            t_end, c_end = time.perf_counter(), time.process_time()
    return {"flows_per_s": per_s(count, t_end - t_start), "steady_flows_per_s": per_s(count - warm, t_end - t_warm),
            "flows_per_cpu_s": per_s(count, c_end - c_start),
            "steady_flows_per_cpu_s": per_s(count - warm, c_end - c_warm),
            "explained_afresh": pipeline.cache.misses, "first_10pct_s": round(t_warm - t_start, 2),
            "first_10pct_cpu_s": round(c_warm - c_start, 2)}


def decode_normalise(templates: Sequence[flow_pb2.Flow], count: int, seed: int) -> float:
    start = t0_ns()
    raw = [response(instance(templates[k], start + i * SPACING_NS, port)).SerializeToString()
           for i, (k, port) in enumerate(schedule(len(templates), count, seed))]
    parse, to = observer_pb2.GetFlowsResponse.FromString, normalise.flow_from_response
    t = time.perf_counter()
    for item in raw:
        to(parse(item))
    return per_s(count, time.perf_counter() - t)


async def bench_sustained(state: ClusterState, pool: DeniedPool, args: argparse.Namespace, tmp: Path,
                          profiles: Profiles) -> dict[str, Any]:
    denied = pool.take(args.distinct)
    templates = [d.template for d in denied]
    spec = tmp / "sustained.json"
    spec.write_text(json.dumps({"templates": encode(templates), "count": args.flows, "seed": args.seed,
                                "t0": t0_ns()}))
    out: dict[str, Any] = {"flows": args.flows, "distinct_connections": args.distinct}
    note(f"sustained: pipeline alone over {args.flows:,} flows")
    out["pipeline_alone"] = pipeline_alone(state, templates, profiles, count=args.flows, seed=args.seed,
                                           store_path=str(tmp / "alone.db"))
    if profiles.enabled:  # profiled passes are extra runs, so the figures above are not slowed by the profiler
        pipeline_alone(state, templates, profiles, count=args.flows // 4, seed=args.seed,
                       store_path=str(tmp / "alone-profiled.db"),
                       profile_name="sustained: Pipeline.process alone (file store), a quarter of the flows")
    out["decode_normalise_per_s"] = decode_normalise(templates, min(args.flows, 50_000), args.seed)
    runs: dict[str, Any] = {}
    # (server, transport, store, queue): the queue holds every flow, so rates are measured without loss,
    # except in the last run, which keeps the daemon's default queue to show what a burst loses.
    first = transports()[0]
    plan = [("fake", t, w, "all") for t in transports() for w in ("file", "memory")]
    plan += [("fake", first, "file", "default"), ("fast", first, "file", "all")]
    for server_kind in dict.fromkeys(p[0] for p in plan):
        if server_kind not in args.servers:
            continue
        server = Child("history", str(spec), server_kind)
        try:
            target = server.readline()
            for _, transport, where, queue in (p for p in plan if p[0] == server_kind):
                name = f"{transport}/{where}" + ("" if server_kind == "fake" else f"/{server_kind}-server") + (
                    "" if queue == "all" else "/default-queue")
                note(f"sustained: daemon {name}")
                path = str(tmp / f"sustained-{transport}-{server_kind}.db") if where == "file" else ":memory:"
                runs[name] = await sustained_run(state, server, profiles, target=target, transport=transport,
                                                 store_path=path, count=args.flows, gc_freeze=args.gc_freeze,
                                                 whole_queue=queue == "all")
            if profiles.enabled:
                transport = transports()[0]
                await sustained_run(state, server, profiles, target=target, transport=transport,
                                    store_path=str(tmp / f"profiled-{server_kind}.db"), count=args.flows // 4,
                                    profile_name=f"sustained: daemon {transport}/file, {server_kind} server, "
                                    "a quarter of the flows, after the first 10% (whole loop)")
        finally:
            server.close()
    out["daemon"] = runs
    return out


async def serve_history(spec_path: str, kind: str) -> None:
    """Child: a server holding every recorded drop; prints its target.

    ``fake``: the package's FakeHubbleServer (grpc.aio, one DATA frame a
    message). ``fast``: bench/hubble_stream.py's pre-framed h2 server, which
    packs messages into 16 KiB DATA frames as grpc-go (Hubble) does.
    """
    pin(LOAD_CPU)
    spec = json.loads(Path(spec_path).read_text())
    templates = decode(spec["templates"])
    flows = (instance(templates[k], spec["t0"] + i * SPACING_NS, port)
             for i, (k, port) in enumerate(schedule(len(templates), spec["count"], spec["seed"])))
    loop = asyncio.get_running_loop()
    if kind == "fast":
        from hubble_stream import PreframedServer  # a sibling script

        raw = [response(f).SerializeToString() for f in flows]
        offsets, pos = [], 0
        for item in raw:
            offsets.append(pos)
            pos += 5 + len(item)
        blob = b"".join(len(item).to_bytes(5, "big") + item for item in raw)
        listener = await loop.create_server(lambda: PreframedServer(blob, offsets), "127.0.0.1", 0)
        print(f"127.0.0.1:{listener.sockets[0].getsockname()[1]}", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
        listener.close()
        return
    server = FakeHubbleServer(flows, max_flows=spec["count"])
    await server.start()
    print(server.target, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop(grace=0)


# --- 2. new signatures/s ----------------------------------------------------------------------------


def bench_new(state: ClusterState, pool: DeniedPool, args: argparse.Namespace, tmp: Path,
              profiles: Profiles) -> dict[str, Any]:
    start = t0_ns()
    flows = [to_flow(d.template, start + i * 1_000_000, 40000 + i) for i, d in enumerate(pool.take(args.new))]
    note(f"new signatures: {len(flows):,} through Pipeline.process (file store, metrics)")
    metrics = MetricsSink(CollectorRegistry())
    each: list[float] = []
    with DropStore(tmp / "new.db") as store:
        # As app.serve wires it: the fix is planned and checked on the flow path, its blast
        # radius is queued for the radius sink's worker (measured separately below).
        pipeline = Pipeline(StaticState(state), store=store, sinks=[("metrics", metrics)],
                            cache=ExplanationCache(blast_radius=False),
                            observe_latency=metrics.observe_explain, on_sink_error=metrics.sink_error)
        radius = RadiusSink(pipeline.engine, store.update_explanation, queue_size=len(flows))
        pipeline.sinks.append(("blast-radius", radius))
        pipeline.engine().index_all()
        gc.collect()
        cpu = time.process_time()
        for flow in flows:
            t = time.perf_counter()
            pipeline.process(flow)
            each.append(time.perf_counter() - t)
        cpu = time.process_time() - cpu
        signatures = store.size()
    total = sum(each)
    note("new signatures: explain_flow alone, signature_of, store.record, metrics.handle")
    engine = Engine(state)
    engine.index_all()
    explained = []
    explain_each: list[float] = []
    gc.collect()
    explain_cpu = time.process_time()
    for flow in flows:
        t = time.perf_counter()
        explained.append(explain_flow(engine, flow, blast_radius=False))
        explain_each.append(time.perf_counter() - t)
    explain_cpu = time.process_time() - explain_cpu
    note("new signatures: the radius worker's rate (complete() per queued explanation)")
    t = time.perf_counter()
    for e in explained:
        complete(engine, e)
    radius_s = time.perf_counter() - t
    t = time.perf_counter()
    drops = [ExplainedDrop(f, e, signature_of(f, e, state)) for f, e in zip(flows, explained, strict=True)]
    sig_s = time.perf_counter() - t
    with DropStore(tmp / "new-store-only.db") as store:
        t = time.perf_counter()
        for drop in drops:
            store.record(drop)
        store_s = time.perf_counter() - t
    metrics = MetricsSink(CollectorRegistry())
    t = time.perf_counter()
    for drop in drops:
        metrics.handle(replace(drop, new=True))
    metrics_s = time.perf_counter() - t
    explain_s = sum(explain_each)
    if profiles.enabled:
        with DropStore(tmp / "new-profiled.db") as store:
            pipeline2 = Pipeline(StaticState(state), store=store, sinks=[("metrics", MetricsSink(CollectorRegistry()))])
            pipeline2.engine().index_all()
            with profiles(f"new signatures: Pipeline.process, the first {min(300, len(flows))} drops again"):
                for flow in flows[:300]:
                    pipeline2.process(flow)
    return {
        "drops": len(flows), "new_signatures": signatures, "unexplainable": pipeline.unexplainable,
        "new_signatures_per_s": per_s(len(flows), total), "new_signatures_per_cpu_s": per_s(len(flows), cpu),
        "per_drop": pct_ms(each),
        "explain_only_per_s": per_s(len(flows), explain_s), "explain_only_per_cpu_s": per_s(len(flows), explain_cpu),
        "explain_only": pct_ms(explain_each),
        "signature_of_per_s": per_s(len(flows), sig_s), "store_only_per_s": per_s(len(flows), store_s),
        "metrics_only_per_s": per_s(len(flows), metrics_s),
        "blast_radius_completed_per_s": per_s(len(flows), radius_s),
        "share_of_pipeline_time": {"explain": round(explain_s / total, 3), "signature": round(sig_s / total, 3),
                                   "store": round(store_s / total, 3), "metrics": round(metrics_s / total, 3)},
    }


# --- 3. GET latency while ingesting -----------------------------------------------------------------


async def live_pusher(spec_path: str) -> None:
    """Child: a FakeHubbleServer whose followers get flows pushed at a set rate.

    stdin: ``rate R N`` (R flows/s over the hot connections, of which N/s are
    new connections, each used once), ``report`` (prints counters as JSON).
    """
    pin(LOAD_CPU)
    spec = json.loads(Path(spec_path).read_text())
    hot, new = decode(spec["hot"]), decode(spec["new"])
    rng = random.Random(spec["seed"])
    server = FakeHubbleServer(max_flows=1024)
    await server.start()
    print(server.target, flush=True)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "exit")

    threading.Thread(target=read, daemon=True).start()
    rate = new_rate = 0.0
    owed = owed_new = 0.0
    pushed = pushed_new = 0
    last = time.perf_counter()
    last_trim = last
    while True:
        while not commands.empty():
            cmd = commands.get_nowait().split()
            if not cmd:
                continue
            if cmd[0] == "exit":
                await server.stop(grace=0)
                return
            if cmd[0] == "rate":
                rate, new_rate = float(cmd[1]), float(cmd[2])
            elif cmd[0] == "report":
                print(json.dumps({"pushed": pushed, "pushed_new": pushed_new, "followers": server.followers}),
                      flush=True)
        now = time.perf_counter()
        owed += (now - last) * max(0.0, rate - new_rate)
        owed_new += (now - last) * new_rate
        last = now
        while owed >= 1:
            owed -= 1
            server.push(instance(hot[rng.randrange(len(hot))], time.time_ns(), 32768 + pushed % 28000))
            pushed += 1
        while owed_new >= 1 and pushed_new < len(new):
            owed_new -= 1
            server.push(instance(new[pushed_new], time.time_ns(), 40000))
            pushed_new += 1
        if now - last_trim > 1.0:
            del server._history[:-1024]  # the fake keeps every flow; a live bench must not grow for ever
            last_trim = now
        await asyncio.sleep(0.002)


async def get_client(port: int, pods_path: str, rate: float, duration: float, seed: int) -> None:
    """Child: GET /pods/{pod}/drops?limit=20 at a fixed rate (open loop), text and JSON alternately."""
    import aiohttp

    pin(LOAD_CPU)
    pods = json.loads(Path(pods_path).read_text())
    rng = random.Random(seed)
    count = int(rate * duration)
    chosen = [rng.choice(pods) for _ in range(count)]
    results: list[tuple[str, int, float, int]] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), timeout=timeout) as session:

        async def one(i: int, at: float) -> None:
            kind = "json" if i % 2 else "text"
            url = f"http://127.0.0.1:{port}/pods/{chosen[i]}/drops?limit=20" + ("&format=json" if i % 2 else "")
            status, size = -1, 0
            try:
                async with session.get(url) as r:
                    body = await r.read()
                    status, size = r.status, len(body)
            except (TimeoutError, aiohttp.ClientError):
                pass
            results.append((kind, status, time.perf_counter() - at, size))

        tasks = []
        begin = time.perf_counter() + 0.05
        for i in range(count):
            at = begin + i / rate
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i, at)))  # latency counts from the scheduled instant
        await asyncio.gather(*tasks)
    print(json.dumps(results), flush=True)


def latency_summary(results: list[list[Any]]) -> dict[str, Any]:
    ok = [r for r in results if r[1] == 200]
    out: dict[str, Any] = {"requests": len(results), "ok": len(ok),
                           "statuses": {str(s): sum(1 for r in results if r[1] == s) for s in {r[1] for r in results}},
                           **pct_ms([r[2] for r in results])}
    for kind in ("text", "json"):
        mine = [r for r in ok if r[0] == kind]
        if mine:
            out[kind] = {**pct_ms([r[2] for r in mine]), "bytes_p50": sorted(r[3] for r in mine)[len(mine) // 2]}
    return out


async def latency_phase(daemon: app.Daemon, pusher: Child, args: argparse.Namespace, profiles: Profiles, *,
                        pods_path: Path, duration: float, new_rate: float,
                        profile_name: str | None = None) -> dict[str, Any]:
    assert daemon.port is not None
    port = daemon.port
    pusher.send(f"rate {args.ingest_rate} {new_rate}")
    await asyncio.sleep(1.0)
    pusher.send("report")
    before = json.loads(await pusher.areadline())
    p0, m0, o0 = daemon.pipeline.processed, daemon.pipeline.cache.misses, overflow_of(daemon)
    cpu0, w0, load = time.process_time(), time.perf_counter(), CoreLoad()
    client = Child("client", str(port), str(pods_path), str(args.get_rate), str(duration), str(args.seed))
    with profiles(profile_name), LoopLag() as lag, GcPauses() as gcp:
        line = await client.areadline()
    cpu1, w1, busy = time.process_time(), time.perf_counter(), load.busy()
    client.close()
    pusher.send("report")
    after = json.loads(await pusher.areadline())
    wall = w1 - w0
    return {
        "seconds": round(wall, 1), "get_rate_per_s": args.get_rate,
        "ingest_target_per_s": args.ingest_rate, "new_signatures_target_per_s": new_rate,
        "pushed_per_s": per_s(after["pushed"] + after["pushed_new"] - before["pushed"] - before["pushed_new"], wall),
        "ingested_per_s": per_s(daemon.pipeline.processed - p0, wall),
        "explained_afresh": daemon.pipeline.cache.misses - m0,
        "overflow": overflow_of(daemon) - o0, "daemon_cpu_share": round((cpu1 - cpu0) / wall, 2),
        "core_busy_all_processes": busy, **lag.summary(), **gcp.summary(),
        "store_signatures": daemon.store.size(), "latency": latency_summary(json.loads(line)),
    }


async def bench_latency(state: ClusterState, pool: DeniedPool, args: argparse.Namespace, tmp: Path,
                        profiles: Profiles) -> dict[str, Any]:
    stored = pool.take(args.prefill)
    hot = stored[: args.hot]
    new = pool.take(int(args.new_rate * args.trickle_seconds) + 50)
    store_path = str(tmp / "latency.db")
    note(f"api latency: prefilling the store with {len(stored):,} signatures")
    size = prefill(store_path, state, stored, t0_ns() - 600 * _NS)
    pods_path = tmp / "pods.json"
    pods_path.write_text(json.dumps(sorted({d.affected for d in hot})))
    spec = tmp / "live.json"
    spec.write_text(json.dumps({"hot": encode([d.template for d in hot]), "new": encode([d.template for d in new]),
                                "seed": args.seed}))
    pusher = Child("live", str(spec))
    out: dict[str, Any] = {"prefilled_signatures": size, "hot_connections": len(hot),
                           "pods_queried": len(json.loads(pods_path.read_text()))}
    try:
        target = pusher.readline()
        settings = with_hubble(daemon_settings("--hubble-target", target, "--store-path", store_path), "default")
        async with running(settings, state, gc_freeze=args.gc_freeze) as daemon:
            assert daemon.port is not None
            for _ in range(500):
                pusher.send("report")
                if json.loads(await pusher.areadline())["followers"]:
                    break
                await asyncio.sleep(0.02)
            note(f"api latency: warming up (explaining the {len(hot)} hot connections once)")
            pusher.send(f"rate {args.ingest_rate} 0")
            t = time.perf_counter()
            while daemon.pipeline.cache.misses < len(hot) and time.perf_counter() - t < 120:
                await asyncio.sleep(0.1)
            out["warmup_s"] = round(time.perf_counter() - t, 1)
            note(f"api latency: phase A, {args.latency_seconds:.0f} s, repeats only")
            out["repeats_only"] = await latency_phase(daemon, pusher, args, profiles, pods_path=pods_path,
                                                      duration=args.latency_seconds, new_rate=0.0)
            if args.trickle_seconds > 0:
                note(f"api latency: phase B, {args.trickle_seconds:.0f} s, with {args.new_rate}/s new signatures")
                out["with_new_signatures"] = await latency_phase(daemon, pusher, args, profiles, pods_path=pods_path,
                                                                 duration=args.trickle_seconds,
                                                                 new_rate=args.new_rate)
            if profiles.enabled:
                note("api latency: an extra 10 s of phase A under the profiler")
                await latency_phase(daemon, pusher, args, profiles, pods_path=pods_path, duration=10.0, new_rate=0.0,
                                    profile_name="api latency: daemon loop, 10 s of phase A (extra run)")
    finally:
        pusher.close()
    return out


# --- 4. RSS ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for name, pattern in (("signatures", r"^drop_explainer_store_signatures (\S+)$"),
                          ("received", r'^drop_explainer_flows_received_total\{source="replay"\} (\S+)$')):
        found = re.search(pattern, text, re.MULTILINE)
        out[name] = float(found.group(1)) if found else 0.0
    return out


def proc_status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def bench_rss(state: ClusterState, pool: DeniedPool, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    explained = min(args.rss_explained, args.rss_signatures)
    stored = pool.take(args.rss_signatures - explained)
    replayed = pool.take(explained)
    state_dir = tmp / "state"
    store_path = str(tmp / "rss.db")
    start = t0_ns()
    if stored:
        note(f"rss: prefilling the store file with {len(stored):,} signatures")
        prefill(store_path, state, stored, start - 3600 * _NS)
    replay = tmp / "replay.jsonl"
    with replay.open("w", encoding="utf-8") as f:
        for i, d in enumerate(replayed):
            f.write(json.dumps(codec.flow_to_json(to_flow(d.template, start + i * 1_000_000, 40000))) + "\n")
    port = free_port()
    cmd = [sys.executable, "-m", "drop_explainer.cli", "run", "--state", str(state_dir), "--source", "replay",
           "--replay-file", str(replay), "--store-path", store_path, "--port", str(port), "--listen", "127.0.0.1",
           "--events", "false", "--mode", "single", "--auth", "none", "--log-format", "json", "--log-level", "warning"]
    note(f"rss: daemon subprocess explaining {explained:,} replayed drops into a store of {len(stored):,}")
    stderr = (tmp / "rss-daemon.log").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)  # inherits the daemon core
    out: dict[str, Any] = {"command": " ".join(["python", *cmd[1:]]).replace(str(tmp), "$TMP"),
                           "prefilled": len(stored), "replayed": explained}
    t_start = time.perf_counter()
    try:
        metrics: dict[str, float] = {}
        while time.perf_counter() - t_start < args.rss_timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited {proc.returncode}: {(tmp / 'rss-daemon.log').read_text()[-2000:]}")
            try:
                metrics = scrape(port)
            except OSError:
                time.sleep(0.2)
                continue
            if "listening_s" not in out:
                out["listening_s"] = round(time.perf_counter() - t_start, 1)
                out["at_listening_mb"] = proc_status(proc.pid)
            if metrics["received"] >= explained and metrics["signatures"] >= len(stored) + explained:
                break
            time.sleep(0.5)
        out["ready_s"] = round(time.perf_counter() - t_start, 1)
        out.update({"store_signatures": int(metrics.get("signatures", 0)), "received": int(metrics.get("received", 0)),
                    **proc_status(proc.pid)})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
    out["file_mb"] = round(sum(p.stat().st_size for p in tmp.glob("rss.db*")) / 1e6, 1)
    return out


# --- main ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tenth of the state and short runs (smoke test)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--profile", action="store_true", help="cProfile the in-process parts (to stderr)")
    p.add_argument("--only", default="sustained,new,latency,rss")
    p.add_argument("--gc-freeze", action="store_true",
                   help="experiment: gc.freeze() once the in-process daemon is up (what app.serve could do)")
    p.add_argument("--servers", default="fake,fast",
                   help="sustained: fake = FakeHubbleServer (one frame a message), fast = 16 KiB frames like Hubble")
    for name, full, quick, kind in (
        ("flows", 200_000, 20_000, int), ("distinct", 200, 50, int), ("new", 1000, 100, int),
        ("prefill", 3000, 300, int), ("hot", 300, 50, int), ("ingest-rate", 5000.0, 5000.0, float),
        ("get-rate", 20.0, 20.0, float), ("latency-seconds", 30.0, 5.0, float), ("new-rate", 5.0, 5.0, float),
        ("trickle-seconds", 15.0, 3.0, float), ("rss-signatures", 20_000, 2000, int),
        ("rss-explained", 4096, 200, int), ("rss-timeout", 240.0, 120.0, float),
    ):
        p.add_argument(f"--{name}", type=kind, default=None, help=f"default {full:,} ({quick:,} with --quick)")
        p.set_defaults(**{f"_{name.replace('-', '_')}": (full, quick)})
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    for key, value in list(vars(args).items()):
        if key.startswith("_"):
            dest = key[1:]
            if getattr(args, dest) is None:
                setattr(args, dest, value[1] if args.quick else value[0])
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(DAEMON_CPU)
    logging.getLogger("drop_explainer").setLevel(logging.ERROR)
    sizes = statesynth.Sizes(500, 50, 100, args.seed) if args.quick else statesynth.Sizes(seed=args.seed)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as name:
        tmp = Path(name)
        note(f"synthesizing the state {sizes}")
        state = synthesize(sizes, tmp / "state")
        pool = DeniedPool(state, args.seed)
        profiles = Profiles(args.profile)
        machine = CoreLoad()
        result: dict[str, Any] = {"config": {
            "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "daemon": pinned, "load": f"cpu {LOAD_CPU}" if pinned != "not pinned" else "not pinned",
            "seed": args.seed, "quick": args.quick, "transports": transports(), "gc_freeze": args.gc_freeze,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "state": {"pods": len(state.pods), "namespaces": len(state.namespaces), "policies": len(state.policies)},
        }}
        if "sustained" in only:
            result["sustained"] = await bench_sustained(state, pool, args, tmp, profiles)
        if "new" in only:
            result["new_signatures"] = bench_new(state, pool, args, tmp, profiles)
        if "latency" in only:
            result["api_latency"] = await bench_latency(state, pool, args, tmp, profiles)
        if "rss" in only:
            result["rss"] = bench_rss(state, pool, args, tmp)
    result["config"]["core_busy_all_processes"] = machine.busy()
    result["targets"] = targets(result)
    profiles.report()
    return result


def targets(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def check(name: str, value: float | None, below: bool = False) -> None:
        if value is None:
            return
        goal = TARGETS[name]
        out[name] = {"value": value, "target": goal, "met": value < goal if below else value >= goal}

    daemon = r.get("sustained", {}).get("daemon", {})
    first = next(iter(daemon.values()), None)
    check("sustained_flows_per_s", first.get("flows_per_s") if first else None)
    check("new_signatures_per_s", r.get("new_signatures", {}).get("new_signatures_per_s"))
    check("api_p99_ms", r.get("api_latency", {}).get("repeats_only", {}).get("latency", {}).get("p99_ms"), below=True)
    check("rss_mb", r.get("rss", {}).get("VmRSS"), below=True)
    return out


def human(r: dict[str, Any]) -> None:
    c = r["config"]
    print(f"state {c['state']}, python {c['python']}, daemon on {c['daemon']}, load on {c['load']}, seed {c['seed']}"
          f"{' (quick)' if c['quick'] else ''}; loadavg at start {c['loadavg_at_start']}, cores busy over the run"
          f" (all processes) {c['core_busy_all_processes']}, {c['total_s']} s")
    if "sustained" in r:
        s = r["sustained"]
        print(f"1. sustained, {s['flows']:,} drops over {s['distinct_connections']} connections (target >= 20,000/s):")
        for name, run_ in s.get("daemon", {}).items():
            g = run_.get
            print(f"   daemon {name:>25}: {g('flows_per_s', 0):>8,.0f}/s, steady {g('steady_flows_per_s', 0):>8,.0f}/s"
                  f" ({g('steady_flows_per_daemon_cpu_s', 0):>8,.0f} per daemon CPU-s);"
                  f" daemon cpu {g('daemon_cpu_share', 0):.0%}, server cpu {g('server_cpu_share', 0):.0%},"
                  f" cores busy {g('core_busy_all_processes')}, max loop lag {g('max_loop_lag_ms')} ms,"
                  f" {g('gc_full_collections')} full GCs (max {g('gc_full_max_ms')} ms), overflow {g('overflow')}")
        a = s["pipeline_alone"]
        print(f"   {'Pipeline.process alone':>32}: {a['flows_per_s']:>8,.0f}/s,"
              f" steady {a['steady_flows_per_s']:>8,.0f}/s ({a['steady_flows_per_cpu_s']:>8,.0f} per CPU-s);"
              f" first 10% with {a['explained_afresh']} explanations: {a['first_10pct_s']} s")
        print(f"   {'decode+normalise alone':>32}: {s['decode_normalise_per_s']:>8,.0f}/s")
    if "new_signatures" in r:
        n = r["new_signatures"]
        sh = n["share_of_pipeline_time"]
        print(f"2. new signatures (target >= 2,000/s): {n['new_signatures_per_s']:,.0f}/s"
              f" ({n['new_signatures_per_cpu_s']:,.0f} per CPU-s)"
              f" (p50 {n['per_drop']['p50_ms']} ms, p99 {n['per_drop']['p99_ms']} ms, max {n['per_drop']['max_ms']} ms;"
              f" {n['new_signatures']} signatures)")
        print(f"   explain_flow alone {n['explain_only_per_s']:,.0f}/s, signature_of {n['signature_of_per_s']:,.0f}/s,"
              f" store.record {n['store_only_per_s']:,.0f}/s, metrics {n['metrics_only_per_s']:,.0f}/s;"
              f" share: explain {sh['explain']:.0%}, store {sh['store']:.1%}, signature {sh['signature']:.1%},"
              f" metrics {sh['metrics']:.1%}")
        print(f"   blast radius completed by the radius worker, off the flow path:"
              f" {n['blast_radius_completed_per_s']:,.0f}/s")
    if "api_latency" in r:
        a = r["api_latency"]
        print(f"3. GET /pods/{{pod}}/drops?limit=20 with {a['prefilled_signatures']:,} signatures stored"
              f" (target p99 < 50 ms; warm-up {a.get('warmup_s')} s):")
        for key in ("repeats_only", "with_new_signatures"):
            if key in a:
                ph, lat = a[key], a[key]["latency"]
                print(f"   {key:>19}: p50 {lat.get('p50_ms')} p95 {lat.get('p95_ms')} p99 {lat.get('p99_ms')}"
                      f" max {lat.get('max_ms')} ms; {lat['ok']}/{lat['requests']} ok; ingested"
                      f" {ph['ingested_per_s']:,.0f}/s (pushed {ph['pushed_per_s']:,.0f}/s), overflow {ph['overflow']},"
                      f" daemon cpu {ph['daemon_cpu_share']:.0%}, cores busy {ph['core_busy_all_processes']},"
                      f" max loop lag {ph.get('max_loop_lag_ms')} ms, {ph['gc_full_collections']} full GCs"
                      f" (max {ph['gc_full_max_ms']} ms)")
    if "rss" in r:
        m = r["rss"]
        print(f"4. RSS with {m['store_signatures']:,} signatures stored (target < 300 MB): VmRSS {m.get('VmRSS')} MB,"
              f" VmHWM {m.get('VmHWM')} MB (at listening: {m.get('at_listening_mb')}); full after {m['ready_s']} s")
    print("targets: " + ", ".join(f"{k} {v['value']} ({'met' if v['met'] else 'MISSED'})"
                                  for k, v in r["targets"].items()))


def child_main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "history":
        asyncio.run(serve_history(argv[1], argv[2]))
    elif kind == "live":
        asyncio.run(live_pusher(argv[1]))
    elif kind == "client":
        asyncio.run(get_client(int(argv[1]), argv[2], float(argv[3]), float(argv[4]), int(argv[5])))
    else:
        raise SystemExit(f"unknown child {kind}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return 0
    args = resolve(build_parser().parse_args())
    t = time.perf_counter()
    result = asyncio.run(run(args))
    result["config"]["total_s"] = round(time.perf_counter() - t, 1)
    if args.json:
        print(json.dumps(result))
    else:
        human(result)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
