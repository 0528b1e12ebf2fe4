"""Follow one kind of object forever: list, mark LISTED, watch; relist on 410; reconnect on failure.

Modelled on kopf's ``infinite_watch`` / ``continuous_watch``:

- A paginated list (``limit``/``continue``), each object yielded as ADDED,
  then ``Mark.LISTED``: from here on the consumer's copy is complete.
- A watch from the list's resourceVersion, with bookmarks and a server-side
  timeout; every event and bookmark moves the resourceVersion forward, so
  a reconnect resumes exactly where the last one stopped (nothing missed,
  nothing repeated).
- 410 Gone (HTTP 410, or an ERROR event carrying a 410 Status) means etcd
  has compacted past our resourceVersion: the changes in between are lost
  for good, so we relist. The relist is diffed against what we yielded
  before (name -> resourceVersion): only new or changed objects are yielded,
  and objects that vanished in the gap get a synthetic DELETED, so the
  consumer ends up exactly in sync without clearing its copy.
- Any other failure (connection refused or dropped, 5xx, 403 while RBAC is
  being fixed) is retried with capped exponential backoff and jitter, from
  the last resourceVersion; ``Mark.DISCONNECTED`` tells the consumer so.

The generator never returns and never raises for API trouble; cancel it to stop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from drop_explainer.cluster import kubeapi

log = logging.getLogger(__name__)


class Mark(enum.Enum):
    """What a watch says besides object events."""

    LISTED = "listed"
    """A full list has been yielded: the consumer's copy of this kind is complete."""
    ALIVE = "alive"
    """A bookmark, or the server ended a quiet watch at its timeout: healthy, nothing changed."""
    DISCONNECTED = "disconnected"
    """A request failed; retrying after a backoff."""


class EventType(enum.StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    key: str
    """namespace/name, or name for cluster-scoped kinds."""
    object: Mapping[str, Any]
    """The raw object; for a deletion found by a relist, only kind and metadata names."""


@dataclass(frozen=True, slots=True)
class WatchSettings:
    page_size: int = 500
    """Objects per list page: bounds the memory of one answer."""
    timeout_s: int = 300
    """Server-side timeoutSeconds of one watch request; a healthy watch says something at least this often."""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    read_margin_s: float = 30.0
    """How much longer than timeout_s a silent connection may stay open before it counts as dead."""
    short_watch_s: float = 1.0
    """A watch that ends cleanly this fast with nothing in it counts as a failure (as client-go's
    reflector does), so a proxy that closes every watch at once cannot make us spin."""


@dataclass(slots=True)
class _Cursor:
    """What we know about the collection between two requests."""

    resource_version: str | None = None
    """Where the next watch starts; None means list (again)."""
    versions: dict[str, str] = field(default_factory=dict)
    """key -> resourceVersion of every object yielded and not deleted since: small, and lets a relist diff."""


@dataclass(slots=True)
class _Backoff:
    settings: WatchSettings
    delay: float = 0.0
    failures: int = 0

    def reset(self) -> None:
        self.delay, self.failures = 0.0, 0

    async def sleep(self) -> None:
        s = self.settings
        self.failures += 1
        self.delay = min(s.backoff_max_s, s.backoff_initial_s if not self.delay else self.delay * 2)
        # Full jitter halves the herd when every node's daemon lost the same API server at once.
        await asyncio.sleep(random.uniform(self.delay / 2, self.delay))


async def watch_objects(client: kubeapi.Client, resource: kubeapi.Resource, *,
                        settings: WatchSettings = WatchSettings()) -> AsyncGenerator[WatchEvent | Mark, None]:
    """Object events and marks for one kind, forever (see the module docstring)."""
    cursor = _Cursor()
    backoff = _Backoff(settings)
    where = {"kind": resource.kind}
    while True:
        try:
            rounds = _list(client, resource, cursor, settings) if cursor.resource_version is None else \
                _watch(client, resource, cursor, settings)
            async with aclosing(rounds) as items:
                async for item in items:
                    if backoff.failures:
                        log.info("watch_recovered", extra=where | {"failures": backoff.failures})
                    backoff.reset()
                    yield item
        except kubeapi.Gone as exc:
            # etcd compacted past our resourceVersion: the changes in between are gone, relist.
            log.info("watch_expired", extra=where | {"resource_version": cursor.resource_version,
                                                     "detail": exc.message})
            if cursor.resource_version is None:  # the list itself expired (continue token): not a loop
                await backoff.sleep()
            cursor.resource_version = None
        except kubeapi.KubeApiError as exc:
            level = logging.WARNING if not backoff.failures else logging.DEBUG
            log.log(level, "watch_failed", extra=where | {"status": exc.status, "reason": exc.reason,
                                                          "detail": exc.message,
                                                          "resource_version": cursor.resource_version})
            yield Mark.DISCONNECTED
            await backoff.sleep()


async def _list(client: kubeapi.Client, resource: kubeapi.Resource, cursor: _Cursor,
                settings: WatchSettings) -> AsyncGenerator[WatchEvent | Mark, None]:
    seen: set[str] = set()
    resource_version = ""
    async with aclosing(client.list_pages(resource.path, limit=settings.page_size)) as pages:
        async for page in pages:
            for raw in page.items:
                key = kubeapi.object_key(resource, raw)
                seen.add(key)
                version = _resource_version(raw)
                before = cursor.versions.get(key)
                if before is not None and before == version:
                    continue  # unchanged since we last yielded it (a relist)
                cursor.versions[key] = version
                yield WatchEvent(EventType.ADDED if before is None else EventType.MODIFIED, key,
                                 _with_kind(raw, resource))
            resource_version = page.resource_version
    for key in sorted(cursor.versions.keys() - seen):
        # Deleted while we were not watching: the relist is the only witness.
        del cursor.versions[key]
        yield WatchEvent(EventType.DELETED, key, _tombstone(resource, key))
    cursor.resource_version = resource_version
    yield Mark.LISTED


async def _watch(client: kubeapi.Client, resource: kubeapi.Resource, cursor: _Cursor,
                 settings: WatchSettings) -> AsyncGenerator[WatchEvent | Mark, None]:
    params = {"watch": "1", "resourceVersion": cursor.resource_version or "",
              "allowWatchBookmarks": "true", "timeoutSeconds": str(settings.timeout_s)}
    stream = client.stream(resource.path, params, read_timeout_s=settings.timeout_s + settings.read_margin_s)
    started, received = time.monotonic(), 0
    async with aclosing(stream) as events:
        async for event in events:
            received += 1
            kind, obj = event.get("type"), event.get("object")
            if not isinstance(obj, dict):
                raise kubeapi.KubeApiError(0, "BadEvent", f"watch event without an object: {kind!r}")
            if kind == "ERROR":
                raise kubeapi.status_error(obj)
            version = _resource_version(obj)
            if kind == "BOOKMARK":
                cursor.resource_version = version or cursor.resource_version
                yield Mark.ALIVE
                continue
            if not isinstance(kind, str) or kind not in EventType.__members__:
                log.debug("watch_event_unknown", extra={"kind": resource.kind, "type": kind})
                continue
            key = kubeapi.object_key(resource, obj)
            if kind == EventType.DELETED:
                cursor.versions.pop(key, None)
            else:
                cursor.versions[key] = version
            cursor.resource_version = version or cursor.resource_version
            yield WatchEvent(EventType(kind), key, _with_kind(obj, resource))
    if not received and time.monotonic() - started < settings.short_watch_s:
        raise kubeapi.KubeApiError(0, "ShortWatch", "the watch ended at once without any event")
    yield Mark.ALIVE  # the server ended a watch at its timeout: quiet, not broken


def _resource_version(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata") or {}
    return str(meta.get("resourceVersion") or "")


def _with_kind(raw: Mapping[str, Any], resource: kubeapi.Resource) -> Mapping[str, Any]:
    # List items come without kind; parsers and error messages want it.
    return raw if raw.get("kind") else {**raw, "kind": resource.kind}


def _tombstone(resource: kubeapi.Resource, key: str) -> Mapping[str, Any]:
    namespace, _, name = key.rpartition("/")
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"kind": resource.kind, "metadata": meta}
