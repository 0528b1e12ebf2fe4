"""Helpers for the Hubble integration tests: TLS material, test-speed settings, a flow collector."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drop_explainer.flows import model
from drop_explainer.sources import hubble
from tests.tls_support import Identity, TlsMaterial, make_cert, make_key, pem_key

__all__ = ["Identity", "TlsMaterial", "make_cert", "make_key", "pem_key"]

SERVER_NAME = "kind-worker.default.hubble-grpc.cilium.io"


def fast_settings(target: str, **overrides: object) -> hubble.HubbleSettings:
    """Settings with test-sized backoff; everything else as in production."""
    values: dict[str, object] = {"target": target, "backoff_initial_s": 0.02, "backoff_max_s": 0.1}
    values.update(overrides)
    return hubble.HubbleSettings(**values)  # type: ignore[arg-type]


class Collector:
    """Consumes a source in a background task so tests can push and then look."""

    def __init__(self, source: hubble.HubbleSource) -> None:
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
