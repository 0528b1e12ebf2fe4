"""Hostile input over the real paths: test Hubble server -> daemon, replay, and ``explain --flows``.

Each case is one that used to end the process (an IP that is not an
address, a time outside int64 nanoseconds) or to grow it without bound
(10,000 labels, megabyte strings). After each, the daemon still answers,
the good flow sent after the bad ones is recorded, and the counter for the
case rose by exactly as much as was sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from drop_explainer import cli, demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.hubble_pb import flow_pb2, observer_pb2, relay_pb2
from drop_explainer.pipeline import StaticState
from drop_explainer.testing.hubble_server import FakeHubbleServer, policy_denied_syn
from tests.daemon_support import eventually, get_json, http_get, run_settings, running

S = 1_000_000_000
STARWARS = Path(__file__).resolve().parents[1] / "fixtures" / "starwars" / "state.yaml"
INCIDENT = demo.incident_dir()
BAD_IPS = ("not-an-ip", "999.999.1.1", "1.2.3.4/24", "10.0.0.1%eth0")


def metric(text: str, name: str, **labels: str) -> float:
    """The sample's value, 0 when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def hostile_flows(now_ns: int) -> list[flow_pb2.Flow]:
    """Every hostile flow of the issue, each on its own source port so none hides another."""
    flows = []
    for i, ip in enumerate(BAD_IPS):
        f = policy_denied_syn(now_ns - S, source_port=31000 + i)
        f.IP.source = ip
        flows.append(f)
    past_2262 = policy_denied_syn(now_ns - S, source_port=31010)
    past_2262.time.seconds = 10**10  # year 2286: past int64 nanoseconds
    before_1678 = policy_denied_syn(now_ns - S, source_port=31011)
    before_1678.time.seconds = -(10**10)
    bad_port = policy_denied_syn(now_ns - S, source_port=31012, destination_port=70000)
    return [*flows, past_2262, before_1678, bad_port]


def oversized_flows(now_ns: int) -> list[flow_pb2.Flow]:
    """Kept, but cut to the caps (and counted): a year ahead, 10,000 labels, a 1 MB pod name."""
    ahead = policy_denied_syn(now_ns + 365 * 86400 * S, source_port=32000)
    labels = policy_denied_syn(now_ns - S, source_port=32001)
    labels.source.labels.extend(f"k8s:hostile{i}=v{i}" for i in range(10_000))
    huge = policy_denied_syn(now_ns - S, source_port=32002)
    huge.destination.workloads[0].name = "w" * 1_000_000
    return [ahead, labels, huge]


async def test_hostile_hubble_flows_are_counted_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    """Server -> daemon: bad IPs, times and ports are skipped by reason; huge ones are cut; the good one is kept."""
    now = time.time_ns()
    async with FakeHubbleServer() as hubble:
        settings = run_settings("--hubble-target", hubble.target, "--store-path", str(tmp_path / "d.db"))
        async with running(settings, StaticState(load_state(STARWARS))) as daemon:
            await hubble.wait_for_followers()
            for f in [*hostile_flows(now), *oversized_flows(now)]:
                hubble.push(f)
            hubble.push_raw(observer_pb2.GetFlowsResponse(
                node_status=relay_pb2.NodeStatusEvent(state_change=relay_pb2.NODE_UNAVAILABLE)).SerializeToString())
            hubble.push_raw(observer_pb2.GetFlowsResponse(lost_events=flow_pb2.LostEvent(
                source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=7)).SerializeToString())
            hubble.push(policy_denied_syn(now, source_port=33000))

            async def counted() -> str | None:
                _, text = await http_get(daemon.port or 0, "/metrics")
                done = metric(text, "drop_explainer_flows_malformed_total", reason="bad-time") == 2
                return text if done and metric(text, "drop_explainer_source_lost_events_total") == 7 else None

            text = await eventually(counted)
            assert text, "the counters never rose"
            status, body = await http_get(daemon.port or 0, "/healthz")
            assert status == 200, body
            status, drops = await get_json(daemon.port or 0, "/drops")
    assert status == 200
    assert drops["drops"], "the good flow sent after the hostile ones was not recorded"
    source = {"source": "hubble"}
    assert metric(text, "drop_explainer_flows_malformed_total", reason="bad-ip", **source) == 4
    assert metric(text, "drop_explainer_flows_malformed_total", reason="bad-time", **source) == 2
    assert metric(text, "drop_explainer_flows_malformed_total", reason="bad-port", **source) == 1
    assert metric(text, "drop_explainer_flow_times_clamped_total", **source) == 1
    assert metric(text, "drop_explainer_flows_truncated_total", **source) == 2
    assert metric(text, "drop_explainer_non_flow_responses_total", kind="node_status", **source) == 1
    assert metric(text, "drop_explainer_non_flow_responses_total", kind="lost_events", **source) == 1
    # Valid responses without a flow are not malformed.
    assert metric(text, "drop_explainer_flows_malformed_total", reason="node_status") == 0
    newest = max(d["last_seen"] for d in drops["drops"])
    assert newest < "2100"  # the year-ahead flow was clamped to now, not stored a year ahead


def hostile_lines() -> list[str]:
    """The same cases as saved JSON lines (hubble observe -o json form), one of each."""
    good = json.loads(Path(INCIDENT / "hubble-flows.jsonl").read_text().splitlines()[1])
    lines = []
    for ip in BAD_IPS:
        bad = json.loads(json.dumps(good))
        bad["flow"]["IP"]["source"] = ip
        lines.append(json.dumps(bad))
    for stamp in ("2300-01-01T00:00:00Z", "1600-01-01T00:00:00Z"):
        bad = json.loads(json.dumps(good))
        bad["flow"]["time"] = bad["time"] = stamp
        lines.append(json.dumps(bad))
    huge = json.loads(json.dumps(good))
    huge["flow"]["source"]["labels"] += [f"k8s:hostile{i}=v" for i in range(10_000)]
    huge["flow"]["source"]["pod_name"] = "p" * 1_000_000
    return [*lines, json.dumps(huge), "{not json", json.dumps(good)]


async def test_a_hostile_replay_file_is_counted_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    """--source replay: every bad line is skipped and counted, the good lines are recorded."""
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(hostile_lines()) + "\n")
    settings = run_settings("--source", "replay", "--replay-file", str(path), "--store-path", ":memory:")
    async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
        async def recorded() -> Any:
            status, body = await get_json(daemon.port or 0, "/drops")
            return body if status == 200 and body["drops"] else None

        drops = await eventually(recorded)
        assert drops, "the good line of the hostile file was not recorded"

        async def counted() -> str | None:
            _, text = await http_get(daemon.port or 0, "/metrics")
            return text if metric(text, "drop_explainer_flows_malformed_total", source="replay") == 7 else None

        text = await eventually(counted)
        assert text, "the malformed lines were not counted"
        status, _ = await http_get(daemon.port or 0, "/healthz")
    assert status == 200


def test_explain_flows_on_a_hostile_file_explains_the_good_lines_and_names_the_bad() -> None:
    """explain --flows exits 0, explains the good flow and names each skipped line and why."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hostile.jsonl"
        path.write_text("\n".join(hostile_lines()) + "\n")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(["explain", "--state", str(INCIDENT), "--flows", str(path), "-o", "json"], out=out)
    assert code == 0
    # One group per line, then the fixes of all groups merged (a line of its own shape).
    groups = [g for g in map(json.loads, out.getvalue().splitlines()) if "fixes_for_all" not in g]
    # The good line, and the one whose megabyte pod name was cut to the cap (so it is its own workload).
    assert len(groups) == 2
    assert all(len(g["signature"]["source_workload"]) < 600 for g in groups)
    skipped = [line for line in err.getvalue().splitlines() if "skipped malformed" in line]
    assert len(skipped) == 7
    assert sum("bad-ip" in line for line in skipped) == 4
    assert sum("bad-time" in line for line in skipped) == 2
