"""Antrea through the whole daemon: recorded denied flows from a real gRPC FlowStreamService on loopback.

Explained (Antrea's isolation drop agrees with our evaluation of
backend/default-deny), counted (the store and the metrics), stored, and
nothing lost or counted twice across a daemon restart and a server restart
mid-stream.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from drop_explainer.antrea_pb import flow_pb2 as af
from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from drop_explainer.testing.antrea_server import FakeAntreaFlowServer, records_from_jsonl
from tests.daemon_support import eventually, get_json, http_get, run_settings, running

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PATH = "/namespaces/backend/pods/pod-b/drops"


def seed_state(tmp: Path) -> StaticState:
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "stories" / "_base" / "cluster.yaml", state / "base.yaml")
    shutil.copy(FIXTURES / "stories" / "seed-incident" / "policies.yaml", state / "policies.yaml")
    return StaticState(load_state(state))


def recorded(now_s: int) -> tuple[list[af.Flow], af.Flow]:
    """The recorded denials, moved so the last is 10 s ago, and the one allowed record."""
    records = records_from_jsonl(FIXTURES / "antrea" / "denied-flows.jsonl")
    last = max(r.end_ts.seconds for r in records)
    for r in records:
        r.end_ts.seconds += now_s - 10 - last
        r.start_ts.seconds = r.end_ts.seconds
    denied = [r for r in records if r.k8s.ingress_network_policy_rule_action == af.NETWORK_POLICY_RULE_ACTION_DROP]
    (allowed,) = [r for r in records if r not in denied]
    return denied, allowed


def settings(target: str, store: Path) -> Any:
    return run_settings("--source", "antrea", "--antrea-target", target, "--antrea-initial-history", "true",
                        "--store-path", str(store), "--node-name", "kind-worker2")


async def flows_stored(port: int, n: int) -> dict[str, Any] | None:
    status, body = await get_json(port, PATH)
    if status != 200 or not body["drops"]:
        return None
    drop: dict[str, Any] = body["drops"][0]
    return drop if drop["flows"] >= n else None


async def test_denied_flows_are_explained_counted_stored_and_survive_restarts(tmp_path: Path) -> None:
    denied, allowed = recorded(int(time.time()))
    assert len(denied) == 12
    store = tmp_path / "drops.db"
    malformed = af.Flow(id="bad")
    malformed.end_ts.seconds = denied[6].end_ts.seconds
    malformed.ip.source = b"\x0a\x00\x01"  # three bytes: not an address
    malformed.k8s.ingress_network_policy_rule_action = af.NETWORK_POLICY_RULE_ACTION_DROP

    async with FakeAntreaFlowServer(denied[:6]) as server:
        async with running(settings(server.target, store), seed_state(tmp_path)) as d:
            first = await eventually(lambda: flows_stored(d.port or 0, 6))
            assert first is not None, "the history was not explained and stored"
            assert first["flows"] == 6
            expl = first["explanation"]
            assert expl["denying"][0]["name"] == "default-deny"
            assert expl["agreement"]["agrees"] is True, "Antrea's K8s isolation drop is what our engine says"
            assert expl["flow"]["origin"] == "antrea"
            _, metrics = await http_get(d.port or 0, "/metrics")
            assert 'drop_explainer_flows_received_total{source="antrea"} 6.0' in metrics
            await server.wait_for_followers()
        # The daemon is down (SIGTERM); the aggregator keeps records meanwhile.
        server.push(*denied[6:9], allowed, malformed)
        async with running(settings(server.target, store), seed_state(tmp_path)) as d:
            second = await eventually(lambda: flows_stored(d.port or 0, 9))
            assert second is not None
            assert second["flows"] == 9, "records of the downtime lost or doubled"
            resumed = server.requests[-1]
            assert resumed.HasField("since"), "the restarted daemon resumed from the store's checkpoint"
            await server.wait_for_followers()
            # The aggregator restarts mid-stream; records pushed while it was away come in the resume.
            await server.stop()
            server.push(*denied[9:])
            await server.start()
            third = await eventually(lambda: flows_stored(d.port or 0, 12))
            src = d.source
            malformed_line = await eventually(lambda: _metric_line(d.port or 0, "drop_explainer_flows_malformed_total",
                                                                   'reason="bad-field"', 'source="antrea"'))
    assert third is not None
    assert third["flows"] == 12, "every recorded denial counted exactly once"
    assert third["connections"] == 12
    assert malformed_line is not None
    assert malformed_line.endswith(" 1.0"), "the malformed record counted, skipped"
    stats = src.stats
    assert stats.duplicates >= 1, "the resumes replayed something, and it was dropped"
    assert src.adapter.filtered == 1, "the allowed record is not a drop"


async def _metric_line(port: int, name: str, *labels: str) -> str | None:
    _, metrics = await http_get(port, "/metrics")
    return next((line for line in metrics.splitlines()
                 if line.startswith(name + "{") and all(label in line for label in labels)), None)
