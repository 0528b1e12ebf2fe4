"""Calico through the whole daemon: Felix pushes an aggregate, curl reads the explanation and the counts."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from drop_explainer.testing.goldmane_server import FakeFelixClient, default_deny_flow
from tests.daemon_support import eventually, get_json, http_get, run_settings, running

STORIES = Path(__file__).resolve().parents[2] / "fixtures" / "stories"


def seed_state(tmp: Path) -> StaticState:
    state = tmp / "state"
    state.mkdir()
    shutil.copy(STORIES / "_base" / "cluster.yaml", state / "base.yaml")
    shutil.copy(STORIES / "seed-incident" / "policies.yaml", state / "policies.yaml")
    return StaticState(load_state(state))


async def test_felix_aggregate_is_explained_and_counted_by_what_it_reports(tmp_path: Path, socket_dir: Path) -> None:
    """One 15 s bucket of 4 attempts and 9 packets: the store and metrics count them, not one event."""
    sock = socket_dir / "flows.sock"
    settings = run_settings("--source", "calico-felix", "--felix-socket", str(sock), "--store-path", ":memory:",
                            "--node-name", "node-2")
    async with running(settings, seed_state(tmp_path)) as daemon:
        assert daemon.port is not None
        felix = FakeFelixClient(sock)
        assert await eventually(sock.exists)
        await felix.connect()
        start = int(time.time()) - 30
        await felix.push(default_deny_flow(start, packets=9, connections=4, source_labels=["app=frontend"],
                                           dest_labels=["app=backend"]))

        async def one_drop() -> Any:
            status, body = await get_json(daemon.port or 0, "/namespaces/backend/pods/pod-b/drops")
            return body if status == 200 and body["drops"] else None

        body = await eventually(one_drop)
        _, text = await http_get(daemon.port, "/pods/pod-b/drops")
        _, metrics = await http_get(daemon.port, "/metrics")
        await felix.close()
    drop = body["drops"][0]
    assert drop["connections"] == 4
    assert drop["explanation"]["denying"][0]["name"] == "default-deny"
    assert drop["explanation"]["agreement"]["agrees"] is True
    assert "DENIED frontend/pod-a -> backend/pod-b TCP/8080" in text
    assert 'drop_explainer_drop_connections_total{direction="ingress",namespace="backend",pod="pod-b"' in metrics
    assert 'drop_explainer_flows_received_total{source="calico"} 1.0' in metrics
