"""The h2 transport against real gRPC servers (grpc.aio) on loopback: targets, TLS, statuses, sizes.

The other tests in this folder run the Hubble source with its default
transport, h2; the last test here runs those scenarios again with
``transport="grpcio"`` so the fallback keeps working too.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
import test_hubble_faults
import test_hubble_stream
from hubble_helpers import SERVER_NAME, Collector, TlsMaterial, fast_settings

from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.sources import grpc_h2, hubble
from drop_explainer.testing.hubble_server import (
    FakeHubbleServer,
    ServerTls,
    load_responses,
    oversized_flow,
    policy_denied_syn,
)

S = 1_000_000_000
T0 = 1_750_000_000 * S
MIB = 1024 * 1024


def denied(i: int) -> flow_pb2.Flow:
    return policy_denied_syn(T0 + i * S // 100, source_port=30000 + i)


def history(count: int) -> list[flow_pb2.Flow]:
    return [denied(i) for i in range(count)]


def request(**fields: object) -> bytes:
    return observer_pb2.GetFlowsRequest(**fields).SerializeToString()  # type: ignore[arg-type]


async def ports(target: str, count: int, **kwargs: object) -> list[int]:
    """Source ports of the last count flows, read over h2 until the server ends the call."""
    seen: list[int] = []
    async with grpc_h2.StreamingCall(target, hubble.GET_FLOWS, request(number=count), **kwargs) as call:  # type: ignore[arg-type]
        async for batch in call.messages():
            seen += [observer_pb2.GetFlowsResponse.FromString(raw).flow.l4.TCP.source_port - 30000 for raw in batch]
    return seen


async def failure(target: str, body: bytes = b"", method: str = hubble.GET_FLOWS, **kwargs: object
                  ) -> grpc_h2.RpcError:
    try:
        async with grpc_h2.StreamingCall(target, method, body, **kwargs) as call:  # type: ignore[arg-type]
            async for _ in call.messages():
                pass
    except grpc_h2.RpcError as exc:
        return exc
    raise AssertionError("the call did not fail")


# --- where ------------------------------------------------------------------------------


async def test_tcp_target_streams_the_history_and_ends_ok() -> None:
    """A finite call (no follow) over 127.0.0.1 returns every message, then OK."""
    async with FakeHubbleServer(history(300)) as server:
        assert await ports(server.target, 300) == list(range(300))


@pytest.mark.parametrize("form", ["unix://{path}", "unix:{path}"])
async def test_unix_socket_targets_work(tmp_path: Path, form: str) -> None:
    """Both spellings of a UNIX socket target reach the server."""
    async with FakeHubbleServer(history(3), unix_path=tmp_path / "hubble.sock", tcp=False) as server:
        assert await ports(form.format(path=server.unix_path), 3) == [0, 1, 2]


@contextlib.asynccontextmanager
async def ipv6_server(responses: list[bytes]) -> AsyncIterator[str]:
    """A plain grpc.aio server on [::1] sending the given responses (FakeHubbleServer binds IPv4 only)."""
    async def get_flows(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        for raw in responses:
            yield raw

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("observer.Observer", {
        "GetFlows": grpc.unary_stream_rpc_method_handler(get_flows)}),))
    port = server.add_insecure_port("[::1]:0")
    await server.start()
    try:
        yield f"[::1]:{port}"
    finally:
        await server.stop(None)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_target_works() -> None:
    """[::1]:port is dialled over IPv6."""
    responses = [observer_pb2.GetFlowsResponse(flow=denied(i)).SerializeToString() for i in range(2)]
    async with ipv6_server(responses) as target:
        assert await ports(target, 2) == [0, 1]


async def test_nothing_listening_is_unavailable() -> None:
    """Connection refused is UNAVAILABLE, as grpcio reports it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await failure(f"127.0.0.1:{port}")
    assert error.code is grpc_h2.StatusCode.UNAVAILABLE
    assert "Connection refused" in error.details


# --- TLS ----------------------------------------------------------------------------------


def server_tls(material: TlsMaterial, *, mutual: bool) -> ServerTls:
    return ServerTls(material.server.cert, material.server.key, material.ca.cert if mutual else None)


def tls_context(material: TlsMaterial, *, ca: bytes | None = None, client_cert: bool = False) -> ssl.SSLContext:
    return grpc_h2.client_tls_context(
        ca_pem=ca or material.ca.cert,
        cert_file=material.file("client.crt", material.client.cert) if client_cert else None,
        key_file=material.file("client.key", material.client.key) if client_cert else None,
    )


async def test_tls_with_a_server_name_override_streams(tls_material: TlsMaterial) -> None:
    """The certificate names only *.default.hubble-grpc.cilium.io: SNI and the check use the override."""
    async with FakeHubbleServer(history(2), tls=server_tls(tls_material, mutual=False)) as server:
        assert await ports(server.target, 2, tls=tls_context(tls_material), server_name=SERVER_NAME) == [0, 1]


async def test_mtls_with_a_client_certificate_streams(tls_material: TlsMaterial) -> None:
    """Hubble's :4244 setup: the server requires our certificate, and gets it."""
    async with FakeHubbleServer(history(2), tls=server_tls(tls_material, mutual=True)) as server:
        context = tls_context(tls_material, client_cert=True)
        assert await ports(server.target, 2, tls=context, server_name=SERVER_NAME) == [0, 1]


async def test_a_wrong_ca_is_a_tls_error_naming_the_verification_failure(tls_material: TlsMaterial) -> None:
    """A CA that did not sign the server certificate fails the handshake: TlsError, UNAVAILABLE."""
    async with FakeHubbleServer(tls=server_tls(tls_material, mutual=False)) as server:
        error = await failure(server.target, tls=tls_context(tls_material, ca=tls_material.other_ca.cert),
                              server_name=SERVER_NAME)
        assert server.requests == []
    assert isinstance(error, grpc_h2.TlsError)
    assert error.code is grpc_h2.StatusCode.UNAVAILABLE
    assert "certificate verify failed" in error.details


async def test_a_server_name_the_certificate_does_not_cover_is_a_tls_error(tls_material: TlsMaterial) -> None:
    """Without the override the target's IP is checked against the certificate, and fails."""
    async with FakeHubbleServer(tls=server_tls(tls_material, mutual=False)) as server:
        error = await failure(server.target, tls=tls_context(tls_material))
    assert isinstance(error, grpc_h2.TlsError)
    assert "127.0.0.1" in error.details


async def test_a_missing_client_certificate_fails_the_call(tls_material: TlsMaterial) -> None:
    """The server drops us during or right after the handshake; either way the call is UNAVAILABLE."""
    async with FakeHubbleServer(tls=server_tls(tls_material, mutual=True)) as server:
        error = await failure(server.target, tls=tls_context(tls_material), server_name=SERVER_NAME)
    assert error.code is grpc_h2.StatusCode.UNAVAILABLE


# --- statuses and sizes ----------------------------------------------------------------------


async def test_the_servers_status_code_and_message_come_through() -> None:
    """Hubble's own rejection (first with follow) is INVALID_ARGUMENT with its message."""
    async with FakeHubbleServer() as server:
        error = await failure(server.target, request(number=2, first=True, follow=True))
    assert error.code is grpc_h2.StatusCode.INVALID_ARGUMENT
    assert error.details == "first cannot be specified with follow"


async def test_an_unknown_method_is_unimplemented() -> None:
    """A method the server does not serve gets grpc-status 12 in a trailers-only response."""
    async with FakeHubbleServer() as server:
        error = await failure(server.target, method="/observer.Observer/NoSuchMethod")
    assert error.code is grpc_h2.StatusCode.UNIMPLEMENTED


async def test_a_5_mib_message_arrives_whole() -> None:
    """Larger than grpcio's default limit and than our windows' halves: reassembled across many frames."""
    big = oversized_flow(denied(0), 5 * MIB)
    async with FakeHubbleServer([big, denied(1)]) as server, grpc_h2.StreamingCall(
            server.target, hubble.GET_FLOWS, request(number=2), max_receive_bytes=64 * MIB) as call:
        received = [raw async for batch in call.messages() for raw in batch]
    assert [len(raw) > 5 * MIB for raw in received] == [True, False]
    assert observer_pb2.GetFlowsResponse.FromString(received[0]).flow.Summary == big.Summary


async def test_a_message_over_the_limit_is_resource_exhausted() -> None:
    """Past max_receive_bytes the call fails as grpcio's does, so the source resumes at the live end."""
    async with FakeHubbleServer([oversized_flow(denied(0), 2 * MIB)]) as server:
        error = await failure(server.target, request(number=1), max_receive_bytes=MIB)
    assert error.code is grpc_h2.StatusCode.RESOURCE_EXHAUSTED


# --- the source, both transports ---------------------------------------------------------------


async def test_both_transports_give_the_source_identical_flows(shared_dir: Path) -> None:
    """Recorded and synthetic drops come out of HubbleSource the same over h2 and over grpcio."""
    responses = load_responses(shared_dir / "fixtures/hubble/cnpg_testdata1.jsonl")
    responses += [observer_pb2.GetFlowsResponse(flow=f) for f in history(50)]
    async def flows(target: str, transport: hubble.Transport) -> list[object]:
        collector = Collector(hubble.HubbleSource(fast_settings(
            target, transport=transport, initial_number=1000, verdicts=())))
        try:
            await collector.until(lambda: len(collector.flows) == len(responses))
        finally:
            await collector.close()
        return list(collector.flows)

    async with FakeHubbleServer(responses) as server:
        assert await flows(server.target, "h2") == await flows(server.target, "grpcio")


SCENARIOS = [
    pytest.param(module, name, id=name)
    for module in (test_hubble_stream, test_hubble_faults)
    for name, test in vars(module).items()
    if name.startswith("test_") and "fast_settings" in test.__code__.co_names
]


@pytest.mark.parametrize(("module", "name"), SCENARIOS)
async def test_every_source_scenario_also_passes_over_grpcio(
    module: object, name: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The grpcio fallback: each source scenario of this folder, run again with transport="grpcio"."""
    monkeypatch.setattr(module, "fast_settings", functools.partial(fast_settings, transport="grpcio"))
    collectors: list[Collector] = []

    def collect(settings: hubble.HubbleSettings) -> Collector:
        assert settings.transport == "grpcio"
        collectors.append(Collector(hubble.HubbleSource(settings)))
        return collectors[-1]

    scenario: Callable[..., object] = getattr(module, name)
    arguments = {parameter: collect if parameter == "collect" else request.getfixturevalue(parameter)
                 for parameter in inspect.signature(scenario).parameters}
    # grpcio's aio poller sometimes reports to the closed loop of an earlier
    # test (grpc/grpc#25364); a scenario counting every logged error would
    # count that too, so that one known message is kept out of the log.
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addFilter(_grpc_poller_noise)
    try:
        await scenario(**arguments)  # type: ignore[misc]
    finally:
        asyncio_log.removeFilter(_grpc_poller_noise)
        for collector in collectors:
            await collector.close()


def _grpc_poller_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Exception in callback PollerCompletionQueue._handle_events")
