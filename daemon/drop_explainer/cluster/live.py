"""A live copy of the cluster, kept by watches, published as immutable snapshots.

Why snapshots: the explainer, its caches and the API read a ``ClusterState``
without locks, and an explanation is computed against one consistent state.
Rebuilding one for 5,000 pods costs milliseconds, so after the initial sync
changes are folded in at most every ``min_interval_s`` (a burst of pod churn
costs one rebuild, not one per event), and the first complete snapshot is
published at once.

What each DaemonSet instance watches: all six kinds, cluster-wide. A drop
seen on this node has one local endpoint; the peer (the source of an ingress
drop, the destination of an egress drop) may be on any node, and the verdict
depends on its labels and namespace, so pods are needed cluster-wide; nodes
explain host and probe traffic, services resolve ClusterIPs, and their
EndpointSlices say which backends are ready (without them a Service's
backends are guessed from its selector, readiness unknown) and where the API
server really listens (default/kubernetes: its addresses on 6443). The cost is one
all-pods watch per node, as kube-proxy and CNI agents already have; only our
slim parsed objects are kept (never the raw JSON), a few hundred bytes each.

Health: a watch says something (an event, a bookmark, or the end of a quiet
watch at its server timeout) at least every ``timeout_s``; one silent for
``stall_factor`` times that, or failing to reconnect that long, is stalled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeAlias

from drop_explainer.cluster import kubeapi, watching
from drop_explainer.cluster import objects as o
from drop_explainer.cluster.enforcer import Detection, NotEvaluated
from drop_explainer.cluster.errors import ObjectError
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy.model import RefusedPolicy

log = logging.getLogger(__name__)

KINDS = tuple(r.kind for r in kubeapi.RESOURCES)
PodDeleted: TypeAlias = Callable[[o.Pod], None]
Clock: TypeAlias = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LiveSettings:
    watch: watching.WatchSettings = field(default_factory=watching.WatchSettings)
    min_interval_s: float = 0.5
    """Shortest time between two published snapshots after the initial sync."""
    stall_factor: float = 2.0
    """A watch silent for this many times its server timeout is stalled."""
    history_size: int = 1000
    """NetworkPolicy changes remembered for "drops began 4 s after ..."."""


@dataclass(frozen=True, slots=True)
class PolicyChange:
    time: float
    """Wall-clock seconds (time.time()) when we saw it: comparable with flow times."""
    change: watching.EventType
    key: str
    """namespace/name of the NetworkPolicy."""
    resource_version: str | None = None


class LiveState:
    """The six kinds, kept in sync by watches; ``snapshot()`` is what everyone reads."""

    def __init__(self, client: kubeapi.Client, *, settings: LiveSettings = LiveSettings(),
                 on_pod_deleted: PodDeleted | None = None, clock: Clock = time.monotonic,
                 wall_clock: Clock = time.time, discover: bool = True) -> None:
        self.settings = settings
        self._discover = discover
        """Watch the Cilium policy kinds too where the API server serves them (``kubeapi.served``)."""
        self._resources: tuple[kubeapi.Resource, ...] = kubeapi.RESOURCES
        self._client = client
        self._on_pod_deleted = on_pod_deleted
        self._clock, self._wall_clock = clock, wall_clock
        self._objects: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}
        self.synced: dict[str, bool] = dict.fromkeys(KINDS, False)
        self.last_event_time: dict[str, float] = dict.fromkeys(KINDS, clock())
        """Monotonic time of each kind's last event, bookmark or quiet timeout."""
        self.disconnected_since: dict[str, float | None] = dict.fromkeys(KINDS)
        self.refused = 0
        """Policy objects their kind's validation rejects (no effect in the cluster either), counted."""
        self.skipped = 0
        """Objects our parsers rejected (the API server accepted them: a bug of ours)."""
        self.callback_errors = 0
        self._history: deque[PolicyChange] = deque(maxlen=settings.history_size)
        self._snapshot = ClusterState.build(())
        self._enforcer: Detection | None = None
        self._not_evaluated: tuple[NotEvaluated, ...] = ()
        self._dirty = asyncio.Event()
        self._ready = asyncio.Event()

    # ---- reading ---------------------------------------------------------

    def snapshot(self) -> ClusterState:
        """The latest published state; empty until ``ready``."""
        return self._snapshot

    @property
    def ready(self) -> bool:
        """Every kind has been listed once: explanations can be trusted from now on."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def stalled(self, now: float | None = None) -> tuple[str, ...]:
        """Kinds whose watch has been silent, or reconnecting, for too long (``now``: monotonic seconds)."""
        now = self._clock() if now is None else now
        limit = self.settings.stall_factor * self.settings.watch.timeout_s
        out = []
        for kind in self.synced:
            since = self.disconnected_since[kind]
            if now - self.last_event_time[kind] > limit or (since is not None and now - since > limit):
                out.append(kind)
        return tuple(out)

    def healthy(self, now: float | None = None) -> bool:
        return not self.stalled(now)

    def policy_changes(self, since: float, *, policies: Collection[str] | None = None) -> tuple[PolicyChange, ...]:
        """NetworkPolicy changes seen at or after ``since`` (wall-clock seconds), oldest first."""
        return tuple(c for c in self._history if c.time >= since and (policies is None or c.key in policies))

    # ---- running ---------------------------------------------------------

    def add_resources(self, resources: tuple[kubeapi.Resource, ...]) -> None:
        """Watch these kinds too (before ``run``): readiness then waits for them as well."""
        for res in resources:
            if res.kind not in self.synced:
                self._resources = (*self._resources, res)
                self._objects[res.kind] = {}
                self.synced[res.kind] = False
                self.last_event_time[res.kind] = self._clock()
                self.disconnected_since[res.kind] = None

    async def run(self) -> None:
        """Watch the six kinds (and the Cilium policy kinds where served) and publish snapshots, forever."""
        if self._discover:
            found = await kubeapi.served(self._client)
            if found:
                log.info("policy_kinds_watched", extra={"kinds": [r.kind for r in found]})
            self.add_resources(found)
        self.last_event_time.update(dict.fromkeys(self.synced, self._clock()))
        async with asyncio.TaskGroup() as tg:
            for resource in self._resources:
                tg.create_task(self._follow(resource), name=f"watch-{resource.kind}")
            tg.create_task(self._publish_changes(), name="publish-snapshots")

    async def _follow(self, resource: kubeapi.Resource) -> None:
        items = watching.watch_objects(self._client, resource, settings=self.settings.watch)
        async with aclosing(items) as stream:
            async for item in stream:
                self.apply(resource.kind, item)

    async def _publish_changes(self) -> None:
        await self._ready.wait()  # the first snapshot is published by _listed, at once
        while True:
            await self._dirty.wait()
            self._publish()
            # Debounce: whatever arrives meanwhile goes into the next rebuild.
            await asyncio.sleep(self.settings.min_interval_s)

    def _publish(self) -> None:
        self._dirty.clear()
        built = ClusterState.build(obj for objs in self._objects.values() for obj in objs.values())
        self._snapshot = built.with_enforcer(self._enforcer).with_not_evaluated(self._not_evaluated)

    def set_enforcer(self, detection: Detection | None) -> None:
        """Attach who enforces policy (cluster/enforcing.py) to this and every later snapshot."""
        self._enforcer = detection
        self._snapshot = self._snapshot.with_enforcer(detection)

    def set_not_evaluated(self, objects: tuple[NotEvaluated, ...]) -> None:
        """Attach the policy objects loaded but not evaluated (Antrea-native), named in every answer."""
        self._not_evaluated = objects
        self._snapshot = self._snapshot.with_not_evaluated(objects)

    # ---- applying --------------------------------------------------------

    def apply(self, kind: str, item: watching.WatchEvent | watching.Mark) -> None:
        """Fold one item of a kind's watch into the copy (public for tests)."""
        if item is watching.Mark.DISCONNECTED:
            if self.disconnected_since[kind] is None:
                self.disconnected_since[kind] = self._clock()
            return
        self.last_event_time[kind] = self._clock()
        self.disconnected_since[kind] = None
        if item is watching.Mark.LISTED:
            self._listed(kind)
        elif isinstance(item, watching.WatchEvent):
            self._change(kind, item)

    def _listed(self, kind: str) -> None:
        if self.synced[kind]:
            return
        self.synced[kind] = True
        log.info("watch_synced", extra={"kind": kind, "objects": len(self._objects[kind])})
        if all(self.synced.values()):
            self._publish()  # at once: nothing can be explained before this
            self._ready.set()
            log.info("cluster_state_ready", extra={kind: len(objs) for kind, objs in self._objects.items()})

    def _change(self, kind: str, event: watching.WatchEvent) -> None:
        objs = self._objects[kind]
        if event.type is watching.EventType.DELETED:
            gone = objs.pop(event.key, None)
            if isinstance(gone, o.Pod):
                self._pod_deleted(gone)
        else:
            try:
                parsed = kubeapi.parse_object(kubeapi.RESOURCE_BY_KIND[kind], event.object)
                objs[event.key] = parsed
                if isinstance(parsed, RefusedPolicy):
                    self.refused += 1
                    log.warning("policy_refused", extra={"object": parsed.describe()})
            except ObjectError as exc:
                # Keeping the old version would be as wrong as having none; none is at least visible.
                objs.pop(event.key, None)
                self.skipped += 1
                log.warning("object_skipped", extra={"object": exc.obj, "field": exc.field, "reason": exc.reason})
        if kind == "NetworkPolicy" and self.synced[kind]:
            meta = event.object.get("metadata") or {}
            self._history.append(PolicyChange(self._wall_clock(), event.type, event.key,
                                              meta.get("resourceVersion")))
        self._dirty.set()

    def _pod_deleted(self, pod: o.Pod) -> None:
        if self._on_pod_deleted is None:
            return
        try:
            self._on_pod_deleted(pod)
        except Exception:  # a listener's bug must not stop the watch
            self.callback_errors += 1
            log.exception("pod_deleted_callback_failed", extra={"pod": pod.key})
