"""FelixSocketSource serving FlowCollector/Connect to a test Felix over a real unix socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

from calico_helpers import Collector, felix_settings

from drop_explainer.flows.model import Direction
from drop_explainer.goldmane_pb import goldmane_pb2 as gm
from drop_explainer.sources import calico
from drop_explainer.testing.goldmane_server import FakeFelixClient, default_deny_flow, goldmane_flow

T = 1_764_000_000
Collect = Callable[[calico.FelixSocketSource], Collector]


async def started(source: calico.FelixSocketSource, collect: Collect) -> Collector:
    collector = collect(source)
    async with asyncio.timeout(4):
        await source.bound.wait()
    return collector


async def test_every_update_gets_one_receipt_and_denied_flows_are_delivered(socket_dir: Path,
                                                                          collect: Collect) -> None:
    """Felix waits for a receipt per update; allowed flows are answered too, and counted as filtered."""
    source = calico.FelixSocketSource(felix_settings(socket_dir / "flows.sock"))
    collector = await started(source, collect)
    felix = FakeFelixClient(socket_dir / "flows.sock")
    await felix.connect()
    for i in range(5):
        await felix.push(default_deny_flow(T + 15 * i, reporter=gm.Src))
    await felix.push(goldmane_flow(T, action=gm.Allow))
    await collector.until(lambda: len(collector.flows) == 5)
    await felix.close()
    assert felix.receipts == 6
    assert (source.stats.received, source.stats.filtered) == (6, 1)
    assert {(f.node, f.direction) for f in collector.flows} == {("node-1", Direction.EGRESS)}


async def test_a_felix_reconnect_replays_its_cache_and_nothing_counts_twice(socket_dir: Path,
                                                                           collect: Collect) -> None:
    """Felix re-sends its last 5 minutes, shuffled, on every connect; each replayed bucket is dropped."""
    source = calico.FelixSocketSource(felix_settings(socket_dir / "flows.sock"))
    collector = await started(source, collect)
    felix = FakeFelixClient(socket_dir / "flows.sock")
    await felix.connect()
    for i in range(10):
        await felix.push(default_deny_flow(T + 15 * i, dest_port=8080 + i % 2))
    await felix.connect()  # reconnect: replays all 10
    await felix.push(default_deny_flow(T + 150))
    await collector.until(lambda: len(collector.flows) == 11)
    await asyncio.sleep(0.02)
    await felix.close()
    assert felix.replayed == 10
    assert source.stats.duplicates == 10
    assert len(collector.flows) == 11
    assert source.stats.reconnects == 1


async def test_a_deleted_socket_is_served_again_and_the_replay_after_it_is_deduplicated(
        socket_dir: Path, collect: Collect) -> None:
    """Server restart: the socket file vanishes, the source re-binds, Felix reconnects and replays; no double count."""
    path = socket_dir / "flows.sock"
    source = calico.FelixSocketSource(felix_settings(path))
    collector = await started(source, collect)
    felix = FakeFelixClient(path)
    await felix.connect()
    for i in range(6):
        await felix.push(default_deny_flow(T + 15 * i))
    await collector.until(lambda: len(collector.flows) == 6)
    path.unlink()
    await collector.until(lambda: source.stats.reconnects == 1 and source.bound.is_set() and path.exists())
    await felix.connect()
    for i in range(6, 9):
        await felix.push(default_deny_flow(T + 15 * i))
    await collector.until(lambda: len(collector.flows) == 9)
    await asyncio.sleep(0.02)
    await felix.close()
    assert [f.time_ns // 1_000_000_000 - T for f in collector.flows] == [15 * i + 15 for i in range(9)]
    assert source.stats.duplicates == 6
    assert source.stats.reconnects >= 2  # the re-bind and Felix's second connection


async def test_a_stale_socket_file_is_replaced(socket_dir: Path, collect: Collect) -> None:
    """A socket nobody serves (left by a crash) is removed and served afresh."""
    path = socket_dir / "flows.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    source = calico.FelixSocketSource(felix_settings(path))
    collector = await started(source, collect)
    felix = FakeFelixClient(path)
    await felix.connect()
    await felix.push(default_deny_flow(T))
    await collector.until(lambda: len(collector.flows) == 1)
    await felix.close()


async def test_a_socket_served_by_another_process_is_not_taken_over(socket_dir: Path, collect: Collect) -> None:
    """Another consumer (calico-node flows) keeps its socket; we back off and say why."""
    path = socket_dir / "flows.sock"
    other = await asyncio.start_unix_server(lambda r, w: w.close(), path=str(path))
    try:
        source = calico.FelixSocketSource(felix_settings(path))
        collector = collect(source)
        await collector.until(lambda: source.stats.last_error is not None)
        assert not source.bound.is_set()
        assert isinstance(source.stats.last_error, calico.SocketInUse)
    finally:
        other.close()
        await other.wait_closed()


async def test_malformed_updates_are_answered_counted_and_skipped(socket_dir: Path, collect: Collect) -> None:
    """Garbage and an update without a flow still get their receipt; Felix is never left waiting."""
    source = calico.FelixSocketSource(felix_settings(socket_dir / "flows.sock"))
    collector = await started(source, collect)
    felix = FakeFelixClient(socket_dir / "flows.sock")
    await felix.connect()
    await felix.push_raw(b"\xff\xff\xff")
    await felix.push_raw(gm.FlowUpdate().SerializeToString())
    await felix.push(default_deny_flow(T))
    await collector.until(lambda: len(collector.flows) == 1)
    await felix.close()
    assert felix.receipts == 3
    assert source.stats.skipped_by_reason == {"decode": 1, "no-key": 1}


async def test_the_socket_is_removed_when_the_source_stops(socket_dir: Path, collect: Collect) -> None:
    """Felix must not keep dialling a socket nobody serves."""
    path = socket_dir / "flows.sock"
    source = calico.FelixSocketSource(felix_settings(path))
    collector = await started(source, collect)
    assert path.exists()
    await collector.close()
    assert not path.exists()
