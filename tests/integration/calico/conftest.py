"""Fixtures for the Calico integration tests: TLS material, a short socket directory, collectors."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from calico_helpers import Collector, FlowSource, TlsMaterial, make_tls_material


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A throwaway operator-like CA signing Goldmane's certificate and a client certificate."""
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="felix-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[FlowSource], Collector]]:
    """Start collecting from a source; stopped at teardown."""
    collectors: list[Collector] = []

    def start(source: FlowSource) -> Collector:
        collector = Collector(source)
        collectors.append(collector)
        return collector

    yield start
    for collector in collectors:
        await collector.close()
