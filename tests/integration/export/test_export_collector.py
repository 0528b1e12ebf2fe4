"""Explained drops exported over OTLP to a real OpenTelemetry Collector on loopback.

The Collector (OTLP gRPC receiver -> file exporter, v0.165.0) is built from
its Go modules by scripts/build-otelcol.sh; we read what its file exporter
wrote (OTLP/JSON, one ExportLogsServiceRequest per line), so every assertion
is about what a real receiver decoded from our bytes.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from drop_explainer import app, demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.hubble_pb import flow_pb2
from drop_explainer.pipeline import StaticState
from drop_explainer.settings import Settings
from drop_explainer.testing.hubble_server import FakeHubbleServer, load_responses
from tests.daemon_support import eventually, http_get, run_settings, running
from tests.otelcol_support import Collector, CollectorError, attributes

INCIDENT = demo.incident_dir()
FLOWS = INCIDENT / "hubble-flows.jsonl"


@pytest.fixture
def collector(otelcol: Path, tmp_path: Path) -> Iterator[Collector]:
    c = Collector(otelcol, tmp_path)
    try:
        c.start()
    except CollectorError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield c
    finally:
        c.stop()


def _settings(collector: Collector, tmp_path: Path, hubble: FakeHubbleServer, *extra: str) -> Settings:
    settings = run_settings("--hubble-target", hubble.target, "--store-path", str(tmp_path / "d.db"),
                            "--export-otlp-endpoint", collector.endpoint, "--node-name", "node-2", *extra)
    # The server's recorded flows on the first connect, as the demo asks for them.
    return replace(settings, hubble=replace(settings.hubble, initial_number=1000, backoff_initial_s=0.05,
                                            backoff_max_s=0.2))


def _new_records(collector: Collector) -> list[dict[str, Any]]:
    return [r | {"attrs": attributes(r.get("attributes", []))} for r in collector.log_records()
            if r.get("eventName") == "drop_explainer.drop.new"]


async def test_every_new_signature_of_the_incident_arrives_once_with_its_attributes(
        collector: Collector, tmp_path: Path) -> None:
    """The incident's stream: two signatures on backend/pod-b (pod-a's request, the kubelet's probe)."""
    async with FakeHubbleServer(load_responses(FLOWS), node_name="node-2") as hubble:
        settings = _settings(collector, tmp_path, hubble, "--export-what", "new",
                             "--export-file", str(tmp_path / "drops.jsonl"))
        async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
            stored = await eventually(lambda: len(daemon.store.query()) >= 2 and daemon.store.query())
            await eventually(lambda: len(_new_records(collector)) >= 2, timeout=30)
            await asyncio.sleep(1.5)  # a duplicate, if we sent one, would have arrived by now (flush 100 ms)
            assert daemon.export is not None
            sent = daemon.export.channels[0].stats.sent
            _, metrics = await http_get(daemon.port or 0, "/metrics")
    records = _new_records(collector)
    ids = Counter(r["attrs"]["drop_explainer.signature"] for r in records)
    assert sent == 2
    assert 'drop_explainer_export_records_total{exporter="otlp",outcome="sent"} 2.0' in metrics
    assert 'drop_explainer_export_records_total{exporter="otlp",outcome="overflow"} 0.0' in metrics
    assert 'drop_explainer_export_made_total{kind="new"} 2.0' in metrics
    assert set(ids) == {r.signature.id for r in stored}
    assert all(n == 1 for n in ids.values()), ids
    by_peer = {r["attrs"]["network.peer.address"]: r for r in records}
    assert set(by_peer) == {"10.244.1.10", "172.18.0.12"}  # pod-a's IP (cluster.yaml), the node's (the probe)
    request, probe = by_peer["10.244.1.10"], by_peer["172.18.0.12"]
    for rec in (request, probe):
        a = rec["attrs"]
        assert a["k8s.namespace.name"] == "backend"
        assert a["k8s.pod.name"] == "pod-b"
        # pod-b's owner is ReplicaSet backend-7d4b9c; without a pod-template-hash label (cluster.yaml) it is
        # not traced to a Deployment (cluster/workloads.py), and the record says what the signature says.
        assert a["k8s.replicaset.name"] == "backend-7d4b9c", a
        assert "k8s.deployment.name" not in a
        assert a["drop_explainer.destination.workload"] == "backend/backend-7d4b9c"
        assert a["drop_explainer.workload.kind"] == "ReplicaSet"
        assert a["network.transport"] == "tcp"
        assert a["server.port"] == 8080
        assert a["drop_explainer.direction"] == "ingress"
        assert a["drop_explainer.verdict"] == "dropped"
        assert a["drop_explainer.policy"] == ["backend/default-deny"]
        assert rec["severityNumber"] == 13  # WARN; OTLP/JSON writes enums as integers
        assert rec["severityText"] == "WARN"
        assert rec["resource"]["service.name"] == "drop-explainer"
        assert rec["resource"]["k8s.node.name"] == "node-2"
        assert rec["scope"]["name"] == "drop-explainer"
    assert request["attrs"]["drop_explainer.source.workload"] == "frontend/pod-a"
    assert request["attrs"]["drop_explainer.trap"] == []
    assert "drop_explainer.fix" in request["attrs"]
    assert probe["attrs"]["drop_explainer.trap"] == ["kubelet-probe"]
    assert request["body"]["stringValue"].startswith("DENIED frontend/pod-a -> backend/pod-b TCP/8080")
    # The JSON lines file: the same records, in the same shape (attributes flat).
    lines = [json.loads(x) for x in (tmp_path / "drops.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        rec = next(r for r in records if r["attrs"]["drop_explainer.signature"]
                   == line["attributes"]["drop_explainer.signature"])
        assert line["attributes"] == rec["attrs"]
        assert line["body"] == rec["body"]["stringValue"]
        assert line["eventName"] == rec["eventName"]
        assert line["timeUnixNano"] == rec["timeUnixNano"]
        assert line["resource"] == rec["resource"]


def _on_port(template: flow_pb2.Flow, port: int, t: int) -> flow_pb2.Flow:
    """pod-a's dropped request, to another port of pod-b: a signature of its own."""
    flow = flow_pb2.Flow()
    flow.CopyFrom(template)
    flow.l4.TCP.destination_port = port
    flow.time.FromNanoseconds(t)
    return flow


async def test_a_collector_restart_loses_nothing_queued_within_the_bound(
        collector: Collector, tmp_path: Path) -> None:
    """Collector down: new signatures queue (bounded); back on the same port: all of them arrive, once each."""
    responses = load_responses(FLOWS)
    template = next(r.flow for r in responses if r.flow.source.pod_name == "pod-a")
    async with FakeHubbleServer(responses, node_name="node-2") as hubble:
        settings = _settings(collector, tmp_path, hubble, "--export-what", "new")
        async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
            assert daemon.export is not None
            channel = daemon.export.channels[0]
            await eventually(lambda: channel.stats.sent >= 2, timeout=30)
            await asyncio.to_thread(collector.stop)
            base = template.time.ToNanoseconds() + 60 * 10**9
            for i in range(20):
                hubble.push(_on_port(template, 9000 + i, base + i * 10**6))
            # Queued while nothing listens: the sender retries with backoff, nothing is refused.
            await eventually(lambda: channel.stats.queued >= 20 and channel.stats.retries >= 1, timeout=30)
            assert channel.stats.overflow == 0
            await asyncio.to_thread(collector.start)
            await eventually(lambda: channel.stats.sent >= 22 and channel.stats.queued == 0, timeout=60)
            await eventually(lambda: len(_new_records(collector)) >= 22, timeout=30)
            await asyncio.sleep(1.5)
    ports = Counter(r["attrs"]["server.port"] for r in _new_records(collector))
    assert ports == Counter({8080: 2} | {9000 + i: 1 for i in range(20)})


async def test_repeats_arrive_as_count_updates_of_their_signature(collector: Collector, tmp_path: Path) -> None:
    """After the incident, pod-a retries: an update record carries the new packets in count.delta."""
    responses = load_responses(FLOWS)
    template = next(r.flow for r in responses if r.flow.source.pod_name == "pod-a")
    async with FakeHubbleServer(responses, node_name="node-2") as hubble:
        settings = _settings(collector, tmp_path, hubble, "--export-update-interval", "0.2")
        async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
            assert daemon.export is not None
            channel = daemon.export.channels[0]
            await eventually(lambda: channel.stats.sent >= 2, timeout=30)
            await eventually(lambda: not any(t.pending for t in daemon.export._tracked.values())  # type: ignore[union-attr]
                             , timeout=30)
            base = template.time.ToNanoseconds() + 60 * 10**9
            for i in range(5):
                hubble.push(_on_port(template, 8080, base + i * 10**6))
            app_id = next(r.signature.id for r in daemon.store.query()
                          if r.signature.source_workload == "frontend/pod-a")
            want = await eventually(lambda: _packets(daemon, app_id), timeout=30)
            await eventually(lambda: sum(_deltas(collector, app_id)) >= want, timeout=30)
            await asyncio.sleep(1.0)  # a late extra update, if one were made, would have arrived
    records = [r | {"attrs": attributes(r.get("attributes", []))} for r in collector.log_records()]
    pod_a = [r for r in records if r["attrs"]["drop_explainer.signature"] == app_id]
    assert pod_a[0]["eventName"] == "drop_explainer.drop.new"
    updates = [r["attrs"] for r in pod_a if r["eventName"] == "drop_explainer.drop.update"]
    assert updates, pod_a
    # Every packet of pod-a's signature (as the store counts them) is in exactly one record's delta.
    assert sum(r["attrs"]["drop_explainer.count.delta"] for r in pod_a) == want
    assert updates[-1]["drop_explainer.count"] == want


def _packets(daemon: app.Daemon, sig_id: str) -> int | None:
    """The store's packet count of the signature, once the 5 pushed flows are in it."""
    rec = daemon.store.get(sig_id)
    return rec.packets if rec is not None and rec.flows >= 23 else None


def _deltas(collector: Collector, sig_id: str) -> list[int]:
    out = []
    for r in collector.log_records():
        a = attributes(r.get("attributes", []))
        if a.get("drop_explainer.signature") == sig_id:
            out.append(int(a["drop_explainer.count.delta"]))
    return out


async def test_past_the_bound_records_are_refused_and_counted_and_the_rest_arrive(
        collector: Collector, tmp_path: Path) -> None:
    """A small queue (8 KiB) while the Collector is down: what fits arrives after the restart, the rest is counted."""
    responses = load_responses(FLOWS)
    template = next(r.flow for r in responses if r.flow.source.pod_name == "pod-a")
    async with FakeHubbleServer(responses, node_name="node-2") as hubble:
        settings = _settings(collector, tmp_path, hubble, "--export-what", "new", "--export-queue-bytes", "8192")
        async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
            assert daemon.export is not None
            channel = daemon.export.channels[0]
            await eventually(lambda: channel.stats.sent >= 2, timeout=30)
            await asyncio.to_thread(collector.stop)
            base = template.time.ToNanoseconds() + 60 * 10**9
            for i in range(20):
                hubble.push(_on_port(template, 9000 + i, base + i * 10**6))
            await eventually(lambda: channel.stats.queued + channel.stats.overflow == 20, timeout=30)
            kept, refused = channel.stats.queued, channel.stats.overflow
            assert channel.stats.queued_bytes <= 8192
            assert kept >= 1
            assert refused >= 1
            _, metrics = await http_get(daemon.port or 0, "/metrics")
            await asyncio.to_thread(collector.start)
            await eventually(lambda: channel.stats.queued == 0 and channel.stats.sent == 2 + kept, timeout=60)
            await eventually(lambda: len(_new_records(collector)) >= 2 + kept, timeout=30)
            await asyncio.sleep(1.5)
    assert f'drop_explainer_export_records_total{{exporter="otlp",outcome="overflow"}} {float(refused)}' in metrics
    ports = Counter(r["attrs"]["server.port"] for r in _new_records(collector))
    # The first ones fitted (FIFO; the refused are the newest), each arrives once.
    assert ports == Counter({8080: 2} | {9000 + i: 1 for i in range(kept)})
