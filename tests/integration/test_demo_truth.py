"""The demo daemon, asked what an on-call engineer asks: no confident falsehoods about Services or nodes.

`drop-explainer demo` runs the whole daemon (a real Hubble gRPC server on loopback, the HTTP API) on the bundled
incident; these tests run the same demo.run and ask it over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from drop_explainer import app, demo
from tests.daemon_support import eventually, get_json, http_get, run_settings


@contextlib.asynccontextmanager
async def demo_daemon(*argv: str) -> AsyncIterator[int]:
    """demo.run on a free port, replaying once; yields the API port."""
    started: asyncio.Future[app.Daemon] = asyncio.get_running_loop().create_future()
    settings = run_settings("--store-path", ":memory:", *argv)
    task = asyncio.create_task(demo.run(settings, replay_every_s=0, on_started=started.set_result))
    done, _ = await asyncio.wait([started, task], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        port = started.result().port
        assert port is not None
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _probe_drop(port: int) -> Any:
    status, body = await get_json(port, "/pods/pod-b/drops")
    if status != 200:
        return None
    return next((d for d in body["drops"] if d["signature"]["source_workload"] == "172.18.0.12"), None)


async def test_the_service_ip_is_not_allowed_when_every_backend_denies() -> None:
    """Reproduction: /whatif to the backend Service's cluster IP answered ALLOWED; it is denied at pod-b."""
    async with demo_daemon() as port:
        q = "/whatif?from=frontend/pod-a&to=10.96.20.20&port=80"
        status, text = await http_get(port, q)
        _, body = await get_json(port, q)
    assert status == 200
    assert not text.startswith("ALLOWED")
    assert text.startswith("DENIED frontend/pod-a -> service backend/backend TCP/80 (targetPort http): allowed to 0 "
                           "of 1 backend(s); denied at backend/pod-b")
    assert body["allowed"] is False
    assert body["service"]["backends"][0]["pod"] == "backend/pod-b"
    assert body["service"]["backends"][0]["port"] == 8080
    assert body["profile"] == {"name": "cilium", "settings": {}, "origin": "default for the hubble flow source"}


async def test_the_probe_drop_says_the_cni_dropped_what_the_spec_exempts() -> None:
    """The recorded liveness-probe drop from node-2: exempt under Cilium's default, so the trap names the setting."""
    async with demo_daemon() as port:
        drop = await eventually(lambda: _probe_drop(port))
        _, text = await http_get(port, "/pods/pod-b/drops")
    expl = drop["explanation"]
    assert expl["profile"]["name"] == "cilium"
    assert [t["id"] for t in expl["traps"]] == ["kubelet-probe"]
    detail = expl["traps"][0]["detail"]
    assert "backend/pod-b's own node node-2" in detail
    assert "allow-localhost=policy" in detail
    assert "fromEntities: [host]" in detail
    assert expl["agreement"]["agrees"] is False
    assert "CNI profile: cilium, default for the hubble flow source." in text


async def test_the_configured_profile_wins_and_another_node_is_not_called_the_pods() -> None:
    """--cni aws-vpc-cni is used; asking from node-1 never calls its address node-2's."""
    async with demo_daemon("--cni", "aws-vpc-cni") as port:
        _, body = await get_json(port, "/whatif?from=node-1&to=pod-b&port=http")
        _, text = await http_get(port, "/whatif?from=node-1&to=pod-b&port=http")
    assert body["profile"]["name"] == "aws-vpc-cni"
    assert body["allowed"] is False
    assert "is the address of node-2" not in text
    assert "kubelet-probe" not in text


async def _dns_drop(port: int) -> Any:
    status, body = await get_json(port, "/namespaces/backend/drops?direction=egress")
    if status != 200:
        return None
    return next((d for d in body["drops"] if d["signature"]["port"] == 53), None)


async def test_the_demo_shows_the_dns_symptom_a_lookup_of_kube_dns_dropped_by_an_egress_policy() -> None:
    """pod-b's UDP 53 to CoreDNS (examples/incident-dns, synthetic): dropped, decided by the egress policy
    that forgot DNS, and the fix admits UDP 53 to kube-dns."""
    async with demo_daemon() as port:
        dns = await eventually(lambda: _dns_drop(port))
        assert dns, "no UDP 53 drop in the demo"
        _, text = await http_get(port, f"/drops/{dns['id']}")
        status, cross = await get_json(port, "/pods/pod-b/drops")
    sig = dns["signature"]
    assert (sig["protocol"], sig["port"], sig["direction"]) == ("UDP", 53, "egress")
    assert sig["source_workload"].startswith("backend/")
    assert sig["destination"].startswith("kube-system/coredns")
    assert sig["policies"] == ["backend/egress-to-database"]
    assert dns["explanation"]["fixes"], "the DNS drop has a fix"
    assert "53" in str(dns["explanation"]["fixes"][0])
    assert "UDP/53" in text
    assert status == 200
    assert any(d["signature"]["source_workload"] == "frontend/pod-a" for d in cross["drops"]), \
        "the incident's own drop is still there"
