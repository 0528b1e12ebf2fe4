"""GoldmaneSource against a real gRPC Goldmane server on loopback: mTLS, resume, dedup, faults."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from calico_helpers import SERVER_NAME, Collector, TlsMaterial, goldmane_settings

from drop_explainer.flows.model import DropKind, Verdict
from drop_explainer.goldmane_pb import goldmane_pb2 as gm
from drop_explainer.sources import calico, errors
from drop_explainer.testing.goldmane_server import FakeGoldmaneServer, ServerTls, default_deny_flow, goldmane_flow

T = 1_764_000_000
Collect = Callable[[calico.GoldmaneSource], Collector]
WHISKER_FILTER = "fixtures/calico/whisker-backend-flow-filters-exact.json"


def bucket(i: int, *, port: int = 8080) -> gm.Flow:
    """The i-th 15 s bucket of one denied flow key (port picks the key)."""
    return default_deny_flow(T + 15 * i, dest_port=port)


def mtls(material: TlsMaterial, *, ca: bytes | None = None, client: bool = True) -> calico.TlsSettings:
    return calico.TlsSettings(
        ca_file=material.file("ca.pem", ca or material.ca.cert),
        cert_file=material.file("client.pem", material.client.cert) if client else None,
        key_file=material.file("client-key.pem", material.client.key) if client else None,
        server_name=SERVER_NAME,
    )


def server_tls(material: TlsMaterial) -> ServerTls:
    return ServerTls(material.server.cert, material.server.key, client_ca=material.ca.cert)


async def test_an_mtls_stream_delivers_denied_buckets_as_flows(tls_material: TlsMaterial, collect: Collect) -> None:
    """Client certificate + CA + server name override: buckets arrive normalised; the filter asks for Deny."""
    async with FakeGoldmaneServer(tls=server_tls(tls_material)) as server:
        collector = collect(calico.GoldmaneSource(goldmane_settings(server.target, tls=mtls(tls_material))))
        await server.wait_for_streams()
        server.push(bucket(0))
        server.push(goldmane_flow(T, action=gm.Allow))  # filtered out by the server
        await collector.until(lambda: len(collector.flows) == 1)
    flow = collector.flows[0]
    assert (flow.verdict, flow.drop_kind, flow.origin) == (Verdict.DROPPED, DropKind.POLICY_DENIED, "calico")
    assert list(server.requests[0].filter.actions) == [gm.Deny]
    assert server.requests[0].start_time_gte == 0  # first connect: live only
    assert collector.source.stats.received == 1


async def test_a_server_certificate_from_another_ca_is_a_counted_tls_failure(
        tls_material: TlsMaterial, collect: Collect) -> None:
    """The wrong CA never connects; the failure is kept as TlsVerificationFailed and retried."""
    async with FakeGoldmaneServer(tls=server_tls(tls_material)) as server:
        source = calico.GoldmaneSource(goldmane_settings(server.target, tls=mtls(tls_material,
                                                                                 ca=tls_material.other_ca.cert)))
        collector = collect(source)
        await collector.until(lambda: source.stats.tls_failures >= 2)
        assert isinstance(source.stats.last_error, errors.TlsVerificationFailed)
        assert not source.stats.connected
    assert collector.flows == []


async def test_goldmane_refuses_a_client_without_a_certificate(tls_material: TlsMaterial, collect: Collect) -> None:
    """mTLS is required: without a client certificate no stream is ever served, and the source retries."""
    async with FakeGoldmaneServer(tls=server_tls(tls_material)) as server:
        source = calico.GoldmaneSource(goldmane_settings(server.target, tls=mtls(tls_material, client=False)))
        collector = collect(source)
        await collector.until(lambda: source.stats.last_error is not None and source.stats.reconnects >= 2)
        assert server.streams == 0
        assert not source.stats.connected


async def test_a_server_restart_loses_no_bucket_and_counts_none_twice(collect: Collect) -> None:
    """Resume backfills from the newest bucket start seen (less the overlap); the replays are dropped."""
    async with FakeGoldmaneServer() as server:
        source = calico.GoldmaneSource(goldmane_settings(server.target))
        collector = collect(source)
        await server.wait_for_streams()
        for i in range(20):
            server.push(bucket(i, port=8080 + i % 3))
        await collector.until(lambda: len(collector.flows) == 20)
        await server.stop()
        await collector.until(lambda: not source.stats.connected and source.stats.reconnects >= 1)
        for i in range(20, 30):  # closed while we were away; kept in Goldmane's history
            server.push(bucket(i, port=8080 + i % 3))
        await server.start()
        await collector.until(lambda: len(collector.flows) == 30)
        await asyncio.sleep(0.05)
    times = [(f.destination_port, f.time_ns) for f in collector.flows]
    assert len(set(times)) == len(times) == 30
    assert source.stats.duplicates >= 1  # the overlap replayed at least the newest bucket
    assert server.requests[-1].start_time_gte == T + 15 * 19 - 15


async def test_the_first_connect_can_backfill_recent_history(collect: Collect) -> None:
    """initial_backfill_s asks for the last N seconds (a negative start_time_gte)."""
    old, recent = bucket(0), default_deny_flow(T + 3300)
    async with FakeGoldmaneServer([old, recent], clock=lambda: T + 3600) as server:
        collector = collect(calico.GoldmaneSource(goldmane_settings(server.target, initial_backfill_s=600)))
        await collector.until(lambda: len(collector.flows) == 1)
    assert server.requests[0].start_time_gte == -600
    assert collector.flows[0].time_ns == (T + 3315) * 1_000_000_000


async def test_malformed_messages_are_counted_and_skipped_and_the_stream_goes_on(collect: Collect) -> None:
    """Undecodable bytes and a flow without a key are counted by reason; later buckets still arrive."""
    async with FakeGoldmaneServer() as server:
        source = calico.GoldmaneSource(goldmane_settings(server.target))
        collector = collect(source)
        await server.wait_for_streams()
        server.push_raw(b"\xff\xff\xff")
        server.push_raw(gm.FlowResult(id=1, flow=gm.Flow(start_time=T, end_time=T + 15)).SerializeToString())
        server.push(bucket(1))
        await collector.until(lambda: len(collector.flows) == 1)
    assert source.stats.malformed == 2
    assert source.stats.skipped_by_reason == {"decode": 1, "no-key": 1}
    assert source.stats.reconnects == 0


async def test_a_slow_consumer_loses_the_oldest_flows_and_they_are_counted() -> None:
    """The queue is bounded: when full the oldest goes, counted in overflow; the newest are kept."""
    async with FakeGoldmaneServer() as server:
        source = calico.GoldmaneSource(goldmane_settings(server.target, queue_size=5))
        stream = source.stream_flows()
        first = asyncio.create_task(anext(stream))
        await server.wait_for_streams()
        server.push(bucket(0))
        await first
        for i in range(1, 21):
            server.push(bucket(i))
        async with asyncio.timeout(4):
            while source.stats.flows < 21:
                await asyncio.sleep(0.005)
        rest = [await anext(stream) for _ in range(5)]
        await stream.aclose()
    assert source.stats.overflow == 15
    assert [f.time_ns // 1_000_000_000 - T for f in rest] == [15 * i + 15 for i in range(16, 21)]


class _NoJitter(random.Random):
    """The longest sleep the jitter allows, so the schedule is known."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_a_refused_stream_is_retried_with_capped_exponential_backoff(collect: Collect) -> None:
    """Goldmane's stream limit (RESOURCE_EXHAUSTED) is kept and retried: 0.02, 0.04, 0.08, then 0.1 s each."""
    async with FakeGoldmaneServer(max_streams=0) as server:
        source = calico.GoldmaneSource(goldmane_settings(server.target), rng=_NoJitter())
        collector = collect(source)
        started = asyncio.get_running_loop().time()
        await collector.until(lambda: source.stats.reconnects >= 10)
        elapsed = asyncio.get_running_loop().time() - started
        error = source.stats.last_error  # read while the server still refuses
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0.84 <= elapsed < 4.0  # uncapped doubling would need 20 s for 10 retries


def test_the_whisker_filter_fixture_is_refused_for_its_policy_match(shared_dir: Path) -> None:
    """Whisker's filter JSON maps onto goldmane.Filter, except policies (wire type changed in 3.32)."""
    text = (shared_dir / WHISKER_FILTER).read_text(encoding="utf-8")
    with pytest.raises(errors.ConfigError, match=r"3\.32"):
        calico.GoldmaneSettings(filter=text).validate()
    without = {k: v for k, v in json.loads(text).items() if k != "policies"}
    flt = calico.filter_from_whisker(without)
    assert [(m.value, m.type) for m in flt.source_names] == [("src-name", gm.Exact)]
    assert [m.value for m in flt.dest_namespaces] == ["dest-namespace"]
    assert [p.port for p in flt.dest_ports] == [8080]
    assert list(flt.actions) == [gm.Deny, gm.Pass]


async def test_a_whisker_filter_is_sent_and_keeps_its_own_actions(shared_dir: Path, collect: Collect) -> None:
    """The filter reaches the server as given; its actions replace the default Deny-only."""
    obj = {k: v for k, v in json.loads((shared_dir / WHISKER_FILTER).read_text()).items() if k != "policies"}
    async with FakeGoldmaneServer() as server:
        collect(calico.GoldmaneSource(goldmane_settings(server.target, filter=json.dumps(obj))))
        await server.wait_for_streams()
    sent = server.requests[0].filter
    assert [m.value for m in sent.protocols] == ["tcp"]
    assert list(sent.actions) == [gm.Deny, gm.Pass]


@pytest.mark.parametrize(("overrides", "message"), [
    pytest.param({"actions": ("Drop",)}, "unknown action", id="action"),
    pytest.param({"resume_overlap_s": 900}, "dedup_window_s", id="overlap"),
    pytest.param({"filter": "{"}, "not JSON", id="filter-json"),
    pytest.param({"filter": '{"reporter": "Dst"}'}, "unknown field", id="filter-field"),
    pytest.param({"tls": calico.TlsSettings(cert_file="x")}, "go together", id="cert-without-key"),
])
def test_settings_that_cannot_work_are_refused_naming_the_setting(overrides: dict[str, object], message: str) -> None:
    """Validation before connecting, one clear message per mistake."""
    with pytest.raises(errors.ConfigError, match=message):
        calico.GoldmaneSource(goldmane_settings("127.0.0.1:1", **overrides))


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    """The setting and the path are in the error."""
    with pytest.raises(errors.MissingFileError, match=r"tls\.ca_file"):
        calico.GoldmaneSource(goldmane_settings("127.0.0.1:1", tls=calico.TlsSettings(ca_file=str(tmp_path / "no"))))
