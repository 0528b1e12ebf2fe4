"""The whole daemon over real sockets: Hubble server -> daemon -> HTTP answers and /metrics.

Every test runs the real composition root (app.serve) with a real gRPC
server on loopback and real HTTP requests; only the cluster state comes
from the bundled files instead of an API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drop_explainer import app, demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from drop_explainer.settings import Settings
from drop_explainer.testing.hubble_server import FakeHubbleServer, load_responses
from tests.daemon_support import eventually, get_json, http_get, run_settings, running

INCIDENT = demo.incident_dir()
FLOWS = INCIDENT / "hubble-flows.jsonl"


def incident_daemon(settings: Settings) -> contextlib.AbstractAsyncContextManager[app.Daemon]:
    return running(settings, StaticState(load_state(INCIDENT)))


async def json_of(port: int, path: str) -> Any:
    status, body = await get_json(port, path)
    assert status == 200, body
    return body


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def two_drop_kinds(port: int) -> Any:
    status, body = await get_json(port, "/pods/pod-b/drops")
    return body if status == 200 and len(body["drops"]) == 2 else None


async def test_recorded_drops_are_explained_over_http_and_counted_in_metrics(tmp_path: Path) -> None:
    """Hubble server -> daemon: curl gets the explanation text, JSON gets the documented shape, /metrics counts."""
    async with FakeHubbleServer(load_responses(FLOWS), node_name="node-2") as hubble:
        settings = run_settings("--hubble-target", hubble.target, "--store-path", str(tmp_path / "d.db"))
        async with incident_daemon(_with_history(settings)) as daemon:
            assert daemon.port is not None
            body = await eventually(lambda: two_drop_kinds(daemon.port or 0))
            # The blast radius of each fix is completed in the background, then stored.
            body = await eventually(lambda: _radius_known(daemon.port or 0))
            status, text = await http_get(daemon.port, "/pods/pod-b/drops")
            _, metrics = await http_get(daemon.port, "/metrics")
    assert status == 200
    assert "DENIED frontend/pod-a -> backend/pod-b TCP/8080" in text
    assert "[kubelet-probe]" in text
    assert "kubectl apply -f -" in text
    assert "It also newly allows 0 other connection(s)" in text
    by_source = {d["signature"]["source_workload"]: d for d in body["drops"]}
    assert by_source["frontend/pod-a"]["flows"] == 18
    assert by_source["frontend/pod-a"]["connections"] == 3
    assert by_source["frontend/pod-a"]["explanation"]["denying"][0]["name"] == "default-deny"
    drops = samples(metrics, "drop_explainer_drops_total")
    assert sum(drops.values()) == 24
    conns = samples(metrics, "drop_explainer_drop_connections_total")
    assert sum(conns.values()) == 9  # 3 attempts of pod-a, 6 probes
    new = samples(metrics, "drop_explainer_new_drop_signatures_total")
    assert sorted(dict(k)["trap"] for k in new) == ["", "kubelet-probe"]


async def _radius_known(port: int) -> Any:
    body = await two_drop_kinds(port)
    ready = body and all("blast_radius" in f for d in body["drops"] for f in d["explanation"]["fixes"])
    return body if ready else None


def _with_history(settings: Settings) -> Settings:
    """Ask the server for its recorded flows on the first connect, as the demo does."""
    return replace(settings, hubble=replace(settings.hubble, initial_number=1000, backoff_initial_s=0.05,
                                            backoff_max_s=0.2))


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        pytest.param("/pods/Pod_B/drops", 400, "not a valid Kubernetes name", id="bad-pod-name"),
        pytest.param("/pods/pod-b/drops?since=yesterday", 400, "since='yesterday'", id="bad-time"),
        pytest.param("/pods/pod-b/drops?limit=0", 400, "limit='0'", id="limit-too-small"),
        pytest.param("/pods/pod-b/drops?limit=100000", 400, "limit='100000'", id="limit-too-big"),
        pytest.param("/pods/pod-b/drops?colour=red", 400, "unknown parameter(s): colour", id="unknown-param"),
        pytest.param("/pods/pod-b/drops?direction=sideways", 400, "direction='sideways'", id="bad-direction"),
        pytest.param("/drops?trap=nope", 400, "unknown trap", id="bad-trap"),
        pytest.param("/drops?policy=justname", 400, "expected NAMESPACE/NAME", id="bad-policy"),
        pytest.param("/drops?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", 400, "since is after until",
                     id="window-backwards"),
        pytest.param("/drops/xyz", 400, "expected 16 hex digits", id="bad-id"),
        pytest.param("/drops/0123456789abcdef", 404, "no drop 0123456789abcdef", id="unknown-id"),
        pytest.param("/pods/nosuchpod/drops", 404, "no pod named nosuchpod", id="unknown-pod"),
        pytest.param("/whatif?from=frontend/pod-a&to=backend/pod-b", 400, "'port' must be", id="whatif-no-port"),
        pytest.param("/whatif?from=frontend/nope&to=backend/pod-b&port=80", 400, "no pod frontend/nope",
                     id="whatif-unknown-pod"),
        pytest.param("/drops?format=xml", 400, "format='xml'", id="bad-format"),
        pytest.param("/drops?scope=galaxy", 400, "scope='galaxy'", id="bad-scope"),
    ],
)
async def test_bad_queries_get_a_4xx_with_the_reason(path: str, status: int, fragment: str) -> None:
    """Invalid names, times, limits and parameters are refused with a reason, never a 500."""
    async with FakeHubbleServer() as hubble, incident_daemon(run_settings("--hubble-target", hubble.target,
                                                                   "--store-path", ":memory:")) as daemon:
        assert daemon.port is not None
        got, text = await http_get(daemon.port, path)
        # Asked by header, not by a second format= (a repeated parameter is itself refused).
        got_json, as_json = await http_get(daemon.port, path, Accept="application/json")
    assert got == got_json == status
    assert fragment in text
    assert fragment in json.loads(as_json)["error"]


async def test_whatif_endpoint_answers_in_text_and_json() -> None:
    """GET /whatif explains the seed incident like the CLI does."""
    async with FakeHubbleServer() as hubble, incident_daemon(run_settings("--hubble-target", hubble.target,
                                                                   "--store-path", ":memory:")) as daemon:
        assert daemon.port is not None
        q = "/whatif?from=frontend/pod-a&to=backend/pod-b&port=8080"
        _, text = await http_get(daemon.port, q)
        body = await json_of(daemon.port, q)
    assert text.startswith("DENIED frontend/pod-a -> backend/pod-b TCP/8080")
    assert body["allowed"] is False
    assert body["explanation"]["fixes"][0]["verified"] is True


async def test_history_survives_a_restart_of_the_daemon(tmp_path: Path) -> None:
    """Drops recorded before an orderly stop are answered by the next daemon from the same file."""
    store = str(tmp_path / "drops.db")
    async with (FakeHubbleServer(load_responses(FLOWS), node_name="node-2") as hubble,
                incident_daemon(_with_history(run_settings("--hubble-target", hubble.target,
                                                    "--store-path", store))) as daemon):
        before = await eventually(lambda: two_drop_kinds(daemon.port or 0))
    async with FakeHubbleServer() as empty, incident_daemon(run_settings("--hubble-target", empty.target,
                                                                  "--store-path", store)) as daemon:
        assert daemon.port is not None
        after = await json_of(daemon.port, "/pods/pod-b/drops")
        window = await json_of(daemon.port, "/drops?since=2026-11-26T02:00:00Z&until=2026-11-26T02:00:30Z")
        later = await json_of(daemon.port, "/drops?since=2026-11-26T02:05:00Z&until=2026-11-26T02:10:00Z")
    key = [(d["id"], d["flows"], d["connections"]) for d in before["drops"]]
    assert sorted(key) == sorted((d["id"], d["flows"], d["connections"]) for d in after["drops"])
    # The recorded drops all fall in minute 02:00; windows count whole minutes at their edges.
    assert {d["signature"]["source_workload"]: d["window"]["flows"] for d in window["drops"]} == {
        "172.18.0.12": 6, "frontend/pod-a": 18}
    assert later["drops"] == []


def _daemon_cmd(*argv: str) -> list[str]:
    return [sys.executable, "-m", "drop_explainer.cli", "run", "--listen", "127.0.0.1", "--events", "false",
            "--mode", "single", "--auth", "none", "--state", str(INCIDENT), "--log-format", "json", *argv]


async def test_a_kill_9_loses_nothing_that_was_committed(tmp_path: Path) -> None:
    """SIGKILL mid-run: every drop kind and every count flushed before the kill is there after a restart."""
    store, port = str(tmp_path / "drops.db"), free_port()
    proc = subprocess.Popen(_daemon_cmd("--source", "replay", "--replay-file", str(FLOWS), "--store-path", store,
                                        "--port", str(port)), stderr=subprocess.DEVNULL)
    try:
        before = await eventually(lambda: _quiet(lambda: two_drop_kinds(port)), timeout=20)
        assert before, "the daemon never showed the drops"
        await asyncio.sleep(1.5)  # one flush interval: counts of repeats are committed too
        before = await json_of(port, "/pods/pod-b/drops")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    after = await _restarted_on(store, tmp_path)
    assert sorted((d["id"], d["flows"]) for d in before["drops"]) == sorted((d["id"], d["flows"])
                                                                           for d in after["drops"])


async def _restarted_on(store: str, tmp_path: Path) -> Any:
    """A new daemon process on the same store file, with no new flows: what it answers."""
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    port = free_port()
    proc = subprocess.Popen(_daemon_cmd("--source", "replay", "--replay-file", str(empty), "--store-path", store,
                                        "--port", str(port)), stderr=subprocess.DEVNULL)
    try:
        after = await eventually(lambda: _quiet(lambda: two_drop_kinds(port)), timeout=20)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert after, "the restarted daemon did not answer with the stored drops"
    return after


async def _quiet(check: Callable[[], Any]) -> Any:
    with contextlib.suppress(aiohttp.ClientError, AssertionError):
        return await check()
    return None


async def test_fan_out_asks_the_other_instance_and_names_the_one_that_is_down() -> None:
    """Instance A (node-1) answers about pod-b on node-2 through instance B; with B stopped it says so."""
    port_a, port_b = free_port(), free_port()
    peers_a = f"node-2=http://127.0.0.1:{port_b}"
    async with FakeHubbleServer() as quiet, FakeHubbleServer(load_responses(FLOWS), node_name="node-2") as hubble:
        a = run_settings("--hubble-target", quiet.target, "--store-path", ":memory:", "--mode", "daemonset",
                          "--node-name", "node-1", "--port", str(port_a), "--peers", peers_a, "--peer-timeout", "1")
        b = _with_history(run_settings("--hubble-target", hubble.target, "--store-path", ":memory:",
                                        "--mode", "daemonset", "--node-name", "node-2", "--port", str(port_b),
                                        "--peers", f"node-1=http://127.0.0.1:{port_a}"))
        async with incident_daemon(a):
            async with incident_daemon(b):
                via_a = await eventually(lambda: two_drop_kinds(port_a))
                everything = await json_of(port_a, "/drops")
                local_only = await json_of(port_a, "/drops?scope=local")
            missing = await json_of(port_a, "/drops")
            status, text = await http_get(port_a, "/pods/pod-b/drops")
    assert via_a
    assert {d["reported_by"] for d in via_a["drops"]} == {"node-2"}
    assert len(everything["drops"]) == 2
    assert everything["nodes_missing"] == []
    assert local_only["drops"] == []
    assert missing["nodes_missing"] == ["node-2"]
    # pod-b belongs to a workload (ReplicaSet backend-7d4b9c) whose drops any node may hold: everyone is
    # asked, and the answer says whose drops are missing.
    assert status == 200
    assert "WARNING: no answer from node(s) node-2; their drops are not shown." in text


async def test_sigterm_stops_in_order_and_flushes_what_was_counted(tmp_path: Path) -> None:
    """SIGTERM right after the drops arrive (before the periodic flush): exit 0, every count on disk."""
    store, port = str(tmp_path / "drops.db"), free_port()
    proc = subprocess.Popen(_daemon_cmd("--source", "replay", "--replay-file", str(FLOWS), "--store-path", store,
                                        "--port", str(port)), stderr=subprocess.DEVNULL)
    try:
        # Watch /metrics, not the drops: a drops query flushes the store, and this must not.
        received = await eventually(lambda: _quiet(lambda: _received(port, 24)), timeout=20)
        assert received, "the daemon never received the 24 recorded flows"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0
    after = await _restarted_on(store, tmp_path)
    assert sorted((d["signature"]["source_workload"], d["flows"], d["connections"]) for d in after["drops"]) == [
        ("172.18.0.12", 6, 6), ("frontend/pod-a", 18, 3)]


async def _received(port: int, count: int) -> bool:
    _, text = await http_get(port, "/metrics")
    return sum(samples(text, "drop_explainer_flows_received_total").values()) >= count
