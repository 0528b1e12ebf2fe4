"""Liveness and readiness on a port of their own, answered off the event loop.

Under a flood of new drops the event loop explains flows and renders large
``GET /drops`` answers; a probe on the API's port waits behind that work
(bench/flood.py measured a /healthz p99 of 282 ms there, and a kubelet that
times out three probes in a row restarts a pod that is working as designed).
So ``--probe-port`` serves ``/healthz`` and ``/readyz`` from a thread of its
own, with the standard library's HTTP server: no event loop to wait behind.

The answers themselves are computed on the loop (``refresh``, every
``REFRESH_S``) and only read by the thread, so the thread never walks state
the loop is changing. That also makes the probe tell the truth about the
loop: when the loop has not refreshed the answers for ``stall_after_s``,
``/healthz`` answers 503 "event loop stalled", and the kubelet restarts a
daemon that is really wedged rather than one that is merely busy.

The probe port answers these two paths only, as plain text, without
authentication (like ``/healthz`` and ``/readyz`` on the API port): they say
whether the daemon works, never what it has seen. A connection must send its
request within ``REQUEST_TIMEOUT_S``, and past ``MAX_CONNECTIONS`` open
ones the oldest is closed for the new one, so idle connections cannot keep
the kubelet's probe out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.server
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

REFRESH_S = 0.25
"""How often the loop recomputes the answers."""
REQUEST_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32

Check = Callable[[], tuple[bool, str]]


class ProbePortInUse(Exception):
    """The probe port is taken: said in one line naming the port and the option."""

    def __init__(self, listen: str, port: int) -> None:
        super().__init__(f"probe port {port} on {listen} is already in use; choose another with --probe-port "
                         f"(0: the probes are served on the API's port only)")
        self.port = port


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    text: str


class ProbeAnswers:
    """The latest answers, written by the loop and read by the probe thread (one reference swap each)."""

    def __init__(self, *, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._beat = clock()
        self._health = _Answer(503, "unhealthy: starting\n")
        self._ready = _Answer(503, "not ready: starting\n")

    def update(self, healthy: tuple[bool, str], ready: tuple[bool, str]) -> None:
        self._health = _Answer(200 if healthy[0] else 503, f"{'ok' if healthy[0] else 'unhealthy'}: {healthy[1]}\n")
        self._ready = _Answer(200 if ready[0] else 503, f"{'ready' if ready[0] else 'not ready'}: {ready[1]}\n")
        self._beat = self._clock()

    def answer(self, path: str) -> _Answer | None:
        """The answer to ``path``; None for a path the probe port does not serve."""
        stale = self._clock() - self._beat
        if path == "/healthz":
            if stale > self.stall_after_s:
                return _Answer(503, f"unhealthy: event loop stalled: answers not refreshed for {stale:.0f} s\n")
            return self._health
        if path == "/readyz":
            if stale > self.stall_after_s:
                return _Answer(503, f"not ready: event loop stalled: answers not refreshed for {stale:.0f} s\n")
            return self._ready
        return None


async def refresh(answers: ProbeAnswers, healthy: Check, ready: Check) -> None:
    """Recompute the answers on the loop, forever: if this stops running, the probe says so."""
    while True:
        answers.update(healthy(), ready())
        await asyncio.sleep(REFRESH_S)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "drop-explainer-probes"
    sys_version = ""

    def do_GET(self) -> None:
        self._reply(head=False)

    def do_HEAD(self) -> None:
        self._reply(head=True)

    def _reply(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        found = self.server.answers.answer(path)
        if found is None:
            found = _Answer(404, f"not found: this port serves /healthz and /readyz only, not {path[:100]}\n")
        body = found.text.encode()
        self.send_response(found.status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("probe_request", extra={"client": self.client_address[0], "line": format % args})


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """One thread per connection, at most ``MAX_CONNECTIONS``; a new one over that evicts the oldest.

    Every connection here is one request and a close, so the oldest open one
    is the one that has sent nothing for longest (a slow client): shutting its
    socket ends its thread at once, and a kubelet probe arriving behind
    ``MAX_CONNECTIONS`` idle connections is still answered. Threads are capped
    at twice that while the evicted ones finish.
    """

    daemon_threads = True
    block_on_close = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], answers: ProbeAnswers, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.answers = answers
        self._lock = threading.Lock()
        self._open: dict[socket.socket, float] = {}
        self._running = 0
        self.evicted = 0
        super().__init__(address, _Handler)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: tuple[str, int] | str) -> None:
        assert isinstance(request, socket.socket)
        with self._lock:
            if self._running >= 2 * MAX_CONNECTIONS:
                refuse = True
            else:
                refuse = False
                if len(self._open) >= MAX_CONNECTIONS:
                    oldest = min(self._open, key=self._open.__getitem__)
                    del self._open[oldest]
                    self.evicted += 1
                    with contextlib.suppress(OSError):
                        oldest.shutdown(socket.SHUT_RDWR)
                self._open[request] = time.monotonic()
                self._running += 1
        if refuse:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket | tuple[bytes, socket.socket],
                               client_address: tuple[str, int] | str) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                if isinstance(request, socket.socket):
                    self._open.pop(request, None)
                self._running -= 1


class ProbeServer:
    """The probe port: bound when made (a taken port is said at start), served by ``start`` until ``close``."""

    def __init__(self, listen: str, port: int, answers: ProbeAnswers) -> None:
        family = socket.AF_INET6 if ":" in listen else socket.AF_INET
        try:
            self._server = _Server((listen, port), answers, family)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ProbePortInUse(listen, port) from None
            raise
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="probes", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("probes_listening", extra={"port": self.port})

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


async def serve(listen: str, port: int, healthy: Check, ready: Check, *, stall_after_s: float,
                on_bound: Callable[[int], None] | None = None) -> None:
    """Serve the probe port until cancelled; the answers are refreshed on this task's loop."""
    answers = ProbeAnswers(stall_after_s=stall_after_s)
    answers.update(healthy(), ready())
    server = ProbeServer(listen, port, answers)
    try:
        server.start()
        if on_bound is not None:
            on_bound(server.port)
        await refresh(answers, healthy, ready)
    finally:
        # shutdown() waits for serve_forever's poll (<= 0.5 s): off the loop, which may be stopping.
        await asyncio.shield(asyncio.to_thread(server.close))
