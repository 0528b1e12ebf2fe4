"""The API's listening socket: a deadline for request headers and a cap on open connections.

aiohttp has neither. A client that opens connections and never finishes its
headers (slow loris) would hold each one until the keep-alive timeout, and
enough of them would exhaust file descriptors and memory; the liveness probe
would then fail and the pod be restarted by an attacker's choice.

Each connection goes through a ``_Guard`` in front of aiohttp's protocol:

- From the connection's start, and again after each answer, a complete
  request head must arrive within ``header_timeout_s`` or the connection is
  closed. Bytes trickling in do not extend the deadline.
- An answer must be written within ``write_timeout_s``: a client that
  stops reading is cut off.
- At most ``max_connections`` are open. A new one over the cap first evicts
  the connection idle longest (no request being handled: a slow loris is
  always idle), so probes are not starved by idle connections. When every
  connection is busy, up to ``PROBE_RESERVE`` more are accepted for the
  probes and /metrics only (anything else there gets 503); past those, the
  connection is answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger(__name__)
PROBE_RESERVE = 8
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_HEAD_END = re.compile(rb"\n\r?\n")
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 46\r\n\r\n"
            b"error: too many connections; try again later\r\n")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    header_timeout_s: float = 10.0
    """Seconds for a request head to arrive, from the connection's start or the previous answer."""
    max_connections: int = 256
    """Open connections beyond which the longest-idle one is closed for a new one."""
    write_timeout_s: float = 60.0
    """Seconds to write one answer; a client that stops reading (slow read) is then cut off, or its
    connection would stay busy, never evictable, for ever."""


class _Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the deadline and the cap."""

    def __init__(self, limiter: ConnectionLimiter, inner: asyncio.Protocol) -> None:
        self.limiter = limiter
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self.probes_only = False
        self.idle_since = time.monotonic()
        self._tail = b""
        self._head_seen = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.limiter.admit(self):
            transport.write(_REFUSAL)
            transport.close()
            return
        self.inner.connection_made(transport)
        self.arm()

    def data_received(self, data: bytes) -> None:
        if not self._head_seen and _HEAD_END.search(self._tail + data):
            self._head_seen = True
        self._tail = data[-2:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.limiter.forget(self):
            self.inner.connection_lost(exc)

    def arm(self) -> None:
        """A request head is due within the timeout from now."""
        self.disarm()
        self._head_seen = False
        self._deadline = asyncio.get_running_loop().call_later(self.limiter.limits.header_timeout_s, self._expire)

    def disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.busy or self._head_seen or self.transport is None:
            return
        self.limiter.header_timeouts += 1
        log.debug("api_header_timeout", extra={"peer": self.transport.get_extra_info("peername")})
        self.transport.close()


class ConnectionLimiter:
    """The guards of one listening socket; also the middleware that marks a connection busy."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limits: ServerLimits) -> None:
        self.factory = factory
        self.limits = limits
        self.open: dict[_Guard, None] = {}
        """Admitted connections, oldest first."""
        self._by_transport: dict[Any, _Guard] = {}
        self.header_timeouts = 0
        self.write_timeouts = 0
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Guard(self, self.factory())

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: what the deadline and the cap did, read at each scrape."""
        yield GaugeMetricFamily("drop_explainer_api_connections_open", "Open HTTP API connections.",
                                value=len(self.open))
        for name, doc, value in (
                ("header_timeouts", "Connections closed because a request's headers did not arrive in time.",
                 self.header_timeouts),
                ("write_timeouts", "Connections cut off because the client did not read an answer in time.",
                 self.write_timeouts),
                ("connections_evicted", "Idle connections closed to make room over the connection cap.",
                 self.evicted),
                ("connections_refused", "Connections answered 503 and closed: every slot and the probe reserve "
                 "busy.", self.refused)):
            yield CounterMetricFamily(f"drop_explainer_api_{name}", doc, value=value)

    def admit(self, guard: _Guard) -> bool:
        if len(self.open) >= self.limits.max_connections:
            idle = [g for g in self.open if not g.busy]
            if idle:
                oldest = min(idle, key=lambda g: g.idle_since)
                self.evicted += 1
                self._drop(oldest)
            elif len(self.open) < self.limits.max_connections + PROBE_RESERVE:
                guard.probes_only = True
            else:
                self.refused += 1
                log.warning("api_connection_refused", extra={"open": len(self.open)})
                return False
        self.open[guard] = None
        self._by_transport[guard.transport] = guard
        return True

    def _drop(self, guard: _Guard) -> None:
        """Close an admitted connection; aiohttp hears of it at once, so it stops counting right away."""
        transport = guard.transport
        self.forget(guard)
        guard.disarm()
        guard.inner.connection_lost(None)
        if transport is not None:
            transport.close()

    def forget(self, guard: _Guard) -> bool:
        """True when the guard was admitted and not yet forgotten (so aiohttp must hear of the loss)."""
        if guard not in self.open:
            return False
        del self.open[guard]
        self._by_transport.pop(guard.transport, None)
        return True

    @web.middleware
    async def mark_busy(self, request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Outermost: the connection counts as busy until its answer is written, so it is never evicted
        between the handler's return and aiohttp's writing of the answer."""
        guard = self._by_transport.get(request.transport)
        if guard is None:  # a connection not made through this limiter
            return await handler(request)
        guard.busy += 1
        guard.disarm()
        try:
            resp = await handler(request)
            try:
                async with asyncio.timeout(self.limits.write_timeout_s):
                    await resp.prepare(request)
                    await resp.write_eof()
            except ConnectionResetError:
                pass  # aiohttp sees the reset again and handles it
            except TimeoutError:
                self.write_timeouts += 1
                log.debug("api_write_timeout", extra={"path": request.path[:200]})
                if guard.transport is not None:
                    guard.transport.abort()
            return resp
        finally:
            guard.busy -= 1
            if not guard.busy and guard in self.open:
                guard.idle_since = time.monotonic()
                guard.arm()

    @web.middleware
    async def probes_only(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Innermost, so the refusal it raises gets the error shape from the app's error middleware."""
        guard = self._by_transport.get(request.transport)
        if guard is not None and guard.probes_only and request.path not in PROBE_PATHS:
            raise web.HTTPServiceUnavailable(reason="too many connections; only the probes are answered now",
                                             headers={"Retry-After": "1"})
        return await handler(request)


class _QuietClientErrors(logging.Filter):
    """aiohttp logs every malformed request (a control byte in a header, a line over 8190 bytes) at
    ERROR with a traceback: the client's fault, and a way for anyone to flood the log. The client
    still gets aiohttp's 400; the log gets one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            log.debug("api_malformed_request", extra={"reason": str(exc.message)[:200]})
            return False
        return True


def quiet_client_errors() -> None:
    """Install the filter on aiohttp's server logger, once."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _QuietClientErrors) for f in logger.filters):
        logger.addFilter(_QuietClientErrors())


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ConnectionLimiter (web.TCPSite otherwise)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limiter: ConnectionLimiter, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner)
        self._host, self._port, self.limiter = host, port, limiter
        self._ssl = ssl_context
        self.bound_port: int | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self._host}:{self.bound_port or self._port}"

    async def start(self) -> None:
        await super().start()
        server = await asyncio.get_running_loop().create_server(self.limiter, self._host, self._port,
                                                                reuse_address=True, backlog=self._backlog,
                                                                ssl=self._ssl)
        self._server = server
        self.bound_port = server.sockets[0].getsockname()[1] if server.sockets else self._port


def guarded(app: web.Application, limits: ServerLimits) -> Callable[[web.AppRunner], ConnectionLimiter]:
    """Add the limiter's middlewares to ``app`` (before the runner freezes it); then, given the
    runner once it is set up, the limiter around its protocol factory."""
    holder: dict[str, ConnectionLimiter] = {}

    @web.middleware
    async def mark_busy(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        return await holder["limiter"].mark_busy(request, handler)

    @web.middleware
    async def probes_only(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        return await holder["limiter"].probes_only(request, handler)

    app.middlewares.insert(0, mark_busy)
    app.middlewares.append(probes_only)
    quiet_client_errors()

    def limiter(runner: web.AppRunner) -> ConnectionLimiter:
        assert runner.server is not None, "call after runner.setup()"
        holder["limiter"] = ConnectionLimiter(runner.server, limits)
        return holder["limiter"]

    return limiter
