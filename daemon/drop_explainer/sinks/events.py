"""Kubernetes Events where people look: ``kubectl describe pod`` and ``kubectl get events``.

One Event per drop signature, on the pod the policy protects from the drop
(the destination for ingress, the source for egress), with the explanation's
headline as its message. Repeats are folded into the Event's ``count`` the
way kubelet's own Events are: a retransmit storm is one Event whose count
goes up, not a thousand Events.

Load on the API server is bounded three ways: at most one write per
signature per ``min_update_interval_s`` (counts aggregate in between), a
global token bucket over every API call, and a bounded queue of signatures
waiting for a write. ``handle()`` only counts and enqueues; the writes
happen in ``run()``, the sink's own task. API errors are logged and
counted, never raised.

A signature gets a fresh entry (and an Event, or a merge into the one still
on the server) when it is new, or when it recurs after ``dedup_window_s`` of
silence: a drop that comes back an hour later deserves to be seen again,
even though the drop store no longer calls it new.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from drop_explainer.cluster import kubeapi
from drop_explainer.sinks.base import ExplainedDrop

log = logging.getLogger(__name__)

REASON: Final = "NetworkPolicyDrop"
COMPONENT: Final = "drop-explainer"
SIGNATURE_ANNOTATION: Final = "drop-explainer/signature"
MAX_MESSAGE: Final = 1024
_MAX_NAME: Final = 253
_MAX_INSTANCE: Final = 128


@dataclass(frozen=True, slots=True)
class EventSettings:
    instance: str
    """Who reports: the node name (reportingInstance, source.host)."""
    min_update_interval_s: float = 10.0
    """At most one API write per signature this often; counts aggregate in between."""
    dedup_window_s: float = 600.0
    """A signature silent this long is forgotten; its next drop starts a fresh entry."""
    rate_per_s: float = 10.0
    """Token bucket over every API call of the sink."""
    burst: int = 10
    queue_size: int = 1000
    """Signatures waiting for a write; beyond this, writes are dropped and counted."""
    max_signatures: int = 10_000


@dataclass(slots=True)
class EventStats:
    created: int = 0
    updated: int = 0
    errors: int = 0
    overflow: int = 0
    """A signature could not be queued for a write (queue or signature table full)."""
    not_a_pod: int = 0
    """Drops whose protected endpoint is not a pod: no object to hang an Event on."""


@dataclass(slots=True)
class _Entry:
    """One signature's Event: what the server has, and what is still to be written."""

    name: str
    namespace: str
    pod: str
    message: str
    first_time: str
    last_time: str
    last_seen: float
    pending: int = 0
    count: int = 0
    """The count the server's Event has (as far as we know)."""
    created: bool = False
    uid: str | None = None
    next_write: float = 0.0
    scheduled: bool = False


class _TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.updated = float(burst), time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class EventSink:
    """Creates and updates one Kubernetes Event per drop signature."""

    def __init__(self, client: kubeapi.Client, settings: EventSettings) -> None:
        self.settings = settings
        self.stats = EventStats()
        self._client = client
        self._entries: dict[str, _Entry] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue(settings.queue_size)
        self._bucket = _TokenBucket(settings.rate_per_s, settings.burst)

    def handle(self, drop: ExplainedDrop) -> None:
        """Count the drop against its signature; queue a write if none is pending."""
        now = time.monotonic()
        sig_id = drop.signature.id
        entry = self._entries.get(sig_id)
        if entry is None or now - entry.last_seen > self.settings.dedup_window_s:
            entry = self._new_entry(drop, now)
            if entry is None:
                return
        packets = drop.flow.packets
        if not (entry.count or entry.pending):
            packets = max(packets, 1)  # a second report of one packet still means the drop happened
        entry.pending += packets
        entry.last_seen = now
        entry.last_time = _timestamp(drop.flow.time_ns)
        entry.message = drop.explanation.headline[:MAX_MESSAGE]
        if entry.scheduled or (entry.created and not entry.pending):
            return
        try:
            self._queue.put_nowait(sig_id)
            entry.scheduled = True
        except asyncio.QueueFull:
            self.stats.overflow += 1

    def _new_entry(self, drop: ExplainedDrop, now: float) -> _Entry | None:
        ep = drop.flow.destination if drop.signature.direction == "ingress" else drop.flow.source
        if not (ep.namespace and ep.pod):
            self.stats.not_a_pod += 1
            return None
        if len(self._entries) >= self.settings.max_signatures:
            self._forget_silent(now)
            if len(self._entries) >= self.settings.max_signatures:
                self.stats.overflow += 1
                return None
        sig_id = drop.signature.id
        # Deterministic: after a restart, a 409 leads us back to the Event we made before.
        name = f"{ep.pod[: _MAX_NAME - len(sig_id) - 1]}.{sig_id}"
        stamp = _timestamp(drop.flow.time_ns)
        entry = _Entry(name, ep.namespace, ep.pod, "", stamp, stamp, now)
        self._entries[sig_id] = entry
        return entry

    def _forget_silent(self, now: float) -> None:
        for sig_id in [s for s, e in self._entries.items() if now - e.last_seen > self.settings.dedup_window_s]:
            del self._entries[sig_id]

    async def run(self) -> None:
        """Write queued Events, each signature no sooner than its next_write, forever."""
        due: list[tuple[float, int, str]] = []
        order = itertools.count()
        while True:
            wait = due[0][0] - time.monotonic() if due else None
            if wait is None or wait > 0:
                try:
                    sig_id = await asyncio.wait_for(self._queue.get(), wait)
                except TimeoutError:
                    continue
                entry = self._entries.get(sig_id)
                if entry is not None:
                    heapq.heappush(due, (entry.next_write, next(order), sig_id))
                continue
            _, _, sig_id = heapq.heappop(due)
            entry = self._entries.get(sig_id)
            if entry is None:
                continue  # forgotten while it waited
            entry.scheduled = False
            if entry.created and not entry.pending:
                continue  # a duplicate in the schedule: nothing new to write
            await self._write(entry)
            entry.next_write = time.monotonic() + self.settings.min_update_interval_s

    async def _write(self, entry: _Entry) -> None:
        add = entry.pending
        try:
            if not entry.created:
                await self._create(entry, add)
            else:
                await self._patch(entry, add)
        except kubeapi.KubeApiError as exc:
            self.stats.errors += 1
            log.warning("event_write_failed", extra={"event": entry.name, "namespace": entry.namespace,
                                                     "status": exc.status, "reason": exc.reason,
                                                     "detail": exc.message})
            return
        entry.count += add
        entry.pending -= add

    async def _create(self, entry: _Entry, add: int, *, fallback: bool = True) -> None:
        if entry.uid is None:
            entry.uid = await self._pod_uid(entry)
        await self._bucket.take()
        try:
            await self._client.request("POST", self._collection(entry), body=self._event(entry, add))
        except kubeapi.KubeApiError as exc:
            if exc.status != 409 or not fallback:
                raise
            # Ours from before a restart (the name is deterministic): carry on counting in it.
            await self._bucket.take()
            existing = await self._client.request("GET", f"{self._collection(entry)}/{entry.name}")
            entry.count = int(existing.get("count") or 0)
            entry.created = True
            await self._patch(entry, add, fallback=False)
            return
        entry.created = True
        self.stats.created += 1
        log.info("event_created", extra={"event": entry.name, "namespace": entry.namespace, "count": add})

    async def _patch(self, entry: _Entry, add: int, *, fallback: bool = True) -> None:
        patch = {"count": entry.count + add, "lastTimestamp": entry.last_time, "message": entry.message}
        await self._bucket.take()
        try:
            await self._client.request("PATCH", f"{self._collection(entry)}/{entry.name}", body=patch,
                                       content_type="application/merge-patch+json")
        except kubeapi.KubeApiError as exc:
            if exc.status != 404 or not fallback:
                raise
            entry.created = False  # expired (Events live an hour by default): make it again
            await self._create(entry, add, fallback=False)
            return
        self.stats.updated += 1

    async def _pod_uid(self, entry: _Entry) -> str:
        """The pod's uid: kubectl describe finds Events by involvedObject uid, so one without it is hidden."""
        await self._bucket.take()
        try:
            pod = await self._client.request("GET", f"/api/v1/namespaces/{entry.namespace}/pods/{entry.pod}")
        except kubeapi.KubeApiError as exc:
            if exc.status != 404:
                raise
            return ""  # gone already: the API accepts an involvedObject without uid
        return str((pod.get("metadata") or {}).get("uid") or "")

    @staticmethod
    def _collection(entry: _Entry) -> str:
        return f"/api/v1/namespaces/{entry.namespace}/events"

    def _event(self, entry: _Entry, add: int) -> dict[str, Any]:
        instance = self.settings.instance[:_MAX_INSTANCE]
        involved = {"apiVersion": "v1", "kind": "Pod", "name": entry.pod, "namespace": entry.namespace}
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": entry.name, "namespace": entry.namespace,
                         "annotations": {SIGNATURE_ANNOTATION: entry.name.rpartition(".")[2]}},
            "involvedObject": involved | ({"uid": entry.uid} if entry.uid else {}),
            "reason": REASON,
            "message": entry.message,
            "type": "Warning",
            "source": {"component": COMPONENT, "host": self.settings.instance},
            "firstTimestamp": entry.first_time,
            "lastTimestamp": entry.last_time,
            "count": entry.count + add,
            "reportingComponent": COMPONENT,
            "reportingInstance": instance,
        }


def _timestamp(time_ns: int) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds; a flow without a time is stamped now."""
    when = datetime.fromtimestamp(time_ns / 1e9, UTC) if time_ns > 0 else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
