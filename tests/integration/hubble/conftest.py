"""Fixtures for the Hubble integration tests: TLS material and a flow collector."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from hubble_helpers import Collector, Identity, TlsMaterial, make_cert, make_key, pem_key

from drop_explainer.sources import hubble


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A throwaway CA signing a Hubble-style server certificate and a client certificate."""
    ca_key, server_key, client_key, other_key = make_key(), make_key(), make_key(), make_key()
    ca = ("Test Hubble CA", ca_key)
    return TlsMaterial(
        ca=Identity(make_cert("Test Hubble CA", ca_key, None, ca=True), pem_key(ca_key)),
        # Like Cilium's: only the wildcard name, no IP, so a client must override the server name.
        server=Identity(make_cert("*.default.hubble-grpc.cilium.io", server_key, ca,
                              dns=("*.default.hubble-grpc.cilium.io",)), pem_key(server_key)),
        client=Identity(make_cert("drop-explainer", client_key, ca, client=True), pem_key(client_key)),
        other_ca=Identity(make_cert("Unrelated CA", other_key, None, ca=True), pem_key(other_key)),
        directory=tmp_path_factory.mktemp("tls"),
    )


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[hubble.HubbleSettings], Collector]]:
    """Start collecting from a source built from settings; stopped at teardown."""
    collectors: list[Collector] = []

    def start(settings: hubble.HubbleSettings) -> Collector:
        collector = Collector(hubble.HubbleSource(settings))
        collectors.append(collector)
        return collector

    yield start
    for collector in collectors:
        await collector.close()
