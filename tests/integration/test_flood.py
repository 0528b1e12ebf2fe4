"""A flood of distinct new drops through the real path (test Hubble server -> daemon).

What the flood must not do: stop the API answering, or evict the history of
pods that take no part in it. How fast the API answers during a flood is a
benchmark figure (bench/flood.py, README), not a timed assertion here: this
test asserts what must hold on any machine, however loaded.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.hubble_pb import flow_pb2
from drop_explainer.pipeline import StaticState
from drop_explainer.testing.hubble_server import FakeHubbleServer, policy_denied_syn
from tests.daemon_support import eventually, get_json, http_get, run_settings, running

S = 1_000_000_000
FLOOD = 2_000
HISTORY_PORTS = range(81, 86)
STORE_MAX_TOTAL = 40

STATE = """
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}}
- {apiVersion: v1, kind: Node, metadata: {name: n1}, status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: app, labels: {app: client}}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, hostIP: 172.18.0.2, podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: quiet, namespace: app, labels: {app: quiet}}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, hostIP: 172.18.0.2, podIP: 10.0.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: victim, namespace: app, labels: {app: victim}}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, hostIP: 172.18.0.2, podIP: 10.0.0.3}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: default-deny, namespace: app}
  spec: {podSelector: {}, policyTypes: [Ingress]}
"""

PODS = {"client": "10.0.0.1", "quiet": "10.0.0.2", "victim": "10.0.0.3"}


def _endpoint(pod: str) -> flow_pb2.Endpoint:
    return flow_pb2.Endpoint(namespace="app", pod_name=pod, labels=[
        f"k8s:app={pod}", "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=app",
        "k8s:io.kubernetes.pod.namespace=app"])


def denied(destination: str, port: int, time_ns: int) -> flow_pb2.Flow:
    """client -> destination:port, dropped by the namespace's default deny."""
    flow = policy_denied_syn(time_ns, destination_port=port, node_name="n1")
    flow.IP.source, flow.IP.destination = PODS["client"], PODS[destination]
    flow.source.CopyFrom(_endpoint("client"))
    flow.destination.CopyFrom(_endpoint(destination))
    return flow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(text: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def test_a_flood_of_new_drops_keeps_the_api_up_and_the_quiet_pods_history(tmp_path: Path) -> None:
    """2,000 distinct drops on one pod: /healthz answers throughout, the quiet pod's history stays."""
    state = ClusterState.build(parse_documents("flood", STATE))
    now = time.time_ns() - 60 * S
    async with FakeHubbleServer() as hubble:
        probe_port = free_port()
        settings = run_settings("--hubble-target", hubble.target, "--store-path", str(tmp_path / "d.db"),
                                "--store-max-total", str(STORE_MAX_TOTAL), "--store-max-per-pod", "1000",
                                "--probe-port", str(probe_port))
        async with running(settings, StaticState(state)) as daemon:
            port = daemon.port or 0
            await hubble.wait_for_followers()
            for i, p in enumerate(HISTORY_PORTS):
                hubble.push(denied("quiet", p, now + i))

            async def history() -> bool:
                _, body = await get_json(port, "/pods/quiet/drops")
                return len(body.get("drops", [])) == len(HISTORY_PORTS)

            assert await eventually(history), "the history before the flood was never recorded"
            for i in range(FLOOD):
                hubble.push(denied("victim", 1000 + i, now + S + i))
            health: list[int] = []
            probed: list[int] = []

            async def flooded() -> str | None:
                status, _ = await http_get(port, "/healthz")
                health.append(status)
                status, _ = await http_get(probe_port, "/healthz")
                probed.append(status)
                _, text = await http_get(port, "/metrics")
                return text if metric(text, "drop_explainer_drops_total") >= FLOOD + len(HISTORY_PORTS) else None

            text = await eventually(flooded, timeout=120)
            assert text, "the flood was never fully explained"
            status, quiet = await get_json(port, "/pods/quiet/drops")
            _, victim = await get_json(port, "/pods/victim/drops?limit=500")
    assert health, "/healthz was never asked during the flood"
    assert set(health) == {200}, f"/healthz during the flood: {sorted(set(health))}"
    assert set(probed) == {200}, f"/healthz on the probe port during the flood: {sorted(set(probed))}"
    assert status == 200
    assert "drops" in victim, victim
    quiet_ports = sorted(d["signature"]["port"] for d in quiet["drops"])
    assert quiet_ports == list(HISTORY_PORTS), "the flood evicted the quiet pod's history"
    deferred = metric(text, "drop_explainer_new_signatures_deferred_total")
    stored = len(victim["drops"])
    # Every flood drop was either stored (within the admission burst, then cut to the cap fairly) or deferred.
    assert deferred > 0, "admission let the whole flood through"
    assert stored <= STORE_MAX_TOTAL - len(HISTORY_PORTS)
    assert metric(text, "drop_explainer_store_signatures") <= STORE_MAX_TOTAL
    assert metric(text, "drop_explainer_new_drop_signatures_total") + deferred >= FLOOD
