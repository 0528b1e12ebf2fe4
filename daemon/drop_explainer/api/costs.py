"""What a caller may cost: a rate per caller, bounded expensive work, a deadline, cached what-ifs.

Why: one uncached what-if on a 5,000-pod state costs up to ~180 ms of CPU
(the fix's blast radius), and it ran on the event loop, so 24 parallel
callers pushed ``/healthz`` past its probe timeout and the kubelet would
have restarted a daemon that was only busy. Here:

- **Per-caller rate** (``--api-rate``/s, bursts of ``--api-burst``): a token
  bucket keyed by the authenticated user (the impersonated one for a peer's
  request), or by the remote address under ``--auth none``. Over it: 429 with
  ``Retry-After`` (whole seconds until a token is back). The probes and the
  OpenAPI document are never limited: a busy daemon must not look dead.
- **Bounded work**: at most ``--api-concurrency`` what-ifs compute at once,
  each in a worker thread (``asyncio.to_thread``), so the loop keeps
  answering; at most ``--api-fanout-concurrency`` cluster-wide questions ask
  the peers at once. Waiting for a slot counts against the deadline.
- **Deadline** (``--api-deadline`` s): past it the caller gets 504 with the
  reason. A what-if already running in its thread finishes (a thread cannot
  be stopped) and its answer is cached for the next caller.
- **What-if cache**: answers keyed by the state's generation and the
  question, bounded in bytes (``--whatif-cache-bytes``, least recently used
  first out); a new state generation empties it, so an answer is never older
  than the state it was computed from. Redaction per caller happens after
  the cache (api/visibility.py), so the cache holds full answers only in memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import typedefs, web
from prometheus_client import CollectorRegistry, Counter

from drop_explainer.api import guard
from drop_explainer.settings import CostSettings

MAX_CALLERS = 10_000
"""Buckets kept; the least recently seen caller's is dropped first (it comes back full)."""
Answer = tuple[dict[str, Any], str]
"""A what-if answer: its JSON and its text."""


class RateLimiter:
    """Token buckets per caller: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_callers: int = MAX_CALLERS) -> None:
        self.rate, self.burst, self.clock, self.max_callers = rate, burst, clock, max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when admitted (a token taken), else the seconds until the next token."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        return wait


class WhatIfCache:
    """What-if answers of one state generation, bounded in bytes (thread-safe: filled from workers)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.generation: int | None = None
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[Answer, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, generation: int, key: Hashable) -> Answer | None:
        with self._lock:
            if generation != self.generation:
                self._reset(generation)
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, generation: int, key: Hashable, answer: Answer) -> None:
        size = len(json.dumps(answer[0])) + len(answer[1]) + 200
        with self._lock:
            if generation != self.generation:
                if self.generation is not None and generation < self.generation:
                    return  # computed on a state already replaced
                self._reset(generation)
            if size > self.max_bytes or key in self._entries:
                return
            self._entries[key] = (answer, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, freed) = self._entries.popitem(last=False)
                self.bytes -= freed

    def _reset(self, generation: int) -> None:
        self._entries.clear()
        self.bytes = 0
        self.generation = generation


class Costs:
    """The limits of one API (built by app.py from --api-* settings)."""

    def __init__(self, settings: CostSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.rate, settings.burst)
        self.cache = WhatIfCache(settings.whatif_cache_bytes)
        self._compute = asyncio.Semaphore(settings.concurrency)
        self._fanouts = asyncio.Semaphore(settings.fanout_concurrency)
        self.refused = Counter("drop_explainer_api_refused", "Requests refused for cost: rate (429) or deadline (504).",
                               ["reason"], registry=registry)
        self.whatif_cache = Counter("drop_explainer_api_whatif_cache", "What-if answers from the cache or computed.",
                                    ["result"], registry=registry)

    async def whatif(self, generation: int, key: Hashable, compute: Callable[[], Answer]) -> Answer:
        """The cached answer, or ``compute`` run in a worker thread once a slot is free."""
        found = self.cache.get(generation, key)
        if found is not None:
            self.whatif_cache.labels("hit").inc()
            return found
        self.whatif_cache.labels("miss").inc()
        await self._compute.acquire()
        found = self.cache.get(generation, key)  # someone may have computed it while we waited
        if found is not None:
            self._compute.release()
            return found

        def run() -> Answer:
            answer = compute()
            self.cache.put(generation, key, answer)
            return answer

        # The slot is held until the thread ends, not until the caller stops waiting: a caller
        # past its deadline must not let another computation start beside the one still running.
        work = asyncio.ensure_future(asyncio.to_thread(run))
        work.add_done_callback(self._done)
        return await asyncio.shield(work)

    def _done(self, work: asyncio.Future[Answer]) -> None:
        self._compute.release()
        if not work.cancelled():
            work.exception()  # retrieved: an abandoned computation's error is not logged as unretrieved

    @asynccontextmanager
    async def fanout(self) -> AsyncIterator[None]:
        """A slot for one cluster-wide question to the peers."""
        async with self._fanouts:
            yield

    def middleware(self) -> typedefs.Middleware:
        """Rate per caller, then the deadline; after api/guard.py, which names the caller."""
        deadline = self.settings.deadline_s

        @web.middleware
        async def costs(request: web.Request, handler: guard.Handler) -> web.StreamResponse:
            if request.path in guard.OPEN_PATHS:
                return await handler(request)
            wait = self.limiter.take(caller_key(request))
            if wait > 0:
                self.refused.labels("rate").inc()
                retry = max(1, math.ceil(wait))
                return _refuse(request, 429, f"over the rate of {self.settings.rate:g} requests/s per caller "
                               f"(bursts of {self.settings.burst}); retry after {retry} s",
                               {"Retry-After": str(retry)})
            timer = asyncio.timeout(deadline)
            request[DEADLINE_KEY] = timer
            try:
                async with timer:
                    return await handler(request)
            except TimeoutError:
                if not timer.expired():
                    raise
                self.refused.labels("deadline").inc()
                return _refuse(request, 504, f"no answer within {deadline:g} s (--api-deadline): the daemon is "
                               "busy or the peers are slow; retry later or ask a narrower question", {})

        return costs


DEADLINE_KEY = web.RequestKey("deadline", asyncio.Timeout)
"""The request's deadline; a stream (/drops/stream) lifts it once it is answering (lift_deadline)."""


def lift_deadline(request: web.Request) -> None:
    """No deadline from now on: a stream is one long request, healthy as long as the client reads.

    Its setup (authorization, filters) ran under the deadline; the stream bounds itself (api/stream.py)."""
    timer = request.get(DEADLINE_KEY)
    if isinstance(timer, asyncio.Timeout):
        timer.reschedule(None)


def caller_key(request: web.Request) -> str:
    """Whose bucket: the authenticated (or impersonated) user, else the remote address."""
    access = guard.access_of(request)
    if access.caller is not None:
        return "user:" + access.caller.user
    return "addr:" + (request.remote or "unknown")


def _refuse(request: web.Request, status: int, reason: str, headers: dict[str, str]) -> web.Response:
    if request.query.get("format") == "json" or "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"error": reason}, status=status, headers=headers)
    return web.Response(text=f"error: {reason}\n", status=status, headers=headers, content_type="text/plain")
