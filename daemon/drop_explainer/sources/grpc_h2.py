"""One gRPC server-streaming call over HTTP/2, spoken with the ``h2`` library.

Why this exists: grpcio spends ~18 µs of Python-side work on every received
message (a bare ``grpc.aio`` read loop, no decoding, tops out near 55k
messages/s on one core, and the whole Hubble source near 25k flows/s), which
is below what a busy node emits. Here one socket read carries many HTTP/2
DATA frames and each frame many length-prefixed gRPC messages, so a message
costs a slice and a list append (~1.5 µs), and the caller gets them in
batches. Figures: ``bench/hubble_stream.py``.

Deliberately small: exactly one unary-request, server-streaming call per
connection (Hubble's GetFlows), no compression (we advertise only
``identity``, so a conforming server never compresses), no retries, no name
resolution beyond the socket layer's. The wire format is gRPC's
PROTOCOL-HTTP2.md (grpc/grpc ``doc/PROTOCOL-HTTP2.md``): request headers,
one ``Length-Prefixed-Message`` (1-byte compressed flag, 4-byte big-endian
length, payload), END_STREAM; the response is headers, messages, then
trailers carrying ``grpc-status`` / ``grpc-message`` (or a trailers-only
HEADERS frame).

Failures raise ``RpcError`` with a gRPC status code, mapped as grpcio would
map them: connection trouble is UNAVAILABLE, a TLS handshake failure is the
subclass ``TlsError`` (also UNAVAILABLE), a message over the receive limit
is RESOURCE_EXHAUSTED, and otherwise the server's own status is used.

One limitation comes from h2 itself: a connection that has received GOAWAY
accepts no further frames (python-hyper/h2#1181), so a graceful server
shutdown ends the call at once with UNAVAILABLE rather than letting the
stream finish. Hubble's source resumes with ``since`` and removes the
replayed repeats, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import os
import re
import ssl
import struct
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

_PREFIX: Final = struct.Struct(">BI")
_PREFIX_LEN: Final = 5
# Large windows let the server run ahead of us; we acknowledge as we go.
_WINDOW: Final = 16 * 1024 * 1024
_DEFAULT_WINDOW: Final = 65_535
# Bigger frames mean fewer h2 events when the server batches its writes.
_MAX_FRAME: Final = 1024 * 1024
_READ_BYTES: Final = 256 * 1024
_DEFAULT_PORT: Final = 443
_DataReceived: Final = h2.events.DataReceived
_SSL_LOCATION: Final = re.compile(r"\s*\(_ssl\.c:\d+\)$")


class StatusCode(enum.IntEnum):
    """gRPC status codes (grpc/grpc ``doc/statuscodes.md``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """The call failed with a gRPC status (from the server, or decided here)."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class TlsError(RpcError):
    """The TLS handshake or certificate verification failed; the connection never carried gRPC."""

    def __init__(self, details: str) -> None:
        super().__init__(StatusCode.UNAVAILABLE, details)


# RST_STREAM error code -> gRPC status, per PROTOCOL-HTTP2.md "Errors".
_RST_CODES: Final[dict[int, StatusCode]] = {
    h2.errors.ErrorCodes.REFUSED_STREAM: StatusCode.UNAVAILABLE,
    h2.errors.ErrorCodes.CANCEL: StatusCode.CANCELLED,
    h2.errors.ErrorCodes.ENHANCE_YOUR_CALM: StatusCode.RESOURCE_EXHAUSTED,
    h2.errors.ErrorCodes.INADEQUATE_SECURITY: StatusCode.PERMISSION_DENIED,
}
# HTTP status without grpc-status -> gRPC status (grpc/grpc doc/http-grpc-status-mapping.md).
_HTTP_CODES: Final = {
    400: StatusCode.INTERNAL, 401: StatusCode.UNAUTHENTICATED, 403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED, 429: StatusCode.UNAVAILABLE, 502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE, 504: StatusCode.UNAVAILABLE,
}


# --- where to connect ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed gRPC target: a UNIX socket path, or a host and port."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    @property
    def authority(self) -> str:
        """The ``:authority`` grpcio would send: ``host:port``, ``localhost`` for a socket."""
        if self.unix_path is not None:
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(target: str) -> Address:
    """Parse the gRPC target forms we support; ValueError names what is wrong.

    ``unix:///abs/path``, ``unix:path``, ``unix-abstract:name``, ``host:port``,
    ``[v6]:port``, optionally prefixed ``dns:///``, ``ipv4:`` or ``ipv6:``
    (one address only). Without a port, 443 as in grpcio.
    """
    if target.startswith("unix://"):
        path = target[len("unix://"):]
        if not path.startswith("/"):
            raise ValueError(f"{target!r}: unix:// needs an absolute path (unix:///path)")
        return Address(unix_path=path)
    if target.startswith("unix:"):
        return Address(unix_path=_nonempty(target, target[len("unix:"):]))
    if target.startswith("unix-abstract:"):
        return Address(unix_path="\0" + _nonempty(target, target[len("unix-abstract:"):]))
    rest = target
    for prefix in ("dns:///", "ipv4:", "ipv6:"):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    if rest.startswith("dns:"):
        raise ValueError(f"{target!r}: a DNS authority is not supported, use dns:///host:port")
    return _host_port(target, rest)


def _nonempty(target: str, path: str) -> str:
    if not path:
        raise ValueError(f"{target!r}: empty socket path")
    return path


def _host_port(target: str, rest: str) -> Address:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"{target!r}: malformed [IPv6]:port")
        port_text = tail[1:]
    elif rest.count(":") > 1:  # a bare IPv6 address, no port
        host, port_text = rest, ""
    else:
        host, _, port_text = rest.partition(":")
    if not host:
        raise ValueError(f"{target!r}: no host")
    if rest.startswith("[") or ":" in host:
        ipaddress.IPv6Address(host)  # ValueError for garbage
    if not port_text:
        return Address(host=host, port=_DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{target!r}: bad port {port_text!r}")
    return Address(host=host, port=int(port_text))


def client_tls_context(
    *, ca_pem: bytes | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A verifying client context offering ALPN ``h2`` (gRPC servers require it); TlsError if unusable."""
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem is not None else None)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise TlsError(f"TLS: cannot load the CA bundle or client certificate: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    return context


# --- the call ---------------------------------------------------------------------


class StreamingCall:
    """One server-streaming call on its own connection: ``async with`` it, then iterate ``messages()``.

    ``connect()`` (or entering the context) returns once the server has
    answered the HTTP/2 preface, so "connected" means a live HTTP/2 peer, as
    grpcio's channel READY state does.
    """

    def __init__(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        max_receive_bytes: int = 4 * 1024 * 1024,
        keepalive_s: float | None = None,
        keepalive_timeout_s: float = 20.0,
        connect_timeout_s: float = 20.0,
        user_agent: str = "drop-explainer-grpc-h2",
    ) -> None:
        self.address = parse_target(target)
        self.target = target
        self._method = method
        self._request = request
        self._tls = tls
        self._server_name = server_name
        self._max_receive = max_receive_bytes
        self._keepalive_s = keepalive_s
        self._keepalive_timeout_s = keepalive_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._user_agent = user_agent
        self._conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self._stream_id = 1
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[h2.events.Event] = []
        self._ready = False
        self._status: tuple[StatusCode, str] | None = None
        self._ended = False
        self._failure: RpcError | None = None
        self._parts: list[bytes] = []
        self._have = 0
        self._need = _PREFIX_LEN
        self._timer: asyncio.TimerHandle | None = None
        self._ping_due = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- connecting -------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket (and TLS), send the call, and wait for the server's SETTINGS."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._open()
                self._start()
                first = True
                while not self._ready:
                    data = await self._read()
                    # The server's preface is a SETTINGS frame (type 4); anything
                    # else (an HTTP/1 answer) would leave h2 waiting for more bytes.
                    if first and len(data) >= 4 and data[3] != 4:
                        raise h2.exceptions.ProtocolError(f"unexpected first bytes {data[:16]!r}")
                    first = False
                    self._pending.extend(self._conn.receive_data(data))
                    self._ready = any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self._pending)
                    self._flush()
        except TimeoutError:
            self._abort()
            raise RpcError(StatusCode.UNAVAILABLE, f"{self.target}: connect timed out") from None
        except h2.exceptions.ProtocolError as exc:
            self._abort()
            raise RpcError(StatusCode.UNAVAILABLE, f"{self.target}: not an HTTP/2 server ({exc})") from exc
        except BaseException:
            self._abort()
            raise
        self._schedule_ping()

    async def _open(self) -> None:
        address, tls = self.address, self._tls
        # SNI and the hostname check use the override, else the target's host;
        # a socket has no host of its own.
        server_hostname = self._server_name or (address.host if address.unix_path is None else "localhost")
        try:
            if address.unix_path is not None:
                self._reader, self._writer = await asyncio.open_unix_connection(address.unix_path, limit=_READ_BYTES)
            else:
                self._reader, self._writer = await asyncio.open_connection(
                    address.host, address.port, limit=_READ_BYTES)
        except OSError as exc:
            raise RpcError(StatusCode.UNAVAILABLE, f"failed to connect to {self.target}: {_os_reason(exc)}") from exc
        if tls is None:
            return
        # The handshake runs apart from the connect, so a server that drops
        # us mid-handshake (e.g. no client certificate) reads as a TLS failure.
        try:
            await self._writer.start_tls(tls, server_hostname=server_hostname)
        except ssl.SSLError as exc:  # includes SSLCertVerificationError
            raise TlsError(f"TLS handshake with {self.target} failed: {_ssl_reason(exc)}") from exc
        except OSError as exc:
            raise TlsError(f"TLS handshake with {self.target} failed: Socket closed ({_os_reason(exc)})") from exc
        alpn = self._writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn not in (None, "h2"):
            raise TlsError(f"TLS: {self.target} negotiated ALPN {alpn!r}, not h2")

    def _start(self) -> None:
        """Preface, SETTINGS and the connection window, then the request (PROTOCOL-HTTP2.md "Requests")."""
        conn = self._conn
        conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: _MAX_FRAME,
        })
        # Settings made before the preface count as in force, so h2 must be told the frame limit itself.
        conn.max_inbound_frame_size = _MAX_FRAME
        conn.initiate_connection()
        conn.increment_flow_control_window(_WINDOW - _DEFAULT_WINDOW)
        tls = self._tls is not None
        conn.send_headers(self._stream_id, [
            (b":method", b"POST"),
            (b":scheme", b"https" if tls else b"http"),
            (b":path", self._method.encode("ascii")),
            (b":authority", (self._server_name or self.address.authority).encode("ascii")),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", self._user_agent.encode("ascii")),
            (b"grpc-accept-encoding", b"identity"),
        ])
        # Our request is tiny; the default 64 KiB window always has room for it.
        conn.send_data(self._stream_id, _PREFIX.pack(0, len(self._request)) + self._request, end_stream=True)
        self._flush()

    # --- reading ----------------------------------------------------------------

    async def messages(self) -> AsyncIterator[list[bytes]]:
        """Yield the response messages, many per batch, until the call ends; RpcError if it failed."""
        events, self._pending = self._pending, []
        while True:
            batch = self._handle(events)
            self._flush()
            if batch:
                yield batch
            if self._failure is not None:
                raise self._failure
            if self._ended:
                self._finish()
                return
            events = self._receive(await self._read())

    def _receive(self, data: bytes) -> list[h2.events.Event]:
        try:
            return self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            if self._conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
                # Frames that followed a GOAWAY in the same read (python-hyper/h2#1181);
                # the events before them are lost with it, which a resume makes good.
                raise RpcError(StatusCode.UNAVAILABLE, f"the server sent GOAWAY (then: {exc})") from exc
            raise RpcError(StatusCode.UNAVAILABLE, f"HTTP/2 connection error: {exc}") from exc

    async def _read(self) -> bytes:
        assert self._reader is not None
        try:
            data = await self._reader.read(_READ_BYTES)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS error from {self.target}: {_ssl_reason(exc)}") from exc
        except OSError as exc:
            raise RpcError(StatusCode.UNAVAILABLE, f"Socket closed ({_os_reason(exc)})") from exc
        if not data:
            if self._failure is not None:  # our own abort, e.g. the keepalive watchdog
                raise self._failure
            raise RpcError(StatusCode.UNAVAILABLE, "Socket closed")
        return data

    def _handle(self, events: list[h2.events.Event]) -> list[bytes]:
        """Collect DATA, act on the rest; acknowledge all data at once (flow control, batched)."""
        chunks: list[bytes] = []
        consumed = 0
        stream_id = self._stream_id
        for event in events:
            if type(event) is _DataReceived and event.stream_id == stream_id:
                chunks.append(event.data)
                consumed += event.flow_controlled_length
            else:
                self._control(event)
        if consumed and not self._ended and self._failure is None:
            self._conn.acknowledge_received_data(consumed, stream_id)
        return self._split(chunks) if chunks else []

    def _control(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._on_headers(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self._on_trailers(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self._ended = True
        elif isinstance(event, h2.events.StreamReset):
            code = _RST_CODES.get(int(event.error_code), StatusCode.INTERNAL)
            self._fail(RpcError(code, f"stream reset by the server: {_h2_error_name(event.error_code)}"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            debug = (event.additional_data or b"").decode("utf-8", "replace")
            self._fail(RpcError(StatusCode.UNAVAILABLE,
                                f"the server sent GOAWAY ({_h2_error_name(event.error_code)}) {debug}".rstrip()))
        elif isinstance(event, h2.events.PingAckReceived) and self._ping_due:
            self._ping_due = False
            if self._timer is not None:
                self._timer.cancel()
            self._schedule_ping()

    def _fail(self, error: RpcError) -> None:
        if self._failure is None and not self._ended:
            self._failure = error

    def _split(self, chunks: list[bytes]) -> list[bytes]:
        """Cut length-prefixed messages out of the DATA received; keep the unfinished tail.

        A message over the limit or compressed fails the call, after the
        messages before it are delivered (grpcio fails it the same way).
        """
        parts = self._parts
        parts.extend(chunks)
        self._have += sum(map(len, chunks))
        if self._have < self._need:
            return []
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        out: list[bytes] = []
        pos, end = 0, len(data)
        unpack, limit = _PREFIX.unpack_from, self._max_receive
        need = _PREFIX_LEN
        while end - pos >= _PREFIX_LEN:
            compressed, length = unpack(data, pos)
            if length > limit:
                self._failure = RpcError(StatusCode.RESOURCE_EXHAUSTED,
                                         f"Received message larger than max ({length} vs. {limit})")
                break
            if compressed:
                self._failure = RpcError(StatusCode.INTERNAL, "compressed message received, but we asked for identity")
                break
            stop = pos + _PREFIX_LEN + length
            if stop > end:
                need = _PREFIX_LEN + length
                break
            out.append(data[pos + _PREFIX_LEN:stop])
            pos = stop
        if pos < end:
            parts.append(data[pos:])
        self._have, self._need = end - pos, need
        return out

    def _on_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        fields = dict(headers)
        if b"grpc-status" in fields:  # trailers-only response
            self._on_trailers(headers)
            return
        # Raising is safe here: response headers precede any DATA of the stream.
        status = fields.get(b":status", b"")
        if status != b"200":
            code = _HTTP_CODES.get(int(status) if status.isdigit() else 0, StatusCode.UNKNOWN)
            raise RpcError(code, f"HTTP status {status.decode('ascii', 'replace')} without grpc-status")
        if not fields.get(b"content-type", b"").startswith(b"application/grpc"):
            raise RpcError(StatusCode.UNKNOWN, "the response is not gRPC (content-type)")
        if fields.get(b"grpc-encoding", b"identity") != b"identity":
            raise RpcError(StatusCode.INTERNAL, "the server compresses, but we asked for identity only")

    def _on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        fields = dict(headers)
        raw = fields.get(b"grpc-status", b"")
        try:
            code = StatusCode(int(raw))
        except ValueError:
            code = StatusCode.UNKNOWN
        # grpc-message is percent-encoded UTF-8 (PROTOCOL-HTTP2.md "Responses").
        message = urllib.parse.unquote(fields.get(b"grpc-message", b"").decode("ascii", "replace"))
        self._status = (code, message if raw else "the server sent no grpc-status")

    def _finish(self) -> None:
        code, message = self._status or (StatusCode.UNKNOWN, "the stream ended without trailers")
        if code is not StatusCode.OK:
            raise RpcError(code, message)
        if self._have:
            raise RpcError(StatusCode.INTERNAL, "the stream ended inside a message")

    # --- writing, keepalive, closing -------------------------------------------

    def _flush(self) -> None:
        """Send what h2 queued (WINDOW_UPDATE, PING and SETTINGS acks) right away."""
        data = self._conn.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    def _schedule_ping(self) -> None:
        if self._keepalive_s:
            self._timer = asyncio.get_running_loop().call_later(self._keepalive_s, self._ping)

    def _ping(self) -> None:
        """Keepalive: a PING every keepalive_s; no ACK within keepalive_timeout_s closes the connection.

        ACKs are seen as messages() reads, so the caller must keep reading
        (Hubble's reader never blocks on its consumer).
        """
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._conn.ping(os.urandom(8))
            self._flush()
        self._ping_due = True
        self._timer = asyncio.get_running_loop().call_later(self._keepalive_timeout_s, self._ping_timeout)

    def _ping_timeout(self) -> None:
        # The read that is waiting sees the socket close and raises this failure.
        self._fail(RpcError(StatusCode.UNAVAILABLE, "keepalive watchdog timeout"))
        self._abort()

    def _abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._writer is not None:
            self._writer.transport.abort()

    async def aclose(self) -> None:
        """Cancel the call if it is still open (RST_STREAM CANCEL, GOAWAY) and close the socket."""
        if self._timer is not None:
            self._timer.cancel()
        writer = self._writer
        if writer is None:
            return
        if not writer.is_closing():
            with contextlib.suppress(h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                if not self._ended:
                    self._conn.reset_stream(self._stream_id, h2.errors.ErrorCodes.CANCEL)
                self._conn.close_connection()
            self._flush()
            writer.close()
        # Plaintext closes at once; TLS waits for the peer's close_notify,
        # which gRPC servers may never send, so that wait is cut short.
        try:
            async with asyncio.timeout(0.1):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.transport.abort()  # a no-op once closed; also runs if we are cancelled meanwhile


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's words without the C source location, plus a hint for a missing client certificate."""
    text = _SSL_LOCATION.sub("", str(exc)) or type(exc).__name__
    if "CERTIFICATE_REQUIRED" in str(exc.reason or "").upper():
        text += ": the server requires a client certificate"
    return text


def _os_reason(exc: OSError) -> str:
    """"Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 4244)"."""
    return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__


def _h2_error_name(code: h2.errors.ErrorCodes | int | None) -> str:
    return code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
