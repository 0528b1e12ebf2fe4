"""Helpers for the Calico integration tests: TLS material, test-speed settings, a flow collector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Protocol

from drop_explainer.flows import model
from drop_explainer.sources import calico
from tests.tls_support import Identity, TlsMaterial, make_cert, make_key, pem_key

__all__ = ["Identity", "TlsMaterial", "make_cert", "make_key", "pem_key"]

SERVER_NAME = "goldmane.calico-system.svc"
GOLDMANE_NAMES = ("goldmane", "goldmane.calico-system", SERVER_NAME, f"{SERVER_NAME}.cluster.local")


def make_tls_material(directory: Path) -> TlsMaterial:
    """Goldmane's certificate names the Service only (no IP), as the operator issues it."""
    ca_key, server_key, client_key, other_key = make_key(), make_key(), make_key(), make_key()
    ca = ("Test Calico operator CA", ca_key)
    return TlsMaterial(
        ca=Identity(make_cert(ca[0], ca_key, None, ca=True), pem_key(ca_key)),
        server=Identity(make_cert("goldmane", server_key, ca, dns=GOLDMANE_NAMES), pem_key(server_key)),
        client=Identity(make_cert("drop-explainer", client_key, ca), pem_key(client_key)),
        other_ca=Identity(make_cert("Unrelated CA", other_key, None, ca=True), pem_key(other_key)),
        directory=directory,
    )


def goldmane_settings(target: str, **overrides: object) -> calico.GoldmaneSettings:
    """Settings with test-sized backoff; everything else as in production."""
    values: dict[str, object] = {"target": target, "backoff_initial_s": 0.02, "backoff_max_s": 0.1}
    values.update(overrides)
    return calico.GoldmaneSettings(**values)  # type: ignore[arg-type]


def felix_settings(socket_path: Path, **overrides: object) -> calico.FelixSettings:
    values: dict[str, object] = {"socket_path": str(socket_path), "node_name": "node-1", "check_interval_s": 0.02,
                                 "backoff_initial_s": 0.02, "backoff_max_s": 0.1}
    values.update(overrides)
    return calico.FelixSettings(**values)  # type: ignore[arg-type]


class FlowSource(Protocol):
    stats: calico.CalicoStats

    def stream_flows(self) -> AsyncGenerator[model.Flow, None]: ...


class Collector:
    """Consumes a source in a background task so tests can push and then look."""

    def __init__(self, source: FlowSource) -> None:
        self.source = source
        self.flows: list[model.Flow] = []
        self._stream = source.stream_flows()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for flow in self._stream:
            self.flows.append(flow)

    async def until(self, predicate: Callable[[], bool], timeout: float = 4.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])
        await self._stream.aclose()
