"""`GET /drops/stream`: follow drops as they arrive, like `hubble observe -f`.

Format: JSON lines (``application/x-ndjson``) for programs, one text line per
event for people (``text/plain``), chosen as every other answer is
(``?format=``, ``Accept``). Not server-sent events: the stream starts *now*
(history is ``/drops?since=``), so SSE's resume by ``Last-Event-ID`` has
nothing to resume; its ``data:`` framing would have to be stripped by every
curl/jq/kubectl user; and a browser reads JSON lines with ``fetch()`` as
easily as with ``EventSource``.

Each line is one event: ``subscribed`` first (what is followed, and the
namespaces the caller may see), then ``new`` for each signature seen for the
first time (the same object as an entry of ``/drops``), ``drop`` for every
explained drop when ``?all=true``, ``heartbeat`` every
:data:`HEARTBEAT_S` seconds of silence (so proxies and the client know the
stream is alive), and ``cut_off`` with a ``reason`` as the last line when the
daemon ends the stream.

Bounded per client: each subscriber has a queue of at most
:data:`QUEUE_EVENTS` events; the flow path only ever ``put_nowait``\\ s, and a
subscriber whose queue is full (it reads slower than drops arrive) is cut off
with a reason instead of growing memory. A write that does not drain within
the write timeout cuts it off too. At most :data:`MAX_SUBSCRIBERS` streams are
open at once. Cut-offs are counted in ``drop_explainer_api_stream_cut_off``.

Per instance: in DaemonSet mode each instance streams the drops it sees (the
``subscribed`` line says so); follow every instance for the whole cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from drop_explainer.api import guard, params, render, visibility
from drop_explainer.api.params import BadRequest
from drop_explainer.sinks.base import ExplainedDrop

QUEUE_EVENTS = 256
"""Events queued for one subscriber before it is cut off as too slow."""
MAX_SUBSCRIBERS = 64
"""Open streams at once; the next is answered 503."""
HEARTBEAT_S = 15.0
MAX_AGE_S = 3600.0
"""A stream ends (reason given) after this long: permissions are checked once per stream, so a caller
whose RoleBinding was removed stops seeing drops within the hour; reconnect to continue."""
WRITE_TIMEOUT_S = 30.0
STREAM_PARAMS = frozenset({"namespace", "pod", "direction", "policy", "trap", "all"})


@dataclass(frozen=True, slots=True)
class StreamFilter:
    namespace: str | None = None
    pod: str | None = None
    direction: str | None = None
    policy: str | None = None
    trap: str | None = None
    every_drop: bool = False


def stream_filter(query: Mapping[str, str]) -> StreamFilter:
    """The filters of /drops that make sense from now on; since/until/limit are refused with the reason."""
    for name in ("since", "until", "limit"):
        if name in query:
            raise BadRequest(f"{name}: the stream starts now and has no end or count; for history ask "
                             "/drops?since=")
    params.check_known(query, STREAM_PARAMS)
    scope = params.scope(query)
    if scope != "local" and "scope" in query:
        raise BadRequest("scope=cluster: a stream is per instance; follow each instance (scope=local)")
    ns = params.namespace(query["namespace"]) if "namespace" in query else None
    pod = params.object_name(query["pod"]) if "pod" in query else None
    direction = params.choice(query, "direction", ("ingress", "egress"))
    f = params.drop_filter({k: v for k, v in query.items() if k in ("trap", "policy")})
    every = params.choice(query, "all", ("true", "false")) == "true"
    return StreamFilter(ns, pod, direction, f.policy, f.trap, every)


def _ends(sig_source: str, sig_dest: str, affected_ns: str) -> set[str]:
    ends = {affected_ns} if affected_ns else set()
    for name in (sig_source, sig_dest):
        ns, sep, _ = name.partition("/")
        if sep:
            ends.add(ns)
    return ends


class Subscriber:
    """One client's bounded queue; ``reason`` is set once it must stop."""

    def __init__(self, f: StreamFilter, allowed: frozenset[str] | None, max_events: int) -> None:
        self.filter = f
        self.allowed = allowed
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max_events)
        self.reason: str | None = None
        self.kind = ""
        """Why, for the metric: slow, max_age, shutdown, write_timeout."""
        self.wake = asyncio.Event()

    def matches(self, drop: ExplainedDrop) -> bool:
        sig, f = drop.signature, self.filter
        ns, _, pod = sig.affected.partition("/") if "/" in sig.affected else ("", "", sig.affected)
        if self.allowed is not None and not _ends(sig.source_workload, sig.destination, ns) & self.allowed:
            return False
        return ((f.namespace is None or ns == f.namespace) and (f.pod is None or pod == f.pod)
                and (f.direction is None or sig.direction == f.direction)
                and (f.policy is None or f.policy in sig.policies) and (f.trap is None or f.trap in sig.traps))

    def offer(self, event: dict[str, Any]) -> bool:
        """Queue without waiting; False (and cut off) when the client has fallen too far behind."""
        if self.reason is not None:
            return False
        try:
            self.queue.put_nowait(event)
            self.wake.set()
            return True
        except asyncio.QueueFull:
            self.stop(f"too slow: {self.queue.maxsize} events queued unread; reconnect and read faster, "
                      "or narrow the filters", "slow")
            return False

    def stop(self, reason: str, kind: str) -> None:
        if self.reason is None:
            self.reason, self.kind = reason, kind
        self.wake.set()


class Hub:
    """A sink: each explained drop offered to every matching subscriber, never waiting for one."""

    def __init__(self, lookup: Callable[[str], Any] | None = None, *, registry: CollectorRegistry | None = None,
                 node: str = "", max_events: int = QUEUE_EVENTS, max_subscribers: int = MAX_SUBSCRIBERS,
                 heartbeat_s: float = HEARTBEAT_S, max_age_s: float = MAX_AGE_S,
                 write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.lookup = lookup
        """The store's get(id): the new signature as /drops shows it."""
        self.node = node
        self.max_events, self.max_subscribers = max_events, max_subscribers
        self.heartbeat_s, self.max_age_s, self.write_timeout_s = heartbeat_s, max_age_s, write_timeout_s
        self.subscribers: set[Subscriber] = set()
        self.cut_off = Counter("drop_explainer_api_stream_cut_off", "Streams of /drops/stream ended by the daemon.",
                               ["reason"], registry=registry)
        self.open = Gauge("drop_explainer_api_streams_open", "Clients following /drops/stream.", registry=registry)
        self.open.set_function(lambda: len(self.subscribers))

    def handle(self, drop: ExplainedDrop) -> None:
        if not self.subscribers:
            return
        wanted = [s for s in self.subscribers if (drop.new or s.filter.every_drop) and s.matches(drop)]
        if not wanted:
            return
        light = _light(drop, self.node)
        full = self._full(drop, light) if drop.new else None
        for s in wanted:
            if drop.new and full is not None:
                s.offer(full)
            if s.filter.every_drop:
                s.offer(light)

    def _full(self, drop: ExplainedDrop, light: dict[str, Any]) -> dict[str, Any]:
        record = self.lookup(drop.signature.id) if self.lookup is not None else None
        body = render.drop_json(record, node=self.node) if record is not None else light["drop"]
        return {"event": "new", "drop": body}

    def subscribe(self, f: StreamFilter, allowed: frozenset[str] | None) -> Subscriber:
        if len(self.subscribers) >= self.max_subscribers:
            raise web.HTTPServiceUnavailable(reason=f"{self.max_subscribers} streams already open; retry later",
                                             headers={"Retry-After": "5"})
        s = Subscriber(f, allowed, self.max_events)
        self.subscribers.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)

    def stopped(self, s: Subscriber, kind: str) -> None:
        self.cut_off.labels(kind).inc()

    def close(self, reason: str) -> None:
        """End every stream (the daemon is stopping): each gets ``reason`` as its last line."""
        for s in list(self.subscribers):
            s.stop(reason, "shutdown")


def _light(drop: ExplainedDrop, node: str) -> dict[str, Any]:
    sig = drop.signature
    ns, sep, _ = sig.affected.partition("/")
    return {"event": "drop", "drop": {
        "id": sig.id,
        "signature": {"source_workload": sig.source_workload, "destination": sig.destination, "port": sig.port,
                      "protocol": sig.protocol, "direction": sig.direction, "policies": list(sig.policies),
                      "traps": list(sig.traps)},
        "pod": sig.affected if sep else "", "namespace": ns if sep else "",
        "time": render.iso(drop.flow.time_ns) if drop.flow.time_ns else "", "reported_by": node,
        "headline": drop.explanation.headline}}


def event_text(e: Mapping[str, Any]) -> str:
    """One line (a new signature: its headline line, then its explanation) for people."""
    kind = e["event"]
    if kind == "subscribed":
        return f"# following {e['following']}; {e['note']}\n"
    if kind == "heartbeat":
        return ""
    if kind == "cut_off":
        return f"# stream ended: {e['reason']}\n"
    d = e["drop"]
    sig = d["signature"]
    head = (f"{'NEW ' if kind == 'new' else ''}{sig['source_workload']} -> {sig['destination']} "
            f"{sig['protocol']}/{sig['port']} ({sig['direction']}) policies: {','.join(sig['policies']) or '-'} "
            f"traps: {','.join(sig['traps']) or '-'} [id {d['id']}]\n")
    return head + (str(d.get("explanation_text", "")) + "\n" if kind == "new" else "")


async def _shown(access: guard.Access, e: dict[str, Any]) -> dict[str, Any]:
    """The event as this caller may read it: the other side of a cross-namespace drop redacted."""
    if access.everything or "drop" not in e:
        return e
    d = e["drop"]
    visible = await access.visible(visibility.drop_ends(d) if "explanation" in d else
                                   _ends(d["signature"]["source_workload"], d["signature"]["destination"], ""))
    if "explanation" in d:
        return {**e, "drop": visibility.redact_drop(d, visible)}
    sig = dict(d["signature"])
    masked = visibility.hidden(_ends(sig["source_workload"], sig["destination"], ""), visible)
    if not masked:
        return e
    sig["policies"] = [p for p in sig["policies"] if p.partition("/")[0] not in masked]
    return {**e, "drop": {**d, "signature": sig, "headline": "(withheld: " + visibility.WHY.format(
        ns=", ".join(masked)) + ")"}}


async def follow(request: web.Request, hub: Hub, f: StreamFilter, allowed: frozenset[str] | None, *,
                 lift_deadline: Callable[[], None], distributed: bool) -> web.StreamResponse:
    """Write events until the client leaves or is cut off; the request deadline is lifted once streaming."""
    access = guard.access_of(request)
    as_json = params.wants_json(request.query, request.headers.get("Accept", ""))
    sub = hub.subscribe(f, allowed)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson" if as_json else
                                       "text/plain; charset=utf-8", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    kind = "client"

    async def send(e: dict[str, Any]) -> None:
        data = json.dumps(e, separators=(",", ":")) + "\n" if as_json else event_text(e)
        if data:
            async with asyncio.timeout(hub.write_timeout_s):
                await resp.write(data.encode())

    try:
        await resp.prepare(request)
        lift_deadline()
        what = "new signatures" + (" and every drop" if f.every_drop else "")
        note = ("only namespaces you may see: " + ", ".join(sorted(allowed)) if allowed is not None
                else "every namespace")
        if distributed:
            note += "; this instance's drops only (follow each instance for the whole cluster)"
        await send({"event": "subscribed", "following": what, "note": note, "reported_by": hub.node,
                    **({"filtered_to_namespaces": sorted(allowed)} if allowed is not None else {})})
        started = time.monotonic()
        while True:
            while sub.reason is None and not sub.queue.empty():
                await send(await _shown(access, sub.queue.get_nowait()))
            if sub.reason is not None:
                break
            if time.monotonic() - started > hub.max_age_s:
                sub.stop(f"stream open for {hub.max_age_s:g} s; reconnect to go on (permissions are re-checked)",
                         "max_age")
                break
            sub.wake.clear()
            if sub.queue.empty() and not await _woken(sub.wake, hub.heartbeat_s, request):
                if _gone(request):
                    kind = "client"
                    return resp
                await send({"event": "heartbeat"})
        kind = sub.kind
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            async with asyncio.timeout(1.0):  # the reason, if the client still reads at all
                await resp.write((json.dumps({"event": "cut_off", "reason": sub.reason}) + "\n").encode()
                                 if as_json else event_text({"event": "cut_off", "reason": sub.reason}).encode())
    except TimeoutError:
        kind = "write_timeout"
        sub.stop(f"the client did not read within {hub.write_timeout_s:g} s", "write_timeout")
    except ConnectionResetError:
        kind = "client"
    finally:
        hub.unsubscribe(sub)
        if kind != "client":
            hub.stopped(sub, kind)
            if request.transport is not None and kind == "write_timeout":
                request.transport.abort()
    return resp


async def _woken(event: asyncio.Event, timeout: float, request: web.Request) -> bool:
    """True when ``event`` was set within ``timeout`` seconds; False sooner when the client has gone.

    aiohttp does not cancel a handler whose client left: looking once a second ends its stream (and
    frees its slot) without waiting for the next heartbeat's write to fail."""
    deadline = time.monotonic() + timeout
    while not _gone(request):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            async with asyncio.timeout(min(left, 1.0)):
                await event.wait()
            return True
        except TimeoutError:
            continue
    return False


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()
