"""The test Hubble server's standard gRPC health service, checked by the real ``hubble status`` and by grpcio.

``hubble status`` (cilium/cilium hubble/cmd/status, v1.19.3) first calls
``grpc.health.v1.Health/Check`` for ``hubble.server.Observer``, prints
``Healthcheck (via <target>): Ok`` when it is SERVING (else ``Unavailable:
<status>`` and exits non-zero), then calls ``ServerStatus`` and prints
``Current/Max Flows: N/M (P%)`` and ``Flows/s``. The CLI is built from its
Go module by scripts/build-hubble-cli.sh (cached per version); a build that
fails is a test failure, not a skip, so CI cannot go green without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hubble_helpers import SERVER_NAME, TlsMaterial

from drop_explainer.testing.hubble_server import OBSERVER_HEALTH_NAME, FakeHubbleServer, ServerTls, policy_denied_syn

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "scripts" / "build-hubble-cli.sh"
S = 1_000_000_000
T0 = 1_750_000_000 * S
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="session")
def hubble_cli() -> Path:
    """The real hubble binary; built once (minutes cold, instant when cached)."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1]) / "hubble"


async def hubble(cli: Path, home: Path, *args: str) -> tuple[int, str]:
    """Run the CLI without blocking the loop the test server runs on; (exit code, stdout + stderr)."""
    # HOME: no user config file (~/.config/hubble/config.yaml) can change what it does.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(str(cli), *args, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode()


@pytest.mark.timeout(1800)  # the first, uncached build of the CLI runs in this test's setup
async def test_the_real_hubble_status_reports_the_test_server_healthy_with_its_flows(
    hubble_cli: Path, tmp_path: Path
) -> None:
    """`hubble status --server 127.0.0.1:PORT`: health Ok, then the server's flow counts."""
    async with FakeHubbleServer([policy_denied_syn(T0 + i * S) for i in range(3)], max_flows=4095) as server:
        code, out = await hubble(hubble_cli, tmp_path, "status", "--server", server.target, "--timeout", "20s")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"Healthcheck (via {server.target}): Ok"
    assert "Current/Max Flows: 3/4,095 (0.07%)" in lines
    assert any(line.startswith("Flows/s: ") for line in lines)


async def test_hubble_status_fails_naming_the_status_when_the_server_is_not_serving(
    hubble_cli: Path, tmp_path: Path
) -> None:
    """NOT_SERVING (relay without peers answers so) makes `hubble status` say it and exit non-zero."""
    async with FakeHubbleServer() as server:
        await server.set_serving(False)
        code, out = await hubble(hubble_cli, tmp_path, "status", "--server", server.target, "--timeout", "20s")
    assert code != 0
    assert f"Healthcheck (via {server.target}): Unavailable: NOT_SERVING" in out
    assert "not healthy" in out


async def test_hubble_status_over_mtls_with_the_nodes_server_name(
    hubble_cli: Path, tmp_path: Path, tls_material: TlsMaterial
) -> None:
    """Hubble's :4244 set-up from the Go client: CA, client certificate, the node's TLS server name; json output."""
    files = {name: tls_material.file(name, data) for name, data in (
        ("ca.crt", tls_material.ca.cert), ("client.crt", tls_material.client.cert),
        ("client.key", tls_material.client.key))}
    tls = ServerTls(tls_material.server.cert, tls_material.server.key, tls_material.ca.cert)
    async with FakeHubbleServer([policy_denied_syn(T0)], tls=tls) as server:
        code, out = await hubble(
            hubble_cli, tmp_path, "status", "--server", server.target, "--timeout", "20s", "--tls",
            "--tls-ca-cert-files", files["ca.crt"], "--tls-client-cert-file", files["client.crt"],
            "--tls-client-key-file", files["client.key"], "--tls-server-name", SERVER_NAME, "-o", "json")
    assert code == 0, out
    status = json.loads(out)  # protojson of ServerStatusResponse: uint64 as strings, snake_case names
    assert (status["num_flows"], status["max_flows"], status["version"]) == ("1", "4095", "drop-explainer-test")


# --- the same service through grpcio's own health stub (no Go needed) -------------------------


async def test_the_health_service_answers_for_hubble_and_the_whole_server() -> None:
    """Check: SERVING for "" and hubble.server.Observer, NOT_FOUND for a service it does not serve."""
    async with FakeHubbleServer() as server, grpc.aio.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", OBSERVER_HEALTH_NAME):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service="observer.Nothing"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watchers_see_not_serving_then_serving_then_not_serving_at_stop() -> None:
    """Watch streams the changes: set_serving(False), set_serving(True), and NOT_SERVING as the server stops."""
    server = await FakeHubbleServer().start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(health_pb2.HealthCheckRequest(service=OBSERVER_HEALTH_NAME), timeout=20)
            seen = [(await call.read()).status]
            await server.set_serving(False)
            seen.append((await call.read()).status)
            await server.set_serving(True)
            seen.append((await call.read()).status)
            await server.stop()
            seen.append((await call.read()).status)
            call.cancel()
    finally:
        await server.stop()
    assert seen == [SERVING, NOT_SERVING, SERVING, NOT_SERVING]
