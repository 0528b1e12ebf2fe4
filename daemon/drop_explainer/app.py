"""The composition root: the one place where sources, explainer and sinks are wired.

``serve`` builds every part from the settings and runs the long-lived tasks
(flow source, store flushing, cluster watches, Events, the HTTP server) in
one TaskGroup. A failing task ends the group and the process exits non-zero,
so Kubernetes restarts it; SIGTERM cancels the group, and the exit stack
flushes and closes the store, so nothing already recorded is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from aiohttp import web
from prometheus_client import CollectorRegistry

from drop_explainer.api import auth, costs, guard, probes, routes, server, stream, tls
from drop_explainer.api.peers import Peers
from drop_explainer.cluster import kubeapi
from drop_explainer.cluster.enforcing import EnforcerTracker, TrackerSettings, configured_detection
from drop_explainer.cluster.live import LiveState, PolicyChange
from drop_explainer.cluster.loading import load_state
from drop_explainer.cluster.state import ClusterState
from drop_explainer.cluster.unevaluated import NotEvaluated
from drop_explainer.explain.cache import ExplanationCache
from drop_explainer.explain.model import Explanation
from drop_explainer.export.build import export_sink
from drop_explainer.export.sink import ExportSink
from drop_explainer.flows.model import Flow
from drop_explainer.pipeline import Admission, Pipeline, StateSource, StaticState
from drop_explainer.policy import profiles
from drop_explainer.settings import Settings
from drop_explainer.sinks.base import Sink
from drop_explainer.sinks.errors import StoreWriteFailed
from drop_explainer.sinks.events import EventSettings, EventSink
from drop_explainer.sinks.metrics import MetricsSink
from drop_explainer.sinks.radius import RadiusSink
from drop_explainer.sinks.store import DropStore
from drop_explainer.sources import antrea, dedup, flowfiles, resuming
from drop_explainer.sources.calico import FelixSocketSource, GoldmaneSource
from drop_explainer.sources.hubble import HubbleSource
from drop_explainer.sources.resuming import ResumableStream

log = logging.getLogger(__name__)
FLUSH_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 600.0
POLICY_HISTORY_S = 600.0
"""How far back a policy change still counts as the likely trigger of a drop."""


@dataclass(slots=True)
class Daemon:
    """Everything ``serve`` built, kept together so tests and the demo can reach in."""

    settings: Settings
    registry: CollectorRegistry
    metrics: MetricsSink
    store: DropStore
    state: StateSource
    pipeline: Pipeline
    peers: Peers
    source: Source
    live: LiveState | None = None
    events: EventSink | None = None
    port: int | None = None
    enforcer: EnforcerTracker | None = None
    reviewer: auth.Reviewer | None = None
    """TokenReview/SubjectAccessReview for the API (--auth kubernetes); None with --auth none."""
    client: kubeapi.Client | None = None
    tls: tls.ReloadingContext | None = None
    """The API's serving certificate, reloaded when its files change (--tls-cert); None: plaintext."""
    export: ExportSink | None = None
    """Explained drops to OTLP and/or a JSON lines file (--export-*); None: no export."""


class ReplaySource:
    """Flows from a saved file, once, then idle: offline forensics through the live pipeline."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.malformed = 0
        self.received = 0

    async def stream_flows(self) -> AsyncIterator[Flow]:
        # Count double reports and retransmits as the live Hubble source does.
        counter = dedup.FileCounter()
        for item in flowfiles.read_flows(self.path):
            if isinstance(item, flowfiles.MalformedRecord):
                self.malformed += 1
                log.warning("flow_malformed", extra={"file": self.path, "line": item.line_no, "reason": item.reason})
                continue
            self.received += 1
            yield counter.count(item)
            await asyncio.sleep(0)  # let the API answer while a large file replays


Source: TypeAlias = HubbleSource | GoldmaneSource | FelixSocketSource | ReplaySource | ResumableStream


def make_source(settings: Settings, *, checkpoint: resuming.Checkpoint | None = None) -> Source:
    """The configured source; a resumable one resumes from ``checkpoint`` (the store) after a restart."""
    if settings.source == "antrea":
        return antrea.make_source(settings.antrea, checkpoint=checkpoint)
    if settings.source == "calico-goldmane":
        return GoldmaneSource(settings.goldmane, checkpoint=checkpoint)
    if settings.source == "calico-felix":
        return FelixSocketSource(settings.felix)
    if settings.source == "replay":
        assert settings.replay_file is not None
        if not Path(settings.replay_file).exists():
            raise FileNotFoundError(f"--replay-file {settings.replay_file}: no such file")
        return ReplaySource(settings.replay_file)
    return HubbleSource(settings.hubble, checkpoint=checkpoint)


class PolicyHistory(Protocol):
    def policy_changes(self, since: float, *, policies: Collection[str] | None = None) -> tuple[PolicyChange, ...]: ...


def policy_history_note(live: PolicyHistory) -> Callable[[Flow, Explanation], Explanation]:
    """Say when a drop began right after a deciding policy changed: the usual cause of a new drop."""

    def annotate(flow: Flow, expl: Explanation) -> Explanation:
        keys = {p.key for side in (expl.verdict.ingress, expl.verdict.egress) if not side.allowed
                for p in side.policies}
        if not keys:
            return expl
        at = flow.time_ns / 1e9
        changes = [c for c in live.policy_changes(at - POLICY_HISTORY_S, policies=keys) if c.time <= at]
        if not changes:
            return expl
        last = changes[-1]
        verb = {"ADDED": "created", "MODIFIED": "changed", "DELETED": "deleted"}.get(str(last.change), "changed")
        note = (f"drops began {at - last.time:.0f} s after {last.key} was {verb}"
                f"{f' (resourceVersion {last.resource_version})' if last.resource_version else ''}")
        return replace(expl, notes=(*expl.notes, note))

    return annotate


def source_name(source: Source) -> str:
    """The ``source`` label of the metrics."""
    if isinstance(source, HubbleSource):
        return "hubble"
    if isinstance(source, ReplaySource):
        return "replay"
    if isinstance(source, ResumableStream):
        return source.adapter.origin
    return "calico"


YIELD_AFTER_S = 0.005
"""Processing time after which the flow loop yields, so the API and probes answer within a few ms.

A time budget, not a flow count: a flood of new drops costs a store write
and a fresh explanation each, a hundred times a cache hit.
"""


async def _consume(daemon: Daemon) -> None:
    name = source_name(daemon.source)
    clock = time.perf_counter
    started = clock()
    async for flow in daemon.source.stream_flows():
        if daemon.live is not None and not daemon.live.ready:
            # Explaining against a half-listed cluster would blame the wrong
            # policies; the source keeps queueing (bounded) meanwhile.
            await daemon.live.wait_ready()
        daemon.metrics.flow_received(name)
        daemon.pipeline.process(flow)
        if clock() - started >= YIELD_AFTER_S:
            await asyncio.sleep(0)
            started = clock()
    log.info("source_finished", extra={"source": name})


async def _flush_forever(daemon: Daemon) -> None:
    last_prune = time.monotonic()
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        daemon.metrics.sweep()
        try:
            daemon.store.flush()
            if time.monotonic() - last_prune > PRUNE_INTERVAL_S:
                daemon.store.prune()
                last_prune = time.monotonic()
        except StoreWriteFailed:
            # Rolled back and kept pending: the next flush retries. /healthz and
            # drop_explainer_store_failing say so; the daemon keeps serving.
            continue


class _SourceStats:
    """Turns the source's running totals into Prometheus counter increments."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def delta(self, key: str, value: int) -> int:
        before = self.seen.get(key, 0)
        self.seen[key] = value
        return max(0, value - before)


class _Collector:
    """Keeps the cyclic garbage collector's full passes off the API's latency.

    A snapshot, the engine's indexes, the explanation cache and the store's
    aggregates are hundreds of thousands of long-lived objects; every full
    pass of the collector walked them all and paused the loop 100-300 ms
    (measured under a flood of new drops, bench/flood.py). So what is alive
    is frozen every FREEZE_EVERY_S: the collector then walks only objects
    younger than that (in-process, the longest explanation under a flood went
    from 108 ms to 34 ms). Frozen objects are still freed by reference counting (all
    of these are acyclic); only cyclic garbage that lived past a second would
    stay, so every FULL_EVERY_S everything is unfrozen and collected once,
    which bounds that.
    """

    FREEZE_EVERY_S = 0.25
    FULL_EVERY_S = 900.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_full = clock()

    def tick(self) -> None:
        now = self._clock()
        if now - self._last_full >= self.FULL_EVERY_S:
            self._last_full = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.FREEZE_EVERY_S)


async def _export_health(daemon: Daemon) -> None:
    stats = _SourceStats()
    while True:
        m, src = daemon.metrics, daemon.source
        if not isinstance(src, ReplaySource):
            s, name = src.stats, source_name(src)
            m.source_connected(name, s.connected)
            for _ in range(stats.delta("reconnects", s.reconnects)):
                m.source_reconnected(name)
            if n := stats.delta("overflow", s.overflow):
                m.queue_overflowed(name, n)
            for reason, count in list(s.skipped_by_reason.items()):
                for _ in range(stats.delta(f"skip:{reason}", count)):
                    m.flow_malformed(name, reason)
            if s.last_flow_time is not None:
                m.flow_lag(name, max(0.0, time.time() - s.last_flow_time / 1e9))
        elif n := stats.delta("malformed", src.malformed):
            for _ in range(n):
                m.flow_malformed("replay", "decode")
        if daemon.live is not None:
            for kind, synced in daemon.live.synced.items():
                m.cluster_synced(kind, synced)
        await asyncio.sleep(1.0)


class PortInUse(Exception):
    """The API's port is taken: said in one line naming the port and the option (cli.py), no traceback."""

    def __init__(self, listen: str, port: int) -> None:
        super().__init__(f"port {port} on {listen} is already in use (another drop-explainer, or another "
                         f"program); choose another with --port (make demo PORT=...)")
        self.port = port


async def _serve_api(daemon: Daemon, on_started: Callable[[Daemon], None] | None) -> None:
    tls_on = daemon.settings.tls is not None
    client_certs = daemon.settings.tls is not None and daemon.settings.tls.client_ca is not None
    ctx = routes.Context(engine=daemon.pipeline.engine, store=daemon.store, peers=daemon.peers,
                         registry=daemon.registry, ready=lambda: _ready(daemon), healthy=lambda: _healthy(daemon),
                         guard=guard.middleware(daemon.reviewer, daemon.settings.auth,
                                                client_certs=client_certs)
                         if daemon.reviewer is not None else None,
                         own_headers=daemon.client.endpoint.headers if daemon.client is not None else None,
                         costs=costs.Costs(daemon.settings.costs, daemon.registry),
                         stream=next((s for _, s in daemon.pipeline.sinks if isinstance(s, stream.Hub)), None))
    api = routes.make_app(ctx)
    limiter = server.guarded(api, daemon.settings.api)
    runner = web.AppRunner(api, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = server.GuardedSite(runner, daemon.settings.listen, daemon.settings.port, limiter(runner),
                                  ssl_context=daemon.tls.context if daemon.tls is not None else None)
        daemon.registry.register(site.limiter)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(daemon.settings.listen, daemon.settings.port) from None
            raise
        daemon.port = site.bound_port
        log.info("api_listening", extra={"address": daemon.settings.listen, "port": daemon.port,
                                         "scheme": "https" if tls_on else "http"})
        if on_started is not None:
            on_started(daemon)
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(runner.cleanup())


def _ready(daemon: Daemon) -> tuple[bool, str]:
    found = daemon.state.snapshot().enforcer
    enforcing = f"; {found.summary()}" if found is not None else ""
    if daemon.enforcer is not None and found is None:
        enforcing = f"; {daemon.enforcer.summary()}"
    if daemon.live is None:
        return True, f"cluster state from a file{enforcing}"
    waiting = [k for k, ok in daemon.live.synced.items() if not ok]
    why = f"waiting for the first list of {', '.join(waiting)}" if waiting else "all kinds synced"
    return not waiting, why + enforcing


def _healthy(daemon: Daemon) -> tuple[bool, str]:
    if daemon.store.failing:
        return False, f"drop store {daemon.store.path}: the last {daemon.store.write_failures} write(s) failed"
    if daemon.live is None:
        return True, "ok"
    stalled = daemon.live.stalled()
    return not stalled, f"watch stalled: {', '.join(stalled)}" if stalled else "watches alive"


def profile_chooser(settings: Settings) -> Callable[[ClusterState], profiles.Profile]:
    """--cni first, then the detected enforcer's profile, then the flow source's (hubble: cilium...)."""
    configured = profiles.parse(settings.cni) if settings.cni else None

    def choose(snap: ClusterState) -> profiles.Profile:
        if configured is not None:
            return configured
        found = snap.enforcer
        return profiles.choose(detected=found.profile if found is not None else None,
                               evidence=", ".join(found.evidence[:2]) if found is not None else "",
                               source=settings.source, settings=found.settings if found is not None else ())

    return choose


def _static_state(settings: Settings, path: str) -> StaticState:
    """A saved state, with the enforcer the operator named (a saved state cannot be probed)."""
    loaded = load_state(path)
    if settings.policy_enforcer:
        loaded = loaded.with_enforcer(configured_detection(settings.policy_enforcer))
    return StaticState(loaded)


def _enforcer_tracker(settings: Settings, client: kubeapi.Client, live: LiveState,
                      registry: CollectorRegistry) -> EnforcerTracker:
    """Which component enforces policy, re-detected in the background (metrics, /readyz, Events)."""
    return EnforcerTracker(client, live, registry, TrackerSettings(
        configured=settings.policy_enforcer, source=settings.source, events=settings.not_enforced_events,
        instance=settings.node_name or "drop-explainer"))


async def _reviewer(settings: Settings, client: kubeapi.Client | None, registry: CollectorRegistry,
                    stack: contextlib.AsyncExitStack) -> tuple[auth.Reviewer | None, kubeapi.Client | None]:
    """Who checks the API's callers: the API server (--auth kubernetes, also with a saved state), or nobody."""
    if settings.auth.mode != "kubernetes":
        log.warning("api_unauthenticated", extra={
            "auth": "none", "why": "--auth none: anyone who reaches the port reads every drop, label and policy"})
        return None, client
    if client is None:
        endpoint = kubeapi.load_endpoint(settings.kubeconfig, settings.kube_context,
                                         in_cluster_first=settings.kubeconfig is None)
        client = await stack.enter_async_context(kubeapi.Client(endpoint))
    return auth.Reviewer(client, settings.auth, registry), client


def _not_evaluated_of(state: StateSource) -> Callable[[], tuple[NotEvaluated, ...]]:
    """The policy objects not evaluated in the state's current snapshot, read when metrics are scraped."""
    return lambda: state.snapshot().not_evaluated


def _open_store(settings: Settings, stack: contextlib.AsyncExitStack, metrics: MetricsSink) -> DropStore:
    store = stack.enter_context(DropStore(
        settings.store.path, max_per_pod=settings.store.max_per_pod, max_total=settings.store.max_total,
        retention_seconds=settings.store.retention_seconds))
    # The store flushes on close; the exit stack closes it after the tasks have stopped.
    stack.callback(store.flush)
    metrics.register_store(store)
    return store


def _peers(settings: Settings, state: StateSource) -> Peers:
    """The other instances, asked over https (their CA, our pair) when the API serves TLS."""
    if settings.tls is None:
        return Peers(settings.peers, settings.node_name, state.snapshot)
    return Peers(settings.peers, settings.node_name, state.snapshot, tls=tls.ClientContext(settings.tls),
                 server_name=settings.tls.peer_server_name)


class _Runs(Protocol):
    """A part with a long-lived task of its own."""

    def run(self) -> Coroutine[Any, Any, None]: ...


def _export(settings: Settings, state: StateSource, registry: CollectorRegistry,
            pipeline: Pipeline) -> ExportSink | None:
    """The export sink (--export-*), last in line: it only counts and enqueues, its task sends."""
    export = export_sink(settings.export, settings.node_name, state.snapshot)
    if export is not None:
        export.register(registry)
        pipeline.sinks.append(("export", export))
    return export


async def serve(settings: Settings, *, state: StateSource | None = None,
                on_started: Callable[[Daemon], None] | None = None) -> None:
    """Build every part and run until cancelled (SIGTERM) or until a part fails."""
    async with contextlib.AsyncExitStack() as stack:
        registry = CollectorRegistry()
        metrics = MetricsSink(registry)
        store = _open_store(settings, stack, metrics)
        live: LiveState | None = None
        client: kubeapi.Client | None = None
        if state is None and settings.state_path is not None:
            state = _static_state(settings, settings.state_path)
        if state is None:
            endpoint = kubeapi.load_endpoint(settings.kubeconfig, settings.kube_context,
                                             in_cluster_first=settings.kubeconfig is None)
            client = await stack.enter_async_context(kubeapi.Client(endpoint))
            live = LiveState(client, on_pod_deleted=lambda p: metrics.pod_deleted(p.namespace, p.name))
            state = live
        reviewer, client = await _reviewer(settings, client, registry, stack)
        sinks: list[tuple[str, Sink]] = [("metrics", metrics)]
        events = None
        if settings.events and client is not None and live is not None:
            events = EventSink(client, EventSettings(instance=settings.node_name or "drop-explainer"))
            sinks.append(("events", events))
        # The blast radius of a new drop's fix is completed by the radius sink, off the flow path.
        cache = ExplanationCache(blast_radius=False)
        metrics.register_explanation_cache(cache)
        # A replayed file is history being read on purpose: all of it is admitted.
        admission = Admission() if settings.source != "replay" else None
        pipeline = Pipeline(state, store=store, sinks=sinks, cache=cache,
                            annotate=policy_history_note(live) if live is not None else None,
                            observe_latency=metrics.observe_explain, on_sink_error=metrics.sink_error,
                            admission=admission, profile=profile_chooser(settings))
        if admission is not None:
            metrics.register_admission(admission)
        radius = RadiusSink(pipeline.engine, store.update_explanation)
        pipeline.sinks += [("blast-radius", radius),
                           ("stream", stream.Hub(store.get, registry=registry, node=settings.node_name))]
        export = _export(settings, state, registry, pipeline)
        peers = _peers(settings, state)
        source = make_source(settings, checkpoint=store)
        if not isinstance(source, ReplaySource):
            metrics.register_source(source_name(source), source.stats)
        metrics.register_not_evaluated(_not_evaluated_of(state))
        daemon = Daemon(settings, registry, metrics, store, state, pipeline, peers, source, live, events,
                        reviewer=reviewer, client=client,
                        tls=tls.ReloadingContext(settings.tls) if settings.tls is not None else None,
                        export=export)
        if live is not None and client is not None:
            daemon.enforcer = _enforcer_tracker(settings, client, live, registry)
        log.info("daemon_starting", extra={"source": settings.source, "node": settings.node_name,
                                           "mode": settings.peers.mode, "store": settings.store.path})
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_serve_api(daemon, on_started), name="api")
            if settings.probe_port:
                tg.create_task(probes.serve(settings.listen, settings.probe_port, lambda: _healthy(daemon),
                                            lambda: _ready(daemon), stall_after_s=settings.probe_stall_after_s),
                               name="probes")
            tg.create_task(_flush_forever(daemon), name="store-flush")
            tg.create_task(_export_health(daemon), name="health")
            tg.create_task(_Collector().run(), name="gc")
            tg.create_task(_consume(daemon), name="source")
            tg.create_task(radius.run(), name="blast-radius")
            optional: tuple[tuple[str, _Runs | None], ...] = (
                ("watches", live), ("events", events), ("export", export), ("policy-enforcer", daemon.enforcer))
            for name, part in optional:
                if part is not None:
                    tg.create_task(part.run(), name=name)
