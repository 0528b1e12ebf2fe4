"""The h2 gRPC client against an in-memory HTTP/2 server: framing, flow control, statuses, failures.

No sockets: ``asyncio.open_connection`` is replaced by a pair of in-memory
streams whose far end is an h2 server connection the test scripts.
"""

from __future__ import annotations

import asyncio
import struct
import urllib.parse
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from drop_explainer.sources import errors, grpc_h2, hubble

METHOD = "/observer.Observer/GetFlows"


def framed(*messages: bytes, compressed: bool = False) -> bytes:
    return b"".join(struct.pack(">BI", int(compressed), len(m)) + m for m in messages)


class Peer:
    """The server end of one connection, in memory; also poses as the client's StreamWriter.

    Response steps scripted before the request has arrived run when it does.
    """

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.reader = asyncio.StreamReader()
        self.events: list[h2.events.Event] = []
        self.request_headers: dict[bytes, bytes] = {}
        self.request_body = b""
        self.outgoing = bytearray()  # response bytes waiting for flow-control window
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.frame_size = 16_384
        self.frozen = False  # stop processing what the client writes (a hung server)
        self.closed = False
        self.transport = self
        self._script: list[Callable[[], None]] | None = []
        self.conn.initiate_connection()
        self._flush()

    # --- the StreamWriter surface the client uses --------------------------------

    def write(self, data: bytes) -> None:
        if self.frozen:
            return
        for event in self.conn.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.RequestReceived):
                self.request_headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.request_body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and self._script is not None:
                script, self._script = self._script, None
                for step in script:
                    step()
        self.pump()

    def _then(self, step: Callable[[], None]) -> None:
        if self._script is None:
            step()
        else:
            self._script.append(step)

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reader.feed_eof()

    async def wait_closed(self) -> None:
        return None

    # --- scripting the response ----------------------------------------------------

    def respond(self, headers: list[tuple[bytes, bytes]] | None = None, *, end_stream: bool = False) -> None:
        def step() -> None:
            self.conn.send_headers(1, headers or [(b":status", b"200"), (b"content-type", b"application/grpc")],
                                   end_stream=end_stream)
            self._flush()
        self._then(step)

    def send(self, data: bytes, *, status: int | None = None, message: str = "") -> None:
        """Queue response bytes (sent as the window allows), then trailers if status is given."""
        def step() -> None:
            self.outgoing += data
            if status is not None:
                self.trailers = [(b"grpc-status", str(status).encode())]
                if message:
                    self.trailers.append((b"grpc-message", urllib.parse.quote(message).encode()))
            self.pump()
        self._then(step)

    def pump(self) -> None:
        if self._script is not None:
            return
        while self.outgoing and not self.closed:
            size = min(self.conn.local_flow_control_window(1), self.frame_size, len(self.outgoing))
            if size <= 0:
                break
            self.conn.send_data(1, bytes(self.outgoing[:size]))
            del self.outgoing[:size]
        if not self.outgoing and self.trailers is not None:
            self.conn.send_headers(1, self.trailers, end_stream=True)
            self.trailers = None
        self._flush()

    def raw(self, action: str, **kwargs: Any) -> None:
        """Call an h2 connection method (reset_stream, close_connection, ping) and send its frames."""
        def step() -> None:
            getattr(self.conn, action)(**kwargs)
            self._flush()
        self._then(step)

    def eof(self) -> None:
        self._then(self.close)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.reader.feed_data(data)


@pytest.fixture
async def peer(monkeypatch: pytest.MonkeyPatch) -> Peer:
    """Connections the client opens reach this in-memory server."""
    server = Peer()

    async def open_connection(host: str, port: int, **kwargs: object) -> tuple[asyncio.StreamReader, Peer]:
        return server.reader, server

    monkeypatch.setattr(asyncio, "open_connection", open_connection)
    return server


def call(**kwargs: Any) -> grpc_h2.StreamingCall:
    return grpc_h2.StreamingCall("127.0.0.1:4245", METHOD, b"request-bytes", **kwargs)


async def read_all(streaming: grpc_h2.StreamingCall) -> list[list[bytes]]:
    async with streaming:
        return [batch async for batch in streaming.messages()]


async def read_failing(streaming: grpc_h2.StreamingCall) -> tuple[list[bytes], grpc_h2.RpcError]:
    """The messages delivered before the call failed, and its error."""
    seen: list[bytes] = []
    try:
        async with streaming:
            async for batch in streaming.messages():
                seen += batch
    except grpc_h2.RpcError as exc:
        return seen, exc
    raise AssertionError("the call did not fail")


# --- targets ------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "expected", "authority"), [
    pytest.param("127.0.0.1:4244", grpc_h2.Address("127.0.0.1", 4244), "127.0.0.1:4244", id="ipv4"),
    pytest.param("[::1]:4244", grpc_h2.Address("::1", 4244), "[::1]:4244", id="ipv6"),
    pytest.param("ipv6:[::1]:50051", grpc_h2.Address("::1", 50051), "[::1]:50051", id="ipv6-scheme"),
    pytest.param("dns:///hubble-relay:80", grpc_h2.Address("hubble-relay", 80), "hubble-relay:80", id="dns"),
    pytest.param("hubble-relay", grpc_h2.Address("hubble-relay", 443), "hubble-relay:443", id="default-port"),
    pytest.param("unix:///var/run/cilium/hubble.sock", grpc_h2.Address(unix_path="/var/run/cilium/hubble.sock"),
                 "localhost", id="unix-absolute"),
    pytest.param("unix:hubble.sock", grpc_h2.Address(unix_path="hubble.sock"), "localhost", id="unix-relative"),
    pytest.param("unix-abstract:hubble", grpc_h2.Address(unix_path="\0hubble"), "localhost", id="unix-abstract"),
])
def test_targets_parse_like_grpc_target_strings(target: str, expected: grpc_h2.Address, authority: str) -> None:
    """The gRPC target forms Hubble and relay use give the right socket address and :authority."""
    assert grpc_h2.parse_target(target) == expected
    assert expected.authority == authority


@pytest.mark.parametrize("target", ["unix://relative.sock", "unix:", "host:port", "host:70000", ":4244",
                                    "[::1", "dns://8.8.8.8/host:53", "[nonsense]:1"])
def test_malformed_targets_are_rejected(target: str) -> None:
    """A target we cannot connect to is a ValueError, raised before any connection."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the target's own
        grpc_h2.parse_target(target)


def test_the_hubble_source_uses_h2_and_checks_the_target_before_connecting() -> None:
    """h2 is the default transport; a target it cannot dial, or an unknown transport, is a ConfigError."""
    assert hubble.HubbleSettings().transport == "h2"
    with pytest.raises(errors.ConfigError, match="target"):
        hubble.HubbleSettings(target="unix://relative.sock").validate()
    with pytest.raises(errors.ConfigError, match="transport"):
        hubble.HubbleSettings(transport="quic").validate()  # type: ignore[arg-type]
    hubble.HubbleSettings(target="unix://relative.sock", transport="grpcio").validate()  # grpcio judges it itself


def test_an_unreadable_ca_bundle_is_a_tls_error() -> None:
    """Garbage in place of a PEM CA bundle fails as TlsError, not as a crash."""
    with pytest.raises(grpc_h2.TlsError, match="cannot load"):
        grpc_h2.client_tls_context(ca_pem=b"not a certificate")


# --- the request ----------------------------------------------------------------------


async def test_request_is_a_grpc_post_with_one_length_prefixed_message(peer: Peer) -> None:
    """Headers as PROTOCOL-HTTP2.md asks, identity encoding only, the request framed and the stream half-closed."""
    async with call(user_agent="test-agent"):
        pass
    assert peer.request_headers == {
        b":method": b"POST", b":scheme": b"http", b":path": METHOD.encode(), b":authority": b"127.0.0.1:4245",
        b"content-type": b"application/grpc", b"te": b"trailers", b"user-agent": b"test-agent",
        b"grpc-accept-encoding": b"identity",
    }
    assert peer.request_body == framed(b"request-bytes")
    assert any(isinstance(e, h2.events.StreamEnded) for e in peer.events)


async def test_server_name_override_becomes_the_authority(peer: Peer) -> None:
    """With a TLS server name, :authority is that name, as grpcio's default_authority does."""
    async with call(server_name="kind-worker.default.hubble-grpc.cilium.io"):
        pass
    assert peer.request_headers[b":authority"] == b"kind-worker.default.hubble-grpc.cilium.io"


async def test_closing_an_open_call_cancels_the_stream_and_says_goodbye(peer: Peer) -> None:
    """Leaving the call early sends RST_STREAM(CANCEL) and GOAWAY, then closes the socket."""
    async with call():
        peer.respond()
    resets = [e for e in peer.events if isinstance(e, h2.events.StreamReset)]
    assert [r.error_code for r in resets] == [h2.errors.ErrorCodes.CANCEL]
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in peer.events)
    assert peer.closed


# --- messages ---------------------------------------------------------------------------


async def test_messages_split_across_frames_and_sharing_frames_come_out_whole(peer: Peer) -> None:
    """Length-prefixed messages are reassembled whatever the DATA frame boundaries."""
    messages = [bytes([i % 251]) * (i * 37 % 3000) for i in range(500)]
    peer.frame_size = 1000
    peer.respond()
    peer.send(framed(*messages), status=0)
    batches = await read_all(call())
    assert [m for batch in batches for m in batch] == messages
    assert len(batches) < len(messages) / 10  # many per batch


async def test_received_data_is_acknowledged_so_a_long_stream_never_stalls(peer: Peer) -> None:
    """40 MiB, more than the 16 MiB windows, arrive: WINDOW_UPDATEs reopen them as we read."""
    message = b"f" * 1000
    count = 40 * 1024
    peer.respond()
    peer.send(framed(*[message] * count), status=0)
    seen = 0
    async with call() as streaming:
        async for batch in streaming.messages():
            seen += len(batch)
    assert seen == count
    assert any(isinstance(e, h2.events.WindowUpdated) for e in peer.events)


async def test_an_empty_message_is_delivered(peer: Peer) -> None:
    """A zero-length message (an empty GetFlowsResponse) is a message, not a gap."""
    peer.respond()
    peer.send(framed(b"", b"x", b""), status=0)
    assert [m for batch in await read_all(call()) for m in batch] == [b"", b"x", b""]


async def test_server_pings_are_answered(peer: Peer) -> None:
    """A PING from the server is acknowledged while the stream is read."""
    peer.respond()
    peer.raw("ping", opaque_data=b"12345678")
    peer.send(framed(b"x"), status=0)
    await read_all(call())
    acks = [e for e in peer.events if isinstance(e, h2.events.PingAckReceived)]
    assert [a.ping_data for a in acks] == [b"12345678"]


async def test_keepalive_pings_are_sent_at_the_interval(peer: Peer) -> None:
    """With keepalive_s set, the client pings an idle stream; acknowledged pings keep it open."""
    peer.respond()

    async def end_later() -> None:
        await asyncio.sleep(0.1)
        peer.send(b"", status=0)

    async with call(keepalive_s=0.01, keepalive_timeout_s=1.0) as streaming:
        ending = asyncio.create_task(end_later())
        assert [batch async for batch in streaming.messages()] == []
        await ending
    pings = [e for e in peer.events if isinstance(e, h2.events.PingReceived)]
    assert len(pings) >= 2


async def test_an_unanswered_keepalive_ping_fails_the_call_as_unavailable(peer: Peer) -> None:
    """A server that stops answering is given up on after keepalive_timeout_s."""
    peer.frozen = True  # it sent its SETTINGS, then hangs
    async with asyncio.timeout(2):
        _, error = await read_failing(call(keepalive_s=0.01, keepalive_timeout_s=0.05))
    assert error.code is grpc_h2.StatusCode.UNAVAILABLE
    assert "keepalive" in error.details


# --- endings and failures ----------------------------------------------------------------


async def test_a_non_ok_status_in_the_trailers_is_raised_with_its_message(peer: Peer) -> None:
    """grpc-status and the percent-encoded grpc-message reach the caller after the messages."""
    peer.respond()
    peer.send(framed(b"a", b"b"), status=3, message="first cannot be specified with follow: 100%")
    seen, error = await read_failing(call())
    assert seen == [b"a", b"b"]
    assert error.code is grpc_h2.StatusCode.INVALID_ARGUMENT
    assert error.details == "first cannot be specified with follow: 100%"


async def test_a_trailers_only_response_carries_the_status(peer: Peer) -> None:
    """A server that fails at once sends one HEADERS frame with grpc-status and END_STREAM."""
    peer.respond([(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"12"),
                  (b"grpc-message", b"unknown method")], end_stream=True)
    with pytest.raises(grpc_h2.RpcError) as error:
        await read_all(call())
    assert (error.value.code, error.value.details) == (grpc_h2.StatusCode.UNIMPLEMENTED, "unknown method")


@pytest.mark.parametrize(("status", "code"), [
    (b"404", grpc_h2.StatusCode.UNIMPLEMENTED), (b"503", grpc_h2.StatusCode.UNAVAILABLE),
    (b"401", grpc_h2.StatusCode.UNAUTHENTICATED), (b"500", grpc_h2.StatusCode.UNKNOWN),
])
async def test_an_http_error_without_grpc_status_maps_like_grpc(peer: Peer, status: bytes,
                                                                code: grpc_h2.StatusCode) -> None:
    """A proxy's HTTP error becomes the gRPC code of http-grpc-status-mapping.md."""
    peer.respond([(b":status", status)], end_stream=True)
    with pytest.raises(grpc_h2.RpcError) as error:
        await read_all(call())
    assert error.value.code is code


@pytest.mark.parametrize(("rst", "code"), [
    (h2.errors.ErrorCodes.CANCEL, grpc_h2.StatusCode.CANCELLED),
    (h2.errors.ErrorCodes.REFUSED_STREAM, grpc_h2.StatusCode.UNAVAILABLE),
    (h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, grpc_h2.StatusCode.RESOURCE_EXHAUSTED),
    (h2.errors.ErrorCodes.INTERNAL_ERROR, grpc_h2.StatusCode.INTERNAL),
])
async def test_a_reset_stream_maps_to_the_grpc_code(peer: Peer, rst: h2.errors.ErrorCodes,
                                                    code: grpc_h2.StatusCode) -> None:
    """RST_STREAM error codes become gRPC statuses as PROTOCOL-HTTP2.md lists them."""
    peer.respond()
    peer.send(framed(b"before"))
    peer.raw("reset_stream", stream_id=1, error_code=rst)
    seen, error = await read_failing(call())
    assert seen == [b"before"]
    assert error.code is code


async def test_goaway_delivers_what_came_before_then_fails_as_unavailable(peer: Peer) -> None:
    """h2 accepts nothing after GOAWAY, so the call ends there, retryable, keeping earlier messages."""
    peer.respond()
    peer.send(framed(b"one", b"two"))
    peer.raw("close_connection", error_code=h2.errors.ErrorCodes.NO_ERROR, additional_data=b"server shutdown",
             last_stream_id=1)
    seen, error = await read_failing(call())
    assert seen == [b"one", b"two"]
    assert error.code is grpc_h2.StatusCode.UNAVAILABLE
    assert "GOAWAY" in error.details
    assert "server shutdown" in error.details


async def test_a_connection_closed_mid_stream_is_unavailable(peer: Peer) -> None:
    """EOF without trailers is a transport failure (retry), not a clean end."""
    peer.respond()
    peer.send(framed(b"x"))
    peer.eof()
    with pytest.raises(grpc_h2.RpcError) as error:
        await read_all(call())
    assert error.value.code is grpc_h2.StatusCode.UNAVAILABLE
    assert error.value.details == "Socket closed"


async def test_a_message_over_the_receive_limit_fails_as_resource_exhausted(peer: Peer) -> None:
    """As in grpcio: the messages before it are delivered, then RESOURCE_EXHAUSTED, without buffering it."""
    peer.respond()
    peer.send(framed(b"small") + struct.pack(">BI", 0, 10_000_000) + b"partial")
    seen, error = await read_failing(call(max_receive_bytes=1000))
    assert seen == [b"small"]
    assert error.code is grpc_h2.StatusCode.RESOURCE_EXHAUSTED
    assert error.details == "Received message larger than max (10000000 vs. 1000)"


async def test_a_compressed_message_is_refused_clearly(peer: Peer) -> None:
    """We advertise identity only; a compressed message is a server bug we name."""
    peer.respond()
    peer.send(framed(b"zz", compressed=True))
    with pytest.raises(grpc_h2.RpcError, match="compressed") as error:
        await read_all(call())
    assert error.value.code is grpc_h2.StatusCode.INTERNAL


async def test_a_stream_ending_inside_a_message_is_an_error(peer: Peer) -> None:
    """Trailers OK after half a message is not a clean end."""
    peer.respond()
    peer.send(framed(b"whole") + struct.pack(">BI", 0, 100) + b"half", status=0)
    with pytest.raises(grpc_h2.RpcError) as error:
        await read_all(call())
    assert error.value.code is grpc_h2.StatusCode.INTERNAL


async def test_a_server_that_never_answers_the_preface_times_out_as_unavailable(peer: Peer) -> None:
    """connect() waits for the server's SETTINGS at most connect_timeout_s."""
    peer.reader, peer.frozen = asyncio.StreamReader(), True  # nothing will ever arrive
    with pytest.raises(grpc_h2.RpcError, match="timed out") as error:
        await call(connect_timeout_s=0.05).connect()
    assert error.value.code is grpc_h2.StatusCode.UNAVAILABLE


async def test_a_peer_that_is_not_http2_is_unavailable(peer: Peer) -> None:
    """An HTTP/1 server's answer to the preface is a clear UNAVAILABLE."""
    peer.reader, peer.frozen = asyncio.StreamReader(), True
    peer.reader.feed_data(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(grpc_h2.RpcError, match="not an HTTP/2 server") as error:
        await call().connect()
    assert error.value.code is grpc_h2.StatusCode.UNAVAILABLE
