"""The API over TLS, through the real daemon on loopback: reload on change, plaintext and cert-less refused.

The certificate files are replaced the way Kubernetes updates a Secret
volume (a new file swapped in atomically), and the next connection must get
the new certificate without a restart; a pair that does not load leaves the
previous one served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path

import aiohttp
import pytest

from drop_explainer import app, demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from tests.daemon_support import run_settings, running
from tests.integration.test_daemon import free_port
from tests.tls_support import make_cert, make_key, pem_key

WHATIF = "/whatif?from=frontend/pod-a&to=backend/pod-b&port=8080&format=json"


class Pki:
    """A CA, files named as a cert-manager Secret mounts them, and helpers to issue and swap pairs."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_key = make_key()
        self.ca_pem = make_cert("Test API CA", self.ca_key, None, ca=True)
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(self.ca_pem)
        self.cert, self.key = directory / "tls.crt", directory / "tls.key"

    def issue(self, cn: str) -> tuple[bytes, bytes]:
        key = make_key()
        # client=True adds the 127.0.0.1 / drop-explainer.test names: usable as a loopback server cert too.
        return make_cert(cn, key, ("Test API CA", self.ca_key), client=True), pem_key(key)

    def install(self, pair: tuple[bytes, bytes]) -> None:
        """Both files replaced atomically, each a new inode (as the kubelet's symlink swap gives)."""
        for path, data in ((self.cert, pair[0]), (self.key, pair[1])):
            tmp = path.with_suffix(".new")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert:
            cert, key = self.issue("team-frontend")
            (self.dir / "client.crt").write_bytes(cert)
            (self.dir / "client.key").write_bytes(key)
            ctx.load_cert_chain(str(self.dir / "client.crt"), str(self.dir / "client.key"))
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    found = Pki(tmp_path)
    found.install(found.issue("first.drop-explainer.test"))
    return found


def tls_daemon(pki: Pki, *extra: str) -> contextlib.AbstractAsyncContextManager[app.Daemon]:
    settings = run_settings("--store-path", ":memory:", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                            *extra)
    return running(settings, StaticState(load_state(demo.incident_dir())))


async def served_name(port: int, ctx: ssl.SSLContext) -> str:
    """The CN of the certificate a new connection is served."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        cert = writer.get_extra_info("peercert")
        return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")
    finally:
        writer.close()
        await writer.wait_closed()


async def get(url: str, ctx: ssl.SSLContext | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx if ctx is not None else False) as r:
        return r.status, await r.text()


async def test_a_replaced_certificate_is_served_to_the_next_connection_without_restart(pki: Pki) -> None:
    async with tls_daemon(pki) as daemon:
        assert daemon.port is not None
        assert daemon.tls is not None
        ctx = pki.client_context()
        assert await served_name(daemon.port, ctx) == "first.drop-explainer.test"
        status, _ = await get(f"https://127.0.0.1:{daemon.port}{WHATIF}", ctx)
        assert status == 200

        pki.install(pki.issue("second.drop-explainer.test"))
        assert await served_name(daemon.port, ctx) == "second.drop-explainer.test"
        assert daemon.tls.reloads == 1

        # A renewal caught half way (a key that is not the certificate's) keeps the last good pair.
        good_cert = pki.cert.read_bytes()
        pki.install((pki.issue("third.drop-explainer.test")[0], pem_key(make_key())))
        assert await served_name(daemon.port, ctx) == "second.drop-explainer.test"
        assert daemon.tls.reload_failures >= 1
        status, body = await get(f"https://127.0.0.1:{daemon.port}{WHATIF}", ctx)
        assert status == 200, body
        assert pki.cert.read_bytes() != good_cert


async def test_plaintext_is_refused_and_tls_starts_at_1_2(pki: Pki) -> None:
    async with tls_daemon(pki) as daemon:
        assert daemon.port is not None
        with pytest.raises(aiohttp.ClientError):
            await get(f"http://127.0.0.1:{daemon.port}/healthz")
        # TLS 1.0/1.1 clients cannot even be built without deprecation errors here; check what we offer.
        assert daemon.tls is not None
        assert daemon.tls.check().minimum_version is ssl.TLSVersion.TLSv1_2
        assert (await get(f"https://127.0.0.1:{daemon.port}/healthz", pki.client_context()))[0] == 200


async def test_a_client_without_a_certificate_is_refused_when_one_is_required(pki: Pki) -> None:
    async with tls_daemon(pki, "--tls-client-ca", str(pki.ca_file), "--tls-require-client-cert", "true") as daemon:
        assert daemon.port is not None
        url = f"https://127.0.0.1:{daemon.port}/healthz"
        with pytest.raises((ssl.SSLError, aiohttp.ClientError, ConnectionError)):
            await get(url, pki.client_context())
        assert (await get(url, pki.client_context(with_cert=True)))[0] == 200


async def test_peers_are_asked_over_https_with_the_ca(pki: Pki) -> None:
    """Two TLS instances: a cluster-wide question on one reaches the other over https (verified)."""
    port_b = free_port()
    common = ("--tls-client-ca", str(pki.ca_file), "--tls-peer-server-name", "drop-explainer.test")
    state = load_state(demo.incident_dir())
    b = run_settings("--store-path", ":memory:", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                     "--port", str(port_b), "--node-name", "node-b", *common)
    async with running(b, StaticState(state)):
        a = run_settings("--store-path", ":memory:", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                         "--mode", "daemonset", "--node-name", "node-a",
                         "--peers", f"node-b=https://127.0.0.1:{port_b}", *common)
        async with running(a, StaticState(state)) as daemon_a:
            status, body = await get(f"https://127.0.0.1:{daemon_a.port}/drops?format=json",
                                     pki.client_context(with_cert=True))
    assert status == 200, body
    assert '"nodes_missing": []' in body
